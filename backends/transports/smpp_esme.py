"""An SMPP ESME on smpplib's blocking client, kept off the event loop.

smpplib's Client is blocking and unlocked (FIELD-NOTES): a reader thread
runs read_once() forever and answers deliver_sm from that thread, while the
loop submits through a single writer thread. A lock guards the socket and the
sequence counter. Results come back to the loop with call_soon_threadsafe.
The ESME reconnects and rebinds by itself when the SMSC goes away; submits
wait for the bind, so nothing is lost in between.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import smpplib.client
import smpplib.consts as c
import smpplib.exceptions
import smpplib.smpp

from iwlab.backends.directory import NodeDirectory

log = logging.getLogger(__name__)
DeliverHandler = Callable[[Any], None]   # gets the parsed deliver_sm PDU, on the loop thread
StateHandler = Callable[[str, str], None]  # (state, detail) on the loop thread: bound / disconnected / refused


BIND_TIMEOUT = 10.0       # seconds for connect + bind_resp
RESPONSE_TIMEOUT = 10.0   # seconds for a submit_sm_resp


class SubmitFailed(Exception):
    def __init__(self, status: int, command: str = "submit_sm_resp") -> None:
        self.status = status
        super().__init__(f"{command}: {status_name(status)}")


def status_name(status: int) -> str:
    for name in dir(c):
        if name.startswith("SMPP_ESME_R") and getattr(c, name) == status:
            return name[len("SMPP_"):]
    return f"0x{status:08X}"


class _LockedSequence(smpplib.client.SimpleSequenceGenerator):
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def next_sequence(self) -> int:
        with self._lock:
            return super().next_sequence()


def shorten_thread_handoffs() -> None:
    """Let a reader thread that has a PDU take the GIL within 0.5 ms instead of 5 ms.

    A lock-step submit waits for its response to cross from the reader thread
    to the loop; at the default 5 ms switch interval that handoff, not the
    network, set the pace (measured: bench/end_to_end.py).
    """
    if sys.getswitchinterval() > 0.0005:
        sys.setswitchinterval(0.0005)


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
        # Runs on the reader thread before deliver_sm_resp: the status to answer with.
        # It must be quick and only read state (e.g. "is there anyone behind this number?").
        self.accept = accept
        self.reconnect_delay = reconnect_delay
        self.state = "closed"
        self.last_error = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: smpplib.client.Client | None = None
        self._send_lock = threading.Lock()
        self._pending: dict[int, asyncio.Future] = {}
        self._bound = asyncio.Event()
        self._stopping = threading.Event()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"esme-{system_id}-write")
        self._runner: asyncio.Task | None = None
        self._reader: threading.Thread | None = None
        self._binding: smpplib.client.Client | None = None   # a client waiting for its bind_resp
        self._writer_busy = 0   # sends queued on the writer thread; direct sends wait behind them

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        shorten_thread_handoffs()
        self._loop = asyncio.get_running_loop()
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
        self._stopping.set()
        if self._runner:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass
        loop = asyncio.get_running_loop()
        binding = self._binding
        if binding is not None and binding._socket is not None:
            # A bind still waiting for its answer would hold the writer thread forever.
            _shutdown_socket(binding)
        client = self._client
        if client is not None and client._socket is not None:
            await loop.run_in_executor(None, self._unbind_and_close, client)
        if self._reader is not None:
            await loop.run_in_executor(None, self._reader.join, 5.0)
        await loop.run_in_executor(None, self._writer.shutdown, True)   # never block the loop on it
        self._fail_pending(ConnectionError("ESME stopped"))

    def _unbind_and_close(self, client: smpplib.client.Client) -> None:
        try:
            if client.state in (c.SMPP_CLIENT_STATE_BOUND_TX, c.SMPP_CLIENT_STATE_BOUND_RX,
                                c.SMPP_CLIENT_STATE_BOUND_TRX):
                client.send_pdu(smpplib.smpp.make_pdu("unbind", client=client))   # locked_send
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        _shutdown_socket(client)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                client = await loop.run_in_executor(self._writer, self._connect_and_bind)
            except (smpplib.exceptions.ConnectionError, OSError) as exc:
                self._set_state("disconnected", f"cannot reach SMSC {self.host}:{self.port}: {exc}")
                await asyncio.sleep(self.reconnect_delay)
                continue
            except smpplib.exceptions.PDUError as exc:
                # Wrong password / system_id: retrying will not help until someone fixes it.
                status = exc.args[1] if len(exc.args) > 1 else 0
                self._set_state("refused", f"bind refused: {status_name(status)}")
                return
            self._client = client
            self._bound.set()
            self._set_state("bound", f"bound to {self.host}:{self.port} as {self.system_id}")
            reader = self._reader = threading.Thread(target=self._read_forever, args=(client,),
                                                     name=f"esme-{self.system_id}-read", daemon=True)
            reader.start()
            await loop.run_in_executor(None, reader.join)
            self._bound.clear()
            self._client = None
            self._fail_pending(ConnectionError("SMSC connection lost"))
            if not self._stopping.is_set():
                self._set_state("disconnected", "SMSC connection lost; reconnecting")
                await asyncio.sleep(self.reconnect_delay)

    def _connect_and_bind(self) -> smpplib.client.Client:
        client = smpplib.client.Client(self.host, self.port, timeout=BIND_TIMEOUT, allow_unknown_opt_params=True,
                                       sequence_generator=_LockedSequence())
        client.logger.setLevel(logging.ERROR)   # smpplib warns on every unhandled PDU
        self._binding = client
        client.connect()
        # Without this, Nagle holds a submit_sm behind our own deliver_sm_resp for a
        # delayed ACK: ~40 ms per message (measured).
        client._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.nodes is not None:
            self.nodes.claim(client._socket.getsockname()[:2], self.node_name)
        original_send = client.send_pdu

        def locked_send(pdu: Any) -> bool:
            with self._send_lock:
                return original_send(pdu)
        client.send_pdu = locked_send   # the reader thread answers deliver_sm while we submit
        client.set_message_received_handler(self._deliver_received)
        client.set_message_sent_handler(self._response_received)
        client.set_error_pdu_handler(self._error_received)
        try:
            client.bind_transceiver(system_id=self.system_id, password=self.password,
                                    system_type=self.system_type)
        except Exception:
            client.disconnect()
            raise
        finally:
            self._binding = None
        client._socket.settimeout(None)    # bound: the reader thread waits as long as it takes
        return client

    def _read_forever(self, client: smpplib.client.Client) -> None:
        try:
            while not self._stopping.is_set():
                client.read_once(auto_send_enquire_link=False)
                if client.state == c.SMPP_CLIENT_STATE_OPEN:   # our unbind was answered
                    break
        except (smpplib.exceptions.ConnectionError, OSError, AttributeError) as exc:
            if not self._stopping.is_set():
                self.last_error = str(exc) or exc.__class__.__name__
        finally:
            if self.nodes is not None and client._socket is not None:
                try:
                    self.nodes.release(client._socket.getsockname()[:2])
                except OSError:
                    pass
            try:
                client.disconnect()
            except Exception:  # noqa: BLE001
                pass

    # -- reader-thread callbacks ---------------------------------------------
    def _deliver_received(self, pdu: Any) -> int:
        status = self.accept(pdu) if self.accept else c.SMPP_ESME_ROK
        if status == c.SMPP_ESME_ROK and self.on_deliver and self._loop:
            self._loop.call_soon_threadsafe(self.on_deliver, pdu)
        return status

    def _response_received(self, pdu: Any) -> None:
        self._resolve(pdu.sequence, pdu)

    def _error_received(self, pdu: Any) -> None:
        # read_once calls this and then, for submit_sm_resp, the sent handler too;
        # only a generic_nack has nobody else to resolve it.
        if pdu.command == "generic_nack":
            self._resolve(pdu.sequence, pdu)

    def _resolve(self, sequence: int, pdu: Any) -> None:
        if self._loop is None:
            return

        def settle() -> None:
            future = self._pending.pop(sequence, None)
            if future and not future.done():
                future.set_result(pdu)
        self._loop.call_soon_threadsafe(settle)

    def _set_state(self, state: str, detail: str) -> None:
        self.state = state
        self.last_error = detail if state != "bound" else ""
        if self.on_state:
            self.on_state(state, detail)

    def _fail_pending(self, exc: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    # -- submitting -----------------------------------------------------------
    async def submit(self, **params: Any) -> Any:
        """Send one submit_sm and return its submit_sm_resp (or generic_nack) PDU.

        Waits for the bind first. Raises ConnectionError if the connection
        drops before the answer: the caller decides whether to resend.
        """
        await self._bound.wait()
        client = self._client
        if client is None:
            raise ConnectionError("not bound")
        pdu = smpplib.smpp.make_pdu("submit_sm", client=client, **params)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[pdu.sequence] = future
        try:
            if not self._send_now(client, pdu):
                self._writer_busy += 1
                try:
                    await asyncio.get_running_loop().run_in_executor(self._writer, client.send_pdu, pdu)
                finally:
                    self._writer_busy -= 1
            return await asyncio.wait_for(future, RESPONSE_TIMEOUT)
        except asyncio.TimeoutError:
            # An answer that never comes would hold the conversation forever: drop the
            # connection (the ESME reconnects) and let the caller resend.
            _shutdown_socket(client)
            raise ConnectionError(f"no submit_sm_resp within {RESPONSE_TIMEOUT:.0f} s") from None
        except (smpplib.exceptions.ConnectionError, smpplib.exceptions.PDUError, AttributeError, OSError) as exc:
            # PDUError/AttributeError: the connection went down between our check and the send.
            raise ConnectionError(str(exc) or exc.__class__.__name__) from exc
        finally:
            self._pending.pop(pdu.sequence, None)


    def _send_now(self, client: smpplib.client.Client, pdu: Any) -> bool:
        """Write a PDU from the loop thread if the kernel takes it at once; False: use the writer thread.

        A thread hop per submit_sm was most of a lock-step submit's latency
        (bench/end_to_end.py); MSG_DONTWAIT keeps the loop from ever blocking.
        """
        if self._writer_busy:
            return False   # bytes queued on the writer thread go first
        data = pdu.generate()
        if not self._send_lock.acquire(blocking=False):
            return False   # the reader thread is answering a deliver_sm: let the writer wait its turn
        try:
            sock = client._socket
            if sock is None:
                raise smpplib.exceptions.ConnectionError("not connected")
            try:
                sent = sock.send(data, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return False
            if sent < len(data):   # rare: finish the rest blocking, off the loop, before anything else
                self._writer_busy += 1
                done = asyncio.get_running_loop().run_in_executor(self._writer, self._send_rest, sock, data[sent:])
                done.add_done_callback(self._writer_done)
            return True
        finally:
            self._send_lock.release()

    def _send_rest(self, sock: socket.socket, rest: bytes) -> None:
        with self._send_lock:
            sock.sendall(rest)

    def _writer_done(self, future: Any) -> None:
        self._writer_busy -= 1
        if not future.cancelled() and future.exception() is not None:
            # The connection is broken: the reader thread sees it and the ESME reconnects.
            log.warning("%s: could not finish a write: %s", self.system_id, future.exception())


def _shutdown_socket(client: smpplib.client.Client) -> None:
    try:
        if client._socket is not None:
            client._socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
