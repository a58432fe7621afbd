"""The interworking function of the operator that serves legacy users: the node.

Its CPM server hands it requests for users the routing decision sent to a legacy technology
(header P-Iwlab-Route, read in admission.py, never made here); the IWF admits them and hands each to
its leg: sms_leg.py (an ESME bound to the SMSC), email_leg.py (an SMTP client of the mail
server), sessions.py (chat sessions, either way). Everything the IWF sends into CPM itself
(IMDNs, messages from legacy users) goes through cpm_leg.py, in order.

The IWF builds its legs from what it is given, and is the one that wires them: a legacy text
goes to the session leg first (an answer, a chat message, a chat request), else to its own leg.
"""
from __future__ import annotations

import logging
import ssl
from typing import Callable

from iwlab.backends.directory import NodeDirectory
from iwlab.backends.nodes.iwf.admission import admitted
from iwlab.backends.nodes.iwf.content import Put
from iwlab.backends.nodes.iwf.cpm_leg import Answer, CpmLeg, Origin
from iwlab.backends.nodes.iwf.email_leg import EmailLeg
from iwlab.backends.nodes.iwf.groups import IwfGroups
from iwlab.backends.nodes.iwf.session import SessionRules
from iwlab.backends.nodes.iwf.sessions import SESSION_METHODS, IwfSessions
from iwlab.backends.nodes.iwf.sms_leg import SmsLeg
from iwlab.backends.nodes.iwf.threads import ThreadMap
from iwlab.backends.protocols import mail, sip, smstext
from iwlab.backends.protocols.cpim import (
    ACCEPTED_TYPES,
    CpimError,
    UnsupportedContent,
    message_content,
    parse_imdn_xml,
)
from iwlab.backends.protocols.sip import (
    SipParseError,
    SipRequest,
    SipResponse,
)
from iwlab.backends.routing import EMAIL, SMS, Route
from iwlab.backends.store import Store
from iwlab.backends.topology import Operator, Topology
from iwlab.backends.trace import Trace
from iwlab.backends.transports.sip import SipConnection, answer_unparseable, respond
from iwlab.backends.transports.sip_listeners import SipListeners
from iwlab.backends.transports.smpp_esme import Esme

Address = tuple[str, int]
log = logging.getLogger(__name__)


class Iwf:
    def __init__(self, operator: Operator, topology: Topology, trace: Trace, nodes: NodeDirectory, *,
                 host: str, smsc_address: Callable[[], Address], cpm_address: Callable[[], Address | None],
                 store: Store, mail_address: Callable[[], Address | None] | None = None,
                 reassembly_timeout: float = 30.0, name: str = "IWF",
                 make_esme: Callable[..., Esme] = Esme, put_content: Put | None = None) -> None:
        """store: the lab's durable store (what the IWF acknowledged and still owes waits there);
        mail_address: given when the lab has a mail server (then the IWF has an email leg);
        make_esme: the SMS leg's ESME (a test passes a fake that binds to nothing);
        put_content: the lab's content server (what SMS cannot carry is linked from there)."""
        assert operator.iwf is not None
        account = operator.iwf
        self.operator = operator
        self.topology = topology
        self.trace = trace
        self.nodes = nodes
        self.host = host
        self.name = name
        self.port = 0
        self._connections: set[SipConnection] = set()
        self.sip = SipListeners(name=name, new_connection=self.new_connection, on_message=self._on_sip,
                                trace=trace, nodes=nodes, on_close=self._connections.discard)
        self.threads = ThreadMap(account.thread_policy, expiry=account.thread_expiry_seconds,
                                 pool=account.number_pool)
        self.cpm = CpmLeg(name=name, host=host, domain=operator.cpm_domain, trace=trace, nodes=nodes,
                          server_address=cpm_address, local_port=lambda: self.port,
                          on_message=self._on_sip, on_refused=self._cpm_refused, store=store.queue(f"{name} cpm out"),
                          validity_seconds=account.message_validity_seconds, retry_seconds=account.retry_seconds)
        self.sms = SmsLeg(account=account, topology=topology, threads=self.threads, cpm=self.cpm, nodes=nodes,
                          name=name, smsc_address=smsc_address, session_claims=self._sms_for_session,
                          store=store, reassembly_timeout=reassembly_timeout, make_esme=make_esme,
                          put_content=put_content)
        self.email: EmailLeg | None = None
        if mail_address is not None:
            self.email = EmailLeg(topology=topology, threads=self.threads, cpm=self.cpm, nodes=nodes, name=name,
                                  mail_address=mail_address, session_claims=self._email_for_session,
                                  store=store.queue(f"{name} email out"), domain=operator.cpm_domain,
                                  owed_store=store.queue(f"{name} MDNs owed"),
                                  report_validity=account.message_validity_seconds, annotate=trace.annotate)
        # Sessions with legacy users (5.8.6 / 5.9.6).
        self.sessions = IwfSessions(rules=SessionRules.of(account), cpm=self.cpm, sms=self.sms, email=self.email,
                                    topology=topology, threads=self.threads, host=host, name=name, trace=trace,
                                    nodes=nodes)
        # Group chats: the IWF joins for legacy members a focus invites (groups.py).
        self.groups = IwfGroups(cpm=self.cpm, sms=self.sms, email=self.email, topology=topology, threads=self.threads,
                                rules=SessionRules.of(account), listener=self.sessions.listener, host=host)

    # -- lifecycle ------------------------------------------------------------
    async def start(self, sip_port: int, *, hosts: list[str] | None = None, tls: ssl.SSLContext | None = None,
                    tls_port: int = 0) -> int:
        await self.sip.start(hosts or [self.host], sip_port, tls=tls, tls_port=tls_port)
        self.port = self.sip.port
        self.cpm.restore()
        if self.email:
            self.email.restore()
        await self.sms.start()
        return self.port

    async def stop(self) -> None:
        self.sip.close()      # accept nothing more; what is open is closed below
        self.groups.stop()
        await self.sessions.stop()
        self.sms.stop_sending()
        self.cpm.stop()
        if self.email:
            await self.email.stop()
        await self.sms.stop()
        for conn in list(self._connections):
            conn.close()
        await self.sip.stop()

    def new_connection(self) -> SipConnection:
        """The listener's protocol factory: one SipConnection per accepted TCP connection."""
        conn = SipConnection(self._on_sip, local_name=self.name, trace=self.trace, nodes=self.nodes,
                             on_close=self._connections.discard)
        self._connections.add(conn)
        return conn

    # -- wiring the legs ------------------------------------------------------------
    def _sms_for_session(self, sms: smstext.IncomingSms) -> bool:
        return self.groups.take_sms(sms) or self.sessions.take_sms(sms)

    def _email_for_session(self, incoming: mail.IncomingEmail, recipient_address: str) -> bool:
        return self.groups.take_email(incoming) or self.sessions.take_email(incoming, recipient_address)

    def _cpm_refused(self, req: SipRequest, response: SipResponse, origin: Origin | None) -> None:
        """A request of ours the CPM side would not take: its sender hears why, by the technology
        his message came in (an SMS by SMS, an email by a DSN); nothing vanishes. An IMDN of ours
        (origin CPM, or none) has nobody to tell."""
        if origin is None:
            log.info("CPM refused %s %s (%s %s): nobody to report to", req.method, req.uri,
                     response.status, response.reason)
        elif origin.technology == SMS:
            self.sms.bounce(origin, req, response)
        elif origin.technology == EMAIL and self.email is not None:
            self.email.bounce(origin, req, response)

    def _imdn_for_legacy(self, req: SipRequest, body: bytes, recipient: str, route: Route) -> str:
        """A CPM user's IMDN for a message a legacy user sent: the report he is owed (a status
        report by SMS, an MDN by email), if he asked for one; the note says which mapping. Its
        sender is who the CPM server asserted (a report is believed from the recipient only)."""
        try:
            imdn = parse_imdn_xml(body)
        except CpimError as exc:
            return f"IMDN for {recipient} unreadable ({exc}): nothing to report"
        asserted = req.headers.get("P-Asserted-Identity") or req.headers.get("From") or ""
        reporter = self.topology.user_by_uri(sip.parse_name_addr(asserted).uri)
        for leg in (self.sms, self.email):
            note = leg.imdn_arrived(imdn, reporter) if leg is not None else None
            if note:
                return note
        return (f"IMDN {imdn.status} for {recipient} not interworked: no report was asked for "
                f"imdn.Message-ID {imdn.message_id} by {route.technology.name}")

    # -- CPM -> legacy ----------------------------------------------------------
    def _on_sip(self, conn: SipConnection, message: SipRequest | SipResponse | SipParseError) -> None:
        if isinstance(message, SipParseError):
            answer_unparseable(conn, message)
            return
        if isinstance(message, SipResponse):
            return
        if message.method == "MESSAGE":
            self._cpm_message(conn, message)
        elif message.method in SESSION_METHODS:
            (self.groups if self.groups.owns(message) else self.sessions).on_request(conn, message)
        elif message.method == "OPTIONS":
            respond(conn, message, 200, "OK")
        elif message.method != "ACK":
            respond(conn, message, 501, f"{message.method} not interworked yet")

    def _cpm_message(self, conn: SipConnection, req: SipRequest) -> None:
        """Admission of a pager-mode MESSAGE: the route decided upstream, someone to hand it to."""
        admission = admitted(conn, req, self.topology, respond)
        if admission is None:
            return
        route, recipient = admission
        try:   # CPIM from CPM clients, a bare text/plain body from plain softphones
            cpim = message_content(req.headers.get("Content-Type"), req.body, sender=req.headers.get("From") or "",
                                   recipient=req.headers.get("To") or "")
        except UnsupportedContent as exc:
            respond(conn, req, 415, f"Unsupported Media Type: {exc}"[:100],
                    extra_headers=[("Accept", ", ".join(ACCEPTED_TYPES))])
            return
        except CpimError as exc:
            respond(conn, req, 400, f"Bad CPIM body: {exc}"[:100])
            return
        if cpim.is_imdn:
            respond(conn, req, 200, "OK", note=self._imdn_for_legacy(req, cpim.body, recipient.name, route))
            return
        if route.technology == EMAIL:
            if self.email is None:
                answer = Answer(480, f"{recipient.name} has no email this lab can reach")
            else:
                answer = self.email.take_message(req, cpim, recipient)
        else:
            answer = self.sms.take_message(req, cpim, recipient)
        respond(conn, req, answer.status, answer.reason, note=answer.note)
