"""Carries trace events from the lab thread to the GUI thread, in batches.

`Trace` calls its listeners on the lab's asyncio thread, possibly thousands
of times a second. A queued Qt signal per event would flood the GUI event
queue, so the listener only appends to a deque (deque.append is atomic, no
Qt call off the GUI thread) and a GUI-thread timer drains it every ~50 ms
into one `eventsArrived(list)` per tick: the model then does one insert per
batch, and a burst of 10,000 events costs a few repaints, not 10,000.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

from PySide6.QtCore import QObject, QTimer, Signal

from iwlab.backends.trace import Trace, TraceEvent


class TraceBridge(QObject):
    eventsArrived = Signal(list)      # list[TraceEvent], oldest first
    pausedChanged = Signal(bool)

    def __init__(self, trace: Trace | None = None, parent: QObject | None = None, *,
                 interval_ms: int = 50, max_batch: int = 10_000) -> None:
        super().__init__(parent)
        self._pending: deque[TraceEvent] = deque()
        self._subscriptions: list[Callable[[], None]] = []
        # Deleted without unsubscribe() (parent window closed)? Stop listening
        # anyway, or the trace keeps filling a deque that nobody drains. The
        # hook holds the list, not self: it runs while the C++ object dies.
        subscriptions = self._subscriptions
        self.destroyed.connect(lambda *_: _stop_all(subscriptions))
        self._paused = False
        self._catch_up_scheduled = False
        # Cap a batch so that a 100,000-event backlog is delivered over
        # several ticks with input and paint events handled in between.
        self.max_batch = max_batch
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.flush)
        self._timer.start()
        if trace is not None:
            self.subscribe(trace)

    def push(self, event: TraceEvent) -> None:
        """Queue an event as if a subscribed trace had recorded it (any thread)."""
        self._pending.append(event)

    # -- GUI thread ----------------------------------------------------------------
    def subscribe(self, trace: Trace) -> None:
        self.unsubscribe()
        # The listener runs on the lab thread, so it is the deque's own append:
        # atomic, and no Qt call off the GUI thread.
        self._subscriptions.append(trace.subscribe(self._pending.append))

    def unsubscribe(self) -> None:
        """Stop listening (call on close); events already queued are still delivered."""
        _stop_all(self._subscriptions)

    def is_subscribed(self) -> bool:
        return bool(self._subscriptions)

    @property
    def paused(self) -> bool:
        return self._paused

    @paused.setter
    def paused(self, paused: bool) -> None:
        # While paused the deque just grows; nothing is dropped, and the
        # first tick after resuming delivers everything that was held.
        if paused != self._paused:
            self._paused = paused
            self.pausedChanged.emit(paused)
            if not paused:
                self.flush()

    def pending_count(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Deliver up to max_batch queued events now; returns how many."""
        if self._paused or not self._pending:
            return 0
        pending, batch = self._pending, []
        take = min(len(pending), self.max_batch)
        popleft = pending.popleft
        for _ in range(take):      # popleft is atomic: safe against the lab thread appending
            batch.append(popleft())
        if pending and not self._catch_up_scheduled:
            # A backlog: come back as soon as the event loop is free (one
            # catch-up at a time, or timer ticks would start parallel chains).
            self._catch_up_scheduled = True
            QTimer.singleShot(0, self, self._catch_up)
        self.eventsArrived.emit(batch)
        return len(batch)

    def _catch_up(self) -> None:
        self._catch_up_scheduled = False
        self.flush()


def _stop_all(subscriptions: list[Callable[[], None]]) -> None:
    while subscriptions:
        subscriptions.pop()()
