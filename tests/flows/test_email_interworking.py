"""Email interworking both ways, with real clients: stdlib smtplib as John's
mail client, a raw SIP client as Mary, the lab's mail server and IWF between."""
import smtplib
from email import policy
from email.message import EmailMessage

import pytest

from iwlab.backends.protocols import mail
from iwlab.backends.protocols.cpim import parse_cpim, parse_imdn_xml
from tests.helpers.mail_client import JOHN_TEL, john_writes, smtp, wait_for_mail
from tests.helpers.raw_sip import RawSipClient, cpim_body
from tests.helpers.sip_client import MARY
from tests.helpers.smpp_client import next_message


@pytest.fixture
def lab_and_mary(lab_factory):
    lab = lab_factory(devices="none")
    mary = RawSipClient(lab.lab.endpoints()["sip"]["cpm-a.lab"])
    assert mary.register(MARY, "cpm-a.lab").status == 200
    yield lab, mary
    mary.close()


def test_john_writes_first_and_mary_receives_it(lab_and_mary):
    lab, mary = lab_and_mary
    john_writes(lab, "Hi Mary, lunch tomorrow?")
    request = next_message(mary)
    cpim = parse_cpim(request.body)
    assert cpim.text.strip() == "Hi Mary, lunch tomorrow?"
    assert JOHN_TEL in cpim.sender and "John" in cpim.sender
    assert request.headers.get("Conversation-ID")


def test_mary_to_john_lands_in_his_maildir_with_the_right_headers(lab_and_mary):
    lab, mary = lab_and_mary
    call_id = mary.request("MESSAGE", JOHN_TEL, from_uri=MARY, to_uri=JOHN_TEL, content_type="message/cpim",
                           body=cpim_body(MARY, JOHN_TEL, "Meeting moved to 3pm, see you there", "imdn-m1"),
                           extra=["Conversation-ID: conv-mail", "Contribution-ID: contrib-1"])
    assert mary.response_to(call_id).status == 202
    [stored] = wait_for_mail(lab)
    assert stored["From"] == "Mary <mary@cpm-a.lab>"
    assert stored["To"] == "john@mail-b.lab"
    assert stored["Subject"].startswith("Meeting moved to 3pm")
    assert stored["Message-ID"] == "<contrib-1@cpm-a.lab>"
    assert stored["Conversation-ID"] == "conv-mail"
    assert "Meeting moved to 3pm, see you there" in stored.get_payload(decode=True).decode()
    notes = " ".join(e.note for e in lab.lab.trace.events())
    assert "John is not registered to CPM -> email via mail server" in notes
    # In John's Maildir: Mary's tick turns to delivered.
    imdn = parse_imdn_xml(parse_cpim(next_message(mary, imdn=True).body).body)
    assert (imdn.message_id, imdn.status) == ("imdn-m1", "delivered")


def test_johns_reply_reaches_marys_thread_and_his_mdn_says_displayed(lab_and_mary):
    lab, mary = lab_and_mary
    call_id = mary.request("MESSAGE", JOHN_TEL, from_uri=MARY, to_uri=JOHN_TEL, content_type="message/cpim",
                           body=cpim_body(MARY, JOHN_TEL, "Are you coming tonight?", "imdn-q"),
                           extra=["Conversation-ID: conv-night", "Contribution-ID: contrib-q"])
    assert mary.response_to(call_id).status == 202
    [stored] = wait_for_mail(lab)
    next_message(mary, imdn=True)                                  # delivered
    # John's client opens it and answers the read-receipt request.
    assert stored["Disposition-Notification-To"]
    mdn = mail.build_mdn(original=mail.parse_incoming(stored.as_bytes()),
                                reader_address="john@mail-b.lab", reader_name="John")
    with smtp(lab) as client:
        client.send_message(mdn, from_addr="john@mail-b.lab", to_addrs=["mary@cpm-a.lab"])
    displayed = parse_imdn_xml(parse_cpim(next_message(mary, imdn=True).body).body)
    assert (displayed.message_id, displayed.kind, displayed.status) == ("imdn-q", "display", "displayed")
    # John hits Reply; his client quotes Mary's text.
    john_writes(lab, "Yes, at eight.\n\nOn Tue, Mary wrote:\n> Are you coming tonight?\n",
                subject="Re: Are you coming tonight?", in_reply_to=stored["Message-ID"])
    reply = next_message(mary)
    assert parse_cpim(reply.body).text.strip() == "Yes, at eight."          # quoted history trimmed
    assert reply.headers.get("Conversation-ID") == "conv-night"
    assert reply.headers.get("InReplyTo-Contribution-ID") == "contrib-q"


def test_a_reply_without_ids_is_threaded_by_subject(lab_and_mary):
    lab, mary = lab_and_mary
    john_writes(lab, "first", subject="Holiday plans")
    first = next_message(mary)
    john_writes(lab, "second, from a client that drops In-Reply-To", subject="RE: Holiday plans")
    second = next_message(mary)
    assert second.headers.get("Conversation-ID") == first.headers.get("Conversation-ID")
    assert second.headers.get("InReplyTo-Contribution-ID") == first.headers.get("Contribution-ID")


def test_no_open_relay_and_the_lab_keeps_serving(lab_and_mary):
    lab, mary = lab_and_mary
    with smtp(lab) as client, pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        client.sendmail("john@mail-b.lab", ["someone@elsewhere.example"], b"Subject: x\r\n\r\nhi\r\n")
    assert refused.value.recipients["someone@elsewhere.example"][0] == 550
    john_writes(lab, "still here")
    assert parse_cpim(next_message(mary).body).text.strip() == "still here"


def test_johns_reply_without_in_reply_to_still_finds_marys_thread(lab_and_mary):
    lab, mary = lab_and_mary
    call_id = mary.request("MESSAGE", JOHN_TEL, from_uri=MARY, to_uri=JOHN_TEL, content_type="message/cpim",
                           body=cpim_body(MARY, JOHN_TEL, "Lunch on Friday?"),
                           extra=["Conversation-ID: conv-lunch", "Contribution-ID: contrib-lunch"])
    assert mary.response_to(call_id).status == 202
    wait_for_mail(lab)
    john_writes(lab, "Friday is fine", subject="Re: Lunch on Friday?")      # no In-Reply-To at all
    reply = next_message(mary)
    assert reply.headers.get("Conversation-ID") == "conv-lunch"
    assert reply.headers.get("InReplyTo-Contribution-ID") == "contrib-lunch"


def test_a_failed_handover_is_retried_for_real(lab_and_mary):
    """451 then a retry of the same message: the retry is handed on, not swallowed as a duplicate."""
    lab, mary = lab_and_mary
    original = lab.lab.iwf.email.hand_on
    calls = []

    async def flaky(incoming, recipient, **kw):
        calls.append(incoming.message_id)
        if len(calls) == 1:
            raise ConnectionError("CPM side busy")
        await original(incoming, recipient, **kw)
    lab.lab.iwf.email.hand_on = flaky
    message = EmailMessage(policy=policy.default)
    message["From"], message["To"], message["Subject"] = "John <john@mail-b.lab>", "mary@cpm-a.lab", "retry"
    message["Message-ID"] = "<retry-1@mail-b.lab>"
    message.set_content("second time lucky")
    with smtp(lab) as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.send_message(message)
    assert refused.value.smtp_code == 451
    with smtp(lab) as client:
        client.send_message(message)
    assert parse_cpim(next_message(mary).body).text.strip() == "second time lucky"


def test_an_email_the_server_refuses_becomes_imdn_failed(lab_and_mary):
    lab, mary = lab_and_mary
    lab.call(setattr, lab.lab.topology.user("john"), "email", "john@elsewhere.example")   # not a lab domain
    call_id = mary.request("MESSAGE", JOHN_TEL, from_uri=MARY, to_uri=JOHN_TEL, content_type="message/cpim",
                           body=cpim_body(MARY, JOHN_TEL, "lost?", "imdn-refused"))
    assert mary.response_to(call_id).status == 202
    imdn = parse_imdn_xml(parse_cpim(next_message(mary, imdn=True).body).body)
    assert (imdn.message_id, imdn.status) == ("imdn-refused", "failed")


def test_an_html_only_email_reaches_mary_with_its_link_targets(lab_and_mary):
    lab, mary = lab_and_mary
    message = EmailMessage(policy=policy.default)
    message["From"] = "John <john@mail-b.lab>"
    message["To"] = "mary@cpm-a.lab"
    message["Subject"] = "plan"
    message.set_content('<p>Here is <a href="http://x.example/plan">the plan</a></p>', subtype="html")
    with smtp(lab) as client:
        client.send_message(message)
    text = parse_cpim(next_message(mary).body).text
    assert "the plan (http://x.example/plan)" in text


def test_a_refused_email_comes_back_to_john_as_a_dsn_threaded_to_it_never_as_sms(lab_and_mary):
    lab, mary = lab_and_mary
    sent = john_writes(lab, "Are you in the office?", subject="Office")
    request = mary.receive(lambda m: getattr(m, "method", "") == "MESSAGE")
    mary.answer(request, 603, "Decline")                       # Mary's device refuses it
    [dsn] = wait_for_mail(lab)
    assert dsn.get_content_type() == "multipart/report" and dsn.get_param("report-type") == "delivery-status"
    assert dsn["In-Reply-To"] == sent["Message-ID"] and sent["Message-ID"] in dsn["References"]
    from email.parser import BytesParser
    [fields] = mail.dsn_fields(BytesParser(policy=policy.default).parsebytes(dsn.as_bytes()))
    assert fields["Final-Recipient"] == "rfc822; mary@cpm-a.lab" and fields["Action"] == "failed"
    assert "603 Decline" in fields["Diagnostic-Code"]
    assert not any(e.protocol == "SMPP" and e.summary.startswith("submit_sm") for e in lab.lab.trace.events()), \
        "John has no handset: the failure goes by email only"
    smtp_from = [e for e in lab.lab.trace.events() if e.protocol == "SMTP" and e.src == "IWF"
                 and e.summary.startswith("MAIL FROM")]
    assert smtp_from and "<>" in smtp_from[-1].summary                 # a bounce has a null reverse-path


def test_the_iwf_matches_reports_and_replies_with_its_newest_mails_only(lab_factory, monkeypatch):
    """What the IWF remembers of the mails it sent is bounded (the newest REMEMBERED, 2 here, as
    10,000 would be after a long load): the newest is still matched, the oldest is let go. A
    report for it is not taken for another's, and a reply to it opens a new conversation."""
    from iwlab.backends.nodes.iwf import email_leg, threads
    monkeypatch.setattr(email_leg, "REMEMBERED", 2)
    monkeypatch.setattr(threads, "REMEMBERED_IDS", 2)
    lab = lab_factory(devices="none")
    mary = RawSipClient(lab.lab.endpoints()["sip"]["cpm-a.lab"])
    assert mary.register(MARY, "cpm-a.lab").status == 200
    mail_server, port = lab.lab.mail, lab.lab.mail.port
    lab.run(mail_server.stop())   # all three wait in the IWF's outbox at once: more than it remembers
    for n in (1, 2, 3):
        call_id = mary.request("MESSAGE", JOHN_TEL, from_uri=MARY, to_uri=JOHN_TEL, content_type="message/cpim",
                               body=cpim_body(MARY, JOHN_TEL, f"mail {n}", f"imdn-{n}"),
                               extra=[f"Conversation-ID: conv-{n}", f"Contribution-ID: contrib-{n}"])
        assert mary.response_to(call_id).status == 202
    lab.run(mail_server.start(lab.lab.host, port))
    stored = {m["Message-ID"]: m for m in wait_for_mail(lab, 3, timeout=30)}
    first, last = stored["<contrib-1@cpm-a.lab>"], stored["<contrib-3@cpm-a.lab>"]
    assert [parse_imdn_xml(parse_cpim(next_message(mary, imdn=True).body).body).message_id
            for _ in range(3)] == ["imdn-1", "imdn-2", "imdn-3"]                  # delivered, each
    with smtp(lab) as client:
        for original in (first, last):   # John reads the oldest, then the newest
            mdn = mail.build_mdn(original=mail.parse_incoming(original.as_bytes()),
                                 reader_address="john@mail-b.lab", reader_name="John")
            client.send_message(mdn, from_addr="john@mail-b.lab", to_addrs=["mary@cpm-a.lab"])
    displayed = parse_imdn_xml(parse_cpim(next_message(mary, imdn=True).body).body)
    assert (displayed.message_id, displayed.status) == ("imdn-3", "displayed"), "the oldest's MDN made none"
    john_writes(lab, "to the oldest", subject="Re: mail 1", in_reply_to=first["Message-ID"])
    john_writes(lab, "to the newest", subject="Re: mail 3", in_reply_to=last["Message-ID"])
    replies = [next_message(mary) for _ in range(2)]
    assert replies[0].headers.get("Conversation-ID") not in ("conv-1", "conv-2", "conv-3")
    assert replies[1].headers.get("Conversation-ID") == "conv-3"
    mary.close()
