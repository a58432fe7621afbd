"""How the lab's process uses CPython's cycle collector: the lab keeps a lot (a trace of up to
500,000 events, a ladder of 200,000 rows) and must not stop for long while it runs."""
from __future__ import annotations

import gc


def tune_collector() -> None:
    """The trace keeps every PDU (up to 500,000 events) packed into tuples the cycle collector
    stops tracking (backends/trace.pack), and the process keeps little else for long: what a
    young collection walks is what was made since the last one, so its pause grows with the
    threshold while the collector's total time barely changes. At (10000, 2, 10), with the
    window's lab at ~1,000 events/s, young collections walked ~40,000 objects and stopped both
    threads for up to 51 ms (the window's 50 ms frame gaps); at (1000, 5, 10) the longest young
    one was 11 ms, total collector time 436 ms in 40 s against 308 ms, and `make bench` rates
    within the run-to-run noise (bench/window_bench.py, bench/end_to_end.py, one sitting).
    Full collections come at most once generation 2 has grown by a quarter (CPython's rule).
    These are CPython 3.11-3.13's generations (the lab's venv: 3.11); a collector with other
    meanings for the numbers needs measuring again."""
    gc.set_threshold(1_000, 5, 10)


def set_aside_what_lasts() -> None:
    """Once what lives as long as the process is built (modules, Qt's wrappers, a served lab),
    collect, then freeze what is left: full collections stop walking it. The window's ~50,000
    such objects took 35 ms of every full collection (bench/window_bench.py). Only what stays
    to the end may be frozen: a frozen cycle that becomes garbage is never collected."""
    gc.collect()
    gc.freeze()
