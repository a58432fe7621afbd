"""`iwlab window --watch`: the window shows the ladder of a lab that runs elsewhere, from its
trace feed over TCP, and after the feed drops it catches up without a PDU lost or shown twice."""
import asyncio
import functools

import pytest
from PySide6.QtCore import Qt

from iwlab.app import remote_watch
from iwlab.app.main_window import LabWindow, ladder_nodes
from iwlab.backends.lab.control import run_command
from iwlab.backends.lab.trace_feed import TraceFeed, encode_line
from tests.helpers.waiting import until


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch):
    monkeypatch.setattr(remote_watch, "RETRY_SECONDS", 0.05)


def lab_with_feed(topology, lab_factory, *, controlled: bool):
    """A lab on its own thread with its trace feed on a free loopback port: (runner, feed);
    controlled: the feed's viewers may send console commands too."""
    runner = lab_factory()
    feed = TraceFeed(runner.lab.trace, ladder_nodes(topology),
                     commands=functools.partial(run_command, runner.lab) if controlled else None)
    feed.endpoints = runner.call(runner.lab.endpoints)
    runner.run(feed.start("127.0.0.1", 0))
    yield runner, feed
    runner.run(feed.stop())


@pytest.fixture
def fed_lab(topology, lab_factory):
    yield from lab_with_feed(topology, lab_factory, controlled=False)


@pytest.fixture
def controlled_lab(topology, lab_factory):
    yield from lab_with_feed(topology, lab_factory, controlled=True)


def a_window(qtbot, topology, **options) -> LabWindow:
    window = LabWindow(topology, theme_name="light", **options)
    qtbot.addWidget(window)
    window.show()
    return window


def close(loop, window: LabWindow) -> None:
    watching = window.remote_watch.stop() if window.remote_watch else None
    window.close()
    if watching:
        loop.run_until_complete(asyncio.gather(watching, return_exceptions=True))   # its socket closed


def test_a_window_watches_a_lab_elsewhere_and_catches_up_after_its_feed_drops(qtbot, topology, fed_lab,
                                                                              qasync_loop):
    runner, feed = fed_lab
    lab = runner.lab
    window = a_window(qtbot, topology)
    watch = window.watch("127.0.0.1", feed.port)
    assert window.runner is None and not window.start_action.isEnabled()
    assert window.columns.left_column.isHidden() and window.columns.right_column.isHidden()
    assert [window.bottom_tabs.tabText(i) for i in range(window.bottom_tabs.count())] == ["Inspector", "Conditions"]
    assert window.windowTitle() == f"iwlab — watching the lab at 127.0.0.1:{feed.port}"

    def pdus(events) -> list[tuple]:   # (decoded fields come back as JSON has them: lists for tuples)
        return [(e.seq, e.src, e.dst, e.summary, e.raw, e.src_address, e.dst_address) for e in events]

    def shows_the_whole_trace() -> bool:
        return pdus(window.ladder.model.events()) == pdus(lab.trace.events())

    async def send(text: str) -> None:
        answer = await asyncio.wrap_future(runner.submit(run_command(lab, f"send mary peter {text}")))
        assert not answer.startswith("error"), answer
        await until(lambda: any(text.encode() in e.raw for e in lab.trace.events() if e.dst == "Peter"),
                    what=f"{text!r} reaching Peter")

    async def scenario():
        await until(lambda: watch.connected and shows_the_whole_trace(), what="the REGISTERs shown")
        line = window.notices.endpoints_label.text()
        assert f"Watching the lab at 127.0.0.1:{feed.port}:" in line and f"SMPP {lab.endpoints()['smpp']}" in line
        assert window.ladder.model.nodes[:3] == ["Mary", "CPM-A", "Focus-A"]   # the lab's columns, from its hello
        await send("hello from afar")
        await until(shows_the_whole_trace, what="the message's hops shown")
        await asyncio.wrap_future(runner.submit(feed.stop()))
        await until(lambda: "lost" in window.notices.endpoints_label.text(), what="the window saying so")
        await send("sent while nobody watched")
        await asyncio.wrap_future(runner.submit(feed.start("127.0.0.1", watch.port)))
        await until(lambda: watch.connected and shows_the_whole_trace(), what="the window catching up")
    qasync_loop.run_until_complete(asyncio.wait_for(scenario(), 60))
    assert any(e.dst == "Peter" for e in window.ladder.model.events())
    close(qasync_loop, window)


def test_a_windows_own_lab_offers_its_feed_to_a_window_elsewhere(qtbot, topology, lab_threads_left, qasync_loop):
    demo = a_window(qtbot, topology, trace_feed_port=0)
    viewer = a_window(qtbot, topology)
    demo.start_lab()
    feed = demo.controller.trace_feed
    assert feed is not None and f"Trace feed 127.0.0.1:{feed.port}" in demo.notices.endpoints_label.text()
    watch = viewer.watch("127.0.0.1", feed.port)
    trace = demo.runner.lab.trace

    async def scenario():
        await until(lambda: watch.connected and trace.last_seq() > 0 and
                    [e.seq for e in viewer.ladder.model.events()] == [e.seq for e in trace.events()],
                    what="the viewer showing the demo's lab")
        await demo.stop_lab_async()
        assert demo.controller.trace_feed is None
        await until(lambda: "lost" in viewer.notices.endpoints_label.text(), what="the viewer saying so")
    qasync_loop.run_until_complete(asyncio.wait_for(scenario(), 60))
    close(qasync_loop, viewer)
    demo.close()
    assert lab_threads_left() == []


def test_opening_a_trace_file_ends_the_watch(qtbot, topology, fed_lab, qasync_loop, tmp_path):
    _, feed = fed_lab
    window = a_window(qtbot, topology)
    watch = window.watch("127.0.0.1", feed.port)
    qasync_loop.run_until_complete(until(lambda: watch.connected and window.ladder.model.rowCount() > 0,
                                         what="the lab's PDUs shown"))
    window.save_trace(str(tmp_path / "trace.json"))
    shown = window.ladder.model.rowCount()
    window.open_trace(str(tmp_path / "trace.json"))
    qasync_loop.run_until_complete(until(lambda: not watch.watching and not watch.connected, what="the watch ended"))
    assert window.ladder.model.rowCount() == shown and "trace.json" in window.notices.endpoints_label.text()
    close(qasync_loop, window)


def test_what_a_watched_lab_says_of_itself_is_shown_as_plain_text_cut_short(qtbot, topology, qasync_loop):
    """What a watched lab says of itself is shown as plain text, cut short."""
    hello = {"type": "hello", "iwlab_trace_feed": 1, "lab": "x", "nodes": ["<b>A</b>", "B"], "last_seq": 0,
             "endpoints": {"smpp": "<img src=x>" + "y" * 1000, "sip": {"<i>d</i>": "1.2.3.4:5060"}}}

    async def hostile(reader, writer):
        writer.write(encode_line(hello))
        await reader.readline()
        await reader.read()
        writer.close()

    async def scenario():
        server = await asyncio.start_server(hostile, "127.0.0.1", 0)
        watch = window.watch("127.0.0.1", server.sockets[0].getsockname()[1])
        await until(lambda: watch.connected, what="the window watching")
        server.close()
        return watch
    window = a_window(qtbot, topology)
    qasync_loop.run_until_complete(asyncio.wait_for(scenario(), 30))
    label = window.notices.endpoints_label
    assert label.textFormat() == Qt.TextFormat.PlainText and "<img src=x>" in label.text()
    assert len(label.text()) < remote_watch.MAX_LINE + 100
    assert window.ladder.model.nodes == ["<b>A</b>", "B"]
    close(qasync_loop, window)


def test_the_conditions_panel_of_a_watching_window_changes_the_lab_it_watches(qtbot, topology, controlled_lab,
                                                                              qasync_loop):
    runner, feed = controlled_lab
    window = a_window(qtbot, topology)
    watch = window.watch("127.0.0.1", feed.port)
    summary = window.conditions.summary

    async def scenario():
        await until(lambda: watch.connected and summary.text(), what="the lab's conditions shown")
        window.conditions.commandRequested.emit("throttle 3")   # what the panel's throttle box sends
        await until(lambda: runner.lab.smsc.throttle_every == 3, what="the lab throttling")
        await until(lambda: "1 in 3" in summary.text(), what="the panel showing it")
    qasync_loop.run_until_complete(asyncio.wait_for(scenario(), 30))
    close(qasync_loop, window)


def test_a_lab_that_takes_no_commands_over_its_feed_says_so(qtbot, topology, fed_lab, qasync_loop):
    runner, feed = fed_lab
    window = a_window(qtbot, topology)
    watch = window.watch("127.0.0.1", feed.port)

    async def scenario():
        await until(lambda: watch.connected, what="the window watching")
        window.conditions.commandRequested.emit("throttle 3")
        await until(lambda: window.statusBar().currentMessage().startswith("refused"), what="the refusal shown")
    qasync_loop.run_until_complete(asyncio.wait_for(scenario(), 30))
    assert runner.lab.smsc.throttle_every == 0 and "refused" in window.conditions.summary.text()
    close(qasync_loop, window)
