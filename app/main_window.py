"""The lab window: CPM phones on the left, legacy devices on the right, the
bridge in the middle as a live ladder with a PDU inspector under it.

The lab runs on its own asyncio thread (backends.lab_thread): protocol work
never shares a thread with painting. The window's own loop is qasync, so
slots can await the lab (start/stop) without freezing the window.
"""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QToolBar,
    QTreeWidgetItemIterator,
    QVBoxLayout,
    QWidget,
)

from iwlab.app.headless import ladder_nodes
from iwlab.backends.lab.control import run_command
from iwlab.backends.lab.lab import Lab
from iwlab.backends.lab.lab_thread import LabThread
from iwlab.backends.lab.report import read_trace_json, write_trace_json
from iwlab.backends.topology import Topology
from iwlab.widgets import theme
from iwlab.widgets.cpm_phone import CpmPhone
from iwlab.widgets.email_client import EmailClientWidget
from iwlab.widgets.inspector import InspectorView
from iwlab.widgets.ladder import LadderView
from iwlab.widgets.scenario_panel import ScenarioPanel
from iwlab.widgets.sms_handset import SmsHandsetWidget

PROTOCOL_FILTERS = {"All protocols": None, "SIP only": {"SIP"}, "SMPP only": {"SMPP"},
                    "SIP + SMPP": {"SIP", "SMPP"}}


class LabWindow(QMainWindow):
    labError = Signal(str)   # an action in the lab failed (emitted from the lab thread)
    labInfo = Signal(str)    # what a change did, e.g. the route it leads to (from the lab thread)

    def __init__(self, topology: Topology, *, theme_name: str | None = None, zoom: float | None = None) -> None:
        super().__init__()
        self.topology = topology
        self.runner: LabThread | None = None
        self.settings = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "iwlab", "iwlab")
        self.theme_name = theme_name or str(self.settings.value("theme", "system"))
        self.zoom = float(zoom or self.settings.value("zoom", 1.0))
        self.setWindowTitle("iwlab — CPM ↔ SMS / email interworking lab")
        self.phones: dict[str, QWidget] = {}
        self._busy = False              # an async start/stop is running
        self._close_requested = False
        self.device_scrolls: list[QScrollArea] = []

        self.ladder = LadderView(ladder_nodes(topology))
        self.inspector = InspectorView()
        self.ladder.eventSelected.connect(self.inspector.show_event)

        left_column, self.left = self._device_column("CPM users")
        right_column, self.right = self._device_column("Legacy devices")
        centre = QSplitter(Qt.Orientation.Vertical)
        centre.addWidget(self._titled("Interworking ladder — every PDU on the wire", self.ladder))
        self.scenarios = ScenarioPanel(self.run_in_lab, lambda: self.runner.lab if self.runner else None)
        self.scenarios.highlight.connect(self.ladder.highlight_seqs)
        self.scenarios.showRow.connect(self.ladder.select_seq)
        self.scenarios.failed.connect(lambda text: self.statusBar().showMessage(f"Failed: {text}", 8000))
        self.bottom_tabs = QTabWidget()
        self.bottom_tabs.addTab(self.inspector, "Inspector")
        self.bottom_tabs.addTab(self.scenarios, "Use cases and requirements")
        centre.addWidget(self.bottom_tabs)
        centre.setStretchFactor(0, 3)
        centre.setStretchFactor(1, 1)
        centre.setSizes([700, 260])   # the ladder is the show; the inspector is for the curious
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left_column)
        self.splitter.addWidget(centre)
        self.splitter.addWidget(right_column)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setStretchFactor(2, 0)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setObjectName("centre")
        self.setCentralWidget(self.splitter)

        self._build_actions()
        self.labError.connect(lambda text: self.statusBar().showMessage(f"Failed: {text}", 8000))
        # Scenarios and the console change people's conditions too: the switches follow.
        self._sync_timer = QTimer(self, interval=500, timeout=self._sync_conditions)
        self.labInfo.connect(lambda text: self.statusBar().showMessage(text, 10000))
        self.endpoints_label = QLabel("Lab stopped")
        self.statusBar().addPermanentWidget(self.endpoints_label)
        self.apply_look()
        self._fit_to_screen()

    def _fit_to_screen(self) -> None:
        """A lab in front of a room uses the whole screen."""
        screen = self.screen().availableGeometry() if self.screen() else None
        if screen is None:
            self.resize(1600, 960)
            return
        self.resize(screen.width(), screen.height())
        self.setWindowState(Qt.WindowState.WindowMaximized)

    def _fit_columns(self) -> None:
        """Device columns never clip a phone: as wide as their widest device needs (zoom included)."""
        for scroll in self.device_scrolls:
            inner = scroll.widget()
            needed = inner.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width()
            column = scroll.parentWidget()
            margins = column.layout().contentsMargins()
            column.setMinimumWidth(max(needed, 300) + margins.left() + margins.right())
        # QSplitter keeps the widths it chose before the phones existed: hand the
        # side columns what they need now and the ladder all the rest.
        sides = [self.splitter.widget(i).minimumWidth() for i in (0, 2)]
        centre = max(self.splitter.width() - sum(sides) - 2 * self.splitter.handleWidth(), 500)
        self.splitter.setSizes([sides[0], centre, sides[1]])

    # -- layout helpers ---------------------------------------------------------------
    def _device_column(self, title: str) -> tuple[QWidget, QVBoxLayout]:
        """A titled, scrollable column; returns it and the layout devices go into."""
        column = QWidget()
        layout = QVBoxLayout(column)
        layout.setContentsMargins(8, 8, 8, 8)
        heading = QLabel(title)
        heading.setObjectName("paneTitle")
        layout.addWidget(heading)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        inner = QWidget()
        devices = QVBoxLayout(inner)
        devices.setContentsMargins(0, 0, 0, 0)
        scroll.setWidget(inner)
        layout.addWidget(scroll, 1)
        self.device_scrolls.append(scroll)
        return column, devices

    @staticmethod
    def _titled(title: str, widget: QWidget) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(4, 6, 4, 0)
        label = QLabel(title)
        label.setObjectName("paneTitle")
        layout.addWidget(label)
        layout.addWidget(widget, 1)
        return box

    def _build_actions(self) -> None:
        bar = QToolBar("Lab")
        bar.setObjectName("mainToolbar")
        bar.setMovable(False)
        self.addToolBar(bar)
        # Text glyphs rather than the style's icons: those are black on a dark theme.
        self.start_action = QAction("▶  Start lab", self,
                                    triggered=lambda: asyncio.ensure_future(self.start_lab_async()))
        self.stop_action = QAction("■  Stop lab", self,
                                   triggered=lambda: asyncio.ensure_future(self.stop_lab_async()))
        self.pause_action = QAction("❚❚  Pause trace", self, checkable=True, shortcut=QKeySequence("Ctrl+P"))
        self.pause_action.toggled.connect(self.ladder.set_paused)
        self.clear_action = QAction("Clear trace", self, shortcut=QKeySequence("Ctrl+L"), triggered=self.ladder.clear)
        self.zoom_in_action = QAction("A+", self, shortcut=QKeySequence.StandardKey.ZoomIn,
                                      triggered=lambda: self.set_zoom(theme.next_zoom(self.zoom, +1)))
        self.zoom_in_action.setShortcuts([QKeySequence("Ctrl++"), QKeySequence("Ctrl+=")])
        self.zoom_out_action = QAction("A−", self, shortcut=QKeySequence.StandardKey.ZoomOut,
                                       triggered=lambda: self.set_zoom(theme.next_zoom(self.zoom, -1)))
        self.zoom_reset_action = QAction("Actual size", self, shortcut=QKeySequence("Ctrl+0"),
                                         triggered=lambda: self.set_zoom(1.0))
        self.protocol_filter = QComboBox()
        self.protocol_filter.addItems(list(PROTOCOL_FILTERS))
        self.protocol_filter.currentTextChanged.connect(
            lambda text: self.ladder.set_protocol_filter(PROTOCOL_FILTERS[text]))
        self.theme_box = QComboBox()
        self.theme_box.addItems([t.capitalize() for t in theme.THEMES])
        self.theme_box.setCurrentText(self.theme_name.capitalize())
        self.theme_box.currentTextChanged.connect(lambda text: self.set_theme(text.lower()))
        for action in (self.start_action, self.stop_action):
            bar.addAction(action)
        bar.addSeparator()
        bar.addAction(self.pause_action)
        bar.addAction(self.clear_action)
        bar.addWidget(self.protocol_filter)
        bar.addSeparator()
        bar.addWidget(QLabel(" Theme "))
        bar.addWidget(self.theme_box)
        bar.addAction(self.zoom_out_action)
        bar.addAction(self.zoom_in_action)

        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(QAction("&Open trace…", self, shortcut=QKeySequence.StandardKey.Open,
                                    triggered=lambda: self._ask_path("open")))
        file_menu.addAction(QAction("&Save trace…", self, shortcut=QKeySequence.StandardKey.Save,
                                    triggered=lambda: self._ask_path("save")))
        lab_menu = self.menuBar().addMenu("&Lab")
        lab_menu.addAction(self.start_action)
        lab_menu.addAction(self.stop_action)
        lab_menu.addSeparator()
        lab_menu.addAction(QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit, triggered=self.close))
        self.all_conversations_action = QAction("Show all conversations", self, enabled=False,
                                                triggered=lambda: self.ladder.set_conversation_filter(None))
        self.ladder.conversationFilterChanged.connect(
            lambda key: self.all_conversations_action.setEnabled(bool(key)))
        bar.addAction(self.all_conversations_action)
        threads_menu = lab_menu.addMenu("SMS &threads")
        policies = QActionGroup(self)
        self.thread_policy_actions = {}
        for policy, label in (("last", "Reply joins the latest conversation"),
                              ("pool", "One originating number per conversation (pool)")):
            action = QAction(label, self, checkable=True)
            action.triggered.connect(lambda _=False, p=policy: self.set_thread_policy(p))
            policies.addAction(action)
            threads_menu.addAction(action)
            self.thread_policy_actions[policy] = action
        iwf_operator = self.topology.iwf_operator()
        current = iwf_operator.iwf.thread_policy if iwf_operator else "last"
        self.thread_policy_actions[current].setChecked(True)
        self.thread_policy_actions["pool"].setEnabled(bool(iwf_operator and iwf_operator.iwf.number_pool))
        trace_menu = self.menuBar().addMenu("&Trace")
        trace_menu.addAction(self.pause_action)
        trace_menu.addAction(self.clear_action)
        view_menu = self.menuBar().addMenu("&View")
        themes = QActionGroup(self)
        for name in theme.THEMES:
            action = QAction(f"{name.capitalize()} theme", self, checkable=True, checked=name == self.theme_name)
            action.triggered.connect(lambda _=False, n=name: self.theme_box.setCurrentText(n.capitalize()))
            themes.addAction(action)
            view_menu.addAction(action)
        view_menu.addSeparator()
        for action in (self.zoom_in_action, self.zoom_out_action, self.zoom_reset_action):
            view_menu.addAction(action)
        self._update_actions()

    def _update_actions(self) -> None:
        running = self.runner is not None
        self.start_action.setEnabled(not running)
        self.stop_action.setEnabled(running)

    # -- looks ---------------------------------------------------------------------------
    def apply_look(self) -> None:
        app = QApplication.instance()
        if isinstance(app, QApplication):
            theme.apply(app, self.theme_name, self.zoom)
        self._fit_columns()

    def set_theme(self, name: str) -> None:
        self.theme_name = name
        self.settings.setValue("theme", name)
        self.apply_look()

    def set_zoom(self, zoom: float) -> None:
        self.zoom = zoom
        self.settings.setValue("zoom", zoom)
        self.apply_look()
        self.statusBar().showMessage(f"Zoom {int(zoom * 100)} %", 2000)

    # -- the lab ---------------------------------------------------------------------------
    def run_in_lab(self, coro):
        """Schedule an action on the lab; if it fails, say so in the status bar (never silently)."""
        if self.runner is None:
            coro.close()
            self.statusBar().showMessage("The lab is stopped: start it first", 4000)
            return None
        future = self.runner.submit(coro)
        future.add_done_callback(self._report_failure)   # runs on the lab thread: hop via a signal
        return future

    def _report_failure(self, future) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.labError.emit(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)

    def start_lab(self) -> None:
        """Start the lab and show its devices (blocks briefly: binding loopback ports)."""
        if self.runner is not None:
            return
        runner = LabThread(Lab(self.topology))
        self.ladder.attach_trace(runner.lab.trace)   # before start: the REGISTERs are part of the show
        try:
            runner.start()
        except BaseException:
            self.ladder.detach_trace()
            raise
        self._attach(runner)

    async def start_lab_async(self) -> None:
        if self.runner is not None or self._busy:
            return
        self._busy = True
        self.start_action.setEnabled(False)
        runner = LabThread(Lab(self.topology))
        self.ladder.attach_trace(runner.lab.trace)
        try:
            await asyncio.get_running_loop().run_in_executor(None, runner.start)
        except OSError as exc:
            self.ladder.detach_trace()
            self._update_actions()
            self._show_error("Cannot start the lab", str(exc))
            return
        finally:
            self._busy = False
        self._attach(runner)
        self._close_if_asked()

    def _attach(self, runner: LabThread) -> None:
        self.runner = runner
        lab = runner.lab
        for user in self.topology.users:
            device = lab.devices.get(user.id)
            if device is None:
                continue
            if user.device == "cpm":
                widget = CpmPhone(device, self.run_in_lab)
                self.left.addWidget(widget, 1)
            elif user.device == "email":
                widget = EmailClientWidget(device, self.run_in_lab)
                self.right.addWidget(widget, 1)
            else:
                widget = SmsHandsetWidget(device, self.run_in_lab,
                                          set_conditions=lambda uid=user.id, **kw: self._set_conditions(uid, **kw))
                self.right.addWidget(widget, 1)
            self.phones[user.id] = widget
        first_phone = next((w for w in self.phones.values() if isinstance(w, CpmPhone)), None)
        if first_phone:
            first_phone.text.setFocus()   # ready to type: the demo starts at Mary's keyboard
        self._fit_columns()
        QTimer.singleShot(0, self._fit_columns)   # again once the window has its real size
        self._sync_timer.start()
        endpoints = lab.endpoints()
        sip = "  ".join(f"{domain} {address}" for domain, address in endpoints["sip"].items())
        self.endpoints_label.setText(f"SIP {sip}   SMPP {endpoints.get('smpp', '-')}   "
                                     f"SMTP {endpoints.get('smtp', '-')}")
        self._update_actions()

    def _detach(self) -> LabThread | None:
        self._sync_timer.stop()
        runner, self.runner = self.runner, None
        self.ladder.detach_trace()
        for widget in self.phones.values():
            widget.bridge.detach()
            widget.setParent(None)
            widget.deleteLater()
        self.phones.clear()
        for column in (self.left, self.right):
            while column.count():
                item = column.takeAt(0)
                if item.widget():
                    item.widget().deleteLater()
        self.endpoints_label.setText("Lab stopped")
        self._update_actions()
        return runner

    def stop_lab(self) -> None:
        runner = self._detach()
        if runner:
            runner.stop()

    async def stop_lab_async(self) -> None:
        if self._busy:
            return
        runner = self._detach()
        if runner:
            self._busy = True
            try:
                await asyncio.get_running_loop().run_in_executor(None, runner.stop)
            finally:
                self._busy = False
        self._close_if_asked()

    def _close_if_asked(self) -> None:
        if self._close_requested:
            self.close()

    # -- traces on disk (JSON, as `iwlab play --trace-json` writes) ---------------------------
    def _ask_path(self, mode: str) -> None:
        dialog = QFileDialog(self, "Open a trace" if mode == "open" else "Save the trace", "",
                             "iwlab trace (*.json)")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptOpen if mode == "open"
                             else QFileDialog.AcceptMode.AcceptSave)
        dialog.setDefaultSuffix("json")
        dialog.fileSelected.connect(self.open_trace if mode == "open" else self.save_trace)
        dialog.open()   # non-modal: never exec() under qasync

    def save_trace(self, path: str) -> None:
        events = self.ladder.model.events()
        try:
            write_trace_json(Path(path), events)
        except OSError as exc:
            self._show_error("Cannot save the trace", str(exc))
            return
        self.statusBar().showMessage(f"Saved {len(events)} PDUs to {path}", 6000)

    def open_trace(self, path: str) -> None:
        """Show a saved trace: the live lab stops so the ladder shows only the file."""
        try:
            events = read_trace_json(Path(path))
        except (OSError, ValueError, KeyError) as exc:
            self._show_error("Cannot open the trace", f"{path}: {exc}")
            return
        self.stop_lab()
        self.ladder.clear()
        self.ladder.append_events(events)
        self.endpoints_label.setText(f"Lab stopped: showing {Path(path).name} ({len(events)} PDUs)")

    def inspector_text(self) -> str:
        """Everything the inspector's field tree shows, as text (for tests and copying)."""
        lines = []
        iterator = QTreeWidgetItemIterator(self.inspector.tree)
        while iterator.value():
            item = iterator.value()
            lines.append(f"{item.text(0)}: {item.text(1)}")
            iterator += 1
        return "\n".join(lines)

    async def _set_conditions(self, user_id: str, **flags: bool):
        """A legacy user's conditions from the window (runs on the lab loop); returns their CPM app."""
        lab = self.runner.lab
        answer = await run_command(lab, f"state {user_id} " + " ".join(f"{k}={'yes' if v else 'no'}"
                                                                         for k, v in flags.items()))
        if answer.startswith("error"):
            raise RuntimeError(answer)
        self.labInfo.emit(answer)
        return lab.cpm_apps.get(user_id)

    def _sync_conditions(self) -> None:
        if self.runner is None:
            return
        apps = dict(self.runner.lab.cpm_apps)
        for user_id, widget in self.phones.items():
            if isinstance(widget, SmsHandsetWidget):
                widget.sync_conditions(apps.get(user_id))

    def set_thread_policy(self, policy: str) -> None:
        """How the IWF matches an SMS reply to a CPM thread (issue: message-thread management)."""
        operator = self.topology.iwf_operator()
        if operator:
            operator.iwf.thread_policy = policy   # a restarted lab keeps the choice
        if self.runner and self.runner.lab.iwf:
            self.runner.call(self.runner.lab.iwf.threads.set_policy, policy)
        self.thread_policy_actions[policy].setChecked(True)
        self.statusBar().showMessage(f"SMS thread policy: {policy}", 4000)

    def _show_error(self, title: str, text: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Critical, title, text, parent=self)
        box.open()   # non-modal: never exec() under qasync

    def closeEvent(self, event) -> None:
        if self._busy:   # a start or stop is under way on a worker thread: close when it is done
            self._close_requested = True
            event.ignore()
            return
        self.stop_lab()   # every server closed and every lab thread joined before the window goes
        super().closeEvent(event)


def run_window(topology: Topology) -> int:
    import qasync

    app = QApplication.instance() or QApplication(sys.argv)
    app.setApplicationName("iwlab")
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    window = LabWindow(topology)
    window.show()
    try:
        window.start_lab()
    except OSError as exc:
        window._show_error("Cannot start the lab", f"{exc}\n\nIs another lab running on the same ports? "
                                                   "Try `iwlab --port-base 0`.")
    app.aboutToQuit.connect(window.stop_lab)
    with loop:
        loop.run_forever()
    return 0
