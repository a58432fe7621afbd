"""The interworking function of the operator that serves legacy users.

CPM side: a SIP node. Its CPM server hands it requests for users the routing
decision sent to a legacy technology (header P-Iwlab-Route), and it sends
its own requests (IMDNs, messages from legacy users) through that server.
SMS side: an ESME bound to the SMSC.

Ordering (seed 5.8.5 step 6): messages from one sender to one recipient are
submitted one part at a time, each part only after the previous one was
accepted; a throttled or lost part is resent before anything behind it, so
neither throttling nor retries reorder or duplicate a conversation.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import smpplib.consts as c

from . import sip, smstext
from .cpim import CpimError, parse_cpim, uri_of
from .esme import Esme, status_name
from .nodes import NodeDirectory
from .sip import SipParseError, SipRequest, SipResponse, make_response
from .sipnet import SipConnection, SipConnectionClosed
from .topology import Operator, Topology, User
from .trace import Trace

log = logging.getLogger(__name__)
Address = tuple[str, int]
RETRY_STATUSES = {c.SMPP_ESME_RTHROTTLED, c.SMPP_ESME_RMSGQFUL}
TON_INTERNATIONAL = 1
NPI_E164 = 1
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
    wants_delivery_report: bool
    smsc_ids: list[str] = field(default_factory=list)


class _Conversation:
    """The ordered outbox of one (sender, recipient) pair and its worker."""

    def __init__(self) -> None:
        self.queue: deque[OutboundSms] = deque()
        self.wakeup = asyncio.Event()
        self.worker: asyncio.Task | None = None


class Iwf:
    def __init__(self, operator: Operator, topology: Topology, trace: Trace, nodes: NodeDirectory, *,
                 host: str, smsc_address: Callable[[], Address], name: str = "IWF") -> None:
        assert operator.iwf is not None
        self.operator = operator
        self.topology = topology
        self.trace = trace
        self.nodes = nodes
        self.host = host
        self.name = name
        self.port = 0
        self._smsc_address = smsc_address
        self._server: asyncio.Server | None = None
        self._connections: set[SipConnection] = set()
        self._conversations: dict[tuple[str, str], _Conversation] = {}
        self._refs = itertools.cycle(range(1, 256))
        self.esme: Esme | None = None
        self.submitted = 0          # submit_sm accepted by the SMSC (parts)
        self.retries = 0            # resends after throttling or a lost answer
        self.failed: list[tuple[OutboundSms, str]] = []
        self.ordering_enabled = True   # a demo/test switch: False lets conversations race (breaks 5.8.5 step 6)

    # -- lifecycle ------------------------------------------------------------
    async def start(self, sip_port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_connection, self.host, sip_port)
        self.port = self._server.sockets[0].getsockname()[1]
        smsc_host, smsc_port = self._smsc_address()
        self.esme = Esme(smsc_host, smsc_port, self.operator.iwf.system_id, self.operator.iwf.password,
                         node_name=self.name, nodes=self.nodes, on_deliver=self._sms_received,
                         on_state=self._esme_state)
        await self.esme.start()
        return self.port

    async def stop(self) -> None:
        for conversation in self._conversations.values():
            if conversation.worker:
                conversation.worker.cancel()
        if self.esme:
            await self.esme.stop()
        for conn in list(self._connections):
            conn.close()
        if self._server:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

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
        elif message.method == "OPTIONS":
            self._respond(conn, message, 200, "OK")
        elif message.method != "ACK":
            self._respond(conn, message, 501, f"{message.method} not interworked yet")

    def _cpm_message(self, conn: SipConnection, req: SipRequest) -> None:
        technology = _route_technology(req.headers.get("P-Iwlab-Route"))
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
                          note=f"IMDN for {recipient.name} not interworked: {technology.upper() or 'legacy'} has no equivalent")
            return
        if technology == "email" or (technology != "sms" and recipient.device == "email"):
            self._respond(conn, req, 480, "Email interworking is not available in this lab yet")
            return
        if not recipient.msisdn:
            self._respond(conn, req, 404, f"{recipient.name} has no SMS number")
            return
        sender_uri = uri_of(cpim.sender) or sip.parse_name_addr(req.headers.get("From") or "").uri
        sender = self.topology.user_by_uri(sender_uri)
        if sender is None or not sender.msisdn:
            self._respond(conn, req, 403, "Sender has no number to show on SMS")
            return
        sms = OutboundSms(source=sender.msisdn, dest=recipient.msisdn, text=cpim.text,
                          imdn_message_id=cpim.message_id, sender_uri=sender_uri, recipient_uri=req.uri,
                          wants_delivery_report="positive-delivery" in cpim.disposition
                          or "negative-delivery" in cpim.disposition)
        self._respond(conn, req, 202, "Accepted", note=f"queued for SMS to {recipient.name} (+{recipient.msisdn})")
        self._enqueue(sms)

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
                self.failed.append((sms, str(exc)))
                log.warning("SMS %s->%s failed: %s", sms.source, sms.dest, exc)
            conversation.queue.popleft()
        if not self.ordering_enabled:
            self._conversations.pop(key, None)

    async def _submit_message(self, sms: OutboundSms) -> None:
        assert self.esme is not None
        try:
            parts = smstext.encode(sms.text, ref=next(self._refs))
        except ValueError as exc:
            raise _PermanentFailure(str(exc)) from exc
        for part in parts:
            params = dict(
                source_addr_ton=TON_INTERNATIONAL, source_addr_npi=NPI_E164, source_addr=sms.source,
                dest_addr_ton=TON_INTERNATIONAL, dest_addr_npi=NPI_E164, destination_addr=sms.dest,
                esm_class=0x40 if part.esm_class_udhi else 0x00,
                data_coding=part.data_coding, short_message=part.short_message(),
                registered_delivery=1 if sms.wants_delivery_report else 0,
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
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                raise _PermanentFailure(f"SMSC refused part: {status_name(resp.status)}")
            self.submitted += 1
            message_id = getattr(resp, "message_id", b"") or b""
            sms.smsc_ids.append(message_id.decode() if isinstance(message_id, bytes) else str(message_id))

    # -- legacy -> CPM (use case 5.9.5) ------------------------------------------
    def _sms_received(self, pdu: object) -> None:
        """A deliver_sm from the SMSC: a receipt or an SMS for a CPM user."""
        log.debug("IWF received %s", getattr(pdu, "command", "?"))


class _PermanentFailure(Exception):
    pass


def _route_technology(header: str | None) -> str:
    match = _ROUTE_RE.match(header or "")
    return match.group(1).lower() if match else ""


def recipient_of(user: User) -> str:
    return f"+{user.msisdn}" if user.msisdn else user.name
