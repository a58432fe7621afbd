"""multipart/mixed, resource lists and the RFC 5366 INVITE body, from bytes."""
import pytest

from iwlab.backends.protocols.multipart import MultipartError, Part, build_multipart, parse_multipart
from iwlab.backends.protocols.recipient_list import RecipientListError, build_body, parse_body
from iwlab.backends.protocols.resource_lists import (
    MAX_ENTRIES,
    Entry,
    ResourceListError,
    build_resource_list,
    parse_resource_list,
)

SDP = (b"v=0\r\no=mary 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=message 7394 TCP/MSRP *\r\na=accept-types:message/cpim text/plain\r\n"
       b"a=path:msrp://127.0.0.1:7394/abc;tcp\r\n")
# RFC 5366 section 4, the example's list (two entries, copy control), as a client writes it.
LIST = b"""<?xml version="1.0" encoding="UTF-8"?>
<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"
    xmlns:cp="urn:ietf:params:xml:ns:copycontrol">
  <list>
    <entry uri="tel:+15550201" cp:copyControl="to"><display-name>Peter</display-name></entry>
    <entry uri="sip:john@cpm-b.lab" cp:copyControl="cc"/>
    <entry uri="TEL:+15550201"/>
  </list>
</resource-lists>
"""
BODY = (b"--boundary1\r\nContent-Type: application/sdp\r\n\r\n" + SDP + b"\r\n"
        b"--boundary1\r\nContent-Type: application/resource-lists+xml\r\n"
        b"Content-Disposition: recipient-list\r\n\r\n" + LIST + b"\r\n--boundary1--\r\n")
CT = "multipart/mixed;boundary=boundary1"


def test_an_rfc_5366_invite_body_gives_its_sdp_and_its_recipients():
    parsed = parse_body(CT, BODY)
    assert parsed.sdp == SDP
    assert parsed.recipients == [Entry("tel:+15550201", "Peter", "to"), Entry("sip:john@cpm-b.lab", "", "cc")]


def test_built_bodies_parse_back():
    recipients = [Entry("tel:+15550201", "Peter"), Entry("sip:john@cpm-b.lab", "John Ü. Smith", "bcc")]
    content_type, body = build_body(SDP, recipients)
    assert parse_body(content_type, body).recipients == recipients
    assert parse_body(content_type, body).sdp == SDP


def test_part_bodies_keep_their_bytes_and_headers():
    parts = [Part("text/plain;charset=utf-8", "h\u00e9 \r\n\r\n--x".encode(), headers=(("Content-ID", "<a@b>"),)),
             Part("application/octet-stream", bytes(range(256)), "attachment;handling=optional")]
    content_type, body = build_multipart(parts)
    assert parse_multipart(content_type, body) == parts


@pytest.mark.parametrize("content_type, body, status", [
    ("application/sdp", SDP, 415),                                        # no list at all
    ("multipart/mixed", BODY, 400),                                       # no boundary parameter
    (CT, BODY[:-15], 400),                                                # the close boundary is missing
    (CT, b"no boundary here", 400),
    (CT, b"", 400),
    (CT, BODY.replace(b"Disposition: recipient-list", b"Disposition: session"), 400),   # no list part
    (CT, BODY[BODY.index(b"--boundary1", 5):], 400),                      # no SDP
    (CT, BODY.replace(b"application/sdp", b"text/plain"), 415),          # what is required must be understood
    (CT, BODY.replace(b"application/resource-lists+xml", b"text/plain"), 415),  # a list of the wrong type
    (CT, BODY.replace(b"application/sdp", b"image/png"), 415),           # handling=required by default
    (CT, BODY.replace(b"Content-Type: application/sdp",
                      b"Content-Type: multipart/mixed;boundary=in"), 415),     # nested multipart
    (CT, BODY.replace(b"Content-Type: application/sdp",
                      b"Content-Type: application/sdp\r\nContent-Transfer-Encoding: base64"), 415),
    (CT, BODY + b" " * 70000, 413),
    (CT, BODY.replace(b'uri="tel:+15550201" ', b'uri="http://x" '), 400),
    (CT, BODY.replace(b"<list>", b"<list><entry-ref ref='x'/>"), 400),
    (CT, BODY.replace(b"</resource-lists>", b""), 400),                   # not well-formed
])
def test_unusable_bodies_are_refused_with_the_sip_answer(content_type, body, status):
    with pytest.raises(RecipientListError) as refused:
        parse_body(content_type, body)
    assert refused.value.status == status, refused.value.reason


def test_entity_declarations_are_refused_before_parsing():
    bomb = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
            b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list>'
            b'<entry uri="sip:x@y"><display-name>&b;</display-name></entry></list></resource-lists>')
    external = bomb.replace(b'<!ENTITY a "aaaaaaaaaa">', b'<!ENTITY a SYSTEM "file:///etc/passwd">')
    for data in (bomb, external):
        with pytest.raises(ResourceListError) as refused:
            parse_resource_list(data)
        assert refused.value.status == 400 and "document type" in refused.value.reason


def test_other_encodings_and_roots_are_refused():
    utf16 = LIST.replace(b"UTF-8", b"UTF-16")
    assert _status(utf16) == 415
    assert _status(LIST.decode().encode("utf-16")) == 415
    assert _status(LIST.replace(b"resource-lists xmlns=", b"other xmlns=").replace(b"</resource-lists>",
                                                                                  b"</other>")) == 400
    assert _status(LIST.replace(b'cp:copyControl="cc"', b'cp:copyControl="all"')) == 400
    assert _status(b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list/></resource-lists>') == 400


def test_a_list_longer_than_the_policy_is_forbidden():
    many = build_resource_list([Entry(f"tel:+1555{i:07d}") for i in range(MAX_ENTRIES + 1)])
    assert _status(many) == 403
    assert len(parse_resource_list(build_resource_list([Entry(f"tel:+1{i}") for i in range(MAX_ENTRIES)]))) \
        == MAX_ENTRIES


def test_a_body_that_is_too_large_is_refused():
    with pytest.raises(MultipartError) as refused:
        parse_multipart(CT, b"x" * 70000)
    assert refused.value.status == 413
    assert _status(b" " * 40000 + LIST) == 413


def _status(data: bytes) -> int:
    with pytest.raises(ResourceListError) as refused:
        parse_resource_list(data)
    return refused.value.status
