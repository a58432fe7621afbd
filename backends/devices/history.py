"""What a simulated device remembers of its messages: the newest KEPT of each folder, as a
phone's memory does (the trace keeps every PDU, within its own bounds).

Kept without a bound, a lab loaded for hours held every message it ever carried, several
objects each, and every full pass of the cycle collector walked them all: 38 ms at 3,400
messages, the window's longest stalls (bench/window_bench.py), and growing.

A folder stays a plain list: tests and views read it from other threads than the lab's, and a
list read while the lab appends gives its entries (a deque would raise "mutated during iteration").
"""
from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")
KEPT = 1_000   # per folder: an inbox, a sent list, a CPM phone's messages (all its conversations)


def keep(entries: list[T], entry: T) -> T | None:
    """Add the entry; returns the oldest one it pushed out, if the folder was full (what the
    device must then forget about it too)."""
    entries.append(entry)
    return entries.pop(0) if len(entries) > KEPT else None
