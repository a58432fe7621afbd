"""The lab window: CPM phones on the left, legacy devices on the right, the
bridge in the middle as a live ladder with a PDU inspector under it.

This class lays the window out and wires its parts, each with one job:
LabController (the lab's lifecycle and actions on it), DeviceColumns (the
device widgets), WindowActions (toolbar and menus), TraceFiles (open/save),
Look (theme and zoom), Notices (status bar and error boxes).
"""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import platformdirs
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QApplication,
    QLabel,
    QMainWindow,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QTreeWidgetItemIterator,
    QVBoxLayout,
    QWidget,
)

from iwlab.app.collector import set_aside_what_lasts
from iwlab.app.device_columns import DeviceColumns
from iwlab.app.headless import ladder_nodes
from iwlab.app.lab_controller import LabController
from iwlab.app.look import Look
from iwlab.app.notices import Notices
from iwlab.app.order_watch import OrderWatch
from iwlab.app.remote_watch import RemoteWatch
from iwlab.app.step_mode import StepMode
from iwlab.app.trace_files import TraceFiles
from iwlab.app.window_actions import WindowActions
from iwlab.backends.lab.lab_thread import LabThread
from iwlab.backends.protocols.sip import hostport as sip_hostport
from iwlab.backends.topology import Topology
from iwlab.widgets.conditions_panel import ConditionsPanel
from iwlab.widgets.cpm_phone import CpmPhone
from iwlab.widgets.email_client import EmailClientWidget
from iwlab.widgets.inspector import InspectorView
from iwlab.widgets.ladder import LadderView
from iwlab.widgets.scenario_panel import ScenarioPanel
from iwlab.widgets.sms_handset import SmsHandsetWidget
from iwlab.widgets.step_bar import StepBar

__all__ = ["LabWindow", "ladder_nodes", "run_window"]


class LabWindow(QMainWindow):
    holdingsKnown = Signal(str)   # what the nodes hold, from the lab thread

    def __init__(self, topology: Topology, *, theme_name: str | None = None, zoom: float | None = None,
                 state_dir: Path | None = None, fresh: bool = False, trace_feed_port: int | None = None) -> None:
        super().__init__()
        self.topology = topology
        self.setWindowTitle("iwlab — CPM ↔ SMS / email interworking lab")
        self._close_requested = False   # asked while a start/stop ran: close when it is done
        self.remote_watch: RemoteWatch | None = None   # watch(): the lab shown runs elsewhere

        self.ladder = LadderView(ladder_nodes(topology))
        self.inspector = InspectorView()
        self.ladder.eventSelected.connect(self.inspector.show_event)
        self.notices = Notices(self)
        self.holdingsKnown.connect(self.notices.set_holdings)
        self._holdings_timer = QTimer(self)
        self._holdings_timer.setInterval(1000)
        self._holdings_timer.timeout.connect(self._ask_holdings)
        self.controller = LabController(topology, self.ladder, self.notices, self, state_dir=state_dir, fresh=fresh,
                                        trace_feed_port=trace_feed_port)
        self.columns = DeviceColumns(topology, self.controller.run_in_lab, self.controller.set_conditions, self)
        self.scenarios = ScenarioPanel(self.controller.run_in_lab, lambda: self.controller.lab)
        self.scenarios.highlight.connect(self.ladder.highlight_seqs)
        self.scenarios.showRow.connect(self.ladder.select_seq)
        self.scenarios.failed.connect(self.notices.failed)
        self.step_bar = StepBar()
        self.conditions = ConditionsPanel(conditions_links(topology),
                                          {u.id: u.name for u in topology.users if u.device == "cpm"})
        self.conditions.commandRequested.connect(self.controller.run_condition)
        self.order_watch = OrderWatch(self)
        self.order_watch.badges.connect(self._show_order)
        self.controller.conditionsChanged.connect(self.conditions.show_summary)
        self.step_mode = StepMode(self, self.controller, self.step_bar, self.notices, self.ladder.select_seq)
        self._lay_out()

        self.look = Look(self.notices, theme_name=theme_name, zoom=zoom, on_applied=self._fit_columns)
        self.trace_files = TraceFiles(self, self.ladder, self.controller, self.notices)
        self.commands = WindowActions(self, controller=self.controller, ladder=self.ladder,
                                      trace_files=self.trace_files, look=self.look, notices=self.notices,
                                      step_mode=self.step_mode)
        a = self.commands   # the commands, also by their old names (tests and scripts trigger them)
        self.start_action, self.stop_action, self.pause_action, self.clear_action = \
            a.start_action, a.stop_action, a.pause_action, a.clear_action
        self.zoom_in_action, self.zoom_out_action, self.zoom_reset_action = \
            a.zoom_in_action, a.zoom_out_action, a.zoom_reset_action
        self.protocol_filter, self.theme_box = a.protocol_filter, a.theme_box
        self.all_conversations_action, self.thread_policy_actions = a.all_conversations_action, a.thread_policy_actions

        self.controller.labError.connect(self.notices.failed)
        self.controller.labInfo.connect(lambda text: self.notices.status(text, 10000))
        self.controller.attached.connect(self._lab_attached)
        self.controller.detached.connect(self._lab_detached)
        self.controller.settled.connect(self._close_if_asked)
        self.look.apply()
        self._fit_to_screen()

    # -- layout --------------------------------------------------------------------------------
    def _lay_out(self) -> None:
        centre = self.centre = QSplitter(Qt.Orientation.Vertical)
        ladder_pane = self._titled("Interworking ladder — every PDU on the wire", self.ladder)
        ladder_pane.layout().insertWidget(1, self.step_bar)   # step mode: the waiting hop, above the ladder
        centre.addWidget(ladder_pane)
        self.bottom_tabs = QTabWidget()
        self.bottom_tabs.addTab(self.inspector, "Inspector")
        self.bottom_tabs.addTab(self.scenarios, "Use cases and requirements")
        conditions_scroll = QScrollArea()       # never wider than the ladder: it scrolls instead
        conditions_scroll.setWidgetResizable(True)
        conditions_scroll.setWidget(self.conditions)
        self.bottom_tabs.addTab(conditions_scroll, "Conditions")
        centre.addWidget(self.bottom_tabs)
        centre.setStretchFactor(0, 3)
        centre.setStretchFactor(1, 1)
        centre.setSizes([700, 260])   # the ladder is the show; the inspector is for the curious
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.columns.left_column)
        self.splitter.addWidget(centre)
        self.splitter.addWidget(self.columns.right_column)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setStretchFactor(2, 0)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setObjectName("centre")
        self.setCentralWidget(self.splitter)

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

    def _fit_to_screen(self) -> None:
        """A lab in front of a room uses the whole screen."""
        screen = self.screen().availableGeometry() if self.screen() else None
        if screen is None:
            self.resize(1600, 960)
            return
        self.resize(screen.width(), screen.height())
        self.setWindowState(Qt.WindowState.WindowMaximized)

    def _fit_columns(self) -> None:
        """Device columns never clip a phone; the ladder gets all the rest."""
        self.columns.fit_widths()
        # QSplitter keeps the widths it chose before the phones existed: hand the
        # side columns what they need now and the ladder all the rest.
        sides = [self.splitter.widget(i).minimumWidth() for i in (0, 2)]
        centre = max(self.splitter.width() - sum(sides) - 2 * self.splitter.handleWidth(), 500)
        self.splitter.setSizes([sides[0], centre, sides[1]])

    # -- the lab coming and going ------------------------------------------------------------
    def _ask_holdings(self) -> None:
        """Once a second: what the nodes hold (asked on the lab's thread, shown on ours)."""
        runner = self.runner
        if runner is None:
            return

        async def holdings() -> str:
            return runner.lab.holdings()
        future = runner.submit(holdings())
        future.add_done_callback(lambda f: None if f.cancelled() or f.exception() else self.holdingsKnown.emit(f.result()))

    def trainer_layout(self, on: bool) -> None:
        """For teaching: the use-case panel as large as the ladder, opened on the use cases;
        off: the ladder is the show again."""
        total = sum(self.centre.sizes())
        if on:
            self.bottom_tabs.setCurrentWidget(self.scenarios)
            self.centre.setSizes([total // 2, total - total // 2])
        else:
            self.centre.setSizes([total * 3 // 4, total - total * 3 // 4])

    def _show_order(self, user_id: str, badges: list) -> None:
        handset = self.phones.get(user_id)
        if isinstance(handset, SmsHandsetWidget):
            handset.show_order(badges)

    def _lab_attached(self, runner: LabThread) -> None:
        self._holdings_timer.start()
        self.order_watch.attach(runner)
        self.controller.run_condition("conditions")   # the panel shows what this lab has set
        self.columns.attach(runner.lab)
        self._fit_columns()
        QTimer.singleShot(0, self._fit_columns)   # again once the window has its real size
        endpoints = runner.lab.endpoints()
        sip = "  ".join(f"{domain} {address}" for domain, address in endpoints["sip"].items())
        feed = self.controller.trace_feed
        watched = f"   Trace feed {sip_hostport(self.topology.host, feed.port)}" if feed else ""
        self.notices.set_lab_line(f"SIP {sip}   SMPP {endpoints.get('smpp', '-')}   "
                                  f"SMTP {endpoints.get('smtp', '-')}{watched}")

    def _lab_detached(self) -> None:
        self._holdings_timer.stop()
        self.order_watch.detach()
        self.notices.set_holdings("")
        self.columns.detach()
        self.notices.set_lab_line("Lab stopped")

    # -- what callers (tests, run_window, the actions) use ------------------------------------
    @property
    def runner(self) -> LabThread | None:
        return self.controller.runner

    @property
    def busy(self) -> bool:
        """An async start or stop is under way (the window closes when it is done)."""
        return self.controller.busy

    @property
    def phones(self) -> dict[str, CpmPhone | EmailClientWidget | SmsHandsetWidget]:
        return self.columns.phones

    @property
    def labError(self):   # the controller's signals, by the names they had on the window
        return self.controller.labError

    @property
    def labInfo(self):
        return self.controller.labInfo

    @property
    def theme_name(self) -> str:
        return self.look.theme_name

    @property
    def zoom(self) -> float:
        return self.look.zoom

    def start_lab(self) -> None:
        """Start the lab and show its devices (blocks briefly: binding loopback ports)."""
        self.controller.start()

    def stop_lab(self) -> None:
        self.controller.stop()

    def watch(self, host: str, port: int) -> RemoteWatch:
        """Show a lab that runs elsewhere (`iwlab serve --trace-feed PORT`) instead of one of our own:
        its ladder, live. Its devices and controls are where it runs, so the device columns go."""
        self.controller.stop()
        self.commands.watching = True
        self.commands.update()
        self.columns.left_column.hide()
        self.columns.right_column.hide()
        self.bottom_tabs.removeTab(self.bottom_tabs.indexOf(self.scenarios))   # it plays on a lab of ours
        self.setWindowTitle(f"iwlab — watching the lab at {sip_hostport(host, port)}")
        self.ladder.clear()
        watch = self.remote_watch = RemoteWatch(host, port, self.ladder.attach_trace(None), self)
        watch.lineChanged.connect(self.notices.set_lab_line)
        watch.newLab.connect(self.ladder.clear)
        watch.gap.connect(lambda lost: self.notices.status(
            f"{lost} PDUs were let go by the lab (its trace is bounded) before this window read them", 10000))
        # The conditions panel's changes go to that lab as console commands (if it takes them).
        self.conditions.commandRequested.disconnect(self.controller.run_condition)
        self.conditions.commandRequested.connect(self._remote_command)
        watch.answered.connect(self._remote_answer)
        watch.joined.connect(lambda: watch.command("conditions"))   # the panel shows what that lab has set
        watch.start()
        return watch

    def _remote_command(self, line: str) -> None:
        if self.remote_watch is None or not self.remote_watch.command(line):
            self.notices.status("Not connected to the watched lab", 4000)

    def _remote_answer(self, command: str, text: str) -> None:
        """What the watched lab answered a console command (the conditions panel's, or its own ask)."""
        if command == "conditions":
            self.conditions.show_summary(text)
            return
        self.notices.status(text if text.startswith(("error", "refused")) else f"{command}: {text}", 8000)
        if not text.startswith("refused") and self.remote_watch is not None:
            self.remote_watch.command("conditions")

    async def start_lab_async(self) -> None:
        await self.controller.start_async()

    async def stop_lab_async(self) -> None:
        await self.controller.stop_async()

    def run_in_lab(self, coro):
        return self.controller.run_in_lab(coro)

    def set_theme(self, name: str) -> None:
        self.look.set_theme(name)

    def set_zoom(self, zoom: float) -> None:
        self.look.set_zoom(zoom)

    def set_thread_policy(self, policy: str) -> None:
        self.commands.set_thread_policy(policy)

    def open_trace(self, path: str) -> None:
        self.trace_files.open(path)

    def save_trace(self, path: str) -> None:
        self.trace_files.save(path)

    def export_pcapng(self, path: str) -> None:
        self.trace_files.export_pcapng(path)

    def show_error(self, title: str, text: str) -> None:
        self.notices.error(title, text)

    def inspector_text(self) -> str:
        """Everything the inspector's field tree shows, as text (for tests and copying)."""
        lines = []
        iterator = QTreeWidgetItemIterator(self.inspector.tree)
        while iterator.value():
            item = iterator.value()
            lines.append(f"{item.text(0)}: {item.text(1)}")
            iterator += 1
        return "\n".join(lines)

    # -- closing -----------------------------------------------------------------------------------
    def _close_if_asked(self) -> None:
        if self._close_requested:
            self.close()

    def closeEvent(self, event) -> None:
        if self.controller.busy:   # a start or stop is under way on a worker thread: close when it is done
            self._close_requested = True
            event.ignore()
            return
        if self.remote_watch is not None:
            self.remote_watch.stop()
        self.stop_lab()   # every server closed and every lab thread joined before the window goes
        super().closeEvent(event)


def conditions_links(topology: Topology) -> list[str]:
    """Whose SMPP link the conditions panel can cut: each IWF, then each handset (by user id)."""
    return topology.iwf_names() + [u.id for u in topology.users if u.msisdn and u.device in ("sms", "cpm")]


def default_state_dir() -> Path:
    """Where the window keeps its lab between runs: the user's data folder."""
    return platformdirs.user_data_path("iwlab", appauthor=False) / "lab"


def run_window(topology: Topology, *, state_dir: str | None = None, fresh: bool = False,
               watch: tuple[str, int] | None = None, trace_feed_port: int | None = None) -> int:
    """watch: (host, port) of a lab's trace feed to show instead of starting a lab of our own;
    trace_feed_port: offer our lab's trace feed there, for windows elsewhere."""
    import qasync

    app = QApplication.instance() or QApplication(sys.argv)
    app.setApplicationName("iwlab")
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    window = LabWindow(topology, state_dir=Path(state_dir) if state_dir else default_state_dir(), fresh=fresh,
                       trace_feed_port=trace_feed_port)
    window.show()
    set_aside_what_lasts()   # the window and the modules, not the lab: a stopped lab must be collectable
    if watch:
        window.watch(*watch)
    try:
        if not watch:
            window.start_lab()
    except OSError as exc:
        window.show_error("Cannot start the lab", f"{exc}\n\nIs another lab running on the same ports? "
                                                  "Try `iwlab --port-base 0`.")
    app.aboutToQuit.connect(window.stop_lab)
    with loop:
        loop.run_forever()
    return 0
