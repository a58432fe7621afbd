"""Mary's CPM phone: conversations, bubbles with ticks, compose from the
address book (people, never technologies: CPM-IOP-003), and the device's
conditions as toggles.
"""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QFrame, QHBoxLayout, QLabel,
                               QLineEdit, QListView, QListWidget, QListWidgetItem, QPushButton,
                               QVBoxLayout, QWidget)

from .chat_bubbles import BubbleDelegate, ConversationModel
from .device_bridge import DeviceBridge

RunInLab = Callable[[object], object]   # schedules a coroutine on the lab loop


class CpmPhone(QFrame):
    """A phone-shaped frame around one CpmDevice."""

    messageShown = Signal(object)   # a ChatMessage that appeared in the open conversation

    def __init__(self, device, run_in_lab: RunInLab, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.device = device
        self.run_in_lab = run_in_lab
        self.setObjectName("phone")
        self.setProperty("kind", "cpm")
        self._conversations: dict[str, list] = {}
        self._open_conversation: str | None = None

        user = device.user
        title = QLabel(f"{user.name}")
        title.setObjectName("phoneTitle")
        identity = QLabel(user.sip or user.tel or "")
        identity.setObjectName("phoneSubtitle")
        self.status_pill = QLabel()
        self.status_pill.setObjectName("statusPill")

        self.registered_box = QCheckBox("Registered to CPM")
        self.capable_box = QCheckBox("CPM-capable device")
        self.roaming_box = QCheckBox("Roaming (no CPM)")
        for box in (self.registered_box, self.capable_box, self.roaming_box):
            box.toggled.connect(self._state_toggled)

        self.threaded_box = QCheckBox("Threaded view")
        self.threaded_box.setToolTip("Show each reply with the message it answers (InReplyTo-Contribution-ID)")
        self.threaded_box.setChecked(True)

        self.conversation_list = QListWidget()
        self.conversation_list.setObjectName("conversationList")
        self.conversation_list.setMaximumHeight(96)
        self.conversation_list.currentItemChanged.connect(self._conversation_chosen)

        self.model = ConversationModel(self)
        self.threaded_box.toggled.connect(self.model.set_threaded)
        self.chat = QListView()
        self.chat.setObjectName("chat")
        self.chat.setModel(self.model)
        self.chat.setItemDelegate(BubbleDelegate(self.chat))
        self.chat.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.chat.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.chat.setWordWrap(True)
        self.chat.setResizeMode(QListView.ResizeMode.Adjust)

        self.recipient = QComboBox()
        self.recipient.setObjectName("recipient")
        for contact in device.contacts():
            self.recipient.addItem(contact.name, contact.id)   # a person, never a technology
        self.text = QLineEdit()
        self.text.setPlaceholderText("Message")
        self.text.returnPressed.connect(self.send)
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("sendButton")
        self.send_button.clicked.connect(self.send)

        header = QHBoxLayout()
        names = QVBoxLayout()
        names.addWidget(title)
        names.addWidget(identity)
        header.addLayout(names, 1)
        header.addWidget(self.status_pill, 0, Qt.AlignmentFlag.AlignTop)
        toggles = QVBoxLayout()
        toggles.setSpacing(2)
        for box in (self.registered_box, self.capable_box, self.roaming_box):
            toggles.addWidget(box)
        to_row = QHBoxLayout()
        to_row.addWidget(QLabel("To"))
        to_row.addWidget(self.recipient, 1)
        compose = QHBoxLayout()
        compose.addWidget(self.text, 1)
        compose.addWidget(self.send_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 14, 14, 14)
        layout.addLayout(header)
        layout.addLayout(toggles)
        conversations_row = QHBoxLayout()
        conversations_row.addWidget(QLabel("Conversations"), 1)
        conversations_row.addWidget(self.threaded_box)
        layout.addLayout(conversations_row)
        layout.addWidget(self.conversation_list)
        layout.addWidget(self.chat, 1)
        layout.addLayout(to_row)
        layout.addLayout(compose)

        self.bridge = DeviceBridge(device, self)
        self.bridge.event.connect(self._device_event)
        self._show_state()

    # -- actions ------------------------------------------------------------------
    def send(self) -> None:
        text = self.text.text().strip()
        if not text:
            return
        contact = self.device.topology.user(self.recipient.currentData())
        self.text.clear()
        self.run_in_lab(self.device.send_message(contact, text))

    def choose_recipient(self, user_id: str) -> None:
        index = self.recipient.findData(user_id)
        if index >= 0:
            self.recipient.setCurrentIndex(index)

    def _state_toggled(self) -> None:
        if getattr(self, "_updating", False):
            return
        self.run_in_lab(self.device.set_state(registered=self.registered_box.isChecked(),
                                              cpm_capable=self.capable_box.isChecked(),
                                              roaming_without_cpm=self.roaming_box.isChecked()))

    # -- device events --------------------------------------------------------------
    def _device_event(self, kind: str, payload: object) -> None:
        if kind == "message":
            self._add_message(payload)
        elif kind == "status":
            self.model.refresh(payload)
        elif kind in ("registration", "state"):
            self._show_state()

    def _add_message(self, message) -> None:
        key = message.conversation_id
        if key not in self._conversations:
            self._conversations[key] = []
            item = QListWidgetItem(message.peer_name)
            item.setData(Qt.ItemDataRole.UserRole, key)
            self.conversation_list.addItem(item)
        self._conversations[key].append(message)
        if key == self._open_conversation:
            self.model.append(message)
            self.chat.scrollToBottom()
        elif message.direction == "out" or self._open_conversation is None:
            self._open(key)    # shows the whole conversation, this message included
        if key == self._open_conversation:
            self.messageShown.emit(message)
        self._label_conversations()

    def _label_conversations(self) -> None:
        for row in range(self.conversation_list.count()):
            item = self.conversation_list.item(row)
            messages = self._conversations[item.data(Qt.ItemDataRole.UserRole)]
            last = messages[-1]
            preview = last.text if len(last.text) <= 28 else last.text[:27] + "…"
            item.setText(f"{last.peer_name} — {preview}")

    def _open(self, key: str) -> None:
        if key == self._open_conversation:
            return
        self._open_conversation = key
        self.model.set_messages(self._conversations.get(key, []))
        for row in range(self.conversation_list.count()):
            item = self.conversation_list.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == key:
                self.conversation_list.blockSignals(True)
                self.conversation_list.setCurrentItem(item)
                self.conversation_list.blockSignals(False)
        self.chat.scrollToBottom()

    def _conversation_chosen(self, item: QListWidgetItem | None) -> None:
        if item is not None:
            self._open(item.data(Qt.ItemDataRole.UserRole))

    def _show_state(self) -> None:
        user = self.device.user
        self._updating = True
        self.registered_box.setChecked(self.device.registered)
        self.capable_box.setChecked(user.cpm_capable)
        self.roaming_box.setChecked(user.roaming_without_cpm)
        self._updating = False
        registered = self.device.registered
        self.status_pill.setText("● CPM" if registered else "○ offline")
        self.status_pill.setProperty("state", "on" if registered else "off")
        self.status_pill.setToolTip("Registered to CPM" if registered else "Not registered to CPM")
        self.status_pill.style().unpolish(self.status_pill)
        self.status_pill.style().polish(self.status_pill)

    def conversation_messages(self) -> list:
        return self.model.messages()
