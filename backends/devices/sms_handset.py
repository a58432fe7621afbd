"""A simulated SMS handset: a plain feature phone, as an ESME bound to the SMSC.

It binds with system_id = its MSISDN digits (any real SMPP client that binds
that way takes its place), reassembles concatenated SMS in any order, keeps
an inbox and a sent list, and sends SMS to numbers.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import smpplib.consts as c

from iwlab.backends.devices import history
from iwlab.backends.devices.events import (
    BindStateChanged,
    DeviceEvent,
    DeviceListener,
    ReceiptReceived,
    SmsReceived,
    SmsSent,
)
from iwlab.backends.directory import NodeDirectory
from iwlab.backends.protocols import http, smpp, smstext
from iwlab.backends.protocols.smpp import reassemble
from iwlab.backends.topology import Topology, User
from iwlab.backends.transports.smpp_esme import Esme, SubmitFailed

Address = tuple[str, int]


@dataclass
class Sms:
    direction: str          # "in" or "out"
    number: str             # the other end, "+15550101"
    text: str
    parts: int = 1
    complete: bool = True
    time: float = field(default_factory=time.time)
    status: str = ""        # out: "sent" / "failed: ..."
    report: str = ""        # out: its status report: "awaited", "delivered", "EXPIRED" ... ("" none asked)
    ids: list[str] = field(default_factory=list)    # out: the SMSC's message id of each part
    reported: set[str] = field(default_factory=set)  # out: parts whose report says delivered

    @property
    def sender_label(self) -> str:
        return self.number


class SmsHandset:
    def __init__(self, user: User, topology: Topology, nodes: NodeDirectory, *,
                 smsc_address: Callable[[], Address], password: str, reassembly_timeout: float = 30.0) -> None:
        assert user.msisdn, f"{user.name} has no number"
        self.user = user
        self.topology = topology
        self.name = user.name
        self.number = f"+{user.msisdn}"
        self.nodes = nodes
        self._smsc_address = smsc_address
        self._password = password
        self.inbox: list[Sms] = []   # the newest history.KEPT
        self.sent: list[Sms] = []
        self.listeners: list[DeviceListener] = []
        self._reassembler = smstext.Reassembler(timeout=reassembly_timeout)
        self._refs = itertools.cycle(range(1, 256))
        self._expiry: asyncio.Task | None = None
        self.esme: Esme | None = None
        self.wants_reports = True      # registered_delivery=1: a status report for every SMS it sends
        self._awaiting: dict[str, Sms] = {}   # normalised SMSC message id -> the SMS it reports on

    async def start(self) -> None:
        host, port = self._smsc_address()
        self.esme = Esme(host, port, self.number.lstrip("+"), self._password, node_name=self.name, nodes=self.nodes,
                         on_deliver=self._deliver, on_state=lambda state, detail: self.emit(BindStateChanged(state)))
        await self.esme.start()
        self._expiry = asyncio.create_task(self._expire_parts(), name=f"{self.name} reassembly timer")

    async def stop(self) -> None:
        if self._expiry:
            self._expiry.cancel()
        if self.esme:
            await self.esme.stop()

    @property
    def bound(self) -> bool:
        return self.esme is not None and self.esme.is_bound

    async def set_bound(self, bound: bool) -> None:
        """Switch the handset off (unbind: the SMSC keeps what comes) or on again (bind: it gets it)."""
        if bound and not self.bound:
            await self.stop()
            await self.start()
            assert self.esme is not None
            await self.esme.wait_bound(timeout=10)
        elif not bound and self.esme is not None:
            await self.stop()
            self.esme = None
            self.emit(BindStateChanged("unbound"))

    async def open_link(self, url: str, max_bytes: int = 2_000_000) -> tuple[int, str, bytes]:
        """Open a link from an SMS, as a feature phone's browser would: (status, content type, body).
        Plain HTTP only (the lab's content server)."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"cannot open {url!r}: only http:// links")
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        with self.nodes.claimed(writer.get_extra_info("sockname")[:2], self.name,   # the server names us
                                writer.get_extra_info("peername")[:2]):
            try:
                writer.write(http.request_head(parts.path or "/", parts.netloc))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                status, fields = http.parse_response_head(head)
                length = int(fields.get("content-length", "0") or 0)
                if length > max_bytes:
                    raise ValueError(f"{url}: {length} bytes, more than this phone opens")
                body = await asyncio.wait_for(reader.readexactly(length), 10)
                return status, fields.get("content-type", ""), body
            finally:
                writer.close()

    # -- receiving ----------------------------------------------------------------
    def _deliver(self, pdu: Any) -> None:
        if pdu.command != "deliver_sm":
            return
        if smpp.is_receipt(pdu.esm_class):
            self.emit(ReceiptReceived(pdu, self._reported(pdu)))
            return
        for sms in reassemble(self._reassembler, pdu):
            self._store_incoming(sms)

    def _store_incoming(self, sms: smstext.IncomingSms) -> None:
        number = sms.source if sms.source.startswith("+") else f"+{sms.source}"
        message = Sms("in", number, sms.text, parts=sms.total, complete=sms.complete)
        history.keep(self.inbox, message)
        self.emit(SmsReceived(message))

    def _reported(self, pdu: Any) -> Sms | None:
        """The sent SMS a receipt reports on, its report updated (a multipart SMS is delivered
        when every part is; one failed part fails it)."""
        fields = smpp.parse_receipt_text(smpp.text(pdu.short_message)) or {}
        message_id = smpp.text(getattr(pdu, "receipted_message_id", None)) or fields.get("id", "")
        sms = self._awaiting.get(smpp.normalised_message_id(message_id))
        outcome = smpp.receipt_outcome(getattr(pdu, "message_state", None), fields.get("stat"))
        if sms is None or outcome is None:
            return sms
        if outcome == "delivered":
            sms.reported.add(smpp.normalised_message_id(message_id))
            if len(sms.reported) == len(sms.ids) and sms.report == "awaited":
                sms.report = "delivered"
                for each in sms.ids:           # final: nothing more to wait for
                    self._awaiting.pop(smpp.normalised_message_id(each), None)
        else:
            stat = fields.get("stat") or ""
            if not stat:
                with contextlib.suppress(ValueError):
                    stat = smpp.MessageState(pdu.message_state).stat
            sms.report = stat or "failed"
        return sms

    async def _expire_parts(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for sms in self._reassembler.expire():
                self._store_incoming(sms)

    # -- sending -------------------------------------------------------------------
    async def send_sms(self, to: User | str, text: str) -> Sms:
        number = f"+{to.msisdn}" if isinstance(to, User) else to
        digits = number.lstrip("+")
        parts = smstext.encode(text, ref=next(self._refs))
        message = Sms("out", number, text, parts=len(parts), report="awaited" if self.wants_reports else "")
        forgotten = history.keep(self.sent, message)
        if forgotten is not None:   # no report for it will be shown: stop waiting for one
            for key in map(smpp.normalised_message_id, forgotten.ids):
                if self._awaiting.get(key) is forgotten:
                    del self._awaiting[key]
        assert self.esme is not None
        try:
            for part in parts:
                resp = await self.esme.submit(
                    source_addr_ton=1, source_addr_npi=1, source_addr=self.user.msisdn,
                    dest_addr_ton=1, dest_addr_npi=1, destination_addr=digits,
                    esm_class=0x40 if part.esm_class_udhi else 0, data_coding=part.data_coding,
                    short_message=part.short_message(), registered_delivery=1 if self.wants_reports else 0)
                if resp.status != c.SMPP_ESME_ROK:
                    raise SubmitFailed(resp.status)
                message_id = smpp.text(getattr(resp, "message_id", None))
                message.ids.append(message_id)
                if self.wants_reports:   # else no report comes to end the wait
                    self._awaiting[smpp.normalised_message_id(message_id)] = message
            message.status = "sent"
        except (SubmitFailed, ConnectionError) as exc:
            message.status = f"failed: {exc}"
        self.emit(SmsSent(message))
        return message

    def emit(self, event: DeviceEvent) -> None:
        """Tell every listener what happened."""
        for listener in list(self.listeners):
            listener(event)

