"""Issue 17 item 2: delivery reports both ways, end to end.

A handset that asks for a status report gets it from the IWF when the CPM recipient's IMDN comes
back (an SMSC-style deliver_sm receipt), never when the SMSC handed the SMS to the IWF; an email
sender who asked (Disposition-Notification-To) gets an RFC 8098 MDN when Mary's phone reports
displayed. Real clients only: smpplib as Peter, a raw SIP client (or the lab's phone) as Mary,
smtplib as John.
"""
from __future__ import annotations

import queue
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from iwlab.backends import clock
from iwlab.backends.lab.lab import Lab
from iwlab.backends.lab.lab_thread import LabThread
from iwlab.backends.protocols import smpp, smstext
from iwlab.backends.protocols.cpim import Imdn, imdn_message, parse_cpim
from iwlab.backends.protocols.sip import SipRequest
from tests.helpers.mail_client import johns_maildir, smtp, wait_for_mail
from tests.helpers.raw_sip import RawSipClient
from tests.helpers.raw_smpp import SmppHandset
from tests.helpers.sip_client import MARY, PETER_TEL
from tests.helpers.smpp_client import encoded, next_message, peter_submits
from tests.helpers.waiting import wait_until

JOHN_TEL = "tel:+15550202"


@pytest.fixture
def world(lab_factory):
    """The lab with no simulated devices, Mary as a raw SIP client, Peter as an smpplib handset."""
    started: list = []

    def start(register: bool = True, **settings):
        lab = lab_factory(devices="none", **settings)
        endpoints = lab.lab.endpoints()
        mary = RawSipClient(endpoints["sip"]["cpm-a.lab"])
        if register:
            assert mary.register(MARY, "cpm-a.lab").status == 200
        peter = SmppHandset(endpoints["smpp"], "15550201")
        started.append((mary, peter))
        return lab, mary, peter
    yield start
    for mary, peter in started:
        mary.close()
        peter.close()


def mary_reports(mary: RawSipClient, message: SipRequest, status: str, to: str = PETER_TEL, kind: str = "") -> None:
    """Mary's phone sends the IMDN for a message it got (RFC 5438), as a real client would."""
    cpim = parse_cpim(message.body)
    kind = kind or ("display" if status == "displayed" else "delivery")
    body = imdn_message(Imdn(cpim.message_id, kind, status, cpim.datetime, MARY),
                        sender=f"<{MARY}>", recipient=f"<{to}>").to_bytes()
    call_id = mary.request("MESSAGE", to, from_uri=MARY, to_uri=to, content_type="message/cpim", body=body,
                           extra=[f"Conversation-ID: {message.headers.get('Conversation-ID')}"])
    assert mary.response_to(call_id).status == 200


def receipt(peter: SmppHandset, timeout: float = 10.0):
    pdu = peter.next_message(timeout=timeout)
    assert pdu.esm_class & 0x3C == 0x04, f"a delivery receipt, not {pdu.esm_class:#x}"
    return pdu


def imdn_answered(lab, status: str) -> bool:
    """The IWF has answered an IMDN with that status (its note names the mapping it followed)."""
    return any(e.src == "IWF" and e.is_response and f"IMDN {status}" in e.note for e in lab.lab.trace.events())


def test_peters_receipt_waits_while_mary_is_away_and_comes_after_her_imdn_delivered(world):
    lab, mary, peter = world(register=False)
    [message_id] = peter_submits(peter, encoded("Are you there, Mary?"), registered_delivery=1)
    # The SMSC handed it to the IWF (answered ok), CPM-A keeps it for Mary: no receipt for Peter yet.
    wait_until(lambda: any(e.src == "CPM-A" and e.summary.startswith("202 Accepted (stored")
                           for e in lab.lab.trace.events()), what="CPM-A keeping it for Mary")
    wait_until(lambda: any(e.src == "IWF" and e.summary.startswith("deliver_sm_resp") and "ok" in e.summary
                           for e in lab.lab.trace.events()), what="the IWF taking the SMS")
    with pytest.raises(queue.Empty):
        peter.next_message(timeout=0.3)
    assert not [e for e in lab.lab.trace.events() if e.dst == "Peter" and " receipt " in e.summary]
    assert lab.call(lambda: lab.lab.iwf.sms.owed.count()) == 1, "the IWF owes the report"

    assert mary.register(MARY, "cpm-a.lab").status == 200
    message = next_message(mary)
    assert "positive-delivery" in parse_cpim(message.body).disposition
    mary_reports(mary, message, "delivered")
    pdu = receipt(peter)
    assert pdu.receipted_message_id.decode() == message_id          # the id Peter's submit_sm_resp gave
    assert pdu.message_state == smpp.MessageState.DELIVERED
    text = pdu.short_message.decode()
    assert text.startswith(f"id:{message_id} sub:001 dlvrd:001 submit date:") and " stat:DELIVRD err:000 " in text
    assert text.endswith("text:Are you there, Mary?")      # its first 20 characters
    events = lab.lab.trace.events()
    imdn = next(e for e in events if e.dst == "IWF" and e.summary.startswith("MESSAGE") and e.fields.get("cpim")
                and "imdn" in e.fields["cpim"].get("Content-Type", ""))
    to_peter = next(e for e in events if e.dst == "Peter" and " receipt " in e.summary)
    assert imdn.seq < to_peter.seq
    answer = next(e for e in events if e.src == "IWF" and e.is_response and "IMDN delivered" in e.note)
    assert "report mapping: IMDN delivered <-> SMS status report stat:DELIVRD" in answer.note
    report = next(e for e in events if e.src == "IWF" and e.summary.startswith("submit_sm ") and " report " in e.summary)
    assert "report mapping: IMDN delivered <-> SMS status report stat:DELIVRD" in report.note
    assert lab.call(lambda: lab.lab.iwf.sms.owed.count()) == 0


def test_an_imdn_failed_gives_peter_an_undeliv_receipt(world):
    lab, mary, peter = world()
    [message_id] = peter_submits(peter, encoded("This will fail"), registered_delivery=1)
    message = next_message(mary)
    assert "negative-delivery" in parse_cpim(message.body).disposition
    mary_reports(mary, message, "failed")
    pdu = receipt(peter)
    assert (pdu.receipted_message_id.decode(), pdu.message_state) == (message_id, smpp.MessageState.UNDELIVERABLE)
    assert b"stat:UNDELIV" in pdu.short_message and b"dlvrd:000" in pdu.short_message


def test_an_imdn_forbidden_is_no_delivery_report(world):
    """RFC 5438: forbidden is Mary's policy refusing the notification, not a failed delivery."""
    lab, mary, peter = world()
    peter_submits(peter, encoded("Policy says no"), registered_delivery=1)
    mary_reports(mary, next_message(mary), "forbidden")
    wait_until(lambda: imdn_answered(lab, "delivery forbidden"), what="the IWF taking Mary's IMDN forbidden")
    with pytest.raises(queue.Empty):
        peter.next_message(timeout=0.3)
    assert lab.call(lambda: lab.lab.iwf.sms.owed.count()) == 0, "no report is owed any more"


def test_an_imdn_of_an_unknown_status_is_ignored_and_the_report_still_waits(world):
    lab, mary, peter = world()
    [message_id] = peter_submits(peter, encoded("Still waiting"), registered_delivery=1)
    message = next_message(mary)
    mary_reports(mary, message, "stored")
    wait_until(lambda: imdn_answered(lab, "delivery stored"), what="the IWF taking Mary's odd IMDN")
    with pytest.raises(queue.Empty):
        peter.next_message(timeout=0.3)
    assert lab.call(lambda: lab.lab.iwf.sms.owed.count()) == 1
    mary_reports(mary, message, "delivered")
    pdu = receipt(peter)
    assert (pdu.receipted_message_id.decode(), pdu.message_state) == (message_id, smpp.MessageState.DELIVERED)


def test_no_imdn_before_the_iwfs_validity_ends_gives_an_expired_receipt(world, topology):
    topology.iwf_operator().iwf.message_validity_seconds = 1.0
    lab, mary, peter = world()
    [message_id] = peter_submits(peter, encoded("Quick!"), registered_delivery=1)
    next_message(mary)           # her client takes it and never reports
    pdu = receipt(peter)
    assert (pdu.receipted_message_id.decode(), pdu.message_state) == (message_id, smpp.MessageState.EXPIRED)
    assert b"stat:EXPIRED" in pdu.short_message
    report = next(e for e in lab.lab.trace.events() if e.src == "IWF" and e.summary.startswith("submit_sm "))
    assert "stat:EXPIRED" in report.summary or b"stat:EXPIRED" in report.raw, "the IWF's EXPIRED, not the SMSC's"


def test_peters_short_validity_brings_no_expired_while_cpm_keeps_his_sms(world):
    """Peter's validity is the SMSC's to keep (the IWF took his SMS in time); CPM-A keeps it for
    Mary as long as the IWF's message validity, so the report waits that long, not his 1 s."""
    lab, mary, peter = world(register=False)
    [message_id] = peter_submits(peter, encoded("Whenever you can"), registered_delivery=1,
                                 validity_period="000000000001000R")    # one second
    wait_until(lambda: lab.call(lambda: lab.lab.iwf.sms.owed.count()) == 1, what="the IWF owing the report")
    handed = next(e for e in lab.lab.trace.events() if e.dst == "IWF" and e.summary.startswith("deliver_sm "))
    assert not handed.fields.get("validity_period"), "NULL in a deliver_sm (SMPP v3.4 4.6.1)"
    validity = lab.lab.topology.iwf_operator().iwf.message_validity_seconds
    left = lab.call(lambda: [r.expires - clock.wall() for r in lab.lab.iwf.sms.owed._owed.values()])
    assert [round(x / 60) for x in left] == [round(validity / 60)], "owed as long as the IWF tries CPM"
    assert mary.register(MARY, "cpm-a.lab").status == 200
    mary_reports(mary, next_message(mary), "delivered")
    pdu = receipt(peter)
    assert (pdu.receipted_message_id.decode(), pdu.message_state) == (message_id, smpp.MessageState.DELIVERED)


def test_a_refusal_by_the_cpm_side_gives_an_undeliv_receipt_and_the_bounce(world):
    lab, mary, peter = world()
    [message_id] = peter_submits(peter, encoded("Are you there?"), registered_delivery=1)
    request = mary.receive(lambda m: getattr(m, "method", "") == "MESSAGE")
    mary.answer(request, 603, "Decline")
    pdu = receipt(peter)
    assert (pdu.receipted_message_id.decode(), pdu.message_state) == (message_id, smpp.MessageState.UNDELIVERABLE)
    assert b"not delivered (603 Decline)" in peter.next_message().short_message


def test_each_part_of_a_long_sms_gets_its_receipt(world):
    lab, mary, peter = world()
    parts = [part.short_message() for part in smstext.encode("x" * 200, ref=7)]
    ids = peter_submits(peter, parts, esm_class=0x40, registered_delivery=1)
    message = next_message(mary)
    assert parse_cpim(message.body).text == "x" * 200
    mary_reports(mary, message, "delivered")
    got = sorted(receipt(peter).receipted_message_id.decode() for _ in ids)
    assert got == sorted(ids)


def test_failures_only_means_no_receipt_for_a_delivery(world):
    lab, mary, peter = world()
    peter_submits(peter, encoded("Tell me only if it fails"), registered_delivery=2)
    mary_reports(mary, next_message(mary), "delivered")
    wait_until(lambda: imdn_answered(lab, "delivered"), what="the IWF taking Mary's IMDN")
    lab.call(lambda: None)
    with pytest.raises(queue.Empty):
        peter.next_message(timeout=0.3)


def test_at_the_cap_of_owed_reports_an_sms_gets_none_and_the_ladder_says_so(world):
    lab, mary, peter = world()
    lab.call(lambda: setattr(lab.lab.iwf.sms.owed, "limit", 0))
    peter_submits(peter, encoded("One too many"), registered_delivery=1)
    message = next_message(mary)
    assert "negative-delivery" not in parse_cpim(message.body).disposition
    carried = next(e for e in lab.lab.trace.events() if e.src == "IWF" and e.summary.startswith("MESSAGE "))
    assert "asked for a status report, but the IWF owes 0 already: none for this SMS" in carried.note
    assert lab.call(lambda: lab.lab.iwf.sms.owed.count()) == 0


def test_the_labs_own_phone_reports_and_peters_receipt_follows(lab_factory):
    lab = lab_factory(devices="mary")
    peter = SmppHandset(lab.lab.endpoints()["smpp"], "15550201")
    try:
        [message_id] = peter_submits(peter, encoded("Hi from a real handset"), registered_delivery=1)
        pdu = receipt(peter)
        assert (pdu.receipted_message_id.decode(), pdu.message_state) == (message_id, 2)
        phone = lab.lab.device("mary")
        assert [m.text for m in phone.messages] == ["Hi from a real handset"]
    finally:
        peter.close()


def test_the_report_debt_survives_a_restart(topology, tmp_path):
    first = LabThread(Lab(topology, devices="none", state_dir=tmp_path / "state")).start()
    peter = SmppHandset(first.lab.endpoints()["smpp"], "15550201")
    try:
        [message_id] = peter_submits(peter, encoded("Kept across a restart"), registered_delivery=1)
        wait_until(lambda: first.call(lambda: first.lab.iwf.sms.owed.count()) == 1, what="the IWF owing the report")
    finally:
        peter.close()
        first.stop()
    second = LabThread(Lab(topology, devices="none", state_dir=tmp_path / "state")).start()
    endpoints = second.lab.endpoints()
    peter, mary = SmppHandset(endpoints["smpp"], "15550201"), RawSipClient(endpoints["sip"]["cpm-a.lab"])
    try:
        assert mary.register(MARY, "cpm-a.lab").status == 200
        message = next_message(mary)
        assert parse_cpim(message.body).text == "Kept across a restart"
        mary_reports(mary, message, "delivered")
        pdu = receipt(peter)
        assert (pdu.receipted_message_id.decode(), pdu.message_state) == (message_id, 2)
    finally:
        mary.close()
        peter.close()
        second.stop()


def johns_mail_with_mdn_request(lab, text: str, message_id: str = "<john-agenda@mail-b.lab>",
                                notify: str = "John <john@mail-b.lab>") -> EmailMessage:
    message = EmailMessage(policy=policy.default)
    message["From"] = "John <john@mail-b.lab>"
    message["To"] = "mary@cpm-a.lab"
    message["Subject"] = "Agenda"
    message["Message-ID"] = message_id
    message["Disposition-Notification-To"] = notify
    message.set_content(text)
    with smtp(lab) as client:
        client.send_message(message)
    return message


def test_john_gets_an_mdn_threaded_to_his_mail_when_mary_reports_displayed(world):
    lab, mary, _ = world()
    johns_mail_with_mdn_request(lab, "Please read the agenda")
    message = next_message(mary)
    assert set(parse_cpim(message.body).disposition) >= {"positive-delivery", "display"}
    mary_reports(mary, message, "delivered", to=JOHN_TEL)
    wait_until(lambda: imdn_answered(lab, "delivered"), what="the IWF taking Mary's IMDN delivered")
    assert not list_of(lab), "no MDN before Mary has read it"
    mary_reports(mary, message, "displayed", to=JOHN_TEL)
    [raw] = [bytes(m) for m in wait_for_mail(lab)]
    mdn = BytesParser(policy=policy.default).parsebytes(raw)
    assert mdn.get_content_type() == "multipart/report"
    assert mdn.get_param("report-type") == "disposition-notification"
    assert mdn["In-Reply-To"] == "<john-agenda@mail-b.lab>" and "<john-agenda@mail-b.lab>" in mdn["References"]
    machine = next(p for p in mdn.walk() if p.get_content_type() == "message/disposition-notification")
    fields = str(machine.get_payload()[0] if isinstance(machine.get_payload(), list) else machine.get_payload())
    assert "Original-Message-ID: <john-agenda@mail-b.lab>" in fields
    assert "Disposition: manual-action/MDN-sent-automatically; displayed" in fields   # Mary displayed it
    answer = next(e for e in lab.lab.trace.events() if e.src == "IWF" and e.is_response and "IMDN displayed" in e.note)
    assert "report mapping: IMDN displayed <-> MDN disposition displayed (RFC 8098)" in answer.note
    data = next(e for e in lab.lab.trace.events() if e.protocol == "SMTP" and e.correlation.get("email_message_id")
                == mdn["Message-ID"])
    assert "report mapping: IMDN displayed <-> MDN" in data.note          # the converted report says which row


def test_a_display_forbidden_after_delivered_sends_john_nothing(world):
    """The email leg reads the IMDN's kind: Mary's phone refusing read reports is no failure DSN."""
    lab, mary, _ = world()
    johns_mail_with_mdn_request(lab, "Read it or not")
    message = next_message(mary)
    mary_reports(mary, message, "delivered", to=JOHN_TEL)
    mary_reports(mary, message, "forbidden", to=JOHN_TEL, kind="display")
    wait_until(lambda: imdn_answered(lab, "display forbidden"), what="the IWF taking Mary's IMDN forbidden")
    assert lab.call(lambda: lab.lab.iwf.email._mdns.count()) == 0
    # A second mail's MDN comes after anything the first one caused (one ordered outbox): only it.
    johns_mail_with_mdn_request(lab, "And this one?", message_id="<john-second@mail-b.lab>")
    mary_reports(mary, next_message(mary), "displayed", to=JOHN_TEL)
    [raw] = [bytes(m) for m in wait_for_mail(lab)]
    assert BytesParser(policy=policy.default).parsebytes(raw)["In-Reply-To"] == "<john-second@mail-b.lab>"


def test_no_automatic_mdn_to_an_address_that_is_not_the_envelope_sender(world):
    """RFC 8098 2.1: John's mail asks for the read report to go to a third party; the IWF must
    not mail it automatically, so it asks Mary's phone for no display notification either."""
    lab, mary, _ = world()
    johns_mail_with_mdn_request(lab, "Tell Eve I read it", notify="Eve <eve@mail-b.lab>")
    message = next_message(mary)
    assert "display" not in parse_cpim(message.body).disposition
    carried = next(e for e in lab.lab.trace.events() if e.src == "IWF" and e.summary.startswith("MESSAGE ")
                   and e.dst != "IWF")
    assert "not the envelope sender john@mail-b.lab: no automatic MDN (RFC 8098 2.1)" in carried.note
    assert lab.call(lambda: lab.lab.iwf.email._mdns.count()) == 0


def test_at_the_cap_of_owed_mdns_a_mail_gets_none_and_the_ladder_says_so(world):
    lab, mary, _ = world()
    lab.call(lambda: setattr(lab.lab.iwf.email._mdns, "limit", 0))
    johns_mail_with_mdn_request(lab, "One MDN too many")
    assert "display" not in parse_cpim(next_message(mary).body).disposition
    carried = next(e for e in lab.lab.trace.events() if e.src == "IWF" and e.summary.startswith("MESSAGE "))
    assert "the IWF owes 0 already: none for this mail" in carried.note


def list_of(lab) -> list:
    try:
        return list(johns_maildir(lab))
    except Exception:   # noqa: BLE001 - no mailbox yet: nothing arrived
        return []
