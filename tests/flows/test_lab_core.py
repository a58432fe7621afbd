"""Use case 5.8.5 end to end, driven only through sockets as real clients would.

A raw SIP client plays Mary's phone; a real smpplib client bound as 15550201
plays Peter's handset. The lab in between is the whole of it: CPM-A, CPM-B,
the IWF and the SMSC.
"""
import collections
import queue
import time

import pytest

from iwlab.backends.protocols import smstext
from tests.helpers.raw_sip import RawSipClient
from tests.helpers.raw_smpp import SmppHandset
from tests.helpers.sip_client import MARY, received_text, send_cpm_message


@pytest.fixture
def mary_and_peter(lab_factory, request):
    settings = getattr(request, "param", {})
    lab = lab_factory(devices="none", **settings)
    endpoints = lab.lab.endpoints()
    mary = RawSipClient(endpoints["sip"]["cpm-a.lab"])
    assert mary.register(MARY, "cpm-a.lab").status == 200
    peter = SmppHandset(endpoints["smpp"], "15550201")
    yield lab, mary, peter
    mary.close()
    peter.close()


def test_mary_to_peter_two_messages_in_order(mary_and_peter):
    lab, mary, peter = mary_and_peter
    texts = ["Hi Peter", "Are you there?"]
    for text in texts:
        response = mary.response_to(send_cpm_message(mary, text))
        assert response.status == 202, response.reason   # accepted by the IWF for SMS delivery
    pdus = [peter.next_message() for _ in texts]
    assert [received_text(p) for p in pdus] == texts
    assert {p.source_addr for p in pdus} == {b"15550101"}
    assert {p.source_addr_ton for p in pdus} == {1}          # international
    assert {p.destination_addr for p in pdus} == {b"15550201"}
    # The routing decision and its reason are on the trace.
    notes = [e.note for e in lab.lab.trace.events() if e.note]
    assert any("Peter is not registered to CPM -> SMS via SMSC" in n for n in notes)


@pytest.mark.parametrize("mary_and_peter", [{}, {"throttle_every": 2}], indirect=True,
                         ids=["plain", "smsc-throttles-every-other-submit"])
def test_200_messages_arrive_in_order_without_duplicates(mary_and_peter):
    lab, mary, peter = mary_and_peter
    texts = [f"message {i:03d}" for i in range(200)]
    call_ids = [send_cpm_message(mary, text) for text in texts]
    for call_id in call_ids:
        assert mary.response_to(call_id).status == 202
    got = [received_text(peter.next_message()) for _ in texts]
    assert got == texts
    with pytest.raises(queue.Empty):             # nothing more comes: no duplicate behind the last one
        peter.received.get(timeout=0.5)
    # Counted when each submit_sm_resp reaches the IWF's loop, which may be after Peter has the SMS.
    deadline = time.monotonic() + 10
    while lab.call(lambda: lab.lab.iwf.sms.outbox.submitted) < 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lab.call(lambda: lab.lab.iwf.sms.outbox.submitted) == 200
    if lab.lab.smsc.throttle_every:
        assert lab.lab.iwf.sms.outbox.retries > 0, "the SMSC never throttled: this test would prove nothing"


def test_unicode_text_goes_out_as_ucs2(mary_and_peter):
    _, mary, peter = mary_and_peter
    text = "Grüße 👋 Привет"
    assert mary.response_to(send_cpm_message(mary, text)).status == 202
    pdu = peter.next_message()
    assert pdu.data_coding == smstext.UCS2
    assert received_text(pdu) == text


def test_unknown_user_gets_404_and_the_lab_keeps_serving(mary_and_peter):
    _, mary, peter = mary_and_peter
    assert mary.response_to(send_cpm_message(mary, "hello?", to="sip:nobody@cpm-b.lab")).status == 404
    assert mary.response_to(send_cpm_message(mary, "anyone?", to="tel:+15550299")).status == 404
    assert mary.response_to(send_cpm_message(mary, "still here")).status == 202
    assert received_text(peter.next_message()) == "still here"


def test_malformed_sip_gets_400_with_a_reason_and_the_lab_keeps_serving(mary_and_peter):
    lab, mary, peter = mary_and_peter
    other = RawSipClient(lab.lab.endpoints()["sip"]["cpm-a.lab"])
    try:
        # CSeq method does not match the request method.
        other.send_raw(b"MESSAGE tel:+15550201 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKx\r\n"
                       b"Max-Forwards: 70\r\nFrom: <sip:mary@cpm-a.lab>;tag=1\r\nTo: <tel:+15550201>\r\n"
                       b"Call-ID: bad-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
        response = other.response_to("bad-1")
        assert response.status == 400 and response.reason
    finally:
        other.close()
    assert mary.response_to(send_cpm_message(mary, "after the bad one")).status == 202
    assert received_text(peter.next_message()) == "after the bad one"


def test_every_pdu_is_traced_once_with_node_names(mary_and_peter):
    lab, mary, peter = mary_and_peter
    call_id = send_cpm_message(mary, "traced")
    assert mary.response_to(call_id).status == 202
    peter.next_message()
    lab.call(lambda: None)   # let the lab loop record the deliver_sm_resp
    events = [e for e in lab.lab.trace.events() if e.correlation.get("call_id") == call_id]
    hops = [(e.src, e.dst, e.summary.split()[0]) for e in events]
    repeated = [hop for hop, count in collections.Counter(hops).items() if count > 1]
    assert repeated == [], "each PDU is recorded once"
    assert ("Mary", "CPM-A", "MESSAGE") in hops
    assert ("CPM-A", "CPM-B", "MESSAGE") in hops
    assert ("CPM-B", "IWF", "MESSAGE") in hops
    assert ("IWF", "CPM-B", "202") in hops
    assert ("CPM-B", "CPM-A", "202") in hops
    assert ("CPM-A", "Mary", "202") in hops
    smpp = [(e.src, e.dst, e.summary.split()[0]) for e in lab.lab.trace.events() if e.protocol == "SMPP"]
    assert ("IWF", "SMSC", "submit_sm") in smpp and ("SMSC", "Peter", "deliver_sm") in smpp
    raws = [e.raw for e in lab.lab.trace.events()]
    assert all(raws), "every event carries its raw bytes"
    seqs = [e.seq for e in lab.lab.trace.events()]
    assert seqs == sorted(set(seqs))
