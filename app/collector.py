"""How the lab's process uses CPython's cycle collector: the lab keeps a lot (a trace of up to
500,000 events, a ladder of 200,000 rows) and must not stop for long while it runs."""
from __future__ import annotations

import gc


def tune_collector() -> None:
    """The trace keeps every PDU (up to 500,000 events), each with a few objects the cycle
    collector tracks. At the default threshold (700) young collections ran every few messages
    and full ones walked the whole trace again and again, holding the GIL: 3.2 s of 45 under
    `make bench`, 20 ms spikes at the 99th percentile of latency, stalls in the window.
    A young generation of 10,000 keeps that away; promoting to generation 1 every second young
    collection (not every tenth) keeps generation 1 small, so its pauses stay short: with the
    window watching a busy lab, (20000, 10, 10) paused up to 32-44 ms and let 50 ms frame gaps
    through, (10000, 2, 10) paused 14-26 ms with none, and the lab's p99 latency at 100 msg/s
    fell from 16-28 ms to 6-18 ms at the same throughput (bench/, one sitting, 3 runs each)."""
    gc.set_threshold(10_000, 2, 10)


def set_aside_what_lasts() -> None:
    """Once what lives as long as the process is built (modules, Qt's wrappers, a served lab),
    collect, then freeze what is left: full collections stop walking it. The window's ~50,000
    such objects took 35 ms of every full collection (bench/window_bench.py). Only what stays
    to the end may be frozen: a frozen cycle that becomes garbage is never collected."""
    gc.collect()
    gc.freeze()
