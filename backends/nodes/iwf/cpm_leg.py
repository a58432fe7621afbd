"""The IWF's CPM leg: the requests the IWF itself sends into CPM, and its connection for them.

The SMS, email and session legs all speak to CPM through a CpmLeg: new_request() builds an
out-of-dialog request from the IWF (its Via, a fresh Call-ID, the node's CSeq counter); send()
keeps it in the lab's durable store (before the legacy side hears "taken") and queues it.

One outbox per recipient: a CPM device that never answers delays only its own messages.
Each outbox goes to the IWF's CPM server strictly in order, each request resent until the link
carries it (a broken link loses nothing and reorders nothing). A request the recipient could
not take now (408, 480, 503: not answering, not there) is kept at the head of its outbox and
tried again when the recipient registers again (recipient_registered) or, failing that, every
`retry_seconds`, until its validity runs out. Only then, or on a final refusal (another 3xx-6xx),
does on_refused hear of it, with the request's Origin, so whoever must be told is told by the
technology the original came in (an SMS sender by SMS, an email sender by a DSN; the IWF's own
IMDNs have nobody to tell).

Sessions keep their own connection (another_link), as they always had: their dialogs'
requests are sent and awaited one by one, not queued behind pager-mode traffic.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from dataclasses import dataclass
from typing import Callable

from iwlab.backends import clock
from iwlab.backends.directory import NodeDirectory
from iwlab.backends.protocols import sip
from iwlab.backends.protocols.sip import SipRequest, SipResponse
from iwlab.backends.routing import Technology
from iwlab.backends.store import DurableQueue
from iwlab.backends.trace import Trace
from iwlab.backends.transports.sip import (
    MessageHandler,
    SipConnection,
    SipConnectionClosed,
    open_connection,
)

log = logging.getLogger(__name__)
Address = tuple[str, int]


@dataclass(frozen=True)
class Answer:
    """What a leg decided about a CPM request handed to it: the IWF sends it as the response."""
    status: int
    reason: str
    note: str = ""


TRY_AGAIN_LATER = {408, 480, 503}     # the recipient may take it later: keep it


@dataclass(frozen=True)
class Origin:
    """Where a request the IWF sends into CPM came from: a report about it goes back that way.

    technology SMS: sender and recipient are MSISDN digits (who wrote, the number he wrote to);
    EMAIL: addresses, with the original's Message-ID and Subject to thread the DSN to it;
    CPM: the IWF's own report (an IMDN) - nobody to report a refusal to.
    """
    technology: Technology
    sender: str = ""
    recipient: str = ""
    message_id: str = ""
    subject: str = ""

    def to_meta(self) -> dict[str, str]:
        return {"technology": self.technology.value, "sender": self.sender, "recipient": self.recipient,
                "message_id": self.message_id, "subject": self.subject}

    @classmethod
    def from_meta(cls, meta: object) -> "Origin | None":
        if not isinstance(meta, dict):
            return None
        try:
            technology = Technology(meta.get("technology", ""))
        except ValueError:
            return None
        return cls(technology, str(meta.get("sender", "")), str(meta.get("recipient", "")),
                   str(meta.get("message_id", "")), str(meta.get("subject", "")))


Refused = Callable[[SipRequest, SipResponse, "Origin | None"], None]


@dataclass
class _Pending:
    request: SipRequest
    note: str
    store_id: int | None
    expires: float                   # wall clock: given up (and reported) after this
    origin: Origin | None = None


class _Outbox:
    """The requests for one recipient, in order, and the worker that sends them."""

    def __init__(self) -> None:
        self.queue: deque[_Pending] = deque()
        self.worker: asyncio.Task | None = None
        self.wake = asyncio.Event()      # set when the recipient registers again
        self.registered_at = 0.0         # when they last did (a registration during a try counts)
        self.held_since: float | None = None   # the head could not be delivered: since when


class CpmLeg:
    def __init__(self, *, name: str, host: str, domain: str, trace: Trace, nodes: NodeDirectory,
                 server_address: Callable[[], Address | None], local_port: Callable[[], int],
                 on_message: MessageHandler,
                 on_refused: Refused | None = None,
                 store: DurableQueue | None = None, validity_seconds: float = 3600.0,
                 retry_seconds: float = 30.0) -> None:
        """server_address: the IWF's CPM server, when it runs; local_port: the IWF's SIP
        listener (our Via and Contact); on_message: requests the server sends on our link;
        store: where sent-but-unanswered requests wait (None: a session link, nothing kept)."""
        self._store = store
        self.validity_seconds = validity_seconds
        self.retry_seconds = retry_seconds
        self._outboxes: dict[str, _Outbox] = {}
        self.name = name
        self.host = host
        self.domain = domain
        self._trace = trace
        self._nodes = nodes
        self._server_address = server_address
        self._local_port = local_port
        self._on_message = on_message
        self._on_refused = on_refused
        self._link: SipConnection | None = None
        self._cseq = itertools.count(1)

    def another_link(self, on_message: MessageHandler) -> "CpmLeg":
        """The same node's CPM side on a connection of its own, with its own handler."""
        return CpmLeg(name=self.name, host=self.host, domain=self.domain, trace=self._trace, nodes=self._nodes,
                      server_address=self._server_address, local_port=self._local_port, on_message=on_message)

    def stop(self) -> None:
        for outbox in self._outboxes.values():
            if outbox.worker:
                outbox.worker.cancel()
        if self._link:
            self._link.close()

    def restore(self) -> int:
        """After a restart: what the store holds goes out again, per recipient, in order."""
        if self._store is None:
            return 0
        items = self._store.items()
        for item in items:
            try:
                request = sip.parse_message(item.payload)
            except sip.SipParseError:
                self._store.remove(item.id)
                continue
            assert isinstance(request, SipRequest)
            self._queue(_Pending(request, item.meta.get("note", "") + " (kept across a restart)", item.id,
                                 item.meta.get("expires", clock.wall() + self.validity_seconds),
                                 Origin.from_meta(item.meta.get("origin"))))
        return len(items)

    def held(self) -> dict[str, int]:
        """Per recipient: how many requests wait (what the window shows)."""
        return {uri: len(box.queue) for uri, box in self._outboxes.items() if box.queue}

    def recipient_registered(self, uri: str) -> None:
        """The registrar says a user is back: what waited for them goes now."""
        outbox = self._outboxes.get(uri)
        if outbox is not None:
            outbox.registered_at = clock.wall()
            outbox.wake.set()

    # -- building --------------------------------------------------------------------
    def via(self) -> Address:
        return self.host, self._local_port()

    def contact(self) -> str:
        return f"<sip:iwf@{sip.hostport(self.host, self._local_port())};transport=tcp>"

    def new_call_id(self) -> str:
        return sip.new_call_id(self.domain)

    def new_request(self, method: str, uri: str, *, from_uri: str, from_name: str | None = None) -> SipRequest:
        """An out-of-dialog request from the IWF (a MESSAGE from a legacy user, an IMDN)."""
        return sip.make_request(method, uri, via=self.via(),
                                from_=sip.name_addr(from_uri, from_name, tag=sip.new_tag()), to=f"<{uri}>",
                                call_id=self.new_call_id(), cseq=next(self._cseq))

    # -- sending -----------------------------------------------------------------------
    def send(self, req: SipRequest, note: str, origin: Origin | None = None) -> None:
        """Keep a request (durably, before the caller acknowledges what it carries) and queue it
        for its recipient; sent in order, resent if the link breaks. origin: how to report a
        refusal (kept with it, so a restart still knows)."""
        expires = clock.wall() + self.validity_seconds
        store_id = None
        if self._store is not None:
            meta: dict[str, object] = {"note": note, "expires": expires}
            if origin is not None:
                meta["origin"] = origin.to_meta()
            store_id = self._store.put(req.uri, req.to_bytes(), meta)
        self._queue(_Pending(req, note, store_id, expires, origin))

    def _queue(self, pending: _Pending) -> None:
        outbox = self._outboxes.get(pending.request.uri)
        if outbox is None:
            outbox = self._outboxes[pending.request.uri] = _Outbox()
        outbox.queue.append(pending)
        if outbox.worker is None or outbox.worker.done():
            outbox.worker = asyncio.create_task(self._drain(outbox), name=f"IWF -> CPM {pending.request.uri}")

    async def _drain(self, outbox: _Outbox) -> None:
        delay = 0.05
        while outbox.queue:
            pending = outbox.queue[0]
            if clock.wall() > pending.expires:
                self._finished(outbox, SipResponse(408, "Request Timeout (validity ran out in the IWF)",
                                                   sip.Headers()))
                continue
            attempt = clock.wall()
            try:
                link = await self.connection()
                response = await link.request(pending.request, note=pending.note)
            except (OSError, SipConnectionClosed) as exc:
                log.warning("IWF cannot reach CPM (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            if response.status in TRY_AGAIN_LATER:
                await self._hold(outbox, pending, response, registered_meanwhile=outbox.registered_at >= attempt)
                continue
            self._finished(outbox, response)

    async def _hold(self, outbox: _Outbox, pending: _Pending, response: SipResponse, *,
                    registered_meanwhile: bool) -> None:
        """The recipient cannot take it now: wait for them to register again (or a while); at
        once when they did while this try was on its way (it went to the device they left)."""
        outbox.held_since = outbox.held_since or clock.wall()
        log.info("IWF holds %s for %s: %s %s", pending.request.method, pending.request.uri,
                 response.status, response.reason)
        outbox.wake.clear()
        # A fresh transaction next time: the same request, a new branch (RFC 3261 8.1.3.5 style).
        pending.request.headers.replace_top("Via", f"SIP/2.0/TCP {sip.hostport(*self.via())};branch={sip.new_branch()}")
        pending.note = (f"kept since {response.status} {response.reason}; sent again now that "
                        f"{pending.request.uri} is back")
        if registered_meanwhile:
            return
        try:
            await asyncio.wait_for(outbox.wake.wait(),
                                   min(self.retry_seconds, max(pending.expires - clock.wall(), 0)))
        except asyncio.TimeoutError:
            pending.note = f"kept since {response.status} {response.reason}; tried again"

    def _finished(self, outbox: _Outbox, response: SipResponse) -> None:
        pending = outbox.queue.popleft()
        outbox.held_since = None
        if pending.store_id is not None and self._store is not None:
            self._store.remove(pending.store_id)
        if response.status >= 300:
            req = pending.request
            log.warning("CPM refused %s %s: %s %s", req.method, req.uri, response.status, response.reason)
            if self._on_refused is not None:
                self._on_refused(req, response, pending.origin)

    async def connection(self) -> SipConnection:
        """The open link to the CPM server, opened (again) when there is none."""
        if self._link is None or not self._link.is_open:
            address = self._server_address()
            if address is None:
                raise OSError("the CPM server is not running")
            self._link = await open_connection(address[0], address[1], self._on_message,
                                               local_name=self.name, nodes=self._nodes,
                                               annotate=self._trace.annotate)
        return self._link

    def send_if_connected(self, req: SipRequest, note: str = "") -> None:
        """Send at once on the link if it is open (a CANCEL); nothing when it is not."""
        if self._link and self._link.is_open:
            try:
                self._link.send(req, note=note)
            except SipConnectionClosed:
                pass
