"""The conditions panel: what the lab is told to suffer, set while it runs.

Each control asks for one change as the console command `iwlab serve` reads ("smsc throttle 2",
"ordering off": backends/lab/control.py), so the panel and the console are one language; the
window runs it on the lab and `show_summary` shows what is set now, as the lab says it.
The ordering switch is a demonstration and says so in red while it is off.
"""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from iwlab.widgets.plain import plain_label


def _spin(maximum: int, suffix: str, off: str = "off") -> QSpinBox:
    box = QSpinBox()
    box.setRange(0, maximum)
    box.setSuffix(suffix)
    box.setSpecialValueText(off)      # 0 reads as "off"
    box.setKeyboardTracking(False)    # one change per edit, not per digit typed
    return box


class ConditionsPanel(QWidget):
    commandRequested = Signal(str)      # a console command, run on the lab by the window

    def __init__(self, links: list[str]) -> None:
        """links: whose SMPP link can be cut (IWF node names, handsets' user ids)."""
        super().__init__()
        self.throttle = _spin(100, "", "off")
        self.throttle.setPrefix("1 in ")
        self.queue_full = _spin(100, "", "off")
        self.queue_full.setPrefix("1 in ")
        self.delay = _spin(10_000, " ms", "no delay")
        self.jitter = _spin(10_000, " ms", "no jitter")
        self.throttle.valueChanged.connect(lambda n: self._ask(f"smsc throttle {n}"))
        self.queue_full.valueChanged.connect(lambda n: self._ask(f"smsc qfull {n}"))
        for box in (self.delay, self.jitter):
            box.valueChanged.connect(lambda _: self._ask(f"smsc delay {self.delay.value()} {self.jitter.value()}"))
        smsc = QGroupBox("SMSC")
        form = QFormLayout(smsc)
        form.addRow("Throttle (ESME_RTHROTTLED)", self.throttle)
        form.addRow("Queue full (ESME_RMSGQFUL)", self.queue_full)
        form.addRow("Answer late by", self.delay)
        form.addRow("… plus a random jitter up to", self.jitter)
        self.link = QComboBox()
        self.link.addItems(links)
        self.cut_button = QPushButton("Cut this SMPP link now")
        self.cut_button.clicked.connect(lambda: self._ask(f"smsc drop {self.link.currentText()}"))
        cut = QHBoxLayout()
        cut.addWidget(self.link, 1)
        cut.addWidget(self.cut_button)
        form.addRow("Link", cut)

        self.busy_seconds = _spin(3600, " s", "")
        self.busy_seconds.setValue(30)
        self.busy_button = QPushButton("Busy (451 4.3.2)")
        self.busy_button.clicked.connect(lambda: self._ask(f"mail busy {self.busy_seconds.value()}"))
        self.not_busy_button = QPushButton("Not busy")
        self.not_busy_button.clicked.connect(lambda: self._ask("mail busy 0"))
        mail = QGroupBox("Mail server")
        mail_row = QHBoxLayout(mail)
        mail_row.addWidget(QLabel("For"))
        mail_row.addWidget(self.busy_seconds)
        mail_row.addWidget(self.busy_button)
        mail_row.addWidget(self.not_busy_button)
        mail_row.addStretch(1)

        self.ordering = QCheckBox("The IWF keeps each conversation in order")
        self.ordering.setChecked(True)
        self.ordering_warning = QLabel("DEMONSTRATION: ordering off, conversations race (CPM-IOP-xxx-5 fails)")
        self.ordering_warning.setObjectName("demoWarning")
        self.ordering_warning.setVisible(False)
        self.ordering.toggled.connect(self._ordering_toggled)
        iwf = QGroupBox("Interworking function")
        iwf_box = QVBoxLayout(iwf)
        iwf_box.addWidget(self.ordering)
        iwf_box.addWidget(self.ordering_warning)

        self.summary = plain_label("no conditions: the lab runs as it should")
        self.summary.setObjectName("conditionsSummary")
        self.summary.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        for group in (iwf, smsc, mail):     # one column: the pane scrolls down, never sideways
            layout.addWidget(group)
        layout.addStretch(1)

    def show_summary(self, text: str, settings=None) -> None:
        """What the lab says is set now; settings (its throttle_every, queue_full_every, delay_ms,
        jitter_ms, ordering) put the controls back in step with it (a new lab, a refused change)."""
        self.summary.setText(text)
        if settings is None:
            return
        for box, value in ((self.throttle, settings.throttle_every), (self.queue_full, settings.queue_full_every),
                           (self.delay, settings.delay_ms), (self.jitter, settings.jitter_ms)):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)
        self.ordering.blockSignals(True)
        self.ordering.setChecked(settings.ordering)
        self.ordering.blockSignals(False)
        self.ordering_warning.setVisible(not settings.ordering)

    def _ordering_toggled(self, on: bool) -> None:
        self.ordering_warning.setVisible(not on)
        self._ask(f"ordering {'on' if on else 'off'}")

    def _ask(self, command: str) -> None:
        self.commandRequested.emit(command)
