"""The PDU inspector: everything the trace knows about one event.

A header line (seq, time, hop, protocol, summary), the routing note in a
box that cannot be missed, then tabs: the decoded fields as a tree (with
the correlation ids), a hex + ASCII dump, and the raw bytes as text with
line ends made visible — sngrep's raw pane next to Wireshark's tree.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QPlainTextEdit,
    QPushButton,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from iwlab.backends.trace import TraceEvent, hex_dump
from iwlab.widgets.ladder import format_time
from iwlab.widgets.plain import plain_label, plain_tooltip


# -- pure helpers ------------------------------------------------------------------------
def visible_text(data: bytes) -> str:
    """The bytes as UTF-8 with line ends shown: CRLF as '↵' + newline; a bare
    LF or CR (a framing bug in SIP, worth seeing) as a literal \\n / \\r, other
    control bytes as \\xNN. Escapes rather than Unicode control pictures,
    which common fonts (DejaVu) lack."""
    text = data.decode("utf-8", errors="replace")
    out = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\r" and i + 1 < n and text[i + 1] == "\n":
            out.append("\u21b5\n")
            i += 2
            continue
        if ch == "\n":
            out.append("\\n\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append(ch)
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def is_pair_list(value: Any) -> bool:
    """[(name, value), ...] such as SIP headers: shown as name/value rows,
    duplicates and order kept (two Via headers are two rows)."""
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str) for item in value)


def scalar_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex(" ") if value else "(empty)"
    if isinstance(value, str):
        # One line per row; CRLFs made visible like the text tab.
        return value.replace("\r\n", "\u21b5 ").replace("\n", "\u21b5 ").replace("\r", "\\r")
    return str(value)


def fill_tree(parent: QTreeWidgetItem, value: Any) -> None:
    """Children of `parent` for a dict, a pair list or a list; nested ones expand."""
    if isinstance(value, dict):
        children = list(value.items())
    elif is_pair_list(value):
        children = [(name, item) for name, item in value]
    else:
        children = [(f"[{i}]", item) for i, item in enumerate(value)]
    for name, item in children:
        node = QTreeWidgetItem(parent, [str(name)])
        if isinstance(item, (dict, list, tuple)) and item:
            fill_tree(node, item)
        else:
            text = "(empty)" if isinstance(item, (dict, list, tuple)) else scalar_text(item)
            node.setText(1, text)
            node.setToolTip(1, plain_tooltip(item if isinstance(item, str) else text))


# -- widget ------------------------------------------------------------------------------
class InspectorView(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # Not `self.event`: that would shadow QWidget.event(), which Qt calls for every event.
        self.current_event: TraceEvent | None = None
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)

        self.title = plain_label()           # summaries quote message text: never rich text
        self.title.setWordWrap(True)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        title_font = self.title.font()
        title_font.setBold(True)
        self.title.setFont(title_font)

        # Fixed amber with its own dark text: readable whatever the theme.
        self.note = plain_label()
        self.note.setWordWrap(True)
        self.note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.note.setStyleSheet("QLabel { background: #fff1bf; color: #4a3800; border: 1px solid #e0a800;"
                                " border-radius: 4px; padding: 4px 6px; }")
        self.note.hide()

        self.tree = QTreeWidget()
        self.tree.setColumnCount(2)
        self.tree.setHeaderLabels(["Field", "Value"])
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)

        self.hex = QPlainTextEdit(readOnly=True)
        self.text = QPlainTextEdit(readOnly=True)
        for pane in (self.hex, self.text):
            pane.setFont(mono)
            pane.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.hex.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.hex.customContextMenuRequested.connect(self._hex_menu)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.tree, "Decoded")
        self.tabs.addTab(self.hex, "Hex")
        self.tabs.addTab(self.text, "Text")
        self.copy_button = QPushButton("Copy raw as hex")
        self.copy_button.clicked.connect(self.copy_raw_hex)
        self.tabs.setCornerWidget(self.copy_button, Qt.Corner.TopRightCorner)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.title)
        layout.addWidget(self.note)
        layout.addWidget(self.tabs, 1)
        self.show_event(None)

    def show_event(self, event: TraceEvent | None) -> None:
        self.current_event = event
        self.tree.clear()
        if event is None:
            self.title.setText("Select a PDU in the ladder")
            self.note.hide()
            self.hex.setPlainText("")
            self.text.setPlainText("")
            self.copy_button.setEnabled(False)
            return
        kind = "response" if event.is_response else "request"
        self.title.setText(f"#{event.seq}  {format_time(event.time)}  {event.src} \u2192 {event.dst}  "
                           f"{event.protocol} {kind}  \u2014  {event.summary}")
        self.note.setText(f"\u2139  {event.note}")
        self.note.setVisible(bool(event.note))

        self.tree.setUpdatesEnabled(False)      # one repaint for the whole tree
        fill_tree(self.tree.invisibleRootItem(), event.fields)
        if event.correlation:
            ids = QTreeWidgetItem(self.tree, ["correlation"])
            italic = ids.font(0)
            italic.setItalic(True)
            ids.setFont(0, italic)
            fill_tree(ids, event.correlation)
        self.tree.expandAll()
        self.tree.resizeColumnToContents(0)
        self.tree.setUpdatesEnabled(True)

        self.hex.setPlainText(hex_dump(event.raw))
        self.text.setPlainText(visible_text(event.raw))
        self.copy_button.setEnabled(bool(event.raw))

    def raw_hex(self) -> str:
        return self.current_event.raw.hex(" ") if self.current_event else ""

    def copy_raw_hex(self) -> None:
        QGuiApplication.clipboard().setText(self.raw_hex())

    def _hex_menu(self, position) -> None:
        menu = self.hex.createStandardContextMenu()
        menu.addSeparator()
        menu.addAction("Copy raw as hex", self.copy_raw_hex).setEnabled(bool(self.raw_hex()))
        menu.exec(self.hex.mapToGlobal(position))
        menu.deleteLater()
