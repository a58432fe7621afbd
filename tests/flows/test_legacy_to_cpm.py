"""Use case 5.9.5 and message-thread management, SMS details and delivery reports.

Real clients only: an smpplib client bound as Peter's handset, a raw SIP
client registered as Mary. The lab (CPM-A, CPM-B, IWF, SMSC) in between.
"""
import re

import pytest

from iwlab.backends.protocols import smstext
from iwlab.backends.protocols.cpim import parse_cpim, parse_imdn_xml
from tests.helpers.raw_sip import RawSipClient, cpim_body
from tests.helpers.raw_smpp import SmppHandset
from tests.helpers.sip_client import MARY, PETER_TEL, received_text, send_cpm_message
from tests.helpers.smpp_client import encoded, next_message, peter_submits


@pytest.fixture
def lab_with(lab_factory, topology):
    def start(policy: str = "last", **settings):
        topology.operator("B").iwf.thread_policy = policy
        lab = lab_factory(devices="none", **settings)
        endpoints = lab.lab.endpoints()
        mary = RawSipClient(endpoints["sip"]["cpm-a.lab"])
        assert mary.register(MARY, "cpm-a.lab").status == 200
        peter = SmppHandset(endpoints["smpp"], "15550201")
        started.append((mary, peter))
        return lab, mary, peter
    started: list = []
    yield start
    for mary, peter in started:
        mary.close()
        peter.close()


def test_peter_writes_first_and_mary_receives_a_cpim_message(lab_with):
    _, mary, peter = lab_with()
    peter_submits(peter, encoded("Hello Mary, it's Peter"))
    request = next_message(mary)
    cpim = parse_cpim(request.body)
    assert cpim.text == "Hello Mary, it's Peter"
    assert "tel:+15550201" in cpim.sender
    assert "tel:+15550201" in request.headers.get("From")
    assert request.headers.get("Conversation-ID") and request.headers.get("Contribution-ID")
    assert request.headers.get("InReplyTo-Contribution-ID") is None      # a new conversation
    assert request.headers.get("P-Preferred-Service") == "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg"


@pytest.mark.parametrize("policy", ["last", "pool"])
def test_peters_reply_lands_in_marys_thread(lab_with, policy):
    lab, mary, peter = lab_with(policy)
    call_id = mary.request("MESSAGE", PETER_TEL, from_uri=MARY, to_uri=PETER_TEL, content_type="message/cpim",
                           body=cpim_body(MARY, PETER_TEL, "Dinner at eight?"),
                           extra=["Conversation-ID: conv-dinner", "Contribution-ID: contrib-question"])
    assert mary.response_to(call_id).status == 202
    delivered = peter.next_message()
    assert received_text(delivered) == "Dinner at eight?"
    reply_to = delivered.source_addr.decode()
    if policy == "pool":
        assert reply_to.startswith("1555029"), "the pool policy sends from a pool number"
    else:
        assert reply_to == "15550101"
    peter_submits(peter, encoded("Yes, see you there"), to=reply_to)   # Peter hits Reply
    reply = next_message(mary)
    assert parse_cpim(reply.body).text == "Yes, see you there"
    assert reply.headers.get("Conversation-ID") == "conv-dinner"
    assert reply.headers.get("InReplyTo-Contribution-ID") == "contrib-question"
    notes = " ".join(e.note for e in lab.lab.trace.events())
    assert f"({policy} policy)" in notes


@pytest.mark.parametrize("policy", ["last", "pool"])
def test_two_sms_replies_both_answer_marys_message_not_peters_own(lab_with, policy):
    _, mary, peter = lab_with(policy)
    call_id = mary.request("MESSAGE", PETER_TEL, from_uri=MARY, to_uri=PETER_TEL, content_type="message/cpim",
                           body=cpim_body(MARY, PETER_TEL, "lunch?"),
                           extra=["Conversation-ID: conv-lunch", "Contribution-ID: contrib-lunch"])
    assert mary.response_to(call_id).status == 202
    reply_to = peter.next_message().source_addr.decode()
    answers = []
    for text in ("sure", "at noon"):
        peter_submits(peter, encoded(text), to=reply_to)
        reply = next_message(mary)
        answers.append((parse_cpim(reply.body).text, reply.headers.get("Conversation-ID"),
                        reply.headers.get("InReplyTo-Contribution-ID")))
    assert answers == [("sure", "conv-lunch", "contrib-lunch"), ("at noon", "conv-lunch", "contrib-lunch")]
    # Mary's next message is what Peter's next reply answers.
    call_id = mary.request("MESSAGE", PETER_TEL, from_uri=MARY, to_uri=PETER_TEL, content_type="message/cpim",
                           body=cpim_body(MARY, PETER_TEL, "where?"),
                           extra=["Conversation-ID: conv-lunch", "Contribution-ID: contrib-where"])
    assert mary.response_to(call_id).status == 202
    reply_to = peter.next_message().source_addr.decode()
    peter_submits(peter, encoded("the usual place"), to=reply_to)
    assert next_message(mary).headers.get("InReplyTo-Contribution-ID") == "contrib-where"


def test_pool_policy_keeps_two_conversations_apart(lab_with):
    _, mary, peter = lab_with("pool")
    sources = {}
    for conversation in ("conv-1", "conv-2"):
        call_id = send_cpm_message(mary, f"question in {conversation}", conversation=conversation)
        assert mary.response_to(call_id).status == 202
        sources[conversation] = peter.next_message().source_addr.decode()
    assert sources["conv-1"] != sources["conv-2"]
    peter_submits(peter, encoded("answer to the second"), to=sources["conv-2"])
    assert next_message(mary).headers.get("Conversation-ID") == "conv-2"
    peter_submits(peter, encoded("answer to the first"), to=sources["conv-1"])
    assert next_message(mary).headers.get("Conversation-ID") == "conv-1"


def test_three_parts_out_of_order_arrive_whole(lab_with):
    _, mary, peter = lab_with()
    text = "".join(f"part {i:02d} of a long message that needs concatenation. " for i in range(8))
    parts = smstext.encode(text, ref=0x42)
    assert len(parts) == 3
    shuffled = [parts[2], parts[0], parts[1]]
    peter_submits(peter, [p.short_message() for p in shuffled], esm_class=0x40)
    assert parse_cpim(next_message(mary).body).text == text


def test_emoji_survive_both_ways_as_ucs2(lab_with):
    _, mary, peter = lab_with()
    text = "Grüße 👋 from Peter 🇫🇷"
    [part] = smstext.encode(text, ref=1)
    assert part.data_coding == smstext.UCS2
    peter_submits(peter, part.short_message(), data_coding=smstext.UCS2)
    assert parse_cpim(next_message(mary).body).text == text
    assert mary.response_to(send_cpm_message(mary, "Bonjour 🥐")).status == 202
    pdu = peter.next_message()
    assert pdu.data_coding == smstext.UCS2 and received_text(pdu) == "Bonjour 🥐"


def test_mary_gets_imdn_delivered_after_peters_handset_acknowledged(lab_with):
    lab, mary, peter = lab_with()
    call_id = mary.request("MESSAGE", PETER_TEL, from_uri=MARY, to_uri=PETER_TEL, content_type="message/cpim",
                           body=cpim_body(MARY, PETER_TEL, "tick please", message_id="imdn-mary-1"))
    assert mary.response_to(call_id).status == 202
    peter.next_message()          # smpplib answers deliver_sm_resp ESME_ROK for us
    notification = next_message(mary, imdn=True)
    imdn = parse_imdn_xml(parse_cpim(notification.body).body)
    assert (imdn.message_id, imdn.kind, imdn.status) == ("imdn-mary-1", "delivery", "delivered")
    # Mary asked for "display" too: SMS cannot say, and the lab says so rather than faking it.
    notes = " ".join(e.note for e in lab.lab.trace.events())
    assert "SMS cannot report reading" in notes


def test_a_multipart_message_is_delivered_when_all_its_parts_are(lab_with):
    lab, mary, peter = lab_with()
    text = "x" * 400     # three parts
    call_id = mary.request("MESSAGE", PETER_TEL, from_uri=MARY, to_uri=PETER_TEL, content_type="message/cpim",
                           body=cpim_body(MARY, PETER_TEL, text, message_id="imdn-long"))
    assert mary.response_to(call_id).status == 202
    pdus = [peter.next_message() for _ in range(3)]
    assert all(p.esm_class & 0x40 for p in pdus)
    notification = next_message(mary, imdn=True)
    assert parse_imdn_xml(parse_cpim(notification.body).body).message_id == "imdn-long"
    receipts = [e for e in lab.lab.trace.events() if "receipt" in e.summary and e.dst == "IWF"]
    assert len(receipts) == 3
    imdns = [e for e in lab.lab.trace.events() if "IMDN delivered" in e.summary and e.src == "IWF"]
    assert len(imdns) == 1, "one notification per message, not per part"


def test_a_missing_part_still_arrives_marked_incomplete(lab_with):
    lab, mary, peter = lab_with()
    lab.call(setattr, lab.lab.iwf.sms.reassembler, "timeout", 0.5)
    parts = smstext.encode("y" * 300, ref=7)
    peter_submits(peter, [parts[0].short_message()], esm_class=0x40)   # part 2 never comes
    text = parse_cpim(next_message(mary).body).text
    assert text.startswith("y" * 153)
    assert re.search(r"incomplete: 1 of 2 parts", text)


def test_a_message_for_mary_waits_until_she_registers(lab_with, lab_factory):
    lab, mary, peter = lab_with()
    assert mary.register(MARY, "cpm-a.lab", expires=0).status == 200
    peter_submits(peter, encoded("are you back?"))
    stored = lambda: any("stored until" in e.note for e in lab.lab.trace.events())  # noqa: E731
    lab.call(lambda: None)
    import time
    deadline = time.monotonic() + 10
    while not stored() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stored(), "CPM-A keeps the message while Mary is away"
    assert mary.register(MARY, "cpm-a.lab").status == 200
    assert parse_cpim(next_message(mary).body).text == "are you back?"


def test_an_sms_that_expires_undelivered_turns_into_imdn_failed(lab_factory):
    lab = lab_factory(devices="none", validity_seconds=0.5)   # Peter's handset never binds
    mary = RawSipClient(lab.lab.endpoints()["sip"]["cpm-a.lab"])
    try:
        assert mary.register(MARY, "cpm-a.lab").status == 200
        call_id = mary.request("MESSAGE", PETER_TEL, from_uri=MARY, to_uri=PETER_TEL,
                               content_type="message/cpim",
                               body=cpim_body(MARY, PETER_TEL, "anyone?", message_id="imdn-lost"))
        assert mary.response_to(call_id).status == 202
        imdn = parse_imdn_xml(parse_cpim(next_message(mary, imdn=True).body).body)
        assert (imdn.message_id, imdn.status) == ("imdn-lost", "failed")
    finally:
        mary.close()


def test_garbage_and_a_wrong_password_on_the_smpp_port_leave_the_lab_serving(lab_with):
    import socket

    import smpplib.client
    import smpplib.exceptions
    lab, mary, peter = lab_with()
    host, port = lab.lab.endpoints()["smpp"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(b"\x00\x00\x00\x10\x00\x00\x77\x77\x00\x00\x00\x00\x00\x00\x00\x09")  # unknown command
        nack = b""
        while len(nack) < 16:           # TCP may hand it over in pieces
            piece = raw.recv(16 - len(nack))
            assert piece, "the SMSC closed instead of answering"
            nack += piece
        assert nack[4:8] == b"\x80\x00\x00\x00" and nack[8:12] == b"\x00\x00\x00\x03"   # generic_nack RINVCMDID
        assert nack[12:16] == b"\x00\x00\x00\x09"                                         # same sequence
    intruder = smpplib.client.Client(host, int(port), timeout=5, allow_unknown_opt_params=True)
    intruder.connect()
    with pytest.raises(smpplib.exceptions.PDUError) as refused:
        intruder.bind_transceiver(system_id="15550201", password="wrong")
    assert refused.value.args[1] == smpplib.consts.SMPP_ESME_RINVPASWD
    intruder.disconnect()
    assert mary.response_to(send_cpm_message(mary, "still working")).status == 202
    assert received_text(peter.next_message()) == "still working"


def test_a_refused_sms_comes_back_to_peter_by_sms_from_the_number_he_wrote_to(lab_with):
    lab, mary, peter = lab_with()
    peter_submits(peter, encoded("Are you there?"))
    request = mary.receive(lambda m: getattr(m, "method", "") == "MESSAGE")
    mary.answer(request, 603, "Decline")
    bounce = peter.next_message()
    assert bounce.source_addr == b"15550101"
    assert "not delivered (603 Decline)" in received_text(bounce)
    assert not any(e.protocol == "SMTP" for e in lab.lab.trace.events())
