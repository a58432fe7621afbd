"""Watching a lab that runs in another process, or on another machine (`iwlab window --watch`).

The lab (`iwlab serve --trace-feed PORT`) does its protocol work on its own cores; this window only
reads its trace feed (backends/lab/trace_feed.py) on the GUI loop and hands the PDUs to the
ladder's batching bridge, so a busy lab costs the window its JSON lines, not its GIL.
A feed that drops is asked again (from the last PDU shown, or from the start for a new lab run).
"""
from __future__ import annotations

import asyncio
import time

from PySide6.QtCore import QObject, Signal

from iwlab.backends.lab.trace_feed import Answer, FeedError, Gap, TraceFeedClient
from iwlab.backends.protocols import sip
from iwlab.widgets.trace_bridge import TraceBridge

RETRY_SECONDS = 2.0   # between attempts to reach a lab that is not (or no longer) there
SLICE_SECONDS = 0.008  # of reading the feed at most, before the GUI thread gets a turn
MAX_LINE = 300         # characters of the watched lab's endpoints shown in the status bar


class RemoteWatch(QObject):
    lineChanged = Signal(str)   # what the window's lab line says: watching, lost, trying again
    newLab = Signal(list)       # the feed is another lab run's (its ladder's columns): start over
    gap = Signal(int)           # this many PDUs were let go by the lab before the window read them
    answered = Signal(str, str)  # a console command sent over the feed, and what the lab answered
    joined = Signal()            # the feed is open (again): commands may go

    def __init__(self, host: str, port: int, bridge: TraceBridge, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.host, self.port = host, port
        self._bridge = bridge
        bridge.destroyed.connect(lambda *_: self.stop())   # the ladder let go of it (File > Open trace)
        self._task: asyncio.Task | None = None
        self._client: TraceFeedClient | None = None   # while connected
        self._lab = ""         # the lab run whose PDUs the ladder shows
        self.last_seq = 0      # the newest of them
        self.lab_seq_at_connect = 0   # the lab's newest when the feed was last opened

    @property
    def where(self) -> str:
        return sip.hostport(self.host, self.port)

    def start(self) -> None:
        if self._task is None:
            self.lineChanged.emit(f"Watching {self.where}: connecting…")
            self._task = asyncio.get_event_loop().create_task(self._run(), name=f"watch {self.where}")

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def watching(self) -> bool:
        return self._task is not None

    def command(self, line: str) -> bool:
        """Send a console command to the lab (it answers through `answered`); False when not connected."""
        if self._client is None:
            return False
        self._client.command(line)
        return True

    def stop(self) -> "asyncio.Task | None":
        """Stop watching; returns the task that closes the feed's socket (to wait for, if need be)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        return task

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
                reason = "the lab closed its trace feed"
            except (OSError, asyncio.TimeoutError, FeedError) as exc:
                reason = str(exc) or type(exc).__name__
            self.lineChanged.emit(f"Watching {self.where}: lost ({reason[:MAX_LINE]}); trying again every "
                                  f"{RETRY_SECONDS:g} s")
            await asyncio.sleep(RETRY_SECONDS)

    async def _follow(self) -> None:
        client = await TraceFeedClient.connect(self.host, self.port)
        try:
            if client.hello.lab != self._lab:
                self._lab, self.last_seq = client.hello.lab, 0
                self.newLab.emit(client.hello.nodes)
            self._client = client
            self.lineChanged.emit(f"Watching the lab at {self.where}{endpoints_line(client.hello.endpoints)}")
            self.joined.emit()
            self.lab_seq_at_connect = client.hello.last_seq
            slice_start = time.monotonic()
            async for item in client.items(self.last_seq):
                if isinstance(item, Gap):
                    self.gap.emit(item.lost)
                elif isinstance(item, Answer):
                    self.answered.emit(item.command, item.text)
                else:
                    self._bridge.push(item)
                    self.last_seq = item.seq
                # Lines already buffered are read without a pause: catching up on a long trace
                # would hold the GUI thread for seconds. Let it paint and take input between slices.
                if time.monotonic() - slice_start > SLICE_SECONDS:
                    await asyncio.sleep(0)
                    slice_start = time.monotonic()
        except asyncio.CancelledError:   # stop(): its socket closed before the task ends
            await client.aclose()
            raise
        finally:
            self._client = None
            client.close()   # also when the task is dropped with its loop (a GeneratorExit: no await)


def endpoints_line(endpoints: dict) -> str:
    """Where the watched lab's clients connect (the lab's own endpoints, as it told them)."""
    sip_servers = endpoints.get("sip")
    parts = [f"SIP {'  '.join(f'{domain} {address}' for domain, address in sip_servers.items())}"
             if isinstance(sip_servers, dict) else ""]
    parts += [f"{name.upper()} {endpoints[name]}" for name in ("smpp", "smtp") if isinstance(endpoints.get(name), str)]
    shown = "   ".join(p for p in parts if p)[:MAX_LINE]
    return f":   {shown}" if shown else " (its devices and controls are there; this window shows its trace)"
