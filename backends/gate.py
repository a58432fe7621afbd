"""The gate: where, in step mode, every PDU waits before it becomes a ladder row.

Every PDU is recorded once, by the end of its connection that accepted it (backends.trace).
That end also passes it through this gate (the trace's `gate`): a PDU it sends waits
before it is written and recorded, a PDU it received waits before it is recorded and
handled. So a held PDU has not happened for anyone: the receiver has not seen it and
the ladder has no row for it. `release()` lets exactly one go: one hop, one row.

Open (not stepping) and with nothing held, `admit` runs the PDU's work at once: the
normal lab pays one attribute test per PDU. Order is kept: whatever is admitted while
something is held queues behind it, also work that is not a PDU (`follow`: a close
after the last writes).
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hop:
    """A PDU at the gate: who sends it to whom, over what, and what kind of PDU it is."""
    src: str            # ladder column names: "Mary", "CPM-A", "SMSC" ...
    dst: str
    protocol: str       # "SIP", "SMPP", "SMTP", "MSRP"
    kind: str           # "MESSAGE", "MESSAGE IMDN", "202 MESSAGE", "submit_sm", "deliver_sm receipt", "EHLO" ...
    summary: str = ""   # the ladder's one line, as far as it is known before the PDU goes

    def line(self) -> str:
        return f"{self.src} → {self.dst}  {self.protocol} {self.summary or self.kind}"


@dataclass
class _Item:
    hop: Hop | None     # None: work that is not a PDU (runs as soon as everything before it went)
    go: Callable[[], None]


class Gate:
    def __init__(self) -> None:
        self.stepping = False
        self._queue: deque[_Item] = deque()
        self._waiters: list[asyncio.Future[None]] = []

    # -- what the recording ends call --------------------------------------------------------
    def admit(self, go: Callable[[], None], hop: Callable[[], Hop]) -> None:
        """Do a PDU's work (write and record, or record and handle) now, or hold it while stepping."""
        if not self.stepping and not self._queue:
            go()
            return
        self._queue.append(_Item(hop(), go))
        if not self.stepping:        # opened while this was being admitted: keep the order, go on
            self._drain()
            return
        self._wake()

    def follow(self, go: Callable[[], None]) -> None:
        """Work that is no PDU but must come after those held (closing a connection after its last writes)."""
        if not self._queue:
            go()
            return
        self._queue.append(_Item(None, go))

    async def passage(self, hop: Callable[[], Hop]) -> None:
        """For an end that is a coroutine (the SMTP server): returns when the PDU may go."""
        if not self.stepping and not self._queue:
            return
        passed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def go() -> None:
            if not passed.done():
                passed.set_result(None)
        self.admit(go, hop)
        await passed

    # -- what the stepper calls --------------------------------------------------------------
    @property
    def held(self) -> list[Hop]:
        return [item.hop for item in self._queue if item.hop is not None]

    def hold(self) -> None:
        """Step mode: from now on every PDU waits here."""
        self.stepping = True

    def release(self) -> Hop | None:
        """Let the first held PDU go (and the work queued right behind it that is no PDU)."""
        self._run_non_pdus()
        if not self._queue:
            return None
        item = self._queue.popleft()
        self._run(item)
        self._run_non_pdus()
        return item.hop

    def open(self) -> None:
        """Stepping ends: everything held goes, in order, and nothing waits any more."""
        self.stepping = False
        self._drain()

    async def wait_held(self) -> None:
        """Returns once a PDU is held."""
        while not self.held:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    # -- inside --------------------------------------------------------------------------------
    def _drain(self) -> None:
        while self._queue:
            self._run(self._queue.popleft())

    def _run_non_pdus(self) -> None:
        while self._queue and self._queue[0].hop is None:
            self._run(self._queue.popleft())

    @staticmethod
    def _run(item: _Item) -> None:
        try:
            item.go()
        except Exception:   # noqa: BLE001 - one PDU's failure (its connection closed) must not jam the gate
            log.exception("a PDU released from the gate failed: %s", item.hop)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
