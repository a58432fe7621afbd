"""SIP over TCP: the thin transport around the sans-I/O codec in sip.py.

One SipConnection per TCP connection. It frames bytes into messages, hands
them to its owner, matches responses to the requests this end sent (client
transactions, keyed by the top Via branch), and, when it is the recording end
of the connection, writes every message to the trace, after passing it through the trace's
gate (in step mode a message waits there until the trainer lets it go: backends.gate).
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import ssl
from typing import Callable, Iterable, Iterator

from iwlab.backends.directory import NodeDirectory, outside_name
from iwlab.backends.gate import Hop
from iwlab.backends.protocols import sip
from iwlab.backends.protocols.sip import (
    SipParseError,
    SipRequest,
    SipResponse,
    SipStreamParser,
)
from iwlab.backends.routing import Route
from iwlab.backends.trace import Trace
from iwlab.backends.transports import partial
from iwlab.backends.transports.partial import PartialDeadline

log = logging.getLogger(__name__)
SipMessage = SipRequest | SipResponse
MessageHandler = Callable[["SipConnection", "SipMessage | SipParseError"], None]




class SipConnectionClosed(ConnectionError):
    pass


class _HeldWrites:
    """The connections with writes held while a connection handles the bytes it received."""

    def __init__(self) -> None:
        self.connections: list[SipConnection] = []
        self.open = True   # a task or callback begun in the block inherits it: closed, it holds nothing


# A context variable: each lab runs its own loop, on a thread of its own.
_held_writes: contextvars.ContextVar[_HeldWrites | None] = contextvars.ContextVar("held_writes", default=None)


@contextlib.contextmanager
def _writes_held() -> Iterator[None]:
    """Hold the writes of every SIP connection until the block is over, then send each
    connection's in one write, in the order they were made. A proxy handling a peer's pipelined
    requests forwards them, and relays their answers, several at a time, and each send is a
    syscall (~30 µs on loopback, a third of parsing the message): in a profiled bench run,
    72,000 sends became 44,000."""
    outer = _held_writes.get()
    if outer is not None and outer.open:   # the outer block sends them
        yield
        return
    held = _HeldWrites()
    token = _held_writes.set(held)
    try:
        yield
    finally:
        held.open = False
        _held_writes.reset(token)
        for connection in held.connections:
            connection._flush()
        held.connections.clear()   # a task begun in the block keeps `held`: not the connections too


class SipConnection(asyncio.Protocol):
    def __init__(
        self,
        on_message: MessageHandler,
        *,
        local_name: str,
        trace: Trace | None = None,
        nodes: NodeDirectory | None = None,
        on_close: Callable[["SipConnection"], None] | None = None,
        annotate: Callable[[str, str], None] | None = None,
    ) -> None:
        self.on_message = on_message
        self.annotate = annotate        # on a non-recording end: hands our notes to the recorder
        self.local_name = local_name
        self.trace = trace              # set only on the recording end
        self.nodes = nodes
        self.on_close = on_close
        self.peer_name: str | None = None   # set by the owner once it knows (e.g. REGISTER)
        self.parser = SipStreamParser()
        self.transport: asyncio.Transport | None = None
        self.peer_address: tuple[str, int] = ("?", 0)
        self.local_address: tuple[str, int] = ("?", 0)
        self.closed = asyncio.get_running_loop().create_future()
        self._out: list[bytes] | None = None   # writes held while received bytes are handled (_write)
        self._pending: dict[str, asyncio.Future[SipResponse]] = {}
        self._provisional: dict[str, Callable[[SipResponse], None]] = {}
        self._close_asked = False
        self._partial = PartialDeadline(self._partial_due, lambda: partial.PARTIAL_MESSAGE_SECONDS)

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer_address = transport.get_extra_info("peername")[:2]
        self.local_address = transport.get_extra_info("sockname")[:2]
        if self._close_asked:    # closed by a stopping server between accept and now: no socket outlives it
            transport.close()

    def data_received(self, data: bytes) -> None:
        with _writes_held():
            self._take(data)

    def _take(self, data: bytes) -> None:
        events = self.parser.feed(data)
        for event in events:
            self._arrived(event)
        if self.trace is not None:     # the accepting end: a peer that starts a message must finish it
            self._partial.update(self.parser.in_a_message, completed=bool(events))
        if self.parser.broken and self.transport:
            # The stream can no longer be framed; the owner has answered the error.
            if self.trace is not None:
                self.trace.gate.follow(self.close)   # after the answer, which may wait at the gate
            else:
                self.close()

    def _partial_due(self, seconds: float) -> None:
        """A message begun that long ago is still not whole (a slow-loris peer, or a Content-Length
        larger than what it sends): the connection is closed, and the ladder says why."""
        if not self.is_open or self.trace is None:
            return
        self.trace.record(self.name_of_peer(), self.local_name, "SIP", "incomplete message: closed", raw=b"",
                          fields={"event": "partial_message_timeout"},
                          note=f"a message begun {seconds:g} s ago is still not complete; "
                               "the connection is closed", addresses=(self.peer_address, self.local_address),
                          transport=self.transport_name)
        self.close()

    def eof_received(self) -> bool | None:
        for event in self.parser.feed_eof():
            self._arrived(event)
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._partial.cancel()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(SipConnectionClosed(f"connection to {self.name_of_peer()} closed"))
        self._pending.clear()
        if not self.closed.done():
            self.closed.set_result(None)
        if self.nodes is not None and self.trace is None:
            self.nodes.release(self.local_address, self.peer_address)   # our claim: the port may be reused
        if self.on_close:
            self.on_close(self)

    # -- receiving ----------------------------------------------------------
    def _arrived(self, event: SipMessage | SipParseError) -> None:
        """A message from the peer: the recording end passes it through the gate before it counts."""
        if self.trace is None:
            self._dispatch(event)
            return
        self.trace.gate.admit(lambda: self._dispatch(event), lambda: self._hop(event, incoming=True))

    def _dispatch(self, event: SipMessage | SipParseError) -> None:
        try:
            self._handle(event)
        except Exception:   # noqa: BLE001 - one bad message must not take the connection down
            log.exception("%s: error handling a SIP message from %s", self.local_name, self.name_of_peer())
            if isinstance(event, SipRequest) and event.method != "ACK" and self.is_open:
                try:
                    self.send(sip.make_response(event, 500, "Server Internal Error", to_tag=sip.new_tag()))
                except Exception:   # noqa: BLE001
                    pass

    def _handle(self, event: SipMessage | SipParseError) -> None:
        if isinstance(event, SipParseError):
            if self.trace is not None:
                self.trace.record(self.name_of_peer(), self.local_name, "SIP",
                                  f"unparseable SIP: {event.reason}", raw=getattr(event, "raw", b"") or b"",
                                  fields={"error": event.reason, "status": event.status})
            self.on_message(self, event)
            return
        if self.trace is not None:
            self._record(event, incoming=True, raw=event.wire or None)
        event.wire = b""   # the trace has them: the message, kept by whoever takes it, need not
        self._recorded(event)
        if isinstance(event, SipResponse):
            branch = sip.top_branch(event)
            if branch in self._pending:
                if event.status < 200:
                    callback = self._provisional.get(branch)
                    if callback:
                        callback(event)
                    return
                future = self._pending.pop(branch)
                self._provisional.pop(branch, None)
                if not future.done():
                    future.set_result(event)
                return
        self.on_message(self, event)

    def _recorded(self, message: SipMessage) -> None:
        """What this transport adds to a message it received, once the trace has it as it came."""

    # -- sending ------------------------------------------------------------
    @property
    def transport_name(self) -> str:
        """"tcp" or "tls": what a Via or a ;transport= parameter names for this flow."""
        return "tls" if self.transport is not None and self.transport.get_extra_info("ssl_object") else "tcp"

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, message: SipMessage, note: str = "") -> None:
        if not self.is_open:
            raise SipConnectionClosed(f"connection to {self.name_of_peer()} is closed")
        stamp_transport(message, self.transport_name)
        raw = message.to_bytes()
        if self.trace is not None:
            self.trace.gate.admit(lambda: self._put(message, raw, note), lambda: self._hop(message, incoming=False))
            return
        self._write(raw)
        if note and self.annotate and isinstance(message, SipRequest):
            self.annotate(message.headers.get("Call-ID") or "", note)

    def _put(self, message: SipMessage, raw: bytes, note: str) -> None:
        """Write and record (the recording end, once the gate lets the message go)."""
        if not self.is_open:   # closed while it waited at the gate: it never went
            log.info("%s: a message to %s waited at the gate past the connection", self.local_name,
                     self.name_of_peer())
            return
        self._write(raw)
        self._record(message, incoming=False, raw=raw, note=note)

    def _write(self, raw: bytes) -> None:
        """Held, while received bytes are handled (_writes_held); else written now."""
        held = _held_writes.get()
        if held is None or not held.open:
            if self.transport is not None:
                self.transport.write(raw)
        elif self._out is None:
            self._out = [raw]
            held.connections.append(self)
        else:
            self._out.append(raw)

    def _flush(self) -> None:
        out, self._out = self._out, None
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def request(self, request: SipRequest, *, on_provisional: Callable[[SipResponse], None] | None = None,
                note: str = "") -> asyncio.Future[SipResponse]:
        """Send a request whose top Via this end added; the future gets the final response."""
        branch = sip.top_branch(request)
        future: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self._pending[branch] = future
        if on_provisional:
            self._provisional[branch] = on_provisional
        try:
            self.send(request, note=note)
        except SipConnectionClosed:
            self._pending.pop(branch, None)
            self._provisional.pop(branch, None)
            raise
        return future

    def close(self) -> None:
        self._close_asked = True
        self._flush()   # what was written before the close goes before it
        if self.transport and not self.transport.is_closing():
            self.transport.close()

    # -- tracing ------------------------------------------------------------
    def name_of_peer(self) -> str:
        if self.peer_name:
            return self.peer_name
        if self.nodes is not None:
            claimed = self.nodes.lookup(self.peer_address, self.local_address)
            if claimed:
                self.peer_name = claimed
                return claimed
        return outside_name(self.peer_address)

    def _hop(self, message: SipMessage | SipParseError, *, incoming: bool) -> Hop:
        peer, me = self.name_of_peer(), self.local_name
        src, dst = (peer, me) if incoming else (me, peer)
        return hop_of(message, src, dst)

    def _record(self, message: SipMessage, *, incoming: bool, raw: bytes | None = None, note: str = "") -> None:
        assert self.trace is not None
        summary, fields, correlation = sip.describe(message)
        if not note and isinstance(message, SipRequest):   # the terminating domain's reason, on its way to the IWF
            route = Route.from_header(message.headers.get(Route.HEADER))
            note = route.reason if route else ""
        peer, me = self.name_of_peer(), self.local_name
        src, dst = (peer, me) if incoming else (me, peer)
        ends = (self.peer_address, self.local_address) if incoming else (self.local_address, self.peer_address)
        self.trace.record(src, dst, "SIP", summary, raw=raw if raw is not None else message.to_bytes(),
                          fields=fields, is_response=isinstance(message, SipResponse),
                          correlation=correlation, note=note, addresses=ends,
                          transport=self.transport_name)


def hop_of(message: SipMessage | SipParseError, src: str, dst: str) -> Hop:
    """A SIP message at the gate: its kind is the method (MESSAGE IMDN for a notification,
    MESSAGE REVOKE for an RCC.07 revoke) or "status method"."""
    if isinstance(message, SipParseError):
        return Hop(src, dst, "SIP", "unparseable", f"unparseable SIP: {message.reason}")
    summary, _, _ = sip.describe(message)
    if isinstance(message, SipResponse):
        kind = f"{message.status} {sip.cseq_method(message)}"
    else:
        detail = next((d for d in (" IMDN", " REVOKE") if d in summary), "")
        kind = message.method + detail
    return Hop(src, dst, "SIP", kind, summary)


def stamp_transport(message: SipMessage, transport: str) -> None:
    """The top Via of a request is the sender's own: it names the transport really used (RFC 3261 18.1.1)."""
    if isinstance(message, SipRequest):
        vias = message.headers.get_all("Via")
        if vias and sip.with_via_transport(vias[0], transport) != vias[0]:
            message.headers.replace_top("Via", sip.with_via_transport(vias[0], transport))


async def open_connection(host: str, port: int, on_message: MessageHandler, *, local_name: str,
                          nodes: NodeDirectory | None, trace: Trace | None = None,
                          on_close: Callable[[SipConnection], None] | None = None,
                          annotate: Callable[[str, str], None] | None = None,
                          tls: ssl.SSLContext | None = None, server_hostname: str | None = None) -> SipConnection:
    """Connect as an in-lab client: claim the connection so the server can name us.

    The server end records; `annotate` (Trace.annotate) carries our notes to it. With `tls`,
    the connection is SIP over TLS, the server's certificate checked for `server_hostname`.
    """
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(
        lambda: SipConnection(on_message, local_name=local_name, trace=trace, nodes=nodes, on_close=on_close,
                              annotate=annotate),
        host, port, ssl=tls, server_hostname=server_hostname if tls else None)
    if nodes is not None:
        nodes.claim(conn.local_address, local_name, conn.peer_address)
    return conn


def respond(conn: SipConnection, req: SipRequest, status: int, reason: str, note: str = "",
            extra_headers: Iterable[tuple[str, str]] = ()) -> None:
    """Answer `req` on `conn` (a node answering itself, not relaying an answer); nothing answers
    an ACK, and a requester that went away is told nothing."""
    if req.method == "ACK":
        return
    response = sip.make_response(req, status, reason, to_tag=sip.new_tag())
    for name, value in extra_headers:
        response.headers.add(name, value)
    try:
        conn.send(response, note=note)
    except SipConnectionClosed:
        pass


def answer_unparseable(conn: SipConnection, error: SipParseError) -> None:
    """Answer a request that did not parse (sip.answer_to_unparseable); nothing for a response or an ACK."""
    answer = sip.answer_to_unparseable(error)
    if answer is None:
        return
    try:
        conn.send(answer)
    except SipConnectionClosed:
        pass
