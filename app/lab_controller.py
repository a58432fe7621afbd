"""The lab behind the window: starts and stops it, and runs the window's actions on its loop.

The lab runs on its own asyncio thread (backends.lab_thread): protocol work never shares a thread
with painting. start()/stop() block briefly (binding and closing loopback ports); the *_async
variants do that on a worker thread, so a qasync slot can await them without freezing the window.
The views follow through signals: `attached` when a started lab's devices can be shown, `detached`
when the lab is let go, `changed` when running/starting changes.
"""
from __future__ import annotations

import asyncio
import sys
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Coroutine

from PySide6.QtCore import QObject, Signal

from iwlab.app.headless import offer_trace_feed
from iwlab.app.notices import Notices
from iwlab.backends.lab import conditions
from iwlab.backends.lab.control import run_command
from iwlab.backends.lab.lab import Lab
from iwlab.backends.lab.lab_thread import LabThread
from iwlab.backends.lab.trace_feed import TraceFeed
from iwlab.backends.topology import Topology


class LabController(QObject):
    labError = Signal(str)    # an action in the lab failed (emitted from the lab thread)
    labInfo = Signal(str)     # what a change did, e.g. the route it leads to (from the lab thread)
    attached = Signal(object)  # the LabThread just started: its devices are ready to show
    detached = Signal()        # the lab was let go (it stops next): views drop its devices
    changed = Signal()         # running or starting changed
    settled = Signal()         # an async start or stop is over: a close asked for meanwhile may go ahead
    conditionsChanged = Signal(str, object)   # what is set now: its summary and its Settings (from the lab thread)

    def __init__(self, topology: Topology, ladder, notices: Notices, parent: QObject | None = None, *,
                 state_dir: Path | None = None, fresh: bool = False, trace_feed_port: int | None = None) -> None:
        """state_dir: where the lab keeps its store and mailboxes across restarts (None: nowhere);
        fresh: empty it on the first start; trace_feed_port: offer the lab's trace there (0: a free
        port) for windows elsewhere (`iwlab window --watch`)."""
        super().__init__(parent)
        self.topology = topology
        self.state_dir = state_dir
        self.trace_feed_port = trace_feed_port
        self.trace_feed: TraceFeed | None = None   # while the lab runs, if offered
        self._fresh_next = fresh
        self._ladder = ladder        # shows the trace: attach_trace / detach_trace
        self._notices = notices
        self._runner: LabThread | None = None
        self._busy = False           # an async start/stop is running on a worker thread
        self._starting = False

    @property
    def runner(self) -> LabThread | None:
        return self._runner

    @property
    def lab(self) -> Lab | None:
        return self._runner.lab if self._runner else None

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def busy(self) -> bool:
        """An async start or stop is under way: the window must not close under it."""
        return self._busy

    @property
    def starting(self) -> bool:
        return self._starting

    # -- actions on the lab ---------------------------------------------------------------
    def run_in_lab(self, coro: Coroutine[Any, Any, Any]) -> "Future[Any] | None":
        """Schedule an action on the lab; if it fails, say so in the status bar (never silently)."""
        if self._runner is None:
            coro.close()
            self._notices.status("The lab is stopped: start it first", 4000)
            return None
        future = self._runner.submit(coro)
        future.add_done_callback(self._report_failure)   # runs on the lab thread: hop via a signal
        return future

    def _report_failure(self, future) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.labError.emit(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)

    async def set_conditions(self, user_id: str, **flags: bool):
        """A legacy user's conditions from the window (runs on the lab loop); returns their CPM app."""
        lab = self._runner.lab
        answer = await run_command(lab, f"state {user_id} " + " ".join(f"{k}={'yes' if v else 'no'}"
                                                                         for k, v in flags.items()))
        if answer.startswith("error"):
            raise RuntimeError(answer)
        self.labInfo.emit(answer)
        return lab.cpm_apps.get(user_id)

    def run_condition(self, line: str) -> None:
        """A conditions-panel change, as the console command it is; an error goes to the status bar."""
        if self._runner is None:
            self._notices.status("The lab is stopped: start it first", 4000)
            return
        lab = self._runner.lab      # read here, on the window's thread (a stop may clear it)

        async def run() -> tuple[str, conditions.Settings]:
            answer = await run_command(lab, line)
            if answer.startswith("error"):
                self.labError.emit(answer)
            elif answer.startswith("cut "):
                self.labInfo.emit(answer)
            return await run_command(lab, "conditions"), conditions.current(lab)
        future = self.run_in_lab(run())
        if future is not None:
            future.add_done_callback(lambda f: None if f.cancelled() or f.exception()
                                     else self.conditionsChanged.emit(*f.result()))

    def set_thread_policy(self, policy: str) -> None:
        """How the IWF matches an SMS reply to a CPM thread (issue: message-thread management)."""
        operator = self.topology.iwf_operator()
        if operator:
            operator.iwf.thread_policy = policy   # a restarted lab keeps the choice
        if self._runner and self._runner.lab.iwf:
            self._runner.call(self._runner.lab.iwf.threads.set_policy, policy)

    # -- start and stop ------------------------------------------------------------------
    def _new_runner(self) -> LabThread:
        # The lab's thread shares the GIL with painting. Each time Qt gives the GIL up (most
        # C++ calls do), the GUI thread waited up to the switch interval to get it back: at
        # 5 ms, a busy lab (960 events/s) gave 8-15 frame gaps over 50 ms in 15 s; at 1 ms, 1
        # (bench/window_bench.py). The lab's own throughput is not what the window is for.
        sys.setswitchinterval(0.001)
        return LabThread(self._new_lab())

    def start(self) -> None:
        """Start the lab and show its devices (blocks briefly: binding loopback ports)."""
        if self._runner is not None:
            return
        runner = self._new_runner()
        self._show_trace(runner)   # before start: the REGISTERs are part of the show
        try:
            self._start_runner(runner)
        except BaseException:
            self._ladder.detach_trace()
            raise
        self._attach(runner)

    async def start_async(self) -> None:
        if self._runner is not None or self._busy:
            return
        self._busy = self._starting = True
        self.changed.emit()
        runner = self._new_runner()
        self._show_trace(runner)
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._start_runner, runner)
        except OSError as exc:
            self._ladder.detach_trace()
            self._starting = False
            self.changed.emit()
            self._notices.error("Cannot start the lab", str(exc))
            return
        finally:
            self._busy = self._starting = False
        self._attach(runner)
        self.settled.emit()

    def _show_trace(self, runner: LabThread) -> None:
        # Its loop gives way while the ladder paints: they share the GIL (LabLoop.give_way).
        self._ladder.attach_trace(runner.lab.trace, give_way=runner.loop.give_way)

    def _start_runner(self, runner: LabThread) -> None:
        """Start the lab, then its trace feed if one is offered (blocks: binding ports)."""
        runner.start()
        if self.trace_feed_port is None:
            return
        try:
            self.trace_feed = runner.run(offer_trace_feed(runner.lab, self.trace_feed_port))
        except BaseException:
            runner.stop()
            raise

    def _stop_runner(self, runner: LabThread) -> None:
        feed, self.trace_feed = self.trace_feed, None
        if feed is not None:
            runner.run(feed.stop())
        runner.stop()

    def _new_lab(self) -> Lab:
        fresh, self._fresh_next = self._fresh_next, False
        return Lab(self.topology, state_dir=self.state_dir, fresh=fresh)

    async def reset_state(self) -> None:
        """Forget everything the lab kept (stored messages, mailboxes), and start it again."""
        running = self._runner is not None
        await self.stop_async()
        self._fresh_next = True
        if running or self.state_dir is not None:
            await self.start_async()
        self._notices.status("Lab state reset: nothing stored, mailboxes empty", 6000)

    def stop(self) -> None:
        runner = self._detach()
        if runner:
            self._stop_runner(runner)

    async def stop_async(self) -> None:
        if self._busy:
            return
        runner = self._detach()
        if runner:
            self._busy = True
            try:
                await asyncio.get_running_loop().run_in_executor(None, self._stop_runner, runner)
            finally:
                self._busy = False
        self.settled.emit()

    def _attach(self, runner: LabThread) -> None:
        self._runner = runner
        self.attached.emit(runner)
        self.changed.emit()

    def _detach(self) -> LabThread | None:
        """Let the views go of the lab (also when none runs: they show "stopped"); returns it to stop."""
        runner, self._runner = self._runner, None
        self._ladder.detach_trace()
        self.detached.emit()
        self.changed.emit()
        return runner
