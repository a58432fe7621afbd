"""Outgoing links from a CPM server to its next hops: other operators' servers and its IWF.

A link is opened on first use and reopened when it has dropped; what is sent
while it opens waits in an ordered outbox, so nothing overtakes what was
queued first. A message that cannot leave is handed back to the owner's
`on_undeliverable` (the proxy answers its transaction 503).
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Awaitable, Callable

from iwlab.backends.directory import NodeDirectory
from iwlab.backends.protocols.sip import SipRequest
from iwlab.backends.topology import Operator
from iwlab.backends.transports.sip import (
    MessageHandler,
    SipConnection,
    SipConnectionClosed,
    open_connection,
)

Address = tuple[str, int]
Undeliverable = Callable[[SipRequest], None]


class PeerLink:
    """One outgoing connection to a next hop, with an ordered outbox while it opens."""

    def __init__(self, address: Callable[[], Address | None], *,
                 connect: Callable[[Address], Awaitable[SipConnection]],
                 on_undeliverable: Undeliverable, task_name: str) -> None:
        self._address = address
        self._connect = connect
        self._on_undeliverable = on_undeliverable
        self._task_name = task_name
        self._connection: SipConnection | None = None
        self._outbox: deque[tuple[SipRequest, str]] = deque()
        self._opening: asyncio.Task | None = None

    def send(self, message: SipRequest, note: str) -> None:
        """Send now if the link is up and nothing waits, else queue behind what waits and (re)open."""
        if self._connection and self._connection.is_open and not self._outbox:
            try:
                self._connection.send(message, note=note)
                return
            except SipConnectionClosed:
                pass
        self._outbox.append((message, note))
        if self._opening is None or self._opening.done():
            self._opening = asyncio.create_task(self._open(), name=self._task_name)

    def close(self) -> None:
        if self._opening:
            self._opening.cancel()
        if self._connection:
            self._connection.close()

    async def _open(self) -> None:
        address = self._address()
        try:
            if address is None:
                raise OSError("no address")
            self._connection = await self._connect(address)
        except OSError:
            while self._outbox:
                message, _ = self._outbox.popleft()
                self._on_undeliverable(message)
            return
        while self._outbox:   # in order: nothing overtakes what was queued first
            message, note = self._outbox.popleft()
            try:
                self._connection.send(message, note=note)
            except SipConnectionClosed:
                self._on_undeliverable(message)


class NextHops:
    """The links of one CPM server, one per next hop, kept for the server's lifetime.

    Responses that come back on a link go to `on_message`, like those on accepted connections.
    """

    def __init__(self, *, name: str, nodes: NodeDirectory, annotate: Callable[[str, str], None],
                 on_message: MessageHandler, on_undeliverable: Undeliverable,
                 server_address: Callable[[str], Address | None],
                 iwf_address: Callable[[], Address | None] | None) -> None:
        self._name = name
        self._nodes = nodes
        self._annotate = annotate
        self._on_message = on_message
        self._on_undeliverable = on_undeliverable
        self._server_address = server_address
        self._iwf_address = iwf_address
        self._links: dict[str, PeerLink] = {}

    def to_operator(self, operator: Operator) -> PeerLink:
        return self._link(f"op:{operator.id}", lambda: self._server_address(operator.id))

    def to_iwf(self) -> PeerLink:
        return self._link("iwf", lambda: self._iwf_address() if self._iwf_address else None)

    def to_focus(self, address: Callable[[], Address | None]) -> PeerLink:
        """The operator's conference focus (group chats)."""
        return self._link("focus", address)

    def close(self) -> None:
        for link in self._links.values():
            link.close()

    def _link(self, key: str, address: Callable[[], Address | None]) -> PeerLink:
        if key not in self._links:
            self._links[key] = PeerLink(address, connect=self._connect, on_undeliverable=self._on_undeliverable,
                                        task_name=f"{self._name} next hop")
        return self._links[key]

    async def _connect(self, address: Address) -> SipConnection:
        return await open_connection(address[0], address[1], self._on_message, local_name=self._name,
                                     nodes=self._nodes, annotate=self._annotate)
