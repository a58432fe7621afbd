"""The lab's clock: the time every timer in the lab reads, standing still while the world waits.

The lab runs on its own asyncio loop, a `LabLoop`, whose `time()` is a `LabClock`. So every
asyncio timer in the lab (call_later, sleep, wait_for, asyncio.timeout: SIP transaction timers
and UDP retransmissions, SMPP response timeouts, the SMSC's retries, the IWF's session
timeouts, CPM leg retries) stops running out while the clock is paused, which is what a
trainer stepping hop by hop needs: the world waits as long as the explanation takes.

Deadlines kept as numbers read `monotonic()` (the loop's time) or, for what is stored across
restarts, `wall()` (time.time() less the paused time). Outside a LabLoop both are the plain
clocks. The trace keeps real wall-clock stamps: what happened, when it happened.

`LabLoop.when_idle()` tells when the whole world has done all it can: nothing ready to run,
no bytes waiting on any socket; only a timer or someone outside the loop can change that.
Every node of a lab shares the loop and talks over loopback, so this is exactly "the hop's
consequences are over".

`LabLoop.give_way()` lets another thread of the process (the window, while it paints) have the
GIL to itself: the loop waits at its next turn until it is let go. Painting calls Qt a thousand
times a frame and each call gives the GIL up; with a busy lab holding it, every one of them
waited up to the switch interval to get it back.
"""
from __future__ import annotations

import asyncio
import contextlib
import selectors
import threading
import time
from typing import Callable, Iterator


_RESOLUTION = time.get_clock_info("monotonic").resolution   # what asyncio counts as "due now"
GIVE_WAY_MAX = 0.25   # s: the longest the loop waits for whoever asked it to give way, then it goes on


class LabClock:
    """Monotonic and wall time, both leaving out the time the clock stood still."""

    def __init__(self, source: Callable[[], float] = time.monotonic) -> None:
        """source: the real monotonic time (tests pass one that can jump ahead, to see what a wait does)."""
        self._source = source
        self._stood = 0.0                  # seconds stood still up to the last resume
        self._since: float | None = None   # source() when the current pause began
        self._holds = 0                    # pause() calls not yet resumed

    @property
    def paused(self) -> bool:
        return self._since is not None

    def monotonic(self) -> float:
        now = self._since if self._since is not None else self._source()
        return now - self._stood

    def wall(self) -> float:
        # Moves exactly as monotonic() does: stands still with it (and jumps with a test's source).
        return time.time() + (self.monotonic() - time.monotonic())

    def stood_still(self) -> float:
        """Seconds the clock has stood still in all (the current pause too)."""
        current = self._source() - self._since if self._since is not None else 0.0
        return self._stood + current

    def pause(self) -> None:
        """Stand still (counted: each pause() needs its resume())."""
        self._holds += 1
        if self._holds == 1:
            self._since = self._source()

    def resume(self) -> None:
        if self._holds == 0:
            return
        self._holds -= 1
        if self._holds == 0 and self._since is not None:
            self._stood += self._source() - self._since
            self._since = None

    def run_freely(self) -> None:
        """Drop every pause (the lab stops, or stepping ends)."""
        while self._holds:
            self.resume()


class _LabSelector(selectors.DefaultSelector):
    """The loop's selector: notices when the loop is idle, and sleeps soundly while the clock stands still."""

    loop: LabLoop

    def select(self, timeout: float | None = None):
        ready = self._select(timeout)
        self.loop._wait_while_asked_to_give_way()   # before anything that is ready runs
        return ready

    def _select(self, timeout: float | None):
        loop = self.loop
        would_block = timeout is None or timeout > 0
        if not would_block or (not loop._idle_waiters and not loop.clock.paused):
            return super().select(timeout)
        ready = super().select(0)
        if ready:
            return ready
        if loop._idle_waiters:
            # Idle: nothing to run, nothing on a socket. Wake the waiters (their callbacks are now ready).
            waiters, loop._idle_waiters = loop._idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            return []
        if loop.clock.paused and (timeout is None or timeout > _RESOLUTION):
            # No timer can come due while time stands still: wait for a socket or a wake-up
            # (call_soon_threadsafe, e.g. the window asking for the next hop), not in a spin.
            timeout = None
        return super().select(timeout)


class LabLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose time is a LabClock, and which can say when it is idle."""

    def __init__(self, clock: LabClock | None = None) -> None:
        self.clock = clock or LabClock()
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._way = threading.Lock()            # held by a thread the loop gives way to
        self._way_holder: int | None = None
        self.giving_way = False                 # the loop is waiting for it now
        selector = _LabSelector()
        selector.loop = self
        super().__init__(selector)

    def time(self) -> float:
        return self.clock.monotonic()

    @contextlib.contextmanager
    def give_way(self) -> Iterator[None]:
        """While held (by a thread other than the loop's), the loop runs no callback: at its next
        turn it waits until it is let go, or GIVE_WAY_MAX. What it was running goes on first."""
        if self._way_holder == threading.get_ident():   # held already, further up this thread
            yield
            return
        with self._way:
            self._way_holder = threading.get_ident()
            try:
                yield
            finally:
                self._way_holder = None

    def _wait_while_asked_to_give_way(self) -> None:
        if not self._way.locked() or self._way_holder == threading.get_ident():
            return
        self.giving_way = True
        try:
            if self._way.acquire(timeout=GIVE_WAY_MAX):
                self._way.release()
        finally:
            self.giving_way = False

    def when_idle(self) -> asyncio.Future[None]:
        """Done the next time the loop has nothing to do but wait for a timer or for the outside."""
        waiter: asyncio.Future[None] = self.create_future()
        self._idle_waiters.append(waiter)
        return waiter


def lab_clock() -> LabClock | None:
    """The running loop's LabClock, if it is a LabLoop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop.clock if isinstance(loop, LabLoop) else None


def wall() -> float:
    """time.time() without the time the lab's clock stood still: for deadlines kept across restarts."""
    clock = lab_clock()
    return clock.wall() if clock is not None else time.time()


def monotonic() -> float:
    """The running loop's time (the lab's clock), or time.monotonic() outside a loop."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()
