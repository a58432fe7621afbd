"""Carries a simulated device's events from the lab thread to the GUI thread.

Devices call their listeners on the lab's asyncio thread; a Qt signal emitted
there is queued to the receiver's (GUI) thread, so widgets only ever touch
Qt objects on their own thread.
"""
from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Callable, Coroutine

from PySide6.QtCore import QObject, Signal

from iwlab.backends.devices.events import DeviceEvent

# Schedules a coroutine on the lab loop; None when the lab is stopped (the window says so).
RunInLab = Callable[[Coroutine[Any, Any, Any]], "Future[Any] | None"]


class DeviceBridge(QObject):
    happened = Signal(object)   # the DeviceEvent as the device reported it (backends/devices/events.py)

    def __init__(self, device, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.device = device
        device.listeners.append(self._forward)

    def _forward(self, event: DeviceEvent) -> None:
        self.happened.emit(event)

    def detach(self) -> None:
        if self._forward in self.device.listeners:
            self.device.listeners.remove(self._forward)
