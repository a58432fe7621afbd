"""Group chats with legacy members: the IWF joins a group on an SMS or email user's behalf.

A conference focus invites (an INVITE whose Contact says `isfocus`, nodes/conference/focus.py);
the route says SMS or email. Operator policy (TS 23.204: a gateway may accept as if the user had
said yes) is to join at once: 200 with the IWF's SDP answer (the focus connects for MSRP), and the
member is told by SMS or email who is in the group and how to leave.

SMS: the group gets its own number from the pool, one the member uses for no other group or
pool thread, so that his texts to it name the group; everyone's messages reach him from it,
prefixed with their author (the CPIM From the focus sets). Email: the group is one thread, its
emails answering the first (In-Reply-To); his replies in it go to the group. The end keyword
alone leaves (a BYE to the focus); the focus's BYE is the group's end, and he is told.

The dialogs and the telling are the one-to-one sessions' own (session.py, session_table.py):
a group member is an IwfSession whose CPM side is the group's URI.
"""
from __future__ import annotations

import logging

from iwlab.backends.nodes.conference.uris import from_focus, is_focus_uri
from iwlab.backends.nodes.iwf.admission import admitted
from iwlab.backends.nodes.iwf.cpm_leg import CpmLeg
from iwlab.backends.nodes.iwf.email_leg import EmailLeg
from iwlab.backends.nodes.iwf.session import Direction, IwfSession, SessionRules, SessionState
from iwlab.backends.nodes.iwf.session_table import SessionTable
from iwlab.backends.nodes.iwf.sms_leg import SmsLeg
from iwlab.backends.nodes.iwf.threads import ThreadMap
from iwlab.backends.protocols import mail, recipient_list, sdp, sip, smstext
from iwlab.backends.protocols.multipart import is_multipart_mixed
from iwlab.backends.protocols.recipient_list import RecipientListError
from iwlab.backends.protocols.sip import SipRequest
from iwlab.backends.routing import EMAIL
from iwlab.backends.topology import Topology, User
from iwlab.backends.transports.msrp import MsrpListener, MsrpSession
from iwlab.backends.transports.sip import SipConnection

log = logging.getLogger(__name__)


def is_group_invite(req: SipRequest) -> bool:
    return req.method == "INVITE" and not sip.to_tag(req) and from_focus(req)


class IwfGroups:
    def __init__(self, *, cpm: CpmLeg, sms: SmsLeg, email: EmailLeg | None, topology: Topology,
                 threads: ThreadMap, rules: SessionRules, listener: MsrpListener, host: str) -> None:
        """cpm: the IWF's CPM leg (the groups open a link of their own beside it); listener: the
        sessions' MSRP listener (the focus connects to it)."""
        self._topology = topology
        self._threads = threads
        self._rules = rules
        self._listener = listener
        self._host = host
        self._email_reachable = email is not None
        self._link = cpm.another_link(self._on_link_message)
        self.table = SessionTable(link=self._link, sms=sms, email=email, threads=threads, rules=rules)
        self.by_number: dict[tuple[str, str], IwfSession] = {}    # (member's MSISDN, group number) -> his membership
        self._stopped = False

    def set_rules(self, rules: SessionRules) -> None:
        self._rules = rules
        self.table.set_rules(rules)

    def owns(self, req: SipRequest) -> bool:
        """A request for the groups: a focus's invitation, or one inside a group dialog."""
        return is_group_invite(req) or (req.headers.get("Call-ID") or "") in self.table.by_call_id

    def stop(self) -> None:
        self._stopped = True       # an invitation still arriving while the IWF stops starts nothing
        self.table.close()
        self._link.stop()

    # -- SIP in ---------------------------------------------------------------------------
    def on_request(self, conn: SipConnection, req: SipRequest) -> None:
        member = self.table.by_call_id.get(req.headers.get("Call-ID") or "")
        if req.method == "INVITE" and member is None and not self._stopped:
            self.table.spawn(self._join(conn, req))
        elif req.method == "INVITE":
            self.table.respond(conn, req, 488, "Re-INVITE not supported by the IWF")
        elif req.method == "BYE":
            if member is None or not member.open:
                self.table.respond(conn, req, 481, "Call/Transaction Does Not Exist")
                return
            self.table.respond(conn, req, 200, "OK", note=f"the group chat ended: {member.legacy_name} is told")
            self._finish(member, SessionState.ENDED)
            self.table.tell(member, "The group chat has ended.")
        elif req.method == "CANCEL":
            self.table.respond(conn, req, 200, "OK")     # we answer at once: nothing rings
        elif req.method != "ACK":
            self.table.respond(conn, req, 501, f"{req.method} not interworked in groups")

    def _on_link_message(self, conn: SipConnection, message) -> None:
        if isinstance(message, SipRequest):
            self.on_request(conn, message)

    async def _join(self, conn: SipConnection, req: SipRequest) -> None:
        respond = self.table.respond
        admission = admitted(conn, req, self._topology, respond)
        if admission is None:
            return
        route, invitee = admission
        try:
            if is_multipart_mixed(req.headers.get("Content-Type")):
                body = recipient_list.parse_body(req.headers.get("Content-Type"), req.body)
                offer_bytes, roster = body.sdp, [e.display_name or e.uri for e in body.recipients]
            else:
                offer_bytes, roster = req.body, []
            offer = sdp.parse_sdp(offer_bytes)
        except RecipientListError as exc:
            respond(conn, req, exc.status, f"Recipient list: {exc.reason}"[:100])
            return
        except sdp.SdpError as exc:
            respond(conn, req, exc.status, f"Unusable SDP offer: {exc.reason}"[:100])
            return
        group_uri = sip.uri_of(req.headers.get("From"))
        inviter = self._topology.user_by_uri(sip.uri_of(req.headers.get("Referred-By")))
        # Operator policy joins only a lab focus's group, asked for by a lab user: anyone else could
        # otherwise have the IWF text its SMS users from the pool.
        if not any(is_focus_uri(group_uri, op.cpm_domain) for op in self._topology.operators) or inviter is None:
            respond(conn, req, 403, "The IWF joins only groups of this lab's conference focuses, made by its users")
            return
        member = IwfSession(call_id=req.headers.get("Call-ID") or "", direction=Direction.TO_LEGACY,
                            cpm_user=inviter, cpm_uri=group_uri, legacy_number="", legacy_name=invitee.name,
                            sms_source="", invite=req, invite_conn=conn, offer=offer, remote_tag=sip.from_tag(req),
                            local_uri=sip.uri_of(req.headers.get("To")) or req.uri,
                            remote_target=sip.uri_of(req.headers.get("Contact")) or group_uri,
                            route_set=req.headers.get_all("Record-Route"),
                            conversation_id=req.headers.get("Conversation-ID") or "")
        if route.technology == EMAIL:
            if not self._email_reachable or not invitee.email:
                respond(conn, req, 480, f"{invitee.name} has no email this lab can reach for a group")
                return
            member.legacy_email = invitee.email
            member.email_subject = f"Group chat: {inviter.name}'s group"
            how = f"every email you send in this thread goes to the group; send {self._rules.end_word} to leave."
        else:
            number = self._free_number(invitee) if invitee.msisdn else None
            if number is None:
                respond(conn, req, 486, f"No free group number for {invitee.name}" if invitee.msisdn
                        else f"{invitee.name} has no SMS number")
                return
            member.legacy_number, member.sms_source = invitee.msisdn or "", number
            self.by_number[(member.legacy_number, number)] = member
            self._threads.reserve(member.legacy_number, number)
            how = f"texts you send to this number (+{number}) go to everyone; send {self._rules.end_word} to leave."
        self.table.add(member)
        await self._listener.start()      # started by the first session that needs it
        msrp_session = self._listener.new_session(call_id=member.call_id, on_message=self._to_member(member),
                                                  on_close=lambda _s: None)
        msrp_session.remote_path = list(offer.path)
        msrp_session.conversation_id = member.conversation_id
        try:
            answer = sdp.answer(offer, host=self._host, port=self._listener.port, path=msrp_session.local_uri)
        except sdp.SdpError as exc:
            msrp_session.close()
            self._finish(member, SessionState.FAILED)
            respond(conn, req, exc.status, exc.reason[:100], to_tag=member.local_tag)
            return
        member.msrp = msrp_session
        member.move(SessionState.ESTABLISHED)
        respond(conn, req, 200, "OK", to_tag=member.local_tag, body=answer.to_bytes(),
                content_type="application/sdp", session=member,
                note=f"operator policy: the IWF joins the group for {invitee.name} ({member.via})")
        who = inviter.name
        others = [name for name in roster if name not in (invitee.name, who)]
        self.table.tell(member, f"{who} added you to a group chat" + (f" with {', '.join(others)}" if others else "")
                        + f". Your {how}")

    def _free_number(self, invitee: User) -> str | None:
        """A pool number this member has for no other group and no pool thread."""
        digits = invitee.msisdn or ""
        for number in self._threads.pool:
            if not self._threads.is_reserved(digits, number) and self._threads.pool_owner(digits, number) is None:
                return number
        return None

    def _finish(self, member: IwfSession, state: SessionState) -> None:
        """The membership ends: its group number is free again."""
        self.table.finish(member, state)
        if member.legacy_number:
            self._threads.release(member.legacy_number, member.sms_source)

    # -- messages -------------------------------------------------------------------------------
    def _to_member(self, member: IwfSession):
        def deliver(msrp_session: MsrpSession, text: str, content_type: str, message_id: str) -> None:
            if member.state is not SessionState.ESTABLISHED:
                return
            author = sip.uri_of(msrp_session.sender)
            if author and author != member.cpm_uri:      # a member wrote it; the group's own notices go as they are
                text = f"{self._author_name(msrp_session.sender)}: {text}"
            self.table.tell(member, text)
        return deliver

    def _author_name(self, sender: str) -> str:
        user = self._topology.user_by_uri(sip.uri_of(sender))
        if user is not None:
            return user.name
        try:
            return sip.parse_name_addr(sender).display or sip.uri_of(sender)
        except sip.SipParseError:
            return sip.uri_of(sender)

    def take_sms(self, sms: smstext.IncomingSms) -> bool:
        """True when the SMS is a member's text to his group's number."""
        member = self.by_number.get((sms.source.lstrip("+"), sms.dest.lstrip("+")))
        if member is None or not member.open:
            return False
        self._from_member(member, sms.text)
        return True

    def take_email(self, incoming: mail.IncomingEmail) -> bool:
        """True when the email answers one of a group's emails (In-Reply-To / References)."""
        table = self.table
        member = next((table.by_email_id[i] for i in mail.thread_key_candidates(incoming)
                       if i in table.by_email_id and table.by_email_id[i].open), None)
        if member is None:
            return False
        forward = incoming.text + "".join(f"\n[attachment not forwarded: {a}]" for a in incoming.attachments)
        self._from_member(member, incoming.text, forward)
        return True

    def _from_member(self, member: IwfSession, text: str, forward: str | None = None) -> None:
        if self._rules.is_end(text):
            self._finish(member, SessionState.ENDED)
            self.table.spawn(self.table.send_in_dialog(
                member, "BYE", note=f"{member.legacy_name} sent {self._rules.end_word} by {member.via}: leaves the group"))
            self.table.tell(member, "You left the group chat.")
        elif member.msrp is None or member.msrp.closed:      # the focus went away without a BYE
            self._finish(member, SessionState.FAILED)
            self.table.tell(member, "The group chat cannot be reached any more; your message was not sent.")
        elif (forward or text).strip():
            member.msrp.send_text(forward or text)
