"""CPIM (RFC 3862) and IMDN (RFC 5438) codecs, bytes only."""
import pytest

from iwlab.backends.protocols.cpim import (
    CpimError,
    CpimMessage,
    Imdn,
    build_imdn_xml,
    imdn_message,
    parse_cpim,
    parse_imdn_xml,
    uri_of,
)

WIRE = (b"From: \"Mary\" <sip:mary@cpm-a.lab>\r\n"
        b"To: <tel:+15550201>\r\n"
        b"DateTime: 2026-11-24T09:00:00.000Z\r\n"
        b"NS: imdn <urn:ietf:params:imdn>\r\n"
        b"imdn.Message-ID: 34jk324j\r\n"
        b"imdn.Disposition-Notification: positive-delivery, display\r\n"
        b"\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 13\r\n"
        b"\r\n"
        b"Hi Peter \xf0\x9f\x91\x8b")


def test_parse_the_envelope_and_payload():
    msg = parse_cpim(WIRE)
    assert msg.sender == '"Mary" <sip:mary@cpm-a.lab>'
    assert uri_of(msg.sender) == "sip:mary@cpm-a.lab"
    assert msg.recipient == "<tel:+15550201>"
    assert msg.message_id == "34jk324j"
    assert msg.disposition == ("positive-delivery", "display")
    assert msg.text == "Hi Peter 👋"
    assert not msg.is_imdn


def test_round_trip_is_byte_exact():
    msg = parse_cpim(WIRE)
    assert msg.to_bytes() == WIRE


def test_other_namespace_prefix_is_honoured():
    wire = WIRE.replace(b"NS: imdn <", b"NS: x <").replace(b"imdn.Message-ID", b"x.Message-ID") \
        .replace(b"imdn.Disposition", b"x.Disposition")
    assert parse_cpim(wire).message_id == "34jk324j"


def test_payload_length_trims_trailing_bytes_and_rejects_short_bodies():
    assert parse_cpim(WIRE + b"\r\n").text == "Hi Peter 👋"
    with pytest.raises(CpimError, match="exceeds"):
        parse_cpim(WIRE.replace(b"Content-Length: 13", b"Content-Length: 99"))


@pytest.mark.parametrize("broken, reason", [
    (b"no blank line at all", "no blank line"),
    (b"From: <sip:a@b>\r\n\r\nContent-Type: text/plain\r\n", "no blank line after the MIME"),
    (b"To: <sip:a@b>\r\n\r\nContent-Type: text/plain\r\n\r\nx", "From and To"),
    (b"From <sip:a@b>\r\n\r\nContent-Type: t\r\n\r\nx", "bad CPIM header"),
])
def test_broken_envelopes_say_why(broken, reason):
    with pytest.raises(CpimError, match=reason):
        parse_cpim(broken)


def test_imdn_delivered_round_trip():
    imdn = Imdn("34jk324j", "delivery", "delivered", "2026-11-24T09:00:00.000Z", "tel:+15550201")
    xml = build_imdn_xml(imdn)
    assert b"<delivery-notification><status><delivered /></status></delivery-notification>" in xml
    assert parse_imdn_xml(xml) == imdn
    envelope = imdn_message(imdn, sender="<tel:+15550201>", recipient="<sip:mary@cpm-a.lab>")
    parsed = parse_cpim(envelope.to_bytes())
    assert parsed.is_imdn and parsed.disposition == ()
    assert ("Content-Disposition", "notification") in parsed.content_headers
    assert parse_imdn_xml(parsed.body).status == "delivered"


def test_imdn_from_rfc5438_example():
    xml = b"""<?xml version="1.0" encoding="UTF-8"?>
<imdn xmlns="urn:ietf:params:xml:ns:imdn">
  <message-id>34jk324j</message-id>
  <datetime>2008-04-04T12:16:49-05:00</datetime>
  <display-notification><status><displayed/></status></display-notification>
</imdn>"""
    imdn = parse_imdn_xml(xml)
    assert (imdn.message_id, imdn.kind, imdn.status) == ("34jk324j", "display", "displayed")


@pytest.mark.parametrize("xml", [b"<not xml", b'<imdn xmlns="urn:ietf:params:xml:ns:imdn"/>',
                                 b'<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>1</message-id></imdn>'])
def test_bad_imdn_bodies_raise(xml):
    with pytest.raises(CpimError):
        parse_imdn_xml(xml)


def test_new_messages_get_unique_ids():
    a = CpimMessage(sender="<sip:a@x>", recipient="<sip:b@x>", body=b"1")
    b = CpimMessage(sender="<sip:a@x>", recipient="<sip:b@x>", body=b"1")
    assert a.message_id != b.message_id


def test_a_plain_text_message_is_read_like_cpim_without_notifications():
    from iwlab.backends.protocols.cpim import message_content
    message = message_content("text/plain; charset=utf-8", "Grüße".encode(), sender="<sip:mary@cpm-a.lab>",
                              recipient="<tel:+15550201>")
    assert message.text == "Grüße" and message.disposition == () and not message.is_imdn
    assert message.sender == "<sip:mary@cpm-a.lab>"


def test_a_body_the_lab_cannot_carry_is_unsupported_content():
    import pytest

    from iwlab.backends.protocols.cpim import ACCEPTED_TYPES, UnsupportedContent, message_content
    with pytest.raises(UnsupportedContent):
        message_content("application/vnd.example", b"\x00", sender="<a>", recipient="<b>")
    assert ACCEPTED_TYPES[0] == "message/cpim"


def test_a_body_parsed_again_is_a_copy_of_its_own() -> None:
    # Every hop reads the same body (parsed once, remembered): one reader's change to what it
    # got must not reach the next reader.
    wire = CpimMessage(sender="<sip:mary@cpm-a.lab>", recipient="<tel:+15550201>", body=b"hi",
                       extra_headers=[("Subject", "one")]).to_bytes()
    first = parse_cpim(wire)
    first.extra_headers.append(("Subject", "two"))
    first.body = b"changed"
    again = parse_cpim(wire)
    assert again.extra_headers == [("Subject", "one")] and again.body == b"hi"


def test_a_bad_body_is_refused_every_time_it_comes() -> None:
    for _ in range(2):
        with pytest.raises(CpimError, match="CPIM From and To are required"):
            parse_cpim(b"NS: imdn <urn:ietf:params:imdn>\r\n\r\nContent-Type: text/plain\r\n\r\nhi")


def test_an_imdn_read_again_is_the_same_and_a_bad_one_refused_every_time() -> None:
    from iwlab.backends.protocols.cpim import Imdn, build_imdn_xml, parse_imdn_xml
    body = build_imdn_xml(Imdn("m1", "delivery", "delivered", "2026-12-02T10:00:00Z"))
    assert parse_imdn_xml(body) == parse_imdn_xml(body) == Imdn("m1", "delivery", "delivered",
                                                                "2026-12-02T10:00:00Z", None)
    for _ in range(2):
        with pytest.raises(CpimError, match="without <message-id>"):
            parse_imdn_xml(b'<imdn xmlns="urn:ietf:params:xml:ns:imdn"><delivery-notification/></imdn>')
