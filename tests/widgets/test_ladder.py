"""The ladder: batching bridge, model, filter proxy and view (offscreen)."""
from __future__ import annotations

import contextlib
import threading

import pytest
import shiboken6
from PySide6.QtCore import QModelIndex, QRect, Qt
from PySide6.QtGui import QFont, QImage, QPainter
from PySide6.QtWidgets import QStyle, QStyleOptionViewItem

from iwlab.backends.trace import Trace
from iwlab.widgets.ladder import (
    ColourSlotRole,
    DstColumnRole,
    IsResponseRole,
    LadderFilterProxy,
    LadderModel,
    LadderView,
    NoteRole,
    SrcColumnRole,
    arrow_style,
    colour_key,
    conversation_colour,
)
from iwlab.widgets.trace_bridge import TraceBridge

# Showing a top-level widget with a layout makes Qt pass its minimum size to the
# platform window; the offscreen platform logs that it cannot (a QtWarning).
# Nothing is wrong with the widget, so only that message is ignored here.
pytestmark = pytest.mark.qt_log_ignore(r"This plugin does not support propagateSizeHints\(\)")

NODES = ["Mary", "CPM-A", "CPM-B", "IWF", "SMSC", "Peter", "John"]


def record_flow(trace: Trace) -> list:
    """Six PDUs of CPM -> SMS: two conversations, a response, a routing note."""
    conv = {"conversation_id": "conv-1", "call_id": "call-1"}
    return [
        trace.record("Mary", "CPM-A", "SIP", 'MESSAGE (CPIM) tel:+15550201 "Hi Peter"', raw=b"MESSAGE",
                     correlation=conv),
        trace.record("CPM-A", "Mary", "SIP", "202 Accepted (MESSAGE)", raw=b"SIP/2.0 202", is_response=True,
                     correlation=conv),
        trace.record("CPM-B", "IWF", "SIP", 'MESSAGE (CPIM) tel:+15550201 "Hi Peter"', raw=b"MESSAGE",
                     correlation=conv, note="Peter is not registered to CPM -> SMS via SMSC"),
        trace.record("IWF", "SMSC", "SMPP", 'submit_sm seq=4 15550101->15550201 "Hi Peter"', raw=b"\x00" * 16,
                     correlation={"smpp_message_id": "0a1f"}),
        trace.record("SMSC", "IWF", "SMPP", "submit_sm_resp seq=4 id=0a1f ok", raw=b"\x00" * 16,
                     is_response=True, correlation={"smpp_message_id": "0a1f"}),
        trace.record("SMSC", "Peter", "SMPP", 'deliver_sm seq=7 "Hi Peter"', raw=b"\x00" * 16,
                     correlation={"smpp_message_id": "0a1f"}),
    ]


@pytest.fixture
def flow():
    return record_flow(Trace())


@pytest.fixture
def view(qtbot):
    view = LadderView(NODES)
    qtbot.addWidget(view)
    view.resize(1000, 400)
    return view


def seqs(model) -> list[int]:
    return [model.index(row, 0).data(Qt.ItemDataRole.UserRole + 7) for row in range(model.rowCount())]


# -- model -------------------------------------------------------------------------------
def test_model_inserts_each_batch_with_one_rows_inserted(flow):
    model = LadderModel(NODES)
    inserted = []
    model.rowsInserted.connect(lambda _parent, first, last: inserted.append((first, last)))
    model.append_events(flow[:4])
    model.append_events(flow[4:])
    model.append_events([])
    assert inserted == [(0, 3), (4, 5)]
    assert [model.event_at(row) for row in range(model.rowCount())] == flow
    assert model.index(3, LadderModel.PROTOCOL).data() == "SMPP"
    assert model.index(3, LadderModel.SUMMARY).data() == flow[3].summary


def test_model_roles_give_columns_response_flag_and_note(flow):
    model = LadderModel(NODES)
    model.append_events(flow)
    response, noted = model.index(1, 0), model.index(2, 0)
    assert (response.data(SrcColumnRole), response.data(DstColumnRole)) == (1, 0)   # CPM-A -> Mary
    assert response.data(IsResponseRole) is True
    assert noted.data(NoteRole) == "Peter is not registered to CPM -> SMS via SMSC"
    # Colour slots are handed out per conversation in order of appearance.
    assert [model.index(row, 0).data(ColourSlotRole) for row in range(6)] == [0, 0, 0, 1, 1, 1]


def test_unknown_node_gets_a_column_at_the_end_and_clear_restores_the_nodes(view):
    trace = Trace()
    changes = []
    view.model.nodesChanged.connect(changes.append)
    outside = trace.record("127.0.0.1:53012", "CPM-B", "SIP", "OPTIONS sip:cpm-b.lab", raw=b"OPTIONS")
    view.append_events([outside])
    assert view.model.nodes == NODES + ["127.0.0.1:53012"]
    assert changes == [NODES + ["127.0.0.1:53012"]]
    assert view.header.nodes[-1] == "127.0.0.1:53012"
    assert view.model.index(0, 0).data(SrcColumnRole) == len(NODES)

    view.clear()
    assert view.model.rowCount() == 0
    assert view.model.nodes == NODES
    assert view.header.nodes == NODES


def test_max_rows_drops_the_oldest_rows(flow):
    model = LadderModel(NODES, max_rows=4)
    model.append_events(flow[:3])
    model.append_events(flow[3:])
    assert [model.event_at(row).seq for row in range(model.rowCount())] == [3, 4, 5, 6]
    model.append_events(flow)          # a batch larger than max_rows keeps its newest rows
    assert [model.event_at(row).seq for row in range(model.rowCount())] == [3, 4, 5, 6]
    assert model.row_of_seq(5) == 2 and model.row_of_seq(1) is None


# -- bridge ------------------------------------------------------------------------------
def test_bridge_carries_10000_events_from_a_thread_in_order_and_in_batches(qtbot):
    trace = Trace()
    model = LadderModel(NODES)
    bridge = TraceBridge(trace)
    batches = []
    bridge.eventsArrived.connect(lambda events: batches.append(len(events)))
    bridge.eventsArrived.connect(model.append_events)

    def lab_thread():
        for i in range(10_000):
            trace.record("Mary", "CPM-A", "SIP", f"MESSAGE {i}", raw=b"x")

    recorder = threading.Thread(target=lab_thread)
    recorder.start()
    qtbot.waitUntil(lambda: model.rowCount() == 10_000, timeout=30_000)
    recorder.join()
    assert [model.event_at(row).seq for row in range(model.rowCount())] == list(range(1, 10_001))
    assert sum(batches) == 10_000
    assert len(batches) < 10_000          # batched, not one signal per event
    bridge.unsubscribe()
    trace.record("Mary", "CPM-A", "SIP", "after unsubscribe", raw=b"x")
    assert bridge.pending_count() == 0


def test_bridge_pause_holds_events_and_delivers_them_on_resume(qtbot):
    trace = Trace()
    bridge = TraceBridge(trace)
    delivered = []
    bridge.eventsArrived.connect(delivered.extend)
    bridge.paused = True
    events = record_flow(trace)
    assert bridge.flush() == 0 and delivered == []
    assert bridge.pending_count() == len(events)
    with qtbot.waitSignal(bridge.eventsArrived, timeout=5000):
        bridge.paused = False
    assert delivered == events
    bridge.unsubscribe()


def test_deleted_bridge_stops_listening():
    trace = Trace()
    bridge = TraceBridge(trace)
    assert bridge.is_subscribed() and trace.listener_count() == 1
    shiboken6.delete(bridge)               # as when its parent window is destroyed
    assert trace.listener_count() == 0


def test_bridge_backlog_is_split_into_capped_batches(qtbot):
    bridge = TraceBridge(max_batch=4)
    batches = []
    bridge.eventsArrived.connect(lambda events: batches.append(len(events)))
    for event in record_flow(Trace()) * 2:          # 12 events
        bridge.push(event)
    qtbot.waitUntil(lambda: sum(batches) == 12, timeout=5000)
    assert batches == [4, 4, 4]


def test_view_pause_keeps_events_and_shows_them_on_resume(view, flow):
    view.append_events(flow[:2])
    view.set_paused(True)
    view.append_events(flow[2:])
    assert view.model.rowCount() == 2
    view.set_paused(False)
    assert [view.model.event_at(row) for row in range(6)] == flow


def test_the_rows_paint_while_the_lab_gives_way(view, qtbot, flow):
    entered: list[int] = []

    @contextlib.contextmanager
    def give_way():
        entered.append(1)
        yield
    with qtbot.waitExposed(view):
        view.show()
    view.attach_trace(Trace(), give_way=give_way)
    view.append_events(flow)
    view.table.viewport().repaint()
    assert entered
    view.detach_trace()
    entered.clear()
    view.table.viewport().repaint()
    assert not entered


def test_view_attached_to_a_trace_shows_it_live(view, qtbot):
    trace = Trace()
    view.attach_trace(trace)
    events = record_flow(trace)
    qtbot.waitUntil(lambda: view.model.rowCount() == len(events), timeout=5000)
    view.detach_trace()
    record_flow(trace)
    assert len(trace.events()) == 12 and view.bridge is None


# -- filter ------------------------------------------------------------------------------
def test_filter_proxy_by_protocol_conversation_and_text(flow):
    model = LadderModel(NODES)
    proxy = LadderFilterProxy()
    proxy.setSourceModel(model)
    model.append_events(flow)
    proxy.set_protocols({"smpp"})
    assert [proxy.event_at(row).seq for row in range(proxy.rowCount())] == [4, 5, 6]
    proxy.set_protocols(None)
    proxy.set_conversation("conv-1")
    assert [proxy.event_at(row).seq for row in range(proxy.rowCount())] == [1, 2, 3]
    proxy.set_conversation("call-1")          # any correlation id narrows to its PDUs
    assert proxy.rowCount() == 3
    proxy.set_conversation(None)
    proxy.set_text("NOT REGISTERED")           # matches the routing note
    assert [proxy.event_at(row).seq for row in range(proxy.rowCount())] == [3]
    proxy.set_text("")
    assert proxy.rowCount() == 6
    model.append_events(record_flow(Trace()))  # new rows pass through the active filter
    proxy.set_protocols({"SIP"})
    assert proxy.rowCount() == 6


def test_filter_proxy_inserts_batches_and_follows_dropped_rows():
    trace = Trace()
    model = LadderModel(NODES, max_rows=4)
    proxy = LadderFilterProxy()
    proxy.setSourceModel(model)
    proxy.set_protocols({"SMPP"})
    inserted = []
    proxy.rowsInserted.connect(lambda _parent, first, last: inserted.append((first, last)))
    model.append_events(record_flow(trace))            # seqs 1..6, model keeps 3..6
    model.append_events(record_flow(trace))            # seqs 7..12, model keeps 9..12
    assert [model.event_at(row).seq for row in range(4)] == [9, 10, 11, 12]
    assert [proxy.event_at(row).seq for row in range(proxy.rowCount())] == [10, 11, 12]
    assert inserted == [(0, 2), (0, 2)]                  # one insert per batch (after the old rows left)
    assert [proxy.mapToSource(proxy.index(row, 0)).row() for row in range(3)] == [1, 2, 3]
    assert proxy.mapFromSource(model.index(0, 0)).isValid() is False   # seq 9 is SIP
    assert proxy.index(0, LadderModel.SUMMARY).data() == 'submit_sm seq=4 15550101->15550201 "Hi Peter"'
    model.clear()
    assert proxy.rowCount() == 0


def test_filter_change_keeps_the_selection_when_it_still_passes(view, flow):
    view.append_events(flow)
    view.select_seq(4)
    view.set_protocol_filter({"SMPP"})
    assert view.selected_event() is flow[3]
    view.set_protocol_filter({"SIP"})
    assert view.selected_event() is None


def test_view_filters_and_select_seq(view, flow):
    view.append_events(flow)
    view.set_protocol_filter({"SIP"})
    assert view.proxy.rowCount() == 3
    assert view.select_seq(4) is False          # filtered out
    view.set_protocol_filter(None)
    view.set_conversation_filter("0a1f")
    assert view.proxy.rowCount() == 3
    view.set_conversation_filter(None)
    assert view.select_seq(5) is True
    assert view.selected_event() is flow[4]
    assert view.select_seq(999) is False


# -- selection, keyboard, scrolling ------------------------------------------------------
def test_click_selects_and_down_key_steps_to_the_next_event(view, flow, qtbot):
    view.append_events(flow)
    view.show()
    qtbot.waitExposed(view)
    rect = view.table.visualRect(view.proxy.index(2, 0))
    with qtbot.waitSignal(view.eventSelected, timeout=5000) as clicked:
        qtbot.mouseClick(view.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert clicked.args == [flow[2]]
    with qtbot.waitSignal(view.eventSelected, timeout=5000) as stepped:
        qtbot.keyClick(view.table, Qt.Key.Key_Down)
    assert stepped.args == [flow[3]]
    with qtbot.waitSignal(view.eventSelected, timeout=5000) as back:
        qtbot.keyClick(view.table, Qt.Key.Key_Up)
    assert back.args == [flow[2]]


def test_autoscroll_follows_the_tail_until_the_user_scrolls_up(view, qtbot):
    trace = Trace()
    view.resize(800, 300)
    view.show()
    qtbot.waitExposed(view)
    scroll, viewport = view.table.verticalScrollBar(), view.table.viewport()

    def newest_row_visible() -> bool:
        last = view.table.visualRect(view.proxy.index(view.proxy.rowCount() - 1, 0))
        return viewport.rect().contains(last)

    view.append_events([e for _ in range(20) for e in record_flow(trace)])
    qtbot.waitUntil(newest_row_visible, timeout=5000)
    scroll.setValue(0)                          # the user scrolls up to read
    assert not view.follows_tail
    view.append_events(record_flow(trace))
    qtbot.waitUntil(lambda: scroll.maximum() > 0 and not newest_row_visible(), timeout=5000)
    assert scroll.value() == 0
    scroll.setValue(scroll.maximum())           # back at the bottom: follow again
    assert view.follows_tail
    view.append_events(record_flow(trace))
    qtbot.waitUntil(newest_row_visible, timeout=5000)
    font = QFont(view.font())                   # zooming in keeps the newest row in view
    font.setPointSizeF(font.pointSizeF() * 1.5)
    view.setFont(font)
    qtbot.waitUntil(newest_row_visible, timeout=5000)


def test_dropping_old_rows_keeps_what_the_reader_looks_at(qtbot):
    view = LadderView(NODES, max_rows=60)
    qtbot.addWidget(view)
    view.resize(800, 300)
    view.show()
    qtbot.waitExposed(view)
    trace = Trace()
    view.append_events([e for _ in range(10) for e in record_flow(trace)])     # 60 rows, full
    qtbot.waitUntil(lambda: view.table.verticalScrollBar().maximum() > 0, timeout=5000)
    view.table.scrollTo(view.proxy.index(30, 0), view.table.ScrollHint.PositionAtTop)
    assert not view.follows_tail
    top_seq = view.proxy.event_at(view.table.rowAt(0)).seq
    view.table.setCurrentIndex(view.proxy.index(0, 0))   # the cursor sits on a row about to go
    view.table.scrollTo(view.proxy.index(30, 0), view.table.ScrollHint.PositionAtTop)
    view.append_events(record_flow(trace))                                    # drops the 6 oldest
    assert view.model.event_at(0).seq == 7
    assert view.proxy.event_at(view.table.rowAt(0)).seq == top_seq

    scroll = view.table.verticalScrollBar()                  # following the tail survives drops too
    scroll.setValue(scroll.maximum())
    view.table.setCurrentIndex(view.proxy.index(0, 0))
    scroll.setValue(scroll.maximum())
    view.append_events(record_flow(trace))
    assert view.follows_tail


def test_row_height_follows_the_font(view):
    before = view.table.verticalHeader().defaultSectionSize()
    font = QFont(view.font())
    font.setPointSizeF(font.pointSizeF() * 2)
    view.setFont(font)
    assert view.table.verticalHeader().defaultSectionSize() > before * 1.6


def test_node_columns_spread_across_the_width(view, qtbot):
    view.show()
    qtbot.waitExposed(view)
    geo = view.delegate.ladder_geometry
    assert geo.count == len(NODES)
    assert geo.centre(len(NODES) - 1) + geo.column_width / 2 == pytest.approx(view.table.viewport().width())
    narrow_width = geo.column_width
    view.resize(1600, 400)
    qtbot.waitUntil(lambda: view.delegate.ladder_geometry.column_width > narrow_width, timeout=5000)


# -- painting decisions ------------------------------------------------------------------
def test_arrow_style_dashes_responses_and_keys_colour_by_conversation(flow):
    assert arrow_style(flow[0]) == (False, "conv-1")
    assert arrow_style(flow[1]) == (True, "conv-1")
    assert arrow_style(flow[4]) == (True, "0a1f")      # no conversation: the SMS id
    call_only = Trace().record("Mary", "CPM-A", "SIP", "REGISTER", raw=b"", correlation={"call_id": "reg-1"})
    assert colour_key(call_only) == "reg-1"
    assert colour_key(Trace().record("Mary", "CPM-A", "SIP", "?", raw=b"")) == ""


def test_conversation_colours_differ_per_slot_and_per_theme():
    light = [conversation_colour(slot, dark=False).name() for slot in range(8)]
    dark = [conversation_colour(slot, dark=True).name() for slot in range(8)]
    assert len(set(light)) == 8 and len(set(dark)) == 8
    assert all(conversation_colour(s, True).lightness() > conversation_colour(s, False).lightness() for s in range(8))
    assert conversation_colour(-1, dark=False) is None


def test_delegate_paints_every_kind_of_row(view, flow):
    # Called directly (not by the view) so that an exception in paint fails the test.
    self_talk = Trace().record("IWF", "IWF", "SIP", "timer fired", raw=b"", note="retry")
    view.append_events(flow + [self_talk])
    view.highlight_seqs({2})
    image = QImage(1000, 40, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    for row in range(view.proxy.rowCount()):
        option = QStyleOptionViewItem()
        option.initFrom(view.table)
        option.rect = QRect(0, 0, 1000, 40)
        if row == 1:
            option.state |= QStyle.StateFlag.State_Selected
        view.delegate.paint(painter, option, view.proxy.index(row, 0))
    view.delegate.paint(painter, QStyleOptionViewItem(), QModelIndex())   # nothing to paint
    painter.end()
    assert not view.grab().isNull()


def test_a_sip_response_takes_the_colour_of_its_conversation():
    trace = Trace()
    request = trace.record("Mary", "CPM-A", "SIP", "MESSAGE", raw=b"M",
                           correlation={"conversation_id": "conv-1", "call_id": "call-1"})
    other = trace.record("Mary", "CPM-A", "SIP", "MESSAGE", raw=b"M",
                         correlation={"conversation_id": "conv-2", "call_id": "call-2"})
    response = trace.record("CPM-A", "Mary", "SIP", "202 Accepted", raw=b"2", is_response=True,
                            correlation={"call_id": "call-1"})
    model = LadderModel()
    model.append_events([request, other, response])
    slot = [model.index(row, 0).data(ColourSlotRole) for row in range(3)]
    assert slot[2] == slot[0] != slot[1]


def test_the_model_is_bounded_in_bytes_too(qapp):
    trace = Trace(max_raw=10_000)
    events = [trace.record("Mary", "CPM-A", "SIP", f"MESSAGE {i}", raw=b"x" * 5_000) for i in range(50)]
    model = LadderModel(max_bytes=30_000)
    for event in events:
        model.append_events([event])
    assert model.rowCount() < 50 and model.dropped == 50 - model.rowCount()
    assert model.event_at(model.rowCount() - 1).summary == "MESSAGE 49"
    assert sum(model.event_at(r).footprint for r in range(model.rowCount())) <= 30_000


def test_the_models_rows_are_nothing_the_cycle_collector_walks_and_read_back_whole(qtbot):
    # As objects, 200,000 rows made each of the window's full collections stop it for up to a second.
    import gc

    from iwlab.widgets.ladder import UNPACKED_ROWS
    trace, model = Trace(), LadderModel(NODES)
    first = trace.record("Mary", "CPM-A", "SIP", "MESSAGE", raw=b"M" * 40, fields={"headers": [("To", "x")]},
                         correlation={"conversation_id": "c1", "call_id": "k1"})
    model.append_events([first])

    def batch(start: int) -> list:
        return [trace.record("IWF", "SMSC", "SMPP", f"submit_sm {n}", raw=b"s" * 30,
                             fields={"command": "submit_sm", "esm_class": {"value": 0}},
                             correlation={"smpp_message_id": str(n)}) for n in range(start, start + 1000)]
    assert 4000 > UNPACKED_ROWS   # more rows than are kept unpacked
    for start in range(0, 4000, 1000):
        model.append_events(batch(start))
    gc.collect()
    gc.collect()   # a tuple looked at before one of its parts is let go at the collection after
    assert model.rowCount() == 4001
    assert not [row for row in model._events if gc.is_tracked(row)]
    again = model.event_at(0)
    assert again == first and again.fields == {"headers": [("To", "x")]} and colour_key(again) == "c1"
    assert model.row_of_seq(first.seq) == 0 and model.events()[-1].summary == "submit_sm 3999"


def test_rows_let_go_are_not_kept_unpacked_either(qtbot):
    # Else a ladder of big PDUs would hold 2,048 of them past its byte bound.
    trace, model = Trace(), LadderModel(NODES, max_rows=10)
    for n in range(300):
        model.append_events([trace.record("John", "Mail", "SMTP", f"DATA {n}", raw=b"m" * 100)])
        model.event_at(model.rowCount() - 1)
    assert model.rowCount() == 10 and len(model._unpacked) <= 10


def test_a_filter_reads_the_packed_rows_without_unpacking_them(qtbot):
    trace, model = Trace(), LadderModel(NODES)
    proxy = LadderFilterProxy()
    proxy.setSourceModel(model)
    model.append_events(record_flow(trace))
    model._unpacked.clear()
    proxy.set_conversation("conv-1")
    proxy.set_text("smsc")
    assert proxy.rowCount() >= 1 and not model._unpacked
    whole = [r for r in range(model.rowCount()) if proxy.accepts(model.event_at(r))]   # as full events
    assert [proxy.source_row(r) for r in range(proxy.rowCount())] == whole
