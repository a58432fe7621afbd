"""A connection limit per listener: past it, a new connection is refused at once, before any
protocol object exists for it (so no node keeps state for a connection flood), with the
protocol's own words where it has them (SMTP: 421). A hostile peer that opens thousands of
connections costs the lab a socket each for an instant, and the lab goes on serving the rest.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 512     # per listener: far above any lab's own use, far below the process's file limit


class ConnectionGuard:
    """Counts one listener's live connections and refuses those past the limit."""

    def __init__(self, name: str, limit: int = MAX_CONNECTIONS, refusal: bytes = b"") -> None:
        """refusal: written before closing a refused connection (e.g. an SMTP 421 greeting)."""
        self.name = name
        self.limit = limit
        self.refusal = refusal
        self.live = 0
        self.refused = 0

    def factory(self, make: Callable[[], asyncio.BaseProtocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for create_server that admits connections up to the limit."""
        return lambda: _Guarded(self, make)


class _Guarded(asyncio.Protocol):
    """Stands in front of the real protocol, which is made only for an admitted connection."""

    def __init__(self, guard: ConnectionGuard, make: Callable[[], asyncio.BaseProtocol]) -> None:
        self._guard = guard
        self._make = make
        self._inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        if guard.live >= guard.limit:
            guard.refused += 1
            if guard.refused in (1, 10, 100) or guard.refused % 1000 == 0:
                log.warning("%s: %d connections refused (limit %d live)", guard.name, guard.refused, guard.limit)
            if guard.refusal and isinstance(transport, asyncio.WriteTransport):
                transport.write(guard.refusal)
            transport.close()
            return
        inner = self._make()
        assert isinstance(inner, asyncio.Protocol)
        guard.live += 1          # counted once it exists: connection_lost will count it out
        self._inner = inner
        inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._guard.live -= 1
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()
