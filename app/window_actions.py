"""The window's toolbar and menus. What each command does lives with its owner (the lab
controller, the ladder, the trace files, the look); this builds the commands, puts them where
people look for them, and keeps Start/Stop in step with the lab.
"""
from __future__ import annotations

import asyncio

from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QComboBox, QLabel, QMainWindow, QToolBar

from iwlab.app.lab_controller import LabController
from iwlab.app.look import Look
from iwlab.app.notices import Notices
from iwlab.app.step_mode import StepMode
from iwlab.app.trace_files import TraceFiles
from iwlab.widgets import theme
from iwlab.widgets.ladder import LadderView

PROTOCOL_FILTERS = {"All protocols": None, "SIP only": {"SIP"}, "SMPP only": {"SMPP"},
                    "SIP + SMPP": {"SIP", "SMPP"}}


class WindowActions:
    def __init__(self, window: QMainWindow, *, controller: LabController, ladder: LadderView,
                 trace_files: TraceFiles, look: Look, notices: Notices, step_mode: StepMode) -> None:
        self._controller = controller
        self.watching = False   # the window shows a lab that runs elsewhere (app/remote_watch.py)
        self._look = look
        self._notices = notices
        # Text glyphs rather than the style's icons: those are black on a dark theme.
        self.start_action = QAction("▶  Start lab", window,
                                    triggered=lambda: asyncio.ensure_future(controller.start_async()))
        self.stop_action = QAction("■  Stop lab", window,
                                   triggered=lambda: asyncio.ensure_future(controller.stop_async()))
        self.pause_action = QAction("❚❚  Pause trace", window, checkable=True, shortcut=QKeySequence("Ctrl+P"))
        self.pause_action.toggled.connect(ladder.set_paused)
        self.clear_action = QAction("Clear trace", window, shortcut=QKeySequence("Ctrl+L"), triggered=ladder.clear)
        self.zoom_in_action = QAction("A+", window, shortcut=QKeySequence.StandardKey.ZoomIn,
                                      triggered=lambda: look.set_zoom(theme.next_zoom(look.zoom, +1)))
        self.zoom_in_action.setShortcuts([QKeySequence("Ctrl++"), QKeySequence("Ctrl+=")])
        self.zoom_out_action = QAction("A−", window, shortcut=QKeySequence.StandardKey.ZoomOut,
                                       triggered=lambda: look.set_zoom(theme.next_zoom(look.zoom, -1)))
        self.zoom_reset_action = QAction("Actual size", window, shortcut=QKeySequence("Ctrl+0"),
                                         triggered=lambda: look.set_zoom(1.0))
        self.protocol_filter = QComboBox()
        self.protocol_filter.addItems(list(PROTOCOL_FILTERS))
        self.protocol_filter.currentTextChanged.connect(
            lambda text: ladder.set_protocol_filter(PROTOCOL_FILTERS[text]))
        self.theme_box = QComboBox()
        self.theme_box.addItems([t.capitalize() for t in theme.THEMES])
        self.theme_box.setCurrentText(look.theme_name.capitalize())
        self.theme_box.currentTextChanged.connect(lambda text: look.set_theme(text.lower()))
        self.all_conversations_action = QAction("Show all conversations", window, enabled=False,
                                                triggered=lambda: ladder.set_conversation_filter(None))
        ladder.conversationFilterChanged.connect(lambda key: self.all_conversations_action.setEnabled(bool(key)))
        self.thread_policy_actions: dict[str, QAction] = {}
        self.step_action = step_mode.toggle_action

        self._build_toolbar(window)
        self._build_menus(window, trace_files)
        controller.changed.connect(self.update)
        self.update()

    def _build_toolbar(self, window: QMainWindow) -> None:
        bar = QToolBar("Lab")
        bar.setObjectName("mainToolbar")
        bar.setMovable(False)
        window.addToolBar(bar)
        for action in (self.start_action, self.stop_action):
            bar.addAction(action)
        bar.addAction(self.step_action)
        bar.addSeparator()
        bar.addAction(self.pause_action)
        bar.addAction(self.clear_action)
        bar.addWidget(self.protocol_filter)
        bar.addSeparator()
        bar.addWidget(QLabel(" Theme "))
        bar.addWidget(self.theme_box)
        bar.addAction(self.zoom_out_action)
        bar.addAction(self.zoom_in_action)
        bar.addAction(self.all_conversations_action)

    def _build_menus(self, window: QMainWindow, trace_files: TraceFiles) -> None:
        file_menu = window.menuBar().addMenu("&File")
        file_menu.addAction(QAction("&Open trace…", window, shortcut=QKeySequence.StandardKey.Open,
                                    triggered=lambda: trace_files.ask_path("open")))
        file_menu.addAction(QAction("&Save trace…", window, shortcut=QKeySequence.StandardKey.Save,
                                    triggered=lambda: trace_files.ask_path("save")))
        file_menu.addAction(QAction("&Export trace as pcapng…", window, shortcut=QKeySequence("Ctrl+E"),
                                    triggered=trace_files.ask_export_path))
        lab_menu = window.menuBar().addMenu("&Lab")
        lab_menu.addAction(self.start_action)
        lab_menu.addAction(self.stop_action)
        lab_menu.addAction(self.step_action)
        lab_menu.addAction(QAction("Reset lab state (forget stored messages and mailboxes)", window,
                                   triggered=lambda: asyncio.ensure_future(self._controller.reset_state())))
        lab_menu.addSeparator()
        lab_menu.addAction(QAction("&Quit", window, shortcut=QKeySequence.StandardKey.Quit, triggered=window.close))
        threads_menu = lab_menu.addMenu("SMS &threads")
        policies = QActionGroup(window)
        for policy, label in (("last", "Reply joins the latest conversation"),
                              ("pool", "One originating number per conversation (pool)")):
            action = QAction(label, window, checkable=True)
            action.triggered.connect(lambda _=False, p=policy: self.set_thread_policy(p))
            policies.addAction(action)
            threads_menu.addAction(action)
            self.thread_policy_actions[policy] = action
        iwf_operator = self._controller.topology.iwf_operator()
        current = iwf_operator.iwf.thread_policy if iwf_operator else "last"
        self.thread_policy_actions[current].setChecked(True)
        self.thread_policy_actions["pool"].setEnabled(bool(iwf_operator and iwf_operator.iwf.number_pool))
        trace_menu = window.menuBar().addMenu("&Trace")
        trace_menu.addAction(self.pause_action)
        trace_menu.addAction(self.clear_action)
        view_menu = window.menuBar().addMenu("&View")
        themes = QActionGroup(window)
        for name in theme.THEMES:
            action = QAction(f"{name.capitalize()} theme", window, checkable=True,
                             checked=name == self._look.theme_name)
            action.triggered.connect(lambda _=False, n=name: self.theme_box.setCurrentText(n.capitalize()))
            themes.addAction(action)
            view_menu.addAction(action)
        view_menu.addSeparator()
        self.trainer_action = QAction("Trainer layout (use cases as large as the ladder)", window, checkable=True,
                                      shortcut=QKeySequence("Ctrl+Shift+T"))
        self.trainer_action.toggled.connect(window.trainer_layout)   # type: ignore[attr-defined]
        view_menu.addAction(self.trainer_action)
        view_menu.addSeparator()
        for action in (self.zoom_in_action, self.zoom_out_action, self.zoom_reset_action):
            view_menu.addAction(action)

    def set_thread_policy(self, policy: str) -> None:
        self._controller.set_thread_policy(policy)
        self.thread_policy_actions[policy].setChecked(True)
        self._notices.status(f"SMS thread policy: {policy}", 4000)

    def update(self) -> None:
        """Start while stopped (not while a start is under way), Stop while running; neither while
        the window watches a lab elsewhere (its own would mix into that lab's ladder)."""
        self.start_action.setEnabled(not self._controller.running and not self._controller.starting
                                     and not self.watching)
        self.stop_action.setEnabled(self._controller.running)
