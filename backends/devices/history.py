"""What a simulated device remembers of its messages: the newest KEPT of each folder, as a
phone's memory does (the trace keeps every PDU, within its own bounds).

Kept without a bound, a lab loaded for hours held every message it ever carried, several
objects each, and every full pass of the cycle collector walked them all: 38 ms at 3,400
messages, the window's longest stalls (bench/window_bench.py), and growing.
"""
from __future__ import annotations

from collections import deque
from typing import TypeVar

T = TypeVar("T")
KEPT = 1_000   # per folder (inbox, sent, one CPM conversation)


def folder() -> deque:
    """An empty folder that keeps the newest KEPT entries (read when the folder is made)."""
    return deque(maxlen=KEPT)


def keep(entries: deque[T], entry: T) -> T | None:
    """Add the entry; returns the oldest one it pushed out, if the folder was full (what the
    device must then forget about it too)."""
    pushed_out = entries[0] if entries.maxlen is not None and len(entries) == entries.maxlen else None
    entries.append(entry)
    return pushed_out
