"""Peter's plain feature phone: inbox and sent lists, a message view, and
compose to a contact or a number. Senders are shown as the number the SMS
came from, as a real handset does.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Coroutine

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from iwlab.backends.devices.events import (
    BindStateChanged,
    DeviceEvent,
    MessageAdded,
    MessageStatusChanged,
    ReceiptReceived,
    SmsReceived,
    SmsSent,
)
from iwlab.backends.devices.sms_handset import Sms
from iwlab.backends.protocols import smstext
from iwlab.widgets import theme
from iwlab.widgets.device_bridge import DeviceBridge, RunInLab
from iwlab.widgets.device_frame import add_entry, device_header, folders, set_pill, two_lines
from iwlab.widgets.plain import plain_label, plain_tooltip


ORDER_ROLE = Qt.ItemDataRole.UserRole + 1     # an inbox item's order badge, as shown


def sms_line(sms) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(sms.time))
    parts = f"  [{sms.parts} parts]" if sms.parts > 1 else ""
    missing = "  [incomplete]" if not sms.complete else ""
    preview = sms.text if len(sms.text) <= 30 else sms.text[:29] + "…"
    report = {"": "", "awaited": "  [report awaited]", "delivered": "  [✓ delivered]"}.get(
        sms.report, f"  [✗ {sms.report}]")
    return two_lines(f"{stamp}  {sms.number}{parts}{missing}{report}", preview)


class SmsHandsetWidget(QFrame):
    smsShown = Signal(object)

    cpmAppReady = Signal(object)   # the CpmDevice given to this user (from the lab thread), or None

    def __init__(self, handset, run_in_lab: RunInLab, parent: QWidget | None = None, *,
                 set_conditions: Callable[..., Coroutine[Any, Any, Any]] | None = None) -> None:
        super().__init__(parent)
        self.handset = handset
        self.run_in_lab = run_in_lab
        self.setObjectName("phone")
        self.setProperty("kind", "sms")

        self.signal_label = plain_label()
        header = device_header(handset.user.name, f"{handset.number} · SMS only", self.signal_label)
        self.inbox, self.sent, self.tabs = folders(self._show_item)

        self.reply_button = QPushButton("Reply")
        self.reply_button.setToolTip("Answer the selected SMS: to the number it came from")
        self.reply_button.clicked.connect(self.reply)
        self.reply_button.setEnabled(False)

        self.reader = QPlainTextEdit()
        self.reader.setObjectName("smsReader")
        self.reader.setReadOnly(True)
        self.reader.setMaximumHeight(110)

        self.recipient = QComboBox()
        self.recipient.setEditable(True)     # a contact, or any number typed in
        self.recipient.setObjectName("recipient")
        for contact in (handset.topology.user(c) for c in handset.user.contacts):
            if contact.tel:
                self.recipient.addItem(f"{contact.name} ({contact.tel})", contact.tel)
        self.text = QLineEdit()
        self.text.setPlaceholderText("Text message")
        self.text.textChanged.connect(self._count)
        self.text.returnPressed.connect(self.send)
        self.counter = plain_label()
        self.counter.setObjectName("smsCounter")
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("sendButton")
        self.send_button.clicked.connect(self.send)

        to_row = QHBoxLayout()
        to_row.addWidget(QLabel("To"))
        to_row.addWidget(self.recipient, 1)
        compose = QHBoxLayout()
        compose.addWidget(self.text, 1)
        compose.addWidget(self.send_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 14, 14, 14)
        layout.addLayout(header)
        # A trainer's switches: the same "send to Peter" takes CPM, SMS or email as they change.
        self.set_conditions = set_conditions
        self.cpm_app_box = QCheckBox("CPM app, registered")
        self.cpm_app_box.setToolTip("Give this user a CPM client beside the handset: it REGISTERs to CPM")
        self.capable_box = QCheckBox("CPM-capable")
        self.roaming_box = QCheckBox("Roaming (no CPM)")
        user = handset.user
        self.capable_box.setChecked(user.cpm_capable)
        self.roaming_box.setChecked(user.roaming_without_cpm)
        conditions = QGridLayout()   # two rows: the column stays as narrow as a phone
        conditions.setVerticalSpacing(2)
        conditions.addWidget(self.cpm_app_box, 0, 0, 1, 2)
        conditions.addWidget(self.capable_box, 1, 0)
        conditions.addWidget(self.roaming_box, 1, 1)
        for box, key in ((self.cpm_app_box, "registered"), (self.capable_box, "capable"),
                         (self.roaming_box, "roaming")):
            box.toggled.connect(lambda on, key=key: self._condition_changed(key, on))
            box.setEnabled(set_conditions is not None)
        layout.addLayout(conditions)
        self.cpm_app = None
        self._cpm_items: dict[int, QListWidgetItem] = {}   # id(ChatMessage) -> its inbox row
        self.cpm_bridge: DeviceBridge | None = None
        self.cpmAppReady.connect(self._attach_cpm_app)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.reader)
        layout.addWidget(self.reply_button, 0, Qt.AlignmentFlag.AlignRight)
        layout.addLayout(to_row)
        layout.addLayout(compose)
        layout.addWidget(self.counter)

        self.bridge = DeviceBridge(handset, self)
        self.bridge.happened.connect(self._device_event)
        self._show_signal(handset.esme.state if handset.esme else "closed")
        self._count("")

    def send(self) -> None:
        text = self.text.text()
        if not text.strip():
            return
        typed = self.recipient.currentText().strip()
        index = self.recipient.findText(typed)    # a contact picked, or a number typed in
        number = self.recipient.itemData(index) if index >= 0 else typed
        if not number:
            return
        self.text.clear()
        self.run_in_lab(self.handset.send_sms(number if number.startswith("+") else f"+{number}", text))

    def reply(self) -> None:
        """Like a real handset: the reply goes to the number the SMS came from."""
        item = self.inbox.currentItem()
        if item is None:
            return
        number = item.data(Qt.ItemDataRole.UserRole).number
        index = self.recipient.findData(number)
        if index >= 0:
            self.recipient.setCurrentIndex(index)
        else:
            self.recipient.setEditText(number)   # e.g. a pool number: it names the thread
        self.text.setFocus()

    def _count(self, text: str) -> None:
        parts, coding = smstext.sms_count(text)
        self.counter.setText(f"{len(text)} chars · {parts} SMS · {'GSM 7-bit' if coding == smstext.GSM7 else 'UCS-2'}")

    def _condition_changed(self, key: str, on: bool) -> None:
        """Send only what was flipped: a scenario or the console may have changed the rest."""
        if self.set_conditions is None:
            return
        future = self.run_in_lab(self.set_conditions(**{key: on}))
        if future is not None:
            future.add_done_callback(lambda f: None if f.exception() else self.cpmAppReady.emit(f.result()))

    def sync_conditions(self, app) -> None:
        """Show the user's conditions as they are now (a scenario or the console may have changed them)."""
        user = self.handset.user
        wanted = {self.cpm_app_box: bool(app is not None and app.registered),
                  self.capable_box: user.cpm_capable, self.roaming_box: user.roaming_without_cpm}
        for box, on in wanted.items():
            if box.isChecked() != on:
                box.blockSignals(True)   # showing, not changing: no command goes out
                box.setChecked(on)
                box.blockSignals(False)
        self._attach_cpm_app(app)

    def _attach_cpm_app(self, app) -> None:
        """Messages that reach this user over the CPM app land in the same inbox, marked CPM."""
        if app is self.cpm_app:
            return
        if self.cpm_bridge is not None:
            self.cpm_bridge.detach()
            self.cpm_bridge.deleteLater()
            self.cpm_bridge = None
        self.cpm_app = app
        self._cpm_items.clear()
        if app is not None:
            self.cpm_bridge = DeviceBridge(app, self)
            self.cpm_bridge.happened.connect(self._cpm_event)

    def _cpm_event(self, event: DeviceEvent) -> None:
        if isinstance(event, MessageAdded) and event.message.direction == "in":
            sms = Sms("in", event.message.peer_uri.removeprefix("tel:"), event.message.text)
            sms.status = "via CPM"
            self._add(self.inbox, sms)
            item = self.inbox.item(self.inbox.count() - 1)
            item.setText(sms_line(sms) + "  [CPM]")
            self._cpm_items[id(event.message)] = item
            self.tabs.setCurrentWidget(self.inbox)
            self.smsShown.emit(sms)
        elif isinstance(event, MessageStatusChanged) and event.message.status == "revoked":
            # RCC.07: the server took it back and sends it by SMS; it stays visible, struck
            # through, so the room sees why one copy, not two, reached Peter.
            shown = self._cpm_items.get(id(event.message))
            if shown is not None:
                shown.setText(shown.text().replace("  [CPM]", "  [CPM: revoked]"))
                font = shown.font()
                font.setStrikeOut(True)
                shown.setFont(font)
                shown.setToolTip(plain_tooltip(event.message.status_detail))

    def _device_event(self, event: DeviceEvent) -> None:
        match event:
            case SmsReceived(sms):
                self._add(self.inbox, sms)
                self.tabs.setCurrentWidget(self.inbox)
                self.inbox.setCurrentRow(self.inbox.count() - 1)
                self.smsShown.emit(sms)
            case SmsSent(sms):
                self._add(self.sent, sms)
            case ReceiptReceived(_, sms) if sms is not None:
                self._show_report(sms)
            case BindStateChanged(state):
                self._show_signal(str(state))

    def _show_report(self, sms) -> None:
        """A status report came for a sent SMS: its row says what it reported."""
        for row in range(self.sent.count()):
            item = self.sent.item(row)
            if item.data(Qt.ItemDataRole.UserRole) is sms:
                item.setText(sms_line(sms))
                item.setToolTip(plain_tooltip(f"status report: {sms.report}"))

    def _add(self, listing: QListWidget, sms) -> None:
        item = QListWidgetItem(sms_line(sms))
        item.setData(Qt.ItemDataRole.UserRole, sms)
        if sms.status.startswith("failed"):
            item.setToolTip(plain_tooltip(sms.status))
        add_entry(listing, item)

    def _show_item(self, item: QListWidgetItem | None) -> None:
        if item is None:
            return
        sms = item.data(Qt.ItemDataRole.UserRole)
        self.reply_button.setEnabled(sms.direction == "in")
        direction = "From" if sms.direction == "in" else "To"
        self.reader.setPlainText(f"{direction}: {sms.number}\n{sms.text}")

    def _show_signal(self, state: str) -> None:
        bound = state == "bound"
        set_pill(self.signal_label, bound, "▮▮▮ SMS" if bound else "no network",
                 "Bound to the SMSC" if bound else "Not bound to the SMSC")

    def show_order(self, badges: list[tuple[str, str, str, bool]]) -> None:
        """Each received message's place in its sender's order ("3 of 5"), flagged in red when it
        arrived out of order or twice; badges: (number, text, badge, flagged) in arrival order, of
        the newest arrivals (the order watch reads the newest events). So they are matched from
        the newest row back, by number and text: a text that came again has its latest badge on
        its latest row. Twice a second under load: only the rows they cover are looked at, only
        a changed one is set."""
        by_message: dict[tuple[str, str], list[tuple[str, bool]]] = {}   # a text sent twice: two badges, in order
        for number, text, badge, flagged in badges:
            by_message.setdefault((number.lstrip("+"), text), []).append((badge, flagged))
        left = len(badges)
        for row in range(self.inbox.count() - 1, -1, -1):
            if not left:
                break
            item = self.inbox.item(row)
            sms = item.data(Qt.ItemDataRole.UserRole)
            waiting = by_message.get((sms.number.lstrip("+"), sms.text))
            if not waiting:
                continue
            badge, flagged = waiting.pop()
            left -= 1
            if item.data(ORDER_ROLE) == badge:   # the badge says "out of order" / "duplicate" too
                continue
            item.setText(f"{sms_line(sms)}  · {badge}" + ("  ⚠" if flagged else ""))
            item.setData(ORDER_ROLE, badge)
            item.setForeground(QColor(theme.FLAG_COLOR) if flagged else self.inbox.palette().text().color())

    def order_badges(self) -> list[str]:
        """The order badge shown on each inbox message ("" where there is none)."""
        return [self.inbox.item(i).data(ORDER_ROLE) or "" for i in range(self.inbox.count())]

    def inbox_texts(self) -> list[str]:
        return [self.inbox.item(i).data(Qt.ItemDataRole.UserRole).text for i in range(self.inbox.count())]
