"""An SMPP v3.4 ESME on the lab's asyncio loop: the IWF's and the handsets' link to an SMSC.

One TCP connection bound as transceiver, framed and decoded by the sans-I/O codec in
protocols/smpp.py (the same one the SMSC uses): no threads, no blocking client. Submits
are pipelined (each waits for the submit_sm_resp with its own sequence number, so callers
choose their window: the IWF keeps one part in flight per conversation); a deliver_sm is
handed to the owner, whose answer (an SMPP status) becomes the deliver_sm_resp, so the
owner can keep what it acknowledges before the SMSC hears it. The ESME reconnects and
rebinds by itself when the SMSC goes away; submits wait for the bind, so nothing is lost
in between. The SMSC end records the trace (it accepts every SMPP connection).
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import socket
from typing import Any, Awaitable, Callable

from smpplib import consts as C

from iwlab.backends.directory import NodeDirectory
from iwlab.backends.protocols import smpp

log = logging.getLogger(__name__)
# The owner's verdict on a deliver_sm: the status of the deliver_sm_resp (ESME_ROK: taken).
DeliverHandler = Callable[[Any], "int | None | Awaitable[int | None]"]
StateHandler = Callable[[str, str], None]     # (state, detail): bound / disconnected / refused

BIND_TIMEOUT = 10.0       # seconds for connect + bind_resp
RESPONSE_TIMEOUT = 10.0   # seconds for a submit_sm_resp


class SubmitFailed(Exception):
    def __init__(self, status: int, command: str = "submit_sm_resp") -> None:
        self.status = status
        super().__init__(f"{command}: {status_name(status)}")


class BindRefused(Exception):
    pass


def status_name(status: int) -> str:
    return smpp.status_name(status)


class _Link(asyncio.Protocol):
    """One bound (or binding) connection: frames PDUs, matches responses to requests."""

    def __init__(self, esme: "Esme") -> None:
        self.esme = esme
        self.framer = smpp.Framer()
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future] = {}
        self.lost: asyncio.Future = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        for raw in self.framer.feed(data):
            try:
                pdu = smpp.parse(raw)
            except smpp.ParseError as err:
                if err.command_id & smpp.RESPONSE_BIT:
                    self._settle(err.sequence, SubmitFailed(err.status, "unreadable response"))
                elif err.command_id != smpp.GENERIC_NACK:
                    self.write(smpp.make("generic_nack", err.sequence, err.status))
                continue
            self.esme.received(self, pdu)
        if self.framer.error is not None:
            log.warning("%s: the SMSC sent an impossible command_length; closing", self.esme.system_id)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        failure = ConnectionError(f"SMSC connection lost ({exc})" if exc else "SMSC connection closed")
        for future in self.pending.values():
            if not future.done():
                future.set_exception(failure)
        self.pending.clear()
        if not self.lost.done():
            self.lost.set_result(None)

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def write(self, pdu: Any) -> None:
        if not self.is_open:
            raise ConnectionError("not connected to the SMSC")
        assert self.transport is not None
        self.transport.write(smpp.encode(pdu))

    def request(self, pdu: Any) -> asyncio.Future:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.pending[pdu.sequence] = future
        try:
            self.write(pdu)
        except ConnectionError:
            self.pending.pop(pdu.sequence, None)
            raise
        return future

    def response(self, pdu: Any) -> None:
        self._settle(pdu.sequence, pdu)

    def _settle(self, sequence: int, outcome: Any) -> None:
        future = self.pending.pop(sequence, None)
        if future is None or future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class Esme:
    def __init__(self, host: str, port: int, system_id: str, password: str, *, node_name: str,
                 nodes: NodeDirectory | None, on_deliver: DeliverHandler | None = None,
                 on_state: StateHandler | None = None, system_type: str = "",
                 reconnect_delay: float = 0.5, accept: Callable[[Any], int] | None = None) -> None:
        self.host, self.port = host, port
        self.system_id, self.password, self.system_type = system_id, password, system_type
        self.node_name = node_name
        self.nodes = nodes
        self.on_deliver = on_deliver
        self.on_state = on_state
        self.accept = accept          # a quick status check before on_deliver (e.g. "anyone behind this number?")
        self.reconnect_delay = reconnect_delay
        self.state = "closed"
        self.last_error = ""
        self._link: _Link | None = None
        self._bound = asyncio.Event()
        self._stopping = False
        self._runner: asyncio.Task | None = None
        self._sequence = itertools.cycle(range(1, 0x7FFFFFFF))
        self._handlers: set[asyncio.Task] = set()

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        self._stopping = False
        self._runner = asyncio.create_task(self._run(), name=f"ESME {self.system_id}")

    async def wait_bound(self, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(self._bound.wait(), timeout)
        except asyncio.TimeoutError:
            raise ConnectionError(f"{self.system_id} is not bound to the SMSC: "
                                  f"{self.last_error or 'no answer to bind'}") from None

    @property
    def is_bound(self) -> bool:
        return self._bound.is_set()

    async def stop(self) -> None:
        self._stopping = True
        link = self._link
        if link is not None and link.is_open and self._bound.is_set():
            try:   # a polite goodbye; the SMSC's answer is not worth waiting long for
                await asyncio.wait_for(link.request(smpp.make("unbind", next(self._sequence))), 2)
            except (ConnectionError, asyncio.TimeoutError, SubmitFailed):
                pass
        if link is not None:
            link.close()
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass
        for task in list(self._handlers):
            task.cancel()
        self._bound.clear()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                link = await asyncio.wait_for(self._connect_and_bind(loop), BIND_TIMEOUT)
            except BindRefused as exc:
                # Wrong password / system_id: retrying will not help until someone fixes it.
                self._set_state("refused", str(exc))
                return
            except (OSError, ConnectionError, asyncio.TimeoutError, SubmitFailed) as exc:
                self._set_state("disconnected", f"cannot reach SMSC {self.host}:{self.port}: {exc or 'timeout'}")
                await asyncio.sleep(self.reconnect_delay)
                continue
            self._link = link
            self._bound.set()
            self._set_state("bound", f"bound to {self.host}:{self.port} as {self.system_id}")
            await link.lost
            self._bound.clear()
            self._link = None
            self._release(link)
            if not self._stopping:
                self._set_state("disconnected", "SMSC connection lost; reconnecting")
                await asyncio.sleep(self.reconnect_delay)

    async def _connect_and_bind(self, loop: asyncio.AbstractEventLoop) -> _Link:
        _, link = await loop.create_connection(lambda: _Link(self), self.host, self.port)
        assert link.transport is not None
        here, there = link.transport.get_extra_info("sockname")[:2], link.transport.get_extra_info("peername")[:2]
        if here == there:
            # TCP self-connect: while the SMSC is down, an ephemeral port equal to its port connects to
            # itself, and would keep the SMSC from listening there again. Drop it and retry.
            link.transport.abort()
            raise ConnectionError(f"connected to itself on {here[1]} (no SMSC listening)")
        if self.nodes is not None:   # name ourselves before the first PDU, so the SMSC's trace says who we are
            self.nodes.claim(here, self.node_name, there)
        try:
            resp = await link.request(smpp.make(
                "bind_transceiver", next(self._sequence), system_id=self.system_id, password=self.password,
                system_type=self.system_type, interface_version=C.SMPP_VERSION_34,
                addr_ton=0, addr_npi=0, address_range=""))
        except BaseException:
            link.close()
            self._release(link)
            raise
        if resp.status != C.SMPP_ESME_ROK:
            link.close()
            self._release(link)
            # Wrong credentials will not mend by retrying; ESME_RBINDFAIL ("bind failed", an SMSC
            # that is busy or in maintenance) may, so it is retried like a lost connection.
            if resp.status in (C.SMPP_ESME_RINVPASWD, C.SMPP_ESME_RINVSYSID):
                raise BindRefused(f"bind refused: {status_name(resp.status)}")
            raise SubmitFailed(resp.status, "bind_transceiver_resp")
        return link

    def _release(self, link: _Link) -> None:
        if self.nodes is not None and link.transport is not None:
            sockname, peername = link.transport.get_extra_info("sockname"), link.transport.get_extra_info("peername")
            if sockname and peername:
                self.nodes.release(sockname[:2], peername[:2])

    def _set_state(self, state: str, detail: str) -> None:
        self.state = state
        self.last_error = detail if state != "bound" else ""
        if self.on_state:
            self.on_state(state, detail)

    # -- what arrives -------------------------------------------------------------
    def received(self, link: _Link, pdu: Any) -> None:
        if pdu.is_response() or pdu.command == "generic_nack":
            link.response(pdu)
        elif pdu.command == "deliver_sm":
            self._deliver(link, pdu)
        elif pdu.command == "enquire_link":
            link.write(smpp.make("enquire_link_resp", pdu.sequence))
        elif pdu.command == "unbind":
            link.write(smpp.make("unbind_resp", pdu.sequence))
            link.close()
        else:
            link.write(smpp.make("generic_nack", pdu.sequence, C.SMPP_ESME_RINVCMDID))

    def _deliver(self, link: _Link, pdu: Any) -> None:
        """Ask the owner, then answer: the deliver_sm_resp leaves only once the owner has it."""
        status = self.accept(pdu) if self.accept else C.SMPP_ESME_ROK
        if status == C.SMPP_ESME_ROK and self.on_deliver is not None:
            try:
                verdict = self.on_deliver(pdu)
            except Exception:   # noqa: BLE001 - the SMSC keeps it and tries again; we must not drop it
                log.exception("%s: handling a deliver_sm failed", self.system_id)
                verdict = C.SMPP_ESME_RX_T_APPN
            if inspect.isawaitable(verdict):   # the owner stores it first: answer when that is done
                task = asyncio.ensure_future(self._answer_later(link, pdu, verdict))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)
                return
            status = C.SMPP_ESME_ROK if verdict is None else verdict
        self._answer(link, pdu, status)

    async def _answer_later(self, link: _Link, pdu: Any, verdict: Awaitable[int | None]) -> None:
        try:
            status = await verdict
        except Exception:   # noqa: BLE001
            log.exception("%s: handling a deliver_sm failed", self.system_id)
            status = C.SMPP_ESME_RX_T_APPN
        self._answer(link, pdu, C.SMPP_ESME_ROK if status is None else status)

    @staticmethod
    def _answer(link: _Link, pdu: Any, status: int) -> None:
        if link.is_open:
            link.write(smpp.make("deliver_sm_resp", pdu.sequence, status, message_id=""))

    # -- submitting -----------------------------------------------------------
    async def submit(self, **params: Any) -> Any:
        """Send one submit_sm and return its submit_sm_resp (or generic_nack) PDU.

        Waits for the bind first. Raises ConnectionError if the connection drops
        before the answer: the caller decides whether to resend.
        """
        await self._bound.wait()
        link = self._link
        if link is None or not link.is_open:
            raise ConnectionError("not bound")
        future = link.request(smpp.make("submit_sm", next(self._sequence), **params))
        try:
            return await asyncio.wait_for(asyncio.shield(future), RESPONSE_TIMEOUT)
        except asyncio.TimeoutError:
            # An answer that never comes would hold the conversation forever: drop the
            # connection (the ESME reconnects) and let the caller resend.
            link.close()
            raise ConnectionError(f"no submit_sm_resp within {RESPONSE_TIMEOUT:.0f} s") from None
