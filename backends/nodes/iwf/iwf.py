"""The interworking function of the operator that serves legacy users.

CPM side: a SIP node. Its CPM server hands it requests for users the routing
decision sent to a legacy technology (header P-Iwlab-Route), and it sends
its own requests (IMDNs, messages from legacy users) through that server.
SMS side: an ESME bound to the SMSC.

Ordering (seed 5.8.5 step 6): messages from one sender to one recipient are
submitted one part at a time, each part only after the previous one was
accepted; a throttled or lost part is resent before anything behind it, so
neither throttling nor retries reorder a conversation. Delivery is at least
once: a part whose submit_sm_resp was lost with the connection is resent,
and the SMSC may then hold it twice.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import re
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import smpplib.consts as c

from iwlab.backends.directory import NodeDirectory
from iwlab.backends.nodes.iwf.threads import ThreadMap
from iwlab.backends.protocols import sip, smpp, smstext
from iwlab.backends.protocols.cpim import (
    CPM_MSG_SERVICE,
    CpimError,
    CpimMessage,
    Imdn,
    imdn_message,
    parse_cpim,
    uri_of,
)
from iwlab.backends.protocols.sip import (
    SipParseError,
    SipRequest,
    SipResponse,
    make_response,
)
from iwlab.backends.protocols.smpp import parse_receipt_text, reassemble
from iwlab.backends.protocols.smpp import text as _text
from iwlab.backends.routing import EMAIL, Route
from iwlab.backends.topology import Operator, Topology
from iwlab.backends.trace import Trace
from iwlab.backends.transports.sip import (
    SipConnection,
    SipConnectionClosed,
    open_connection,
)
from iwlab.backends.transports.smpp_esme import Esme, status_name

log = logging.getLogger(__name__)
Address = tuple[str, int]
RETRY_STATUSES = {c.SMPP_ESME_RTHROTTLED, c.SMPP_ESME_RMSGQFUL}
TON_INTERNATIONAL = 1
NPI_E164 = 1
SESSION_METHODS = {"INVITE", "ACK", "BYE", "CANCEL"}
_ROUTE_RE = re.compile(r'^\s*(\w+)\s*(?:;\s*reason="(.*)")?\s*$')


@dataclass
class OutboundSms:
    """One CPM message on its way to a handset."""
    source: str            # sender's MSISDN digits
    dest: str              # recipient's MSISDN digits
    text: str
    imdn_message_id: str
    sender_uri: str
    recipient_uri: str
    disposition: tuple[str, ...]             # imdn.Disposition-Notification asked for
    datetime: str                            # the CPIM DateTime, echoed in the IMDN
    conversation_id: str = ""                # the IMDN travels in the same conversation
    smsc_ids: list[str] = field(default_factory=list)
    parts: int = 0
    delivered_parts: set[int] = field(default_factory=set)
    failed: bool = False

    @property
    def wants_receipt(self) -> bool:
        return any(d in self.disposition for d in ("positive-delivery", "negative-delivery"))


class _Conversation:
    """The ordered outbox of one (sender, recipient) pair and its worker."""

    def __init__(self) -> None:
        self.queue: deque[OutboundSms] = deque()
        self.worker: asyncio.Task | None = None


class Iwf:
    def __init__(self, operator: Operator, topology: Topology, trace: Trace, nodes: NodeDirectory, *,
                 host: str, smsc_address: Callable[[], Address], cpm_address: Callable[[], Address | None],
                 reassembly_timeout: float = 30.0, name: str = "IWF") -> None:
        assert operator.iwf is not None
        self.operator = operator
        self.topology = topology
        self.trace = trace
        self.nodes = nodes
        self.host = host
        self.name = name
        self.port = 0
        self._smsc_address = smsc_address
        self._cpm_address = cpm_address
        self._cpm_link: SipConnection | None = None
        self._cpm_outbox: deque[tuple[SipRequest, str]] = deque()   # requests to CPM, in order
        self._cpm_sender: asyncio.Task | None = None
        self._cseq = itertools.count(1)
        account = operator.iwf
        self.threads = ThreadMap(account.thread_policy, expiry=account.thread_expiry_seconds,
                                 pool=account.number_pool)
        # Parts that never all arrive are shown, marked incomplete, after this long.
        self.reassembler = smstext.Reassembler(timeout=reassembly_timeout)
        self._by_smsc_id: dict[str, tuple[OutboundSms, int]] = {}   # normalised id -> (message, part)
        self._early_receipts: dict[str, Any] = {}
        self._expiry: asyncio.Task | None = None
        self.sessions = None   # an IwfSessions (backends/iwf_sessions.py) once sessions are interworked
        self.email = None      # an IwfEmail (backends/iwf_email.py) when the lab has a mail server
        self._server: asyncio.Server | None = None
        self._connections: set[SipConnection] = set()
        self._conversations: dict[tuple[str, str], _Conversation] = {}
        self._refs = itertools.cycle(range(1, 256))
        self.esme: Esme | None = None
        self.submitted = 0          # submit_sm accepted by the SMSC (parts)
        self.retries = 0            # resends after throttling or a lost answer
        self.failed: list[tuple[OutboundSms, str]] = []
        self.ordering_enabled = True   # a demo/test switch: False lets conversations race (breaks 5.8.5 step 6)
        # With ordering off, a throttled part waits this long, as a windowed gateway's requeue would,
        # while the parts behind it go on: long enough that the overtaking is sure to show.
        self.unordered_retry_delay = 1.0

    # -- lifecycle ------------------------------------------------------------
    async def start(self, sip_port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_connection, self.host, sip_port)
        self.port = self._server.sockets[0].getsockname()[1]
        smsc_host, smsc_port = self._smsc_address()
        self.esme = Esme(smsc_host, smsc_port, self.operator.iwf.system_id, self.operator.iwf.password,
                         node_name=self.name, nodes=self.nodes, on_deliver=self._sms_received,
                         on_state=self._esme_state, accept=self._accept_deliver)
        await self.esme.start()
        self._expiry = asyncio.create_task(self._expire_parts(), name="IWF reassembly timer")
        return self.port

    async def stop(self) -> None:
        if self._server:
            self._server.close()      # accept nothing more; what is open is closed below
        if self.sessions is not None:
            await self.sessions.stop()
        for task in (self._expiry, self._cpm_sender):
            if task:
                task.cancel()
        if self._cpm_link:
            self._cpm_link.close()
        for conversation in self._conversations.values():
            if conversation.worker:
                conversation.worker.cancel()
        if self.email:
            await self.email.stop()
        if self.esme:
            await self.esme.stop()
        for conn in list(self._connections):
            conn.close()
        if self._server:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _accept_deliver(self, pdu: Any) -> int:
        """Before the deliver_sm_resp: refuse an SMS nobody here can take, rather than lose it."""
        if smpp.is_receipt(pdu.esm_class):
            return c.SMPP_ESME_ROK
        dest = _text(pdu.destination_addr).lstrip("+")
        user = self.topology.user_by_number(dest)
        if (user and user.cpm_uri) or self.threads.is_pool_number(dest):
            return c.SMPP_ESME_ROK
        return c.SMPP_ESME_RINVDSTADR

    def pending(self) -> int:
        return sum(len(conv.queue) for conv in self._conversations.values())

    def _new_connection(self) -> SipConnection:
        conn = SipConnection(self._on_sip, local_name=self.name, trace=self.trace, nodes=self.nodes,
                             on_close=self._connections.discard)
        self._connections.add(conn)
        return conn

    def _esme_state(self, state: str, detail: str) -> None:
        log.info("IWF ESME %s: %s", state, detail)

    # -- CPM -> legacy ----------------------------------------------------------
    def _on_sip(self, conn: SipConnection, message: SipRequest | SipResponse | SipParseError) -> None:
        if isinstance(message, SipParseError):
            if isinstance(message.partial, SipRequest):
                self._respond(conn, message.partial, message.status, "Bad Request")
            return
        if isinstance(message, SipResponse):
            return
        if message.method == "MESSAGE":
            self._cpm_message(conn, message)
        elif message.method in SESSION_METHODS and self.sessions is not None:
            self.sessions.on_request(conn, message)      # sessions: backends/iwf_sessions.py
        elif message.method == "OPTIONS":
            self._respond(conn, message, 200, "OK")
        elif message.method != "ACK":
            self._respond(conn, message, 501, f"{message.method} not interworked yet")

    def _cpm_message(self, conn: SipConnection, req: SipRequest) -> None:
        route = Route.from_header(req.headers.get(Route.HEADER))
        if route is None or not route.technology.interworked:
            self._respond(conn, req, 403, f"No interworking decision ({Route.HEADER}): the IWF serves what its CPM server hands on")
            return
        recipient = self.topology.user_by_uri(req.uri)
        if recipient is None:
            self._respond(conn, req, 404, "User Not Found")
            return
        try:
            cpim = parse_cpim(req.body)
        except CpimError as exc:
            self._respond(conn, req, 400, f"Bad CPIM body: {exc}"[:100])
            return
        if cpim.is_imdn:
            # A notification for a legacy user: SMS and email have no place for it.
            self._respond(conn, req, 200, "OK",
                          note=f"IMDN for {recipient.name} not interworked: {route.technology.name} has no equivalent")
            return
        if route.technology == EMAIL:
            self._cpm_to_email(conn, req, cpim, recipient)
            return
        if not recipient.msisdn:
            self._respond(conn, req, 404, f"{recipient.name} has no SMS number")
            return
        sender_uri = uri_of(cpim.sender) or sip.parse_name_addr(req.headers.get("From") or "").uri
        sender = self.topology.user_by_uri(sender_uri)
        if sender is None or not sender.msisdn:
            self._respond(conn, req, 403, "Sender has no number to show on SMS")
            return
        parts, _ = smstext.sms_count(cpim.text)
        if parts > smstext.MAX_PARTS:
            self._respond(conn, req, 413, f"Too long for SMS: {parts} parts, at most {smstext.MAX_PARTS}")
            return
        conversation_id = req.headers.get("Conversation-ID") or ""
        source = self.threads.outbound_sms(
            cpm_uri=sender.cpm_uri or sender_uri, cpm_number=sender.msisdn, peer=recipient.msisdn,
            conversation_id=conversation_id, contribution_id=req.headers.get("Contribution-ID") or "")
        sms = OutboundSms(source=source, dest=recipient.msisdn, text=cpim.text,
                          imdn_message_id=cpim.message_id, sender_uri=sender.cpm_uri or sender_uri,
                          recipient_uri=req.uri, disposition=cpim.disposition, datetime=cpim.datetime,
                          conversation_id=conversation_id)
        note = f"queued for SMS to {recipient.name} (+{recipient.msisdn})"
        if source != sender.msisdn:
            note += f", sent from pool number +{source} so a reply names this thread"
        if "display" in cpim.disposition:
            note += "; a display notification was asked for, but SMS cannot report reading: it will not be sent"
        self._respond(conn, req, 202, "Accepted", note=note)
        self._enqueue(sms)

    def _cpm_to_email(self, conn: SipConnection, req: SipRequest, cpim, recipient) -> None:
        sender = self.topology.user_by_uri(uri_of(cpim.sender))
        if self.email is None or not recipient.email:
            self._respond(conn, req, 480, f"{recipient.name} has no email this lab can reach")
            return
        if sender is None:
            self._respond(conn, req, 403, "Sender unknown to this lab: no address to show on email")
            return
        note = self.email.send(sender=sender, recipient=recipient, cpim=cpim,
                               conversation_id=req.headers.get("Conversation-ID") or "",
                               contribution_id=req.headers.get("Contribution-ID") or "",
                               in_reply_to=req.headers.get("InReplyTo-Contribution-ID") or "")
        self._respond(conn, req, 202, "Accepted", note=note)

    def send_sms_text(self, *, source: str, dest: str, text: str, sender_uri: str = "") -> None:
        """An SMS the IWF writes itself (an adapted invitation, a session text), in conversation order."""
        self._enqueue(OutboundSms(source=source.lstrip("+"), dest=dest.lstrip("+"), text=text,
                                  imdn_message_id="", sender_uri=sender_uri, recipient_uri=f"tel:+{dest.lstrip('+')}",
                                  disposition=(), datetime=""))

    def _respond(self, conn: SipConnection, req: SipRequest, status: int, reason: str, note: str = "") -> None:
        if req.method == "ACK":
            return
        try:
            conn.send(make_response(req, status, reason, to_tag=sip.new_tag()), note=note)
        except SipConnectionClosed:
            pass

    def _enqueue(self, sms: OutboundSms) -> None:
        key = (sms.source, sms.dest) if self.ordering_enabled else (sms.source, f"{sms.dest}#{id(sms)}")
        conversation = self._conversations.get(key)
        if conversation is None:
            conversation = self._conversations[key] = _Conversation()
        conversation.queue.append(sms)
        if conversation.worker is None or conversation.worker.done():
            conversation.worker = asyncio.create_task(self._drain(key, conversation),
                                                      name=f"IWF outbox {sms.source}->{sms.dest}")

    async def _drain(self, key: tuple[str, str], conversation: _Conversation) -> None:
        while conversation.queue:
            sms = conversation.queue[0]
            try:
                await self._submit_message(sms)
            except _PermanentFailure as exc:
                self._fail(sms, f"the SMSC refused it: {exc}")
            except Exception as exc:   # noqa: BLE001 - a bug must not strand the conversation
                log.exception("IWF outbox %s -> %s", sms.source, sms.dest)
                self._fail(sms, f"internal error: {exc}")
            conversation.queue.popleft()
        if not self.ordering_enabled:
            self._conversations.pop(key, None)

    def _fail(self, sms: OutboundSms, why: str) -> None:
        self.failed.append((sms, why))
        log.warning("SMS +%s -> +%s failed: %s", sms.source, sms.dest, why)
        if sms.imdn_message_id and sms.wants_receipt:
            self._send_imdn(sms, "failed", why)

    async def _submit_message(self, sms: OutboundSms) -> None:
        assert self.esme is not None
        try:
            parts = smstext.encode(sms.text, ref=next(self._refs))
        except ValueError as exc:
            raise _PermanentFailure(str(exc)) from exc
        sms.parts = len(parts)
        for part in parts:
            params = dict(
                source_addr_ton=TON_INTERNATIONAL, source_addr_npi=NPI_E164, source_addr=sms.source,
                dest_addr_ton=TON_INTERNATIONAL, dest_addr_npi=NPI_E164, destination_addr=sms.dest,
                esm_class=0x40 if part.esm_class_udhi else 0x00,
                data_coding=part.data_coding, short_message=part.short_message(),
                registered_delivery=1 if sms.wants_receipt else 0,
            )
            delay = 0.005
            while True:
                try:
                    resp = await self.esme.submit(**params)
                except ConnectionError:
                    # Sent but unanswered, or not sent: resend this same part before anything else.
                    self.retries += 1
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                if resp.status == c.SMPP_ESME_ROK:
                    break
                if resp.status in RETRY_STATUSES:
                    self.retries += 1
                    # (With ordering off, a naive gateway waits longer and lets later messages pass.)
                    await asyncio.sleep(delay if self.ordering_enabled else self.unordered_retry_delay)
                    delay = min(delay * 2, 1.0)
                    continue
                raise _PermanentFailure(f"SMSC refused part: {status_name(resp.status)}")
            self.submitted += 1
            message_id = _text(getattr(resp, "message_id", b""))
            sms.smsc_ids.append(message_id)
            if not sms.wants_receipt:
                continue
            keys = smpp.receipt_keys(message_id)
            self._by_smsc_id[smpp.normalised_message_id(message_id)] = (sms, len(sms.smsc_ids) - 1)
            # The receipt can overtake the submit_sm_resp on its way to this task.
            early = next((self._early_receipts.pop(k) for k in keys if k in self._early_receipts), None)
            if early is not None:
                self._receipt(early)

    # -- legacy -> CPM (use case 5.9.5) and receipts ---------------------------------------------
    def _sms_received(self, pdu: Any) -> None:
        """A deliver_sm from the SMSC: a delivery receipt, or an SMS for a CPM user."""
        if pdu.command != "deliver_sm":
            return
        if smpp.is_receipt(pdu.esm_class):
            self._receipt(pdu)
            return
        for sms in reassemble(self.reassembler, pdu):
            self._sms_to_cpm(sms)

    async def _expire_parts(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for sms in self.reassembler.expire():   # shown incomplete, never dropped
                self._sms_to_cpm(sms)

    def _sms_to_cpm(self, sms: smstext.IncomingSms) -> None:
        if self.sessions is not None and self.sessions.take_sms(sms):
            return   # an answer to an invitation, or a message inside a session
        source, dest = sms.source.lstrip("+"), sms.dest.lstrip("+")
        recipient = self.topology.user_by_number(dest)
        thread = None
        if self.threads.is_pool_number(dest):
            thread = self.threads.inbound_sms(peer=source, dest_number=dest, cpm_uri=None)
            owner = self.threads.pool_owner(source, dest)
            recipient = self.topology.user_by_uri(owner.cpm_uri) if owner else None
        elif recipient is not None:
            thread = self.threads.inbound_sms(peer=source, dest_number=dest, cpm_uri=recipient.cpm_uri)
        if recipient is None or not recipient.cpm_uri:
            log.warning("SMS from +%s to +%s: no CPM user behind that number", source, dest)
            return
        sender = self.topology.user_by_number(source)
        contribution_id = uuid.uuid4().hex
        conversation_id = thread.conversation_id if thread else uuid.uuid4().hex
        text = sms.text if sms.complete else f"{sms.text}\n[incomplete: {sms.parts} of {sms.total} parts arrived]"
        cpim = CpimMessage(sender=f'"{sender.name}" <tel:+{source}>' if sender else f"<tel:+{source}>",
                           recipient=f"<{recipient.cpm_uri}>", body=text.encode("utf-8"),
                           disposition=("positive-delivery",))
        req = self._new_request("MESSAGE", recipient.cpm_uri, from_uri=f"tel:+{source}",
                                from_name=sender.name if sender else None)
        req.headers.add("P-Preferred-Service", CPM_MSG_SERVICE)
        req.headers.add("Conversation-ID", conversation_id)
        req.headers.add("Contribution-ID", contribution_id)
        if thread:
            req.headers.add("InReplyTo-Contribution-ID", thread.contribution_id)
            self.threads.note_reply(source, thread, contribution_id)
        req.headers.add("Content-Type", "message/cpim")
        req.body = cpim.to_bytes()
        parts = f" ({sms.parts}/{sms.total} parts)" if sms.total > 1 else ""
        if thread:
            note = f"SMS{parts} from +{source} answers {recipient.name}'s thread ({self.threads.policy} policy)"
        else:
            note = f"SMS{parts} from +{source} starts a new conversation with {recipient.name}"
        self._send_to_cpm(req, note)

    def _receipt(self, pdu: Any) -> None:
        receipt_id = _text(getattr(pdu, "receipted_message_id", None) or b"")
        fields = parse_receipt_text(_text(pdu.short_message)) or {}
        receipt_id = receipt_id or fields.get("id", "")
        found = self._find_receipted(receipt_id)
        if found is None:
            # Not known yet (its submit_sm_resp is still on its way) or never ours: keep it a while.
            for key in smpp.receipt_keys(receipt_id):
                self._early_receipts[key] = pdu
            while len(self._early_receipts) > 1000:
                self._early_receipts.pop(next(iter(self._early_receipts)))
            return
        sms, part = found
        outcome = smpp.receipt_outcome(getattr(pdu, "message_state", None), fields.get("stat"))
        if outcome is None:
            return   # ENROUTE, ACCEPTD, UNKNOWN: not final, wait for the next one
        stat = fields.get("stat") or str(getattr(pdu, "message_state", ""))
        if outcome == "delivered":
            sms.delivered_parts.add(part)
            # A multipart message is delivered when every part is.
            if len(sms.delivered_parts) == sms.parts:
                self._forget_receipts(sms)
                if "positive-delivery" in sms.disposition:
                    self._send_imdn(sms, "delivered", f"SMSC receipt: all {sms.parts} part(s) delivered")
        elif not sms.failed:
            sms.failed = True
            self._forget_receipts(sms)
            self._send_imdn(sms, "failed", f"SMSC receipt: stat:{stat}")

    def _find_receipted(self, receipt_id: str) -> tuple[OutboundSms, int] | None:
        """The exact id first; another base only when it names exactly one message."""
        exact = smpp.normalised_message_id(receipt_id)
        if exact in self._by_smsc_id:
            return self._by_smsc_id[exact]
        matches = {id(self._by_smsc_id[k][0]): self._by_smsc_id[k] for k in smpp.receipt_keys(receipt_id)
                   if k in self._by_smsc_id}
        return next(iter(matches.values())) if len(matches) == 1 else None

    def _forget_receipts(self, sms: OutboundSms) -> None:
        for message_id in sms.smsc_ids:
            self._by_smsc_id.pop(smpp.normalised_message_id(message_id), None)

    def _send_imdn(self, sms: OutboundSms, status: str, why: str) -> None:
        recipient = self.topology.user_by_number(sms.dest)
        peer_uri = recipient.cpm_uri if recipient and recipient.cpm_uri else f"tel:+{sms.dest}"
        envelope = imdn_message(Imdn(sms.imdn_message_id, "delivery", status, sms.datetime, peer_uri),
                                sender=f"<{peer_uri}>", recipient=f"<{sms.sender_uri}>")
        req = self._new_request("MESSAGE", sms.sender_uri, from_uri=peer_uri)
        if sms.conversation_id:
            req.headers.add("Conversation-ID", sms.conversation_id)
        req.headers.add("Content-Type", "message/cpim")
        req.body = envelope.to_bytes()
        self._send_to_cpm(req, f"IMDN {status} for imdn.Message-ID {sms.imdn_message_id}: {why}")

    def _new_request(self, method: str, uri: str, *, from_uri: str, from_name: str | None = None) -> SipRequest:
        display = f'"{from_name}" ' if from_name else ""
        return sip.make_request(method, uri, via=(self.host, self.port),
                                from_=f"{display}<{from_uri}>;tag={sip.new_tag()}", to=f"<{uri}>",
                                call_id=sip.new_call_id(self.operator.cpm_domain), cseq=next(self._cseq))

    def _send_to_cpm(self, req: SipRequest, note: str) -> None:
        """Queue a request to the CPM side; sent in order, resent if the link breaks."""
        self._cpm_outbox.append((req, note))
        if self._cpm_sender is None or self._cpm_sender.done():
            self._cpm_sender = asyncio.create_task(self._drain_cpm_outbox(), name="IWF -> CPM")

    async def _drain_cpm_outbox(self) -> None:
        delay = 0.05
        while self._cpm_outbox:
            req, note = self._cpm_outbox[0]
            try:
                link = await self._cpm_connection()
                response = await link.request(req, note=note)
            except (OSError, SipConnectionClosed) as exc:
                log.warning("IWF cannot reach CPM (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            self._cpm_outbox.popleft()
            if response.status >= 300:
                self._cpm_refused(req, response)

    def _cpm_refused(self, req: SipRequest, response: SipResponse) -> None:
        """An SMS the CPM side would not take: the SMS sender hears why, nothing vanishes."""
        log.warning("CPM refused %s %s: %s %s", req.method, req.uri, response.status, response.reason)
        sender = sip.uri_of(req.headers.get("From"))
        if not sender.startswith("tel:") or "message/cpim" not in (req.headers.get("Content-Type") or ""):
            return
        try:
            if parse_cpim(req.body).is_imdn:
                return
        except CpimError:
            return
        recipient = self.topology.user_by_uri(req.uri)
        who = recipient.name if recipient else req.uri
        own_number = recipient.msisdn if recipient and recipient.msisdn else ""
        if own_number:
            self.send_sms_text(source=own_number, dest=sender[4:],
                               text=f"Your message to {who} was not delivered ({response.status} {response.reason}).")

    async def _cpm_connection(self) -> SipConnection:
        if self._cpm_link is None or not self._cpm_link.is_open:
            address = self._cpm_address()
            if address is None:
                raise OSError("the CPM server is not running")
            self._cpm_link = await open_connection(address[0], address[1], self._on_sip,
                                                   local_name=self.name, nodes=self.nodes,
                                                   annotate=self.trace.annotate)
        return self._cpm_link


class _PermanentFailure(Exception):
    pass
