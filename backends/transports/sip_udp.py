"""SIP over UDP (RFC 3261 18, 17; RFC 3581): one socket, a flow per remote address.

Each remote address seen on the socket becomes a `SipUdpFlow`, which nodes use exactly
like a TCP `SipConnection` (send, request, name_of_peer ...): a registrar keeps the flow a
softphone registered from, a proxy relays responses onto it. What UDP adds lives here:

- requests are retransmitted until answered (Timer A/E, doubling from T1, capped at T2
  for non-INVITE, stopped by a provisional for INVITE) and given up after 64*T1 (B/F);
- a retransmitted request is not handed up again: the answer already sent is sent again
  (server transactions, kept 32 s = Timer J);
- a request's top Via gets received/rport (RFC 3581) so responses reach the source port.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from iwlab.backends.directory import NodeDirectory
from iwlab.backends.protocols import sip
from iwlab.backends.protocols.sip import SipParseError, SipRequest, SipResponse
from iwlab.backends.trace import Trace
from iwlab.backends.transports.sip import (
    MessageHandler,
    SipConnection,
    SipConnectionClosed,
    SipMessage,
    stamp_transport,
)

log = logging.getLogger(__name__)
T1, T2 = 0.5, 4.0
TRANSACTION_LIFETIME = 64 * T1      # Timer B / F: a request nobody answers is given up
ANSWERS_KEPT = 32.0                 # Timer J: retransmissions of a request are answered again
MAX_DATAGRAM = 65_507               # what one UDP datagram can carry at all


class SipUdpFlow(SipConnection):
    """The messages exchanged with one remote address over one UDP socket."""

    def __init__(self, endpoint: "SipUdpEndpoint", peer: tuple[str, int]) -> None:
        super().__init__(endpoint.on_message, local_name=endpoint.local_name, trace=endpoint.trace,
                         nodes=endpoint.nodes, on_close=endpoint.on_close, annotate=endpoint.annotate)
        self.endpoint = endpoint
        self.peer_address = peer
        self.local_address = endpoint.local_address
        self._open = True
        self._answers: dict[tuple[str, str], tuple[bytes | None, float]] = {}   # (branch, method) -> last answer
        self._timers: dict[str, asyncio.TimerHandle] = {}

    @property
    def transport_name(self) -> str:
        return "udp"

    @property
    def is_open(self) -> bool:
        return self._open and self.endpoint.is_open

    def close(self) -> None:
        """Forget the flow (UDP has no connection to close); pending requests fail."""
        if not self._open:
            return
        self._open = False
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.endpoint.forget(self)
        self.connection_lost(None)

    # -- receiving ----------------------------------------------------------------------
    def datagram(self, data: bytes) -> None:
        if not data.strip(b"\r\n"):
            return   # a keep-alive (RFC 5626 CRLF ping)
        try:
            message = sip.parse_message(data)
        except SipParseError as error:
            self._arrived(error)
            return
        if isinstance(message, SipRequest):
            key = (sip.top_branch(message), message.method)
            answered = self._answers.get(key)
            if answered is not None and key[0]:
                if answered[0] is not None:       # a retransmission: the same answer again
                    self._write(answered[0])
                return
            if message.method != "ACK":
                self._answers[key] = (None, _now() + ANSWERS_KEPT)
        else:
            self._stop_retransmitting(sip.top_branch(message), message)
        self._arrived(message)

    def _recorded(self, message: SipMessage) -> None:
        """RFC 3261 18.2.1 / RFC 3581: the top Via says where the request really came from (so an
        answer goes back there), added once the trace has the request as the client sent it."""
        if isinstance(message, SipRequest):
            vias = message.headers.get_all("Via")
            if vias:
                message.headers.replace_top("Via", sip.mark_received(vias[0], self.peer_address))

    # -- sending ------------------------------------------------------------------------
    def send(self, message: SipMessage, note: str = "") -> None:
        if not self.is_open:
            raise SipConnectionClosed(f"the UDP flow to {self.name_of_peer()} is closed")
        stamp_transport(message, "udp")
        raw = message.to_bytes()
        if len(raw) > MAX_DATAGRAM:
            raise SipConnectionClosed(f"{len(raw)} bytes do not fit in a UDP datagram")
        if self.trace is not None:
            self.trace.gate.admit(lambda: self._put(message, raw, note), lambda: self._hop(message, incoming=False))
            return
        self._put(message, raw, note)

    def _put(self, message: SipMessage, raw: bytes, note: str) -> None:
        if not self.is_open:   # forgotten while it waited at the gate: it never went
            return
        self._write(raw)
        if isinstance(message, SipResponse) and message.status >= 200:
            key = (sip.top_branch(message), sip.cseq_method(message))
            if key in self._answers:
                self._answers[key] = (raw, _now() + ANSWERS_KEPT)
        self._forget_old_answers()
        if self.trace is not None:
            self._record(message, incoming=False, raw=raw, note=note)
        elif note and self.annotate and isinstance(message, SipRequest):
            self.annotate(message.headers.get("Call-ID") or "", note)

    def request(self, request: SipRequest, *, on_provisional: Callable[[SipResponse], None] | None = None,
                note: str = "") -> asyncio.Future[SipResponse]:
        future = super().request(request, on_provisional=on_provisional, note=note)
        if request.method != "ACK":
            self._retransmit_later(request, T1, _now() + TRANSACTION_LIFETIME)
        return future

    def _write(self, raw: bytes) -> None:
        self.endpoint.sendto(raw, self.peer_address)

    def _retransmit_later(self, request: SipRequest, interval: float, give_up: float) -> None:
        branch = sip.top_branch(request)
        loop = asyncio.get_running_loop()
        self._timers[branch] = loop.call_later(interval, self._retransmit, request, interval, give_up)

    def _retransmit(self, request: SipRequest, interval: float, give_up: float) -> None:
        branch = sip.top_branch(request)
        self._timers.pop(branch, None)
        future = self._pending.get(branch)
        if future is None or future.done() or not self.is_open:
            return
        if _now() >= give_up:                     # Timer B / F
            self._pending.pop(branch, None)
            self._provisional.pop(branch, None)
            future.set_exception(SipConnectionClosed(f"no answer from {self.name_of_peer()} over UDP"))
            return
        self._write(request.to_bytes())
        next_interval = interval * 2 if request.method == "INVITE" else min(interval * 2, T2)
        self._retransmit_later(request, next_interval, give_up)

    def _stop_retransmitting(self, branch: str, response: SipResponse) -> None:
        """Any answer stops a non-INVITE's retransmissions; for INVITE a provisional does too (17.1.1.2)."""
        timer = self._timers.pop(branch, None)
        if timer is not None:
            timer.cancel()

    def _forget_old_answers(self) -> None:
        if len(self._answers) < 256:
            return
        now = _now()
        for key in [k for k, (_, until) in self._answers.items() if until < now]:
            del self._answers[key]


def _now() -> float:
    """The loop's clock: the lab's, which stands still while a trainer steps (backends.clock)."""
    return asyncio.get_running_loop().time()


class SipUdpEndpoint(asyncio.DatagramProtocol):
    """One UDP socket of a SIP node: datagrams to and from every remote address."""

    def __init__(self, on_message: MessageHandler, *, local_name: str, trace: Trace | None = None,
                 nodes: NodeDirectory | None = None, on_close: Callable[[SipConnection], None] | None = None,
                 annotate: Callable[[str, str], None] | None = None) -> None:
        self.on_message, self.local_name, self.trace, self.nodes = on_message, local_name, trace, nodes
        self.on_close, self.annotate = on_close, annotate
        self.transport: asyncio.DatagramTransport | None = None
        self.local_address: tuple[str, int] = ("?", 0)
        self.flows: dict[tuple[str, int], SipUdpFlow] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport, whatever its class says
        self.local_address = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.flow(addr[:2]).datagram(data)

    def error_received(self, exc: Exception) -> None:
        log.info("%s: UDP error %s", self.local_name, exc)   # an ICMP port unreachable: retransmissions decide

    def connection_lost(self, exc: Exception | None) -> None:
        for flow in list(self.flows.values()):
            flow.close()

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def flow(self, peer: tuple[str, int]) -> SipUdpFlow:
        """The flow to a remote address (new if nothing came from or went to it yet)."""
        flow = self.flows.get(peer)
        if flow is None or not flow.is_open:
            flow = self.flows[peer] = SipUdpFlow(self, peer)
        return flow

    def forget(self, flow: SipUdpFlow) -> None:
        if self.flows.get(flow.peer_address) is flow:
            del self.flows[flow.peer_address]

    def sendto(self, raw: bytes, peer: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(raw, peer)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_udp_endpoint(host: str, port: int, on_message: MessageHandler, *, local_name: str,
                            trace: Trace | None = None, nodes: NodeDirectory | None = None,
                            on_close: Callable[[SipConnection], None] | None = None,
                            annotate: Callable[[str, str], None] | None = None) -> SipUdpEndpoint:
    loop = asyncio.get_running_loop()
    _, endpoint = await loop.create_datagram_endpoint(
        lambda: SipUdpEndpoint(on_message, local_name=local_name, trace=trace, nodes=nodes, on_close=on_close,
                               annotate=annotate),
        local_addr=(host, port))
    return endpoint


async def open_udp_flow(host: str, port: int, on_message: MessageHandler, *, local_name: str,
                        nodes: NodeDirectory | None, on_close: Callable[[SipConnection], None] | None = None,
                        annotate: Callable[[str, str], None] | None = None) -> SipUdpFlow:
    """A UDP "connection" for an in-lab client (a phone set to UDP): a socket of its own, one flow
    to the server; closing the flow closes the socket. The local address is claimed, so the
    server (the recording end) names us."""
    def closed(flow: SipConnection) -> None:
        endpoint.close()
        if on_close is not None:
            on_close(flow)
    family_host = "::1" if ":" in host else "127.0.0.1"
    endpoint = await open_udp_endpoint(family_host, 0, on_message, local_name=local_name, nodes=nodes,
                                       on_close=closed, annotate=annotate)
    if nodes is not None:
        nodes.claim(endpoint.local_address, local_name)
    return endpoint.flow((host.strip("[]"), port))
