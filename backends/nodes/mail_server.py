"""The lab's mail server: real SMTP (aiosmtpd) on the caller's asyncio loop,
Maildir mailboxes (stdlib `mailbox`), and a hand-off to the IWF for CPM users.

Policy, in SMTP terms:
- RCPT: a known mailbox of a mailbox domain (mail-b.lab) or an address of a
  relay domain (cpm-a.lab, cpm-b.lab: handed to the IWF) that the relay says
  it can reach (`relay_refusal`); an unknown mailbox or CPM user gets
  550 5.1.1 there and then, anything else 550 5.7.1 (no open relay).
- Size: SIZE is offered in EHLO; SIZE= above it and an actual oversized DATA
  both get 552 5.3.4.
- DATA: a payload that is not an RFC 5322 message (no header block, a header
  line that does not parse, bare CR/LF - the SMTP smuggling guard) gets
  554 5.6.0 with the reason. aiosmtpd (>= 1.4.5) itself only ends DATA at
  <CRLF>.<CRLF>, so `\\n.\\n` cannot end it early.
- Accepted mail: relay recipients first (a callback that raises RelayRefused
  gives its 5xx: never a 250 for what the relay cannot carry; one that raises
  anything else or times out means 451 4.3.0 and nothing is stored: the client
  retries the whole transaction), then every mailbox copy is written to its Maildir (stdlib
  Maildir.add fsyncs), and only then 250 2.0.0. on_delivered fires after
  that. A message without Message-ID gets one, as an MTA's cleanup would.

Trace: every line of the dialogue is recorded by the connection adapter,
transports/smtp_server.TracedSMTP (which also names the client).
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import mailbox
import re
import secrets
import traceback
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiosmtpd.smtp import Envelope, Session

from iwlab.backends import clock
from iwlab.backends.directory import NodeDirectory
from iwlab.backends.protocols.mail import RelayRefused, why_malformed
from iwlab.backends.trace import Trace
from iwlab.backends.transports.guard import ConnectionGuard
from iwlab.backends.transports.listen import listen_on
from iwlab.backends.transports.smtp_server import TracedSMTP, cut

MAX_RECIPIENTS = 100
log = logging.getLogger(__name__)

RelayCallback = Callable[[EmailMessage, str, str], "Awaitable[None] | None"]
DeliveredCallback = Callable[[str, str, EmailMessage], None]


# The busy condition's replies (RFC 5321 4.2.3, RFC 3463): temporary, so a client tries again.
BUSY_REPLIES = {451: "451 4.3.2 System not accepting network messages", 452: "452 4.3.1 Insufficient system storage"}

class MailServer:
    def __init__(self, trace: Trace, nodes: NodeDirectory, *, maildir_root: Path, mailbox_domains: set[str],
                 relay_domains: dict[str, RelayCallback], known_mailboxes: dict[str, str] | None = None,
                 name: str = "Mail", max_size: int = 1_000_000,
                 node_name_for: Callable[[str], str | None] | None = None,
                 hostname: str | None = None, relay_timeout: float = 30.0,
                 relay_refusal: Callable[[str], str | None] | None = None) -> None:
        """relay_refusal(address): for an address of a relay domain, the RCPT refusal when the
        relay cannot reach it ("550 5.1.1 ..."), None when it can."""
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
        self.relay_refusal = relay_refusal
        self.guard = ConnectionGuard(name, refusal=b"421 4.7.0 Too many connections, try again later\r\n")
        self.busy_until = 0.0     # condition: until then (lab clock) every MAIL FROM gets busy_code
        self.busy_code = 451      # 451 4.3.2 (not accepting messages) or 452 4.3.1 (storage full)
        self.answer_delay_ms = 0  # condition: every reply this much later ...
        self.answer_jitter_ms = 0  # ... plus a random 0..jitter (a slow, loaded mail server)
        self.on_delivered: list[DeliveredCallback] = []
        self.port: int | None = None
        self._servers: list[asyncio.Server] = []
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[TracedSMTP] = set()
        self._maildirs: dict[str, mailbox.Maildir] = {}
        self._session_ids = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, host: str | list[str] = "127.0.0.1", port: int = 0) -> int:
        if self._server and self.port is not None:
            return self.port
        loop = asyncio.get_running_loop()
        self.maildir_root.mkdir(parents=True, exist_ok=True)
        # Every account's Maildir exists, whole, from the start, as with a real mail server:
        # a reader never sees a half-made one (cur/ missing) or races the first delivery to create it.
        for address in self.known_mailboxes or ():
            self.maildir(address)
        self._servers = await listen_on(self.guard.factory(lambda: TracedSMTP(self, loop)), host, port)
        self._server = self._servers[0]
        self.port = port = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        servers, self._servers = self._servers, []
        for each in servers:
            each.close()
        connections = list(self._connections)
        for connection in connections:
            if connection.transport is not None:
                connection.transport.close()
        # aiosmtpd cancels each session's task in connection_lost: let them finish.
        tasks = [t for c in connections if (t := c.session_task) and not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        for each in servers:
            await each.wait_closed()

    # -- connections (called by TracedSMTP) --------------------------------------------
    @property
    def accepting(self) -> bool:
        """False while stopping: a connection accepted then is closed at once."""
        return self._server is not None

    def next_session_id(self) -> int:
        """Numbers this server's SMTP sessions (1, 2, ...) for the trace's smtp_session."""
        return next(self._session_ids)

    def connection_opened(self, connection: TracedSMTP) -> None:
        self._connections.add(connection)

    def connection_closed(self, connection: TracedSMTP) -> None:
        self._connections.discard(connection)

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
            refusal = self.relay_refusal(address) if self.relay_refusal else None
            return (None, refusal) if refusal else ("relay", "")
        served = ", ".join(sorted({*self.mailbox_domains, *self.relay_domains}))
        return None, f"550 5.7.1 <{address}>: Relaying denied (this server takes mail for {served} only)"

    def _relay_callback(self, address: str) -> RelayCallback:
        domain = address.rpartition("@")[2].lower()
        return next(cb for d, cb in self.relay_domains.items() if d.lower() == domain)

    # -- the aiosmtpd handler hooks (server is the session's TracedSMTP) ----------------
    async def handle_EHLO(self, server: TracedSMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname            # aiosmtpd leaves this to a hook that answers
        # Every refusal here carries an RFC 3463 code: say so (RFC 2034).
        return [*responses[:-1], "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_exception(self, error: Exception) -> str:
        """A bug in a hook: the client hears a temporary failure, and the session goes on. An
        address aiosmtpd's own parser chokes on ("RCPT TO:<") is the client's syntax error."""
        if any(frame.name == "_getaddr" for frame in traceback.extract_tb(error.__traceback__)):
            return "501 5.5.4 Syntax error in the address"
        log.error("SMTP session error", exc_info=error)
        return f"451 4.3.0 Temporary failure: {type(error).__name__}; try again later"

    async def handle_MAIL(self, server: TracedSMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        if clock.monotonic() < self.busy_until:
            left = self.busy_until - clock.monotonic()
            return f"{BUSY_REPLIES[self.busy_code]} (condition: busy for {left:.0f} s more)"
        envelope.mail_from = address               # aiosmtpd leaves this to a hook that answers
        envelope.mail_options.extend(options)
        server.routes = {}
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: TracedSMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
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

    async def handle_DATA(self, server: TracedSMTP, session: Session, envelope: Envelope) -> str:
        try:
            return await self._take(server, session, envelope)
        except Exception as exc:                        # noqa: BLE001 - a bug here must not become a 5xx drop
            log.exception("handling DATA failed")
            return f"451 4.3.0 Temporary failure: {type(exc).__name__}: {_one_line(exc)}; try again later"

    async def _take(self, server: TracedSMTP, session: Session, envelope: Envelope) -> str:
        original = envelope.original_content   # de-dotted, CRLF lines, as received
        assert original is not None             # aiosmtpd sets it before it calls handle_DATA
        content = original
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
        server.record_payload(len(original), fields, correlation)
        sender = _sender(envelope)
        try:
            for rcpt in [r for r in envelope.rcpt_tos if server.routes.get(r) == "relay"]:
                result = self._relay_callback(rcpt)(message, sender, rcpt)
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, self.relay_timeout)
        except RelayRefused as refused:                 # the relay cannot carry it: say so now, not later
            return refused.reply
        except asyncio.TimeoutError:
            return f"451 4.3.0 Temporary failure: hand-off for <{rcpt}> took over {self.relay_timeout:g} s; try again later"
        except Exception as exc:                        # noqa: BLE001 - the client must hear why and retry
            log.warning("relay hand-off for %s failed", rcpt, exc_info=True)
            return f"451 4.3.0 Temporary failure handing mail for <{rcpt}> on: {type(exc).__name__}: {_one_line(exc)}; try again later"
        mailboxes = [r for r in envelope.rcpt_tos if server.routes.get(r) == "mailbox"]
        try:
            for rcpt in mailboxes:
                self.maildir(rcpt).add(self._stored_form(content, server, session, envelope, rcpt, queue_id))
        except OSError as exc:
            return f"451 4.3.0 Temporary failure storing mail for <{rcpt}>: {_one_line(exc)}; try again later"
        for rcpt in mailboxes:                          # safely in the Maildir: now tell the lab
            for callback in list(self.on_delivered):
                try:
                    callback(rcpt, message_id, message)
                except Exception:                       # noqa: BLE001 - a listener must not undo a delivery
                    log.exception("on_delivered listener failed for %s", rcpt)
        return f"250 2.0.0 queued as {queue_id}"

    def _stored_form(self, content: bytes, server: TracedSMTP, session: Session, envelope: Envelope, rcpt: str,
                     queue_id: str) -> bytes:
        """What lands in the Maildir: trace headers on top, LF line endings (the
        Unix mail store convention; bare CR/LF were refused, so this is exact)."""
        sender = _sender(envelope)
        peer_ip = server.peer_address[0]
        protocol = "ESMTP" if session.extended_smtp else "SMTP"
        received = (f"Received: from {session.host_name or 'unknown'} ({server.node_name} [{peer_ip}])\n"
                    f"\tby {self.hostname} (iwlab {self.name}) with {protocol} id {queue_id}\n"
                    f"\tfor <{rcpt}>; {format_datetime(datetime.now().astimezone())}\n")
        top = f"Return-Path: <{sender}>\nDelivered-To: {rcpt}\n{received}"
        return top.encode("utf-8") + content.replace(b"\r\n", b"\n")


def _sender(envelope: Envelope) -> str:
    """The envelope sender; "" for the null reverse-path <> (bounces, MDNs)."""
    mail_from = envelope.mail_from or ""    # set: aiosmtpd takes no DATA before MAIL FROM
    return "" if mail_from == "<>" else mail_from


def _decoded_headers(message: EmailMessage) -> dict[str, Any]:
    """name -> value (a list when repeated), unfolded and RFC 2047-decoded. From
    raw_items: policy.default re-parses a header on every access, which cost
    more than the rest of the server put together."""
    headers: dict[str, Any] = {}
    for name, value in message.raw_items():
        value = re.sub(r"\r?\n(?=[ \t])", "", value).strip()
        if "=?" in value:
            try:
                value = str(policy.default.header_factory(name, value))
            except Exception:   # noqa: BLE001 - an encoded CR/LF in an address raises; the trace shows it raw
                pass
        if name in headers:
            previous = headers[name]
            headers[name] = (previous if isinstance(previous, list) else [previous]) + [value]
        else:
            headers[name] = value
    return headers


def _first(headers: dict[str, Any], name: str) -> str:
    value = next((v for k, v in headers.items() if k.lower() == name.lower()), "")
    return (value[0] if isinstance(value, list) else value).strip()


def _one_line(exc: BaseException) -> str:
    return cut(" ".join(str(exc).split()) or "no details", 160)
