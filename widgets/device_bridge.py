"""Carries a simulated device's events from the lab thread to the GUI thread.

Devices call their listeners on the lab's asyncio thread; a Qt signal emitted
there is queued to the receiver's (GUI) thread, so widgets only ever touch
Qt objects on their own thread.
"""
from __future__ import annotations

from PySide6.QtCore import QObject, Signal


class DeviceBridge(QObject):
    event = Signal(str, object)   # (kind, payload) as the device reported it

    def __init__(self, device, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.device = device
        device.listeners.append(self._forward)

    def _forward(self, kind: str, payload: object) -> None:
        self.event.emit(kind, payload)

    def detach(self) -> None:
        if self._forward in self.device.listeners:
            self.device.listeners.remove(self._forward)
