"""Step mode in the window: Lab → Step hop by hop, then Next (Space or →) lets one hop happen.

Back (← or Backspace) walks back through the hops already stepped, replaying them from the
trace: the bar tells each one's story again and the ladder selects its row; Next walks
forward again, and past the last one lets the next hop happen. (The world itself is not
rewound: what a hop delivered stays delivered.)

The stepping itself is the lab's (backends/lab/stepper.py, on the lab thread); this keeps the
actions and the step bar in step with it. Results come back from the lab thread by a signal.
While stepping, what people do in the phones only reaches the gate, so the bar asks, a few
times a second, what waits there now.
"""
from __future__ import annotations

from typing import Callable

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
    stepped = Signal(object)     # (stepping session, StepResult), from the lab thread

    def __init__(self, window: QMainWindow, controller: LabController, bar: StepBar, notices: Notices,
                 show_row: Callable[[int], object]) -> None:
        """show_row(seq): select a trace row on the ladder."""
        super().__init__(window)
        self._controller = controller
        self._bar = bar
        self._notices = notices
        self._show_row = show_row
        self._stories = HopStories(controller.topology)
        self._stepper: HopStepper | None = None
        self.toggle_action = QAction("Step hop by hop", window, checkable=True, shortcut=QKeySequence("Ctrl+T"))
        self.toggle_action.toggled.connect(self._toggled)
        self.next_action = QAction("Next hop", window, enabled=False, triggered=self.next_hop)
        self.next_action.setShortcuts([QKeySequence("Space"), QKeySequence("Right")])
        self.back_action = QAction("Previous hop", window, enabled=False, triggered=self.previous_hop)
        self.back_action.setShortcuts([QKeySequence("Left"), QKeySequence("Backspace")])
        for action in (self.next_action, self.back_action):
            window.addAction(action)      # their shortcuts work wherever the focus is
        self._done: list[StepResult] = []     # the hops stepped, in order (for Back)
        self._review: int | None = None       # index into _done while walking back
        self._waiting: StepResult | None = None
        self._session = 0                     # which stepping (on/off) a result belongs to
        bar.nextRequested.connect(self.next_hop)
        bar.backRequested.connect(self.previous_hop)
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

    @property
    def hops_done(self) -> int:
        return len(self._done)

    def next_hop(self) -> None:
        if self._stepper is None or not self.stepping:
            return
        if self._review is not None:          # walking forward through hops already stepped
            self._review += 1
            if self._review < len(self._done):
                self._show_review()
                return
            self._review = None
            self._show_current()
            return
        self._submit(self._stepper.next_hop())

    def previous_hop(self) -> None:
        if not self.stepping or not self._done:
            return
        self._review = len(self._done) - 1 if self._review is None else max(self._review - 1, 0)
        self._show_review()

    # -- inside ----------------------------------------------------------------------------
    def _attached(self, runner: LabThread) -> None:
        self._stepper = HopStepper(runner.lab.trace)
        self.toggle_action.setEnabled(True)

    def _detached(self) -> None:
        self._stepper = None     # the lab opened its gate and let its clock run as it stopped
        self._poll.stop()
        self.toggle_action.setChecked(False)
        self.toggle_action.setEnabled(False)

    def _toggled(self, on: bool) -> None:
        self.next_action.setEnabled(on)
        self.back_action.setEnabled(on)
        self._bar.setVisible(on)
        if self._stepper is None:
            return
        if on:
            self._session += 1
            self._done, self._review, self._waiting = [], None, None
            self._bar.show_nothing_waiting(0)
            self._submit(self._stepper.start())
            self._poll.start()
            self._notices.status("Step mode: every PDU waits for Next (Space or →); timers stand still", 6000)
        else:
            self._poll.stop()
            self._controller.run_in_lab(self._stepper.stop())
            self._notices.status("Step mode off: the lab runs freely", 4000)

    def _ask_waiting(self) -> None:
        if self._stepper is not None and self.stepping and self._review is None:
            self._submit(self._stepper.waiting())

    def _submit(self, coro) -> None:
        future = self._controller.run_in_lab(coro)
        if future is not None:
            session = self._session
            future.add_done_callback(
                lambda f: None if f.cancelled() or f.exception() else self.stepped.emit((session, f.result())))

    def _show(self, tagged: tuple[int, StepResult]) -> None:
        session, result = tagged
        if not self.stepping or session != self._session:    # an answer from an earlier stepping
            return
        if result.went is not None:
            self._done.append(result)
        self._waiting = result
        if self._review is None:
            self._show_current()

    def _show_current(self) -> None:
        waiting = self._waiting.waiting if self._waiting else None
        if waiting is None:
            self._bar.show_nothing_waiting(self.hops_done)
            return
        story = self._stories.story(waiting)
        self._bar.show_waiting(f"Next hop:  {waiting.line()}", story.seed, story.seed_text, story.why, self.hops_done)

    def _show_review(self) -> None:
        assert self._review is not None
        done = self._done[self._review]
        assert done.went is not None
        story = self._stories.story(done.went)
        self._bar.show_waiting(f"Hop {self._review + 1} of {self.hops_done} (replayed):  {done.went.line()}",
                               story.seed, story.seed_text, story.why, self.hops_done)
        self._show_row(done.seq)
