"""Does the window stay smooth while the lab is busy? Frame gaps under ~1,000 trace events/s.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/window_bench.py [--seconds 10] [--rate 56] [--watch]

The window runs with its lab (on the lab's own thread, as `iwlab` does), or with --watch it watches
a lab in a process of its own (`iwlab serve --trace-feed`, as `iwlab window --watch`); a raw SIP client in
a process of its own (so it takes no share of the window's GIL) sends Mary -> Peter MESSAGEs at
`rate` per second, answering the IMDNs that come back as a phone does (each MESSAGE makes about
18 trace events: the hops, their answers, the SMPP legs, the IMDN's hops and answers). A 10 ms timer on the GUI thread
measures how late it fires: a gap over 50 ms is a visible stutter. The ladder repaints as it
fills. Figures are printed; nothing is asserted.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import qasync  # noqa: E402
from PySide6.QtCore import QEvent, QObject, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from iwlab.app import cli  # noqa: E402
from iwlab.app.collector import set_aside_what_lasts, tune_collector  # noqa: E402
from iwlab.app.main_window import LabWindow  # noqa: E402
from iwlab.backends.protocols.sip import SipRequest  # noqa: E402
from iwlab.backends.topology import load_topology  # noqa: E402
from tests.helpers.raw_sip import RawSipClient, cpim_body  # noqa: E402
from tests.helpers.waiting import until  # noqa: E402

PETER = "tel:+15550201"
MARY = "sip:mary@cpm-a.lab"


def load(address: str, rate: float, seconds: float) -> int:
    """Mary's MESSAGEs at a steady rate, each answered before the next (run as `--load` in a process of its own)."""
    client = RawSipClient(address, timeout=30)
    client.register(MARY, "cpm-a.lab")   # a second binding of Mary's: the lab takes her MESSAGEs on this flow
    sent, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call_id = client.request("MESSAGE", PETER, from_uri=MARY, to_uri=PETER, content_type="message/cpim",
                                 body=cpim_body(MARY, PETER, f"load {sent}", disposition="positive-delivery"))
        answered_all_until(client, call_id)
        sent += 1
        time.sleep(max(start + sent / rate - time.perf_counter(), 0))
    client.close()
    return sent


def answered_all_until(client: RawSipClient, call_id: str) -> None:
    """Read until the final response to call_id, answering what the lab sends meanwhile (the IMDNs
    "delivered" back to Mary), as a phone does: unanswered, they would wait in the IWF's outbox."""
    while True:
        message = client.receive()
        if isinstance(message, SipRequest):
            client.answer(message)
        elif message.headers.get("Call-ID") == call_id and message.status >= 200:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=56.0, help="MESSAGEs per second (about 18 events each: 56 make ~1,000 events/s)")
    parser.add_argument("--watch", action="store_true",
                        help="the lab in a process of its own (iwlab serve --trace-feed), the window watching it")
    parser.add_argument("--late", action="store_true",
                        help="with --watch: the window comes in after the load, and catches up on it all")
    parser.add_argument("--no-give-way", action="store_true",
                        help="the lab on the window's side keeps running while the ladder paints (to compare)")
    parser.add_argument("--load", metavar="HOST:PORT", help=argparse.SUPPRESS)   # the sender's own process
    args = parser.parse_args()
    if args.load:
        print(load(args.load, args.rate, args.seconds))
        return
    tune_collector()   # as `iwlab` does
    app = QApplication.instance() or QApplication(sys.argv)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    window = LabWindow(load_topology().with_free_ports(), theme_name="light", zoom=1.0)
    window.resize(1600, 1000)
    window.show()
    set_aside_what_lasts()   # as `iwlab` does
    with tempfile.TemporaryDirectory() as folder, lab_elsewhere(Path(folder), args.watch) as endpoints:
        if endpoints and args.late:
            catch_up(window, endpoints, loop, args)
            window.close()
            loop.close()
            return
        if endpoints:
            watch = window.watch(*cli.host_and_port(endpoints["trace_feed"]))
            loop.run_until_complete(until(lambda: watch.connected, what="the window watching the lab"))
            address, seen = endpoints["sip"]["cpm-a.lab"], lambda: watch.last_seq
        else:
            window.start_lab()
            assert window.runner is not None
            if args.no_give_way:
                window.ladder.table.give_way = contextlib.nullcontext
            address, seen = window.runner.lab.endpoints()["sip"]["cpm-a.lab"], window.runner.lab.trace.last_seq
        events_before = seen()
        clock, paints = FrameClock(), PaintClock(window.ladder.table)
        sender = subprocess.Popen([sys.executable, __file__, "--load", address, "--rate", str(args.rate),
                                   "--seconds", str(args.seconds)], stdout=subprocess.PIPE, text=True)
        sent = loop.run_until_complete(loop.run_in_executor(None, sender.communicate))[0]
        frames, painting = clock.stop(), paints.stop()
        events = seen() - events_before
        rows = window.ladder.model.rowCount()
        if endpoints:   # let the watch end before the loop does (a read it had begun would never be awaited)
            loop.run_until_complete(asyncio.gather(watch.stop() or asyncio.sleep(0), return_exceptions=True))
        window.close()
    loop.close()   # and its worker threads
    where = ("in its own process, the window watching its trace feed" if args.watch else
             "on the window's thread's side" + (", not giving way while the ladder paints" if args.no_give_way else ""))
    print(f"window under load (the lab {where}): {int(sent.strip() or 0)} MESSAGEs in {args.seconds:.0f} s, "
          f"{events / args.seconds:.0f} trace events/s shown, {rows} rows in the ladder")
    print(f"  {frames}")
    print(f"  {painting}")


class FrameClock:
    """A 10 ms timer on the GUI thread: how late each tick comes is how long the window froze."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self.collections: list[tuple[float, int]] = []   # (ms, generation) of each cycle collection meanwhile
        self._collecting = 0.0
        gc.callbacks.append(self._collector)
        self._last = time.perf_counter()
        self._timer = QTimer(interval=10, timeout=self._tick)
        self._timer.start()

    def _collector(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._collecting = time.perf_counter()
        else:
            self.collections.append(((time.perf_counter() - self._collecting) * 1000, info["generation"]))

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append((now - self._last) * 1000)
        self._last = now

    def stop(self) -> str:
        self._timer.stop()
        gc.callbacks.remove(self._collector)
        late = sorted(self.gaps)
        longest = max(self.collections, default=(0.0, 0))
        return (f"10 ms GUI timer: median {statistics.median(late):.1f} ms, p99 {late[int(len(late) * 0.99) - 1]:.1f} "
                f"ms, max {late[-1]:.1f} ms; gaps over 50 ms: {sum(g > 50 for g in late)}; "
                f"{len(self.collections)} cycle collections, the longest {longest[0]:.1f} ms (generation {longest[1]})")


class PaintClock(QObject):
    """How long each paint of the ladder's rows takes (the paint the GIL made slow). It paints the
    viewport itself, from an event filter, to time it: patching paintEvent on the class is not seen
    once the view has painted (PySide keeps the override it found at the first paint)."""

    def __init__(self, table) -> None:
        super().__init__()
        self.durations: list[float] = []
        self._table, self._painting = table, False
        table.viewport().installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:
        if event.type() != QEvent.Type.Paint or self._painting:
            return False
        self._painting = True
        start = time.perf_counter()
        try:
            self._table.viewportEvent(event)
        finally:
            self._painting = False
        self.durations.append((time.perf_counter() - start) * 1000)
        return True

    def stop(self) -> str:
        self._table.viewport().removeEventFilter(self)
        took = sorted(self.durations) or [0.0]
        return (f"ladder paints: {len(self.durations)}, median {statistics.median(took):.1f} ms, "
                f"p90 {took[int(len(took) * 0.9)]:.1f} ms, max {took[-1]:.1f} ms")


def catch_up(window: LabWindow, endpoints: dict, loop: asyncio.AbstractEventLoop, args) -> None:
    """The load first, then the window comes in and reads the whole trace: is it usable meanwhile?"""
    address = endpoints["sip"]["cpm-a.lab"]
    sent = subprocess.run([sys.executable, __file__, "--load", address, "--rate", str(args.rate),
                           "--seconds", str(args.seconds)], stdout=subprocess.PIPE, text=True).stdout
    clock = FrameClock()
    start = time.perf_counter()
    watch = window.watch(*cli.host_and_port(endpoints["trace_feed"]))
    loop.run_until_complete(until(lambda: watch.connected and watch.last_seq >= watch.lab_seq_at_connect,
                                  timeout=600, what="the window caught up"))
    took = time.perf_counter() - start
    print(f"window coming in late: {int(sent.strip() or 0)} MESSAGEs' trace, {watch.last_seq} PDUs read in "
          f"{took:.1f} s ({watch.last_seq / took:.0f}/s)")
    print(f"  {clock.stop()}")
    watch.stop()


@contextlib.contextmanager
def lab_elsewhere(folder: Path, wanted: bool) -> Iterator[dict | None]:
    """`iwlab serve --trace-feed 0` in a process of its own; its endpoints (None: not wanted)."""
    if not wanted:
        yield None
        return
    endpoints_file = folder / "endpoints.json"
    lab = subprocess.Popen([sys.executable, "-m", "iwlab.app.cli", "serve", "--port-base", "0", "--quiet",
                            "--trace-feed", "0", "--endpoints-file", str(endpoints_file)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        while not endpoints_file.exists():
            if lab.poll() is not None:
                raise SystemExit("iwlab serve did not start")
            time.sleep(0.05)
        yield json.loads(endpoints_file.read_text())
    finally:
        lab.send_signal(signal.SIGTERM)
        lab.wait(30)


if __name__ == "__main__":
    main()
