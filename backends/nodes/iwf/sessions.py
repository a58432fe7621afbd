"""Session interworking in the IWF: CPM sessions (SIP INVITE + MSRP) <-> SMS or email conversations.

This is the session leg's front: it takes the SIP requests of sessions (INVITE, CANCEL, ACK, BYE)
and the legacy users' texts that belong to one, and hands each to its step: to_legacy.py (5.8.6,
a CPM user invites), from_legacy.py (5.9.6, a legacy user asks), session_table.py (the sessions
and what every step does to one), session.py (states, dialog, keywords).

While a session lasts, MSRP SENDs become texts and the legacy user's texts become MSRP SENDs, in
order; BYE -> a closing text; the end keyword -> BYE. Email users (John) get the same, with
emails instead of SMS: every later email of the session answers the first one (In-Reply-To), so
John's client keeps the session in one thread. A reply belongs to the session by In-Reply-To /
References, else by its sender while he has a session open with that CPM user; only what he wrote
counts (mail.parse_incoming trims the quoted history, which repeats the keywords of the invitation).
"""
from __future__ import annotations

import dataclasses

from iwlab.backends.directory import NodeDirectory
from iwlab.backends.nodes.iwf.cpm_leg import CpmLeg
from iwlab.backends.nodes.iwf.email_leg import EmailLeg
from iwlab.backends.nodes.iwf.from_legacy import FromLegacy
from iwlab.backends.nodes.iwf.session import Direction, IwfSession, SessionRules, SessionState, reply_subject
from iwlab.backends.nodes.iwf.session_table import SessionTable
from iwlab.backends.nodes.iwf.sms_leg import SmsLeg
from iwlab.backends.nodes.iwf.threads import ThreadMap
from iwlab.backends.nodes.iwf.to_legacy import ToLegacy
from iwlab.backends.protocols import mail, smstext
from iwlab.backends.protocols.sip import SipRequest
from iwlab.backends.topology import Topology
from iwlab.backends.trace import Trace
from iwlab.backends.transports.msrp import MsrpListener
from iwlab.backends.transports.sip import SipConnection

SESSION_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL"})


class IwfSessions:
    def __init__(self, *, rules: SessionRules, cpm: CpmLeg, sms: SmsLeg, email: EmailLeg | None,
                 topology: Topology, threads: ThreadMap, host: str, name: str, trace: Trace,
                 nodes: NodeDirectory) -> None:
        """cpm: the IWF's CPM leg; the sessions open a link of their own beside it (another_link)."""
        self.rules = rules
        self._topology = topology
        self._threads = threads
        self._sms = sms
        self._email = email
        self.listener = MsrpListener(host=host, local_name=name, trace=trace, nodes=nodes)
        self._link = cpm.another_link(self._on_link_message)   # our own connection to the CPM server
        self.table = SessionTable(link=self._link, sms=sms, email=email, threads=threads, rules=rules)
        self._to_legacy = ToLegacy(table=self.table, listener=self.listener, rules=rules, topology=topology,
                                   threads=threads, host=host, email_reachable=email is not None)
        self._from_legacy = FromLegacy(table=self.table, link=self._link, listener=self.listener, rules=rules,
                                       topology=topology, threads=threads, host=host, name=name, nodes=nodes)

    def set_timeout(self, seconds: float) -> None:
        """How long an invitation waits for its answer, from now on (topology: session_timeout_seconds)."""
        self.rules = dataclasses.replace(self.rules, timeout=seconds)
        for part in (self.table, self._to_legacy, self._from_legacy):
            part.set_rules(self.rules)

    async def start(self) -> None:
        await self.listener.start()

    async def stop(self) -> None:
        self.table.close()
        await self.listener.stop()
        self._link.stop()

    # -- SIP in ---------------------------------------------------------------------------
    def on_request(self, conn: SipConnection, req: SipRequest) -> None:
        call_id = req.headers.get("Call-ID") or ""
        session = self.table.by_call_id.get(call_id)
        if req.method == "INVITE":
            if session is not None:
                self.table.respond(conn, req, 488, "Re-INVITE not supported by the IWF")
            else:
                self.table.spawn(self._to_legacy.invite(conn, req))
        elif req.method == "CANCEL":
            self.table.respond(conn, req, 200, "OK")
            if session and session.ringing and session.invite is not None:
                self._to_legacy.cancelled(session)
        elif req.method == "ACK":
            pass   # the 200's ACK: MSRP comes next (the offerer connects)
        elif req.method == "BYE":
            if session is None or not session.open:
                self.table.respond(conn, req, 481, "Call/Transaction Does Not Exist")
                return
            self.table.respond(conn, req, 200, "OK",
                               note=f"{session.cpm_name} ended the session: "
                                    f"a closing {session.via} to {session.legacy_name}")
            self.table.finish(session, SessionState.ENDED)
            self.table.tell(session, f"{session.cpm_name} ended the chat.")
        else:
            self.table.respond(conn, req, 501, f"{req.method} not interworked")

    def _on_link_message(self, conn: SipConnection, message) -> None:
        """Requests the CPM server sends on the sessions' own link."""
        if isinstance(message, SipRequest):
            if message.method in SESSION_METHODS:
                self.on_request(conn, message)
            else:
                self.table.respond(conn, message, 501, "Not Implemented")

    # -- texts in ---------------------------------------------------------------------------
    def take_sms(self, sms: smstext.IncomingSms) -> bool:
        """True when the SMS belongs to a session (an answer, a message in it, or a chat request)."""
        source, dest = sms.source.lstrip("+"), sms.dest.lstrip("+")
        session = self.table.by_number.get(source)
        if session is not None and session.open and dest == session.sms_source:
            return self._from_legacy_user(session, sms.text)
        if self.rules.is_request(sms.text):
            invitee = self._topology.user_by_number(dest)
            if invitee is None and self._threads.is_pool_number(dest):   # a pool number names Mary's thread
                owner = self._threads.pool_owner(source, dest)
                invitee = self._topology.user_by_uri(owner.cpm_uri) if owner else None
            if invitee is not None and invitee.cpm_uri and invitee.device == "cpm":
                if session is not None and session.open:
                    self._sms.send_text(source=dest, dest=source,
                                        text="You are already in a chat session; send "
                                             f"{self.rules.end_word} to finish it first.")
                    return True
                self.table.spawn(self._from_legacy.request_by_sms(source, dest, invitee))
                return True
        return False

    def take_email(self, incoming: mail.IncomingEmail, recipient_address: str) -> bool:
        """True when an email (from EmailLeg.relay) belongs to a session: an answer to an
        invitation, a message in a session, or a chat request to a CPM user."""
        sender = incoming.sender.lower()
        recipient = self._topology.user_by_uri("sip:" + recipient_address.lower())
        table = self.table
        # In-Reply-To / References first: that names the session whatever address he writes from.
        session = next((table.by_email_id[i] for i in mail.thread_key_candidates(incoming)
                        if i in table.by_email_id and table.by_email_id[i].open), None)
        if session is None:
            session = table.by_email.get(sender)
            if session is not None and (recipient is None or recipient is not session.cpm_user):
                session = None      # John in a session with Mary still writes ordinary mail to others
        if session is not None and session.open:
            # Attachments cannot go into the chat: listed, as relay() does, never dropped silently.
            forward = incoming.text + "".join(f"\n[attachment not forwarded: {a}]" for a in incoming.attachments)
            return self._from_legacy_user(session, incoming.text, forward)
        if self.rules.is_request(incoming.text) and recipient is not None \
                and recipient.cpm_uri and recipient.device == "cpm":
            busy = table.by_email.get(sender)
            if busy is not None and busy.open and self._email is not None:
                self._email.send_text(sender=recipient, recipient_address=incoming.sender,
                                      subject=reply_subject(incoming.subject, "Chat"),
                                      text=f"You are already in a chat session; send {self.rules.end_word} "
                                           "to finish it first.", in_reply_to=incoming.message_id)
                return True
            table.spawn(self._from_legacy.request_by_email(incoming, recipient))
            return True
        return False

    def _from_legacy_user(self, session: IwfSession, text: str, forward: str | None = None) -> bool:
        """A text (SMS or email) from the legacy user of an open session; False: not for the session.
        `forward`: what goes to the chat when it differs from the text the keywords are looked for in."""
        if session.ringing:
            if session.direction is Direction.TO_LEGACY:
                return self._to_legacy.answer(session, text)
            if self.rules.is_end(text) and session.invite is not None:
                self._from_legacy.withdraw(session)          # the requester gives up before the answer
                return True
            return False    # waiting for the CPM user: an ordinary message meanwhile
        if self.rules.is_end(text):
            self._legacy_ends(session)
        elif session.msrp is not None and (forward or text).strip():
            session.msrp.send_text(forward or text)
        return True

    def _legacy_ends(self, session: IwfSession) -> None:
        self.table.finish(session, SessionState.ENDED)
        self.table.spawn(self.table.send_in_dialog(
            session, "BYE", note=f"{session.legacy_name} sent {self.rules.end_word} by {session.via}"))
        self.table.tell(session, f"You ended the chat with {session.cpm_name}.")
