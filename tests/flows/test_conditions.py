"""Conditions set from the console (what `iwlab serve` reads), over real sockets: order holds under
them, the ladder notes them where they act, and the ordering demo switch breaks the order."""
import smtplib

import pytest

from iwlab.backends.lab import evidence
from iwlab.backends.lab.control import run_command
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
    assert any("throttled (every 3th submit_sm)" in n for n in notes)
    assert any("queue full (condition: every 4th submit_sm)" in n for n in notes)
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
        command(lab, "mail busy 0")
        with smtplib.SMTP(host, int(port), timeout=10) as client:
            assert client.sendmail("john@mail-b.lab", ["mary@cpm-a.lab"], b"From: john@mail-b.lab\r\nTo: mary@cpm-a.lab\r\nSubject: hi\r\n\r\nhello\r\n") == {}
        assert command(lab, "smsc delay x").startswith("error: delay takes a whole number")
    finally:
        peter.close()
