"""The SMSC simulator against real smpplib clients over loopback.

The server runs on an asyncio loop in a background thread; the blocking
smpplib clients run in the test thread (and reader threads). Waiting is
always on queues/futures with timeouts, never on sleeps.
"""
from __future__ import annotations

import asyncio
import queue
import select
import socket
import struct
import threading
import time

import pytest
import smpplib.client
import smpplib.exceptions
import smpplib.smpp
from smpplib import consts as C

from iwlab.backends.directory import NodeDirectory
from iwlab.backends.nodes.smsc import EsmeAccount, Smsc
from iwlab.backends.protocols import smpp as codec
from iwlab.backends.store import Store
from iwlab.backends.trace import Trace

PETER, MARY = "15550201", "15550101"
BOUND = (C.SMPP_CLIENT_STATE_BOUND_TX, C.SMPP_CLIENT_STATE_BOUND_RX, C.SMPP_CLIENT_STATE_BOUND_TRX)


# -- harness ------------------------------------------------------------------------------

class World:
    """An SMSC on its own loop thread, plus the trace and node directory it uses."""

    def __init__(self) -> None:
        self.trace, self.nodes = Trace(), NodeDirectory()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-smsc-loop", daemon=True)
        self.thread.start()
        self.smscs: list[Smsc] = []
        self.esmes: list[Esme] = []

    def run(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args):
        async def wrapped():
            return fn(*args)
        return self.run(wrapped())

    def smsc(self, **kwargs) -> Smsc:
        settings = dict(accounts=[EsmeAccount("iwf-b", "secret", "IWF", routes=[MARY, "1555099*"])],
                        handset_password="iwlab", handset_numbers={PETER: "Peter", "15550202": "John"})
        settings.update(kwargs)
        smsc = Smsc(self.trace, self.nodes, **settings)
        self.run(smsc.start())
        self.smscs.append(smsc)
        return smsc

    def esme(self, smsc: Smsc, *args, **kwargs) -> "Esme":
        esme = Esme(smsc.port, *args, nodes=self.nodes, **kwargs)
        self.esmes.append(esme)
        return esme

    def close(self) -> None:
        for esme in self.esmes:
            esme.close()
        for smsc in self.smscs:
            self.run(smsc.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def world():
    w = World()
    yield w
    w.close()


class Esme:
    """A real smpplib.Client that records the exact bytes it sends and receives."""

    def __init__(self, port: int, system_id: str | None = None, password: str | None = None,
                 mode: str = "transceiver", *, nodes: NodeDirectory | None = None, claim: str | None = None):
        self.client = smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)
        self.client.connect()
        if claim:
            nodes.claim(self.client._socket.getsockname(), claim)
        self.local = self.client._socket.getsockname()
        self.sent: list[bytes] = []
        self.received: list[bytes] = []
        self.delivered: queue.Queue = queue.Queue()   # deliver_sm we acknowledged with ESME_ROK
        self.seen: list[tuple[object, int]] = []       # every deliver_sm and the status we answered
        self.deliver_status = lambda pdu: C.SMPP_ESME_ROK
        self._rx: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        send, recv = self.client.send_pdu, self.client._recv_exact

        def send_pdu(p):
            with self._lock:   # a reader thread answers deliver_sm while the test may send
                self.sent.append(p.generate())
                return send(p)

        def recv_exact(n):
            data = recv(n)
            self._rx.append(data)
            return data
        self.client.send_pdu, self.client._recv_exact = send_pdu, recv_exact
        if system_id is not None:
            self.bind(mode, system_id, password)

    def bind(self, mode: str, system_id: str, password: str):
        self._rx = []
        try:
            return self.client._bind(f"bind_{mode}", system_id=system_id, password=password)
        finally:
            self.received.append(b"".join(self._rx))

    def read(self, timeout: float):
        """One PDU (answering deliver_sm / enquire_link), or None after timeout."""
        ready, _, _ = select.select([self.client._socket], [], [], timeout)
        if not ready:
            return None
        self._rx = []
        pdu = self.client.read_pdu()
        self.received.append(b"".join(self._rx))
        if pdu.command == "deliver_sm":
            status = self.deliver_status(pdu)
            self.seen.append((pdu, status))
            self._answer("deliver_sm_resp", pdu.sequence, status)
            if status == C.SMPP_ESME_ROK:
                self.delivered.put(pdu)
        elif pdu.command == "enquire_link":
            self._answer("enquire_link_resp", pdu.sequence)
        return pdu

    def _answer(self, name: str, sequence: int, status: int = 0) -> None:
        resp = smpplib.smpp.make_pdu(name, client=self.client, status=status, allow_unknown_opt_params=True)
        resp.sequence = sequence
        self.client.send_pdu(resp)

    def listen(self) -> "Esme":
        def run():
            while not self._stop.is_set():
                try:
                    self.read(0.05)
                except (smpplib.exceptions.ConnectionError, OSError):
                    return
        self._thread = threading.Thread(target=run, name="test-esme-reader", daemon=True)
        self._thread.start()
        return self

    def submit(self, dest: str, text: bytes = b"hello", *, source: str = MARY, timeout: float = 5, **kw):
        kw = {"source_addr_ton": C.SMPP_TON_INTL, "source_addr_npi": C.SMPP_NPI_ISDN,
              "dest_addr_ton": C.SMPP_TON_INTL, "dest_addr_npi": C.SMPP_NPI_ISDN, **kw}
        request = self.client.send_message(source_addr=source, destination_addr=dest, short_message=text, **kw)
        deadline = time.monotonic() + timeout
        while True:
            pdu = self.read(max(0.0, deadline - time.monotonic()))
            if pdu is None:
                raise TimeoutError("no submit_sm_resp")
            if pdu.command in ("submit_sm_resp", "generic_nack") and pdu.sequence == request.sequence:
                return pdu

    def wait_delivered(self, count: int, timeout: float = 10) -> list:
        got, deadline = [], time.monotonic() + timeout
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(got)} of {count} deliver_sm")
            try:
                got.append(self.delivered.get(timeout=remaining if self._thread else 0))
            except queue.Empty:
                if not self._thread:
                    self.read(min(remaining, 0.1))
        return got

    def close(self) -> None:
        if self.client._socket is None:
            return
        self._stop.set()
        if self._thread:
            self._thread.join(5)
            self._thread = None
        try:
            if self.client.state in BOUND:
                unbind = smpplib.smpp.make_pdu("unbind", client=self.client, allow_unknown_opt_params=True)
                self.client.send_pdu(unbind)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    pdu = self.read(0.1)
                    if pdu is not None and pdu.command == "unbind_resp":
                        break
        except (smpplib.exceptions.ConnectionError, OSError):
            pass
        self.client.disconnect()


class Raw:
    """A plain socket for bytes smpplib would refuse to send."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self):
        head = self._exact(4)
        if head is None:
            return None
        return codec.parse(head + self._exact(int.from_bytes(head, "big") - 4))

    def _exact(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            part = self.sock.recv(n - len(data))
            if not part:
                return None
            data += part
        return data

    def bind(self, system_id: str, password: str = "iwlab", mode: str = "transceiver", seq: int = 1):
        self.send(codec.encode(codec.make(f"bind_{mode}", seq, system_id=system_id, password=password,
                                          system_type="", addr_ton=0, addr_npi=0, address_range="")))
        return self.read()

    def close(self, reset: bool = False) -> None:
        if reset:   # RST instead of FIN: the peer "dies"
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def raw_submit(seq: int, dest: str = PETER, text: bytes = b"x", source: str = MARY, **kw) -> bytes:
    return codec.encode(codec.make("submit_sm", seq, source_addr=source, destination_addr=dest,
                                   short_message=text, **kw))


def texts(pdus) -> list[bytes]:
    return [p.short_message for p in pdus]


# -- bind ---------------------------------------------------------------------------------

def test_bind_as_handset_and_refusals(world):
    smsc = world.smsc()
    peter = world.esme(smsc, PETER, "iwlab")
    assert peter.client.state == C.SMPP_CLIENT_STATE_BOUND_TRX

    for system_id, password, status in [(PETER, "wrong", C.SMPP_ESME_RINVPASWD),
                                        ("15559999", "iwlab", C.SMPP_ESME_RINVSYSID),
                                        ("iwf-b", "iwlab", C.SMPP_ESME_RINVPASWD)]:
        esme = world.esme(smsc)
        with pytest.raises(smpplib.exceptions.PDUError) as err:
            esme.bind("transmitter", system_id, password)
        assert err.value.args[1] == status
        esme.close()

    raw = Raw(smsc.port)
    assert raw.bind(PETER, mode="receiver").status == C.SMPP_ESME_ROK
    again = raw.bind(PETER, mode="receiver", seq=2)
    assert again.command == "bind_receiver_resp" and again.status == C.SMPP_ESME_RALYBND
    raw.close()
    # still serving
    assert world.esme(smsc, "iwf-b", "secret", "transmitter").client.state == C.SMPP_CLIENT_STATE_BOUND_TX


def test_commands_before_bind_and_submit_on_receiver(world):
    smsc = world.smsc()
    raw = Raw(smsc.port)
    raw.send(raw_submit(5))
    resp = raw.read()
    assert (resp.command, resp.sequence, resp.status) == ("submit_sm_resp", 5, C.SMPP_ESME_RINVBNDSTS)
    raw.send(codec.encode(codec.make("unbind", 6)))
    assert raw.read().status == C.SMPP_ESME_RINVBNDSTS
    raw.send(codec.encode(codec.make("enquire_link", 7)))   # harmless in any state
    assert raw.read().command == "enquire_link_resp"
    assert raw.bind(PETER, mode="receiver", seq=8).status == C.SMPP_ESME_ROK
    raw.send(raw_submit(9, dest=MARY))
    resp = raw.read()
    assert (resp.command, resp.status) == ("submit_sm_resp", C.SMPP_ESME_RINVBNDSTS)
    raw.close()


# -- delivery -------------------------------------------------------------------------------

def test_200_messages_delivered_in_order_with_source(world):
    smsc = world.smsc()
    peter = world.esme(smsc, PETER, "iwlab", "receiver").listen()
    iwf = world.esme(smsc, "iwf-b", "secret", "transmitter")
    ids = set()
    for i in range(200):
        resp = iwf.submit(PETER, f"message {i}".encode())
        assert resp.status == C.SMPP_ESME_ROK
        ids.add(resp.message_id)
    got = peter.wait_delivered(200)
    assert texts(got) == [f"message {i}".encode() for i in range(200)]
    assert {(p.source_addr, p.source_addr_ton, p.destination_addr) for p in got} == {(MARY.encode(), 1, PETER.encode())}
    assert len(ids) == 200 and all(int(i, 16) for i in ids)   # fresh hex ids
    assert world.call(smsc.pending) == 0


def test_throttled_submits_resent_in_order_arrive_once_in_order(world):
    smsc = world.smsc(throttle_every=2)
    peter = world.esme(smsc, PETER, "iwlab").listen()
    iwf = world.esme(smsc, "iwf-b", "secret", "transceiver")
    statuses = []
    for i in range(50):
        while True:
            status = iwf.submit(PETER, f"m{i}".encode()).status
            statuses.append(status)
            if status != C.SMPP_ESME_RTHROTTLED:
                break
    assert statuses == [C.SMPP_ESME_ROK if n % 2 == 0 else C.SMPP_ESME_RTHROTTLED for n in range(len(statuses))]
    assert texts(peter.wait_delivered(50)) == [f"m{i}".encode() for i in range(50)]
    assert peter.delivered.empty() and len(peter.seen) == 50
    smsc.throttle_every = 0
    assert iwf.submit(PETER).status == iwf.submit(PETER).status == C.SMPP_ESME_ROK


def test_store_and_forward_until_the_handset_binds(world):
    smsc = world.smsc()
    iwf = world.esme(smsc, "iwf-b", "secret", "transmitter")
    events = queue.Queue()
    world.call(smsc.on_event, lambda kind, details: events.put(kind))
    for i in range(20):
        assert iwf.submit(PETER, f"stored {i}".encode()).status == C.SMPP_ESME_ROK
    assert world.call(smsc.pending, PETER) == 20
    assert events.get(timeout=1) == "stored"
    stored_note = [e.note for e in world.trace.events() if e.summary.startswith("submit_sm ")][0]
    assert "stored: Peter not bound" in stored_note
    # a transmitter-only bind cannot take deliveries
    tx = world.esme(smsc, PETER, "iwlab", "transmitter")
    assert world.call(smsc.pending, PETER) == 20
    peter = world.esme(smsc, PETER, "iwlab", "receiver")
    assert texts(peter.wait_delivered(20)) == [f"stored {i}".encode() for i in range(20)]
    tx.close()
    first = next(e for e in world.trace.events() if e.summary.startswith("deliver_sm "))
    assert first.note == "stored until Peter bound"


def test_error_response_keeps_the_message_and_retries_in_order(world):
    smsc = world.smsc(retry_seconds=0.05)
    peter = world.esme(smsc, PETER, "iwlab", "receiver")
    refused = []

    def answer(pdu):
        if not refused:
            refused.append(pdu.short_message)
            return C.SMPP_ESME_RX_T_APPN
        return C.SMPP_ESME_ROK
    peter.deliver_status = answer
    peter.listen()
    iwf = world.esme(smsc, "iwf-b", "secret", "transmitter")
    for i in range(3):
        iwf.submit(PETER, f"r{i}".encode())
    assert texts(peter.wait_delivered(3)) == [b"r0", b"r1", b"r2"]
    assert [p.short_message for p, _ in peter.seen] == [b"r0", b"r0", b"r1", b"r2"]
    notes = [e.note for e in world.trace.events() if e.summary.startswith("deliver_sm")]
    assert "kept for retry" in notes and "attempt 2 (after ESME_RX_T_APPN)" in notes


def test_silent_handset_gets_the_message_again(world):
    smsc = world.smsc(response_seconds=0.2, retry_seconds=0.05)
    iwf = world.esme(smsc, "iwf-b", "secret", "transmitter")
    silent = Raw(smsc.port)
    assert silent.bind(PETER, mode="receiver").status == C.SMPP_ESME_ROK
    iwf.submit(PETER, b"anyone?")
    iwf.submit(PETER, b"second")
    first, again = silent.read(), silent.read()      # never answered the first one
    assert first.short_message == again.short_message == b"anyone?" and again.sequence != first.sequence
    silent.send(codec.encode(codec.make("deliver_sm_resp", again.sequence, message_id="")))
    following = silent.read()
    while following.short_message == b"anyone?":      # a stalled test answered too late: once more
        silent.send(codec.encode(codec.make("deliver_sm_resp", following.sequence, message_id="")))
        following = silent.read()
    assert following.short_message == b"second"
    silent.close()
    notes = [e.note for e in world.trace.events() if e.summary.startswith("deliver_sm ")]
    assert notes[1] == "attempt 2 (after no response)"


def test_dead_peer_keeps_pending_messages(world):
    smsc = world.smsc()
    iwf = world.esme(smsc, "iwf-b", "secret", "transmitter")
    dying = Raw(smsc.port)
    assert dying.bind(PETER, mode="receiver").status == C.SMPP_ESME_ROK
    for i in range(3):
        iwf.submit(PETER, f"d{i}".encode())
    assert dying.read().short_message == b"d0"      # received, never acknowledged
    dying.close(reset=True)
    peter = world.esme(smsc, PETER, "iwlab", "receiver")
    assert texts(peter.wait_delivered(3)) == [b"d0", b"d1", b"d2"]
    notes = [e for e in world.trace.events() if e.raw == b""]
    assert len(notes) == 1 and "3 queued for it kept (1 sent, not acknowledged)" in notes[0].note and notes[0].src == "Peter"


def test_routes_send_to_the_account_bind(world):
    smsc = world.smsc()
    iwf = world.esme(smsc, "iwf-b", "secret", "receiver").listen()
    peter = world.esme(smsc, PETER, "iwlab")
    assert peter.submit("+" + MARY, b"to mary", source=PETER).status == C.SMPP_ESME_ROK
    assert peter.submit("15550999", b"to the prefix", source=PETER).status == C.SMPP_ESME_ROK
    assert peter.submit("15557777", b"nobody", source=PETER).status == C.SMPP_ESME_RINVDSTADR
    got = iwf.wait_delivered(2)
    assert [(p.source_addr, p.destination_addr, p.dest_addr_ton) for p in got] == [
        (PETER.encode(), MARY.encode(), 1), (PETER.encode(), b"15550999", 1)]
    submit_notes = [e.note for e in world.trace.events() if e.summary.startswith("submit_sm ")]
    assert submit_notes == [f"route {MARY} -> IWF", "route 1555099* -> IWF", "no handset or route for 15557777"]


def test_udh_sar_and_payload_survive_delivery(world):
    smsc = world.smsc()
    peter = world.esme(smsc, PETER, "iwlab")
    iwf = world.esme(smsc, "iwf-b", "secret", "transmitter")
    udh_part = b"\x05\x00\x03\x07\x02\x01" + "Grüße".encode("utf-16-be")
    iwf.submit(PETER, udh_part, esm_class=0x40, data_coding=8)
    iwf.submit(PETER, b"sar", sar_msg_ref_num=300, sar_total_segments=2, sar_segment_seqnum=2)
    iwf.client.send_message(source_addr=MARY, destination_addr=PETER, short_message=None,
                            message_payload=b"all in the payload")
    first, second, third = peter.wait_delivered(3)
    assert (first.esm_class, first.data_coding, first.short_message) == (0x40, 8, udh_part)
    assert (second.sar_msg_ref_num, second.sar_total_segments, second.sar_segment_seqnum) == (300, 2, 2)
    assert third.message_payload == b"all in the payload" and not third.short_message


# -- receipts -----------------------------------------------------------------------------------

def test_delivery_receipt(world):
    smsc = world.smsc()
    peter = world.esme(smsc, PETER, "iwlab", "receiver").listen()
    iwf = world.esme(smsc, "iwf-b", "secret", "transceiver")
    resp = iwf.submit(PETER, b"Hi Peter, receipt please", registered_delivery=1)
    message_id = resp.message_id.decode()
    receipt = iwf.wait_delivered(1)[0]
    assert receipt.esm_class == 0x04
    assert receipt.receipted_message_id.decode() == message_id and receipt.message_state == 2
    assert (receipt.source_addr, receipt.destination_addr) == (PETER.encode(), MARY.encode())
    text = receipt.short_message.decode()
    assert text.startswith(f"id:{message_id} sub:001 dlvrd:001 submit date:")
    assert "stat:DELIVRD err:000 text:Hi Peter, receipt p" in text
    assert peter.wait_delivered(1)[0].short_message == b"Hi Peter, receipt please"
    # registered_delivery=2 asks for failures only: the next receipt the IWF gets is for the third
    iwf.submit(PETER, b"quiet", registered_delivery=2)
    third = iwf.submit(PETER, b"loud", registered_delivery=1).message_id
    assert iwf.wait_delivered(1)[0].receipted_message_id == third
    query = smpplib.smpp.make_pdu("query_sm", client=iwf.client, message_id=message_id, source_addr=MARY,
                                  allow_unknown_opt_params=True)
    iwf.client.send_pdu(query)
    answer = iwf.read(5)
    assert (answer.command, answer.message_state) == ("query_sm_resp", 2)


def test_expired_receipt_when_the_handset_never_binds(world):
    smsc = world.smsc(validity_seconds=0.3)
    events = queue.Queue()
    world.call(smsc.on_event, lambda kind, details: events.put((kind, details)))
    iwf = world.esme(smsc, "iwf-b", "secret", "transceiver")
    message_id = iwf.submit(PETER, b"nobody home", registered_delivery=1).message_id
    receipt = iwf.wait_delivered(1, timeout=5)[0]
    assert receipt.esm_class == 0x04 and receipt.receipted_message_id == message_id
    assert receipt.message_state == 3 and b"stat:EXPIRED" in receipt.short_message
    assert b"dlvrd:000" in receipt.short_message
    assert world.call(smsc.pending, PETER) == 0
    kinds = [events.get(timeout=1)[0] for _ in range(3)]
    assert kinds == ["bound", "stored", "expired"]     # the receipt went straight to the bound IWF


def test_undeliverable_receipt_on_a_permanent_refusal(world):
    smsc = world.smsc()
    peter = world.esme(smsc, PETER, "iwlab", "receiver")
    peter.deliver_status = lambda pdu: C.SMPP_ESME_RX_P_APPN if pdu.short_message == b"no" else C.SMPP_ESME_ROK
    peter.listen()
    iwf = world.esme(smsc, "iwf-b", "secret", "transceiver")
    refused = iwf.submit(PETER, b"no", registered_delivery=2).message_id
    iwf.submit(PETER, b"yes")
    receipt = iwf.wait_delivered(1)[0]
    assert (receipt.receipted_message_id, receipt.message_state) == (refused, 5)
    assert b"stat:UNDELIV err:101" in receipt.short_message       # 0x65, the handset's status
    assert texts(peter.wait_delivered(1)) == [b"yes"] and [p.short_message for p, _ in peter.seen] == [b"no", b"yes"]


def end_to_end_smsc(world, **kwargs) -> Smsc:
    return world.smsc(accounts=[EsmeAccount("iwf-b", "secret", "IWF", routes=[MARY], end_to_end_receipts=True)],
                      **kwargs)


def test_an_end_to_end_account_owes_the_receipt_and_its_report_becomes_it(world):
    """Peter asks for a receipt; the SMSC hands his SMS to the IWF (end-to-end receipts): no
    receipt of its own, the deliver_sm says which report the IWF owes; the IWF's report (an ESME
    delivery acknowledgement) reaches Peter as the delivery receipt."""
    smsc = end_to_end_smsc(world)
    peter = world.esme(smsc, PETER, "iwlab", "transceiver")
    iwf = world.esme(smsc, "iwf-b", "secret", "transceiver")
    message_id = peter.submit(MARY, b"Hi Mary, tell me", source=PETER, registered_delivery=1,
                              validity_period="000000000100000R").message_id.decode()
    [taken] = iwf.wait_delivered(1)
    assert taken.esm_class == 0 and taken.receipted_message_id.decode() == message_id
    assert taken.registered_delivery == 1
    assert not taken.validity_period, "NULL in a deliver_sm (SMPP v3.4 4.6.1)"
    assert peter.read(0.3) is None, "no receipt when the IWF took it"
    query = smpplib.smpp.make_pdu("query_sm", client=peter.client, message_id=message_id, source_addr=PETER,
                                  allow_unknown_opt_params=True)
    peter.client.send_pdu(query)
    assert peter.read(5).message_state == 1     # ENROUTE: nobody has said delivered yet
    text = codec.receipt_text(message_id, "DELIVRD", time.time(), time.time(), "Hi Mary, tell me")
    report = iwf.submit(PETER, text.encode(), esm_class=0x08)
    assert report.status == C.SMPP_ESME_ROK
    [receipt] = peter.wait_delivered(1)
    assert receipt.esm_class == 0x04 and receipt.receipted_message_id.decode() == message_id
    assert receipt.message_state == 2 and receipt.short_message == text.encode()
    assert (receipt.source_addr, receipt.destination_addr) == (MARY.encode(), PETER.encode())
    assert iwf.read(0.3) is None, "a report gets no receipt of its own"
    peter.client.send_pdu(smpplib.smpp.make_pdu("query_sm", client=peter.client, message_id=message_id,
                                                source_addr=PETER, allow_unknown_opt_params=True))
    assert peter.read(5).message_state == 2


def _handed_to_the_iwf(world, smsc, text=b"Hi Mary"):
    """Peter's SMS (receipt asked for) taken by the end-to-end IWF: (peter, iwf, message id)."""
    peter = world.esme(smsc, PETER, "iwlab", "transceiver")
    iwf = world.esme(smsc, "iwf-b", "secret", "transceiver")
    message_id = peter.submit(MARY, text, source=PETER, registered_delivery=1).message_id.decode()
    iwf.wait_delivered(1)
    return peter, iwf, message_id


def _report(message_id: str, stat: str = "DELIVRD") -> bytes:
    return codec.receipt_text(message_id, stat, time.time(), time.time(), "Hi Mary").encode()


def test_a_report_on_an_id_not_owed_to_that_account_is_refused(world):
    """The SMSC relays only what it owes: an id it never handed over, one handed to another
    account, or a receipt for someone other than the submitter, is refused, and Peter hears nothing."""
    smsc = world.smsc(accounts=[EsmeAccount("iwf-b", "secret", "IWF", routes=[MARY], end_to_end_receipts=True),
                                EsmeAccount("iwf-c", "secret", "IWF-C", routes=["1555099*"], end_to_end_receipts=True)])
    peter, iwf, message_id = _handed_to_the_iwf(world, smsc)
    other = world.esme(smsc, "iwf-c", "secret", "transceiver")
    assert iwf.submit(PETER, _report("7FFFFFFF"), esm_class=0x08).status == C.SMPP_ESME_RINVMSGID
    assert other.submit(PETER, _report(message_id), esm_class=0x08).status == C.SMPP_ESME_RINVMSGID
    assert iwf.submit("15550202", _report(message_id), esm_class=0x08).status == C.SMPP_ESME_RINVDSTADR
    assert peter.read(0.3) is None
    assert iwf.submit(PETER, _report(message_id), esm_class=0x08).status == C.SMPP_ESME_ROK   # still owed
    [receipt] = peter.wait_delivered(1)
    assert receipt.receipted_message_id.decode() == message_id


def test_a_report_with_no_final_state_is_refused(world):
    smsc = end_to_end_smsc(world)
    peter, iwf, message_id = _handed_to_the_iwf(world, smsc)
    for stat in ("ENROUTE", "ACCEPTD", "UNKNOWN"):
        assert iwf.submit(PETER, _report(message_id, stat), esm_class=0x08).status == C.SMPP_ESME_RINVESMCLASS
    assert peter.read(0.3) is None


def test_a_report_sent_again_is_answered_ok_without_a_second_receipt(world):
    """The IWF resends its report (its submit_sm_resp was lost): ok, with the first answer's id,
    and Peter has one receipt."""
    smsc = end_to_end_smsc(world)
    peter, iwf, message_id = _handed_to_the_iwf(world, smsc)
    first = iwf.submit(PETER, _report(message_id), esm_class=0x08)
    again = iwf.submit(PETER, _report(message_id), esm_class=0x08)
    assert (first.status, again.status) == (C.SMPP_ESME_ROK, C.SMPP_ESME_ROK)
    assert again.message_id == first.message_id
    peter.wait_delivered(1)
    assert peter.read(0.3) is None, "one receipt only"


def test_the_smsc_sends_expired_itself_when_the_account_never_reports(world):
    """The IWF took Peter's SMS and never reports within its window: the SMSC's own EXPIRED; a
    report after that is answered ok and gives no second receipt."""
    smsc = world.smsc(accounts=[EsmeAccount("iwf-b", "secret", "IWF", routes=[MARY], end_to_end_receipts=True,
                                            report_seconds=0.3)])
    peter, iwf, message_id = _handed_to_the_iwf(world, smsc)
    [receipt] = peter.wait_delivered(1, timeout=5)
    assert (receipt.receipted_message_id.decode(), receipt.message_state) == (message_id, 3)
    assert b"stat:EXPIRED" in receipt.short_message
    assert world.call(lambda: smsc._delivery.owed.count()) == 0
    assert iwf.submit(PETER, _report(message_id), esm_class=0x08).status == C.SMPP_ESME_ROK
    assert peter.read(0.3) is None, "no second receipt"
    assert any("did not report id" in e.note and "own EXPIRED" in e.note for e in world.trace.events())


def test_the_owed_receipt_survives_a_restart_of_the_smsc(world, tmp_path):
    store_path = tmp_path / "iwlab.db"
    accounts = [EsmeAccount("iwf-b", "secret", "IWF", routes=[MARY], end_to_end_receipts=True)]
    smsc = world.smsc(accounts=accounts, store=Store(store_path))
    peter, iwf, message_id = _handed_to_the_iwf(world, smsc)
    peter.close()
    iwf.close()
    world.run(smsc.stop())
    again = world.smsc(accounts=accounts, store=Store(store_path))
    iwf = world.esme(again, "iwf-b", "secret", "transceiver")
    peter = world.esme(again, PETER, "iwlab", "transceiver")
    assert iwf.submit(PETER, _report("7FFFFFFF"), esm_class=0x08).status == C.SMPP_ESME_RINVMSGID
    assert iwf.submit(PETER, _report(message_id), esm_class=0x08).status == C.SMPP_ESME_ROK
    [receipt] = peter.wait_delivered(1)
    assert receipt.receipted_message_id.decode() == message_id


def test_a_report_without_a_receipt_text_is_refused(world):
    smsc = end_to_end_smsc(world)
    iwf = world.esme(smsc, "iwf-b", "secret", "transceiver")
    assert iwf.submit(PETER, b"delivered, trust me", esm_class=0x08).status == C.SMPP_ESME_RINVESMCLASS
    assert iwf.submit(PETER, b"id:1A sub:001 dlvrd:001 submit date:2601010000 done date:2601010000 stat:FINE "
                             b"err:000 text:", esm_class=0x08).status == C.SMPP_ESME_RINVESMCLASS


def test_the_smsc_still_reports_a_failure_before_the_end_to_end_account_took_it(world):
    """The IWF never binds: the SMSC lets Peter's SMS expire and says so itself."""
    smsc = end_to_end_smsc(world, validity_seconds=0.3)
    peter = world.esme(smsc, PETER, "iwlab", "transceiver")
    message_id = peter.submit(MARY, b"nobody there", source=PETER, registered_delivery=1).message_id
    [receipt] = peter.wait_delivered(1, timeout=5)
    assert (receipt.receipted_message_id, receipt.message_state) == (message_id, 3)


def test_pipelined_pdus_in_one_chunk_are_all_answered_in_order(world):
    smsc = world.smsc()
    peter = world.esme(smsc, PETER, "iwlab", "receiver").listen()
    raw = Raw(smsc.port)
    assert raw.bind("iwf-b", "secret", "transmitter").status == C.SMPP_ESME_ROK
    raw.send(b"".join(raw_submit(10 + i, text=f"p{i}".encode()) for i in range(5))
             + codec.encode(codec.make("enquire_link", 15)) + raw_submit(16, dest="15557777"))
    answers = [raw.read() for _ in range(7)]
    assert [(a.command, a.sequence, a.status) for a in answers] == [
        ("submit_sm_resp", 10 + i, 0) for i in range(5)] + [
        ("enquire_link_resp", 15, 0), ("submit_sm_resp", 16, C.SMPP_ESME_RINVDSTADR)]
    assert texts(peter.wait_delivered(5)) == [f"p{i}".encode() for i in range(5)]
    raw.close()


# -- bad input -----------------------------------------------------------------------------------

def test_generic_nack_for_unknown_commands_own_response_for_bad_bodies(world):
    smsc = world.smsc()
    raw = Raw(smsc.port)
    raw.send(struct.pack(">LLLL", 16, 0x99, 0, 41))
    nack = raw.read()
    assert (nack.command, nack.sequence, nack.status) == ("generic_nack", 41, C.SMPP_ESME_RINVCMDID)
    assert raw.bind(PETER).status == C.SMPP_ESME_ROK        # same connection still works
    good = raw_submit(42, source=PETER)
    broken = struct.pack(">L", len(good) + 3) + good[4:] + b"\x04\x24\x00"   # truncated TLV
    raw.send(broken)
    resp = raw.read()      # a known request with a bad body: its own response (SMPP v3.4 5.1.3)
    assert (resp.command, resp.sequence, resp.status) == ("submit_sm_resp", 42, C.SMPP_ESME_RINVOPTPARSTREAM)
    raw.send(codec.encode(codec.make("enquire_link", 43)))
    assert raw.read().command == "enquire_link_resp"
    raw.close()


def test_short_sm_length_gets_submit_sm_resp_rinvmsglen_and_nothing_is_delivered(world):
    smsc = world.smsc()
    peter = world.esme(smsc, PETER, "iwlab", "receiver").listen()
    raw = Raw(smsc.port)
    assert raw.bind("15550202").status == C.SMPP_ESME_ROK
    good = bytearray(raw_submit(7, source="15550202", text=b"hello"))
    at = good.index(b"hello") - 1
    good[at] = 200                                    # sm_length 200, five octets follow
    raw.send(bytes(good))
    resp = raw.read()
    assert (resp.command, resp.sequence, resp.status) == ("submit_sm_resp", 7, C.SMPP_ESME_RINVMSGLEN)
    assert len(codec.encode(resp)) == 16              # an error response is header-only
    good[at] = 2                                      # sm_length 2: three octets left over, no TLV
    good[12:16] = (17).to_bytes(4, "big")
    raw.send(bytes(good))
    resp = raw.read()
    assert (resp.command, resp.sequence, resp.status) == ("submit_sm_resp", 17, C.SMPP_ESME_RINVOPTPARSTREAM)
    cut = raw_submit(8, source="15550202")[:-5]      # the body stops inside the mandatory fields
    raw.send(struct.pack(">L", len(cut)) + cut[4:])
    resp = raw.read()
    assert (resp.command, resp.sequence, resp.status) == ("submit_sm_resp", 8, C.SMPP_ESME_RINVCMDLEN)
    raw.send(raw_submit(9, source="15550202", text=b"fine"))
    assert raw.read().status == C.SMPP_ESME_ROK
    assert texts(peter.wait_delivered(1)) == [b"fine"]   # only the good one
    event = next(e for e in world.trace.events() if e.summary.startswith("submit_sm_resp seq=7"))
    assert "sm_length" in event.note
    raw.close()


def test_bad_bind_body_gets_bind_resp_with_the_field_status(world):
    smsc = world.smsc()
    raw = Raw(smsc.port)
    good = codec.encode(codec.make("bind_transceiver", 3, system_id="x", password="iwlab", system_type="",
                                   addr_ton=0, addr_npi=0, address_range=""))
    long_id = good[:16] + b"1" * 40 + good[17:]      # system_id over its 16 octets
    raw.send(struct.pack(">L", len(long_id)) + long_id[4:])
    resp = raw.read()
    assert (resp.command, resp.sequence, resp.status) == ("bind_transceiver_resp", 3, C.SMPP_ESME_RINVSYSID)
    raw.close()


@pytest.mark.parametrize("garbage", [struct.pack(">LLLL", 8, 4, 0, 17), b"GET / HTTP/1.1\r\n\r\n"],
                         ids=["short-length", "http"])
def test_impossible_length_nacks_and_closes(world, garbage):
    smsc = world.smsc()
    raw = Raw(smsc.port)
    raw.send(garbage)
    nack = raw.read()
    assert (nack.command, nack.status) == ("generic_nack", C.SMPP_ESME_RINVCMDLEN)
    assert nack.sequence == (17 if garbage[:4] == b"\0\0\0\x08" else int.from_bytes(garbage[12:16], "big"))
    assert raw.read() is None                      # closed
    raw.close()
    event = [e for e in world.trace.events() if e.summary.startswith("generic_nack")][0]
    assert "cannot be re-synchronised" in event.note
    assert world.esme(smsc, PETER, "iwlab").client.state == C.SMPP_CLIENT_STATE_BOUND_TRX


# -- trace ------------------------------------------------------------------------------------------

def test_every_pdu_traced_once_both_ways_with_node_names(world):
    smsc = world.smsc(accounts=[EsmeAccount("iwf-b", "secret", "iwf-by-system-id")])
    iwf = world.esme(smsc, "iwf-b", "secret", "transceiver", claim="IWF")   # claimed name wins
    peter = world.esme(smsc, PETER, "iwlab", "receiver").listen()            # named by system_id
    stranger = world.esme(smsc)                                               # named by address
    with pytest.raises(smpplib.exceptions.PDUError):
        stranger.bind("transmitter", "nobody", "x")
    for i in range(3):
        iwf.submit(PETER, f"t{i}".encode(), registered_delivery=1)
    peter.wait_delivered(3)
    iwf.wait_delivered(3)     # receipts
    iwf.client.send_pdu(smpplib.smpp.make_pdu("enquire_link", client=iwf.client, allow_unknown_opt_params=True))
    assert iwf.read(5).command == "enquire_link_resp"
    for esme in (iwf, peter, stranger):
        esme.close()

    events = world.trace.events()
    assert {e.protocol for e in events} == {"SMPP"}
    stranger_name = f"127.0.0.1:{stranger.local[1]}"
    for esme, name in [(iwf, "IWF"), (peter, "Peter"), (stranger, stranger_name)]:
        inbound = [e.raw for e in events if e.src == name and e.dst == "SMSC"]
        outbound = [e.raw for e in events if e.src == "SMSC" and e.dst == name]
        assert inbound == esme.sent, name
        assert outbound == esme.received, name
    assert all(len(e.raw) == int.from_bytes(e.raw[:4], "big") for e in events)
    responses = [e for e in events if e.is_response]
    assert responses and all(e.summary.split()[0].endswith(("_resp", "nack")) for e in responses)
    submit_resps = [e for e in events if e.summary.startswith("submit_sm_resp")]
    assert all(e.correlation["smpp_message_id"] for e in submit_resps)
    receipts = [e for e in events if "receipt id=" in e.summary]
    assert [r.correlation["smpp_message_id"] for r in receipts] == [
        e.correlation["smpp_message_id"] for e in submit_resps]
    deliver = next(e for e in events if e.summary.startswith("deliver_sm seq=") and e.dst == "Peter")
    assert deliver.summary == 'deliver_sm seq=1 15550101->15550201 "t0"'
    assert deliver.fields["esm_class"]["udhi"] is False and deliver.fields["source_addr"] == MARY
