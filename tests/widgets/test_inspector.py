"""The PDU inspector: decoded tree, hex dump, visible text."""
from __future__ import annotations

import pytest
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QTreeWidgetItemIterator

from iwlab.backends.trace import Trace, hex_dump
from iwlab.widgets.inspector import InspectorView, visible_text


def test_hex_dump_exact_text():
    data = b"Hello, SIP!\r\n\x00\x01\x02\xff"
    assert hex_dump(data) == (
        "0000  48 65 6c 6c 6f 2c 20 53  49 50 21 0d 0a 00 01 02  Hello, SIP!.....\n"
        "0010  ff" + " " * 48 + ".")
    assert hex_dump(b"") == ""
    assert hex_dump(bytes(0x10001)).splitlines()[-1].startswith("10000  00 ")   # offset widens


def test_visible_text_shows_line_ends_and_control_bytes():
    assert visible_text(b"INVITE\r\nA\nB\rC\x00\t\xc3\xa9") == "INVITE\u21b5\nA\\n\nB\\rC\\x00\t\u00e9"


@pytest.fixture
def inspector(qtbot):
    view = InspectorView()
    qtbot.addWidget(view)
    return view


@pytest.fixture
def sip_event():
    return Trace().record(
        "CPM-B", "IWF", "SIP", 'MESSAGE (CPIM) tel:+15550201 "Hi Peter"',
        raw=b"MESSAGE tel:+15550201 SIP/2.0\r\nCall-ID: c1\r\n\r\n",
        fields={"request_line": "MESSAGE tel:+15550201 SIP/2.0",
                "headers": [("Via", "SIP/2.0/TCP a"), ("Via", "SIP/2.0/TCP b"), ("Call-ID", "c1")],
                "cpim": {"imdn.Message-ID": "m-1", "body": "Hi Peter"},
                "udh": [{"ref": 7, "part": 1}]},
        correlation={"call_id": "c1", "conversation_id": "conv-1"},
        note="Peter is not registered to CPM -> SMS via SMSC")


def tree_rows(view) -> list[tuple[int, str, str, bool]]:
    """(depth, field, value, expanded) for every row of the tree, in order."""
    rows = []
    it = QTreeWidgetItemIterator(view.tree)
    while it.value():
        item, depth, parent = it.value(), 0, it.value().parent()
        while parent:
            depth, parent = depth + 1, parent.parent()
        rows.append((depth, item.text(0), item.text(1), item.isExpanded() or item.childCount() == 0))
        it += 1
    return rows


def test_shows_nested_fields_pairs_and_correlation_expanded(inspector, sip_event):
    inspector.show_event(sip_event)
    assert [row[:3] for row in tree_rows(inspector)] == [
        (0, "request_line", "MESSAGE tel:+15550201 SIP/2.0"),
        (0, "headers", ""),
        (1, "Via", "SIP/2.0/TCP a"),          # name/value rows, duplicates kept in order
        (1, "Via", "SIP/2.0/TCP b"),
        (1, "Call-ID", "c1"),
        (0, "cpim", ""),
        (1, "imdn.Message-ID", "m-1"),
        (1, "body", "Hi Peter"),
        (0, "udh", ""),
        (1, "[0]", ""),
        (2, "ref", "7"),
        (2, "part", "1"),
        (0, "correlation", ""),
        (1, "call_id", "c1"),
        (1, "conversation_id", "conv-1"),
    ]
    assert all(expanded for *_, expanded in tree_rows(inspector))


def test_shows_header_note_hex_and_text(inspector, sip_event):
    inspector.show_event(sip_event)
    assert "CPM-B \u2192 IWF" in inspector.title.text() and "#1" in inspector.title.text()
    assert not inspector.note.isHidden()
    assert "Peter is not registered" in inspector.note.text()
    assert inspector.hex.toPlainText() == hex_dump(sip_event.raw)
    assert inspector.text.toPlainText().startswith("MESSAGE tel:+15550201 SIP/2.0\u21b5\nCall-ID: c1\u21b5\n")
    inspector.copy_raw_hex()
    assert QGuiApplication.clipboard().text() == sip_event.raw.hex(" ")


def test_event_without_note_hides_the_box_and_none_clears(inspector, sip_event):
    plain = Trace().record("SMSC", "IWF", "SMPP", "submit_sm_resp seq=4 ok", raw=b"\x00\x00\x00\x10",
                           is_response=True)
    inspector.show_event(plain)
    assert inspector.note.isHidden()
    assert "response" in inspector.title.text()
    inspector.show_event(None)
    assert inspector.tree.topLevelItemCount() == 0
    assert inspector.hex.toPlainText() == "" and not inspector.copy_button.isEnabled()
