"""Use cases in the window: pick one, Play it at a pace people can follow or
Step it hop by hop with the seed step and an explanation, and see verdicts
per CPM-IOP requirement with links to the ladder rows that prove them.

The scenario runs on the lab's thread (backends.scenarios.ScenarioRun); this
panel only schedules its steps and shows what came back.
"""
from __future__ import annotations

import html
from typing import Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from iwlab.backends.lab.scenarios import (
    Scenario,
    ScenarioError,
    ScenarioRun,
    Verdict,
    load_requirements,
    load_scenarios,
    requirement_verdicts,
)
from iwlab.widgets.plain import plain_label, plain_tooltip

STATE_COLOURS = {"passed": "#1a7f37", "failed": "#d1242f", "not exercised": "#6e7781"}


class ScenarioPanel(QWidget):
    stepDone = Signal(object, int, int)       # (Step, first seq, last seq), from the lab thread
    verdictReady = Signal(object)             # Verdict
    failed = Signal(str)
    highlight = Signal(object)                # set of trace seqs for the ladder
    showRow = Signal(int)                     # a trace seq to select in the ladder

    def __init__(self, run_in_lab: Callable, lab_getter: Callable, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_in_lab = run_in_lab
        self.lab_getter = lab_getter          # the running Lab, or None
        try:
            self.scenarios: dict[str, Scenario] = load_scenarios()
            self.load_error = ""
        except ScenarioError as exc:   # one bad file must not keep the window from opening
            self.scenarios, self.load_error = {}, str(exc)
        self.requirements = load_requirements()
        self.verdicts: dict[str, Verdict] = {}
        self.run: ScenarioRun | None = None
        self.playing = False
        self.pace_ms = 1500

        self.list = QListWidget()
        self.list.setWordWrap(True)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        for scenario in self.scenarios.values():
            item = QListWidgetItem(f"{scenario.id}  {scenario.title}")
            item.setData(Qt.ItemDataRole.UserRole, scenario.id)
            item.setToolTip(plain_tooltip(f"{scenario.use_case}\n{scenario.flow}"))
            self.list.addItem(item)
        self.list.setCurrentRow(0)
        self.list.currentItemChanged.connect(lambda *_: self.reset())

        self.play_button = QPushButton("▶  Play")
        self.step_button = QPushButton("Step ›")
        self.reset_button = QPushButton("Reset")
        self.play_button.clicked.connect(self.play)
        self.step_button.clicked.connect(self.step)
        self.reset_button.clicked.connect(self.reset)

        self.position = plain_label()
        self.position.setObjectName("paneTitle")
        self.position.setWordWrap(True)   # never wider than the window has room for
        self.explain = plain_label()
        self.explain.setWordWrap(True)
        self.explain.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.explain.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        larger = QFont(self.explain.font())
        larger.setPointSizeF(larger.pointSizeF() * 1.15)
        self.explain.setFont(larger)
        self.verdict_label = QLabel()
        self.verdict_label.setTextFormat(Qt.TextFormat.RichText)   # our markup; the details in it are escaped
        self.verdict_label.setWordWrap(True)
        for label in (self.explain, self.verdict_label, self.position):
            # A long unbroken word (an id in a verdict) must never widen the window past the screen.
            label.setMinimumWidth(120)

        self.requirement_tree = QTreeWidget()
        self.requirement_tree.setHeaderLabels(["Requirement", "Verdict", "Trace rows"])
        self.requirement_tree.setRootIsDecorated(False)
        self.requirement_tree.itemActivated.connect(self._requirement_chosen)
        self.requirement_tree.itemClicked.connect(self._requirement_chosen)
        self.requirement_tree.currentItemChanged.connect(lambda item, _: self._show_requirement_text(item))
        # The chosen requirement in the seed's words, always in view (not only in a tooltip).
        self.requirement_text = plain_label("")
        self.requirement_text.setWordWrap(True)
        self.requirement_text.setMinimumWidth(120)
        self.requirement_text.setObjectName("requirementText")

        buttons = QHBoxLayout()
        for button in (self.play_button, self.step_button, self.reset_button):
            buttons.addWidget(button)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.list, 1)
        left_layout.addLayout(buttons)
        middle = QWidget()
        middle_layout = QVBoxLayout(middle)
        middle_layout.setContentsMargins(6, 0, 6, 0)
        middle_layout.addWidget(self.position)
        middle_layout.addWidget(self.explain)
        middle_layout.addStretch(1)
        middle_layout.addWidget(self.verdict_label)
        scroll = QScrollArea()   # a long explanation and verdict scroll rather than overlap
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(middle)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(scroll)
        requirements = QWidget()
        requirements_layout = QVBoxLayout(requirements)
        requirements_layout.setContentsMargins(0, 0, 0, 0)
        requirements_layout.addWidget(self.requirement_tree, 3)
        requirements_layout.addWidget(self.requirement_text, 1)
        split.addWidget(requirements)
        split.setSizes([300, 460, 300])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(split)

        self.stepDone.connect(self._step_done)
        self.verdictReady.connect(self._verdict_ready)
        self.failed.connect(self._failed)
        self._show_requirements()
        self.reset()
        if self.load_error:
            self.explain.setText(f"The use cases could not be loaded: {self.load_error}")

    # -- controls -------------------------------------------------------------------------
    def current(self) -> Scenario | None:
        item = self.list.currentItem()
        return self.scenarios.get(item.data(Qt.ItemDataRole.UserRole)) if item else None

    def reset(self) -> None:
        self.playing = False
        self.run = None
        scenario = self.current()
        self.highlight.emit(set())
        self.verdict_label.setText("")
        if scenario:
            self.position.setText(f"{scenario.id}: {scenario.flow or scenario.title}")
            self.explain.setText("Press Play to run the whole flow, or Step for one action at a time. To go hop by hop, turn on Lab → Step hop by hop (Ctrl+T): every PDU then waits for Next.")
        self._set_busy(False)

    def play(self) -> None:
        self.playing = True
        self.step()

    def step(self) -> None:
        lab = self.lab_getter()
        scenario = self.current()
        if lab is None or scenario is None:
            self.failed.emit("Start the lab first")
            return
        if self.run is None or self.run.finished or self.run.lab is not lab:   # a restarted lab: start over
            self.run = ScenarioRun(lab, scenario)
        run = self.run
        self._set_busy(True)
        index = run.position
        self.position.setText(f"{scenario.id}  step {index + 1} of {len(scenario.steps)}  "
                              f"(seed step {scenario.steps[index].seed_step})")
        self.explain.setText(scenario.steps[index].explain)

        async def one_step():
            step = await run.step()
            first, last = run.rows_of_step[-1]
            self.stepDone.emit(step, first, last)
            if run.finished:
                verdict = await run.conclude()
                await run.finish()      # the lab is given back as the scenario found it
                self.verdictReady.emit(verdict)
        future = self.run_in_lab(one_step())
        if future is not None:
            future.add_done_callback(self._report_failure)

    def _report_failure(self, future) -> None:
        """On the lab thread: a signal carries the failure to the panel."""
        if not future.cancelled() and future.exception() is not None:
            self.failed.emit(str(future.exception()))

    # -- results ----------------------------------------------------------------------------
    def _step_done(self, step, first: int, last: int) -> None:
        self.highlight.emit(set(range(first, last + 1)))
        if last >= first:
            self.showRow.emit(first)
        if self.run is not None and not self.run.finished:
            self._set_busy(False)
            if self.playing:
                QTimer.singleShot(self.pace_ms, self._continue)

    def _continue(self) -> None:
        if self.playing and self.run is not None and not self.run.finished:
            self.step()

    def _verdict_ready(self, verdict: Verdict) -> None:
        self.playing = False
        self.verdicts[verdict.scenario.id] = verdict
        lines = [f"<b style='color:{STATE_COLOURS['passed' if verdict.passed else 'failed']}'>"
                 f"{'PASSED' if verdict.passed else 'FAILED'}</b>"]
        for result in verdict.results:
            mark = "✔" if result.passed else "✘"
            # The detail quotes what was on the wire: escaped, in the label's own markup.
            lines.append(html.escape(f"{mark} [{', '.join(result.check.requirements)}] {result.detail}"))
        self.verdict_label.setText("<br>".join(lines))
        self._show_requirements()
        self._set_busy(False)

    def _failed(self, text: str) -> None:
        self.playing = False
        self.verdict_label.setText(f"<b style='color:#d1242f'>Could not run:</b> {html.escape(text)}")
        self._set_busy(False)

    def _show_requirements(self) -> None:
        chosen = self.requirement_tree.currentItem()
        chosen_id = chosen.text(0) if chosen is not None else None
        self.requirement_tree.clear()
        table = requirement_verdicts(list(self.verdicts.values()), self.requirements)
        for rid, text in self.requirements.items():
            state, rows = table[rid]
            item = QTreeWidgetItem([rid, state, ", ".join(map(str, sorted(set(rows))[:8]))])
            item.setToolTip(0, plain_tooltip(text))
            item.setForeground(1, QColor(STATE_COLOURS[state]))
            item.setData(0, Qt.ItemDataRole.UserRole, sorted(set(rows)))
            self.requirement_tree.addTopLevelItem(item)
            if rid == chosen_id:
                self.requirement_tree.setCurrentItem(item)
        self.requirement_tree.resizeColumnToContents(0)
        first = self.requirement_tree.topLevelItem(0)
        if first is not None and self.requirement_tree.currentItem() is None:
            self.requirement_tree.setCurrentItem(first)

    def _show_requirement_text(self, item: QTreeWidgetItem | None) -> None:
        if item is not None:
            rid = item.text(0)
            self.requirement_text.setText(f"{rid}: {self.requirements.get(rid, '')}")

    def _requirement_chosen(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        rows = item.data(0, Qt.ItemDataRole.UserRole) or []
        if rows:
            self.highlight.emit(set(rows))
            self.showRow.emit(rows[0])

    def _set_busy(self, busy: bool) -> None:
        finished = self.run is not None and self.run.finished
        self.play_button.setEnabled(not busy and not finished)
        self.step_button.setEnabled(not busy and not finished)
        self.reset_button.setEnabled(not busy)   # never two runs at once
        self.list.setEnabled(not busy)
