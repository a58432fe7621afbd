"""Issue 15, finding 7: message data is shown as plain text, never as rich text.

A message saying `<img src=x>` showed a broken-image icon in the inspector (QLabels on
AutoText) and in its tooltip. Here every label that shows what a peer sent is PlainText, and
every tooltip, rendered the way Qt renders it, reads exactly what was sent.
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import Qt as GuiQt
from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import QLabel, QTreeWidgetItemIterator

from iwlab.backends.trace import Trace
from iwlab.widgets.chat_bubbles import ConversationModel
from iwlab.widgets.inspector import InspectorView
from iwlab.widgets.plain import plain_tooltip

HOSTILE = "<img src=x> <b>bold</b> &amp;"


def shown(tooltip: str) -> str:
    """What Qt shows for a tooltip string: rich text when it looks like markup, else the text."""
    if not GuiQt.mightBeRichText(tooltip):
        return tooltip
    document = QTextDocument()
    document.setHtml(tooltip)
    return document.toPlainText()


def test_plain_tooltip_reads_as_the_text(qapp):
    for text in (HOSTILE, "a\nb", "plain", "<p>two</p>\n<br>"):
        assert shown(plain_tooltip(text)) == text
    assert plain_tooltip("") == ""


def test_the_inspector_shows_markup_as_text(qtbot):
    view = InspectorView()
    qtbot.addWidget(view)
    event = Trace().record("Peter", "SMSC", "SMPP", f'submit_sm seq=1 "{HOSTILE}"', raw=HOSTILE.encode(),
                           fields={"text": HOSTILE, "nested": {"body": HOSTILE}}, note=f"note {HOSTILE}")
    view.show_event(event)
    for label in (view.title, view.note):
        assert label.textFormat() == Qt.TextFormat.PlainText
        assert HOSTILE in label.text()
    tips = []
    it = QTreeWidgetItemIterator(view.tree)
    while it.value():
        if it.value().text(1) == HOSTILE:
            tips.append(shown(it.value().toolTip(1)))
        it += 1
    assert tips == [HOSTILE, HOSTILE]


def test_a_bubbles_tooltip_shows_the_failure_reason_as_text(qapp):
    class Message:
        text, status, status_detail, imdn_message_id, contribution_id = "hi", "failed", HOSTILE, "m-1", ""
    model = ConversationModel()
    model.append(Message())
    tip = model.data(model.index(0), Qt.ItemDataRole.ToolTipRole)
    assert shown(tip) == f"failed ({HOSTILE})\nimdn.Message-ID m-1"


def test_the_window_shows_a_hostile_message_as_text(qtbot, window):
    phone, handset = window.phones["mary"], window.phones["peter"]
    phone.choose_recipient("peter")
    qtbot.keyClicks(phone.text, HOSTILE)
    qtbot.keyClick(phone.text, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: handset.inbox_texts() == [HOSTILE], timeout=10000)
    model = window.ladder.model
    qtbot.waitUntil(lambda: any(model.event_at(r).summary.startswith("submit_sm ")
                                for r in range(model.rowCount())), timeout=10000)
    row = next(r for r in range(model.rowCount()) if model.event_at(r).summary.startswith("submit_sm "))
    assert window.ladder.select_seq(model.event_at(row).seq)
    assert HOSTILE in shown(model.data(model.index(row, 0), Qt.ItemDataRole.ToolTipRole))
    # Every label that now holds the text shows it as text; the inspector's title is one of them.
    holding = [label for label in window.findChildren(QLabel) if "<img src=x>" in label.text()]
    assert window.inspector.title in holding
    assert all(label.textFormat() == Qt.TextFormat.PlainText for label in holding)
    for label in (phone.session_banner_label, phone.session_line, phone.status_pill, handset.signal_label,
                  handset.counter, window.scenarios.explain, window.scenarios.position):
        assert label.textFormat() == Qt.TextFormat.PlainText, label.objectName()
    assert handset.inbox.item(0).text().endswith(HOSTILE) or HOSTILE in handset.inbox.item(0).text()
