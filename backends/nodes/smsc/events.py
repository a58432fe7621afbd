"""What the SMSC tells the lab (bound, unbound, stored, delivered, expired,
undeliverable, receipt_dropped): one list of listeners, shared by the server
and its delivery."""
from __future__ import annotations

from typing import Any, Callable

EventCallback = Callable[[str, dict[str, Any]], None]


class Events:
    """The listeners of one SMSC. Falsy while there are none, so a caller can
    skip building details nobody reads (deliveries are the hot path)."""

    def __init__(self) -> None:
        self._listeners: list[EventCallback] = []

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """callback(kind, details); returns unsubscribe."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def emit(self, kind: str, **details: Any) -> None:
        for callback in list(self._listeners):
            callback(kind, details)
