"""The accepting end of an SMTP connection: aiosmtpd's SMTP, with every line traced.

This end accepts every SMTP connection, so it records the dialogue: one event
per command line, one per reply (a multi-line reply is one event), one for
the DATA payload. The hook: aiosmtpd reads every line from `self._reader`
and writes every reply through `push()`; we wrap the reader right where
aiosmtpd receives it (`_cb_client_connected`) and override `push`, so the
trace sees exactly the bytes aiosmtpd consumes and sends, in its own order,
without re-implementing its state machine.

Naming: the greeting goes out before an in-lab client can claim its address
(aiosmtplib's connect() waits for it), so events are held until the client
is known: a claim seen at any command, else node_name_for(MAIL FROM), else
"ip:port" at the first other command. The whole dialogue then sits in one
ladder column.

What the mail does (the handle_* hooks, policy, storage) is the server's
(`SmtpHost`), which is also aiosmtpd's handler.

Step mode: every command line, reply and message content waits at the trace's gate
(backends.gate) before aiosmtpd sees or sends it. The greeting is the exception the
naming makes: it goes when released, but its row waits for the client's name (next row).
"""
from __future__ import annotations

import asyncio
import random
import re
from typing import Any, Callable, Protocol, cast

from aiosmtpd import __version__ as aiosmtpd_version
from aiosmtpd.smtp import SMTP

from iwlab.backends.directory import NodeDirectory, outside_name
from iwlab.backends.gate import Hop
from iwlab.backends.protocols.mail import format_size
from iwlab.backends.trace import Trace

PROTOCOL = "SMTP"

# aiosmtpd answers these itself; give them enhanced status codes (RFC 3463)
# and a reason, like every other refusal here. Matched exactly: a test fails
# if an aiosmtpd release rewords them. "{limit}" is replaced, never formatted:
# replies echo what the client sent, braces included.
_REWRITES = {
    "552 Error: message size exceeds fixed maximum message size":
        "552 5.3.4 Message size exceeds fixed maximum message size of {limit} bytes",
    "552 Error: Too much mail data": "552 5.3.4 Message too big: more than {limit} bytes of data",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line longer than 1000 octets (RFC 5321 4.5.3.1.6)",
}
_MAIL_FROM = re.compile(rb"^MAIL\s+FROM:\s*<?([^<>\s]*)>?", re.I)
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
# aiosmtpd's other refusals ("500 Error: command ... not recognized", "503 Error: need RCPT
# command") carry no enhanced code: the class's usual one (RFC 3463 3.6, 3.5, 3.8).
_NO_ENHANCED = re.compile(r"^([45])(\d\d)([ -])(?![245]\.\d{1,3}\.\d{1,3}(?:\s|$))")
_DEFAULT_ENHANCED = {"500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4",
                     "530": "5.7.0", "552": "5.3.4", "554": "5.7.0", "555": "5.5.4", "421": "4.3.0"}


class SmtpHost(Protocol):
    """The mail server a TracedSMTP serves: aiosmtpd's handler (handle_* hooks) and the trace's node."""
    trace: Trace
    nodes: NodeDirectory
    name: str
    hostname: str
    max_size: int
    node_name_for: Callable[[str], str | None] | None
    answer_delay_ms: int          # conditions: every reply this much later, plus a random 0..jitter
    answer_jitter_ms: int

    @property
    def accepting(self) -> bool: ...

    def next_session_id(self) -> int: ...

    def connection_opened(self, connection: TracedSMTP) -> None: ...

    def connection_closed(self, connection: TracedSMTP) -> None: ...


MAX_LINE_KEPT = 8192     # bytes of one command line kept for the trace


class TapReader:
    """Stands in for aiosmtpd's StreamReader: passes every read through and
    shows the bytes to the session first."""

    def __init__(self, reader: asyncio.StreamReader, session: TracedSMTP) -> None:
        self._reader, self._session = reader, session

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        try:
            data = await self._reader.readuntil(separator)
        except asyncio.IncompleteReadError as exc:
            # The client closed its side inside a line. aiosmtpd would answer that with an error
            # and read again, for ever (a hot loop writing replies to a half-closed socket):
            # the conversation is over, so say so the way aiosmtpd ends a lost connection.
            if exc.partial:
                self._session.bytes_read(exc.partial, complete=False)
            raise ConnectionResetError("the client closed the connection inside a command line") from None
        await self._session.line_passage(data)
        self._session.bytes_read(data, complete=True)
        return data

    async def read(self, n: int = -1) -> bytes:      # aiosmtpd's way past an over-long line
        data = await self._reader.read(n)
        self._session.bytes_read(data, complete=False)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


class TracedSMTP(SMTP):
    """One SMTP connection, as aiosmtpd runs it, with every line traced."""

    def __init__(self, mail: SmtpHost, loop: asyncio.AbstractEventLoop) -> None:
        # hostname given: aiosmtpd would otherwise call socket.getfqdn() (DNS) per connection.
        super().__init__(mail, data_size_limit=mail.max_size, enable_SMTPUTF8=True, decode_data=False,
                         hostname=mail.hostname, ident=f"ESMTP iwlab (aiosmtpd {aiosmtpd_version})", loop=loop)
        self.mail = mail
        self.session_id = f"smtp-{mail.next_session_id()}"
        self.peer_address: tuple[str, int] = ("?", 0)
        self.local_address: tuple[str, int] = ("?", 0)
        self.node_name: str | None = None          # None until we know who the client is
        self._held: list[dict[str, Any]] = []      # events recorded before that
        self._partial = bytearray()                # an over-long command line, read in pieces
        self._partial_size = 0                     # ... all of it, even past the kept bytes
        self._reply_lines: list[str] = []
        self._payload: bytearray | None = None     # DATA bytes as sent, between 354 and the verdict
        self._payload_recorded = False
        self._payload_size = 0                     # all of it, even past the kept bytes
        self.routes: dict[str, str] = {}           # rcpt -> "mailbox" | "relay", this transaction
        self.correlation: dict[str, str] = {}      # of the message in this transaction

    @property
    def session_task(self) -> asyncio.Task[None] | None:
        """aiosmtpd's task for this session (it cancels it in connection_lost)."""
        return self._handler_coroutine

    # -- connection ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer_address = tuple(transport.get_extra_info("peername")[:2])
        self.local_address = tuple(transport.get_extra_info("sockname")[:2])
        if not self.mail.accepting:     # accepted while the server stops: no socket outlives it
            transport.close()
            return
        self.mail.connection_opened(self)
        super().connection_made(transport)
        if self._handler_coroutine is not None:
            # A session that ends by a lost connection re-raises it; nobody else awaits the task.
            self._handler_coroutine.add_done_callback(lambda task: task.cancelled() or task.exception())

    def _cb_client_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A stand-in, not a StreamReader: aiosmtpd reads with readuntil() and read(); the rest passes through.
        super()._cb_client_connected(cast(asyncio.StreamReader, TapReader(reader, self)), writer)

    def connection_lost(self, error: Exception | None) -> None:
        self.mail.connection_closed(self)
        if self._payload and not self._payload_recorded:
            self.record_payload(self._payload_size, {}, {}, note="connection lost during DATA: nothing stored")
        self._name_peer(self.node_name or outside_name(self.peer_address))
        super().connection_lost(error)

    # -- naming: in-lab clients claim their address; others are named by MAIL FROM ----------
    def _name_peer(self, name: str) -> None:
        self.node_name = name
        held, self._held = self._held, []
        for event in held:
            self._record(**event)

    def _naming_line(self, line: bytes) -> None:
        if self.node_name:
            return
        claimed = self._claimed()
        verb = line.split(b" ", 1)[0].strip().upper()
        if claimed:
            self._name_peer(claimed)
        elif verb == b"MAIL":
            match = _MAIL_FROM.match(line)
            sender = match.group(1).decode("utf-8", "replace") if match else ""
            by_sender = self.mail.node_name_for(sender) if self.mail.node_name_for and sender else None
            self._name_peer(by_sender or outside_name(self.peer_address))
        elif verb not in (b"EHLO", b"HELO", b"NOOP", b"RSET"):
            self._name_peer(outside_name(self.peer_address))
        # Greeting and handshake wait (held) until then, so one ladder column shows the whole dialogue.

    def _record(self, **event: Any) -> None:
        claimed = self._claimed() if self.node_name is None else None
        if claimed:
            self._name_peer(claimed)   # claimed meanwhile (step mode)
        if self.node_name is None:
            self._held.append(event)
            return
        client, server = self.node_name, self.mail.name
        from_client = event.pop("from_client")
        src, dst = (client, server) if from_client else (server, client)
        ends = (self.peer_address, self.local_address) if from_client else (self.local_address, self.peer_address)
        correlation = {"smtp_session": self.session_id, **event.pop("correlation", {})}
        self.mail.trace.record(src, dst, PROTOCOL, correlation=correlation, addresses=ends, transport="tcp", **event)

    def _claimed(self) -> str | None:
        """The in-lab node that claimed this connection, if one did."""
        return self.mail.nodes.lookup(self.peer_address, self.local_address)

    # -- the gate (step mode) ------------------------------------------------------------------
    def _client_name(self) -> str:
        return self.node_name or self._claimed() or outside_name(self.peer_address)

    async def line_passage(self, line: bytes) -> None:
        """A command line, or the end of a message's content, waits at the gate (step mode)."""
        if self._payload is not None and line not in (b".\r\n", b".\n"):
            return    # a line of the message itself: its one row is the whole content, at its end
        if self._payload is not None:
            kind, summary = "message", "the message content (DATA)"
        else:
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            kind, summary = text.split(" ", 1)[0].upper(), cut(text)
        await self.mail.trace.gate.passage(lambda: Hop(self._client_name(), self.mail.name, PROTOCOL, kind, summary))

    # -- what aiosmtpd reads ----------------------------------------------------------------
    def bytes_read(self, data: bytes, complete: bool) -> None:
        if self._payload is not None:             # DATA content: one event at its end
            self._payload_size += len(data)
            room = self.mail.max_size + 4096 - len(self._payload)
            self._payload += data[:max(room, 0)]
            return
        # An over-long line (aiosmtpd answers 500) is kept only up to MAX_LINE_KEPT: its start is
        # what a reader needs, and a 20 MiB line must not cost 20 MiB.
        self._partial_size += len(data)
        if len(self._partial) < MAX_LINE_KEPT:
            self._partial += data[:MAX_LINE_KEPT - len(self._partial)]
        if not complete or not data.endswith(b"\n"):
            return
        line, size = bytes(self._partial), self._partial_size
        self._partial, self._partial_size = bytearray(), 0
        self._naming_line(line)
        text = line.rstrip(b"\r\n").decode("utf-8", "replace")
        verb, _, argument = text.partition(" ")
        summary = " ".join(filter(None, (verb.upper(), argument)))   # the exact case is in raw
        note = f"a {format_size(size)} line: the first {MAX_LINE_KEPT} bytes kept" if size > len(line) else ""
        self._record(from_client=True, summary=cut(summary) or "(empty line)", raw=line,
                     fields={"command": verb.upper(), "argument": argument[:1000]}, note=note)

    def record_payload(self, size: int, fields: dict[str, Any], correlation: dict[str, str], note: str = "") -> None:
        """The DATA payload as one event (called once per DATA, before any work on it)."""
        raw = bytes(self._payload or b"")
        self._payload_recorded = True
        subject = fields.get("headers", {}).get("Subject")
        subject = subject[0] if isinstance(subject, list) else subject
        summary = f"DATA ({format_size(size)})" + (f' Subject: "{cut(subject, 60)}"' if subject else "")
        if "problem" in fields:
            summary += " refused"
        if size > self.mail.max_size:
            summary, note = summary + " too big", note or f"over the {self.mail.max_size} byte limit"
        if len(raw) < size:
            fields = {**fields, "raw_truncated_at": len(raw)}
        self._record(from_client=True, summary=summary, raw=raw, fields={"size": size, **fields},
                     correlation=correlation, note=note)

    # -- what aiosmtpd writes ------------------------------------------------------------------
    async def push(self, status: str | bytes) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        text = with_enhanced_code(text, self.mail.max_size)
        self._reply_lines.append(text)
        if len(text) > 3 and text[3] == "-":      # more lines follow: one event for the reply
            return
        lines, self._reply_lines = self._reply_lines, []
        raw = b"".join(line.encode("ascii", "backslashreplace") + b"\r\n" for line in lines)
        note = await self._answer_late()
        await self.mail.trace.gate.passage(lambda: Hop(self.mail.name, self._client_name(), PROTOCOL, lines[-1][:3],
                                                       _reply_summary(lines)))
        if self._payload is not None and not lines[-1].startswith("354"):
            if not self._payload_recorded:       # refused before handle_DATA (552, 500)
                self.record_payload(self._payload_size, {}, {})
            self._payload = None
        self._record(from_client=False, summary=_reply_summary(lines), raw=raw, is_response=True,
                     fields=_reply_fields(lines), correlation=self.correlation, note=note)
        if lines[-1].startswith("354"):
            self._payload, self._payload_recorded, self._payload_size = bytearray(), False, 0
        elif self._payload is None:
            self.correlation = {}
        self._writer.write(raw)
        await self._writer.drain()


    async def _answer_late(self) -> str:
        """The delay condition: the reply waits (a slow mail server); its note says so."""
        mail = self.mail
        delay_ms = mail.answer_delay_ms + random.uniform(0, mail.answer_jitter_ms)
        if delay_ms <= 0:
            return ""
        await asyncio.sleep(delay_ms / 1000)
        jitter = f" + up to {mail.answer_jitter_ms} ms jitter" if mail.answer_jitter_ms else ""
        return f"answered {delay_ms:.0f} ms late (condition: delay {mail.answer_delay_ms} ms{jitter})"


def with_enhanced_code(reply: str, limit: int) -> str:
    """One reply line as the lab sends it: aiosmtpd's own texts reworded or given an enhanced
    status code, on one line. Plain string operations only: a reply may echo the client's
    braces (`FOO{`), which str.format would take for fields and fail on."""
    rewrite = _REWRITES.get(reply)
    if rewrite is not None:
        reply = rewrite.replace("{limit}", str(limit))
    else:
        match = _NO_ENHANCED.match(reply)
        code = match and _DEFAULT_ENHANCED.get(match.group(1) + match.group(2))
        if match and code:
            reply = f"{reply[:4]}{code} {reply[4:]}"
    return reply.replace("\r", " ").replace("\n", " ")


def _reply_summary(lines: list[str]) -> str:
    code = lines[-1][:3]
    return cut(code + " " + " ".join(line[4:] for line in lines))


def _reply_fields(lines: list[str]) -> dict[str, Any]:
    code, text = lines[-1][:3], " ".join(line[4:] for line in lines)
    first, _, rest = text.partition(" ")
    fields: dict[str, Any] = {"code": int(code) if code.isdigit() else code, "text": text}
    if _ENHANCED.match(first):
        fields.update(enhanced_status=first, text=rest)
    if len(lines) > 1:
        fields["lines"] = [line[4:] for line in lines]
    return fields


def cut(text: str, limit: int = 120) -> str:
    """text, shortened with an ellipsis to at most limit characters (trace summaries)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
