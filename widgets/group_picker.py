"""Who is in a new group chat: a row of the phone's contacts to tick, and Start (inline, never a
modal dialog: qasync). People, never technologies: the network reaches each as it can."""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QWidget


class GroupPicker(QWidget):
    started = Signal(list)      # the user ids ticked

    def __init__(self, contacts, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("groupPicker")
        self.boxes: dict[str, QCheckBox] = {}
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Group with"))
        for contact in contacts:
            box = self.boxes[contact.id] = QCheckBox(contact.name)
            box.toggled.connect(self._ticked)
            row.addWidget(box)
        row.addStretch(1)
        self.start_button = QPushButton("Start group")
        self.start_button.setObjectName("startGroup")
        self.start_button.setToolTip("One invitation to your operator's conference factory, with everyone ticked")
        self.start_button.clicked.connect(self._start)
        row.addWidget(self.start_button)
        self._ticked()

    def chosen(self) -> list[str]:
        return [user_id for user_id, box in self.boxes.items() if box.isChecked()]

    def _ticked(self) -> None:
        self.start_button.setEnabled(len(self.chosen()) >= 1)

    def _start(self) -> None:
        chosen = self.chosen()
        if chosen:
            for box in self.boxes.values():
                box.setChecked(False)
            self.hide()
            self.started.emit(chosen)
