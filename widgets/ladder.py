"""The live ladder (sequence) diagram: one column per node, one row per PDU.

Modelled on Wireshark's flow graph: a header strip names the nodes, each row
is an arrow from the sender's lifeline to the receiver's, solid for requests
and dashed for responses, coloured per conversation, with the one-line
summary on the arrow and seq/time in the left margin.

Three layers, napari-style: `LadderModel` is a plain table of TraceEvents
(testable without a view), `LadderFilterProxy` filters it, and `LadderView`
paints it with one delegate call per visible row. The view is a QTableView
with fixed row heights, so 200,000 rows scroll as fast as 20.
"""
from __future__ import annotations

import bisect
import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterable, NamedTuple

from PySide6.QtCore import (
    QAbstractTableModel,
    QEvent,
    QItemSelection,
    QLineF,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QPointF,
    QRectF,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetrics,
    QFontMetricsF,
    QPainter,
    QPainterPath,
    QPalette,
    QPen,
    QPolygonF,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QMenu,
    QStyle,
    QStyledItemDelegate,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from iwlab.backends.packed_log import PackedLog
from iwlab.backends.trace import (MAX_BYTES, PACKED_AT, PACKED_FOOTPRINT, PACKED_SEQ, Packed, Trace, TraceEvent, pack,
                                  packed_correlation, unpack)
from iwlab.widgets.trace_bridge import TraceBridge
from iwlab.widgets.plain import plain_tooltip

DEFAULT_NODES = ["Mary", "CPM-A", "CPM-B", "IWF", "SMSC", "Peter", "John", "Mail"]

_USER = int(Qt.ItemDataRole.UserRole)
EventRole = _USER + 1          # the TraceEvent itself
SrcColumnRole = _USER + 2      # index of the sender in LadderModel.nodes
DstColumnRole = _USER + 3
IsResponseRole = _USER + 4
ColourKeyRole = _USER + 5      # see colour_key()
NoteRole = _USER + 6           # routing reason, "" if none
SeqRole = _USER + 7
ColourSlotRole = _USER + 8    # palette slot of the colour key, -1 for none


# -- pure helpers: what to draw, decided without any painter ------------------------------
class RowView(NamedTuple):
    """What the filters read of a row, straight from its packed tuple: its fields stay packed."""
    protocol: str
    summary: str
    src: str
    dst: str
    note: str
    correlation: dict[str, str]

    @classmethod
    def of(cls, packed: Packed) -> "RowView":
        return cls(*(packed[PACKED_AT[name]] for name in cls._fields[:-1]), packed_correlation(packed))


def colour_key(event: TraceEvent | RowView) -> str:
    """What ties a PDU to its conversation: the CPM conversation, else the SIP
    dialog/transaction, else the SMS; "" when nothing does."""
    corr = event.correlation
    return corr.get("conversation_id") or corr.get("call_id") or corr.get("smpp_message_id") or ""


class ArrowStyle(NamedTuple):
    dashed: bool       # responses are dashed, as in Wireshark's flow graph
    colour_key: str


def arrow_style(event: TraceEvent) -> ArrowStyle:
    return ArrowStyle(event.is_response, colour_key(event))


# (on a light background, on a dark background): one hue at two lightnesses,
# so arrows keep >= 3:1 contrast against either base colour. Hues are far
# apart (no red next to magenta) so neighbouring conversations stay distinct.
CONVERSATION_COLOURS = [
    ("#1f6fb4", "#6cb4f0"),   # blue
    ("#c45400", "#ffa35c"),   # orange
    ("#1b8a44", "#5fd68a"),   # green
    ("#7b3fbf", "#c3a0f2"),   # purple
    ("#c2185b", "#f48fb1"),   # magenta
    ("#00838f", "#4dd0e1"),   # teal
    ("#7a6a00", "#d4c45a"),   # olive
    ("#8d5524", "#d9a066"),   # brown
]


def conversation_colour(slot: int, dark: bool) -> QColor | None:
    """Colour of a palette slot (None: no conversation, draw in the text colour).

    Slots are handed out by LadderModel in order of first appearance rather
    than by hashing the key: with 8 colours, hashing gave 3 of the 5 sample
    conversations the same colour; first-come slots keep the first 8 apart
    and are still stable for a given trace."""
    if slot < 0:
        return None
    pair = CONVERSATION_COLOURS[slot % len(CONVERSATION_COLOURS)]
    return QColor(pair[1] if dark else pair[0])


def format_time(stamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}"


def blend(a: QColor, b: QColor, amount: float) -> QColor:
    """a moved `amount` of the way towards b: derives dim/stripe colours from any palette."""
    return QColor.fromRgbF(a.redF() + (b.redF() - a.redF()) * amount,
                           a.greenF() + (b.greenF() - a.greenF()) * amount,
                           a.blueF() + (b.blueF() - a.blueF()) * amount)


# -- model -------------------------------------------------------------------------------
UNPACKED_ROWS = 2048   # rows kept unpacked: those on screen, the newest, a filter's last batch


class LadderModel(QAbstractTableModel):
    SEQ, TIME, PROTOCOL, SUMMARY = range(4)
    HEADERS = ["#", "Time", "Protocol", "Summary"]
    nodesChanged = Signal(list)

    def __init__(self, nodes: Iterable[str] = DEFAULT_NODES, parent: QObject | None = None, *,
                 max_rows: int = 200_000, max_bytes: int = MAX_BYTES) -> None:
        super().__init__(parent)
        self._initial_nodes = list(dict.fromkeys(nodes))
        self._nodes: list[str] = []
        self._column_of: dict[str, int] = {}
        # Rows packed (backends/trace.pack): as objects, 200,000 rows made each of the window's
        # full collections stop it for up to a second. The rows last asked for, and the newest,
        # wait unpacked in _unpacked (id of the packed row -> (it, its event)).
        self._events = PackedLog()   # a full collection visits a chunk of rows, not each
        self._unpacked: OrderedDict[int, tuple[Packed, TraceEvent]] = OrderedDict()
        self._colour_slot: dict[str, int] = {}
        self._next_slot = 0
        self.max_rows, self.max_bytes = max_rows, max_bytes
        self._bytes = 0
        self.dropped = 0          # rows let go to stay within the bounds (the ladder's title says so)
        self._set_nodes(self._initial_nodes)

    # -- nodes (ladder columns) --
    @property
    def nodes(self) -> list[str]:
        return list(self._nodes)

    def node_column(self, name: str) -> int:
        return self._column_of.get(name, -1)

    def _set_nodes(self, names: Iterable[str]) -> None:
        self._nodes = list(dict.fromkeys(names))
        self._column_of = {name: i for i, name in enumerate(self._nodes)}

    def colour_slot(self, key: str) -> int:
        return self._colour_slot.get(key, -1) if key else -1

    def _learn(self, events: list[TraceEvent]) -> None:
        # A real outside client ("127.0.0.1:53012") gets a column at the end;
        # a new conversation gets the next colour.
        known, added, slots = self._column_of, [], self._colour_slot
        for event in events:
            for name in (event.src, event.dst):
                if name not in known:
                    known[name] = len(self._nodes)
                    self._nodes.append(name)
                    added.append(name)
            key = colour_key(event)
            if key and key not in slots:
                slots[key] = self._next_slot
                self._next_slot += 1
            # A SIP response carries no Conversation-ID: let its Call-ID take
            # the colour of the conversation its request belonged to.
            call_id = event.correlation.get("call_id")
            if key and call_id and call_id != key:
                slots.setdefault(call_id, slots[key])
        if added:
            self.nodesChanged.emit(self.nodes)

    # -- rows --
    def append_events(self, events: Iterable[TraceEvent]) -> None:
        """Append a batch: one rowsInserted for the whole batch, oldest rows
        dropped first when max_rows would be exceeded."""
        events = list(events)
        if not events:
            return
        self._learn(events)
        if len(events) > self.max_rows:
            self.dropped += len(events) - self.max_rows
            events = events[-self.max_rows:]
        packed = [pack(e) for e in events]
        added = sum(p[PACKED_FOOTPRINT] for p in packed)
        overflow = max(len(self._events) + len(packed) - self.max_rows, 0)
        freed = sum(p[PACKED_FOOTPRINT] for p in self._events.slice(0, overflow))
        while overflow < len(self._events) and self._bytes + added - freed > self.max_bytes:
            freed += self._events[overflow][PACKED_FOOTPRINT]       # the oldest rows go until the batch fits
            overflow += 1
        if overflow > 0:
            self.beginRemoveRows(QModelIndex(), 0, overflow - 1)
            for gone in self._events.drop_oldest(overflow):   # nor kept unpacked: the bounds hold for what is let go
                self._unpacked.pop(id(gone), None)
            self.endRemoveRows()
            self._bytes -= freed
            self.dropped += overflow
        for row, event in zip(packed[-UNPACKED_ROWS:], events[-UNPACKED_ROWS:]):   # the tail paints next
            self._remember(row, event)
        first = len(self._events)
        self.beginInsertRows(QModelIndex(), first, first + len(packed) - 1)
        self._events.extend(packed)
        self._bytes += added
        self.endInsertRows()

    def clear(self, nodes: Iterable[str] | None = None) -> None:
        """Drop all rows; columns go back to the nodes given at construction (or to `nodes`,
        from now on: another lab's, e.g. one watched elsewhere)."""
        if nodes is not None:
            self._initial_nodes = list(dict.fromkeys(nodes))
        self.beginResetModel()
        self._events.clear()
        self._unpacked.clear()
        self._bytes = 0
        self._colour_slot.clear()
        self._next_slot = 0
        changed = self._nodes != self._initial_nodes
        self._set_nodes(self._initial_nodes)
        self.endResetModel()
        if changed:
            self.nodesChanged.emit(self.nodes)

    # Not `event(row)`: QObject.event(QEvent) is the virtual Qt calls for every
    # event delivered to the model, so that name must stay Qt's.
    def event_at(self, row: int) -> TraceEvent:
        packed = self._events[row]
        known = self._unpacked.get(id(packed))
        if known is not None and known[0] is packed:   # (held there, the id cannot be another's)
            return known[1]
        event = unpack(packed)
        self._remember(packed, event)
        return event

    def _remember(self, packed: Packed, event: TraceEvent) -> None:
        self._unpacked[id(packed)] = (packed, event)
        if len(self._unpacked) > UNPACKED_ROWS:
            self._unpacked.popitem(last=False)   # the one remembered longest ago

    def row_views(self, first: int, last: int) -> list[RowView]:
        """What the filters read of rows first..last, without unpacking them (a filter walks every
        row: read as one slice, not row by row)."""
        return [RowView.of(packed) for packed in self._events.slice(first, last + 1)]

    def events(self) -> list[TraceEvent]:
        return [unpack(p) for p in self._events]

    def row_of_seq(self, seq: int) -> int | None:
        """Row holding seq (rows are in recording order, so bisect)."""
        row = bisect.bisect_left(self._events, seq, key=lambda p: p[PACKED_SEQ])
        if row < len(self._events) and self._events[row][PACKED_SEQ] == seq:
            return row
        # Events merged from several traces may not be sorted: fall back to a scan.
        return next((i for i, p in enumerate(self._events) if p[PACKED_SEQ] == seq), None)

    # -- QAbstractTableModel --
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._events)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        return self.event_data(self.event_at(index.row()), index.column(), role)

    def event_data(self, event: TraceEvent, column: int, role: int):
        """data() for one event; LadderFilterProxy answers through this too."""
        if role == Qt.ItemDataRole.DisplayRole:
            if column == self.SEQ:
                return str(event.seq)
            if column == self.TIME:
                return format_time(event.time)
            if column == self.PROTOCOL:
                return event.protocol
            return event.summary
        if role == EventRole:
            return event
        if role == SrcColumnRole:
            return self._column_of.get(event.src, -1)
        if role == DstColumnRole:
            return self._column_of.get(event.dst, -1)
        if role == IsResponseRole:
            return event.is_response
        if role == ColourKeyRole:
            return colour_key(event)
        if role == NoteRole:
            return event.note
        if role == SeqRole:
            return event.seq
        if role == ColourSlotRole:
            return self.colour_slot(colour_key(event))
        if role == Qt.ItemDataRole.ToolTipRole:
            tip = f"#{event.seq} {event.src} \u2192 {event.dst} {event.protocol}\n{event.summary}"
            return plain_tooltip(tip + (f"\n\u2139 {event.note}" if event.note else ""))
        return None


# -- filter ------------------------------------------------------------------------------
class LadderFilterProxy(QAbstractTableModel):
    """The rows of a LadderModel that pass the filters (protocol set,
    conversation key, free text), in time order.

    Why not QSortFilterProxyModel: it calls filterAcceptsRow from C++ once per
    inserted row, and each call has to take the GIL. While the lab thread is
    busy in Python, each take can wait for the other thread's switch interval
    (the GIL convoy effect): a 1,000-event batch cost 1 to 160 ms here,
    depending on the moment (bench/ladder_bench.py). This proxy filters each
    inserted batch in one Python call (~0.2 ms). It relies on what LadderModel
    does: append at the end, drop from the front, reset.
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._source: LadderModel | None = None
        self._rows: list[int] = []   # accepted source rows + _dropped, ascending
        self._dropped = 0            # rows the source has dropped from its front so far
        self._removing = 0           # our rows going with the source rows being dropped
        self._protocols: frozenset[str] | None = None
        self._conversation: str | None = None
        self._text = ""

    # -- source --
    def sourceModel(self) -> LadderModel | None:
        return self._source

    def _attached(self) -> LadderModel:
        """The source model, which every path below runs with (rows exist only with one)."""
        assert self._source is not None, "the proxy has no source model"
        return self._source

    def setSourceModel(self, model: LadderModel | None) -> None:
        self.beginResetModel()
        if self._source is not None:
            for signal, slot in self._source_links():
                signal.disconnect(slot)
        self._source = model
        if model is not None:
            for signal, slot in self._source_links():
                signal.connect(slot)
        self._rebuild()
        self.endResetModel()

    def _source_links(self):
        source = self._attached()
        return [(source.rowsInserted, self._on_source_inserted),
                (source.rowsAboutToBeRemoved, self._on_source_about_to_remove),
                (source.rowsRemoved, self._on_source_removed),
                (source.modelAboutToBeReset, self.beginResetModel),
                (source.modelReset, self._on_source_reset)]

    def _accepted(self, first: int, last: int) -> list[int]:
        """Source rows first..last that pass, as stored (+ _dropped): one Python loop per batch."""
        offset = self._dropped
        if not self.is_filtering():
            return list(range(first + offset, last + 1 + offset))
        views, accepts = self._attached().row_views(first, last), self.accepts
        return [row + offset for row, view in enumerate(views, first) if accepts(view)]

    def _rebuild(self) -> None:
        self._dropped = 0
        count = self._source.rowCount() if self._source is not None else 0
        self._rows = self._accepted(0, count - 1) if count else []

    def _on_source_inserted(self, parent: QModelIndex, first: int, last: int) -> None:
        if first != self._attached().rowCount() - (last - first + 1):   # not an append: start over
            self.beginResetModel()
            self._rebuild()
            self.endResetModel()
            return
        added = self._accepted(first, last)
        if added:
            start = len(self._rows)
            self.beginInsertRows(QModelIndex(), start, start + len(added) - 1)
            self._rows.extend(added)
            self.endInsertRows()

    def _on_source_about_to_remove(self, parent: QModelIndex, first: int, last: int) -> None:
        # LadderModel only drops its oldest rows; those are our first rows too.
        gone = bisect.bisect_right(self._rows, last + self._dropped)
        self._removing = gone
        if gone:
            self.beginRemoveRows(QModelIndex(), 0, gone - 1)

    def _on_source_removed(self, parent: QModelIndex, first: int, last: int) -> None:
        if first != 0:
            self.beginResetModel()
            self._rebuild()
            self.endResetModel()
            return
        gone, self._removing = self._removing, 0
        self._dropped += last + 1      # stored rows stay valid: no renumbering pass
        if gone:
            del self._rows[:gone]
            self.endRemoveRows()

    def _on_source_reset(self) -> None:
        self._rebuild()
        self.endResetModel()

    # -- filters --
    @property
    def protocols(self) -> frozenset[str] | None:
        return self._protocols

    @property
    def conversation(self) -> str | None:
        return self._conversation

    @property
    def text(self) -> str:
        return self._text

    def is_filtering(self) -> bool:
        return self._protocols is not None or self._conversation is not None or bool(self._text)

    def set_protocols(self, protocols: Iterable[str] | None) -> None:
        """Show only these protocols; None or empty shows all."""
        self._protocols = frozenset(p.upper() for p in protocols) if protocols else None
        self._refilter()

    def set_conversation(self, key: str | None) -> None:
        """Show only PDUs whose colour key, or any correlation id, is `key`."""
        self._conversation = key or None
        self._refilter()

    def _in_conversation(self, event: TraceEvent | RowView) -> bool:
        key = self._conversation
        if key == colour_key(event) or key in event.correlation.values():
            return True
        # A SIP response carries only the Call-ID: it belongs where the model's
        # colour (call_id -> conversation) puts it.
        model = self.sourceModel()
        if model is None or key is None:
            return False
        slot = model.colour_slot(key)
        return slot >= 0 and model.colour_slot(colour_key(event)) == slot

    def set_text(self, text: str) -> None:
        """Case-insensitive substring of summary, nodes, protocol, note or ids."""
        self._text = text.strip().lower()
        self._refilter()

    def accepts(self, event: TraceEvent | RowView) -> bool:
        if self._protocols is not None and event.protocol.upper() not in self._protocols:
            return False
        if self._conversation is not None and not self._in_conversation(event):
            return False
        if self._text:
            haystack = " ".join((event.summary, event.src, event.dst, event.protocol, event.note,
                                 *event.correlation.values())).lower()
            if self._text not in haystack:
                return False
        return True

    def _refilter(self) -> None:
        # A layout change, not a reset, so that the view keeps its selection
        # and current row when they pass the new filter.
        self.layoutAboutToBeChanged.emit()
        kept = self.persistentIndexList()
        sources = [self.source_row(index.row()) for index in kept]
        self._rebuild()
        moved = []
        for index, source_row in zip(kept, sources):
            row = self.row_of_source(source_row)
            moved.append(QModelIndex() if row is None else self.index(row, index.column()))
        self.changePersistentIndexList(kept, moved)
        self.layoutChanged.emit()

    # -- mapping --
    def source_row(self, row: int) -> int:
        return self._rows[row] - self._dropped

    def row_of_source(self, source_row: int) -> int | None:
        stored = source_row + self._dropped
        row = bisect.bisect_left(self._rows, stored)
        return row if row < len(self._rows) and self._rows[row] == stored else None

    def mapToSource(self, index: QModelIndex) -> QModelIndex:
        if not index.isValid() or self._source is None:
            return QModelIndex()
        return self._source.index(self.source_row(index.row()), index.column())

    def mapFromSource(self, source_index: QModelIndex) -> QModelIndex:
        row = self.row_of_source(source_index.row()) if source_index.isValid() else None
        return QModelIndex() if row is None else self.index(row, source_index.column())

    def event_at(self, row: int) -> TraceEvent:
        return self._attached().event_at(self._rows[row] - self._dropped)

    # -- QAbstractTableModel --
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() or self._source is None else self._source.columnCount()

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        return self._source.headerData(section, orientation, role) if self._source is not None else None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        return self._attached().event_data(self.event_at(index.row()), index.column(), role)


# -- geometry shared by the header strip and the rows ------------------------------------
@dataclass(frozen=True)
class LadderGeometry:
    left: float            # x where the first node column starts (after the seq/time margin)
    column_width: float
    count: int
    width: float           # of the viewport

    @classmethod
    def fit(cls, width: float, count: int, metrics: QFontMetrics) -> "LadderGeometry":
        # Margin: "12345 SMPP" over "12:34:56.789"; node columns share the rest evenly.
        margin = max(metrics.horizontalAdvance("00:00:00.000"), metrics.horizontalAdvance("00000 SMPP")) \
            + metrics.averageCharWidth() * 2
        count = max(count, 1)
        return cls(margin, max(1.0, (width - margin) / count), count, width)

    def centre(self, column: int) -> float:
        return self.left + (column + 0.5) * self.column_width


def row_height(metrics: QFontMetrics) -> int:
    # A label line plus an arrow band about 0.9 lines high.
    return round(metrics.height() * 1.9) + 4


# -- painting ----------------------------------------------------------------------------
class LadderDelegate(QStyledItemDelegate):
    """Paints a whole row: background, lifelines, margin, arrow, label, note marker."""

    HIGHLIGHT = QColor(255, 190, 0, 80)     # amber wash: reads on light and dark bases
    NOTE_FILL = QColor("#f0a800")

    def __init__(self, source: LadderModel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.source = source
        self.ladder_geometry = LadderGeometry(0, 1, 1, 1)
        self.highlighted: frozenset[int] = frozenset()

    def sizeHint(self, option, index) -> QSize:
        return QSize(int(self.ladder_geometry.width), row_height(option.fontMetrics))

    def paint(self, painter: QPainter, option, index: QModelIndex | QPersistentModelIndex) -> None:
        event: TraceEvent = index.data(EventRole)
        if event is None:
            return
        geo, rect, pal = self.ladder_geometry, QRectF(option.rect), option.palette
        fm = QFontMetricsF(option.font)     # fractional: int metrics elide text that fits
        base, text = pal.color(QPalette.ColorRole.Base), pal.color(QPalette.ColorRole.Text)
        dark = base.lightnessF() < 0.5
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setFont(option.font)

        # Background: stripe every other row, amber for highlighted seqs, highlight for selection.
        background = blend(base, text, 0.035) if index.row() % 2 else base
        painter.fillRect(rect, background)
        if event.seq in self.highlighted:
            painter.fillRect(rect, self.HIGHLIGHT)
            background = blend(background, self.HIGHLIGHT, self.HIGHLIGHT.alphaF())
        if option.state & QStyle.StateFlag.State_Selected:
            selection = QColor(pal.color(QPalette.ColorRole.Highlight))
            selection.setAlpha(110)
            painter.fillRect(rect, selection)
            background = blend(background, pal.color(QPalette.ColorRole.Highlight), 0.43)

        draw_lifelines(painter, geo, rect.top(), rect.bottom() + 1, blend(base, text, 0.25))

        # Margin: seq + protocol on the label line, time below, dimmed.
        pad = fm.averageCharWidth()
        dim = blend(text, base, 0.4)
        label_band = QRectF(rect.left(), rect.top() + 2, rect.width(), fm.height())
        lower_band = QRectF(rect.left(), label_band.bottom(), rect.width(), rect.bottom() - label_band.bottom())
        margin_w = geo.left - pad
        painter.setPen(text)
        painter.drawText(QRectF(rect.left() + pad / 2, label_band.top(), margin_w, fm.height()),
                         Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, str(event.seq))
        painter.setPen(dim)
        painter.drawText(QRectF(rect.left() + pad / 2, label_band.top(), margin_w - pad / 2, fm.height()),
                         Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, event.protocol)
        painter.drawText(QRectF(rect.left() + pad / 2, lower_band.top(), margin_w - pad / 2, lower_band.height()),
                         Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, format_time(event.time))

        # Arrow.
        style = arrow_style(event)
        # Columns and colour straight from the LadderModel: one data() call per row.
        source = self.source
        colour = conversation_colour(source.colour_slot(style.colour_key), dark) or text
        src, dst = source.node_column(event.src), source.node_column(event.dst)
        x1, x2 = geo.centre(src), geo.centre(dst)
        y = lower_band.center().y()
        draw_arrow(painter, x1, x2, y, colour, style.dashed, fm.height(), geo.column_width)

        # Label centred on the arrow; it may run past the arrow's ends (one label
        # per row, so nothing to collide with) but stays inside the ladder area.
        marker = fm.height() * 0.8 if event.note else 0.0
        lo, hi = geo.left + 2, rect.right() - 2
        width = min(fm.horizontalAdvance(event.summary) + marker, hi - lo)
        centre = (x1 + x2) / 2 if src != dst else x1 + geo.column_width * 0.25
        x = min(max(centre - width / 2, lo), hi - width)
        label = fm.elidedText(event.summary, Qt.TextElideMode.ElideRight, width - marker)
        label_rect = QRectF(x, label_band.top(), fm.horizontalAdvance(label) + 4, fm.height())
        painter.fillRect(label_rect.adjusted(-3, 0, 1, 0), background)   # lifelines stop at the text
        painter.setPen(text)
        painter.drawText(label_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, label)
        if event.note:
            draw_note_marker(painter, QPointF(label_rect.right() + marker / 2, label_band.center().y()),
                             marker * 0.85, self.NOTE_FILL, option.font)
        painter.restore()


def draw_lifelines(painter: QPainter, geo: LadderGeometry, top: float, bottom: float, colour: QColor) -> None:
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
    painter.setPen(QPen(colour, 1))
    # One call for all of them: each call into Qt gives up the GIL, and a busy lab thread
    # keeps it up to the switch interval before painting may go on.
    y1, y2 = round(top), round(bottom)
    painter.drawLines([QLineF(x, y1, x, y2) for x in (round(geo.centre(c)) for c in range(geo.count))])
    painter.restore()


def draw_arrow(painter: QPainter, x1: float, x2: float, y: float, colour: QColor, dashed: bool,
               line_height: float, column_width: float) -> None:
    pen = QPen(colour, max(1.5, line_height / 8))
    pen.setCapStyle(Qt.PenCapStyle.FlatCap)
    if dashed:
        pen.setDashPattern([4, 3])
    head_len, head_half = line_height * 0.55, line_height * 0.25
    painter.setPen(pen)
    if x1 == x2:
        # A node talking to itself: a small loop out to the right and back.
        reach = min(column_width * 0.3, line_height * 2)
        top, bottom = y - head_half * 1.6, y + head_half * 0.6
        path = QPainterPath(QPointF(x1, top))
        path.lineTo(x1 + reach, top)
        path.lineTo(x1 + reach, bottom)
        path.lineTo(x1 + head_len, bottom)
        painter.drawPath(path)
        tip, direction, y = x1, -1.0, bottom
    else:
        direction = 1.0 if x2 > x1 else -1.0
        painter.drawLine(QPointF(x1, y), QPointF(x2 - direction * head_len, y))
        tip = x2
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(colour)
    back = tip - direction * head_len
    painter.drawPolygon(QPolygonF([QPointF(tip, y), QPointF(back, y - head_half), QPointF(back, y + head_half)]))


def draw_note_marker(painter: QPainter, centre: QPointF, size: float, fill: QColor, font: QFont) -> None:
    """A small amber disc with an "i": this hop has a routing note (see tooltip / inspector)."""
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(fill)
    painter.drawEllipse(centre, size / 2, size / 2)
    marker_font = QFont(font)
    marker_font.setBold(True)
    marker_font.setPixelSize(max(6, round(size * 0.8)))
    painter.setFont(marker_font)
    painter.setPen(QColor("#1a1a1a"))
    painter.drawText(QRectF(centre.x() - size / 2, centre.y() - size / 2, size, size),
                     Qt.AlignmentFlag.AlignCenter, "i")


# -- widgets -----------------------------------------------------------------------------
class LadderHeader(QWidget):
    """The strip of node names above the rows, aligned with the lifelines."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.nodes: list[str] = []
        self.ladder_geometry = LadderGeometry(0, 1, 1, 1)
        self.x_offset = 0.0            # where the rows' viewport starts, in our coordinates

    def name_font(self) -> QFont:
        # Bold and 25 % larger than the rows: readable from the back of a room.
        font = QFont(self.font())
        font.setBold(True)
        if font.pointSizeF() > 0:
            font.setPointSizeF(font.pointSizeF() * 1.25)
        else:
            font.setPixelSize(round(font.pixelSize() * 1.25))
        return font

    def fitting_font(self, name: str, width: float) -> QFont:
        # A long name ("127.0.0.1:53012") or a narrow window: step down to
        # 80 % of the row font before eliding.
        font = self.name_font()
        for scale in (1.0, 0.8):
            if QFontMetricsF(font).horizontalAdvance(name) <= width:
                break
            font = QFont(self.font())
            font.setBold(True)
            if font.pointSizeF() > 0:
                font.setPointSizeF(font.pointSizeF() * scale)
            else:
                font.setPixelSize(max(6, round(font.pixelSize() * scale)))
        return font

    def sizeHint(self) -> QSize:
        return QSize(400, round(QFontMetrics(self.name_font()).height() * 1.9))

    def minimumSizeHint(self) -> QSize:
        return self.sizeHint()

    def paintEvent(self, _event) -> None:
        pal, geo = self.palette(), self.ladder_geometry
        base, text = pal.color(QPalette.ColorRole.Base), pal.color(QPalette.ColorRole.Text)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.fillRect(self.rect(), pal.color(QPalette.ColorRole.Window))
        painter.translate(self.x_offset, 0)
        draw_lifelines(painter, geo, 0, self.height(), blend(base, text, 0.25))
        large = self.name_font()
        box_h = QFontMetricsF(large).height() * 1.35
        top = (self.height() - box_h) / 2
        width = max(4.0, geo.column_width - 8)
        for column, name in enumerate(self.nodes):
            box = QRectF(geo.centre(column) - width / 2, top, width, box_h)
            painter.setPen(QPen(blend(base, text, 0.45), 1))
            painter.setBrush(pal.color(QPalette.ColorRole.Button))
            painter.drawRoundedRect(box, 4, 4)
            font = self.fitting_font(name, width - 6)
            painter.setFont(font)
            painter.setPen(pal.color(QPalette.ColorRole.ButtonText))
            label = QFontMetricsF(font).elidedText(name, Qt.TextElideMode.ElideRight, width - 6)
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, label)
        # Caption over the seq/time margin.
        painter.setFont(self.font())
        painter.setPen(blend(text, base, 0.4))
        painter.drawText(QRectF(4, 0, geo.left - 6, self.height()),
                         Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, "#  time")
        painter.end()


class _LadderTable(QTableView):
    """QTableView that continues the lifelines below the last row."""

    def __init__(self, delegate: LadderDelegate, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._ladder_delegate = delegate
        self.give_way: Callable[[], ContextManager[None]] = contextlib.nullcontext   # see LadderView.attach_trace

    def paintEvent(self, event) -> None:
        with self.give_way():
            pal = self.palette()
            painter = QPainter(self.viewport())
            draw_lifelines(painter, self._ladder_delegate.ladder_geometry, 0, self.viewport().height(),
                           blend(pal.color(QPalette.ColorRole.Base), pal.color(QPalette.ColorRole.Text), 0.25))
            painter.end()
            super().paintEvent(event)     # rows, each painted by LadderDelegate


class LadderView(QWidget):
    """Header strip + rows. Feed it with attach_trace() or append_events()."""

    eventSelected = Signal(object)      # TraceEvent, or None when the selection is cleared
    conversationFilterChanged = Signal(str)   # "" when every conversation is shown

    def __init__(self, nodes: Iterable[str] = DEFAULT_NODES, parent: QWidget | None = None, *,
                 max_rows: int = 200_000, max_bytes: int = MAX_BYTES) -> None:
        super().__init__(parent)
        self.model = LadderModel(nodes, self, max_rows=max_rows)
        self.proxy = LadderFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.bridge: TraceBridge | None = None
        self._paused = False
        self._held: list[TraceEvent] = []
        self._follow_tail = True

        self.header = LadderHeader(self)
        self.delegate = LadderDelegate(self.model, self)
        self.table = table = _LadderTable(self.delegate, self)
        table.setModel(self.proxy)
        table.setItemDelegate(self.delegate)
        for column in range(1, self.model.columnCount()):   # column 0 carries the whole painted row
            table.setColumnHidden(column, True)
        table.horizontalHeader().hide()
        table.horizontalHeader().setStretchLastSection(True)
        rows = table.verticalHeader()
        rows.hide()
        rows.setMinimumSectionSize(1)
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)   # uniform heights: O(1) row geometry
        table.setShowGrid(False)
        table.setWordWrap(False)
        table.setFrameShape(QTableView.Shape.NoFrame)
        table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        table.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setTabKeyNavigation(False)
        table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        table.customContextMenuRequested.connect(self._context_menu)
        self.setFocusProxy(table)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.header)
        layout.addWidget(table, 1)

        self._viewport = table.viewport()      # kept: eventFilter must not call into a dying table
        self._viewport.installEventFilter(self)
        table.selectionModel().selectionChanged.connect(self._on_selection_changed)
        table.verticalScrollBar().valueChanged.connect(self._on_scrolled)
        table.verticalScrollBar().rangeChanged.connect(self._on_scroll_range_changed)
        self.proxy.rowsRemoved.connect(self._on_rows_dropped)
        self.model.nodesChanged.connect(self._relayout)
        self._relayout()

    # -- feeding --
    def attach_trace(self, trace: Trace | None, *,
                     give_way: Callable[[], ContextManager[None]] = contextlib.nullcontext) -> TraceBridge:
        """Show `trace` live (through a batching TraceBridge owned by this view); None: show what
        is pushed into the bridge (a lab elsewhere, app/remote_watch.py). give_way: held while the
        rows paint, so that a lab in this process pauses meanwhile (LabLoop.give_way): a busy lab
        made every Qt call of a paint wait for the GIL, and frames came late."""
        self.detach_trace()
        self.table.give_way = give_way
        self.bridge = TraceBridge(trace, self)
        self.bridge.eventsArrived.connect(self.append_events)
        return self.bridge

    def detach_trace(self) -> None:
        self.table.give_way = contextlib.nullcontext
        if self.bridge is not None:
            self.bridge.unsubscribe()
            self.bridge.blockSignals(True)     # drop what it still holds; it is going away
            self.bridge.deleteLater()
            self.bridge = None

    def append_events(self, events: list[TraceEvent]) -> None:
        if self._paused:
            self._held.extend(events)
        else:
            self._append(events)

    def _append(self, events: list[TraceEvent]) -> None:
        # When max_rows drops the row under the cursor, QAbstractItemView moves
        # the cursor to the next row *and scrolls to it*, which throws the
        # reader (or the tail-follower) back to the top. Forget the cursor first.
        overflow = self.model.rowCount() + len(events) - self.model.max_rows
        current = self.table.currentIndex()
        if overflow > 0 and current.isValid() and self.proxy.source_row(current.row()) < overflow:
            self.table.selectionModel().clear()
        self.model.append_events(events)

    def set_paused(self, paused: bool) -> None:
        """Freeze the ladder; events keep arriving and appear on resume."""
        self._paused = paused
        if not paused and self._held:
            held, self._held = self._held, []
            self._append(held)

    def is_paused(self) -> bool:
        return self._paused

    def clear(self, nodes: Iterable[str] | None = None) -> None:
        """Drop every row (nodes: the columns from now on, as LadderModel.clear)."""
        self._held.clear()
        self.model.clear(nodes)
        self._follow_tail = True

    # -- filters, selection, highlighting --
    def set_protocol_filter(self, protocols: Iterable[str] | None) -> None:
        self.proxy.set_protocols(protocols)

    def set_conversation_filter(self, key: str | None) -> None:
        self.proxy.set_conversation(key)
        self.conversationFilterChanged.emit(key or "")

    def _context_menu(self, position) -> None:
        index = self.table.indexAt(position)
        event = index.data(EventRole) if index.isValid() else None
        menu = QMenu(self)
        key = colour_key(event) if event is not None else ""
        only = menu.addAction("Show only this conversation", lambda: self.set_conversation_filter(key))
        only.setEnabled(bool(key))
        everything = menu.addAction("Show all conversations", lambda: self.set_conversation_filter(None))
        everything.setEnabled(self.proxy.conversation is not None)
        menu.exec(self.table.viewport().mapToGlobal(position))
        menu.deleteLater()

    def set_text_filter(self, text: str) -> None:
        self.proxy.set_text(text)

    def select_seq(self, seq: int) -> bool:
        """Select and reveal the row of `seq`; False if absent or filtered out."""
        source_row = self.model.row_of_seq(seq)
        row = None if source_row is None else self.proxy.row_of_source(source_row)
        if row is None:
            return False
        index = self.proxy.index(row, 0)
        self.table.setCurrentIndex(index)       # selects the row (SelectRows) and moves the cursor
        self.table.scrollTo(index, QAbstractItemView.ScrollHint.PositionAtCenter)
        return True

    def selected_event(self) -> TraceEvent | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].data(EventRole) if rows else None

    def highlight_seqs(self, seqs: Iterable[int]) -> None:
        self.delegate.highlighted = frozenset(seqs)
        self.table.viewport().update()

    @property
    def follows_tail(self) -> bool:
        return self._follow_tail

    # -- internals --
    def _on_selection_changed(self, _selected: QItemSelection, _deselected: QItemSelection) -> None:
        self.eventSelected.emit(self.selected_event())

    def _on_scrolled(self, value: int) -> None:
        # Follow new rows only while the user is at the bottom; scrolling up
        # stops it, scrolling back down resumes it.
        self._follow_tail = value >= self.table.verticalScrollBar().maximum()

    def _on_scroll_range_changed(self, _minimum: int, maximum: int) -> None:
        # New rows, a new row height (zoom) or a resized window all change the
        # range; while following, stay pinned to the newest row.
        if self._follow_tail:
            self.table.verticalScrollBar().setValue(maximum)

    def _on_rows_dropped(self, _parent: QModelIndex, first: int, last: int) -> None:
        # max_rows drops the oldest rows; someone reading further down should
        # not see the text slide away under them.
        if not self._follow_tail and first == 0:
            scroll = self.table.verticalScrollBar()
            scroll.setValue(scroll.value() - (last + 1) * self.table.verticalHeader().defaultSectionSize())

    def _relayout(self, *_args) -> None:
        metrics = QFontMetrics(self.table.font())
        geo = LadderGeometry.fit(self.table.viewport().width(), len(self.model.nodes), metrics)
        self.delegate.ladder_geometry = geo
        self.header.nodes = self.model.nodes
        self.header.ladder_geometry = geo
        self.header.x_offset = self.table.viewport().mapTo(self, self.table.viewport().rect().topLeft()).x() \
            - self.header.x()
        self.table.verticalHeader().setDefaultSectionSize(row_height(metrics))
        self.header.updateGeometry()
        self.header.update()
        self.table.viewport().update()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self._viewport and event.type() == QEvent.Type.Resize:
            self._relayout()    # columns spread across the new width
        return super().eventFilter(watched, event)

    def changeEvent(self, event: QEvent) -> None:
        # Presentation zoom changes the font: row height and margins follow it.
        if event.type() in (QEvent.Type.FontChange, QEvent.Type.ApplicationFontChange) \
                and hasattr(self, "table"):
            self._relayout()
        super().changeEvent(event)

    def closeEvent(self, event) -> None:
        self.detach_trace()
        super().closeEvent(event)
