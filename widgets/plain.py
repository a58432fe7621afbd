"""Message data on screen as plain text, never rich text (ARCHITECTURE §4).

A QLabel on its default AutoText format renders anything that looks like markup, so a message
saying `<img src=x>` would show a broken image; Qt guesses the same way for tooltips. Every
label that shows what a peer sent is made PlainText here, and a tooltip carries the text
escaped inside markup of our own, so it shows exactly what was sent.
"""
from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel


def plain_label(text: str = "") -> QLabel:
    label = QLabel()
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setText(text)
    return label


def plain_tooltip(text: str) -> str:
    """The tooltip string that shows `text` as it is, markup and line breaks included."""
    if not text:
        return ""
    return "<p style='white-space:pre-wrap'>" + html.escape(text) + "</p>"
