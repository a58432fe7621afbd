"""John's email client: Inbox and Sent, a reader with a headers toggle,
compose and reply. Opening a message answers its read-receipt request (MDN).
"""
from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFrame,
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

from iwlab.backends.devices.email_client import reply_subject
from iwlab.backends.devices.events import DeviceEvent, MailReceived, MailSent, ReadReceiptSent
from iwlab.widgets.device_bridge import DeviceBridge, RunInLab
from iwlab.widgets.device_frame import add_entry, device_header, folders, two_lines
from iwlab.widgets.plain import plain_tooltip


def mail_line(item) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(item.time))
    unread = "● " if item.folder == "inbox" and not item.read else ""
    subject = item.subject if len(item.subject) <= 30 else item.subject[:29] + "…"
    return two_lines(f"{unread}{stamp}  {item.correspondent}", subject)


class EmailClientWidget(QFrame):
    mailShown = Signal(object)

    def __init__(self, client, run_in_lab: RunInLab, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.run_in_lab = run_in_lab
        self.setObjectName("phone")
        self.setProperty("kind", "email")
        self._reply_to = None

        header = device_header(client.name, f"{client.address} · email only")
        self.inbox, self.sent, self.tabs = folders(self._show_item)

        self.reader = QPlainTextEdit()
        self.reader.setObjectName("smsReader")
        self.reader.setReadOnly(True)
        self.headers_box = QCheckBox("Headers")
        self.headers_box.setToolTip("Show every header: Message-ID, In-Reply-To, References, Conversation-ID ...")
        self.headers_box.toggled.connect(lambda _: self._show_item(self._current()))
        self.reply_button = QPushButton("Reply")
        self.reply_button.setEnabled(False)
        self.reply_button.clicked.connect(self.reply)

        self.recipient = QComboBox()
        self.recipient.setEditable(True)
        self.recipient.setObjectName("recipient")
        for name, email in client.contacts():
            self.recipient.addItem(f"{name} <{email}>", email)
        self.subject = QLineEdit()
        self.subject.setPlaceholderText("Subject")
        self.body = QPlainTextEdit()
        self.body.setObjectName("compose")
        self.body.setPlaceholderText("Write your message")
        self.body.setMaximumHeight(80)
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("sendButton")
        self.send_button.clicked.connect(self.send)

        reader_bar = QHBoxLayout()
        reader_bar.addWidget(self.headers_box, 1)
        reader_bar.addWidget(self.reply_button)
        to_row = QHBoxLayout()
        to_row.addWidget(QLabel("To"))
        to_row.addWidget(self.recipient, 1)
        send_row = QHBoxLayout()
        send_row.addWidget(self.subject, 1)
        send_row.addWidget(self.send_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 14, 14, 14)
        layout.addLayout(header)
        layout.addWidget(self.tabs, 2)
        layout.addWidget(self.reader, 2)
        layout.addLayout(reader_bar)
        layout.addLayout(to_row)
        layout.addLayout(send_row)
        layout.addWidget(self.body)

        self.bridge = DeviceBridge(client, self)
        self.bridge.happened.connect(self._client_event)

    # -- actions ---------------------------------------------------------------------
    def send(self) -> None:
        typed = self.recipient.currentText().strip()
        index = self.recipient.findText(typed)
        to = self.recipient.itemData(index) if index >= 0 else typed
        text = self.body.toPlainText()
        if not to or not text.strip():
            return
        subject = self.subject.text().strip() or text.strip().split("\n", 1)[0][:60]
        reply_to, self._reply_to = self._reply_to, None
        self.body.clear()
        self.subject.clear()
        self.run_in_lab(self.client.send(to, subject, text, reply_to=reply_to))

    def reply(self) -> None:
        item = self._current()
        if item is None or item.folder != "inbox":
            return
        self._reply_to = item
        index = self.recipient.findData(item.parsed.sender)
        if index >= 0:
            self.recipient.setCurrentIndex(index)
        else:
            self.recipient.setEditText(item.parsed.sender)
        self.subject.setText(reply_subject(item.subject))
        quoted = "\n".join(f"> {line}" for line in item.parsed.text.splitlines())
        self.body.setPlainText(f"\n\nOn {time.strftime('%a %H:%M', time.localtime(item.time))}, "
                               f"{item.correspondent} wrote:\n{quoted}\n")
        self.body.setFocus()
        cursor = self.body.textCursor()
        cursor.movePosition(cursor.MoveOperation.Start)
        self.body.setTextCursor(cursor)

    # -- client events -----------------------------------------------------------------
    def _client_event(self, event: DeviceEvent) -> None:
        match event:
            case MailReceived(item):
                self._add(self.inbox, item)
                self.mailShown.emit(item)
            case MailSent(item):
                self._add(self.sent, item)
            case ReadReceiptSent():
                self._refresh_labels()

    def _add(self, listing: QListWidget, item) -> None:
        row = QListWidgetItem(mail_line(item))
        row.setData(Qt.ItemDataRole.UserRole, item)
        if item.status.startswith("failed"):
            row.setToolTip(plain_tooltip(item.status))
        add_entry(listing, row)

    def _refresh_labels(self) -> None:
        for listing in (self.inbox, self.sent):
            for row in range(listing.count()):
                entry = listing.item(row)
                entry.setText(mail_line(entry.data(Qt.ItemDataRole.UserRole)))

    def _current(self):
        listing = self.tabs.currentWidget()
        row = listing.currentItem() if isinstance(listing, QListWidget) else None
        return row.data(Qt.ItemDataRole.UserRole) if row else None

    def _show_item(self, row) -> None:
        item = row.data(Qt.ItemDataRole.UserRole) if isinstance(row, QListWidgetItem) else row
        if item is None:
            return
        self.reply_button.setEnabled(item.folder == "inbox")
        body = item.parsed.text
        if item.parsed.attachments:
            body += "\n\nAttachments: " + "; ".join(item.parsed.attachments)
        if self.headers_box.isChecked():
            self.reader.setPlainText(f"{item.headers_text()}\n\n{body}")
        else:
            self.reader.setPlainText(f"From: {item.parsed.sender_name} <{item.parsed.sender}>\n"
                                     f"Subject: {item.subject}\n\n{body}")
        receipt_owed = item.parsed.disposition_notification_to and not item.receipt_sent
        if item.folder == "inbox" and (not item.read or receipt_owed):
            self.run_in_lab(self.client.open(item))   # may send the read receipt (MDN)
            item.read = True
            self._refresh_labels()

    def inbox_subjects(self) -> list[str]:
        return [self.inbox.item(i).data(Qt.ItemDataRole.UserRole).subject for i in range(self.inbox.count())]
