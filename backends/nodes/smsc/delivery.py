"""Store-and-forward: one mailbox per owner (the system_id whose receiver and
transceiver binds take its messages).

A mailbox sends in submission order, one deliver_sm in flight, and keeps the
message until the owner answers ESME_ROK. An error, silence for
response_seconds or a session that dies means "retry after retry_seconds",
with the message still at the head: later ones wait, so order holds. A
permanent error drops it (UNDELIV); once its validity is over it expires
(never while in flight: the answer decides). The final state is remembered
for query_sm and, if the submitter asked, goes back to it as a delivery
receipt, through the submitter's own mailbox. A message taken by an account whose receipts
are end to end (an IWF: see session.py) gets no receipt of ours when it is taken: the account
reports later, and its report travels the same way.

Connections are known here only as `Receiver`s: what delivery needs of one.

Every accepted message (and every receipt owed) is in the lab's durable store before the
submit_sm_resp that accepts it leaves (keep), and leaves the store with its final state: a
restarted SMSC delivers what it held, in order (restore).
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

from smpplib import consts as C

from iwlab.backends.nodes.smsc.events import Events
from iwlab.backends.nodes.smsc.message import Message, receipt_fields
from iwlab.backends.nodes.smsc.owed import OwedReceipts
from iwlab.backends.protocols import smpp as codec
from iwlab.backends.protocols.smpp import MessageState
from iwlab.backends.store import DurableQueue

OK = C.SMPP_ESME_ROK
# deliver_sm_resp statuses that mean "never": drop with an UNDELIV receipt instead of retrying.
PERMANENT = frozenset({C.SMPP_ESME_RX_P_APPN, C.SMPP_ESME_RX_R_APPN})
NO_RESPONSE = -1   # pseudo status: no deliver_sm_resp within response_seconds
STATES_KEPT = 100_000   # message states remembered for query_sm
_OUTCOMES = {MessageState.DELIVERED: "delivered", MessageState.EXPIRED: "expired"}   # event kinds


class Receiver(Protocol):
    """A bind that takes deliveries (receiver or transceiver)."""
    closing: bool

    def deliver(self, msg: Message) -> int:
        """Send msg as deliver_sm; returns the sequence number its answer will carry."""
        ...

    def withdraw(self, sequence: int) -> Message | None:
        """Stop waiting for the answer to that deliver_sm: its message, if one still waited."""
        ...


@dataclass(eq=False)
class _Mailbox:
    owner: str
    queue: deque[Message] = field(default_factory=deque)   # submission order
    inflight: Message | None = None                # queue[0] while a deliver_sm awaits its resp
    inflight_session: Receiver | None = None
    inflight_seq: int = 0
    sent_at: float = 0.0                            # loop time of that deliver_sm
    retry: asyncio.TimerHandle | None = None
    next_deadline: float = math.inf


class Delivery:
    """Every mailbox of one SMSC, the receivers that drain them, and the final
    states of the messages they held."""

    def __init__(self, events: Events, name_for: Callable[[str], str | None], *, validity_seconds: float,
                 retry_seconds: float, response_seconds: float, store: DurableQueue, owed_store: DurableQueue,
                 report_seconds: Callable[[str], float]) -> None:
        """owed_store: where the receipts end-to-end accounts owe are kept; report_seconds(owner):
        how long such an account has to report before the SMSC's own EXPIRED."""
        self.events = events
        self._store = store
        self.name_for = name_for                  # system_id -> node name, for a receipt's mailbox
        self.validity_seconds = validity_seconds  # unless a submit_sm sets validity_period
        self.retry_seconds = retry_seconds        # after a failed deliver_sm
        self.response_seconds = response_seconds  # no deliver_sm_resp by then: failed, retry
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._sweeper: asyncio.Task[None] | None = None
        self._receivers: dict[str, list[Receiver]] = {}   # system_id -> RX/TRX sessions
        self._mailboxes: dict[str, _Mailbox] = {}
        self._ids = itertools.count(0x1A2B3C01)            # hex ids, letters included
        # (int state, wall time): a MessageState member is an object the cycle collector tracks, and
        # a tuple holding one stays tracked, so 100,000 of them were walked by every full collection.
        self._states: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self.owed = OwedReceipts(owed_store)
        self._report_seconds = report_seconds

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the SMSC has not started")
        return self._loop

    # -- lifecycle (the server's) -------------------------------------------------------
    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliveries may go out: a session can bind as soon as the server listens."""
        self._loop, self._stopping = loop, False

    def restore(self) -> int:
        """After a restart: the messages and receipts the store held, back in their mailboxes in
        the order they were accepted; new ids continue after theirs."""
        items = self._store.items()
        highest = 0
        for item in items:
            msg = Message.from_store(item.meta, item.id, self.loop.time())
            self._remember(msg.id, MessageState.ENROUTE)
            self._enqueue(msg, keep=False)
            with contextlib.suppress(ValueError):
                highest = max(highest, int(msg.id, 16))
        if highest:
            self._ids = itertools.count(max(highest + 1, next(self._ids)))
        for owed_id in self.owed.restore(self.loop.time()):   # handed over, not yet reported: en route
            self._remember(owed_id, MessageState.ENROUTE)
        return len(items)

    def start(self) -> None:
        """The expiry sweep runs, and messages kept from before a stop go out."""
        self._sweeper = self.loop.create_task(self._sweep_loop(), name="smsc-expiry")
        for mailbox in self._mailboxes.values():
            self._pump(mailbox)

    def halt(self) -> None:
        """The server stops: no more deliveries or retries (the messages stay, for a restart)."""
        self._stopping = True

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for mailbox in self._mailboxes.values():
            if mailbox.retry:
                mailbox.retry.cancel()
                mailbox.retry = None

    # -- receivers -------------------------------------------------------------------------
    def add_receiver(self, owner: str, receiver: Receiver) -> None:
        self._receivers.setdefault(owner, []).append(receiver)

    def deliver_waiting(self, owner: str) -> None:
        """A receiver bound: send what waits for its owner."""
        mailbox = self._mailboxes.get(owner)
        if mailbox:
            self._pump(mailbox)

    def receiver_gone(self, owner: str, receiver: Receiver, unanswered: Iterable[Message]) -> None:
        """It takes no more deliveries; what it never answered goes back to its mailbox."""
        receivers = self._receivers.get(owner)
        if receivers and receiver in receivers:
            receivers.remove(receiver)
        for msg in unanswered:
            self.result(msg, None)

    def has_receiver(self, owner: str) -> bool:
        return self._receiver_for(owner) is not None

    def _receiver_for(self, owner: str) -> Receiver | None:
        for session in self._receivers.get(owner, ()):
            if not session.closing:
                return session
        return None

    # -- messages ----------------------------------------------------------------------------
    def new_id(self) -> str:
        return f"{next(self._ids):X}"

    def keep(self, msg: Message) -> None:
        """Before the submit_sm_resp that accepts it: the message is in the durable store."""
        payload, meta = msg.to_store(self.loop.time())
        msg.store_id = self._store.put(msg.owner, payload, meta, message_id=msg.id)

    def accept(self, msg: Message) -> None:
        """An accepted (and kept) submit_sm: en route until its mailbox gets rid of it."""
        self._remember(msg.id, MessageState.ENROUTE)
        self._enqueue(msg, keep=msg.store_id is None)

    def reported(self, message_id: str, state: MessageState, answer_id: str) -> None:
        """An end-to-end account reported on a message it took (OwedReceipts.refusal found nothing
        against it): no longer owed, and query_sm says so from now on."""
        self.owed.close(message_id, answer_id)
        self._remember(message_id, state)

    def state_of(self, message_id: str) -> tuple[MessageState, float] | None:
        """(message_state, wall time it was reached) for query_sm, if the id is known."""
        known = self._states.get(message_id)
        return (MessageState(known[0]), known[1]) if known else None

    def pending(self, owner: str | None = None) -> int:
        """Messages waiting for delivery (to one owner, or in all)."""
        boxes = [self._mailboxes.get(owner)] if owner else self._mailboxes.values()
        return sum(len(mb.queue) for mb in boxes if mb)

    def _remember(self, message_id: str, state: MessageState) -> None:
        self._states[message_id] = (int(state), time.time())
        if len(self._states) > STATES_KEPT:
            self._states.popitem(last=False)

    def _enqueue(self, msg: Message, *, keep: bool = True) -> None:
        if keep:
            self.keep(msg)
        mailbox = self._mailboxes.get(msg.owner)
        if mailbox is None:
            mailbox = self._mailboxes[msg.owner] = _Mailbox(msg.owner)
        mailbox.queue.append(msg)
        if msg.deadline < mailbox.next_deadline:
            mailbox.next_deadline = msg.deadline
        if msg.stored and self.events:
            self.events.emit("stored", message_id=msg.id, owner=msg.owner, node=msg.owner_name)
        self._pump(mailbox)

    def _pump(self, mailbox: _Mailbox) -> None:
        """Send the head of the queue if nothing is in flight for this owner."""
        if mailbox.inflight or mailbox.retry or not mailbox.queue or self._stopping:
            return
        session = self._receiver_for(mailbox.owner)
        if session is None:
            return
        msg = mailbox.queue[0]
        mailbox.inflight, mailbox.inflight_session, mailbox.sent_at = msg, session, self.loop.time()
        mailbox.inflight_seq = session.deliver(msg)

    def _retry(self, mailbox: _Mailbox) -> None:
        mailbox.retry = None
        self._pump(mailbox)

    def result(self, msg: Message, status: int | None) -> None:
        """The owner answered our deliver_sm with status (None: the session died
        first; NO_RESPONSE: it stayed silent)."""
        mailbox = self._mailboxes[msg.owner]
        if mailbox.inflight is msg:
            mailbox.inflight, mailbox.inflight_session = None, None
        if status:
            msg.last_error = "no response" if status == NO_RESPONSE else codec.status_name(status)
        if status == OK or status in PERMANENT or (
                status is not None and self.loop.time() >= msg.deadline):
            if mailbox.queue and mailbox.queue[0] is msg:
                mailbox.queue.popleft()
            else:
                with contextlib.suppress(ValueError):
                    mailbox.queue.remove(msg)
            state = (MessageState.DELIVERED if status == OK else
                     MessageState.UNDELIVERABLE if status in PERMANENT else MessageState.EXPIRED)
            self._finish(msg, state, max(status or 0, 0))
        elif status is not None and not self._stopping:
            # Keep it at the head: later messages wait, so order holds.
            mailbox.retry = self.loop.call_later(self.retry_seconds, self._retry, mailbox)
        self._pump(mailbox)

    def _finish(self, msg: Message, state: MessageState, error: int = 0) -> None:
        """Final state: remember it, tell the lab, send the receipt if asked for."""
        try:
            self._send_receipt(msg, state, error)   # kept first: the store never holds less than owed
        finally:
            if msg.store_id is not None:
                self._store.remove(msg.store_id)
                msg.store_id = None

    def _send_receipt(self, msg: Message, state: MessageState, error: int) -> None:
        if msg.origin is None:            # a receipt itself
            if state != MessageState.DELIVERED and self.events:
                self.events.emit("receipt_dropped", message_id=msg.id, owner=msg.owner)
            return
        handed_over = state == MessageState.DELIVERED and msg.receipt_by_owner
        if not handed_over:   # handed to an IWF that reports end to end: en route until it does
            self._remember(msg.id, state)
        if self.events:
            self.events.emit(_OUTCOMES.get(state, "undeliverable"),
                             message_id=msg.id, owner=msg.owner, node=msg.owner_name, attempts=msg.attempts)
        if handed_over:   # owed (durably, before msg leaves the store) until reported or expired
            self.owed.owe(msg, time.time() + self._report_seconds(msg.owner), self.loop.time())
            return
        self._queue_receipt(msg, state, error)

    def _queue_receipt(self, msg: Message, state: MessageState, error: int, note: str = "") -> None:
        """The receipt for msg to its submitter, if he asked for one saying this."""
        assert msg.origin is not None
        if not (msg.want_receipt == 1 or msg.want_receipt == 2 and state != MessageState.DELIVERED):
            return
        now = time.time()
        origin_name = self.name_for(msg.origin) or msg.origin
        receipt = Message(msg.id, msg.origin, origin_name, receipt_fields(msg, state, error, now),
                          self.loop.time() + self.validity_seconds, now, None, 0, "",
                          stored=self._receiver_for(msg.origin) is None, note=note)
        self._enqueue(receipt)

    def _expire_owed(self) -> None:
        """Reports an end-to-end account never made in its window: the SMSC's own EXPIRED."""
        for entry in self.owed.due(time.time()):
            msg = entry.msg
            self._remember(msg.id, MessageState.EXPIRED)
            window = self._report_seconds(msg.owner)
            self._queue_receipt(msg, MessageState.EXPIRED, 0,
                                note=f"{msg.owner_name} did not report id {msg.id} within {window:g} s: "
                                     "the SMSC's own EXPIRED")
            self.owed.close(msg.id, "")

    # -- expiry ------------------------------------------------------------------------------
    async def _sweep_loop(self) -> None:
        while True:
            shortest = min(self.validity_seconds, self.response_seconds)
            await asyncio.sleep(min(1.0, max(0.02, shortest / 10)))
            self._sweep()

    def _sweep(self) -> None:
        """Give up on silent deliveries; drop what outlived its validity (never
        the one in flight: its response decides)."""
        now = self.loop.time()
        for mailbox in list(self._mailboxes.values()):
            session = mailbox.inflight_session
            if mailbox.inflight and session and now - mailbox.sent_at > self.response_seconds:
                msg = session.withdraw(mailbox.inflight_seq)
                if msg:
                    self.result(msg, NO_RESPONSE)
            if mailbox.next_deadline > now:
                continue
            keep: deque[Message] = deque()
            expired: list[Message] = []
            next_deadline = math.inf
            for msg in mailbox.queue:
                if msg.deadline <= now and msg is not mailbox.inflight:
                    expired.append(msg)
                else:
                    keep.append(msg)
                    next_deadline = min(next_deadline, msg.deadline)
            mailbox.queue, mailbox.next_deadline = keep, next_deadline
            for msg in expired:
                self._finish(msg, MessageState.EXPIRED)
            self._pump(mailbox)
        self._expire_owed()
