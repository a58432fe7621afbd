"""CPM-IOP-005 for a CPM user of operator A: Mary roams where CPM is not supported.

Operator A's own IWF (IWF-A, its own bind at the shared SMSC) sends what comes for her as SMS, to
her phone's SMS side: here a real smpplib client bound as 15550101. Her SMS reply reaches the
sender's thread. John is stdlib smtplib; the lab's control command sets her roaming.
"""
from __future__ import annotations

import smpplib.consts

from iwlab.backends.lab.control import run_command
from iwlab.backends.protocols import mail
from tests.helpers.mail_client import john_writes, wait_for_mail
from tests.helpers.raw_sip import RawSipClient
from tests.helpers.raw_smpp import SmppHandset
from tests.helpers.sip_client import MARY, received_text
from tests.helpers.smpp_client import encoded, next_message, peter_submits
from tests.helpers.waiting import wait_until


def mary_submits(mary: SmppHandset, text: str, to: str) -> None:
    mary.client.send_message(source_addr_ton=1, source_addr="15550101", dest_addr_ton=1, destination_addr=to,
                             short_message=encoded(text))
    assert mary.responses.get(timeout=10).status == smpplib.consts.SMPP_ESME_ROK


def roaming_lab(lab_factory):
    lab = lab_factory(devices="none")
    assert "roaming" in lab.run(run_command(lab.lab, "state mary roaming=yes"))
    return lab, SmppHandset(lab.lab.endpoints()["smpp"], "15550101")


def test_roaming_mary_gets_johns_email_as_sms_from_iwf_a_and_her_sms_reply_threads_to_his_mail(lab_factory):
    lab, mary = roaming_lab(lab_factory)
    try:
        sent = john_writes(lab, "Back on Monday?", subject="Monday")
        sms = mary.next_message()
        assert received_text(sms) == "Back on Monday?"
        pool_number = sms.source_addr.decode()
        assert pool_number.startswith("1555019"), "IWF-A sends from its pool, so the reply names the thread"
        mary_submits(mary, "Yes, Monday", to=pool_number)
        [reply] = wait_for_mail(lab)
        assert "<mary@cpm-a.lab>" in reply["From"]
        assert reply["In-Reply-To"] == sent["Message-ID"], "Mary's SMS answers John's mail in his thread"
        assert "Yes, Monday" in mail.parse_incoming(reply.as_bytes()).text
    finally:
        mary.close()
    events = lab.lab.trace.events()
    to_iwf_a = [e for e in events if e.protocol == "SIP" and e.src == "CPM-A" and e.dst == "IWF-A"
                and e.summary.startswith("MESSAGE")]
    assert to_iwf_a and "P-Iwlab-Route" in dict(to_iwf_a[0].fields["headers"])
    assert "sms" in dict(to_iwf_a[0].fields["headers"])["P-Iwlab-Route"]
    assert any(e.protocol == "SMPP" and e.src == "IWF-A" and e.summary.startswith("submit_sm") for e in events)
    assert any("roaming in a network without CPM" in e.note for e in events)


def test_roaming_mary_gets_peters_sms_at_her_phone_not_through_cpm(lab_factory):
    lab, mary = roaming_lab(lab_factory)
    peter = SmppHandset(lab.lab.endpoints()["smpp"], "15550201")
    try:
        peter_submits(peter, encoded("Call me when you land"))
        sms = mary.next_message()
        assert received_text(sms) == "Call me when you land" and sms.source_addr == b"15550201"
        mary_submits(mary, "Landed", to="15550201")
        assert received_text(peter.next_message()) == "Landed"
    finally:
        mary.close()
        peter.close()
    assert not any(e.protocol == "SIP" and e.summary.startswith("MESSAGE") for e in lab.lab.trace.events())


def test_home_again_mary_gets_sms_to_her_number_by_cpm(lab_factory):
    lab, mary = roaming_lab(lab_factory)
    try:
        lab.run(run_command(lab.lab, "state mary roaming=no"))
        phone = RawSipClient(lab.lab.endpoints()["sip"]["cpm-a.lab"])
        assert phone.register(MARY, "cpm-a.lab").status == 200
        peter = SmppHandset(lab.lab.endpoints()["smpp"], "15550201")
        try:
            peter_submits(peter, encoded("Welcome back"))
            assert b"Welcome back" in next_message(phone).body     # registered: the IWF hands it to CPM
        finally:
            peter.close()
            phone.close()
    finally:
        mary.close()


def test_marys_simulated_phone_shows_her_sms_in_the_conversation_and_answers_by_sms_while_roaming(lab_factory):
    lab = lab_factory()
    phone, john = lab.lab.device("mary"), lab.lab.device("john")
    lab.run(run_command(lab.lab, "state mary roaming=yes"))
    lab.run(john.send("mary@cpm-a.lab", "Monday", "Back on Monday?"))
    wait_until(lambda: any(m.direction == "in" for m in lab.call(lambda: list(phone.messages))), 10,
               "the SMS reaching Mary's phone")
    [incoming] = [m for m in lab.call(lambda: list(phone.messages)) if m.direction == "in"]
    assert (incoming.via, incoming.peer_name, incoming.text) == ("SMS", "John", "Back on Monday?")
    reply = lab.run(phone.send_message(lab.lab.user("john"), "Yes, Monday"))
    assert reply.via == "SMS" and reply.status == "sent" and reply.conversation_id == incoming.conversation_id
    [answer] = wait_for_mail(lab)
    assert "Yes, Monday" in mail.parse_incoming(answer.as_bytes()).text
    assert answer["In-Reply-To"] == john.sent[0].parsed.message_id
    lab.run(run_command(lab.lab, "state mary roaming=no"))
