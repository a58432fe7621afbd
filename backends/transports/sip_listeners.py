"""Where a SIP node listens: UDP and TCP on one port, TLS on another, on every lab address.

RFC 3261 18: a server listens on UDP and TCP alike (softphones default to UDP); TLS comes
with the lab's own CA (backends/tls.py). Each listening address may be IPv4 or IPv6. The
node gives the factory of its TCP/TLS connections and the handler of its UDP flows; what
arrives on any of them looks the same to it (a SipConnection or a SipUdpFlow).
"""
from __future__ import annotations

import asyncio
import errno
import ssl
from dataclasses import dataclass
from typing import Callable

from iwlab.backends.directory import NodeDirectory
from iwlab.backends.protocols import sip
from iwlab.backends.trace import Trace
from iwlab.backends.transports.guard import ConnectionGuard
from iwlab.backends.transports.sip import MessageHandler, SipConnection
from iwlab.backends.transports.sip_udp import SipUdpEndpoint, open_udp_endpoint


@dataclass(frozen=True)
class Listener:
    """One listening socket, as the endpoints table and JSON show it."""
    transport: str            # "udp" | "tcp" | "tls"
    host: str
    port: int

    @property
    def address(self) -> str:
        return sip.hostport(self.host, self.port)


class SipListeners:
    def __init__(self, *, name: str, new_connection: Callable[[], SipConnection], on_message: MessageHandler,
                 trace: Trace, nodes: NodeDirectory, on_close: Callable[[SipConnection], None] | None = None) -> None:
        self._name, self._new_connection, self._on_message = name, new_connection, on_message
        self._trace, self._nodes, self._on_close = trace, nodes, on_close
        self._servers: list[asyncio.Server] = []
        self._udp: list[SipUdpEndpoint] = []
        self.listeners: list[Listener] = []
        self.guard = ConnectionGuard(f"{name} SIP")   # TCP and TLS together: a flood is refused, the rest served

    @property
    def port(self) -> int:
        """The UDP/TCP port (the same on every address)."""
        return next((item.port for item in self.listeners if item.transport == "tcp"), 0)

    @property
    def tls_port(self) -> int | None:
        return next((item.port for item in self.listeners if item.transport == "tls"), None)

    async def start(self, hosts: list[str], port: int, *, tls: ssl.SSLContext | None = None,
                    tls_port: int = 0) -> None:
        """TCP and UDP on `port` (0: one free number for both) and, with a context, TLS on `tls_port`."""
        for attempt in range(20):
            try:
                await self._open_plain(hosts, port)
                break
            except OSError as exc:
                # Port 0: TCP got a free number that UDP (or another address) does not have; take another.
                await self.stop()
                if port != 0 or exc.errno != errno.EADDRINUSE or attempt == 19:
                    raise
        if tls is not None:
            loop = asyncio.get_running_loop()
            for host in hosts:
                server = await loop.create_server(self.guard.factory(self._new_connection), host, tls_port, ssl=tls)
                self._servers.append(server)
                tls_port = server.sockets[0].getsockname()[1]
                self.listeners.append(Listener("tls", host, tls_port))

    async def _open_plain(self, hosts: list[str], port: int) -> None:
        loop = asyncio.get_running_loop()
        for host in hosts:
            server = await loop.create_server(self.guard.factory(self._new_connection), host, port)
            self._servers.append(server)
            port = server.sockets[0].getsockname()[1]
            self.listeners.append(Listener("tcp", host, port))
            endpoint = await open_udp_endpoint(host, port, self._on_message, local_name=self._name, trace=self._trace,
                                               nodes=self._nodes, on_close=self._on_close)
            self._udp.append(endpoint)
            self.listeners.append(Listener("udp", host, port))

    def close(self) -> None:
        """Accept nothing more (open connections are the node's to close)."""
        for server in self._servers:
            server.close()
        for endpoint in self._udp:
            endpoint.close()

    async def stop(self) -> None:
        self.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._udp.clear()
        self.listeners.clear()
