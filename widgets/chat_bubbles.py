"""Chat bubbles: a list model of one conversation and a delegate that paints
each message as a bubble with sender, time and delivery tick.

Model/view (not a widget per message) so long conversations stay light.
"""
from __future__ import annotations

import time
from typing import Iterable

from PySide6.QtCore import QAbstractListModel, QModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPalette
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

from iwlab.backends.devices import history
from iwlab.widgets.plain import plain_tooltip

MessageRole = Qt.ItemDataRole.UserRole + 1
# Words wrap, and so does a word longer than the bubble (a URL, a pasted id).
WRAP = int(Qt.TextFlag.TextWordWrap) | int(Qt.TextFlag.TextWrapAnywhere)

TICKS = {
    "sending": ("…", "sending"),
    "sent": ("✓", "sent"),
    "delivered": ("✓✓", "delivered"),
    "displayed": ("✓✓ read", "displayed"),   # distinct from delivered, seen from the back of a room
    "failed": ("✗ failed", "failed"),
    "revoked": ("↶ revoked", "revoked"),     # an incoming message its server took back (RCC.07): it came by SMS
}


def via(message) -> str:
    """How a message travelled on the phone: "CPM", or "SMS" (the phone's SMS side)."""
    return getattr(message, "via", "CPM")


def tick_for(status: str) -> tuple[str, str]:
    """The glyph and the word for a message status (the word is for tooltips and tests)."""
    return TICKS.get(status, ("", status))


class ConversationModel(QAbstractListModel):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._messages: list = []
        self._by_contribution: dict = {}
        self.threaded = True   # replies shown with what they answer

    def set_messages(self, messages: Iterable) -> None:
        self.beginResetModel()
        self._messages = list(messages)
        self._by_contribution = {m.contribution_id: m for m in self._messages if m.contribution_id}
        self.endResetModel()

    def append(self, message) -> None:
        self.beginInsertRows(QModelIndex(), len(self._messages), len(self._messages))
        self._messages.append(message)
        if message.contribution_id:
            self._by_contribution[message.contribution_id] = message
        self.endInsertRows()
        if len(self._messages) > history.KEPT:   # the oldest goes, as it went from the device
            self.beginRemoveRows(QModelIndex(), 0, 0)
            gone = self._messages.pop(0)
            if self._by_contribution.get(gone.contribution_id) is gone:
                del self._by_contribution[gone.contribution_id]
            self.endRemoveRows()
            if gone.contribution_id:   # replies to it lose their quote: laid out again
                for row, reply in enumerate(self._messages):
                    if reply.in_reply_to == gone.contribution_id:
                        self.dataChanged.emit(self.index(row), self.index(row))

    def set_threaded(self, threaded: bool) -> None:
        self.beginResetModel()   # row heights change with the reply quotes
        self.threaded = threaded
        self.endResetModel()

    def answered(self, message):
        """In threaded view, the message this one replies to (InReplyTo-Contribution-ID) if it is
        in this conversation; in flat view, None."""
        if not self.threaded or not message.in_reply_to:
            return None
        return self._by_contribution.get(message.in_reply_to)

    def refresh(self, message) -> None:
        for row, existing in enumerate(self._messages):
            if existing is message:
                index = self.index(row)
                self.dataChanged.emit(index, index)
                return

    def messages(self) -> list:
        return list(self._messages)

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._messages)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        message = self._messages[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return message.text
        if role == MessageRole:
            return message
        if role == Qt.ItemDataRole.ToolTipRole:
            detail = f" ({message.status_detail})" if message.status_detail else ""
            if via(message) == "SMS":    # the phone's SMS side: no IMDN id to show
                return plain_tooltip(f"by SMS: {tick_for(message.status)[1]}{detail}")
            return plain_tooltip(f"{tick_for(message.status)[1]}{detail}\nimdn.Message-ID {message.imdn_message_id}")
        return None


class BubbleDelegate(QStyledItemDelegate):
    PAD = 8
    MARGIN = 6

    @staticmethod
    def _answered(message, index):
        return index.model().answered(message)

    def _reply_indent(self, message, index) -> int:
        return 22 if self._answered(message, index) is not None else 0

    def _header(self, message, index) -> str:
        header = message.peer_name if message.direction == "in" else "me"
        parent = self._answered(message, index)
        if parent is not None:
            quoted = parent.text if len(parent.text) <= 28 else parent.text[:27] + "…"
            header += f"  ↪ {quoted}"   # a reply shows what it answers
        return header

    def _text_rect(self, option: QStyleOptionViewItem, message, index) -> QRect:
        width = max(80, int(option.rect.width() * 0.78) - self._reply_indent(message, index))
        metrics = QFontMetrics(option.font)
        return metrics.boundingRect(QRect(0, 0, width - 2 * self.PAD, 100000),
                                    WRAP, message.text or " ")

    def sizeHint(self, option: QStyleOptionViewItem, index) -> QSize:
        message = index.data(MessageRole)
        text = self._text_rect(option, message, index)
        meta = QFontMetrics(option.font).height()
        return QSize(max(option.rect.width(), 100), text.height() + meta * 2 + 2 * self.PAD + 2 * self.MARGIN)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index) -> None:
        message = index.data(MessageRole)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        metrics = QFontMetrics(option.font)
        text_rect = self._text_rect(option, message, index)
        meta_height = metrics.height()
        header = self._header(message, index)
        stamp = time.strftime("%H:%M:%S", time.localtime(message.time))
        glyph, _ = tick_for(message.status) if message.direction == "out" else ("", "")
        footer = f"{stamp}  {glyph}".strip()
        if via(message) == "SMS":
            footer = f"SMS · {footer}"    # in the same conversation, marked by how it came
        max_width = int(option.rect.width() * 0.78)
        header = metrics.elidedText(header, Qt.TextElideMode.ElideRight, max_width - 2 * self.PAD)
        bubble_width = max(text_rect.width(), metrics.horizontalAdvance(header),
                           metrics.horizontalAdvance(footer)) + 2 * self.PAD
        bubble_height = text_rect.height() + 2 * meta_height + 2 * self.PAD
        outgoing = message.direction == "out"
        indent = self._reply_indent(message, index)
        rect = option.rect.adjusted(self.MARGIN + indent, self.MARGIN, -self.MARGIN, -self.MARGIN)
        x = rect.right() - bubble_width if outgoing else rect.left()
        bubble = QRect(x, rect.top(), bubble_width, bubble_height)
        palette = option.palette
        dark = palette.color(QPalette.ColorRole.Window).lightness() < 128
        if outgoing:
            fill = QColor("#1f6feb") if not dark else QColor("#2f81f7")
            ink = QColor("white")
        else:
            fill = QColor("#e9ecef") if not dark else QColor("#30363d")
            ink = palette.color(QPalette.ColorRole.Text)
        if message.status == "failed":
            fill = QColor("#d1242f")
        if option.state & QStyle.StateFlag.State_Selected:
            fill = fill.darker(115)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(fill)
        painter.drawRoundedRect(bubble, 12, 12)
        if indent:   # a thread line: this message answers an earlier one
            painter.setPen(palette.color(QPalette.ColorRole.Mid))
            painter.drawLine(rect.left() - indent + 8, bubble.top(), rect.left() - indent + 8, bubble.bottom())
        inner = bubble.adjusted(self.PAD, self.PAD, -self.PAD, -self.PAD)
        small = QColor(ink)
        small.setAlpha(190)
        painter.setPen(small)
        painter.drawText(QRect(inner.left(), inner.top(), inner.width(), meta_height),
                         int(Qt.AlignmentFlag.AlignLeft), header)
        painter.setPen(ink)
        painter.drawText(QRect(inner.left(), inner.top() + meta_height, inner.width(), text_rect.height()),
                         WRAP, message.text)
        painter.setPen(small)
        painter.drawText(QRect(inner.left(), inner.bottom() - meta_height + 1, inner.width(), meta_height),
                         int(Qt.AlignmentFlag.AlignRight), footer)
        painter.restore()
