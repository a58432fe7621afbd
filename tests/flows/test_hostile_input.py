"""Issue 15, hostile input: what an outside client sends that the lab must refuse, at the edge,
with the protocol's own error, so nothing invalid travels on to a leg where it fails silently.

Real clients on real sockets: a raw SIP client as Mary, smpplib clients as handsets, smtplib
and raw sockets for SMTP.
"""
import queue
import smtplib
import socket
from email import policy
from email.parser import BytesParser

import pytest
import smpplib.consts as C

from iwlab.backends.protocols import smpp
from iwlab.backends.protocols.cpim import parse_cpim
from iwlab.backends.protocols.sip import parse_name_addr, validate_request
from iwlab.backends.transports import partial
from tests.helpers.mail_client import john_writes, smtp, wait_for_mail
from tests.helpers.raw_sip import RawSipClient
from tests.helpers.raw_smpp import SmppHandset
from tests.helpers.sip_client import MARY
from tests.helpers.smpp_client import encoded, next_message, peter_submits
from tests.helpers.waiting import until


@pytest.fixture
def mary_and_peter(lab_factory):
    lab = lab_factory(devices="none")
    endpoints = lab.lab.endpoints()
    mary = RawSipClient(endpoints["sip"]["cpm-a.lab"])
    assert mary.register(MARY, "cpm-a.lab").status == 200
    peter = SmppHandset(endpoints["smpp"], "15550201")
    yield lab, mary, peter
    mary.close()
    peter.close()


def submit_status(handset: SmppHandset, **fields) -> int:
    params = {"source_addr_ton": 1, "source_addr": "15550201", "dest_addr_ton": 1, "destination_addr": "15550101",
              "short_message": encoded("hi"), **fields}
    handset.client.send_message(**params)
    return handset.responses.get(timeout=10).status


# -- finding 2: addresses are checked where they enter --------------------------------------------

@pytest.mark.parametrize("fields, status", [
    ({"source_addr": "15550201\r\nX-Evil: 1"}, C.SMPP_ESME_RINVSRCADR),
    ({"source_addr": "1555\x070201"}, C.SMPP_ESME_RINVSRCADR),
    ({"source_addr": "peter"}, C.SMPP_ESME_RINVSRCADR),                      # TON international: digits only
    ({"destination_addr": "15550101\n"}, C.SMPP_ESME_RINVDSTADR),
    ({"destination_addr": "1555010x"}, C.SMPP_ESME_RINVDSTADR),
    ({"source_addr": "15550202"}, C.SMPP_ESME_RINVSRCADR),                  # another handset's number
], ids=["crlf-source", "bell-source", "letters-international", "lf-destination", "letter-destination",
        "not-its-own-number"])
def test_control_characters_in_addresses_are_refused_at_the_smsc(mary_and_peter, fields, status):
    lab, mary, peter = mary_and_peter
    assert submit_status(peter, **fields) == status
    peter_submits(peter, encoded("the real one"))           # the bind goes on working
    request = next_message(mary)                            # and the next message is the good one
    assert b"the real one" in request.body
    with pytest.raises(queue.Empty):
        peter.received.get(timeout=0.3)                     # no receipt or bounce for the refused one


# -- finding 3: an email answered 250 is carried, or refused before the 250, or bounced -----------

def mail_to_mary(lab, from_header: str, text: str = "hello", envelope_from: str = "eve@evil.test",
                 to: str = "mary@cpm-a.lab"):
    """smtplib's sendmail with a From header we write ourselves (EmailMessage would re-quote it)."""
    raw = (f"From: {from_header}\r\nTo: {to}\r\nSubject: test\r\n"
           f"Message-ID: <{abs(hash((from_header, text)))}@evil.test>\r\n\r\n{text}\r\n").encode()
    with smtp(lab) as client:
        return client.sendmail(envelope_from, [to], raw)


@pytest.fixture
def lab_and_mary(lab_factory):
    lab = lab_factory(devices="none")
    mary = RawSipClient(lab.lab.endpoints()["sip"]["cpm-a.lab"])
    assert mary.register(MARY, "cpm-a.lab").status == 200
    yield lab, mary
    mary.close()


@pytest.mark.parametrize("from_header, display, uri", [
    ('"Ev\\"il" <eve@evil.test>', 'Ev"il', "sip:eve@evil.test"),
    ('"x y"@evil.test', None, "sip:%22x%20y%22@evil.test"),
    ("=?utf-8?q?Eve=0BX-Evil=3A_1?= <eve@evil.test>", "Eve X-Evil: 1", "sip:eve@evil.test"),
    ('"back\\\\slash" <eve@evil.test>', "back\\slash", "sip:eve@evil.test"),
], ids=["escaped-quote", "quoted-local-part", "rfc2047-control", "backslash"])
def test_hostile_email_senders_become_a_valid_sip_from(lab_and_mary, from_header, display, uri):
    lab, mary = lab_and_mary
    assert mail_to_mary(lab, from_header, text="odd sender") == {}     # one 250, no 451 to retry
    request = next_message(mary)
    sender = parse_name_addr(request.headers.get("From"))
    assert sender.uri == uri
    if display is not None:
        assert sender.display == display
    assert validate_request(request) is None
    assert b"odd sender" in request.body
    assert "\r" not in parse_cpim(request.body).sender


def test_an_rfc2047_encoded_crlf_never_means_451_for_ever(lab_and_mary):
    """In From it is refused at DATA (the stdlib will not make an address of it); in To (which
    the server decodes for the trace) it used to raise: 451 on every try."""
    lab, mary = lab_and_mary
    with pytest.raises(smtplib.SMTPDataError) as refused:
        mail_to_mary(lab, "=?utf-8?q?Eve=0D=0AX-Evil=3A_1?= <eve@evil.test>")
    assert refused.value.smtp_code == 554 and refused.value.smtp_error.startswith(b"5.6.0 ")
    raw = (b"From: Eve <eve@evil.test>\r\nTo: =?utf-8?q?Mary=0D=0AX-Evil=3A_1?= <mary@cpm-a.lab>\r\n"
           b"Subject: =?utf-8?q?a=0D=0Ab?=\r\nMessage-ID: <crlf-to@evil.test>\r\n\r\nencoded to\r\n")
    with smtp(lab) as client:
        assert client.sendmail("eve@evil.test", ["mary@cpm-a.lab"], raw) == {}
    assert b"encoded to" in next_message(mary).body


def test_mail_for_an_unknown_cpm_user_is_refused_at_rcpt(lab_and_mary):
    lab, _ = lab_and_mary
    with smtp(lab) as client:
        client.ehlo()
        client.mail("john@mail-b.lab")
        code, reply = client.rcpt("nobody@cpm-a.lab")
        assert (code, reply.split()[0]) == (550, b"5.1.1")
        assert client.rcpt("mary@cpm-a.lab")[0] == 250      # the session goes on
        client.rset()
    assert not [e for e in lab.lab.trace.events() if e.protocol == "SIP" and "nobody" in e.summary]


def test_a_sender_address_that_makes_no_sip_uri_is_refused_at_data(lab_and_mary):
    lab, _ = lab_and_mary
    with pytest.raises(smtplib.SMTPDataError) as refused:
        mail_to_mary(lab, "Eve <eve@under_score.test>", envelope_from="eve@under_score.test")
    assert refused.value.smtp_code == 553 and refused.value.smtp_error.startswith(b"5.1.7 ")


def test_an_email_cpm_refuses_after_the_250_is_bounced_to_its_sender_with_a_dsn(lab_and_mary):
    lab, mary = lab_and_mary
    john_writes(lab, "Mary will refuse this", subject="refused later")
    request = mary.receive(lambda m: getattr(m, "method", "") == "MESSAGE")
    mary.answer(request, 488, "Not Acceptable Here")
    [stored] = wait_for_mail(lab, 1)
    dsn = BytesParser(policy=policy.default).parsebytes(stored.as_bytes())
    assert dsn.get_content_type() == "multipart/report" and dsn.get_param("report-type") == "delivery-status"
    assert str(dsn["Subject"]).endswith("refused later")
    status = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert "Action: failed" in text and "Status: 5.6.0" in text and "488 Not Acceptable Here" in text
    assert "Final-Recipient: rfc822; mary@cpm-a.lab" in text
    assert stored["Return-Path"] == "<>"                      # the null reverse-path: never bounced again


# -- finding 5: bounded resources: a connection limit per listener, a bind deadline -----------------

def address(endpoint: str) -> tuple[str, int]:
    host, port = endpoint.rsplit(":", 1)
    return host.strip("[]"), int(port)


def closed_by_peer(sock: socket.socket) -> bytes:
    """Everything the lab writes before it closes the connection (waits for the close)."""
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_past_the_connection_limit_a_flood_is_refused_and_the_rest_served(lab_factory):
    lab = lab_factory(devices="none")
    endpoints = lab.lab.endpoints()
    smsc, mail = lab.lab.smsc, lab.lab.mail
    lab.call(setattr, smsc.guard, "limit", lab.call(lambda: smsc.guard.live) + 1)   # room for one more
    lab.call(setattr, mail.guard, "limit", 1)
    admitted = socket.create_connection(address(endpoints["smpp"]), timeout=10)
    flood = [socket.create_connection(address(endpoints["smpp"]), timeout=10) for _ in range(5)]
    assert all(closed_by_peer(sock) == b"" for sock in flood)        # refused at once, nothing said
    first_mail = socket.create_connection(address(endpoints["smtp"]), timeout=10)
    assert first_mail.recv(4096).startswith(b"220 ")
    second_mail = socket.create_connection(address(endpoints["smtp"]), timeout=10)
    assert closed_by_peer(second_mail).startswith(b"421 4.7.0 Too many connections")
    assert lab.call(lambda: smsc.guard.refused) == 5 and lab.call(lambda: mail.guard.refused) == 1
    admitted.close()
    first_mail.close()
    for sock in flood + [second_mail]:
        sock.close()

    lab.run(until(lambda: smsc.guard.live < smsc.guard.limit, 20, "room for a connection again"))
    peter = SmppHandset(endpoints["smpp"], "15550201")     # the lab goes on serving: a real bind works
    peter.close()


def test_a_connection_that_never_binds_is_closed_by_the_session_init_timer(lab_factory):
    lab = lab_factory(devices="none")
    lab.call(setattr, lab.lab.smsc, "session_init_seconds", 0.2)
    idle = socket.create_connection(address(lab.lab.endpoints()["smpp"]), timeout=10)
    assert closed_by_peer(idle) == b""
    idle.close()
    notes = [e.note for e in lab.lab.trace.events() if e.fields.get("event") == "session_init_timeout"]
    assert notes and "not bound within 0.2 s" in notes[0]


def test_a_sip_message_begun_and_never_finished_closes_the_connection(lab_factory, monkeypatch):
    """A slow-loris peer (or a Content-Length larger than what it sends) cannot hold a connection."""
    monkeypatch.setattr(partial, "PARTIAL_MESSAGE_SECONDS", 0.3)
    lab = lab_factory(devices="none")
    slow = socket.create_connection(address(lab.lab.endpoints()["sip"]["cpm-a.lab"]), timeout=10)
    slow.sendall(b"MESSAGE sip:peter@cpm-b.lab SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKs1\r\n")
    assert closed_by_peer(slow) == b""
    slow.close()
    notes = [e.note for e in lab.lab.trace.events() if e.fields.get("event") == "partial_message_timeout"]
    assert notes and "still not complete" in notes[0]
    mary = RawSipClient(lab.lab.endpoints()["sip"]["cpm-a.lab"])      # and the lab goes on serving
    assert mary.register(MARY, "cpm-a.lab").status == 200
    mary.close()


def test_an_smpp_pdu_begun_and_never_finished_closes_the_connection_even_when_bound(lab_factory, monkeypatch):
    """A bound client that sends the start of a PDU and then nothing cannot hold the connection
    (the session_init_timer covers only an unbound one); the lab keeps serving others."""
    monkeypatch.setattr(partial, "PARTIAL_MESSAGE_SECONDS", 0.3)
    lab = lab_factory(devices="none")
    slow = socket.create_connection(address(lab.lab.endpoints()["smpp"]), timeout=10)
    bind = smpp.encode(smpp.make("bind_transceiver", 1, system_id="15550201", password="iwlab",
                                 system_type="", interface_version=0x34, addr_ton=0, addr_npi=0, address_range=""))
    slow.sendall(bind)
    assert slow.recv(4096)[4:8] == (0x80000009).to_bytes(4, "big")          # bind_transceiver_resp
    submit = smpp.encode(smpp.make("submit_sm", 2, source_addr="15550201", destination_addr="15550101",
                                   short_message=b"hello"))
    slow.sendall(submit[:-3])                                               # all but its last bytes
    assert closed_by_peer(slow) == b""
    slow.close()
    [event] = [e for e in lab.lab.trace.events() if e.fields.get("event") == "partial_pdu_timeout"]
    assert "a PDU begun 0.3 s ago is still not complete" in event.note and event.src == "Peter"
    peter = SmppHandset(lab.lab.endpoints()["smpp"], "15550201")          # and the lab goes on serving
    peter.close()


def test_an_over_long_smtp_line_is_answered_and_costs_only_its_start(lab_factory):
    """Finding 5: a 20 MiB line was kept whole (in the trace's raw bytes and again in its fields)."""
    lab = lab_factory(devices="none")
    with socket.create_connection(address(lab.lab.endpoints()["smtp"]), timeout=10) as client:
        assert client.recv(4096).startswith(b"220 ")
        client.sendall(b"MAIL FROM:<" + b"z" * 300_000 + b">\r\nQUIT\r\n")
        answer = closed_by_peer(client)
    assert answer.startswith(b"500 ") and b"221 " in answer     # refused, and the session went on
    [event] = [e for e in lab.lab.trace.events() if e.protocol == "SMTP" and e.summary.startswith("MAIL")]
    assert len(event.raw) <= 8192 and len(event.fields["argument"]) <= 1000
    assert "line: the first 8192 bytes kept" in event.note
