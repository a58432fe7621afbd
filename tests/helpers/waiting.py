"""Waiting for a condition, never for a time: the one poll loop the tests use (like qtbot.waitUntil).

`wait_until` blocks the test thread (for what a real client or the lab's own thread brings about);
`until` is the same on an asyncio loop (run on the lab's loop, so the lab goes on working).
Both fail with `what` once `timeout` has passed without the condition.
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable

POLL = 0.02     # how often the condition is asked again: short, and only while it is false


def wait_until(condition: Callable[[], object], timeout: float = 15.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(POLL)


async def until(condition: Callable[[], object], timeout: float = 15.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(POLL)
