"""Mary's CPM phone: conversations, bubbles with ticks, compose from the
address book (people, never technologies: CPM-IOP-003), and the device's
conditions as toggles.

Chat sessions: "Start chat session" next to Send invites the chosen person
(whatever their technology); an incoming invitation shows a banner in the
phone with Accept / Decline (non-modal: never exec() under qasync); a line
shows the session's state, and while it is established, Send goes over MSRP
in the session until End. "Group chat…" ticks people for a group (the focus invites
them, whatever their technology); while it lasts, Send goes to the group, and each
message shows its author.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from iwlab.backends.devices import history
from iwlab.backends.devices.cpm_phone import ChatMessage
from iwlab.backends.devices.events import (
    ConditionsChanged,
    DeviceEvent,
    MessageAdded,
    MessageStatusChanged,
    RegistrationChanged,
    SessionChanged,
    SessionMessageAdded,
)
from iwlab.backends.devices.session_state import SessionState
from iwlab.widgets.chat_bubbles import BubbleDelegate, ConversationModel
from iwlab.widgets.device_bridge import DeviceBridge, RunInLab
from iwlab.widgets.device_frame import device_header, set_pill
from iwlab.widgets.group_picker import GroupPicker
from iwlab.widgets.plain import plain_label


class CpmPhone(QFrame):
    """A phone-shaped frame around one CpmDevice: conditions, conversations, threaded bubbles,
    reachability beside the contact, sessions. Its size is one screen's controls and their wiring."""

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
        self.status_pill = plain_label()
        header = device_header(user.name, user.sip or user.tel or "", self.status_pill)

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
        self.conversation_list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.conversation_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
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
        self.session_button = QPushButton("Start chat session")
        self.session_button.setObjectName("sessionButton")
        self.session_button.setToolTip("Invite the chosen person to a chat session (the network picks the technology)")
        self.session_button.clicked.connect(self.start_session)
        self.group_button = QPushButton("Group chat…")
        self.group_button.setObjectName("groupButton")
        self.group_button.setToolTip("Choose people for a group chat")
        self.group_picker = GroupPicker(device.contacts())
        self.group_picker.hide()
        self.group_picker.started.connect(self.start_group)
        self.group_button.clicked.connect(lambda: self.group_picker.setVisible(not self.group_picker.isVisible()))

        # Session UI: an inline banner for invitations and a state line with End.
        self.session = None                      # the ChatSession shown (the latest one)
        self.session_banner = QFrame()
        self.session_banner.setObjectName("sessionBanner")
        self.session_banner_label = plain_label()       # the peer's name: what the network said
        self.session_banner_label.setWordWrap(True)
        self.accept_button = QPushButton("Accept")
        self.accept_button.setObjectName("acceptSession")
        self.decline_button = QPushButton("Decline")
        self.decline_button.setObjectName("declineSession")
        self.accept_button.clicked.connect(self.accept_session)
        self.decline_button.clicked.connect(self.decline_session)
        banner = QHBoxLayout(self.session_banner)
        banner.setContentsMargins(6, 4, 6, 4)
        banner.addWidget(self.session_banner_label, 1)
        banner.addWidget(self.accept_button)
        banner.addWidget(self.decline_button)
        self.session_banner.hide()
        self.session_line = plain_label()
        self.session_line.setObjectName("sessionLine")
        self.session_line.setWordWrap(True)
        self.end_button = QPushButton("End")
        self.end_button.setObjectName("endSession")
        self.end_button.clicked.connect(self.end_session)
        self.session_row = QWidget()
        session_row = QHBoxLayout(self.session_row)
        session_row.setContentsMargins(0, 0, 0, 0)
        session_row.addWidget(self.session_line, 1)
        session_row.addWidget(self.end_button)
        self.session_row.hide()

        toggles = QVBoxLayout()
        toggles.setSpacing(2)
        for box in (self.registered_box, self.capable_box, self.roaming_box):
            toggles.addWidget(box)
        to_row = QHBoxLayout()
        to_row.addWidget(QLabel("To"))
        to_row.addWidget(self.recipient, 1)
        to_row.addWidget(self.session_button)   # the same action for every contact, beside who it goes to
        group_row = QHBoxLayout()                # a row of its own: beside the others it made the phone
        group_row.addStretch(1)                  # so wide that the ladder's names were cut at 1280 px
        group_row.addWidget(self.group_button)
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
        layout.addWidget(self.session_banner)
        layout.addWidget(self.session_row)
        layout.addLayout(group_row)
        layout.addWidget(self.group_picker)
        layout.addLayout(to_row)
        layout.addLayout(compose)

        self.bridge = DeviceBridge(device, self)
        self.bridge.happened.connect(self._device_event)
        self._show_state()

    # -- actions ------------------------------------------------------------------
    def send(self) -> None:
        text = self.text.text().strip()
        if not text:
            return
        contact = self.device.topology.user(self.recipient.currentData())
        self.text.clear()
        session = self.session
        if session is not None and session.state is SessionState.ESTABLISHED and (
                session.peer_uri == contact.cpm_uri or session.members):
            self.run_in_lab(_call(self.device.sessions.send, session, text))   # in the session (or group): MSRP
            return
        self.run_in_lab(self.device.send_message(contact, text))

    # -- sessions ---------------------------------------------------------------------
    def start_session(self) -> None:
        if self.device.sessions is None or self.recipient.currentData() is None:
            return
        if self.session is not None and self.session.is_open:
            return   # one session at a time on this phone
        contact = self.device.topology.user(self.recipient.currentData())
        self.run_in_lab(self.device.sessions.start_session(contact))

    def start_group(self, user_ids: list[str]) -> None:
        if self.device.sessions is None or (self.session is not None and self.session.is_open):
            return   # one session at a time on this phone
        members = [self.device.topology.user(user_id) for user_id in user_ids]
        self.run_in_lab(self.device.sessions.start_group(members))

    def accept_session(self) -> None:
        if self.session is not None and self.session.state is SessionState.INCOMING:
            self.session_banner.hide()
            self.run_in_lab(self.device.sessions.accept(self.session))

    def decline_session(self) -> None:
        if self.session is not None and self.session.state is SessionState.INCOMING:
            self.session_banner.hide()
            self.run_in_lab(_call(self.device.sessions.decline, self.session))

    def end_session(self) -> None:
        if self.session is not None and self.session.is_open:
            self.run_in_lab(self.device.sessions.end(self.session))

    def _session_changed(self, session) -> None:
        if self.session is not None and session is not self.session and self.session.is_open \
                and not session.is_open:
            return   # an old session's late news does not hide the live one
        self.session = session
        if session.state is SessionState.INCOMING:
            self.session_banner_label.setText(
                f"{session.peer_name} invites you to a group chat with {', '.join(m.name for m in session.members)}"
                if session.members else f"{session.peer_name} invites you to a chat session")
            self.session_banner.show()
        else:
            self.session_banner.hide()
        self.session_line.setText(session.describe())
        self.session_row.show()
        self.end_button.setEnabled(session.is_open)
        self.end_button.setVisible(session.state is not SessionState.INCOMING)   # the banner answers an invitation
        self.end_button.setText("Cancel" if session.state in (SessionState.INVITING, SessionState.RINGING) else "End")
        self.session_button.setEnabled(not session.is_open)
        self.group_button.setEnabled(not session.is_open)
        if session.state is SessionState.ESTABLISHED and not session.members:
            peer = self.device.topology.user_by_uri(session.peer_uri)
            if peer is not None:
                self.choose_recipient(peer.id)

    def _session_message(self, session, direction: str, text: str) -> None:
        message = ChatMessage(direction, session.peer_uri, session.peer_name, text, "",
                              session.conversation_id or session.call_id, "",
                              status="sent" if direction == "out" else "received", status_detail="MSRP")
        self._add_message(message)

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
    def _device_event(self, event: DeviceEvent) -> None:
        match event:
            case MessageAdded(message):
                self._add_message(message)
            case MessageStatusChanged(message):
                self.model.refresh(message)
            case RegistrationChanged() | ConditionsChanged():
                self._show_state()
            case SessionChanged(session):
                self._session_changed(session)
            case SessionMessageAdded(session, direction, text):
                self._session_message(session, direction, text)

    def _add_message(self, message) -> None:
        key = message.conversation_id
        if key not in self._conversations:
            self._conversations[key] = []   # the newest history.KEPT of this conversation
            item = QListWidgetItem(message.peer_name)
            item.setData(Qt.ItemDataRole.UserRole, key)
            self.conversation_list.addItem(item)
        history.keep(self._conversations[key], message)
        if key == self._open_conversation:
            self.model.append(message)
            self.chat.scrollToBottom()
        elif message.direction == "out" or self._open_conversation is None:
            self._open(key)    # shows the whole conversation, this message included
        if key == self._open_conversation:
            self.messageShown.emit(message)
            self._seen([message])
        self._label_conversations()

    def _seen(self, messages) -> None:
        """What the open conversation shows on screen has been seen: a display notification goes
        for each incoming message whose sender asked (an email sender's MDN comes of it)."""
        if not self.isVisible():
            return
        for message in messages:
            if message.direction == "in" and not message.read and "display" in message.disposition:
                self.run_in_lab(self.device.read(message))

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
        self._seen(self._conversations.get(key, []))
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
        set_pill(self.status_pill, registered, "● CPM" if registered else "○ offline",
                 "Registered to CPM" if registered else "Not registered to CPM")

    def conversation_messages(self) -> list:
        return self.model.messages()


async def _call(fn, *args):
    """A plain function run on the lab loop (run_in_lab takes coroutines)."""
    return fn(*args)
