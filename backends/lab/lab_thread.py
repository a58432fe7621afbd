"""Run a Lab on its own asyncio loop in a background thread.

The window and blocking test clients both use this: protocol work never
shares a thread with painting, and a test can talk to the lab with plain
blocking sockets (as real clients would). The loop is a LabLoop: the lab's
clock, and a way to know when the world has done all it can (step mode).
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any, Awaitable, Callable, TypeVar

from iwlab.backends.clock import LabClock, LabLoop
from iwlab.backends.lab.lab import Lab

T = TypeVar("T")


class LabThread:
    def __init__(self, lab: Lab, *, clock: LabClock | None = None) -> None:
        self.lab = lab
        self.loop = LabLoop(clock)   # its clock can stand still while a trainer steps (backends.clock)
        self._thread = threading.Thread(target=self._run, name="iwlab-lab", daemon=True)
        self._started = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        self.loop.run_forever()
        # Drain what stop() left (transports closing) before closing the loop.
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def start(self, timeout: float = 30.0) -> "LabThread":
        self._thread.start()
        self._started.wait(timeout)
        try:
            self.run(self.lab.start(), timeout=timeout)
        except BaseException:
            # Lab.start() closed what it had opened; the loop thread must go too.
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
            raise
        return self

    def submit(self, coro: Awaitable[T]) -> Future[T]:
        """Schedule a coroutine on the lab loop; returns a concurrent Future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def run(self, coro: Awaitable[T], timeout: float | None = 30.0) -> T:
        return self.submit(coro).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        """Run a plain function on the lab loop (to touch lab state safely)."""
        async def wrapper() -> T:
            return fn(*args)
        return self.run(wrapper(), timeout=timeout)

    def stop(self, timeout: float = 30.0) -> None:
        if not self._thread.is_alive():
            return
        try:
            self.run(self.lab.stop(), timeout=timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
