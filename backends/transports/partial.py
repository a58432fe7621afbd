"""A deadline for a message begun on a stream and not finished (slow loris): the accepting end
of SIP over TCP/TLS, of SMPP and of MSRP closes a connection whose message stays incomplete too long.
One timer per connection, re-armed only while a message is under way."""
from __future__ import annotations

import asyncio
from typing import Callable

PARTIAL_MESSAGE_SECONDS = 30.0   # a message begun must be complete within this


class PartialDeadline:
    def __init__(self, on_due: Callable[[float], None], seconds: Callable[[], float]) -> None:
        """on_due(seconds): the message begun that long ago is still incomplete (close, and say
        why); seconds(): the deadline, read when a message begins (tests shorten it)."""
        self._on_due, self._seconds = on_due, seconds
        self._since: float | None = None        # the loop time the still-incomplete message began
        self._limit = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def update(self, in_a_message: bool, completed: bool) -> None:
        """After each chunk of bytes: is a message begun and not yet whole, and did this chunk
        complete one? (A busy peer's chunks may each end inside the next message: that one
        began now, so a long stream of whole messages never runs out the deadline.)"""
        if not in_a_message:
            self._since = None
            return
        loop = asyncio.get_running_loop()
        if self._since is None or completed:
            self._since, self._limit = loop.time(), self._seconds()
        if self._timer is None:
            self._timer = loop.call_later(self._limit, self._due)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _due(self) -> None:
        self._timer = None
        if self._since is None:
            return
        left = self._since + self._limit - asyncio.get_running_loop().time()
        if left > 0:                  # a later message is under way: watch that one
            self._timer = asyncio.get_running_loop().call_later(left, self._due)
            return
        self._on_due(self._limit)
