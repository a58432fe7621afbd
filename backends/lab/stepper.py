"""Step mode: the world waits, and each Next lets exactly one hop happen.

While stepping, every PDU waits at the trace's gate (backends.gate) and the lab's clock stands
still (backends.clock), so no timer runs out while a trainer explains. `next_hop()` waits until
the world has done all it can (the loop is idle: whatever the last hop set in motion has reached
the gate), lets the first held PDU go, and waits again: one Next, one ladder row, and the devices
show what that hop brought. It runs on the lab's loop (a LabLoop).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from iwlab.backends.clock import LabLoop, lab_clock
from iwlab.backends.gate import Hop
from iwlab.backends.trace import Trace


@dataclass(frozen=True)
class StepResult:
    went: Hop | None        # the hop that just happened (None: nothing was waiting)
    waiting: Hop | None     # the one a next Next lets go (None: the world waits for a person)
    seq: int = 0            # the trace row the hop that went became


class HopStepper:
    def __init__(self, trace: Trace) -> None:
        self._trace = trace
        self._gate = trace.gate

    @property
    def stepping(self) -> bool:
        return self._gate.stepping

    async def start(self) -> StepResult:
        """From now on every PDU waits, and time stands still."""
        if not self._gate.stepping:
            self._gate.hold()
            clock = lab_clock()
            if clock is not None:
                clock.pause()
        await self._idle()
        return StepResult(None, self._first_held())

    async def next_hop(self) -> StepResult:
        await self._idle()
        before = self._trace.last_seq()
        went = self._gate.release()
        await self._idle()
        # Its row: the first recorded since (an SMTP end records once its coroutine resumes; a hop
        # whose connection closed while it waited records nothing).
        recorded = self._trace.events_since(before) if went is not None else []
        return StepResult(went, self._first_held(), recorded[0].seq if recorded else 0)

    async def waiting(self) -> StepResult:
        """What waits now, once what people just did has reached the gate."""
        await self._idle()
        return StepResult(None, self._first_held())

    async def stop(self) -> None:
        """Stepping ends: everything held goes, in order, and time runs again."""
        if self._gate.stepping:
            clock = lab_clock()
            if clock is not None:
                clock.run_freely()
        self._gate.open()

    def _first_held(self) -> Hop | None:
        held = self._gate.held
        return held[0] if held else None

    @staticmethod
    async def _idle() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, LabLoop), "stepping needs the lab's loop (LabThread runs one)"
        await loop.when_idle()
