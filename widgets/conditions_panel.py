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
    box.setMinimumWidth(150)
    return box


class ConditionsPanel(QWidget):
    commandRequested = Signal(str)      # a console command, run on the lab by the window

    def __init__(self, links: list[str], phones: dict[str, str]) -> None:
        """links: whose SMPP link can be cut (IWF node names, handsets' user ids); phones: the
        simulated CPM phones that can be made to answer nothing (user id -> name)."""
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
        self.drop_every = _spin(100, "", "never")
        self.drop_every.setPrefix("1 request in ")
        self.drop_every.valueChanged.connect(self._drop_every_changed)
        form.addRow("Cut each link at", self.drop_every)
        self.refuse_seconds = _spin(3600, " s", "")
        self.refuse_seconds.setValue(10)
        self.refuse_button = QPushButton("Refuse binds (ESME_RBINDFAIL)")
        self.refuse_button.clicked.connect(lambda: self._ask(f"smsc refuse-binds {self.refuse_seconds.value()}"))
        refuse = QHBoxLayout()
        refuse.addWidget(QLabel("For"))
        refuse.addWidget(self.refuse_seconds)
        refuse.addWidget(self.refuse_button, 1)
        form.addRow("Binds", refuse)

        self.busy_seconds = _spin(3600, " s", "")
        self.busy_seconds.setValue(30)
        self.busy_button = QPushButton("Busy (451 4.3.2)")
        self.busy_button.clicked.connect(lambda: self._ask(f"mail busy {self.busy_seconds.value()}"))
        self.full_button = QPushButton("Full (452 4.3.1)")
        self.full_button.clicked.connect(lambda: self._ask(f"mail busy {self.busy_seconds.value()} 452"))
        self.not_busy_button = QPushButton("Not busy")
        self.not_busy_button.clicked.connect(lambda: self._ask("mail busy 0"))
        self.mail_delay = _spin(10_000, " ms", "no delay")
        self.mail_jitter = _spin(10_000, " ms", "no jitter")
        for box in (self.mail_delay, self.mail_jitter):
            box.valueChanged.connect(lambda _: self._ask(f"mail delay {self.mail_delay.value()} "
                                                         f"{self.mail_jitter.value()}"))
        mail = QGroupBox("Mail server")
        mail_form = QFormLayout(mail)
        busy = QHBoxLayout()      # on a row of their own: the right column is half the pane
        busy.addWidget(self.busy_button)
        busy.addWidget(self.full_button)
        busy.addWidget(self.not_busy_button)
        busy.addStretch(1)
        mail_form.addRow("Busy for", self.busy_seconds)
        mail_form.addRow("", busy)
        mail_form.addRow("Answer late by", self.mail_delay)
        mail_form.addRow("… plus a random jitter up to", self.mail_jitter)

        self.answering: dict[str, QCheckBox] = {}
        devices = QGroupBox("CPM phones")
        devices_box = QVBoxLayout(devices)
        for user_id, name in phones.items():
            answers = QCheckBox(f"{name}'s phone answers (off: it answers nothing, a hung app)")
            answers.setChecked(True)
            answers.toggled.connect(lambda on, uid=user_id: self._ask(f"state {uid} answering={'yes' if on else 'no'}"))
            self.answering[user_id] = answers
            devices_box.addWidget(answers)

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
        # Two columns, so the whole panel fits the pane below the ladder: the SMSC's many
        # conditions on the left, the IWF, the mail server and the phones on the right.
        right = QVBoxLayout()
        for group in (iwf, mail, devices):
            right.addWidget(group)
        right.addStretch(1)
        columns = QHBoxLayout()
        columns.addWidget(smsc, 1)
        columns.addLayout(right, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addLayout(columns)
        layout.addStretch(1)

    def show_summary(self, text: str, settings=None) -> None:
        """What the lab says is set now; settings (its throttle_every, queue_full_every, delay_ms,
        jitter_ms, ordering) put the controls back in step with it (a new lab, a refused change)."""
        self.summary.setText(text)
        if settings is None:
            return
        for box, value in ((self.throttle, settings.throttle_every), (self.queue_full, settings.queue_full_every),
                           (self.delay, settings.delay_ms), (self.jitter, settings.jitter_ms),
                           (self.drop_every, settings.drop_every), (self.mail_delay, settings.mail_delay_ms),
                           (self.mail_jitter, settings.mail_jitter_ms)):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)
        checks = [(self.ordering, settings.ordering)] + [
            (box, user_id not in settings.not_answering) for user_id, box in self.answering.items()]
        for check, on in checks:
            check.blockSignals(True)
            check.setChecked(on)
            check.blockSignals(False)
        self.ordering_warning.setVisible(not settings.ordering)

    def _drop_every_changed(self, every: int) -> None:
        if every == 1:        # at 1 no request would ever be taken: the next useful value
            self.drop_every.setValue(2)
            return
        self._ask(f"smsc drop-every {every}")

    def _ordering_toggled(self, on: bool) -> None:
        self.ordering_warning.setVisible(not on)
        self._ask(f"ordering {'on' if on else 'off'}")

    def _ask(self, command: str) -> None:
        self.commandRequested.emit(command)
