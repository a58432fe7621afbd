"""MSRP over TCP (RFC 4975): the thin asyncio transport around the sans-I/O codec in msrp.py.

- ``MsrpListener``: one per node that answers sessions (the IWF, each CPM phone). It accepts
  connections, binds each to the ``MsrpSession`` named by the session-id in the first request's
  To-Path, and, being the accepting end, RECORDS every MSRP message in the trace.
- ``connect``: the offerer's (active) side. It claims its local address in the NodeDirectory so the
  listener can name it, and sends the bodiless SEND at once (RFC 4975 5.4, 7.1.1).
  The recording end passes every message through the trace's gate first (step mode: backends.gate).
- ``MsrpSession``: one end of a session. ``send_text`` chunks large messages (Byte-Range), asks for
  a REPORT when told to; incoming SENDs are answered 200 (unless Failure-Report says not to),
  reassembled in any order, REPORTed when Success-Report: yes, and handed to ``on_message`` whole.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Callable

from iwlab.backends.directory import NodeDirectory, outside_name
from iwlab.backends.gate import Hop
from iwlab.backends.protocols import msrp
from iwlab.backends.protocols.cpim import CpimError, parse_cpim
from iwlab.backends.protocols.msrp import MsrpParseError, MsrpRequest, MsrpResponse
from iwlab.backends.trace import Trace
from iwlab.backends.transports import partial
from iwlab.backends.transports.guard import ConnectionGuard
from iwlab.backends.transports.partial import PartialDeadline

log = logging.getLogger(__name__)
Address = tuple[str, int]
MessageCallback = Callable[["MsrpSession", str, str, str], None]   # (session, text, content_type, message_id)
MAX_CHUNK = 2048
# RFC 4975 5.4: the end that connects sends a SEND at once, naming its session. An accepted
# connection that has named none by then is closed (it would hold a socket of the listener's).
BIND_SECONDS = 30.0


class MsrpSession:
    """One end of an MSRP session: our URI, the peer's path, and the connection once bound."""

    def __init__(self, local_uri: str, *, call_id: str = "", on_message: MessageCallback | None = None,
                 on_close: Callable[["MsrpSession"], None] | None = None, max_chunk: int = MAX_CHUNK) -> None:
        self.local_uri = local_uri
        self.remote_path: list[str] = []        # the peer's a=path (To-Path of what we send)
        self.call_id = call_id
        self.conversation_id = ""               # the CPM Conversation-ID, for the ladder's colours and filter
        self.on_message = on_message
        self.on_close = on_close
        self.max_chunk = max_chunk
        self.connection: MsrpConnection | None = None
        self.bound = asyncio.get_running_loop().create_future()
        self.reassembler = msrp.Reassembler()
        self._queue: list[MsrpRequest] = []     # written once the connection is bound, in order
        self.responses: dict[str, MsrpResponse] = {}   # transaction id -> response (for checks)
        self.reports: list[MsrpRequest] = []
        self.sender = ""      # the CPIM From of the message being handed to on_message ("" if not CPIM): a group's author
        self.closed = False

    @property
    def session_id(self) -> str:
        return msrp.parse_msrp_uri(self.local_uri).session_id or ""

    def attach(self, connection: "MsrpConnection") -> None:
        self.connection = connection
        if not self.bound.done():
            self.bound.set_result(None)
        queued, self._queue = self._queue, []
        for req in queued:
            connection.write(req, self)

    def send_text(self, text: str, content_type: str = "text/plain;charset=utf-8", *,
                  report: bool = False) -> str:
        """Send one message (chunked if large); returns its Message-ID. Queued until bound."""
        return self.send_bytes(text.encode("utf-8"), content_type, report=report)

    def send_bytes(self, body: bytes, content_type: str, *, report: bool = False) -> str:
        if self.closed:
            raise ConnectionError("the MSRP session is closed")
        message_id = msrp.new_message_id()
        headers = [("Success-Report", "yes")] if report else []
        for req in msrp.chunk(self.remote_path, [self.local_uri], message_id, content_type, body,
                              max_chunk=self.max_chunk, headers=headers):
            self._write(req)
        return message_id

    def _write(self, req: MsrpRequest) -> None:
        if self.connection is not None and self.connection.is_open:
            self.connection.write(req, self)
        else:
            self._queue.append(req)

    def received(self, req: MsrpRequest) -> None:
        """A SEND for this session (already answered): reassemble, report, deliver."""
        try:
            body = self.reassembler.add(req)
        except MsrpParseError:
            return
        if body is None:
            return
        if msrp.wants_success_report(req):
            self._write(msrp.report_for(req, total=len(body)))
        content_type = (req.content_type or "").split(";", 1)[0].strip().lower()
        text = body.decode("utf-8", "replace")
        self.sender = ""
        if content_type == "message/cpim":
            try:
                cpim = parse_cpim(body)
            except CpimError:
                pass
            else:
                if cpim.is_imdn:
                    return
                text, content_type, self.sender = cpim.text, cpim.content_type, cpim.sender
        if self.on_message:
            self.on_message(self, text, content_type, req.message_id or "")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.connection is not None:
            self.connection.sessions.discard(self)
            if not self.connection.sessions:
                self.connection.close()
        if self.on_close:
            self.on_close(self)


class MsrpConnection(asyncio.Protocol):
    """One TCP connection carrying MSRP for one or more sessions."""

    def __init__(self, *, local_name: str, trace: Trace | None = None, nodes: NodeDirectory | None = None,
                 lookup: Callable[[str], MsrpSession | None] | None = None,
                 on_close: Callable[["MsrpConnection"], None] | None = None) -> None:
        self.local_name = local_name
        self.trace = trace          # set only on the recording (accepting) end
        self.nodes = nodes
        self.lookup = lookup        # listener side: session-id -> session
        self.on_close_cb = on_close
        self.parser = msrp.MsrpStreamParser()
        self.transport: asyncio.Transport | None = None
        self.peer_address: Address = ("?", 0)
        self.local_address: Address = ("?", 0)
        self.peer_name: str | None = None
        self.sessions: set[MsrpSession] = set()
        self._by_session_id: dict[str, MsrpSession] = {}
        self._close_asked = False
        self._bind_timer: asyncio.TimerHandle | None = None   # the accepting end: a session named in time?
        self._partial = PartialDeadline(self._partial_due, lambda: partial.PARTIAL_MESSAGE_SECONDS)

    # -- asyncio.Protocol --------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer_address = transport.get_extra_info("peername")[:2]
        self.local_address = transport.get_extra_info("sockname")[:2]
        if self._close_asked:    # closed by a stopping server between accept and now: no socket outlives it
            transport.close()
        elif self.lookup is not None:
            self._bind_timer = asyncio.get_running_loop().call_later(BIND_SECONDS, self._bind_due)

    def data_received(self, data: bytes) -> None:
        events = self.parser.feed(data)
        for event in events:
            self._arrived(event)
        if self.trace is not None:     # the accepting end: a peer that starts a message must finish it
            self._partial.update(self.parser.in_a_message, completed=bool(events))
        if self.parser.broken:
            if self.trace is not None:
                self.trace.gate.follow(self.close)   # after the answer, which may wait at the gate
            else:
                self.close()

    def eof_received(self) -> bool | None:
        for event in self.parser.feed_eof():
            self._arrived(event)
        return None

    def _arrived(self, event: MsrpRequest | MsrpResponse | MsrpParseError) -> None:
        if self.trace is None:
            self._dispatch(event)
            return
        self.trace.gate.admit(lambda: self._dispatch(event), lambda: self._hop(event, incoming=True))

    def _bind_due(self) -> None:
        self._bind_timer = None
        if self.sessions or not self.is_open:
            return
        self._closed_because("no session named in time: closed", "msrp_bind_timeout",
                             f"no SEND naming a session of ours within {BIND_SECONDS:g} s of connecting "
                             "(RFC 4975 5.4: the connecting end sends one at once); the connection is closed")

    def _partial_due(self, seconds: float) -> None:
        """A message begun that long ago is still not whole (a slow-loris peer): close, and say why."""
        if self.is_open:
            self._closed_because("incomplete message: closed", "partial_message_timeout",
                                 f"a message begun {seconds:g} s ago is still not complete; the connection is closed")

    def _closed_because(self, summary: str, event: str, note: str) -> None:
        if self.trace is not None:
            self.trace.record(self.name_of_peer(), self.local_name, "MSRP", summary, raw=b"",
                              fields={"event": event}, note=note,
                              addresses=(self.peer_address, self.local_address), transport="tcp")
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._partial.cancel()     # nothing of a gone connection stays scheduled
        if self.nodes is not None and self.trace is None:   # the connecting end: its claim (see connect)
            self.nodes.release(self.local_address, self.peer_address)
        if self._bind_timer is not None:
            self._bind_timer.cancel()
            self._bind_timer = None
        if self.on_close_cb:
            self.on_close_cb(self)
        for session in list(self.sessions):
            if session.connection is self:
                session.connection = None
                session.close()

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self._close_asked = True
        if self.transport and not self.transport.is_closing():
            self.transport.close()

    # -- receiving ---------------------------------------------------------------
    def _session_for(self, message: MsrpRequest | MsrpResponse) -> tuple[MsrpSession | None, bool]:
        """The session the message's To-Path names, and whether this message binds it to us now."""
        try:
            session_id = msrp.parse_msrp_uri(message.to_path[-1]).session_id or ""
        except (MsrpParseError, IndexError):
            return None, False
        session = self._by_session_id.get(session_id)
        if session is None and self.lookup is not None:
            session = self.lookup(session_id)
            return session, session is not None
        return session, False


    def bind(self, session: MsrpSession) -> None:
        self.sessions.add(session)
        self._by_session_id[session.session_id] = session

    def _dispatch(self, event: MsrpRequest | MsrpResponse | MsrpParseError) -> None:
        if isinstance(event, MsrpParseError):
            partial = event.partial
            session, binds = self._session_for(partial) if partial is not None and partial.to_path else (None, False)
            if self.trace is not None:
                # The octets as they came: what was refused may not even serialise again.
                self.trace.record(self.name_of_peer(), self.local_name, "MSRP",
                                  f"unparseable MSRP: {event.reason}", raw=event.raw,
                                  fields={"error": event.reason, "status": event.status},
                                  correlation=_correlation(session, partial))
            answer = msrp.error_response(event, local_uri=session.local_uri if session else None)
            if answer is not None and not event.fatal:   # (error_response makes only what MSRP can carry)
                self.write(answer, session)
            return
        session, binds = self._session_for(event)
        if self.trace is not None:
            self._record(event, session, incoming=True)
        if binds and session is not None and isinstance(event, MsrpRequest):
            self.bind(session)
            try:
                self._handle(event, session)
            finally:
                session.attach(self)   # now what waited for the peer may go: after the bind's 200
            return
        self._handle(event, session)

    def _handle(self, event: MsrpRequest | MsrpResponse, session: MsrpSession | None) -> None:
        if isinstance(event, MsrpResponse):
            if session is not None:
                session.responses[event.transaction_id] = event
            return
        if session is None:
            if msrp.needs_response(event, 481):
                self.write(msrp.response_for(event, 481), None)
            return
        if event.method == "REPORT":
            session.reports.append(event)
            return
        if event.method != "SEND":
            if msrp.needs_response(event, 501):
                self.write(msrp.response_for(event, 501, local_uri=session.local_uri), session)
            return
        if msrp.needs_response(event, 200):
            self.write(msrp.response_for(event, 200, local_uri=session.local_uri), session)
        session.received(event)

    # -- sending -----------------------------------------------------------------
    def write(self, message: MsrpRequest | MsrpResponse, session: MsrpSession | None) -> None:
        if not self.is_open:
            return
        raw = message.to_bytes()
        if self.trace is not None:
            self.trace.gate.admit(lambda: self._put(message, session, raw), lambda: self._hop(message, incoming=False))
            return
        assert self.transport is not None
        self.transport.write(raw)

    def _put(self, message: MsrpRequest | MsrpResponse, session: MsrpSession | None, raw: bytes) -> None:
        if not self.is_open:    # closed while it waited at the gate: it never went
            return
        assert self.transport is not None
        self.transport.write(raw)
        self._record(message, session, incoming=False, raw=raw)

    def _hop(self, message: MsrpRequest | MsrpResponse | MsrpParseError, *, incoming: bool) -> Hop:
        peer, me = self.name_of_peer(), self.local_name
        src, dst = (peer, me) if incoming else (me, peer)
        if isinstance(message, MsrpParseError):
            return Hop(src, dst, "MSRP", "unparseable", f"unparseable MSRP: {message.reason}")
        summary, _ = msrp.describe(message)
        kind = str(message.status) if isinstance(message, MsrpResponse) else message.method
        return Hop(src, dst, "MSRP", kind, summary)

    # -- tracing -----------------------------------------------------------------
    def name_of_peer(self) -> str:
        if self.peer_name:
            return self.peer_name
        if self.nodes is not None:
            claimed = self.nodes.lookup(self.peer_address, self.local_address)
            if claimed:
                self.peer_name = claimed
                return claimed
        return outside_name(self.peer_address)

    def _record(self, message: MsrpRequest | MsrpResponse, session: MsrpSession | None, *, incoming: bool,
                raw: bytes | None = None) -> None:
        assert self.trace is not None
        peer, me = self.name_of_peer(), self.local_name
        src, dst = (peer, me) if incoming else (me, peer)
        summary, fields = msrp.describe(message)
        ends = (self.peer_address, self.local_address) if incoming else (self.local_address, self.peer_address)
        self.trace.record(src, dst, "MSRP", summary, raw=raw if raw is not None else message.to_bytes(),
                          fields=fields, is_response=isinstance(message, MsrpResponse),
                          correlation=_correlation(session, message), addresses=ends, transport="tcp")


def _correlation(session: MsrpSession | None, message) -> dict[str, str]:
    correlation = {"call_id": session.call_id if session else "",
                   "conversation_id": session.conversation_id if session else ""}
    if isinstance(message, MsrpRequest):
        correlation["msrp_message_id"] = message.message_id or ""
    if message is not None:
        correlation["msrp_transaction_id"] = message.transaction_id or ""
    return correlation


class MsrpListener:
    """Accepts MSRP connections for the sessions this node answered; records everything it sees."""

    def __init__(self, *, host: str, local_name: str, trace: Trace | None, nodes: NodeDirectory | None) -> None:
        self.host = host
        self.local_name = local_name
        self.trace = trace
        self.nodes = nodes
        self.port = 0
        self.sessions: dict[str, MsrpSession] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[MsrpConnection] = set()
        self.guard = ConnectionGuard(f"{local_name} MSRP")
        self._starting = asyncio.Lock()     # two sessions answered at once start one server, not two
        self._stopping = False

    async def start(self, port: int = 0) -> int:
        async with self._starting:
            self._stopping = False
            if self._server is None:
                loop = asyncio.get_running_loop()
                self._server = await loop.create_server(self.guard.factory(self._new_connection), self.host, port)
                self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        self._stopping = True      # what the loop still accepts from now on is closed at once
        if self._server:
            self._server.close()
        for session in list(self.sessions.values()):
            session.close()
        for conn in list(self._connections):
            conn.close()
        if self._server:
            await self._server.wait_closed()
            self._server = None

    def _new_connection(self) -> MsrpConnection:
        conn = MsrpConnection(local_name=self.local_name, trace=self.trace, nodes=self.nodes,
                              lookup=self.sessions.get, on_close=self._connections.discard)
        self._connections.add(conn)
        if self._stopping:     # accepted while the listener stops: no socket outlives it
            conn.close()
        return conn

    def new_session(self, *, call_id: str = "", on_message: MessageCallback | None = None,
                    on_close: Callable[[MsrpSession], None] | None = None) -> MsrpSession:
        """A session answered here: its URI names this listener; the peer connects to it."""
        from iwlab.backends.protocols.sdp import msrp_path
        session_id = secrets.token_hex(8)
        session = MsrpSession(msrp_path(self.host, self.port, session_id), call_id=call_id,
                              on_message=on_message, on_close=self._forget(on_close))
        self.sessions[session_id] = session
        return session

    def _forget(self, on_close):
        def closed(session: MsrpSession) -> None:
            self.sessions.pop(session.session_id, None)
            if on_close:
                on_close(session)
        return closed


async def connect(session: MsrpSession, host: str, port: int, *, local_name: str,
                  nodes: NodeDirectory | None) -> MsrpConnection:
    """The active side: open the connection, claim our address, send the bodiless SEND at once."""
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: MsrpConnection(local_name=local_name, nodes=nodes), host, port)
    if nodes is not None:
        nodes.claim(conn.local_address, local_name, conn.peer_address)
    conn.bind(session)
    conn.write(msrp.bodiless_send(session.remote_path, [session.local_uri]), session)
    session.attach(conn)
    return conn


def local_session(host: str, port: int, *, call_id: str = "", on_message: MessageCallback | None = None,
                  on_close: Callable[[MsrpSession], None] | None = None) -> MsrpSession:
    """A session we offer (active: we connect, so nothing listens on ``port``; it only names us)."""
    from iwlab.backends.protocols.sdp import msrp_path
    return MsrpSession(msrp_path(host, port, secrets.token_hex(8)), call_id=call_id, on_message=on_message,
                       on_close=on_close)
