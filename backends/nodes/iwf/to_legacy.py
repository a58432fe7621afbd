"""5.8.6, CPM -> legacy: a CPM user invites an SMS or email user to a chat session.

The INVITE (routed to the IWF: P-Iwlab-Route sms or email) rings (180) and becomes an adapted
invitation, by SMS or by email, that says who invites and how to answer. The invitee's reply
decides: accept keyword -> 200 OK with the IWF's SDP answer (the IWF listens for MSRP, the offerer
connects); decline keyword -> 603; no answer in time -> 408 and a text saying the invitation
expired; CANCEL before the answer -> 487 and a text saying it was withdrawn.

Email invitations go out from the inviter's address, so a reply comes back through the mail
server to EmailLeg.relay and on to the session leg.
"""
from __future__ import annotations

import asyncio

from iwlab.backends.nodes.iwf.admission import admitted
from iwlab.backends.nodes.iwf.session import Direction, IwfSession, Reply, SessionRules, SessionState
from iwlab.backends.nodes.iwf.session_table import SessionTable
from iwlab.backends.nodes.iwf.threads import ThreadMap
from iwlab.backends.protocols import sdp, sip
from iwlab.backends.protocols.sip import SipRequest
from iwlab.backends.routing import EMAIL
from iwlab.backends.topology import Topology, User
from iwlab.backends.transports.msrp import MsrpListener
from iwlab.backends.transports.sip import SipConnection


class ToLegacy:
    def __init__(self, *, table: SessionTable, listener: MsrpListener, rules: SessionRules, topology: Topology,
                 threads: ThreadMap, host: str, email_reachable: bool) -> None:
        """email_reachable: the IWF has an email leg (without one, email invitees get 480)."""
        self._table = table
        self._listener = listener
        self._rules = rules
        self._topology = topology
        self._threads = threads
        self._host = host
        self._email_reachable = email_reachable

    def set_rules(self, rules: SessionRules) -> None:
        """New session words or patience (a scenario's setting); sessions already ringing keep their timer."""
        self._rules = rules

    async def invite(self, conn: SipConnection, req: SipRequest) -> None:
        respond = self._table.respond
        admission = admitted(conn, req, self._topology, respond)
        if admission is None:
            return
        route, invitee = admission
        if route.technology == EMAIL:
            await self._invite_by_email(conn, req, invitee)
            return
        if not invitee.msisdn:
            respond(conn, req, 404, f"{invitee.name} has no SMS number")
            return
        inviter_uri = sip.uri_of(req.headers.get("From"))
        inviter = self._topology.user_by_uri(inviter_uri)
        if inviter is None or not inviter.msisdn:
            respond(conn, req, 403, "The inviter has no number to show on SMS")
            return
        offer = self._offer(conn, req)
        if offer is None:
            return
        busy = self._table.by_number.get(invitee.msisdn)
        if busy is not None and busy.open:
            respond(conn, req, 486, f"{invitee.name} is already in a chat session by SMS")
            return
        source = self._threads.outbound_sms(
            cpm_uri=inviter.cpm_uri or inviter_uri, cpm_number=inviter.msisdn, peer=invitee.msisdn,
            conversation_id=req.headers.get("Conversation-ID") or "",
            contribution_id=req.headers.get("Contribution-ID") or "")
        session = self._session(conn, req, offer, inviter, inviter_uri, invitee,
                                legacy_number=invitee.msisdn, sms_source=source)
        self._table.add(session)
        await self._listener.start()
        rules = self._rules
        respond(conn, req, 180, "Ringing", to_tag=session.local_tag, session=session,
                note=f"adapted invitation sent by SMS to {invitee.name} (+{invitee.msisdn}); "
                     f"waiting {rules.timeout:g} s for {rules.accept_word} / {rules.decline_word}")
        self._table.tell(session, (
            f"{inviter.name} (+{inviter.msisdn}) invites you to a chat session. Reply {rules.accept_word} "
            f"to accept or {rules.decline_word} to decline. Once chatting, send {rules.end_word} to finish."))
        session.timer = asyncio.get_running_loop().call_later(rules.timeout, self._expire, session)

    async def _invite_by_email(self, conn: SipConnection, req: SipRequest, invitee: User) -> None:
        """The same handshake toward an email user: the adapted invitation is an email."""
        respond = self._table.respond
        if not self._email_reachable or not invitee.email:
            respond(conn, req, 480, f"{invitee.name} has no email this lab can reach")
            return
        inviter_uri = sip.uri_of(req.headers.get("From"))
        inviter = self._topology.user_by_uri(inviter_uri)
        if inviter is None:     # the emails go out from the inviter's address: we must know it
            respond(conn, req, 403, "The inviter has no address to show on email")
            return
        offer = self._offer(conn, req)
        if offer is None:
            return
        busy = self._table.by_email.get(invitee.email.lower())
        if busy is not None and busy.open:
            respond(conn, req, 486, f"{invitee.name} is already in a chat session by email")
            return
        session = self._session(conn, req, offer, inviter, inviter_uri, invitee,
                                legacy_number="", sms_source="", legacy_email=invitee.email,
                                conversation_id=req.headers.get("Conversation-ID") or "",
                                email_subject=f"{inviter.name} invites you to chat")
        self._table.add(session)
        await self._listener.start()
        rules = self._rules
        respond(conn, req, 180, "Ringing", to_tag=session.local_tag, session=session,
                note=f"adapted invitation sent by email to {invitee.name} <{invitee.email}>; "
                     f"waiting {rules.timeout:g} s for {rules.accept_word} / {rules.decline_word}")
        self._table.tell(session, (f"{inviter.name} invites you to a chat session.\n\n"
                                   f"Reply {rules.accept_word} to accept or {rules.decline_word} to decline.\n"
                                   f"Once chatting, every email you send to {inviter.name} goes to the chat; "
                                   f"send {rules.end_word} to finish."),
                         subject=session.email_subject)
        session.timer = asyncio.get_running_loop().call_later(rules.timeout, self._expire, session)

    def _offer(self, conn: SipConnection, req: SipRequest) -> sdp.MsrpSdp | None:
        try:
            return sdp.parse_sdp(req.body)
        except sdp.SdpError as exc:
            self._table.respond(conn, req, exc.status, f"Unusable SDP offer: {exc.reason}"[:100])
            return None

    @staticmethod
    def _session(conn: SipConnection, req: SipRequest, offer: sdp.MsrpSdp, inviter: User, inviter_uri: str,
                 invitee: User, **legacy) -> IwfSession:
        """The session of an INVITE that reached us (we are its UAS); legacy: how the invitee is reached."""
        return IwfSession(call_id=req.headers.get("Call-ID") or "", direction=Direction.TO_LEGACY,
                          cpm_user=inviter, cpm_uri=inviter.cpm_uri or inviter_uri,
                          legacy_name=invitee.name, invite=req, invite_conn=conn, offer=offer,
                          remote_tag=sip.from_tag(req), local_uri=sip.uri_of(req.headers.get("To")) or req.uri,
                          remote_target=sip.uri_of(req.headers.get("Contact")) or inviter_uri,
                          route_set=req.headers.get_all("Record-Route"), **legacy)

    def _expire(self, session: IwfSession) -> None:
        if not session.ringing:
            return
        self._table.finish(session, SessionState.EXPIRED)
        self._table.respond(session.invite_conn, session.invite, 408,
                            f"No answer from {session.legacy_name} by {session.via} within {self._rules.timeout:g} s",
                            to_tag=session.local_tag,
                            note=f"the invitation expired: {session.legacy_name} did not answer")
        self._table.tell(session, f"{session.cpm_name}'s chat invitation expired: you did not answer in time.")

    def cancelled(self, session: IwfSession) -> None:
        """CANCEL from the inviter before the answer: 487 for the INVITE, and the invitee is told."""
        self._table.finish(session, SessionState.CANCELLED)
        self._table.respond(session.invite_conn, session.invite, 487, "Request Terminated", to_tag=session.local_tag)
        self._table.tell(session, f"{session.cpm_name} withdrew the chat invitation.")

    def answer(self, session: IwfSession, text: str) -> bool:
        """The invitee's text while it rings: False when it is no answer (neither keyword)."""
        reply = self._rules.reply(text)
        if reply is None:
            return False
        if session.timer:
            session.timer.cancel()
        assert session.invite is not None and session.offer is not None
        table = self._table
        if reply is Reply.DECLINE:
            table.finish(session, SessionState.DECLINED)
            table.respond(session.invite_conn, session.invite, 603, "Decline", to_tag=session.local_tag,
                          note=f"{session.legacy_name} answered {text.strip()[:30]!r} by {session.via}")
            return True
        msrp_session = self._listener.new_session(call_id=session.call_id, on_message=table.msrp_to_legacy(session),
                                                  on_close=lambda _s: None)
        msrp_session.remote_path = list(session.offer.path)
        msrp_session.conversation_id = session.invite.headers.get("Conversation-ID") or ""
        try:
            answer = sdp.answer(session.offer, host=self._host, port=self._listener.port,
                                path=msrp_session.local_uri)
        except sdp.SdpError as exc:
            table.finish(session, SessionState.FAILED)
            table.respond(session.invite_conn, session.invite, exc.status, exc.reason[:100], to_tag=session.local_tag)
            return True
        session.msrp = msrp_session
        session.move(SessionState.ESTABLISHED)
        table.respond(session.invite_conn, session.invite, 200, "OK", to_tag=session.local_tag,
                      body=answer.to_bytes(), content_type="application/sdp", session=session,
                      note=f"{session.legacy_name} accepted by {session.via} ({text.strip()[:30]!r}); "
                           "the IWF answers for MSRP and waits for the offerer to connect")
        table.tell(session, (f"You are now chatting with {session.cpm_name}. Your "
                             f"{'emails' if session.legacy_email else 'texts'} go to the chat; "
                             f"send {self._rules.end_word} to finish."))
        return True
