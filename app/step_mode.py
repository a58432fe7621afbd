"""Step mode in the window: Lab → Step hop by hop, then Next (Space or →) lets one hop happen.

The stepping itself is the lab's (backends/lab/stepper.py, on the lab thread); this keeps the
actions and the step bar in step with it. Results come back from the lab thread by a signal.
While stepping, what people do in the phones only reaches the gate, so the bar asks, a few
times a second, what waits there now.
"""
from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMainWindow

from iwlab.app.lab_controller import LabController
from iwlab.app.notices import Notices
from iwlab.backends.lab.hop_stories import HopStories
from iwlab.backends.lab.lab_thread import LabThread
from iwlab.backends.lab.stepper import HopStepper, StepResult
from iwlab.widgets.step_bar import StepBar


class StepMode(QObject):
    stepped = Signal(object)     # a StepResult, from the lab thread

    def __init__(self, window: QMainWindow, controller: LabController, bar: StepBar, notices: Notices) -> None:
        super().__init__(window)
        self._controller = controller
        self._bar = bar
        self._notices = notices
        self._stories = HopStories(controller.topology)
        self._stepper: HopStepper | None = None
        self.hops_done = 0
        self.toggle_action = QAction("Step hop by hop", window, checkable=True, shortcut=QKeySequence("Ctrl+T"))
        self.toggle_action.toggled.connect(self._toggled)
        self.next_action = QAction("Next hop", window, enabled=False, triggered=self.next_hop)
        self.next_action.setShortcuts([QKeySequence("Space"), QKeySequence("Right")])
        window.addAction(self.next_action)      # its shortcuts work wherever the focus is
        bar.nextRequested.connect(self.next_hop)
        bar.stopRequested.connect(lambda: self.toggle_action.setChecked(False))
        self.stepped.connect(self._show)
        self._poll = QTimer(self)
        self._poll.setInterval(250)
        self._poll.timeout.connect(self._ask_waiting)
        controller.attached.connect(self._attached)
        controller.detached.connect(self._detached)
        self.toggle_action.setEnabled(controller.running)

    @property
    def stepping(self) -> bool:
        return self.toggle_action.isChecked()

    def next_hop(self) -> None:
        if self._stepper is None or not self.stepping:
            return
        self._submit(self._stepper.next_hop())

    # -- inside ----------------------------------------------------------------------------
    def _attached(self, runner: LabThread) -> None:
        self._stepper = HopStepper(runner.lab.trace.gate)
        self.toggle_action.setEnabled(True)

    def _detached(self) -> None:
        self._stepper = None     # the lab opened its gate and let its clock run as it stopped
        self.toggle_action.setChecked(False)
        self.toggle_action.setEnabled(False)

    def _toggled(self, on: bool) -> None:
        self.next_action.setEnabled(on)
        self._bar.setVisible(on)
        if self._stepper is None:
            return
        if on:
            self.hops_done = 0
            self._bar.show_nothing_waiting(0)
            self._submit(self._stepper.start())
            self._poll.start()
            self._notices.status("Step mode: every PDU waits for Next (Space or →); timers stand still", 6000)
        else:
            self._poll.stop()
            self._controller.run_in_lab(self._stepper.stop())
            self._notices.status("Step mode off: the lab runs freely", 4000)

    def _ask_waiting(self) -> None:
        if self._stepper is not None and self.stepping:
            self._submit(self._stepper.waiting())

    def _submit(self, coro) -> None:
        future = self._controller.run_in_lab(coro)
        if future is not None:
            future.add_done_callback(
                lambda f: None if f.cancelled() or f.exception() else self.stepped.emit(f.result()))

    def _show(self, result: StepResult) -> None:
        if not self.stepping:
            return
        if result.went is not None:
            self.hops_done += 1
        if result.waiting is None:
            self._bar.show_nothing_waiting(self.hops_done)
            return
        story = self._stories.story(result.waiting)
        self._bar.show_waiting(result.waiting.line(), story.seed, story.seed_text, story.why, self.hops_done)
