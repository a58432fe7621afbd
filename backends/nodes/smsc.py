"""The SMSC simulator: a real SMPP v3.4 server on asyncio.

Handsets and the IWF are ESMEs that bind here; a handset binds with its MSISDN
digits as system_id (so any real SMPP client can be Peter's handset). Every
accepted submit_sm gets a fresh hex message id, is routed (account routes
first, then handsets) into the destination owner's mailbox, and is delivered
as deliver_sm to one of the owner's receiver/transceiver binds: one message
in flight per owner, in submission order, kept until a deliver_sm_resp with
ESME_ROK (store-and-forward; errors and dead sessions mean "retry later").
Delivery receipts travel back to the submitter the same way.

This end accepts every SMPP connection, so it records every PDU on them
(both directions) in the trace, exactly once, before writing it. A peer that
vanishes while bound gets one extra trace event with empty `raw` (a note,
not a PDU).
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable

from smpplib import command as sm_command
from smpplib import consts as C

from iwlab.backends.directory import NodeDirectory, outside_name
from iwlab.backends.protocols import smpp as codec
from iwlab.backends.trace import Trace

PROTOCOL = "SMPP"
OK = C.SMPP_ESME_ROK
ENROUTE, DELIVERED, EXPIRED, UNDELIVERABLE = (codec.MessageState.ENROUTE, codec.MessageState.DELIVERED,
                                             codec.MessageState.EXPIRED, codec.MessageState.UNDELIVERABLE)
# deliver_sm_resp statuses that mean "never": drop with an UNDELIV receipt instead of retrying.
PERMANENT = frozenset({C.SMPP_ESME_RX_P_APPN, C.SMPP_ESME_RX_R_APPN})
NO_RESPONSE = -1   # pseudo status: no deliver_sm_resp within response_seconds
RECEIVING = ("receiver", "transceiver")
SENDING = ("transmitter", "transceiver")

# TLVs a deliver_sm carries over from the submit_sm. smpplib's str-typed TLVs
# (sub-addresses) are binary in reality and do not round-trip, so they stay out.
_SUBMIT, _DELIVER = sm_command.SubmitSM.params, sm_command.DeliverSM.params
COPY_TLVS = tuple(k for k in sm_command.SubmitSM.params_order
                  if k in codec.TLV_NAMES and k in _DELIVER and _SUBMIT[k].type is _DELIVER[k].type
                  and _SUBMIT[k].type in (int, sm_command.ostr))
STATES_KEPT = 100_000   # message states remembered for query_sm

EventCallback = Callable[[str, dict[str, Any]], None]


@dataclass
class EsmeAccount:
    system_id: str
    password: str
    node_name: str
    # Destination numbers (digits, no '+') or prefixes ending in '*' whose SMS
    # go to this account's receiver bind instead of a handset.
    routes: list[str] = field(default_factory=list)

    def routes_to(self, digits: str) -> str | None:
        """The matching route pattern, if any."""
        for route in self.routes:
            pattern = route.lstrip("+")
            if (digits.startswith(pattern[:-1]) if pattern.endswith("*") else digits == pattern):
                return route
        return None


@dataclass(eq=False, slots=True)
class _Message:
    id: str
    owner: str                # system_id whose receiver binds get it
    owner_name: str           # its node name, for notes and events
    fields: dict[str, Any]    # deliver_sm parameters, ready for codec.make
    deadline: float           # loop time
    submitted: float          # wall time, for the receipt
    origin: str | None        # submitter's system_id (receipts go there); None for a receipt
    want_receipt: int         # registered_delivery & 3
    text_start: str           # first 20 characters, for the receipt text
    stored: bool = False      # nobody could take it when it arrived
    attempts: int = 0
    last_error: str = ""      # why the previous attempt failed, for the retry's note


@dataclass(eq=False)
class _Mailbox:
    owner: str
    queue: deque = field(default_factory=deque)     # of _Message, submission order
    inflight: _Message | None = None                # queue[0] while a deliver_sm awaits its resp
    inflight_session: _Session | None = None
    inflight_seq: int = 0
    sent_at: float = 0.0                            # loop time of that deliver_sm
    retry: asyncio.TimerHandle | None = None
    next_deadline: float = math.inf


class Smsc:
    def __init__(self, trace: Trace, nodes: NodeDirectory, *, accounts: list[EsmeAccount],
                 handset_password: str, handset_numbers: dict[str, str], name: str = "SMSC",
                 throttle_every: int = 0, validity_seconds: float = 60.0, retry_seconds: float = 1.0,
                 response_seconds: float = 10.0, system_id_name: Callable[[str], str | None] | None = None) -> None:
        self.trace, self.nodes, self.name = trace, nodes, name
        self.accounts = accounts                  # kept by reference: edits apply at once
        self.handset_password = handset_password
        self.handset_numbers = handset_numbers    # digits -> node name
        self.throttle_every = throttle_every      # every Nth submit_sm per bind -> ESME_RTHROTTLED
        self.validity_seconds = validity_seconds  # unless a submit_sm sets validity_period
        self.retry_seconds = retry_seconds        # after a failed deliver_sm
        self.response_seconds = response_seconds  # no deliver_sm_resp by then: failed, retry
        self._system_id_name = system_id_name
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task | None = None
        self._stopping = False
        self._sessions: set[_Session] = set()
        self._receivers: dict[str, list[_Session]] = {}   # system_id -> RX/TRX sessions
        self._mailboxes: dict[str, _Mailbox] = {}
        self._ids = itertools.count(0x1A2B3C01)            # hex ids, letters included
        self._states: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._listeners: list[EventCallback] = []

    # -- lifecycle --------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        if self._server:
            return self.port
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._server = await self._loop.create_server(lambda: _Session(self), host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = self._loop.create_task(self._sweep_loop(), name="smsc-expiry")
        for mailbox in self._mailboxes.values():   # messages kept from before a stop
            self._pump(mailbox)
        return self.port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.close()
        sessions = list(self._sessions)
        for session in sessions:
            session.close()
        if sessions:
            await asyncio.wait([s.gone for s in sessions], timeout=2)
            for session in sessions:
                if not session.gone.done():
                    session.transport.abort()
        await server.wait_closed()
        if self._sweeper:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for mailbox in self._mailboxes.values():
            if mailbox.retry:
                mailbox.retry.cancel()
                mailbox.retry = None

    # -- events for the lab -------------------------------------------------------------
    def on_event(self, callback: EventCallback) -> Callable[[], None]:
        """callback(kind, details) on the server's loop: bound, unbound, stored,
        delivered, expired, undeliverable, receipt_dropped. Returns unsubscribe."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def _emit(self, kind: str, **details: Any) -> None:
        for callback in list(self._listeners):
            callback(kind, details)

    def pending(self, system_id: str | None = None) -> int:
        """Messages waiting for delivery (to one owner, or in all)."""
        boxes = [self._mailboxes.get(system_id)] if system_id else self._mailboxes.values()
        return sum(len(mb.queue) for mb in boxes if mb)

    # -- accounts, names, routes -----------------------------------------------------------
    def _authenticate(self, system_id: str, password: str) -> int:
        for account in self.accounts:
            if account.system_id == system_id:
                return OK if account.password == password else C.SMPP_ESME_RINVPASWD
        if system_id in self.handset_numbers:
            return OK if password == self.handset_password else C.SMPP_ESME_RINVPASWD
        return C.SMPP_ESME_RINVSYSID

    def name_for(self, system_id: str) -> str | None:
        if self._system_id_name:
            name = self._system_id_name(system_id)
            if name:
                return name
        for account in self.accounts:
            if account.system_id == system_id:
                return account.node_name
        return self.handset_numbers.get(system_id)

    def route(self, digits: str) -> tuple[str, str, str] | None:
        """(owner system_id, node name, why) for destination digits, or None."""
        for account in self.accounts:
            pattern = account.routes_to(digits)
            if pattern:
                return account.system_id, account.node_name, f"route {pattern} -> {account.node_name}"
        name = self.handset_numbers.get(digits)
        if name:
            return digits, name, f"handset {name}"
        return None

    # -- mailboxes and delivery --------------------------------------------------------------
    def _next_id(self) -> str:
        return f"{next(self._ids):X}"

    def _remember(self, message_id: str, state: int) -> None:
        self._states[message_id] = (state, time.time())
        if len(self._states) > STATES_KEPT:
            self._states.popitem(last=False)

    def _receiver_for(self, owner: str) -> _Session | None:
        for session in self._receivers.get(owner, ()):
            if not session.closing:
                return session
        return None

    def _enqueue(self, msg: _Message) -> None:
        mailbox = self._mailboxes.get(msg.owner)
        if mailbox is None:
            mailbox = self._mailboxes[msg.owner] = _Mailbox(msg.owner)
        mailbox.queue.append(msg)
        if msg.deadline < mailbox.next_deadline:
            mailbox.next_deadline = msg.deadline
        if msg.stored and self._listeners:
            self._emit("stored", message_id=msg.id, owner=msg.owner, node=msg.owner_name)
        self._pump(mailbox)

    def _pump(self, mailbox: _Mailbox) -> None:
        """Send the head of the queue if nothing is in flight for this owner."""
        if mailbox.inflight or mailbox.retry or not mailbox.queue or self._stopping:
            return
        session = self._receiver_for(mailbox.owner)
        if session is None:
            return
        msg = mailbox.queue[0]
        mailbox.inflight, mailbox.inflight_session, mailbox.sent_at = msg, session, self._loop.time()
        mailbox.inflight_seq = session.deliver(msg)

    def _retry(self, mailbox: _Mailbox) -> None:
        mailbox.retry = None
        self._pump(mailbox)

    def _delivery_result(self, msg: _Message, status: int | None) -> None:
        """The owner answered our deliver_sm (status None: the session died first;
        NO_RESPONSE: it stayed silent)."""
        mailbox = self._mailboxes[msg.owner]
        if mailbox.inflight is msg:
            mailbox.inflight, mailbox.inflight_session = None, None
        if status:
            msg.last_error = "no response" if status == NO_RESPONSE else codec.status_name(status)
        if status == OK or status in PERMANENT or (
                status is not None and self._loop.time() >= msg.deadline):
            if mailbox.queue and mailbox.queue[0] is msg:
                mailbox.queue.popleft()
            else:
                with contextlib.suppress(ValueError):
                    mailbox.queue.remove(msg)
            self._finish(msg, DELIVERED if status == OK else UNDELIVERABLE if status in PERMANENT else EXPIRED,
                         max(status or 0, 0))
        elif status is not None and not self._stopping:
            # Keep it at the head: later messages wait, so order holds.
            mailbox.retry = self._loop.call_later(self.retry_seconds, self._retry, mailbox)
        self._pump(mailbox)

    def _finish(self, msg: _Message, state: int, error: int = 0) -> None:
        """Final state: remember it, tell the lab, send the receipt if asked for."""
        if msg.origin is None:            # a receipt itself
            if state != DELIVERED and self._listeners:
                self._emit("receipt_dropped", message_id=msg.id, owner=msg.owner)
            return
        self._remember(msg.id, state)
        if self._listeners:
            self._emit({DELIVERED: "delivered", EXPIRED: "expired"}.get(state, "undeliverable"),
                       message_id=msg.id, owner=msg.owner, node=msg.owner_name, attempts=msg.attempts)
        if not (msg.want_receipt == 1 or msg.want_receipt == 2 and state != DELIVERED):
            return
        now = time.time()
        f = msg.fields
        text = codec.receipt_text(msg.id, codec.MessageState(state).stat, msg.submitted, now, msg.text_start,
                                  err=error & 0xFFF, delivered=state == DELIVERED)
        fields = {
            "source_addr_ton": f["dest_addr_ton"], "source_addr_npi": f["dest_addr_npi"],
            "source_addr": f["destination_addr"],
            "dest_addr_ton": f["source_addr_ton"], "dest_addr_npi": f["source_addr_npi"],
            "destination_addr": f["source_addr"],
            "esm_class": codec.RECEIPT_ESM_CLASS, "data_coding": 0,
            "short_message": text.encode("ascii", "replace"),
            "receipted_message_id": msg.id, "message_state": state,
        }
        origin_name = self.name_for(msg.origin) or msg.origin
        receipt = _Message(msg.id, msg.origin, origin_name, fields, self._loop.time() + self.validity_seconds,
                           now, None, 0, "", stored=self._receiver_for(msg.origin) is None)
        self._enqueue(receipt)

    async def _sweep_loop(self) -> None:
        while True:
            shortest = min(self.validity_seconds, self.response_seconds)
            await asyncio.sleep(min(1.0, max(0.02, shortest / 10)))
            self._sweep()

    def _sweep(self) -> None:
        """Give up on silent deliveries; drop what outlived its validity (never
        the one in flight: its response decides)."""
        now = self._loop.time()
        for mailbox in list(self._mailboxes.values()):
            if mailbox.inflight and now - mailbox.sent_at > self.response_seconds:
                msg = mailbox.inflight_session.pending.pop(mailbox.inflight_seq, None)
                if msg:
                    self._delivery_result(msg, NO_RESPONSE)
            if mailbox.next_deadline > now:
                continue
            keep, expired, next_deadline = deque(), [], math.inf
            for msg in mailbox.queue:
                if msg.deadline <= now and msg is not mailbox.inflight:
                    expired.append(msg)
                else:
                    keep.append(msg)
                    next_deadline = min(next_deadline, msg.deadline)
            mailbox.queue, mailbox.next_deadline = keep, next_deadline
            for msg in expired:
                self._finish(msg, EXPIRED)
            self._pump(mailbox)

    # -- sessions ----------------------------------------------------------------------------
    def _bound(self, session: _Session) -> None:
        if session.mode in RECEIVING:
            self._receivers.setdefault(session.system_id, []).append(session)
        if self._listeners:
            self._emit("bound", system_id=session.system_id, node=session.name, mode=session.mode)
        mailbox = self._mailboxes.get(session.system_id)
        if mailbox and session.mode in RECEIVING:
            self._pump(mailbox)

    def _detach(self, session: _Session) -> None:
        """The session can take no more deliveries: give its in-flight messages back."""
        if session.detached:
            return
        session.detached = True
        receivers = self._receivers.get(session.system_id)
        if receivers and session in receivers:
            receivers.remove(session)
        pending, session.pending = session.pending, {}
        for msg in pending.values():
            self._delivery_result(msg, None)
        if session.mode and self._listeners:
            self._emit("unbound", system_id=session.system_id, node=session.name)


class _Session(asyncio.Protocol):
    """One SMPP connection, seen from the SMSC."""

    def __init__(self, smsc: Smsc) -> None:
        self.smsc = smsc
        self.framer = codec.Framer()
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("?", 0)
        self.name = ""
        self.claimed = False
        self.mode: str | None = None          # "transmitter" | "receiver" | "transceiver" once bound
        self.system_id = ""
        self.pending: dict[int, _Message] = {}   # our deliver_sm sequence -> message
        self.out: list[bytes] | None = None      # writes held back while a chunk is handled
        self.seq = 0
        self.submits = 0
        self.closing = False                  # we chose to close: no "connection lost" note
        self.detached = False                 # out of the receivers, in-flight messages given back
        self.gone: asyncio.Future = smsc._loop.create_future()

    # -- transport ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.peer = tuple(transport.get_extra_info("peername")[:2])
        self.name = outside_name(self.peer)
        if self.smsc._server is None:     # accepted while the SMSC stops: no socket outlives it
            self.closing = True
            transport.close()
            return
        self.smsc._sessions.add(self)
        self._claim()

    def _claim(self) -> None:
        # In-lab clients claim their address right after connecting, maybe
        # after we accepted: look again until the first PDU.
        name = self.smsc.nodes.lookup(self.peer)
        if name:
            self.name, self.claimed = name, True

    def data_received(self, data: bytes) -> None:
        if not self.claimed:
            self._claim()
        # Answers to one chunk (a pipelining ESME sends many PDUs at once) leave
        # in one write: one syscall instead of one per PDU.
        self.out = []
        try:
            for raw in self.framer.feed(data):
                if self.closing:
                    break
                self.handle(raw)
            if self.framer.error and not self.closing:
                self._bad_length(self.framer.error)
        finally:
            self.flush()

    def flush(self) -> None:
        out, self.out = self.out, None
        if out:
            self.transport.write(b"".join(out))

    def connection_lost(self, exc: Exception | None) -> None:
        smsc = self.smsc
        smsc._sessions.discard(self)
        kept = len(self.pending)
        if not self.closing and (exc is not None or self.mode):
            why = f"connection lost ({exc})" if exc else "closed without unbind"
            queued = smsc.pending(self.system_id) if self.system_id else 0
            smsc.trace.record(self.name, smsc.name, PROTOCOL, why, raw=b"",
                              fields={"event": "connection_lost", "error": repr(exc) if exc else "",
                                      "system_id": self.system_id, "in_flight": kept, "queued": queued},
                              note=f"peer gone; {queued} queued for it kept ({kept} sent, not acknowledged)")
        self.closing = True
        smsc._detach(self)
        if not self.gone.done():
            self.gone.set_result(None)

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.flush()
            self.smsc._detach(self)
            self.transport.close()

    # -- trace + write ---------------------------------------------------------------------
    def record_in(self, pdu: Any, raw: bytes, correlation: dict[str, str] | None = None, note: str = "") -> None:
        summary, fields = codec.describe(pdu)
        self.smsc.trace.record(self.name, self.smsc.name, PROTOCOL, summary, raw=raw, fields=fields,
                               is_response=pdu.is_response(), correlation=correlation, note=note)

    def send(self, pdu: Any, correlation: dict[str, str] | None = None, note: str = "") -> None:
        raw = codec.encode(pdu)
        summary, fields = codec.describe(pdu)
        # Record before writing: once the peer has the PDU, the trace has it too.
        self.smsc.trace.record(self.smsc.name, self.name, PROTOCOL, summary, raw=raw, fields=fields,
                               is_response=pdu.is_response(), correlation=correlation, note=note)
        if self.out is None:
            self.transport.write(raw)
        else:
            self.out.append(raw)

    def respond(self, request: Any, status: int = OK, correlation: dict[str, str] | None = None,
                note: str = "", **fields: Any) -> None:
        self.send(codec.make(request.command + "_resp", request.sequence, status, **fields), correlation, note)

    def nack(self, sequence: int, status: int, note: str = "") -> None:
        self.send(codec.make("generic_nack", sequence, status), {"smpp_seq": str(sequence)}, note)

    def next_seq(self) -> int:
        self.seq = self.seq % 0x7FFFFFFF + 1
        return self.seq

    # -- incoming PDUs -----------------------------------------------------------------------
    def handle(self, raw: bytes) -> None:
        try:
            pdu = codec.parse(raw)
        except codec.ParseError as err:
            self._unreadable(raw, err)
            return
        handler = _HANDLERS.get(pdu.command)
        if handler:
            handler(self, pdu, raw)
        elif pdu.is_response():
            self.record_in(pdu, raw, note="unexpected response, ignored")
        else:
            self.record_in(pdu, raw, note=f"{pdu.command} is not supported by this SMSC")
            self.nack(pdu.sequence, C.SMPP_ESME_RINVCMDID)

    def _unreadable(self, raw: bytes, err: codec.ParseError) -> None:
        summary, fields = codec.describe_raw(raw)
        self.smsc.trace.record(self.name, self.smsc.name, PROTOCOL, summary, raw=raw, fields=fields,
                               is_response=bool(err.command_id & codec.RESPONSE_BIT),
                               correlation={"smpp_seq": str(err.sequence)}, note=err.reason)
        msg = self.pending.pop(err.sequence, None) if err.command_id & codec.RESPONSE_BIT else None
        if msg:   # a garbled answer to our deliver_sm: not an ack, so retry later
            self.smsc._delivery_result(msg, C.SMPP_ESME_RSYSERR)
        if err.command_id != codec.GENERIC_NACK:   # never nack a nack
            self.nack(err.sequence, err.status, err.reason)

    def _bad_length(self, err: codec.BadLength) -> None:
        summary, fields = codec.describe_raw(err.data)
        fields["command_length"] = err.length
        why = (f"command_length {err.length} is impossible ({codec.MIN_LENGTH}..{codec.MAX_LENGTH}); "
               "closing: the byte stream cannot be re-synchronised")
        self.smsc.trace.record(self.name, self.smsc.name, PROTOCOL, summary, raw=err.data, fields=fields,
                               correlation={"smpp_seq": str(err.sequence)}, note=why)
        self.nack(err.sequence, C.SMPP_ESME_RINVCMDLEN, why)
        self.close()

    def _bind(self, pdu: Any, raw: bytes) -> None:
        smsc = self.smsc
        system_id = codec.text(pdu.system_id)
        if self.mode:
            status, note = C.SMPP_ESME_RALYBND, f"already bound as {self.mode}"
        else:
            status = smsc._authenticate(system_id, codec.text(pdu.password))
            note = "" if status == OK else f"bind refused: {codec.status_name(status)}"
        if status == OK:
            self.mode, self.system_id = pdu.command[5:], system_id
            if not self.claimed:
                self.name = smsc.name_for(system_id) or self.name
        self.record_in(pdu, raw, {"smpp_seq": str(pdu.sequence)}, note)
        self.respond(pdu, status, {"smpp_seq": str(pdu.sequence)}, note, system_id=smsc.name,
                     sc_interface_version=C.SMPP_VERSION_34 if status == OK else None)
        if status == OK:
            smsc._bound(self)

    def _unbind(self, pdu: Any, raw: bytes) -> None:
        corr = {"smpp_seq": str(pdu.sequence)}
        self.record_in(pdu, raw, corr)
        if not self.mode:
            self.respond(pdu, C.SMPP_ESME_RINVBNDSTS, corr, "not bound")
            return
        self.respond(pdu, OK, corr)
        self.close()

    def _enquire_link(self, pdu: Any, raw: bytes) -> None:
        corr = {"smpp_seq": str(pdu.sequence)}
        self.record_in(pdu, raw, corr)
        self.respond(pdu, OK, corr)

    def _submit(self, pdu: Any, raw: bytes) -> None:
        smsc = self.smsc
        seq = pdu.sequence
        dest = codec.text(pdu.destination_addr).lstrip("+")
        message_id, route, validity, status, note = "", None, None, OK, ""
        if self.mode not in SENDING:
            status, note = C.SMPP_ESME_RINVBNDSTS, f"not bound as transmitter ({self.mode or 'unbound'})"
        else:
            self.submits += 1
            every = smsc.throttle_every
            if every and self.submits % every == 0:
                status, note = C.SMPP_ESME_RTHROTTLED, f"throttled (every {every}th submit_sm)"
            elif pdu.short_message and pdu.message_payload:
                status, note = C.SMPP_ESME_RINVMSGLEN, "both short_message and message_payload"
            elif pdu.short_message is not None and len(pdu.short_message) != (pdu.sm_length or 0):
                status, note = C.SMPP_ESME_RINVMSGLEN, "sm_length does not match short_message"
            else:
                route = smsc.route(dest)
                if route is None:
                    status, note = C.SMPP_ESME_RINVDSTADR, f"no handset or route for {dest or '(empty)'}"
                else:
                    try:
                        validity = codec.validity_seconds(codec.text(pdu.validity_period))
                    except ValueError as exc:
                        status, note = C.SMPP_ESME_RINVEXPIRY, str(exc)
                    else:
                        if validity is not None and validity <= 0:
                            status, note = C.SMPP_ESME_RINVEXPIRY, "validity_period already over"
        if status == OK:
            message_id = smsc._next_id()
            owner, owner_name, why = route
            stored = smsc._receiver_for(owner) is None
            note = f"{why}; stored: {owner_name} not bound as receiver" if stored else why
        corr = {"smpp_message_id": message_id, "smpp_seq": str(seq)}
        self.record_in(pdu, raw, corr, note)
        self.respond(pdu, status, corr, message_id=message_id)
        if status != OK:
            return
        smsc._remember(message_id, ENROUTE)
        rd = (pdu.registered_delivery or 0) & 0x03
        text_start = ""
        if rd:
            text_start = codec.content(pdu)[1] or ""
        msg = _Message(message_id, owner, owner_name, self._deliver_fields(pdu, dest),
                       smsc._loop.time() + (validity if validity is not None else smsc.validity_seconds),
                       time.time(), self.system_id, rd, text_start[:20], stored=stored)
        smsc._enqueue(msg)

    @staticmethod
    def _deliver_fields(pdu: Any, dest: str) -> dict[str, Any]:
        fields = {
            "service_type": codec.text(pdu.service_type),
            "source_addr_ton": pdu.source_addr_ton or 0, "source_addr_npi": pdu.source_addr_npi or 0,
            "source_addr": codec.text(pdu.source_addr),
            "dest_addr_ton": pdu.dest_addr_ton or 0, "dest_addr_npi": pdu.dest_addr_npi or 0,
            "destination_addr": dest,
            # Keep UDHI / reply path; the message-type bits are the SMSC's to set (receipts).
            "esm_class": (pdu.esm_class or 0) & 0xC0,
            "protocol_id": pdu.protocol_id or 0, "priority_flag": pdu.priority_flag or 0,
            "data_coding": pdu.data_coding or 0,
            "short_message": pdu.short_message or None,
        }
        for key in COPY_TLVS:
            value = getattr(pdu, key, None)
            if value is not None:
                fields[key] = value
        return fields

    def deliver(self, msg: _Message) -> int:
        seq = self.next_seq()
        msg.attempts += 1
        self.pending[seq] = msg
        note = ""
        if msg.attempts > 1:
            note = f"attempt {msg.attempts}" + (f" (after {msg.last_error})" if msg.last_error else "")
        elif msg.stored:
            note = f"stored until {self.name} bound"
        self.send(codec.make("deliver_sm", seq, **msg.fields),
                  {"smpp_message_id": msg.id, "smpp_seq": str(seq)}, note)
        return seq

    def _deliver_resp(self, pdu: Any, raw: bytes) -> None:
        msg = self.pending.pop(pdu.sequence, None)
        if msg is None:
            self.record_in(pdu, raw, {"smpp_seq": str(pdu.sequence)}, "no deliver_sm waits for this sequence")
            return
        note = "" if pdu.status == OK else (
            "permanent error: dropped" if pdu.status in PERMANENT else "kept for retry")
        self.record_in(pdu, raw, {"smpp_message_id": msg.id, "smpp_seq": str(pdu.sequence)}, note)
        self.smsc._delivery_result(msg, pdu.status)

    def _query(self, pdu: Any, raw: bytes) -> None:
        message_id = codec.text(pdu.message_id)
        corr = {"smpp_message_id": message_id, "smpp_seq": str(pdu.sequence)}
        self.record_in(pdu, raw, corr)
        if not self.mode:
            self.respond(pdu, C.SMPP_ESME_RINVBNDSTS, corr, "not bound")
            return
        known = self.smsc._states.get(message_id)
        if known is None:
            self.respond(pdu, C.SMPP_ESME_RQUERYFAIL, corr, "unknown message id")
            return
        state, when = known
        final = "" if state == ENROUTE else time.strftime("%y%m%d%H%M%S", time.gmtime(when)) + "000+"
        self.respond(pdu, OK, corr, message_id=message_id, final_date=final, message_state=state, error_code=0)

    def _response(self, pdu: Any, raw: bytes) -> None:
        self.record_in(pdu, raw, {"smpp_seq": str(pdu.sequence)})


_HANDLERS: dict[str, Callable[[_Session, Any, bytes], None]] = {
    "bind_transmitter": _Session._bind,
    "bind_receiver": _Session._bind,
    "bind_transceiver": _Session._bind,
    "unbind": _Session._unbind,
    "enquire_link": _Session._enquire_link,
    "submit_sm": _Session._submit,
    "query_sm": _Session._query,
    "deliver_sm_resp": _Session._deliver_resp,
    "generic_nack": _Session._deliver_resp,    # a nack of our deliver_sm: retry later
    "enquire_link_resp": _Session._response,
    "unbind_resp": _Session._response,
}
