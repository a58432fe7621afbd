"""The IWF's open chat sessions, and what every step of either direction does to one of them.

Found by Call-ID (SIP), by the legacy user's number or address (his texts), by the Message-IDs
of the session's emails (a reply names its session whatever address it comes from). A finished
session stays findable by Call-ID a while, for late or repeated requests (a BYE crossing ours,
an ACK), then is forgotten.
"""
from __future__ import annotations

import asyncio
import logging

from iwlab.backends.nodes.iwf.cpm_leg import CpmLeg
from iwlab.backends.nodes.iwf.email_leg import EmailLeg
from iwlab.backends.nodes.iwf.session import IwfSession, SessionRules, SessionState, reply_subject
from iwlab.backends.nodes.iwf.sms_leg import SmsLeg
from iwlab.backends.nodes.iwf.threads import ThreadMap
from iwlab.backends.protocols import sip
from iwlab.backends.protocols.sip import SipRequest, SipResponse, make_response
from iwlab.backends.transports.msrp import MsrpSession
from iwlab.backends.transports.sip import SipConnection, SipConnectionClosed

log = logging.getLogger(__name__)
FORGET_AFTER = 64.0   # seconds a finished session still answers (64*T1, as SIP keeps a transaction)


class SessionTable:
    def __init__(self, *, link: CpmLeg, sms: SmsLeg, email: EmailLeg | None, threads: ThreadMap,
                 rules: SessionRules) -> None:
        """link: the sessions' own connection into CPM; sms, email: how the legacy user is told."""
        self._link = link
        self._sms = sms
        self._email = email
        self._threads = threads
        self._rules = rules
        self.by_call_id: dict[str, IwfSession] = {}
        self.by_number: dict[str, IwfSession] = {}     # legacy MSISDN -> its open session
        self.by_email: dict[str, IwfSession] = {}      # legacy email address (lower case) -> its open session
        self.by_email_id: dict[str, IwfSession] = {}   # Message-IDs of the session's emails -> the session
        self._tasks: set[asyncio.Task] = set()

    def set_rules(self, rules: SessionRules) -> None:
        """New session words or patience (a scenario's setting); sessions already ringing keep their timer."""
        self._rules = rules

    def add(self, session: IwfSession) -> None:
        self.by_call_id[session.call_id] = session
        if session.legacy_email:
            self.by_email[session.legacy_email.lower()] = session
        else:
            self.by_number[session.legacy_number] = session

    def spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """The lab stops: no task, timer or MSRP connection of a session outlives it."""
        for task in list(self._tasks):
            task.cancel()
        for session in self.by_call_id.values():
            if session.timer:
                session.timer.cancel()
            if session.msrp:
                session.msrp.close()    # our outgoing MSRP connections too, not only the listener's

    def finish(self, session: IwfSession, state: SessionState) -> None:
        session.move(state)
        if session.timer:
            session.timer.cancel()
        if session.msrp:
            session.msrp.close()
        if session.legacy_number and self.by_number.get(session.legacy_number) is session:
            del self.by_number[session.legacy_number]
        if session.legacy_email and self.by_email.get(session.legacy_email.lower()) is session:
            del self.by_email[session.legacy_email.lower()]
        asyncio.get_running_loop().call_later(FORGET_AFTER, self._forget, session)

    def _forget(self, session: IwfSession) -> None:
        if self.by_call_id.get(session.call_id) is session:
            del self.by_call_id[session.call_id]
        for message_id in [i for i, s in self.by_email_id.items() if s is session]:
            del self.by_email_id[message_id]

    # -- SIP ----------------------------------------------------------------------------------
    def respond(self, conn: SipConnection | None, req: SipRequest | None, status: int, reason: str, *, note: str = "",
                to_tag: str | None = None, body: bytes = b"", content_type: str | None = None,
                session: IwfSession | None = None) -> None:
        """session: a 1xx/2xx that makes (or keeps) its dialog carries the Record-Route and our Contact."""
        if conn is None or req is None:
            return
        response = make_response(req, status, reason, to_tag=to_tag or sip.new_tag(), body=body,
                                 content_type=content_type)
        if session is not None and 100 < status < 300:
            for route in req.headers.get_all("Record-Route"):
                response.headers.add("Record-Route", route)
            response.headers.add("Contact", self._link.contact())
        try:
            conn.send(response, note=note)
        except SipConnectionClosed:
            pass

    def dialog_request(self, session: IwfSession, method: str, cseq: int | None = None) -> SipRequest:
        return session.in_dialog_request(method, self._link.via(), cseq)

    async def send_in_dialog(self, session: IwfSession, method: str, note: str = "") -> SipResponse | None:
        req = self.dialog_request(session, method)
        try:
            link = await self._link.connection()
            return await asyncio.wait_for(link.request(req, note=note), 32)
        except (OSError, SipConnectionClosed, asyncio.TimeoutError) as exc:
            log.warning("IWF %s for %s failed: %s", method, session.call_id, exc)
            return None

    def cancel(self, invite: SipRequest) -> None:
        """CANCEL our INVITE (RFC 3261 9.1), on the link it went by, if that is still open."""
        self._link.send_if_connected(sip.make_cancel(invite), note=f"no answer within {self._rules.timeout:g} s")

    # -- the legacy user ------------------------------------------------------------------------
    def msrp_to_legacy(self, session: IwfSession):
        def deliver(_msrp: MsrpSession, text: str, content_type: str, message_id: str) -> None:
            if session.state is SessionState.ESTABLISHED:
                self.tell(session, text)
        return deliver

    def tell(self, session: IwfSession, text: str, subject: str | None = None) -> None:
        """A text to the session's legacy user, by SMS or by email (in order either way)."""
        if not session.legacy_email:
            self._sms.send_text(source=session.sms_source, dest=session.legacy_number, text=text)
            return
        if self._email is None or session.cpm_user is None:
            log.warning("no email leg for the session %s: %r not sent", session.call_id, text)
            return
        # From the CPM user's address, so that John's client answers her (and relay() brings it back).
        message_id = self._email.send_text(
            sender=session.cpm_user, recipient_address=session.legacy_email,
            subject=subject or reply_subject(session.email_subject, "Chat"), text=text,
            in_reply_to=session.email_thread or None, conversation_id=session.conversation_id)
        session.email_thread = session.email_thread or message_id    # the invitation roots the thread
        self.by_email_id[message_id] = session
        # After the session, a reply to any of its emails still joins Mary's conversation.
        contribution = session.invite.headers.get("Contribution-ID") if session.invite is not None else ""
        self._threads.remember_id(message_id, cpm_uri=session.cpm_uri, conversation_id=session.conversation_id,
                                  contribution_id=contribution or "")
