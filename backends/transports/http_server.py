"""A thin asyncio HTTP/1.1 server: reads bounded request heads, asks a handler, writes the
response, records both in the trace (this end accepts, so this end records, once).

Persistent connections (RFC 9112 9.3) up to MAX_REQUESTS each; an idle connection is closed
after `idle_seconds`; a head over protocols/http.MAX_HEAD gets 431 and the connection closes.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from iwlab.backends.directory import NodeDirectory, outside_name
from iwlab.backends.protocols import http
from iwlab.backends.protocols.http import HttpError, HttpRequest
from iwlab.backends.trace import Trace

log = logging.getLogger(__name__)
PROTOCOL = "HTTP"
MAX_REQUESTS = 100
# (request) -> (status, body, content type, extra headers, correlation ids for the trace)
Handler = Callable[[HttpRequest], tuple[int, bytes, str | None, list[tuple[str, str]], dict[str, str]]]


class HttpServer:
    def __init__(self, *, name: str, trace: Trace, nodes: NodeDirectory, handler: Handler,
                 idle_seconds: float = 10.0) -> None:
        self.name = name
        self._trace = trace
        self._nodes = nodes
        self._handler = handler
        self.idle_seconds = idle_seconds
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task] = set()
        self.port = 0

    async def start(self, host: str, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve, host, port, limit=http.MAX_HEAD + 2)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=2)
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")[:2]
        local = writer.get_extra_info("sockname")[:2]
        client = self._nodes.lookup(peer, local) or outside_name(peer)
        addresses = (peer, local)
        try:
            for _ in range(MAX_REQUESTS):
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_seconds)
                except (asyncio.TimeoutError, asyncio.IncompleteReadError):
                    return                                 # idle, or the client went away
                except asyncio.LimitOverrunError:
                    self._answer(writer, client, addresses, http.response(431, close=True), {})
                    return
                try:
                    request = http.parse_request_head(head)
                except HttpError as exc:
                    self._trace.record(client, self.name, PROTOCOL, f"(unreadable) {exc.reason}"[:80], raw=head,
                                       fields={"error": exc.reason}, addresses=addresses, transport="tcp")
                    self._answer(writer, client, addresses, http.response(exc.status, close=True), {})
                    return
                status, body, content_type, extra, correlation = self._handler(request)
                summary, fields = http.describe_request(request)
                self._trace.record(client, self.name, PROTOCOL, summary, raw=head, fields=fields,
                                   correlation=correlation, addresses=addresses, transport="tcp")
                keep = request.keep_alive
                data = http.response(status, body=body, content_type=content_type, head_only=request.method == "HEAD",
                                     close=not keep, extra=extra)
                self._answer(writer, client, addresses, data, correlation)
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    def _answer(self, writer: asyncio.StreamWriter, client: str, addresses, data: bytes,
                correlation: dict[str, str]) -> None:
        summary, fields = http.describe_response(data)
        self._trace.record(self.name, client, PROTOCOL, summary, raw=data, fields=fields, is_response=True,
                           correlation=correlation, addresses=(addresses[1], addresses[0]), transport="tcp")
        writer.write(data)
