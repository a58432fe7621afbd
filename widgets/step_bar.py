"""The step bar: in step mode, above the ladder, the hop that waits and what it will do.

Large enough to read from the back of a room: who sends what to whom, the seed step it
performs in the seed's own words, and why. Message data is shown as plain text.
"""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout

from iwlab.widgets.plain import plain_label


class StepBar(QFrame):
    nextRequested = Signal()
    backRequested = Signal()
    stopRequested = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("stepBar")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.hop_label = plain_label("")
        self.hop_label.setObjectName("stepHop")
        self.seed_label = plain_label("")
        self.seed_label.setObjectName("stepSeed")
        self.why_label = plain_label("")
        self.count_label = QLabel("")
        self.next_button = QPushButton("Next hop  ⏭   (Space / →)")
        self.next_button.setObjectName("stepNext")
        self.next_button.clicked.connect(self.nextRequested)
        self.back_button = QPushButton("⏮  Back  (←)")
        self.back_button.clicked.connect(self.backRequested)
        self.stop_button = QPushButton("Stop stepping")
        self.stop_button.clicked.connect(self.stopRequested)
        for label in (self.hop_label, self.seed_label, self.why_label):
            # Wrapped, and never wider than the ladder: a long hop must not push the device columns away.
            label.setWordWrap(True)
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        texts = QVBoxLayout()
        texts.addWidget(self.hop_label)
        texts.addWidget(self.seed_label)
        texts.addWidget(self.why_label)
        buttons = QVBoxLayout()
        buttons.addWidget(self.next_button)
        row = QHBoxLayout()
        row.addWidget(self.back_button)
        row.addWidget(self.stop_button)
        buttons.addLayout(row)
        buttons.addWidget(self.count_label)
        buttons.addStretch(1)
        layout = QHBoxLayout(self)
        layout.addLayout(texts, 1)
        layout.addLayout(buttons)
        self.hide()

    def show_waiting(self, title: str, seed: str, seed_text: str, why: str, hops_done: int) -> None:
        self.hop_label.setText(title)
        self.seed_label.setText(f"{seed}: “{seed_text}”" if seed else "")
        self.seed_label.setVisible(bool(seed))
        self.why_label.setText(why)
        self.next_button.setEnabled(True)
        self.back_button.setEnabled(hops_done > 0)
        self.count_label.setText(f"{hops_done} hop(s) stepped")

    def show_nothing_waiting(self, hops_done: int) -> None:
        self.hop_label.setText("The world waits: do something in a phone, a handset or the mail client")
        self.seed_label.setVisible(False)
        self.why_label.setText("Every PDU it sends will wait here until you press Next; timers stand still.")
        self.next_button.setEnabled(False)
        self.back_button.setEnabled(hops_done > 0)
        self.count_label.setText(f"{hops_done} hop(s) stepped")
