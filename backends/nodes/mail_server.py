"""The lab's mail server: real SMTP (aiosmtpd) on the caller's asyncio loop,
Maildir mailboxes (stdlib `mailbox`), and a hand-off to the IWF for CPM users.

Policy, in SMTP terms:
- RCPT: a known mailbox of a mailbox domain (mail-b.lab) or any address of a
  relay domain (cpm-a.lab, cpm-b.lab: handed to the IWF); an unknown mailbox
  gets 550 5.1.1, anything else 550 5.7.1 (no open relay).
- Size: SIZE is offered in EHLO; SIZE= above it and an actual oversized DATA
  both get 552 5.3.4.
- DATA: a payload that is not an RFC 5322 message (no header block, a header
  line that does not parse, bare CR/LF - the SMTP smuggling guard) gets
  554 5.6.0 with the reason. aiosmtpd (>= 1.4.5) itself only ends DATA at
  <CRLF>.<CRLF>, so `\\n.\\n` cannot end it early.
- Accepted mail: relay recipients first (a callback that raises or times out
  means 451 4.3.0 and nothing is stored: the client retries the whole
  transaction), then every mailbox copy is written to its Maildir (stdlib
  Maildir.add fsyncs), and only then 250 2.0.0. on_delivered fires after
  that. A message without Message-ID gets one, as an MTA's cleanup would.

Trace: this end accepts every SMTP connection, so it records the dialogue:
one event per command line, one per reply (a multi-line reply is one event),
one for the DATA payload. The hook (see _TracedSMTP): aiosmtpd reads every
line from `self._reader` and writes every reply through `push()`; we wrap
the reader right where aiosmtpd receives it (`_cb_client_connected`) and
override `push`, so the trace sees exactly the bytes aiosmtpd consumes and
sends, in its own order, without re-implementing its state machine.

Naming: the greeting goes out before an in-lab client can claim its address
(aiosmtplib's connect() waits for it), so events are held until the client
is known: a claim seen at any command, else node_name_for(MAIL FROM), else
"ip:port" at the first other command. The whole dialogue then sits in one
ladder column.
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import mailbox
import re
import secrets
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiosmtpd import __version__ as aiosmtpd_version
from aiosmtpd.smtp import SMTP

from iwlab.backends.directory import NodeDirectory, outside_name
from iwlab.backends.protocols.mail import format_size, why_malformed
from iwlab.backends.trace import Trace

PROTOCOL = "SMTP"
MAX_RECIPIENTS = 100
log = logging.getLogger(__name__)

RelayCallback = Callable[[EmailMessage, str, str], "Awaitable[None] | None"]
DeliveredCallback = Callable[[str, str, EmailMessage], None]

# aiosmtpd answers these itself; give them enhanced status codes (RFC 3463)
# and a reason, like every other refusal here. Matched exactly: a test fails
# if an aiosmtpd release rewords them.
_REWRITES = {
    "552 Error: message size exceeds fixed maximum message size":
        "552 5.3.4 Message size exceeds fixed maximum message size of {limit} bytes",
    "552 Error: Too much mail data": "552 5.3.4 Message too big: more than {limit} bytes of data",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line longer than 1000 octets (RFC 5321 4.5.3.1.6)",
}
_MAIL_FROM = re.compile(rb"^MAIL\s+FROM:\s*<?([^<>\s]*)>?", re.I)
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


class MailServer:
    def __init__(self, trace: Trace, nodes: NodeDirectory, *, maildir_root: Path, mailbox_domains: set[str],
                 relay_domains: dict[str, RelayCallback], known_mailboxes: dict[str, str] | None = None,
                 name: str = "Mail", max_size: int = 1_000_000,
                 node_name_for: Callable[[str], str | None] | None = None,
                 hostname: str | None = None, relay_timeout: float = 30.0) -> None:
        self.trace, self.nodes, self.name = trace, nodes, name
        self.maildir_root = Path(maildir_root)
        # Kept by reference: the lab may edit them while running.
        self.mailbox_domains = mailbox_domains
        self.relay_domains = relay_domains
        self.known_mailboxes = known_mailboxes          # None: every local part of a mailbox domain
        self.max_size = max_size
        self.node_name_for = node_name_for
        self.hostname = hostname or next(iter(sorted(mailbox_domains)), "localhost")
        self.relay_timeout = relay_timeout
        self.on_delivered: list[DeliveredCallback] = []
        self.port: int | None = None
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[_TracedSMTP] = set()
        self._maildirs: dict[str, mailbox.Maildir] = {}
        self._session_ids = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        if self._server:
            return self.port
        loop = asyncio.get_running_loop()
        self.maildir_root.mkdir(parents=True, exist_ok=True)
        # Every account's Maildir exists, whole, from the start, as with a real mail server:
        # a reader never sees a half-made one (cur/ missing) or races the first delivery to create it.
        for address in self.known_mailboxes or ():
            self.maildir(address)
        self._server = await loop.create_server(lambda: _TracedSMTP(self, loop), host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        connections = list(self._connections)
        for connection in connections:
            if connection.transport is not None:
                connection.transport.close()
        # aiosmtpd cancels each session's task in connection_lost: let them finish.
        tasks = [t for c in connections if (t := getattr(c, "_handler_coroutine", None)) and not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        await server.wait_closed()

    # -- mailboxes ---------------------------------------------------------------------
    def maildir(self, address: str) -> mailbox.Maildir:
        """The Maildir of one mailbox address: <maildir_root>/<address>/{cur,new,tmp}."""
        key = address.lower()
        box = self._maildirs.get(key)
        if box is None:
            box = self._maildirs[key] = mailbox.Maildir(self.maildir_root / key, factory=None, create=True)
        return box

    def route(self, address: str) -> tuple[str | None, str]:
        """("mailbox" | "relay", "") for an address we take, else (None, the refusal)."""
        local, _, domain = address.rpartition("@")
        domain = domain.lower()
        if not local or not domain:
            return None, f"553 5.1.3 <{address}>: not a user@domain address"
        if domain in {d.lower() for d in self.mailbox_domains}:
            if self.known_mailboxes is not None and \
                    address.lower() not in {a.lower() for a in self.known_mailboxes}:
                return None, f"550 5.1.1 <{address}>: no such mailbox here"
            return "mailbox", ""
        if domain in {d.lower() for d in self.relay_domains}:
            return "relay", ""
        served = ", ".join(sorted({*self.mailbox_domains, *self.relay_domains}))
        return None, f"550 5.7.1 <{address}>: Relaying denied (this server takes mail for {served} only)"

    def _relay_callback(self, address: str) -> RelayCallback:
        domain = address.rpartition("@")[2].lower()
        return next(cb for d, cb in self.relay_domains.items() if d.lower() == domain)

    # -- the aiosmtpd handler hooks (server is the session's _TracedSMTP) ----------------
    async def handle_MAIL(self, server: _TracedSMTP, session, envelope, address: str, options: list[str]) -> str:
        envelope.mail_from = address               # aiosmtpd leaves this to a hook that answers
        envelope.mail_options.extend(options)
        server.routes = {}
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: _TracedSMTP, session, envelope, address: str, options: list[str]) -> str:
        kind, refusal = self.route(address)
        if kind is None:
            return refusal
        if address.lower() not in {a.lower() for a in envelope.rcpt_tos}:
            if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
                return f"452 4.5.3 Too many recipients (at most {MAX_RECIPIENTS} per message)"
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
            server.routes[address] = kind
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: _TracedSMTP, session, envelope) -> str:
        try:
            return await self._take(server, envelope)
        except Exception as exc:                        # noqa: BLE001 - a bug here must not become a 5xx drop
            log.exception("handling DATA failed")
            return f"451 4.3.0 Temporary failure: {type(exc).__name__}: {_one_line(exc)}; try again later"

    async def _take(self, server: _TracedSMTP, envelope) -> str:
        content: bytes = envelope.original_content   # de-dotted, CRLF lines, as received
        problem = why_malformed(content)
        if problem:
            server.record_payload(len(content), {"problem": problem}, {}, note=f"refused: {problem}")
            return f"554 5.6.0 Message refused: {problem}"
        queue_id = secrets.token_hex(5).upper()
        # The lab needs an id for every message (IMDN mapping), as an MTA's cleanup adds one.
        if not re.search(rb"(?im)^message-id\s*:", content.split(b"\r\n\r\n", 1)[0]):
            content = f"Message-ID: <{queue_id}@{self.hostname}>\r\n".encode() + content
        message = BytesParser(policy=policy.default).parsebytes(content)
        headers = _decoded_headers(message)
        message_id = _first(headers, "Message-ID")
        correlation = {"email_message_id": message_id, "smtp_queue_id": queue_id,
                       "conversation_id": _first(headers, "Conversation-ID")}
        server.correlation = correlation
        fields = {"envelope": {"mail_from": envelope.mail_from, "rcpt_to": list(envelope.rcpt_tos)},
                  "headers": headers, "content_type": message.get_content_type()}
        server.record_payload(len(envelope.original_content), fields, correlation)
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from
        try:
            for rcpt in [r for r in envelope.rcpt_tos if server.routes.get(r) == "relay"]:
                result = self._relay_callback(rcpt)(message, sender, rcpt)
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, self.relay_timeout)
        except asyncio.TimeoutError:
            return f"451 4.3.0 Temporary failure: hand-off for <{rcpt}> took over {self.relay_timeout:g} s; try again later"
        except Exception as exc:                        # noqa: BLE001 - the client must hear why and retry
            log.warning("relay hand-off for %s failed", rcpt, exc_info=True)
            return f"451 4.3.0 Temporary failure handing mail for <{rcpt}> on: {type(exc).__name__}: {_one_line(exc)}; try again later"
        mailboxes = [r for r in envelope.rcpt_tos if server.routes.get(r) == "mailbox"]
        try:
            for rcpt in mailboxes:
                self.maildir(rcpt).add(self._stored_form(content, server, envelope, rcpt, queue_id))
        except OSError as exc:
            return f"451 4.3.0 Temporary failure storing mail for <{rcpt}>: {_one_line(exc)}; try again later"
        for rcpt in mailboxes:                          # safely in the Maildir: now tell the lab
            for callback in list(self.on_delivered):
                try:
                    callback(rcpt, message_id, message)
                except Exception:                       # noqa: BLE001 - a listener must not undo a delivery
                    log.exception("on_delivered listener failed for %s", rcpt)
        return f"250 2.0.0 queued as {queue_id}"

    def _stored_form(self, content: bytes, server: _TracedSMTP, envelope, rcpt: str, queue_id: str) -> bytes:
        """What lands in the Maildir: trace headers on top, LF line endings (the
        Unix mail store convention; bare CR/LF were refused, so this is exact)."""
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from
        peer_ip = server.peer_address[0]
        protocol = "ESMTP" if server.session.extended_smtp else "SMTP"
        received = (f"Received: from {server.session.host_name or 'unknown'} ({server.node_name} [{peer_ip}])\n"
                    f"\tby {self.hostname} (iwlab {self.name}) with {protocol} id {queue_id}\n"
                    f"\tfor <{rcpt}>; {format_datetime(datetime.now().astimezone())}\n")
        top = f"Return-Path: <{sender}>\nDelivered-To: {rcpt}\n{received}"
        return top.encode("utf-8") + content.replace(b"\r\n", b"\n")


class _TapReader:
    """Stands in for aiosmtpd's StreamReader: passes every read through and
    shows the bytes to the session first."""

    def __init__(self, reader: asyncio.StreamReader, session: _TracedSMTP) -> None:
        self._reader, self._session = reader, session

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        data = await self._reader.readuntil(separator)
        self._session.bytes_read(data, complete=True)
        return data

    async def read(self, n: int = -1) -> bytes:      # aiosmtpd's way past an over-long line
        data = await self._reader.read(n)
        self._session.bytes_read(data, complete=False)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


class _TracedSMTP(SMTP):
    """One SMTP connection, as aiosmtpd runs it, with every line traced."""

    def __init__(self, mail: MailServer, loop: asyncio.AbstractEventLoop) -> None:
        # hostname given: aiosmtpd would otherwise call socket.getfqdn() (DNS) per connection.
        super().__init__(mail, data_size_limit=mail.max_size, enable_SMTPUTF8=True, decode_data=False,
                         hostname=mail.hostname, ident=f"ESMTP iwlab (aiosmtpd {aiosmtpd_version})", loop=loop)
        self.mail = mail
        self.session_id = f"smtp-{next(mail._session_ids)}"
        self.peer_address: tuple[str, int] = ("?", 0)
        self.node_name: str | None = None          # None until we know who the client is
        self._held: list[dict[str, Any]] = []      # events recorded before that
        self._partial = bytearray()                # an over-long command line, read in pieces
        self._reply_lines: list[str] = []
        self._payload: bytearray | None = None     # DATA bytes as sent, between 354 and the verdict
        self._payload_recorded = False
        self._payload_size = 0                     # all of it, even past the kept bytes
        self.routes: dict[str, str] = {}           # rcpt -> "mailbox" | "relay", this transaction
        self.correlation: dict[str, str] = {}      # of the message in this transaction

    # -- connection ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer_address = tuple(transport.get_extra_info("peername")[:2])
        if self.mail._server is None:     # accepted while the server stops: no socket outlives it
            transport.close()
            return
        self.mail._connections.add(self)
        super().connection_made(transport)

    def _cb_client_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super()._cb_client_connected(_TapReader(reader, self), writer)

    def connection_lost(self, error: Exception | None) -> None:
        self.mail._connections.discard(self)
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
        claimed = self.mail.nodes.lookup(self.peer_address)
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
        if self.node_name is None:
            self._held.append(event)
            return
        client, server = self.node_name, self.mail.name
        from_client = event.pop("from_client")
        src, dst = (client, server) if from_client else (server, client)
        correlation = {"smtp_session": self.session_id, **event.pop("correlation", {})}
        self.mail.trace.record(src, dst, PROTOCOL, correlation=correlation, **event)

    # -- what aiosmtpd reads ----------------------------------------------------------------
    def bytes_read(self, data: bytes, complete: bool) -> None:
        if self._payload is not None:             # DATA content: one event at its end
            self._payload_size += len(data)
            room = self.mail.max_size + 4096 - len(self._payload)
            self._payload += data[:max(room, 0)]
            return
        self._partial += data
        if not complete or not data.endswith(b"\n"):
            return
        line, self._partial = bytes(self._partial), bytearray()
        self._naming_line(line)
        text = line.rstrip(b"\r\n").decode("utf-8", "replace")
        verb, _, argument = text.partition(" ")
        summary = " ".join(filter(None, (verb.upper(), argument)))   # the exact case is in raw
        self._record(from_client=True, summary=_cut(summary) or "(empty line)", raw=line,
                     fields={"command": verb.upper(), "argument": argument})

    def record_payload(self, size: int, fields: dict[str, Any], correlation: dict[str, str], note: str = "") -> None:
        """The DATA payload as one event (called once per DATA, before any work on it)."""
        raw = bytes(self._payload or b"")
        self._payload_recorded = True
        subject = fields.get("headers", {}).get("Subject")
        subject = subject[0] if isinstance(subject, list) else subject
        summary = f"DATA ({format_size(size)})" + (f' Subject: "{_cut(subject, 60)}"' if subject else "")
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
        text = _REWRITES.get(text, text).format(limit=self.mail.max_size)
        text = text.replace("\r", " ").replace("\n", " ")
        self._reply_lines.append(text)
        if len(text) > 3 and text[3] == "-":      # more lines follow: one event for the reply
            return
        lines, self._reply_lines = self._reply_lines, []
        raw = b"".join(line.encode("ascii", "backslashreplace") + b"\r\n" for line in lines)
        if self._payload is not None and not lines[-1].startswith("354"):
            if not self._payload_recorded:       # refused before handle_DATA (552, 500)
                self.record_payload(self._payload_size, {}, {})
            self._payload = None
        self._record(from_client=False, summary=_reply_summary(lines), raw=raw, is_response=True,
                     fields=_reply_fields(lines), correlation=self.correlation)
        if lines[-1].startswith("354"):
            self._payload, self._payload_recorded, self._payload_size = bytearray(), False, 0
        elif self._payload is None:
            self.correlation = {}
        self._writer.write(raw)
        await self._writer.drain()


def _decoded_headers(message: EmailMessage) -> dict[str, Any]:
    """name -> value (a list when repeated), unfolded and RFC 2047-decoded. From
    raw_items: policy.default re-parses a header on every access, which cost
    more than the rest of the server put together."""
    headers: dict[str, Any] = {}
    for name, value in message.raw_items():
        value = re.sub(r"\r?\n(?=[ \t])", "", value).strip()
        if "=?" in value:
            value = str(policy.default.header_factory(name, value))
        if name in headers:
            previous = headers[name]
            headers[name] = (previous if isinstance(previous, list) else [previous]) + [value]
        else:
            headers[name] = value
    return headers


def _first(headers: dict[str, Any], name: str) -> str:
    value = next((v for k, v in headers.items() if k.lower() == name.lower()), "")
    return (value[0] if isinstance(value, list) else value).strip()


def _reply_summary(lines: list[str]) -> str:
    code = lines[-1][:3]
    return _cut(code + " " + " ".join(line[4:] for line in lines))


def _reply_fields(lines: list[str]) -> dict[str, Any]:
    code, text = lines[-1][:3], " ".join(line[4:] for line in lines)
    first, _, rest = text.partition(" ")
    fields: dict[str, Any] = {"code": int(code) if code.isdigit() else code, "text": text}
    if _ENHANCED.match(first):
        fields.update(enhanced_status=first, text=rest)
    if len(lines) > 1:
        fields["lines"] = [line[4:] for line in lines]
    return fields


def _cut(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(exc: BaseException) -> str:
    return _cut(" ".join(str(exc).split()) or "no details", 160)
