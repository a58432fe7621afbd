"""What durability costs: messages per second through the lab with and without a state folder.

    .venv/bin/python bench/store_bench.py [--messages 2000] [--rounds 2]

Without --state-dir the lab keeps its queues in memory; with one, every message a node has
acknowledged is in sqlite (WAL) before its 2xx / *_resp goes out, and removed once the next
hop took it (backends/store.py). The same `iwlab serve` runs both ways, with the bench
topology of bench/end_to_end.py; the paths are Mary -> CPM-A -> CPM-B -> IWF -> SMSC -> Peter
(1 sender) and 16 senders at once, counted and order-checked at Peter's handset. Rounds
alternate the two modes so a busy machine weighs on both alike. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.end_to_end import SENDERS, Peter, iwlab_run, start_lab, stop_lab  # noqa: E402


def one_round(folder: Path, durable: bool, messages: int) -> dict[str, float]:
    state = folder / "state" if durable else None
    lab, endpoints = start_lab(folder, state)
    try:
        peter = Peter(endpoints["smpp"])
        one = iwlab_run(endpoints, peter, 1, messages)
        many = iwlab_run(endpoints, peter, SENDERS, messages)
        peter.close()
    finally:
        stop_lab(lab)
    for result in (one, many):
        if result["count"] < messages // SENDERS * SENDERS or result["inversions"]:
            print(f"  warning: {result['count']} arrived, {result['inversions']} inversions")
    return {"1 sender": one["rate"], f"{SENDERS} senders": many["rate"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="iwlab-bench-"))
    rates: dict[tuple[bool, str], list[float]] = {}
    try:
        for _ in range(args.rounds):
            for durable in (False, True):
                for path, rate in one_round(folder, durable, args.messages).items():
                    rates.setdefault((durable, path), []).append(rate)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"iwlab store cost, {args.messages} messages per run, median of {args.rounds} rounds\n")
    for path in ("1 sender", f"{SENDERS} senders"):
        memory = statistics.median(rates[(False, path)])
        durable = statistics.median(rates[(True, path)])
        print(f"  {path:<12} in memory {memory:6.0f} msg/s   --state-dir (sqlite) {durable:6.0f} msg/s   "
              f"cost {100 * (1 - durable / memory):4.0f} %")


if __name__ == "__main__":
    main()
