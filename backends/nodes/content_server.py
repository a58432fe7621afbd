"""The lab's content server: what a legacy device cannot carry, served by a link on loopback.

An image, a file, an FT-over-HTTP description a CPM user sends to an SMS user cannot go as SMS:
the IWF puts the original payload here (put) and sends a short text with the link; the link
returns the original bytes with their Content-Type (GET, HEAD). Bounded: an item over
`max_item` bytes is refused (the IWF then says it could not be carried), and past `max_total`
the oldest items go first. Links are unguessable tokens; nothing else is served.
"""
from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass

from iwlab.backends.directory import NodeDirectory
from iwlab.backends.protocols import sip
from iwlab.backends.protocols.http import HttpRequest
from iwlab.backends.trace import Trace
from iwlab.backends.transports.http_server import HttpServer

MAX_ITEM = 1_000_000          # bytes of one item (a CPIM body over SIP is smaller anyway)
MAX_TOTAL = 16_000_000        # bytes of everything held
PREFIX = "/c/"


@dataclass(frozen=True)
class Item:
    data: bytes
    content_type: str
    filename: str = ""


class ContentServer:
    def __init__(self, trace: Trace, nodes: NodeDirectory, *, name: str = "Content", host: str = "127.0.0.1",
                 max_item: int = MAX_ITEM, max_total: int = MAX_TOTAL) -> None:
        self.name = name
        self.host = host
        self.max_item = max_item
        self.max_total = max_total
        self._items: OrderedDict[str, Item] = OrderedDict()
        self._total = 0
        self.http = HttpServer(name=name, trace=trace, nodes=nodes, handler=self._handle)

    @property
    def port(self) -> int:
        return self.http.port

    async def start(self, port: int = 0) -> int:
        return await self.http.start(self.host, port)

    async def stop(self) -> None:
        await self.http.stop()

    def put(self, data: bytes, content_type: str, filename: str = "") -> str | None:
        """Keep a payload; its link, or None when it is too big (or the server is not running)."""
        if not self.port or len(data) > self.max_item:
            return None
        token = secrets.token_urlsafe(12)
        self._items[token] = Item(bytes(data), content_type or "application/octet-stream", filename)
        self._total += len(data)
        while self._total > self.max_total and self._items:
            _, gone = self._items.popitem(last=False)
            self._total -= len(gone.data)
        return f"http://{sip.hostport(self.host, self.port)}{PREFIX}{token}"

    def get(self, url_or_token: str) -> Item | None:
        return self._items.get(url_or_token.rsplit("/", 1)[-1])

    def _handle(self, request: HttpRequest):
        if request.method not in ("GET", "HEAD"):
            return 405, b"", None, [("Allow", "GET, HEAD")], {}
        token = request.path[len(PREFIX):] if request.path.startswith(PREFIX) else ""
        item = self._items.get(token) if token and "/" not in token else None
        if item is None:
            return 404, b"no such content\n", "text/plain; charset=utf-8", [], {}
        extra = [("Cache-Control", "private, max-age=3600"), ("X-Content-Type-Options", "nosniff")]
        if item.filename:
            extra.append(("Content-Disposition", f'inline; filename="{_quoted(item.filename)}"'))
        return 200, item.data, item.content_type, extra, {"content_token": token}


def _quoted(name: str) -> str:
    """A file name safe inside a quoted-string on one header line."""
    return "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in name)[:100]
