"""email_codec with bytes only: CPM -> email headers, what real clients send
back (replies, Outlook, HTML, multipart, attachments, charsets, MDNs), and
the mail server's malformed-message gate."""
from __future__ import annotations

import base64
from datetime import datetime, timezone
from email import policy
from email.parser import BytesParser

import pytest

from iwlab.backends.protocols.mail import (
    build_mdn,
    contribution_id_from_message_id,
    cpm_to_email,
    html_to_text,
    message_id_for,
    normalise_subject,
    parse_incoming,
    subject_from_text,
    thread_key_candidates,
    trim_quoted,
    why_malformed,
)

WHEN = datetime(2024, 6, 3, 10, 0, tzinfo=timezone.utc)


def mary_to_john(text="Lunch tomorrow? 🍜", **kw):
    args = dict(sender_name="Mary", sender_address="mary@cpm-a.lab", recipient_address="john@mail-b.lab",
                text=text, contribution_id="c-1", conversation_id="conv-1", domain="cpm-a.lab", date=WHEN)
    return cpm_to_email(**{**args, **kw})


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


# -- CPM -> email -------------------------------------------------------------------------------
def test_cpm_to_email_headers_exact():
    wire = mary_to_john().as_bytes(policy=policy.SMTP)
    head, _, body = wire.partition(b"\r\n\r\n")
    assert head.decode().split("\r\n") == [
        "From: Mary <mary@cpm-a.lab>",
        "To: john@mail-b.lab",
        "Subject: Lunch tomorrow? =?utf-8?q?=F0=9F=8D=9C?=",
        "Date: Mon, 03 Jun 2024 10:00:00 +0000",
        "Message-ID: <c-1@cpm-a.lab>",
        "Conversation-ID: conv-1",
        "Contribution-ID: c-1",
        "Disposition-Notification-To: Mary <mary@cpm-a.lab>",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: 8bit",
        "MIME-Version: 1.0",
    ]
    assert body == "Lunch tomorrow? 🍜\r\n".encode()


def test_cpm_to_email_utf8_round_trip_and_no_mdn_request():
    text = "Ça va? 😀 Grüße aus 東京\nzweite Zeile"
    wire = mary_to_john(text, request_mdn=False, sender_name="Marie-Hélène").as_bytes(policy=policy.SMTP)
    parsed = BytesParser(policy=policy.default).parsebytes(wire)
    assert parsed.get_content().replace("\r\n", "\n") == text + "\n"
    assert parsed["From"].addresses[0].display_name == "Marie-Hélène"
    assert str(parsed["Subject"]) == "Ça va? 😀 Grüße aus 東京 zweite Zeile"
    assert "Disposition-Notification-To" not in parsed
    incoming = parse_incoming(wire)
    assert incoming.text == text and incoming.conversation_id == "conv-1"


def test_reply_headers_in_reply_to_and_references_trimmed_like_clients():
    chain = [f"<r{i}@mail-b.lab>" for i in range(15)]
    msg = mary_to_john(in_reply_to_message_id="<r14@mail-b.lab>", references=chain)
    assert msg["In-Reply-To"] == "<r14@mail-b.lab>"
    refs = str(msg["References"]).split()
    assert refs == ["<r0@mail-b.lab>"] + chain[4:]            # first + last 11, parent last
    assert len(refs) == 12
    short = mary_to_john(in_reply_to_message_id="p@mail-b.lab", references=["<a@x>", "<a@x>"])
    assert str(short["References"]).split() == ["<a@x>", "<p@mail-b.lab>"]


@pytest.mark.parametrize("text, subject", [
    ("Hi John", "Hi John"),
    ("one two three four five six seven eight", "one two three four five six seven eight"),
    ("one two three four five six seven eight nine", "one two three four five six seven eight…"),
    ("line one\nline two\r\nthree", "line one line two three"),
    ("x" * 80, "x" * 59 + "…"),
    ("Supercalifragilistic expialidocious wordswordswords evenmorewords more", "Supercalifragilistic expialidocious wordswordswords…"),
    ("   ", "Message"),
])
def test_subject_from_first_words(text, subject):
    assert subject_from_text(text) == subject
    assert len(subject) <= 60 and "\n" not in subject


def test_message_id_from_contribution_id_and_back():
    assert message_id_for("c-1", "cpm-a.lab") == "<c-1@cpm-a.lab>"
    odd = "a b@c.d<>é"
    mid = message_id_for(odd, "cpm-a.lab")
    assert " " not in mid and mid.count("@") == 1 and mid.count("<") == 1
    assert contribution_id_from_message_id(mid) == odd
    assert contribution_id_from_message_id("c-1@cpm-a.lab") == "c-1"
    assert contribution_id_from_message_id("<c-1@cpm-a.lab>", domains={"CPM-A.lab"}) == "c-1"
    assert contribution_id_from_message_id("<CAF123@mail.gmail.com>", domains={"cpm-a.lab"}) is None
    assert contribution_id_from_message_id("no id here") is None


# -- email -> CPM ---------------------------------------------------------------------------------
REPLY = """From: John <john@mail-b.lab>
To: Mary <mary@cpm-a.lab>
Subject: Re: Lunch tomorrow?
Date: Mon, 3 Jun 2024 11:00:00 +0000
Message-ID: <reply-1@mail-b.lab>
In-Reply-To: <c-1@cpm-a.lab>
References: <c-1@cpm-a.lab>
Content-Type: text/plain; charset=utf-8

Sure, see you at noon!

John

On Mon, 3 Jun 2024 at 10:00, Mary <mary@cpm-a.lab> wrote:
> Lunch tomorrow?
>
> > earlier
"""


def test_plain_reply_quotes_trimmed():
    email = parse_incoming(crlf(REPLY))
    assert email.text == "Sure, see you at noon!\n\nJohn"
    assert email.trimmed_quote
    assert (email.sender, email.sender_name, email.recipients) == ("john@mail-b.lab", "John", ["mary@cpm-a.lab"])
    assert email.subject == "Re: Lunch tomorrow?" and email.message_id == "<reply-1@mail-b.lab>"
    assert email.in_reply_to == "<c-1@cpm-a.lab>" and email.references == ["<c-1@cpm-a.lab>"]
    assert (email.is_mdn, email.was_html_only, email.attachments, email.warnings) == (False, False, [], [])


@pytest.mark.parametrize("body, kept", [
    # wrapped attribution, signature
    ("Yes!\n-- \nJohn Smith\nACME\n\nOn Mon, 3 Jun 2024 at 10:00, Mary\n<mary@cpm-a.lab> wrote:\n> Lunch?\n", "Yes!"),
    ("D'accord.\n\nLe lun. 3 juin 2024 à 10:00, Mary <mary@cpm-a.lab> a écrit :\n> Déjeuner ?\n", "D'accord."),
    ("Ja.\n\nAm Mo., 3. Juni 2024 um 10:00 Uhr schrieb Mary <mary@cpm-a.lab>:\n> Mittag?\n", "Ja."),
    # bottom posting: the quote comes first
    ("On Mon, Mary wrote:\n> Lunch?\n\nYes, noon.\n", "Yes, noon."),
    # interleaved: quotes in the middle stay as context
    ("> Lunch?\nYes.\n> Where?\nThe usual place.\n", "Yes.\n> Where?\nThe usual place."),
    # a lone "... wrote:" that is the person's own words stays
    ("Here is what the doctor wrote:\n", "Here is what the doctor wrote:"),
    # nothing but a quote: keep it all rather than send nothing
    ("> just forwarding this\n", "> just forwarding this"),
])
def test_trim_quoted_variants(body, kept):
    assert trim_quoted(body)[0] == kept


OUTLOOK = """From: John <john@mail-b.lab>
To: mary@cpm-a.lab
Subject: RE: Lunch tomorrow?
Message-ID: <outlook-1@mail-b.lab>
In-Reply-To: <c-1@cpm-a.lab>
Content-Type: text/plain; charset="us-ascii"

Works for me.

Thanks,
John

________________________________
From: Mary <mary@cpm-a.lab>
Sent: Monday, June 3, 2024 10:00 AM
To: John <john@mail-b.lab>
Subject: Lunch tomorrow?

Lunch tomorrow?
"""


def test_outlook_reply_trimmed():
    assert parse_incoming(crlf(OUTLOOK)).text == "Works for me.\n\nThanks,\nJohn"
    original = "Fine\n\n-----Original Message-----\nFrom: Mary\nSent: Monday\nSubject: x\n\nLunch?\n"
    assert trim_quoted(original) == ("Fine", True)


def test_references_with_15_ids_and_thread_candidates():
    refs = " ".join(f"<r{i}@x.lab>" for i in range(15))
    raw = crlf(f"From: john@mail-b.lab\nTo: mary@cpm-a.lab\nSubject: Re: x\nIn-Reply-To: <r14@x.lab>\n"
               f"References: {refs}\nMessage-ID: <new@mail-b.lab>\n\nok\n")
    email = parse_incoming(raw)
    assert email.references == [f"<r{i}@x.lab>" for i in range(15)]
    assert thread_key_candidates(email) == [f"<r{i}@x.lab>" for i in range(14, -1, -1)]
    no_parent = parse_incoming(crlf("From: a@b.c\nReferences: <a@x> <b@x>\n\nhi\n"))
    assert thread_key_candidates(no_parent) == ["<b@x>", "<a@x>"]


HTML_ONLY = """From: John <john@mail-b.lab>
To: mary@cpm-a.lab
Subject: html
Content-Type: text/html; charset=utf-8

<html><head><style>p {color: red}</style><script>alert("x")</script><title>t</title></head>
<body><p>Hello&nbsp;Mary &amp; co &lt;3</p><div>Line two<br>Line   three</div>
<ul><li>first</li><li>second</li></ul>
<div class="gmail_quote">On Mon, Mary wrote:<blockquote>Lunch?<br>Old</blockquote></div></body></html>
"""


def test_html_only_converted():
    email = parse_incoming(crlf(HTML_ONLY))
    assert email.was_html_only
    assert email.text == "Hello Mary & co <3\nLine two\nLine three\n- first\n- second"
    assert "alert" not in html_to_text("<script>alert(1)</script>ok") and html_to_text("a<br/>b") == "a\nb"


def _multipart(*parts: str, kind: str = "mixed") -> bytes:
    body = "".join(f"--B\n{part}\n" for part in parts)
    return crlf(f"From: john@mail-b.lab\nTo: mary@cpm-a.lab\nSubject: parts\nMIME-Version: 1.0\n"
                f'Content-Type: multipart/{kind}; boundary="B"\n\npreamble\n{body}--B--\n')


def test_multipart_alternative_prefers_plain():
    raw = _multipart("Content-Type: text/plain; charset=utf-8\n\nplain words\n",
                     "Content-Type: text/html; charset=utf-8\n\n<p>html words</p>\n", kind="alternative")
    email = parse_incoming(raw)
    assert (email.text, email.was_html_only, email.attachments) == ("plain words", False, [])


def test_attachments_listed_never_dropped():
    pdf = base64.encodebytes(b"%PDF" + b"\0" * 2044).decode()
    alternative = ('Content-Type: multipart/alternative; boundary="A"\n\n--A\nContent-Type: text/plain\n\n'
                   'See attached.\n--A\nContent-Type: text/html\n\n<p>See attached.</p>\n--A--\n')
    raw = _multipart(alternative,
                     'Content-Type: application/pdf; name="report.pdf"\nContent-Disposition: attachment; '
                     f'filename="report.pdf"\nContent-Transfer-Encoding: base64\n\n{pdf}',
                     "Content-Type: image/png\nContent-Transfer-Encoding: base64\n\niVBORw0KGgo=\n",
                     "Content-Type: message/rfc822\n\nFrom: x@y.z\nSubject: fwd\n\ninner\n")
    email = parse_incoming(raw)
    assert email.text == "See attached."
    assert email.attachments == ["report.pdf (application/pdf, 2.0 kB)", "unnamed.png (image/png, 8 B)",
                                 "unnamed.rfc822 (message/rfc822, 32 B)"]


def test_inline_text_around_an_image_is_kept():
    raw = _multipart("Content-Type: text/plain\n\nLook at this:\n",
                     "Content-Type: image/jpeg\nContent-Disposition: inline; filename=cat.jpg\n\nxx\n",
                     "Content-Type: text/plain\n\nCute, no?\n")
    email = parse_incoming(raw)
    assert email.text == "Look at this:\n\nCute, no?" and email.attachments == ["cat.jpg (image/jpeg, 4 B)"]


def test_iso_8859_1_body_and_encoded_subject():
    raw = (b"From: =?iso-8859-1?q?Jos=E9?= <jose@mail-b.lab>\r\nSubject: =?iso-8859-1?q?Caf=E9?=\r\n"
           b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           b"Caf\xe9 \xe0 midi?\r\n")
    email = parse_incoming(raw)
    assert (email.sender_name, email.subject, email.text) == ("José", "Café", "Café à midi?")


def test_unknown_charset_is_a_warning_not_a_loss():
    raw = b"From: a@b.c\r\nContent-Type: text/plain; charset=x-nonsense\r\n\r\nhello\r\n"
    email = parse_incoming(raw)
    assert email.text == "hello" and "x-nonsense" in email.warnings[0]


THUNDERBIRD_MDN = """From: John <john@mail-b.lab>
To: mary@cpm-a.lab
Subject: Return Receipt (displayed) - Lunch
Message-ID: <mdn-1@mail-b.lab>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification;
 boundary="------------A1"

This is a multi-part message in MIME format.
--------------A1
Content-Type: text/plain; charset=UTF-8

This is a Return Receipt for the mail that you sent to john@mail-b.lab.
--------------A1
Content-Type: message/disposition-notification; name="MDNPart2.txt"
Content-Disposition: inline

Reporting-UA: mail-b.lab; Mozilla Thunderbird
Final-Recipient: rfc822;john@mail-b.lab
Original-Message-ID: <c-1@cpm-a.lab>
Disposition: manual-action/MDN-sent-manually; displayed

--------------A1
Content-Type: text/rfc822-headers; name="MDNPart3.txt"

From: Mary <mary@cpm-a.lab>
Message-ID: <c-1@cpm-a.lab>

--------------A1--
"""


def test_mdn_detected():
    email = parse_incoming(crlf(THUNDERBIRD_MDN))
    assert email.is_mdn and email.mdn_original_message_id == "<c-1@cpm-a.lab>"
    assert email.mdn_disposition == "displayed" and email.attachments == []
    assert email.text.startswith("This is a Return Receipt")


def test_build_mdn_round_trip():
    original = parse_incoming(mary_to_john().as_bytes(policy=policy.SMTP))
    assert original.disposition_notification_to == "mary@cpm-a.lab"
    mdn = build_mdn(original=original, reader_address="john@mail-b.lab", reader_name="John")
    wire = mdn.as_bytes(policy=policy.SMTP)
    assert why_malformed(wire) is None
    assert b"Disposition: manual-action/MDN-sent-manually; displayed\r\n" in wire
    assert b"Final-Recipient: rfc822; john@mail-b.lab\r\n" in wire
    back = parse_incoming(wire)
    assert (back.is_mdn, back.mdn_original_message_id, back.mdn_disposition) == (True, "<c-1@cpm-a.lab>", "displayed")
    assert (back.sender, back.recipients, back.in_reply_to) == ("john@mail-b.lab", ["mary@cpm-a.lab"], "<c-1@cpm-a.lab>")
    from_message = build_mdn(original=mary_to_john(), reader_address="john@mail-b.lab", reader_name="John",
                             disposition="deleted")
    again = parse_incoming(from_message.as_bytes(policy=policy.SMTP))
    assert (again.mdn_original_message_id, again.mdn_disposition) == ("<c-1@cpm-a.lab>", "deleted")


@pytest.mark.parametrize("subject, normal", [
    ("Re: RE: Fwd: AW: SV:  Lunch   Tomorrow", "lunch tomorrow"),
    ("Re[2]: Re:Re:plans", "plans"),
    ("FW: Réunion", "réunion"),
    ("Regarding the plans", "regarding the plans"),
    ("  ", ""),
])
def test_normalise_subject(subject, normal):
    assert normalise_subject(subject) == normal


# -- the server's gate ------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, reason", [
    (b"just some text\r\n\r\nbody\r\n", "no header block"),
    (b"\r\nbody only\r\n", "no header block"),
    (b"From: a@b.c\r\nthis is not a header\r\n\r\nbody\r\n", "header line 2 does not parse"),
    (b"Subject: hi\r\n\r\nbody\r\n", "no From header"),
    (b"From: <<<\r\n\r\nbody\r\n", "From header does not parse"),
    (b"From: a@b.c\r\nSubject: \xff\xfe\r\n\r\nbody\r\n", "not UTF-8"),
    (b"From: a@b.c\r\n\r\nhello\n.\nMAIL FROM:<x@y.z>\r\n", "bare LF in message data (line 3)"),
    (b"From: a@b.c\r\n\r\nhello\r.\r\n", "bare CR"),
    (b"From: a@b.c\r\n\r\nnul\0\r\n", "NUL byte"),
])
def test_why_malformed(raw, reason):
    assert reason in why_malformed(raw)


def test_well_formed_messages_pass():
    assert why_malformed(crlf(REPLY)) is None
    assert why_malformed(crlf("From: a@b.c\nTo: undisclosed-recipients:;\nSubject: Grüße\n\nbody")) is None


@pytest.mark.parametrize("markup, text", [
    ('<p>Read <a href="http://x.example/plan">the plan</a>.</p>', "Read the plan (http://x.example/plan)."),
    ('<a href="http://x.example/">http://x.example/</a>', "http://x.example/"),          # said once
    ('<a href="mailto:a@b.example">a@b.example</a>', "a@b.example"),
    ('<a href="https://x.example/i"><img src="cid:1"></a>', "https://x.example/i"),       # an image link
    ('<a href="#top">top</a> <a href="javascript:go()">go</a>', "top go"),               # nothing to follow
    ('<a href="http://x.example/a">one</a> and <a href="http://x.example/b">two</a>',
     "one (http://x.example/a) and two (http://x.example/b)"),
])
def test_html_to_text_keeps_link_targets(markup, text):
    assert html_to_text(markup) == text
