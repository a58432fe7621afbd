"""How fast the trace reaches the ladder, and how fast the ladder paints.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/ladder_bench.py [--png DIR]

Pushes 10,000 and 100,000 events from a background thread (as the lab thread
does) through TraceBridge -> LadderModel -> LadderFilterProxy -> LadderView,
then renders the visible rows into a QImage. Prints figures, asserts nothing.
With --png it also saves the sample CPM -> SMS flow, light and dark, 1280 px wide.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PySide6.QtCore import QPoint, QSortFilterProxyModel  # noqa: E402
from PySide6.QtGui import QColor, QImage, QPalette  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from iwlab.backends.trace import Trace  # noqa: E402
from iwlab.widgets.ladder import LadderView  # noqa: E402

NODES = ["Mary", "CPM-A", "CPM-B", "IWF", "SMSC", "Peter", "John"]
HOPS = [("Mary", "CPM-A", "SIP"), ("CPM-A", "CPM-B", "SIP"), ("CPM-B", "IWF", "SIP"),
        ("IWF", "SMSC", "SMPP"), ("SMSC", "Peter", "SMPP")]


def sample_flow(trace: Trace) -> None:
    """~30 PDUs: Mary's "Hi Peter" out to Peter's handset, receipts and IMDN back, Peter's reply."""
    def sip(src, dst, summary, conv="conv-7f3a", call="c1@cpm-a.lab", response=False, note=""):
        raw = (f"{summary.split(' (')[0]} sip:peter@cpm-b.lab SIP/2.0\r\nCall-ID: {call}\r\n"
               f"Conversation-ID: {conv}\r\nContent-Length: 0\r\n\r\n").encode()
        trace.record(src, dst, "SIP", summary, raw=raw, is_response=response, note=note,
                     fields={"headers": [("Call-ID", call), ("Conversation-ID", conv)]},
                     correlation={"call_id": call, "conversation_id": conv})

    def smpp(src, dst, summary, msg_id="", response=False, note=""):
        trace.record(src, dst, "SMPP", summary, raw=bytes(range(16)) * 3, is_response=response, note=note,
                     fields={"command": summary.split()[0]}, correlation={"smpp_message_id": msg_id})

    sip("Mary", "CPM-A", "REGISTER sip:cpm-a.lab", conv="", call="reg1@mary")
    sip("CPM-A", "Mary", "200 OK (REGISTER)", conv="", call="reg1@mary", response=True)
    sip("Mary", "CPM-A", 'MESSAGE (CPIM) tel:+15550201 "Hi Peter"')
    sip("CPM-A", "CPM-B", 'MESSAGE (CPIM) tel:+15550201 "Hi Peter"', note="tel:+15550201 is homed in cpm-b.lab")
    sip("CPM-B", "IWF", 'MESSAGE (CPIM) tel:+15550201 "Hi Peter"',
        note="Peter is not registered to CPM -> SMS via SMSC")
    sip("IWF", "CPM-B", "202 Accepted (MESSAGE)", response=True)
    sip("CPM-B", "CPM-A", "202 Accepted (MESSAGE)", response=True)
    sip("CPM-A", "Mary", "202 Accepted (MESSAGE)", response=True)
    smpp("IWF", "SMSC", 'submit_sm seq=4 15550101->15550201 "Hi Peter"', "0a1f")
    smpp("SMSC", "IWF", "submit_sm_resp seq=4 id=0a1f ok", "0a1f", response=True)
    smpp("SMSC", "Peter", 'deliver_sm seq=7 15550101->15550201 "Hi Peter"', "0a1f")
    smpp("Peter", "SMSC", "deliver_sm_resp seq=7 ok", "0a1f", response=True)
    smpp("SMSC", "IWF", "deliver_sm seq=8 receipt id:0a1f stat:DELIVRD", "0a1f")
    smpp("IWF", "SMSC", "deliver_sm_resp seq=8 ok", "0a1f", response=True)
    sip("IWF", "CPM-B", "MESSAGE (CPIM) sip:mary@cpm-a.lab IMDN delivered", call="c2@iwf",
        note="SMSC receipt DELIVRD -> IMDN delivered to Mary")
    sip("CPM-B", "CPM-A", "MESSAGE (CPIM) sip:mary@cpm-a.lab IMDN delivered", call="c2@iwf")
    sip("CPM-A", "Mary", "MESSAGE (CPIM) sip:mary@cpm-a.lab IMDN delivered", call="c2@iwf")
    sip("Mary", "CPM-A", "200 OK (MESSAGE)", call="c2@iwf", response=True)
    sip("CPM-A", "CPM-B", "200 OK (MESSAGE)", call="c2@iwf", response=True)
    sip("CPM-B", "IWF", "200 OK (MESSAGE)", call="c2@iwf", response=True)
    smpp("Peter", "SMSC", 'submit_sm seq=2 15550201->15550101 "Thanks Mary, see you at the station at six"', "0a20")
    smpp("SMSC", "Peter", "submit_sm_resp seq=2 id=0a20 ok", "0a20", response=True)
    smpp("SMSC", "IWF", 'deliver_sm seq=9 15550201->15550101 "Thanks Mary, see you at the station at six"',
         "0a20", note="Mary is a CPM user -> IWF")
    smpp("IWF", "SMSC", "deliver_sm_resp seq=9 ok", "0a20", response=True)
    sip("IWF", "CPM-B", 'MESSAGE (CPIM) sip:mary@cpm-a.lab "Thanks Mary, see you at the station a…"',
        note="last-conversation rule: reply joins conv-7f3a")
    sip("CPM-B", "CPM-A", 'MESSAGE (CPIM) sip:mary@cpm-a.lab "Thanks Mary, see you at the station a…"')
    sip("CPM-A", "Mary", 'MESSAGE (CPIM) sip:mary@cpm-a.lab "Thanks Mary, see you at the station a…"')
    sip("Mary", "CPM-A", "200 OK (MESSAGE)", response=True)
    sip("CPM-A", "CPM-B", "200 OK (MESSAGE)", response=True)
    sip("CPM-B", "IWF", "200 OK (MESSAGE)", response=True)
    sip("127.0.0.1:53012", "CPM-B", "OPTIONS sip:cpm-b.lab", conv="", call="opt9@sipp",
        note="an outside SIP client gets its own column")
    sip("CPM-B", "127.0.0.1:53012", "200 OK (OPTIONS)", conv="", call="opt9@sipp", response=True)


def record_synthetic(trace: Trace, count: int) -> None:
    rng = random.Random(7)
    for i in range(count):
        src, dst, protocol = HOPS[i % len(HOPS)]
        response = bool(i % 2)
        if response:
            src, dst = dst, src
        trace.record(src, dst, protocol, f"MESSAGE (CPIM) tel:+15550201 \"burst {i}\"", raw=b"x" * 200,
                     fields={"n": i}, is_response=response,
                     correlation={"conversation_id": f"conv-{rng.randrange(50)}"})


def dark_palette() -> QPalette:
    pal = QPalette()
    colours = {QPalette.ColorRole.Window: "#2b2b2b", QPalette.ColorRole.WindowText: "#e6e6e6",
               QPalette.ColorRole.Base: "#1e1e1e", QPalette.ColorRole.AlternateBase: "#262626",
               QPalette.ColorRole.Text: "#e6e6e6", QPalette.ColorRole.Button: "#3a3a3a",
               QPalette.ColorRole.ButtonText: "#f0f0f0", QPalette.ColorRole.Highlight: "#2a82da",
               QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.ToolTipBase: "#3a3a3a",
               QPalette.ColorRole.ToolTipText: "#f0f0f0", QPalette.ColorRole.PlaceholderText: "#9a9a9a"}
    for role, colour in colours.items():
        pal.setColor(role, QColor(colour))
    return pal


def wait_for(app: QApplication, predicate, timeout: float = 120.0) -> None:
    deadline = time.perf_counter() + timeout
    while not predicate():
        app.processEvents()
        if time.perf_counter() > deadline:
            raise TimeoutError
        time.sleep(0.001)


def bench_push(app: QApplication, count: int, *, live: bool) -> LadderView:
    """live: a thread records while the GUI drains (they share the GIL, as the
    lab thread does); backlog: `count` events already queued in the bridge."""
    trace = Trace()
    view = LadderView(NODES)
    view.resize(1280, 800)
    view.show()
    bridge = view.attach_trace(trace)
    batch_times: list[float] = []

    def timed_append(events, original=view.append_events):   # GUI time per delivered batch
        start = time.perf_counter()
        original(events)
        batch_times.append(time.perf_counter() - start)
    bridge.eventsArrived.disconnect(view.append_events)
    bridge.eventsArrived.connect(timed_append)

    if live:
        recorder = threading.Thread(target=record_synthetic, args=(trace, count))
        start = time.perf_counter()
        recorder.start()
    else:
        source = Trace()
        record_synthetic(source, count)
        bridge.paused = True
        for event in source.events():
            bridge.push(event)
        start = time.perf_counter()
        bridge.paused = False
    wait_for(app, lambda: view.model.rowCount() == count)
    total = time.perf_counter() - start
    if live:
        recorder.join()
    assert view.proxy.rowCount() == count
    mode = "live, recorder thread running" if live else "backlog already queued     "
    print(f"{count:>7,} events ({mode}): all shown after {total * 1000:6.0f} ms; "
          f"{len(batch_times)} batches, GUI busy {sum(batch_times) * 1000:5.0f} ms in all, "
          f"longest batch {max(batch_times) * 1000:4.0f} ms")
    return view


def bench_paint(app: QApplication, view: LadderView, rounds: int = 20) -> None:
    image = QImage(view.size(), QImage.Format.Format_ARGB32_Premultiplied)
    wait_for(app, lambda: True)
    start = time.perf_counter()
    for _ in range(rounds):
        view.render(image, QPoint())
    at_bottom = (time.perf_counter() - start) / rounds
    scroll = view.table.verticalScrollBar()
    rng = random.Random(1)
    start = time.perf_counter()
    for _ in range(rounds):
        scroll.setValue(rng.randrange(scroll.maximum() + 1))
        view.render(image, QPoint())
    scattered = (time.perf_counter() - start) / rounds
    visible = view.table.viewport().height() // view.table.verticalHeader().defaultSectionSize() + 1
    print(f"{view.model.rowCount():>7,} rows: render 1280x800 (~{visible} rows) {at_bottom * 1000:5.1f} ms "
          f"at the tail, {scattered * 1000:5.1f} ms after jumping to random positions")


def bench_filter(view: LadderView) -> None:
    start = time.perf_counter()
    view.set_protocol_filter({"SMPP"})
    smpp = time.perf_counter() - start
    shown = view.proxy.rowCount()
    start = time.perf_counter()
    view.set_protocol_filter(None)
    print(f"{view.model.rowCount():>7,} rows: protocol filter on {smpp * 1000:5.0f} ms ({shown:,} shown), "
          f"off {(time.perf_counter() - start) * 1000:5.0f} ms")


class PerRowFilterProxy(QSortFilterProxyModel):
    """What LadderFilterProxy replaced: a Python filterAcceptsRow, called per row."""

    def filterAcceptsRow(self, source_row, source_parent) -> bool:
        return self.sourceModel().event_at(source_row).protocol != "MSRP"


def bench_contention(app: QApplication) -> None:
    """The lab thread busy in Python (under load it is): what does a 1,000-event
    batch cost the GUI thread, and a repaint? Noisy: GIL hand-offs dominate,
    so the median and the worst of several are printed."""
    source = Trace()
    record_synthetic(source, 20_000)
    events = source.events()
    stop = threading.Event()

    def busy_lab() -> None:       # plain bytecode, like the lab's protocol code
        total = 0
        while not stop.is_set():
            for i in range(1000):
                total += i
    lab = threading.Thread(target=busy_lab)
    lab.start()
    time.sleep(0.2)
    try:
        for name, make in (("LadderFilterProxy (batch filter)         ", None),
                           ("QSortFilterProxyModel + filterAcceptsRow", PerRowFilterProxy)):
            view = LadderView(NODES)
            view.resize(1280, 800)
            view.show()
            if make is not None:
                per_row = make(view)
                per_row.setSourceModel(view.model)
                view.table.setModel(per_row)
            view.append_events(events[:10_000])
            app.processEvents()
            batches = []
            for start_row in range(10_000, 20_000, 1000):
                start = time.perf_counter()
                view.append_events(events[start_row:start_row + 1000])
                batches.append(time.perf_counter() - start)
            image = QImage(view.size(), QImage.Format.Format_ARGB32_Premultiplied)
            renders = []
            for _ in range(30):
                start = time.perf_counter()
                view.render(image, QPoint())
                renders.append(time.perf_counter() - start)
            print(f"busy lab thread, {name}: 1,000-event batch median {statistics.median(batches) * 1000:5.1f} ms "
                  f"(max {max(batches) * 1000:5.1f}); render 1280x800 median {statistics.median(renders) * 1000:5.1f} ms "
                  f"(min {min(renders) * 1000:4.1f}, max {max(renders) * 1000:5.1f})")
            view.close()
            view.deleteLater()
            app.processEvents()
    finally:
        stop.set()
        lab.join()


def save_sample_pngs(app: QApplication, directory: Path) -> list[Path]:
    saved = []
    for name, palette in (("light", app.style().standardPalette()), ("dark", dark_palette())):
        trace = Trace()
        sample_flow(trace)
        view = LadderView(NODES)
        view.setPalette(palette)
        rows = len(trace.events())       # tall enough for every row: nothing cut off
        view.resize(1280, view.header.sizeHint().height() + rows * view.table.verticalHeader().defaultSectionSize())
        view.show()
        view.append_events(trace.events())
        view.highlight_seqs({9, 10})
        view.select_seq(5)
        wait_for(app, lambda: True)
        app.processEvents()
        path = directory / f"ladder-{name}.png"
        view.grab().save(str(path))
        saved.append(path)
        view.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--png", type=Path, help="also save ladder-light.png / ladder-dark.png here")
    args = parser.parse_args()
    app = QApplication.instance() or QApplication(sys.argv)
    app.setStyle("Fusion")
    for count in (10_000, 100_000):
        live = bench_push(app, count, live=True)
        view = bench_push(app, count, live=False)
        bench_paint(app, view)
        bench_filter(view)
        for done in (live, view):     # let Qt delete them, not Python's garbage collector mid-signal
            done.close()
            done.deleteLater()
        app.processEvents()
    bench_contention(app)
    if args.png:
        args.png.mkdir(parents=True, exist_ok=True)
        for path in save_sample_pngs(app, args.png):
            print("saved", path)


if __name__ == "__main__":
    main()
