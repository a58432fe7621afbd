"""Does the window stay smooth while the lab is busy? Frame gaps under ~1,000 trace events/s.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/window_bench.py [--seconds 10] [--rate 80]

The window runs with its lab (on the lab's own thread, as `iwlab` does); a raw SIP client in
a process of its own (so it takes no share of the window's GIL) sends Mary -> Peter MESSAGEs at
`rate` per second (each makes about a dozen trace events: the hops, their answers, the SMPP
legs, the IMDN). A 10 ms timer on the GUI thread
measures how late it fires: a gap over 50 ms is a visible stutter. The ladder repaints as it
fills. Figures are printed; nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from iwlab.app.cli import tune_collector  # noqa: E402
from iwlab.app.main_window import LabWindow  # noqa: E402
from iwlab.backends.topology import load_topology  # noqa: E402
from tests.helpers.raw_sip import RawSipClient, cpim_body  # noqa: E402

PETER = "tel:+15550201"
MARY = "sip:mary@cpm-a.lab"


def load(address: str, rate: float, seconds: float) -> int:
    """Mary's MESSAGEs at a steady rate, each answered before the next (run as `--load` in a process of its own)."""
    client = RawSipClient(address, timeout=30)
    client.register(MARY, "cpm-a.lab")   # a second binding of Mary's: the lab takes her MESSAGEs on this flow
    sent, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        client.request("MESSAGE", PETER, from_uri=MARY, to_uri=PETER, content_type="message/cpim",
                       body=cpim_body(MARY, PETER, f"load {sent}", disposition="positive-delivery"))
        sent += 1
        time.sleep(max(start + sent / rate - time.perf_counter(), 0))
    client.close()
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=80.0, help="MESSAGEs per second (about 12 events each)")
    parser.add_argument("--load", metavar="HOST:PORT", help=argparse.SUPPRESS)   # the sender's own process
    args = parser.parse_args()
    if args.load:
        print(load(args.load, args.rate, args.seconds))
        return
    tune_collector()   # as `iwlab` does
    app = QApplication.instance() or QApplication(sys.argv)
    window = LabWindow(load_topology().with_free_ports(), theme_name="light", zoom=1.0)
    window.resize(1600, 1000)
    window.show()
    window.start_lab()
    assert window.runner is not None
    address = window.runner.lab.endpoints()["sip"]["cpm-a.lab"]
    events_before = len(window.runner.lab.trace)
    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append((now - last[0]) * 1000)
        last[0] = now
    timer = QTimer(interval=10, timeout=tick)
    timer.start()
    sender = subprocess.Popen([sys.executable, __file__, "--load", address, "--rate", str(args.rate),
                               "--seconds", str(args.seconds)], stdout=subprocess.PIPE, text=True)
    while sender.poll() is None:
        app.processEvents()
        time.sleep(0.001)
    timer.stop()
    result = [int(sender.stdout.read().strip() or 0)] if sender.stdout else []
    events = len(window.runner.lab.trace) - events_before
    window.close()
    late = sorted(gaps)
    print(f"window under load: {result[0] if result else 0} MESSAGEs in {args.seconds:.0f} s, "
          f"{events / args.seconds:.0f} trace events/s")
    print(f"  10 ms GUI timer: median {statistics.median(late):.1f} ms, p99 {late[int(len(late) * 0.99) - 1]:.1f} ms, "
          f"max {late[-1]:.1f} ms; gaps over 50 ms: {sum(g > 50 for g in late)}")


if __name__ == "__main__":
    main()
