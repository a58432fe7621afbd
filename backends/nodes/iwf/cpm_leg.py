"""The IWF's CPM leg: the requests the IWF itself sends into CPM, and its connection for them.

The SMS, email and session legs all speak to CPM through a CpmLeg: new_request() builds an
out-of-dialog request from the IWF (its Via, a fresh Call-ID, the node's CSeq counter); send()
queues it, and the queue goes to the IWF's CPM server strictly in order, each request resent
until the link carries it (a broken link loses nothing and reorders nothing). A final response
of 300 or more is handed to on_refused, so whoever must hear of it (an SMS sender) does.

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

from iwlab.backends.directory import NodeDirectory
from iwlab.backends.protocols import sip
from iwlab.backends.protocols.sip import SipRequest, SipResponse
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


class CpmLeg:
    def __init__(self, *, name: str, host: str, domain: str, trace: Trace, nodes: NodeDirectory,
                 server_address: Callable[[], Address | None], local_port: Callable[[], int],
                 on_message: MessageHandler,
                 on_refused: Callable[[SipRequest, SipResponse], None] | None = None) -> None:
        """server_address: the IWF's CPM server, when it runs; local_port: the IWF's SIP
        listener (our Via and Contact); on_message: requests the server sends on our link."""
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
        self._outbox: deque[tuple[SipRequest, str]] = deque()   # requests to CPM, in order
        self._sender: asyncio.Task | None = None
        self._cseq = itertools.count(1)

    def another_link(self, on_message: MessageHandler) -> "CpmLeg":
        """The same node's CPM side on a connection of its own, with its own handler."""
        return CpmLeg(name=self.name, host=self.host, domain=self.domain, trace=self._trace, nodes=self._nodes,
                      server_address=self._server_address, local_port=self._local_port, on_message=on_message)

    def stop(self) -> None:
        if self._sender:
            self._sender.cancel()
        if self._link:
            self._link.close()

    # -- building --------------------------------------------------------------------
    def via(self) -> Address:
        return self.host, self._local_port()

    def contact(self) -> str:
        return f"<sip:iwf@{self.host}:{self._local_port()};transport=tcp>"

    def new_call_id(self) -> str:
        return sip.new_call_id(self.domain)

    def new_request(self, method: str, uri: str, *, from_uri: str, from_name: str | None = None) -> SipRequest:
        """An out-of-dialog request from the IWF (a MESSAGE from a legacy user, an IMDN)."""
        display = f'"{from_name}" ' if from_name else ""
        return sip.make_request(method, uri, via=self.via(),
                                from_=f"{display}<{from_uri}>;tag={sip.new_tag()}", to=f"<{uri}>",
                                call_id=self.new_call_id(), cseq=next(self._cseq))

    # -- sending -----------------------------------------------------------------------
    def send(self, req: SipRequest, note: str) -> None:
        """Queue a request to the CPM side; sent in order, resent if the link breaks."""
        self._outbox.append((req, note))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._drain(), name="IWF -> CPM")

    async def _drain(self) -> None:
        delay = 0.05
        while self._outbox:
            req, note = self._outbox[0]
            try:
                link = await self.connection()
                response = await link.request(req, note=note)
            except (OSError, SipConnectionClosed) as exc:
                log.warning("IWF cannot reach CPM (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            self._outbox.popleft()
            if response.status >= 300:
                log.warning("CPM refused %s %s: %s %s", req.method, req.uri, response.status, response.reason)
                if self._on_refused is not None:
                    self._on_refused(req, response)

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
