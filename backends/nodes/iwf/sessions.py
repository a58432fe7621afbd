"""Session interworking in the IWF: CPM sessions (SIP INVITE + MSRP) <-> SMS conversations.

5.8.6 (CPM -> legacy): an INVITE for an SMS user (P-Iwlab-Route: sms) rings (180) and becomes an
adapted invitation SMS that says who invites and how to answer. The invitee's reply decides:
accept keyword -> 200 OK with the IWF's SDP answer (the IWF listens for MSRP, the offerer connects);
decline keyword -> 603; no answer in time -> 408 and an SMS saying the invitation expired; CANCEL
before the answer -> 487 and an SMS saying it was withdrawn. While the session lasts, MSRP SENDs
become SMS and the invitee's SMS become MSRP SENDs, in order; BYE -> a closing SMS; the end keyword
-> BYE.

5.9.6 (legacy -> CPM): an SMS to a CPM user's number that starts with the request keyword becomes an
INVITE (From the legacy user's tel: URI, with an SDP offer; the IWF connects for MSRP) through the
IWF's CPM server; the answer is adapted back as an SMS, then messages flow as above.

Email users (John) get the same, with emails instead of SMS: the adapted invitation is an email
from the CPM user's address (so a reply comes back through the mail server to EmailLeg.relay, which
hands it to take_email); every later email of the session answers the first one (In-Reply-To), so
John's client keeps the session in one thread. A reply belongs to the session by In-Reply-To /
References, else by its sender while he has a session open with that CPM user; only what he wrote
counts (email_codec trims the quoted history, which repeats the keywords of the invitation).

Keywords are matched case-insensitively as whole words, surrounding text tolerated; the end and
request keywords must be the first word of the text (so "the end is near" in a chat stays a message).
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import re
import uuid
from dataclasses import dataclass, field

from iwlab.backends.protocols import mail, sdp, sip, smstext
from iwlab.backends.protocols.cpim import CPM_SESSION_ICSI, CPM_SESSION_SERVICE
from iwlab.backends.protocols.sip import (
    SipRequest,
    SipResponse,
    make_response,
)
from iwlab.backends.routing import EMAIL, Route
from iwlab.backends.topology import User
from iwlab.backends.transports.msrp import (
    MsrpListener,
    MsrpSession,
    connect,
    local_session,
)
from iwlab.backends.transports.sip import SipConnection, SipConnectionClosed

log = logging.getLogger(__name__)


def keyword_in(text: str, keyword: str) -> int:
    """Where the keyword stands as a whole word (case-insensitive), or -1."""
    match = re.search(rf"(?<![^\W_]){re.escape(keyword)}(?![^\W_])", text, re.IGNORECASE)
    return match.start() if match else -1


def starts_with_keyword(text: str, keyword: str) -> bool:
    return re.match(rf"\W*{re.escape(keyword)}(?![^\W_])", text, re.IGNORECASE) is not None


@dataclass
class IwfSession:
    call_id: str
    direction: str                 # "to-legacy" (5.8.6) or "from-legacy" (5.9.6)
    cpm_user: User | None          # the CPM side's person (inviter or invitee)
    cpm_uri: str
    legacy_number: str             # the SMS user's MSISDN digits ("" for an email user)
    legacy_name: str
    sms_source: str                # the number the SMS user sees (and answers to)
    legacy_email: str = ""         # the email user's address: set means the legacy leg is email
    email_thread: str = ""         # the Message-ID every session email answers (In-Reply-To)
    email_subject: str = ""        # the thread's subject, "Re:"-prefixed on the later emails
    conversation_id: str = ""
    local_tag: str = field(default_factory=sip.new_tag)
    remote_tag: str = ""
    local_uri: str = ""            # our From (UAC) / To (UAS) URI in the dialog
    remote_target: str = ""        # where in-dialog requests go (the peer's Contact)
    route_set: list[str] = field(default_factory=list)
    invite: SipRequest | None = None       # 5.8.6: the INVITE as it reached us
    invite_conn: SipConnection | None = None
    offer: sdp.MsrpSdp | None = None
    msrp: MsrpSession | None = None
    state: str = "ringing"         # ringing / established / declined / expired / cancelled / failed / ended
    timer: asyncio.TimerHandle | None = None
    cseq: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def cpm_name(self) -> str:
        return self.cpm_user.name if self.cpm_user else self.cpm_uri

    @property
    def open(self) -> bool:
        return self.state in ("ringing", "established")

    @property
    def via(self) -> str:
        return "email" if self.legacy_email else "SMS"


class IwfSessions:
    def __init__(self, iwf) -> None:
        self.iwf = iwf
        account = iwf.operator.iwf
        self.accept_word = account.session_accept
        self.decline_word = account.session_decline
        self.end_word = account.session_end
        self.request_word = account.session_request
        self.timeout = account.session_timeout_seconds
        self.listener = MsrpListener(host=iwf.host, local_name=iwf.name, trace=iwf.trace, nodes=iwf.nodes)
        self.by_call_id: dict[str, IwfSession] = {}
        self.by_number: dict[str, IwfSession] = {}     # legacy MSISDN -> its open session
        self.by_email: dict[str, IwfSession] = {}      # legacy email address (lower case) -> its open session
        self.by_email_id: dict[str, IwfSession] = {}   # Message-IDs of the session's emails -> the session
        self._link = iwf.cpm.another_link(self._on_link_message)   # our own connection to the CPM server
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        await self.listener.start()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for session in self.by_call_id.values():
            if session.timer:
                session.timer.cancel()
            if session.msrp:
                session.msrp.close()    # our outgoing MSRP connections too, not only the listener's
        await self.listener.stop()
        self._link.stop()

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- SIP in ---------------------------------------------------------------------------
    def on_request(self, conn: SipConnection, req: SipRequest) -> None:
        call_id = req.headers.get("Call-ID") or ""
        session = self.by_call_id.get(call_id)
        if req.method == "INVITE":
            if session is not None:
                self._respond(conn, req, 488, "Re-INVITE not supported by the IWF")
            else:
                self._spawn(self._invite(conn, req))
        elif req.method == "CANCEL":
            self._respond(conn, req, 200, "OK")
            if session and session.state == "ringing" and session.invite is not None:
                self._finish(session, "cancelled")
                self._respond(session.invite_conn, session.invite, 487, "Request Terminated",
                              to_tag=session.local_tag)
                self._tell(session, f"{session.cpm_name} withdrew the chat invitation.")
        elif req.method == "ACK":
            pass   # the 200's ACK: MSRP comes next (the offerer connects)
        elif req.method == "BYE":
            if session is None or not session.open:
                self._respond(conn, req, 481, "Call/Transaction Does Not Exist")
                return
            self._respond(conn, req, 200, "OK",
                          note=f"{session.cpm_name} ended the session: "
                               f"a closing {session.via} to {session.legacy_name}")
            self._finish(session, "ended")
            self._tell(session, f"{session.cpm_name} ended the chat.")
        else:
            self._respond(conn, req, 501, f"{req.method} not interworked")

    def _respond(self, conn: SipConnection | None, req: SipRequest, status: int, reason: str, *, note: str = "",
                 to_tag: str | None = None, body: bytes = b"", content_type: str | None = None,
                 session: IwfSession | None = None) -> None:
        if conn is None:
            return
        response = make_response(req, status, reason, to_tag=to_tag or sip.new_tag(), body=body,
                                 content_type=content_type)
        if session is not None and 100 < status < 300:
            for route in req.headers.get_all("Record-Route"):
                response.headers.add("Record-Route", route)
            response.headers.add("Contact", self._contact())
        try:
            conn.send(response, note=note)
        except SipConnectionClosed:
            pass

    def _contact(self) -> str:
        return self._link.contact()

    # -- 5.8.6: a CPM user invites an SMS user ----------------------------------------------
    async def _invite(self, conn: SipConnection, req: SipRequest) -> None:
        topology = self.iwf.topology
        route = Route.from_header(req.headers.get(Route.HEADER))
        if route is None or not route.technology.interworked:
            self._respond(conn, req, 403, f"No interworking decision ({Route.HEADER}): the IWF serves what its CPM server hands on")
            return
        invitee = topology.user_by_uri(req.uri)
        if invitee is None:
            self._respond(conn, req, 404, "User Not Found")
            return
        if route.technology == EMAIL:
            await self._invite_by_email(conn, req, invitee)
            return
        if not invitee.msisdn:
            self._respond(conn, req, 404, f"{invitee.name} has no SMS number")
            return
        inviter_uri = sip.uri_of(req.headers.get("From"))
        inviter = topology.user_by_uri(inviter_uri)
        if inviter is None or not inviter.msisdn:
            self._respond(conn, req, 403, "The inviter has no number to show on SMS")
            return
        try:
            offer = sdp.parse_sdp(req.body)
        except sdp.SdpError as exc:
            self._respond(conn, req, exc.status, f"Unusable SDP offer: {exc.reason}"[:100])
            return
        busy = self.by_number.get(invitee.msisdn)
        if busy is not None and busy.open:
            self._respond(conn, req, 486, f"{invitee.name} is already in a chat session by SMS")
            return
        source = self.iwf.threads.outbound_sms(
            cpm_uri=inviter.cpm_uri or inviter_uri, cpm_number=inviter.msisdn, peer=invitee.msisdn,
            conversation_id=req.headers.get("Conversation-ID") or "",
            contribution_id=req.headers.get("Contribution-ID") or "")
        session = IwfSession(call_id=req.headers.get("Call-ID") or "", direction="to-legacy", cpm_user=inviter,
                             cpm_uri=inviter.cpm_uri or inviter_uri, legacy_number=invitee.msisdn,
                             legacy_name=invitee.name, sms_source=source, invite=req, invite_conn=conn,
                             offer=offer, remote_tag=sip.from_tag(req),
                             local_uri=sip.uri_of(req.headers.get("To")) or req.uri,
                             remote_target=sip.uri_of(req.headers.get("Contact")) or inviter_uri,
                             route_set=req.headers.get_all("Record-Route"))
        self.by_call_id[session.call_id] = session
        self.by_number[invitee.msisdn] = session
        await self.listener.start()
        self._respond(conn, req, 180, "Ringing", to_tag=session.local_tag, session=session,
                      note=f"adapted invitation sent by SMS to {invitee.name} (+{invitee.msisdn}); "
                           f"waiting {self.timeout:g} s for {self.accept_word} / {self.decline_word}")
        self.iwf.sms.send_text(
            source=source, dest=invitee.msisdn,
            text=(f"{inviter.name} (+{inviter.msisdn}) invites you to a chat session. Reply {self.accept_word} "
                  f"to accept or {self.decline_word} to decline. Once chatting, send {self.end_word} to finish."))
        session.timer = asyncio.get_running_loop().call_later(self.timeout, self._expire, session)

    async def _invite_by_email(self, conn: SipConnection, req: SipRequest, invitee: User) -> None:
        """5.8.6 toward an email user: the same handshake, the adapted invitation is an email."""
        if self.iwf.email is None or not invitee.email:
            self._respond(conn, req, 480, f"{invitee.name} has no email this lab can reach")
            return
        inviter_uri = sip.uri_of(req.headers.get("From"))
        inviter = self.iwf.topology.user_by_uri(inviter_uri)
        if inviter is None:     # the emails go out from the inviter's address: we must know it
            self._respond(conn, req, 403, "The inviter has no address to show on email")
            return
        try:
            offer = sdp.parse_sdp(req.body)
        except sdp.SdpError as exc:
            self._respond(conn, req, exc.status, f"Unusable SDP offer: {exc.reason}"[:100])
            return
        busy = self.by_email.get(invitee.email.lower())
        if busy is not None and busy.open:
            self._respond(conn, req, 486, f"{invitee.name} is already in a chat session by email")
            return
        session = IwfSession(call_id=req.headers.get("Call-ID") or "", direction="to-legacy", cpm_user=inviter,
                             cpm_uri=inviter.cpm_uri or inviter_uri, legacy_number="", legacy_name=invitee.name,
                             sms_source="", legacy_email=invitee.email, invite=req, invite_conn=conn, offer=offer,
                             remote_tag=sip.from_tag(req),
                             local_uri=sip.uri_of(req.headers.get("To")) or req.uri,
                             remote_target=sip.uri_of(req.headers.get("Contact")) or inviter_uri,
                             route_set=req.headers.get_all("Record-Route"),
                             conversation_id=req.headers.get("Conversation-ID") or "",
                             email_subject=f"{inviter.name} invites you to chat")
        self.by_call_id[session.call_id] = session
        self.by_email[invitee.email.lower()] = session
        await self.listener.start()
        self._respond(conn, req, 180, "Ringing", to_tag=session.local_tag, session=session,
                      note=f"adapted invitation sent by email to {invitee.name} <{invitee.email}>; "
                           f"waiting {self.timeout:g} s for {self.accept_word} / {self.decline_word}")
        self._tell(session, (f"{inviter.name} invites you to a chat session.\n\n"
                             f"Reply {self.accept_word} to accept or {self.decline_word} to decline.\n"
                             f"Once chatting, every email you send to {inviter.name} goes to the chat; "
                             f"send {self.end_word} to finish."),
                   subject=session.email_subject)
        session.timer = asyncio.get_running_loop().call_later(self.timeout, self._expire, session)

    def _expire(self, session: IwfSession) -> None:
        if session.state != "ringing":
            return
        self._finish(session, "expired")
        self._respond(session.invite_conn, session.invite, 408,
                      f"No answer from {session.legacy_name} by {session.via} within {self.timeout:g} s",
                      to_tag=session.local_tag,
                      note=f"the invitation expired: {session.legacy_name} did not answer")
        self._tell(session, f"{session.cpm_name}'s chat invitation expired: you did not answer in time.")

    def _answer_invitation(self, session: IwfSession, text: str) -> bool:
        yes, no = keyword_in(text, self.accept_word), keyword_in(text, self.decline_word)
        if yes < 0 and no < 0:
            return False
        if session.timer:
            session.timer.cancel()
        assert session.invite is not None and session.offer is not None
        if no >= 0 and (yes < 0 or no < yes):
            self._finish(session, "declined")
            self._respond(session.invite_conn, session.invite, 603, "Decline", to_tag=session.local_tag,
                          note=f"{session.legacy_name} answered {text.strip()[:30]!r} by {session.via}")
            return True
        msrp_session = self.listener.new_session(call_id=session.call_id, on_message=self._msrp_to_legacy(session),
                                                 on_close=lambda _s: None)
        msrp_session.remote_path = list(session.offer.path)
        msrp_session.conversation_id = session.invite.headers.get("Conversation-ID") or ""
        try:
            answer = sdp.answer(session.offer, host=self.iwf.host, port=self.listener.port,
                                path=msrp_session.local_uri)
        except sdp.SdpError as exc:
            self._finish(session, "failed")
            self._respond(session.invite_conn, session.invite, exc.status, exc.reason[:100], to_tag=session.local_tag)
            return True
        session.msrp = msrp_session
        session.state = "established"
        self._respond(session.invite_conn, session.invite, 200, "OK", to_tag=session.local_tag,
                      body=answer.to_bytes(), content_type="application/sdp", session=session,
                      note=f"{session.legacy_name} accepted by {session.via} ({text.strip()[:30]!r}); "
                           "the IWF answers for MSRP and waits for the offerer to connect")
        self._tell(session, (f"You are now chatting with {session.cpm_name}. Your "
                             f"{'emails' if session.legacy_email else 'texts'} go to the chat; "
                             f"send {self.end_word} to finish."))
        return True

    # -- SMS in -----------------------------------------------------------------------------
    def take_sms(self, sms: smstext.IncomingSms) -> bool:
        """True when the SMS belongs to a session (an answer, a message in it, or a chat request)."""
        source, dest = sms.source.lstrip("+"), sms.dest.lstrip("+")
        session = self.by_number.get(source)
        if session is not None and session.open and dest == session.sms_source:
            return self._from_legacy(session, sms.text)
        if starts_with_keyword(sms.text, self.request_word):
            invitee = self.iwf.topology.user_by_number(dest)
            if invitee is None and self.iwf.threads.is_pool_number(dest):   # a pool number names Mary's thread
                owner = self.iwf.threads.pool_owner(source, dest)
                invitee = self.iwf.topology.user_by_uri(owner.cpm_uri) if owner else None
            if invitee is not None and invitee.cpm_uri and invitee.device == "cpm":
                if session is not None and session.open:
                    self.iwf.sms.send_text(source=dest, dest=source,
                                           text="You are already in a chat session; send "
                                                f"{self.end_word} to finish it first.")
                    return True
                self._spawn(self._request_from_legacy(source, dest, invitee))
                return True
        return False

    def _from_legacy(self, session: IwfSession, text: str, forward: str | None = None) -> bool:
        """A text (SMS or email) from the legacy user of an open session; False: not for the session.
        `forward`: what goes to the chat when it differs from the text the keywords are looked for in."""
        if session.state == "ringing":
            if session.direction == "to-legacy":
                return self._answer_invitation(session, text)
            if starts_with_keyword(text, self.end_word) and session.invite is not None:
                self._cancel(session, session.invite)          # the requester gives up before the answer
                self._finish(session, "cancelled")
                self._tell(session, f"You withdrew your chat request to {session.cpm_name}.")
                return True
            return False    # waiting for the CPM user: an ordinary message meanwhile
        if starts_with_keyword(text, self.end_word):
            self._legacy_ends(session)
        elif session.msrp is not None and (forward or text).strip():
            session.msrp.send_text(forward or text)
        return True

    # -- email in -----------------------------------------------------------------------------
    def take_email(self, incoming, recipient_address: str) -> bool:
        """True when an email (an mail.IncomingEmail, from EmailLeg.relay) belongs to a session:
        an answer to an invitation, a message in a session, or a chat request to a CPM user."""
        sender = incoming.sender.lower()
        recipient = self.iwf.topology.user_by_uri("sip:" + recipient_address.lower())
        # In-Reply-To / References first: that names the session whatever address he writes from.
        session = next((self.by_email_id[i] for i in mail.thread_key_candidates(incoming)
                        if i in self.by_email_id and self.by_email_id[i].open), None)
        if session is None:
            session = self.by_email.get(sender)
            if session is not None and (recipient is None or recipient is not session.cpm_user):
                session = None      # John in a session with Mary still writes ordinary mail to others
        if session is not None and session.open:
            # Attachments cannot go into the chat: listed, as relay() does, never dropped silently.
            forward = incoming.text + "".join(f"\n[attachment not forwarded: {a}]" for a in incoming.attachments)
            return self._from_legacy(session, incoming.text, forward)
        if starts_with_keyword(incoming.text, self.request_word) and recipient is not None \
                and recipient.cpm_uri and recipient.device == "cpm":
            busy = self.by_email.get(sender)
            if busy is not None and busy.open and self.iwf.email is not None:
                self.iwf.email.send_text(sender=recipient, recipient_address=incoming.sender,
                                         subject=_reply_subject(incoming.subject, "Chat"),
                                         text=f"You are already in a chat session; send {self.end_word} "
                                              "to finish it first.", in_reply_to=incoming.message_id)
                return True
            self._spawn(self._request_from_email(incoming, recipient))
            return True
        return False

    def _msrp_to_legacy(self, session: IwfSession):
        def deliver(_msrp: MsrpSession, text: str, content_type: str, message_id: str) -> None:
            if session.state == "established":
                self._tell(session, text)
        return deliver

    def _legacy_ends(self, session: IwfSession) -> None:
        self._finish(session, "ended")
        self._spawn(self._send_in_dialog(session, "BYE",
                                         note=f"{session.legacy_name} sent {self.end_word} by {session.via}"))
        self._tell(session, f"You ended the chat with {session.cpm_name}.")

    def _finish(self, session: IwfSession, state: str) -> None:
        session.state = state
        if session.timer:
            session.timer.cancel()
        if session.msrp:
            session.msrp.close()
        if session.legacy_number and self.by_number.get(session.legacy_number) is session:
            del self.by_number[session.legacy_number]
        if session.legacy_email and self.by_email.get(session.legacy_email.lower()) is session:
            del self.by_email[session.legacy_email.lower()]
        # Kept a while for late or repeated requests (a BYE crossing ours, an ACK), then forgotten.
        asyncio.get_running_loop().call_later(64.0, self._forget, session)

    def _forget(self, session: IwfSession) -> None:
        if self.by_call_id.get(session.call_id) is session:
            del self.by_call_id[session.call_id]
        for message_id in [i for i, s in self.by_email_id.items() if s is session]:
            del self.by_email_id[message_id]

    # -- SIP out -----------------------------------------------------------------------------
    async def _connection(self) -> SipConnection:
        return await self._link.connection()

    def _on_link_message(self, conn: SipConnection, message) -> None:
        if isinstance(message, SipRequest):
            if message.method in ("INVITE", "ACK", "BYE", "CANCEL"):
                self.on_request(conn, message)
            elif message.method != "ACK":
                self._respond(conn, message, 501, "Not Implemented")

    def _in_dialog_request(self, session: IwfSession, method: str, cseq: int | None = None) -> SipRequest:
        return sip.make_request(
            method, session.remote_target or session.cpm_uri, via=self._link.via(),
            routes=session.route_set, from_=f"<{session.local_uri}>;tag={session.local_tag}",
            to=f"<{session.cpm_uri}>;tag={session.remote_tag}", call_id=session.call_id,
            cseq=cseq if cseq is not None else next(session.cseq))

    async def _send_in_dialog(self, session: IwfSession, method: str, note: str = "") -> SipResponse | None:
        req = self._in_dialog_request(session, method)
        try:
            link = await self._connection()
            return await asyncio.wait_for(link.request(req, note=note), 32)
        except (OSError, SipConnectionClosed, asyncio.TimeoutError) as exc:
            log.warning("IWF %s for %s failed: %s", method, session.call_id, exc)
            return None

    # -- 5.9.6: an SMS user asks a CPM user for a chat ------------------------------------------
    async def _request_from_legacy(self, source: str, dest: str, invitee: User) -> None:
        topology = self.iwf.topology
        requester = topology.user_by_number(source)
        name = requester.name if requester else f"+{source}"
        call_id = self._link.new_call_id()
        session = IwfSession(call_id=call_id, direction="from-legacy", cpm_user=invitee, cpm_uri=invitee.cpm_uri,
                             legacy_number=source, legacy_name=name, sms_source=dest,
                             local_uri=f"tel:+{source}", remote_target=invitee.cpm_uri)
        self.by_call_id[call_id] = session
        self.by_number[source] = session
        await self.listener.start()
        thread = self.iwf.threads.inbound_sms(peer=source, dest_number=dest, cpm_uri=invitee.cpm_uri)
        await self._invite_cpm_user(session, invitee, thread.conversation_id if thread else "",
                                    note=f"{name} asked for a chat by SMS ({self.request_word}): "
                                         f"a CPM session invitation to {invitee.name}")

    async def _request_from_email(self, incoming, invitee: User) -> None:
        """5.9.6 from an email user: his identity as EmailLeg.relay shows it (tel: when the lab knows him)."""
        requester = self.iwf.topology.user_by_email(incoming.sender)
        name = requester.name if requester else (incoming.sender_name or incoming.sender)
        uri = f"tel:{requester.tel}" if requester and requester.tel else f"sip:{incoming.sender}"
        call_id = self._link.new_call_id()
        thread = self.iwf.threads.find_by_ids(mail.thread_key_candidates(incoming))
        session = IwfSession(call_id=call_id, direction="from-legacy", cpm_user=invitee, cpm_uri=invitee.cpm_uri,
                             legacy_number="", legacy_name=name, sms_source="", legacy_email=incoming.sender,
                             local_uri=uri, remote_target=invitee.cpm_uri,
                             email_thread=incoming.message_id,      # our answers thread under his request
                             email_subject=_reply_subject(incoming.subject, f"Chat with {invitee.name}"))
        self.by_call_id[call_id] = session
        self.by_email[incoming.sender.lower()] = session
        await self.listener.start()
        await self._invite_cpm_user(session, invitee, thread.conversation_id if thread else "",
                                    note=f"{name} asked for a chat by email ({self.request_word}): "
                                         f"a CPM session invitation to {invitee.name}")

    async def _invite_cpm_user(self, session: IwfSession, invitee: User, conversation_id: str, note: str) -> None:
        call_id, name = session.call_id, session.legacy_name
        msrp_session = local_session(self.iwf.host, self.listener.port, call_id=call_id,
                                     on_message=self._msrp_to_legacy(session))
        session.msrp = msrp_session
        offer = sdp.offer(host=self.iwf.host, port=self.listener.port,
                          session_id_path=msrp_session.session_id)
        offer.path = [msrp_session.local_uri]
        cseq = next(session.cseq)
        req = self._in_dialog_request(session, "INVITE", cseq)
        req.headers.set("From", f'"{name}" <{session.local_uri}>;tag={session.local_tag}')
        req.headers.set("To", f"<{invitee.cpm_uri}>")
        req.headers.add("Contact", self._contact())
        req.headers.add("P-Preferred-Service", CPM_SESSION_SERVICE)
        req.headers.add("Accept-Contact", f'*;+g.3gpp.icsi-ref="{CPM_SESSION_ICSI}"')
        msrp_session.conversation_id = session.conversation_id = conversation_id or uuid.uuid4().hex
        req.headers.add("Conversation-ID", msrp_session.conversation_id)
        req.headers.add("Contribution-ID", uuid.uuid4().hex)
        req.headers.add("Content-Type", "application/sdp")
        req.body = offer.to_bytes()
        session.invite = req
        try:
            link = await self._connection()
            pending = link.request(req, note=note)
            response = await asyncio.wait_for(asyncio.shield(pending), self.timeout)
        except asyncio.TimeoutError:
            if session.state == "ringing":
                self._cancel(session, req)
                self._finish(session, "expired")
                self._tell(session, f"{invitee.name} did not answer your chat request.")
            return
        except (OSError, SipConnectionClosed) as exc:
            self._finish(session, "failed")
            self._tell(session, f"{invitee.name} could not be reached for a chat ({exc}).")
            return
        if session.state != "ringing":     # withdrawn meanwhile (END): a late 200 gets ACK and BYE
            if response.status < 300 and sip.cseq_method(response) == "INVITE":
                session.remote_tag = sip.to_tag(response)
                session.remote_target = sip.uri_of(response.headers.get("Contact")) or invitee.cpm_uri
                session.route_set = list(reversed(response.headers.get_all("Record-Route")))
                link.send(self._in_dialog_request(session, "ACK", cseq))
                await self._send_in_dialog(session, "BYE", note="the request was withdrawn")
            return
        if response.status >= 300:
            self._finish(session, "declined" if response.status in (486, 603) else "failed")
            text = f"{invitee.name} declined your chat request." if response.status == 603 else \
                f"{invitee.name} could not chat now ({response.status} {response.reason})."
            self._tell(session, text)
            return
        session.remote_tag = sip.to_tag(response)
        session.remote_target = sip.uri_of(response.headers.get("Contact")) or invitee.cpm_uri
        session.route_set = list(reversed(response.headers.get_all("Record-Route")))
        ack = self._in_dialog_request(session, "ACK", cseq)
        try:
            link.send(ack)
        except SipConnectionClosed:
            pass
        try:
            answer = sdp.parse_sdp(response.body)
            msrp_session.remote_path = list(answer.path)
            host, port = answer.connect_address()
            await connect(msrp_session, host, port, local_name=self.iwf.name, nodes=self.iwf.nodes)
        except (sdp.SdpError, OSError) as exc:
            self._finish(session, "failed")
            await self._send_in_dialog(session, "BYE", note=f"no MSRP connection: {exc}")
            self._tell(session, f"The chat with {invitee.name} could not start.")
            return
        session.state = "established"
        self._tell(session, f"{invitee.name} accepted: you are now chatting; reply {self.end_word} to stop.")

    def _cancel(self, session: IwfSession, invite: SipRequest) -> None:
        cancel = sip.make_cancel(invite)
        self._link.send_if_connected(cancel, note=f"no answer within {self.timeout:g} s")

    def _tell(self, session: IwfSession, text: str, subject: str | None = None) -> None:
        """A text to the session's legacy user, by SMS or by email (in order either way)."""
        if not session.legacy_email:
            self.iwf.sms.send_text(source=session.sms_source, dest=session.legacy_number, text=text)
            return
        if self.iwf.email is None or session.cpm_user is None:
            log.warning("no email leg for the session %s: %r not sent", session.call_id, text)
            return
        # From the CPM user's address, so that John's client answers her (and relay() brings it back).
        message_id = self.iwf.email.send_text(
            sender=session.cpm_user, recipient_address=session.legacy_email,
            subject=subject or _reply_subject(session.email_subject, "Chat"), text=text,
            in_reply_to=session.email_thread or None, conversation_id=session.conversation_id)
        session.email_thread = session.email_thread or message_id    # the invitation roots the thread
        self.by_email_id[message_id] = session
        # After the session, a reply to any of its emails still joins Mary's conversation.
        contribution = session.invite.headers.get("Contribution-ID") if session.invite is not None else ""
        self.iwf.threads.remember_id(message_id, cpm_uri=session.cpm_uri, conversation_id=session.conversation_id,
                                     contribution_id=contribution or "")


def _reply_subject(subject: str, fallback: str) -> str:
    subject = " ".join((subject or "").split()) or fallback
    return subject if re.match(r"(?i)re\s*:", subject) else f"Re: {subject}"
