"""Pieces every simulated device in the window shares: the name header with a
status pill, and Inbox/Sent folders."""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QTabWidget, QVBoxLayout

from iwlab.backends.devices import history
from iwlab.widgets.plain import plain_label, plain_tooltip


def device_header(name: str, subtitle: str, pill: QLabel | None = None) -> QHBoxLayout:
    """The device owner's name, large, the identity under it, and a status pill on the right."""
    title = plain_label(name)
    title.setObjectName("phoneTitle")
    identity = plain_label(subtitle)
    identity.setObjectName("phoneSubtitle")
    names = QVBoxLayout()
    names.addWidget(title)
    names.addWidget(identity)
    header = QHBoxLayout()
    header.addLayout(names, 1)
    if pill is not None:
        pill.setObjectName("statusPill")
        header.addWidget(pill, 0, Qt.AlignmentFlag.AlignTop)
    return header


def set_pill(pill: QLabel, on: bool, text: str, tooltip: str = "") -> None:
    pill.setText(text)
    pill.setToolTip(plain_tooltip(tooltip))
    pill.setProperty("state", "on" if on else "off")
    pill.style().unpolish(pill)   # the QSS colours depend on the property
    pill.style().polish(pill)


MAX_ENTRIES = history.KEPT   # a folder shows the newest entries, those its device keeps; the trace keeps all


def folders(on_select: Callable) -> tuple[QListWidget, QListWidget, QTabWidget]:
    """Inbox and Sent lists in tabs; selecting an entry in either calls on_select(item).
    Every entry is exactly two lines (see add_entry)."""
    inbox, sent = QListWidget(), QListWidget()
    inbox.setObjectName("inbox")
    sent.setObjectName("sent")
    for listing in (inbox, sent):   # a phone screen elides; it never scrolls sideways
        listing.setTextElideMode(Qt.TextElideMode.ElideRight)
        listing.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # Without it, each scrollToBottom measured every entry again: 7 ms per SMS after
        # a few hundred, the window's longest stalls under load (bench/window_bench.py).
        listing.setUniformItemSizes(True)
    tabs = QTabWidget()
    tabs.addTab(inbox, "Inbox")
    tabs.addTab(sent, "Sent")
    inbox.currentItemChanged.connect(on_select)
    sent.currentItemChanged.connect(on_select)
    return inbox, sent, tabs


def two_lines(head: str, preview: str) -> str:
    """An entry's text: its head and its preview on one line each, whatever a peer sent
    (the folders' uniform item sizes rely on it)."""
    return f"{_one_line(head)}\n{_one_line(preview)}"


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


def add_entry(listing: QListWidget, item: QListWidgetItem) -> None:
    """Append an entry, let the oldest go beyond MAX_ENTRIES, and show the newest."""
    listing.addItem(item)
    while listing.count() > MAX_ENTRIES:
        listing.takeItem(0)
    listing.scrollToBottom()
