"""Conditions set from the console (what `iwlab serve` reads), over real sockets: order holds under
them, the ladder notes them where they act, and the ordering demo switch breaks the order."""
import smtplib
import socket

import pytest

from iwlab.backends.lab import evidence
from iwlab.backends.protocols import smpp
from iwlab.backends.lab.control import run_command
from tests.flows.test_hostile_input import address, closed_by_peer
from tests.helpers.raw_smpp import SmppHandset
from tests.helpers.sip_client import received_text
from tests.helpers.waiting import until

TEXTS = [f"in a row {i} of 5" for i in range(1, 6)]


def command(lab, line: str) -> str:
    return lab.run(run_command(lab.lab, line))


@pytest.fixture
def lab_and_peter(lab_factory):
    lab = lab_factory(devices="mary")
    peter = SmppHandset(lab.lab.endpoints()["smpp"], "15550201")
    yield lab, peter
    peter.close()


def send_in_a_row(lab, texts):
    mary, peter = lab.lab.device("mary"), lab.lab.topology.user("peter")

    async def burst():
        for text in texts:     # each one queued before the next: a burst, as a person typing fast
            await mary.send_message(peter, text)
    lab.run(burst(), timeout=60)


def received(peter, count):
    return [received_text(peter.next_message(timeout=30)) for _ in range(count)]


def order_of(lab, arrivals: int = 5):
    """The order check once the trace holds that many arrivals (an arrival counts once the
    handset's deliver_sm_resp is recorded, which may follow the text we read)."""
    topology = lab.lab.topology

    def order():
        return evidence.check_order(topology.user("mary"), topology.user("peter"), lab.lab.trace.events(), topology)
    lab.run(until(lambda: len(order().arrivals) >= arrivals, 30, f"{arrivals} arrivals at Peter"), timeout=40)
    return order()


def test_throttle_queue_full_and_late_answers_keep_the_order(lab_and_peter):
    lab, peter = lab_and_peter
    assert command(lab, "smsc throttle 3") == "SMSC throttles: ESME_RTHROTTLED, 1 in 3"
    answer = command(lab, "smsc qfull 4")
    assert "ESME_RMSGQFUL, 1 in 4" in answer
    answer = command(lab, "smsc delay 20 60")
    assert "SMSC answers 20 ms late (+ up to 60 ms jitter)" in answer
    send_in_a_row(lab, TEXTS)
    assert received(peter, 5) == TEXTS
    order = order_of(lab)
    assert order.in_order and order.arrivals[-1].badge.startswith("5 of 5")
    notes = [e.note for e in lab.lab.trace.events() if e.protocol == "SMPP"]
    assert any("throttled (condition: 1 submit_sm in 3)" in n for n in notes)
    assert any("queue full (condition: 1 submit_sm in 4)" in n for n in notes)
    assert any("ms late (condition: delay 20 ms + up to 60 ms jitter)" in n for n in notes)
    assert command(lab, "smsc throttle 0") and command(lab, "smsc qfull 0")
    assert command(lab, "smsc delay 0") == "no conditions: the lab runs as it should"


def test_the_ordering_demo_switch_lets_the_conversation_race(lab_and_peter):
    lab, peter = lab_and_peter
    command(lab, "smsc throttle 2")
    assert "DEMO: IWF ordering off" in command(lab, "ordering off")
    lab.call(setattr, lab.lab.iwf.sms.outbox, "unordered_retry_delay", 0.5)
    send_in_a_row(lab, TEXTS)
    got = received(peter, 5)
    assert sorted(got) == sorted(TEXTS) and got != TEXTS, "all arrived once, but out of order"
    order = order_of(lab)
    assert not order.in_order and any(a.inverted for a in order.arrivals)
    assert command(lab, "ordering on").endswith("1 in 2")


def test_a_cut_link_and_a_busy_mail_server_are_survived(lab_factory):
    lab = lab_factory(devices="none")
    peter = SmppHandset(lab.lab.endpoints()["smpp"], "15550201")
    try:
        def binds() -> int:
            return sum(1 for e in lab.lab.trace.events() if e.summary.startswith("bind_transceiver_resp")
                       and e.dst in ("IWF", "IWF-A"))
        before = binds()
        assert command(lab, "smsc drop IWF") == "cut 1 SMPP link(s) of IWF"
        assert command(lab, "smsc drop iwf-a") == "cut 1 SMPP link(s) of iwf-a"

        lab.run(until(lambda: binds() >= before + 2, 30, "each IWF binding again by itself"), timeout=40)
        assert command(lab, "smsc drop nobody").startswith("error: no SMPP link")
        assert "mail server busy (451 4.3.2)" in command(lab, "mail busy 60")
        host, port = lab.lab.endpoints()["smtp"].rsplit(":", 1)
        with smtplib.SMTP(host, int(port), timeout=10) as client:
            client.ehlo("test")
            code, reply = client.mail("john@mail-b.lab")
            assert code == 451 and b"4.3.2" in reply
        assert "mail server busy (452 4.3.1)" in command(lab, "mail busy 60 452")
        with smtplib.SMTP(host, int(port), timeout=10) as client:
            client.ehlo("test")
            code, reply = client.mail("john@mail-b.lab")
            assert code == 452 and b"4.3.1 Insufficient system storage" in reply
        assert command(lab, "mail busy 60 453").startswith("error: mail busy answers 451")
        command(lab, "mail busy 0")
        with smtplib.SMTP(host, int(port), timeout=10) as client:
            assert client.sendmail("john@mail-b.lab", ["mary@cpm-a.lab"], b"From: john@mail-b.lab\r\nTo: mary@cpm-a.lab\r\nSubject: hi\r\n\r\nhello\r\n") == {}
        assert command(lab, "smsc delay x").startswith("error: delay takes a whole number")
    finally:
        peter.close()


def test_links_cut_every_few_requests_lose_nothing_and_keep_the_order(lab_and_peter):
    lab, peter = lab_and_peter
    assert command(lab, "smsc drop-every 1").startswith("error: drop every takes 2 or more")
    assert command(lab, "smsc drop-every 3") == "SMSC cuts a link at 1 request in 3"
    send_in_a_row(lab, TEXTS)
    assert received(peter, 5) == TEXTS, "each cut submit_sm sent again after the rebind, none twice"
    order = order_of(lab)
    assert order.in_order and not any(a.duplicate for a in order.arrivals)
    cuts = [e for e in lab.lab.trace.events() if "cuts this link at 1 request in 3" in e.note]
    assert cuts and all(e.dst == "SMSC" for e in cuts)
    command(lab, "smsc drop-every 0")


def test_binds_refused_for_a_while_then_taken(lab_factory):
    lab = lab_factory(devices="none")

    def bind_answers(status: str) -> list:
        return [e for e in lab.lab.trace.events() if e.summary.startswith("bind_transceiver_resp")
                and e.dst == "IWF" and status in e.summary]
    before = len(bind_answers(" ok"))
    assert command(lab, "smsc refuse-binds 2") == "SMSC refuses binds (ESME_RBINDFAIL) for 2 s more"
    command(lab, "smsc drop IWF")
    lab.run(until(lambda: bind_answers("RBINDFAIL"), 30, "the IWF's bind refused"), timeout=40)
    lab.run(until(lambda: len(bind_answers(" ok")) > before, 30, "the IWF bound once the refusal ended"),
            timeout=40)
    assert "refuses binds for" in bind_answers("RBINDFAIL")[0].note
    assert command(lab, "conditions") == "no conditions: the lab runs as it should"


def test_a_slow_mail_server_notes_each_late_reply(lab_factory):
    lab = lab_factory(devices="none")
    assert command(lab, "mail delay 30 20") == "mail server answers 30 ms late (+ up to 20 ms jitter)"
    host, port = lab.lab.endpoints()["smtp"].rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=10) as client:
        assert client.sendmail("john@mail-b.lab", ["mary@cpm-a.lab"],
                               b"From: john@mail-b.lab\r\nTo: mary@cpm-a.lab\r\nSubject: hi\r\n\r\nslow\r\n") == {}
    late = [e for e in lab.lab.trace.events() if e.protocol == "SMTP" and "condition: delay 30 ms" in e.note]
    assert len(late) >= 4 and all(e.src == "Mail" for e in late), "greeting, EHLO, MAIL, RCPT, DATA, the end"
    assert command(lab, "mail delay 0") == "no conditions: the lab runs as it should"
    assert command(lab, "mail delay soon").startswith("error: mail delay takes a whole number")


def test_a_cpm_phone_that_answers_nothing_is_timed_out_then_served_once_it_answers(lab_and_peter):
    lab, peter = lab_and_peter
    assert "answering=no" in command(lab, "state mary answering=no")
    assert "the CPM phone of mary answers nothing" in command(lab, "conditions")
    mary = lab.lab.device("mary")
    lab.call(setattr, lab.lab.cpm_servers["A"].proxy, "transaction_timeout", 1.0)   # Timer F, shortened
    lab.call(setattr, lab.lab.iwf.cpm, "retry_seconds", 0.5)
    peter.client.send_message(source_addr_ton=1, source_addr="15550201", dest_addr_ton=1,
                              destination_addr="15550101", short_message=b"are you there?")

    def timed_out():
        return [e for e in lab.lab.trace.events() if e.summary.startswith("408") and "Timer F" in e.note]
    lab.run(until(timed_out, 30, "CPM-A's Timer F answering 408 for Mary's silent phone"), timeout=40)
    assert timed_out()[0].src == "CPM-A"
    assert not [m for m in mary.messages if m.text == "are you there?"]
    command(lab, "state mary answering=yes")

    def arrived():
        return [m for m in mary.messages if m.text == "are you there?"]
    lab.run(until(arrived, 30, "the IWF's retry reaching Mary once she answers"), timeout=40)
    lab.run(until(lambda: lab.lab.iwf.cpm.held() == {}, 30, "nothing left held in the IWF"), timeout=40)
    assert len(arrived()) == 1
    assert command(lab, "conditions") == "no conditions: the lab runs as it should"


def _read_pdus(sock: socket.socket, framer: smpp.Framer, count: int) -> list:
    pdus: list = []
    while len(pdus) < count:
        pdus += [smpp.parse(raw) for raw in framer.feed(sock.recv(65536))]
    return pdus


def test_a_cut_still_reads_the_answers_that_came_with_it_so_nothing_comes_twice(lab_factory):
    """The SMSC cuts Peter's link at a request that came in one write just before his deliver_sm_resp:
    the answer is still taken, so the message is not delivered to him a second time."""
    lab = lab_factory(devices="mary")
    peter, framer = socket.create_connection(address(lab.lab.endpoints()["smpp"]), timeout=10), smpp.Framer()
    peter.sendall(smpp.encode(smpp.make("bind_transceiver", 1, system_id="15550201", password="iwlab",
                                        system_type="", interface_version=0x34, addr_ton=0, addr_npi=0,
                                        address_range="")))
    assert _read_pdus(peter, framer, 1)[0].command == "bind_transceiver_resp"
    assert command(lab, "smsc drop-every 2") == "SMSC cuts a link at 1 request in 2"
    peter.sendall(smpp.encode(smpp.make("enquire_link", 2)))          # his first request: taken
    assert _read_pdus(peter, framer, 1)[0].command == "enquire_link_resp"
    mary = lab.lab.device("mary")
    lab.run(mary.send_message(lab.lab.topology.user("peter"), "only once"), timeout=30)
    [deliver] = _read_pdus(peter, framer, 1)
    assert deliver.command == "deliver_sm" and deliver.short_message == b"only once"
    # One write: his second request, at which the SMSC cuts, then the answer to the delivery.
    peter.sendall(smpp.encode(smpp.make("enquire_link", 3))
                  + smpp.encode(smpp.make("deliver_sm_resp", deliver.sequence, message_id="")))
    assert closed_by_peer(peter) == b""
    peter.close()
    events = lab.lab.trace.events()
    assert any(e.summary.startswith("deliver_sm_resp") and e.src == "Peter" for e in events)
    assert any("cuts this link at 1 request in 2" in e.note for e in events)
    command(lab, "smsc drop-every 0")
    again = SmppHandset(lab.lab.endpoints()["smpp"], "15550201")      # he binds again: nothing waits
    try:
        lab.run(until(lambda: lab.lab.smsc.pending("15550201") == 0, 10, "nothing held for Peter"), timeout=20)
        assert again.received.empty()
    finally:
        again.close()
