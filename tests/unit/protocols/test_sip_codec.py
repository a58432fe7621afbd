"""Byte-level tests of the sans-I/O SIP codec (backends/sip.py)."""
from __future__ import annotations

import pytest

from iwlab.backends.protocols.sip import (
    Headers,
    NameAddr,
    SipParseError,
    SipRequest,
    SipResponse,
    SipStreamParser,
    make_response,
    max_forwards,
    new_branch,
    new_call_id,
    new_tag,
    parse_cseq,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    validate_request,
)

REGISTER = (
    b"REGISTER sip:cpm-a.lab SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:50600;branch=z9hG4bK776asdhds\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@cpm-a.lab>;tag=1928301774\r\n'
    b"To: <sip:alice@cpm-a.lab>\r\n"
    b"Call-ID: a84b4c76e66710@cpm-a.lab\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Contact: <sip:alice@127.0.0.1:50600;transport=tcp>\r\n"
    b"Expires: 3600\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

CPIM = (
    "From: <sip:alice@cpm-a.lab>\r\n"
    "To: <sip:bob@cpm-b.lab>\r\n"
    "NS: imdn <urn:ietf:params:imdn>\r\n"
    "imdn.Message-ID: 34jk324j\r\n"
    "DateTime: 2024-05-01T12:00:00.000Z\r\n"
    "imdn.Disposition-Notification: positive-delivery, display\r\n"
    "\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Grüße — 你好 ✓"
).encode("utf-8")

SDP = (b"v=0\r\no=bob 2890844527 2890844527 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=message 7394 TCP/MSRP *\r\na=accept-types:message/cpim\r\na=path:msrp://127.0.0.1:7394/abc;tcp\r\n")


def message_request(body: bytes = CPIM) -> SipRequest:
    headers = Headers([
        ("Via", "SIP/2.0/TCP 127.0.0.1:50600;branch=z9hG4bKnashds8"),
        ("Max-Forwards", "70"),
        ("From", '"Alice" <sip:alice@cpm-a.lab>;tag=49583'),
        ("To", "<sip:bob@cpm-b.lab>"),
        ("Call-ID", "asd88asd77a@cpm-a.lab"),
        ("CSeq", "7 MESSAGE"),
        ("P-Preferred-Service", "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg"),
        ("Conversation-ID", "f81d4fae-7dec"),
        ("Contribution-ID", "abcdef-1234"),
        ("Content-Type", "message/cpim"),
    ])
    return SipRequest("MESSAGE", "sip:bob@cpm-b.lab", headers, body)


def feed_all(parser: SipStreamParser, data: bytes, step: int = 1) -> list:
    events = []
    for i in range(0, len(data), step):
        events += parser.feed(data[i:i + step])
    return events


# -- round trips -------------------------------------------------------------------


def test_register_round_trip_is_byte_exact() -> None:
    request = parse_message(REGISTER)
    assert (request.method, request.uri, request.version, request.body) == ("REGISTER", "sip:cpm-a.lab", "SIP/2.0", b"")
    assert request.to_bytes() == REGISTER
    built = SipRequest("REGISTER", "sip:cpm-a.lab", Headers(request.headers.items()))
    assert built.to_bytes() == REGISTER


def test_message_with_cpim_body_round_trip() -> None:
    request = message_request()
    wire = request.to_bytes()
    assert f"Content-Length: {len(CPIM)}\r\n\r\n".encode() in wire   # octets, not characters
    assert wire.endswith(CPIM)
    parsed = parse_message(wire)
    assert parsed.body == CPIM and parsed.body.decode("utf-8").endswith("Grüße — 你好 ✓")
    assert parsed.headers.items()[:-1] == request.headers.items()
    assert parsed.headers.get("Content-Length") == str(len(CPIM))
    assert [name for name, _ in parsed.headers.items()][6:9] == [
        "P-Preferred-Service", "Conversation-ID", "Contribution-ID"]


def test_invite_with_sdp_round_trip() -> None:
    headers = Headers(message_request().headers.items())
    headers.set("CSeq", "1 INVITE")
    headers.set("Content-Type", "application/sdp")
    headers.add("Contact", "<sip:alice@127.0.0.1:50600;transport=tcp>")
    invite = SipRequest("INVITE", "sip:bob@cpm-b.lab", headers, SDP)
    parsed = parse_message(invite.to_bytes())
    assert parsed == SipRequest("INVITE", "sip:bob@cpm-b.lab", parsed.headers, SDP)
    assert parsed.headers.get("CSeq") == "1 INVITE"
    assert [n for n, _ in parsed.headers.items()].index("CSeq") == 5   # set() keeps the position
    assert parse_message(parsed.to_bytes()) == parsed


def test_202_response_round_trip() -> None:
    response = make_response(message_request(), 202, to_tag="9fxced76sl")
    wire = response.to_bytes()
    assert wire.startswith(b"SIP/2.0 202 Accepted\r\nVia: SIP/2.0/TCP 127.0.0.1:50600;branch=z9hG4bKnashds8\r\n")
    assert wire.endswith(b"Content-Length: 0\r\n\r\n")
    parsed = parse_message(wire)
    assert isinstance(parsed, SipResponse)
    assert (parsed.status, parsed.reason) == (202, "Accepted")
    assert parsed.headers.get("To") == "<sip:bob@cpm-b.lab>;tag=9fxced76sl"
    assert parse_message(parsed.to_bytes()) == parsed


def test_content_length_is_always_rewritten() -> None:
    headers = Headers([("Content-Length", "999"), ("CSeq", "1 OPTIONS"), ("l", "3")])
    wire = SipRequest("OPTIONS", "sip:x@y", headers, b"hello").to_bytes()
    assert wire == b"OPTIONS sip:x@y SIP/2.0\r\nContent-Length: 5\r\nCSeq: 1 OPTIONS\r\n\r\nhello"
    assert b"\n" not in wire.replace(b"\r\n", b"")


# -- header syntax -------------------------------------------------------------------


def test_folded_header_lines() -> None:
    raw = REGISTER.replace(b"Expires: 3600\r\n", b"Subject: first\r\n  second\r\n\tthird\r\nExpires:\r\n 3600\r\n")
    request = parse_message(raw)
    assert request.headers.get("Subject") == "first second third"
    assert request.headers.get("Expires") == "3600"


def test_compact_forms_are_expanded() -> None:
    raw = (b"MESSAGE sip:bob@cpm-b.lab SIP/2.0\r\nv: SIP/2.0/TCP h;branch=z9hG4bK1\r\n"
           b"f: <sip:a@cpm-a.lab>;tag=1\r\nt: <sip:bob@cpm-b.lab>\r\ni: cid@h\r\nCSeq: 1 MESSAGE\r\n"
           b"m: <sip:a@h>\r\nk: timer\r\ns: hi\r\ne: gzip\r\nc: text/plain\r\nl: 2\r\n\r\nhi")
    request = parse_message(raw)
    assert [n for n, _ in request.headers.items()] == [
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Supported", "Subject", "Content-Encoding",
        "Content-Type", "Content-Length"]
    assert request.headers.get("i") == request.headers.get("Call-ID") == "cid@h"
    assert validate_request(request, supported=["timer"]) is None


def test_names_are_case_insensitive() -> None:
    request = parse_message(REGISTER.replace(b"Call-ID", b"cALL-iD").replace(b"CSeq", b"CSEQ"))
    assert request.headers.get("call-id") == "a84b4c76e66710@cpm-a.lab"
    assert "CALL-ID" in request.headers and "i" in request.headers and "Route" not in request.headers
    assert ("Call-ID", "a84b4c76e66710@cpm-a.lab") in request.headers.items()
    headers = Headers([("conversation-id", "1"), ("contribution-id", "2"), ("inreplyto-contribution-id", "3"),
                       ("p-preferred-service", "4"), ("www-authenticate", "5"), ("X-Custom-thing", "6")])
    assert [n for n, _ in headers.items()] == ["Conversation-ID", "Contribution-ID", "InReplyTo-Contribution-ID",
                                               "P-Preferred-Service", "WWW-Authenticate", "X-Custom-thing"]


def test_multiple_via_in_one_header_and_across_headers() -> None:
    raw = REGISTER.replace(
        b"Via: SIP/2.0/TCP 127.0.0.1:50600;branch=z9hG4bK776asdhds\r\n",
        b"Via: SIP/2.0/TCP p1.lab;branch=z9hG4bKa, SIP/2.0/TCP p2.lab;branch=z9hG4bKb\r\n"
        b"Supported: timer\r\nv: SIP/2.0/TCP p3.lab;branch=z9hG4bKc;received=10.0.0.3;rport=5070\r\n")
    request = parse_message(raw)
    vias = request.headers.get_all("Via")
    assert [parse_via(v).host for v in vias] == ["p1.lab", "p2.lab", "p3.lab"]
    assert request.headers.get("Via") == "SIP/2.0/TCP p1.lab;branch=z9hG4bKa"   # the top one
    request.headers.prepend("Via", "SIP/2.0/TCP me.lab;branch=z9hG4bKme")
    assert request.headers.items()[0] == ("Via", "SIP/2.0/TCP me.lab;branch=z9hG4bKme")
    assert parse_via(request.headers.get_all("Via")[3]).params == {
        "branch": "z9hG4bKc", "received": "10.0.0.3", "rport": "5070"}


def test_quoted_display_names_with_commas() -> None:
    headers = Headers([("Contact", '"Doe, John" <sip:john@h1>;q=0.5, <sip:john@h2>'),
                       ("Contact", '"A \\"quoted\\" <name>, too" <sip:x@h3>')])
    contacts = [parse_name_addr(c) for c in headers.get_all("Contact")]
    assert [(c.display, c.uri) for c in contacts] == [
        ("Doe, John", "sip:john@h1"), (None, "sip:john@h2"), ('A "quoted" <name>, too', "sip:x@h3")]
    assert contacts[0].params == {"q": "0.5"}
    # From/To are never split, commas and all.
    headers.add("From", '"Bell, Alexander" <sip:a.g.bell@example.com>;tag=433423')
    assert parse_name_addr(headers.get("From")).display == "Bell, Alexander"
    assert Headers([("WWW-Authenticate", 'Digest realm="a", nonce="b"')]).get_all("WWW-Authenticate") == [
        'Digest realm="a", nonce="b"']


def test_utf8_display_names_and_bodies() -> None:
    request = message_request("Zoë says 你好".encode("utf-8"))
    request.headers.set("From", '"Zoë 李" <sip:zoe@cpm-a.lab>;tag=7')
    parsed = parse_message(request.to_bytes())
    assert parse_name_addr(parsed.headers.get("From")).display == "Zoë 李"
    assert parsed.body == "Zoë says 你好".encode("utf-8")
    assert '"Zoë 李"'.encode("utf-8") in parsed.to_bytes()


def test_non_utf8_octets_survive_a_round_trip() -> None:
    raw = REGISTER.replace(b"Expires: 3600", b"X-Latin1: caf\xe9")
    assert parse_message(raw).to_bytes() == raw


def test_bare_lf_line_ends_are_tolerated() -> None:
    request = parse_message(REGISTER.replace(b"\r\n", b"\n"))
    assert request.headers.get("CSeq") == "1 REGISTER" and validate_request(request) is None


def test_header_api() -> None:
    headers = Headers([("Route", "<sip:a>"), ("Via", "v1"), ("Route", "<sip:b>")])
    headers.set("route", "<sip:c>")
    assert headers.items() == [("Route", "<sip:c>"), ("Via", "v1")]
    headers.prepend("Record-Route", "<sip:rr>")   # absent: goes on top
    assert headers.items()[0] == ("Record-Route", "<sip:rr>")
    clone = headers.copy()
    clone.remove("VIA")
    assert "Via" in headers and "Via" not in clone and len(clone) == 2
    assert headers.get("Expires") is None and headers.get("Expires", "60") == "60"
    assert headers.get_all("Expires") == []
    with pytest.raises(ValueError):
        headers.add("Subject", "hi\r\nVia: injected")
    with pytest.raises(ValueError):
        headers.add("Bad Name", "x")


# -- stream framing ------------------------------------------------------------------


def test_framing_byte_by_byte() -> None:
    wire = message_request().to_bytes()
    parser = SipStreamParser()
    for i, byte in enumerate(wire):
        events = parser.feed(bytes([byte]))
        assert events == [] or i == len(wire) - 1
    assert len(events) == 1 and events[0].body == CPIM and events[0].method == "MESSAGE"


def test_two_messages_in_one_chunk_and_a_split_third() -> None:
    one, two = REGISTER, message_request().to_bytes()
    parser = SipStreamParser()
    events = parser.feed(one + two + two[:40])
    assert [e.method for e in events] == ["REGISTER", "MESSAGE"]
    events = parser.feed(two[40:])
    assert [e.method for e in events] == ["MESSAGE"]


def test_crlf_keepalives_are_skipped_and_counted() -> None:
    parser = SipStreamParser()
    assert parser.feed(b"\r\n\r\n") == [] and parser.pings == 1
    events = parser.feed(b"\r\n" + REGISTER[:10])
    events += parser.feed(REGISTER[10:] + b"\r\n\r\n\r\n")
    assert [e.method for e in events] == ["REGISTER"]
    assert parser.pings == 2 and not parser.broken
    assert parser.feed_eof() == []


def test_body_larger_than_limit_is_skipped() -> None:
    big = message_request(b"x" * 100).to_bytes()
    parser = SipStreamParser(max_body_size=50)
    events = feed_all(parser, big + REGISTER, step=7)
    assert isinstance(events[0], SipParseError) and events[0].status == 413
    assert events[0].partial.headers.get("Call-ID") == "asd88asd77a@cpm-a.lab"
    assert [e.method for e in events[1:]] == ["REGISTER"] and not parser.broken
    with pytest.raises(SipParseError) as info:
        parse_message(big, max_body_size=50)
    assert info.value.status == 413


def test_header_block_larger_than_limit() -> None:
    parser = SipStreamParser(max_header_size=1024)
    events = parser.feed(b"MESSAGE sip:x@y SIP/2.0\r\n" + b"X-Pad: " + b"a" * 2000)
    assert [e.status for e in events] == [513] and parser.broken
    assert parser.feed(REGISTER) == []
    with pytest.raises(SipParseError) as info:
        parse_message(REGISTER, max_header_size=100)
    assert info.value.status == 513


def test_missing_content_length_breaks_the_stream() -> None:
    parser = SipStreamParser()
    events = parser.feed(REGISTER.replace(b"Content-Length: 0\r\n", b"") + REGISTER)
    assert len(events) == 1 and events[0].status == 400 and parser.broken
    assert events[0].partial.method == "REGISTER"
    assert parser.feed(REGISTER) == [] and parser.feed_eof() == []


@pytest.mark.parametrize("value", [b"-1", b"abc", b"1e3", b"", b"0x10"])
def test_unusable_content_length_breaks_the_stream(value: bytes) -> None:
    parser = SipStreamParser()
    events = parser.feed(REGISTER.replace(b"Content-Length: 0", b"Content-Length: " + value))
    assert [e.status for e in events] == [400] and parser.broken


def test_bad_headers_with_good_content_length_do_not_break_the_stream() -> None:
    bad = REGISTER.replace(b"CSeq: 1 REGISTER", b"CSeq: one REGISTER").replace(b"Expires: 3600\r\n",
                                                                              b"no colon here\r\n")
    parser = SipStreamParser()
    events = feed_all(parser, bad + REGISTER, step=5)
    assert isinstance(events[0], SipParseError) and events[0].status == 400
    assert events[0].reason == "malformed header line" and events[0].partial.headers.get("Call-ID")
    assert events[1].method == "REGISTER" and not parser.broken


def test_eof_mid_body_and_mid_header() -> None:
    wire = message_request().to_bytes()
    parser = SipStreamParser()
    assert parser.feed(wire[:-5]) == []
    errors = parser.feed_eof()
    assert [e.status for e in errors] == [400]
    assert errors[0].partial.headers.get("CSeq") == "7 MESSAGE" and errors[0].partial.body == CPIM[:-5]
    parser = SipStreamParser()
    assert parser.feed(REGISTER[:100]) == []
    errors = parser.feed_eof()
    assert [e.status for e in errors] == [400] and errors[0].partial.method == "REGISTER"
    parser = SipStreamParser()
    parser.feed(REGISTER + b"\r\n")
    assert parser.feed_eof() == []


# -- parse errors ------------------------------------------------------------------


@pytest.mark.parametrize("start_line, status", [
    (b"REGISTER sip:cpm-a.lab SIP/3.0", 505),
    (b"REGISTER  sip:cpm-a.lab SIP/2.0", 400),
    (b"REGISTER sip:cpm-a.lab", 400),
    (b"REGISTER <sip:cpm-a.lab> SIP/2.0", 400),
    (b"REG ISTER sip:cpm-a.lab SIP/2.0", 400),
])
def test_bad_request_lines_keep_a_partial(start_line: bytes, status: int) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(start_line + REGISTER[REGISTER.index(b"\r\n"):])
    assert info.value.status == status
    partial = info.value.partial
    assert isinstance(partial, SipRequest) and partial.headers.get("Call-ID") == "a84b4c76e66710@cpm-a.lab"
    response = make_response(partial, status)
    assert response.headers.get("CSeq") == "1 REGISTER"


def test_bad_status_line_partial_is_a_response() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(b"SIP/2.0 20 OK\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(info.value.partial, SipResponse) and info.value.partial.status == 0


def test_bare_cr_inside_a_header_is_rejected() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(REGISTER.replace(b"Expires: 3600", b"Expires: 36\r00"))
    assert info.value.status == 400


def test_parse_error_reason_is_one_ascii_line() -> None:
    error = SipParseError(400, "bad \u00e9\r\nVia: x")
    assert error.reason == "bad ???Via: x" and str(error) == "400 bad ???Via: x"


def test_content_length_larger_than_datagram() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(REGISTER.replace(b"Content-Length: 0", b"Content-Length: 10") + b"short")
    assert info.value.status == 400 and info.value.partial.body == b"short"


# -- make_response -----------------------------------------------------------------


def test_make_response_copies_headers_and_adds_to_tag() -> None:
    request = message_request()
    request.headers.add("Via", "SIP/2.0/TCP p2.lab;branch=z9hG4bK2, SIP/2.0/TCP p3.lab;branch=z9hG4bK3")
    response = make_response(request, 200, to_tag="xyz")
    assert response.reason == "OK"
    assert response.headers.items() == [
        ("Via", "SIP/2.0/TCP 127.0.0.1:50600;branch=z9hG4bKnashds8"),
        ("Via", "SIP/2.0/TCP p2.lab;branch=z9hG4bK2, SIP/2.0/TCP p3.lab;branch=z9hG4bK3"),
        ("From", '"Alice" <sip:alice@cpm-a.lab>;tag=49583'),
        ("To", "<sip:bob@cpm-b.lab>;tag=xyz"),
        ("Call-ID", "asd88asd77a@cpm-a.lab"),
        ("CSeq", "7 MESSAGE"),
    ]
    request.headers.set("To", "<sip:bob@cpm-b.lab>;tag=existing")
    assert make_response(request, 486, to_tag="new").headers.get("To") == "<sip:bob@cpm-b.lab>;tag=existing"
    assert make_response(request, 100).headers.get("To") == "<sip:bob@cpm-b.lab>;tag=existing"


def test_make_response_reasons_and_body() -> None:
    request = message_request()
    expected = {100: "Trying", 180: "Ringing", 202: "Accepted", 400: "Bad Request", 404: "Not Found",
                405: "Method Not Allowed", 408: "Request Timeout", 413: "Request Entity Too Large",
                415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
                480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 483: "Too Many Hops",
                486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
                500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable",
                505: "Version Not Supported", 513: "Message Too Large", 603: "Decline"}
    for status, reason in expected.items():
        assert make_response(request, status).reason == reason
    assert make_response(request, 499).reason == "Client Error"
    assert make_response(request, 404, "No such user").reason == "No such user"
    response = make_response(request, 200, body=SDP, content_type="application/sdp")
    parsed = parse_message(response.to_bytes())
    assert parsed.body == SDP and parsed.headers.get("Content-Type") == "application/sdp"
    assert parsed.headers.get("Content-Length") == str(len(SDP))


# -- URIs and other values -----------------------------------------------------------


def test_sip_uri_parsing() -> None:
    uri = parse_uri("sips:Alice%20B@Example.COM:5061;transport=tcp;lr;maddr=10.0.0.1"
                    "?Subject=hi%20there&Priority=urgent")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == ("sips", "Alice B", None, "example.com", 5061)
    assert uri.params == {"transport": "tcp", "lr": None, "maddr": "10.0.0.1"}
    assert uri.headers == {"Subject": "hi there", "Priority": "urgent"}
    uri = parse_uri("sip:cpm-a.lab")
    assert (uri.user, uri.host, uri.port) == (None, "cpm-a.lab", None)
    uri = parse_uri("sip:bob:secret@[2001:db8::1]:5070")
    assert (uri.user, uri.password, uri.host, uri.port) == ("bob", "secret", "[2001:db8::1]", 5070)
    uri = parse_uri("sip:+15550201@cpm-a.lab;user=phone")
    assert (uri.user, uri.params) == ("+15550201", {"user": "phone"})


def test_tel_and_other_uris() -> None:
    uri = parse_uri("tel:+15550201")
    assert (uri.scheme, uri.user, uri.host, uri.params) == ("tel", "+15550201", "", {})
    uri = parse_uri("TEL:5550201;phone-context=+1555")
    assert (uri.scheme, uri.user, uri.params) == ("tel", "5550201", {"phone-context": "+1555"})
    uri = parse_uri("mailto:bob@mail.lab")
    assert (uri.scheme, uri.opaque) == ("mailto", "bob@mail.lab")
    for bad in ["", "sip:", "sip:user@", "sip:a b@h", "<sip:x@y>", "sip:x@y:99999", "sip:x@h;;lr", "nocolon"]:
        with pytest.raises(SipParseError):
            parse_uri(bad)


def test_name_addr_forms() -> None:
    assert parse_name_addr("<sip:a@b>") == NameAddr(None, "sip:a@b", {})
    assert parse_name_addr("sip:a@b;tag=1").tag() == "1"
    assert parse_name_addr("Bob Smith <sip:b@h>;expires=60") == NameAddr("Bob Smith", "sip:b@h", {"expires": "60"})
    assert parse_name_addr("tel:+15550201;tag=9") == NameAddr(None, "tel:+15550201", {"tag": "9"})
    assert str(NameAddr('A "B"', "sip:a@b", {"tag": "1", "lr": None})) == '"A \\"B\\"" <sip:a@b>;tag=1;lr'
    for bad in ['"unterminated <sip:a@b>', "Bell, Alexander <sip:a@b>", "< sip:a@b >", "<sip:a@b",
                "sip:a@b?x=y", "<sip:a@b>;;", "<sip:a@b>;tag=a b", "<sip:a@b> junk"]:
        with pytest.raises(SipParseError):
            parse_name_addr(bad)


def test_via_and_cseq() -> None:
    via = parse_via("SIP / 2.0 / tcp [::1] : 5060 ; branch = z9hG4bKx ; rport")
    assert (via.protocol, via.transport, via.host, via.port) == ("SIP/2.0", "TCP", "[::1]", 5060)
    assert via.params == {"branch": "z9hG4bKx", "rport": None} and via.branch == "z9hG4bKx"
    assert parse_via("SIP/2.0/UDP h").params == {} and parse_via("SIP/2.0/UDP h").branch is None
    for bad in ["SIP/2.0 h", "SIP/2.0/UDP", "SIP/2.0/UDP h;", "SIP/2.0/UDP h:70000", "SIP/2.0/UDP h x"]:
        with pytest.raises(SipParseError):
            parse_via(bad)
    assert parse_cseq("  0042   MESSAGE ") == (42, "MESSAGE")
    assert parse_cseq("4294967295 ACK") == (4294967295, "ACK")
    for bad in ["4294967296 ACK", "1", "x INVITE", "1 IN VITE", "9" * 5000 + " ACK"]:
        with pytest.raises(SipParseError):
            parse_cseq(bad)


def test_generators() -> None:
    branches = {new_branch() for _ in range(100)}
    assert len(branches) == 100 and all(b.startswith("z9hG4bK") and len(b) > 12 for b in branches)
    assert len({new_tag() for _ in range(100)}) == 100
    call_id = new_call_id("cpm-a.lab")
    assert call_id.endswith("@cpm-a.lab") and call_id != new_call_id("cpm-a.lab")


# -- validate_request / max_forwards ---------------------------------------------------


def test_validate_request() -> None:
    ok = parse_message(REGISTER)
    assert validate_request(ok) is None

    def variant(**changes: str) -> SipRequest:
        request = SipRequest(ok.method, ok.uri, ok.headers.copy(), ok.body, ok.version)
        for name, value in changes.items():
            if name in ("method", "uri", "version", "body"):
                setattr(request, name, value.encode() if name == "body" else value)
            elif value == "":
                request.headers.remove(name.replace("_", "-"))
            else:
                request.headers.set(name.replace("_", "-"), value)
        return request

    assert validate_request(variant(version="SIP/3.0")) == (505, "Version Not Supported")
    assert validate_request(variant(Call_ID=""))[0] == 400
    assert validate_request(variant(Max_Forwards="")) is None   # RFC 2543 peers omit it
    assert validate_request(variant(method="OPTIONS"))[0] == 400   # CSeq says REGISTER
    assert validate_request(variant(body="xyz"))[0] == 400       # Content-Length: 0
    assert validate_request(variant(Content_Length="")) is None
    assert validate_request(variant(uri="tel:+15550201")) is None
    assert validate_request(variant(uri="http://cpm-a.lab/")) == (416, "Unsupported URI Scheme")
    assert validate_request(variant(uri="sip:cpm-a.lab?Route=x"))[0] == 400
    assert validate_request(variant(To="<tel:+15550201>"))[0] == 400   # a registrar needs a SIP AOR
    assert validate_request(variant(Date="Sat, 13 Nov 2010 23:29:00 GMT")) is None
    assert validate_request(variant(Date="13 Nov 2010 23:29:00 PST"))[0] == 400
    assert validate_request(variant(Via="SIP/2.0/TCP h;branch=z9hG4bK"))[0] == 400
    assert validate_request(variant(Require="100rel")) == (420, "Bad Extension")
    assert validate_request(variant(Require="100rel"), supported=["100rel"]) is None
    assert validate_request(variant(Proxy_Require="x")) is None
    assert validate_request(variant(Proxy_Require="x"), proxy=True)[0] == 420
    ack = variant(method="ACK", CSeq="1 ACK", Require="100rel")
    assert validate_request(ack) is None   # RFC 3261 8.2.2.3: not for ACK/CANCEL


def test_headers_found_sound_are_checked_again_once_changed() -> None:
    """The parser's check is remembered for validate_request, until a header changes."""
    request = parse_message(REGISTER)
    assert validate_request(request) is None
    for name, bad in [("From", "<sip:alice@cpm-a.lab"), ("Via", "SIP/2.0/TCP ;branch=z9hG4bKx"),
                      ("CSeq", "one REGISTER")]:
        changed = parse_message(REGISTER)
        assert validate_request(changed) is None
        changed.headers.set(name, bad)
        assert validate_request(changed)[0] == 400, name
    request.headers.add("Call-ID", "second@cpm-a.lab")
    assert validate_request(request) == (400, "more than one Call-ID header")


@pytest.mark.parametrize("value, expected", [("70", 70), ("0", 0), ("0068", 68), ("255", 255), ("256", None),
                                             ("-1", None), ("x", None), ("9" * 50, None), (None, None)])
def test_max_forwards(value: str | None, expected: int | None) -> None:
    request = parse_message(REGISTER)
    request.headers.remove("Max-Forwards")
    if value is not None:
        request.headers.add("Max-Forwards", value)
    assert max_forwards(request) == expected


def test_make_request_writes_a_user_agents_request():
    from iwlab.backends.protocols.sip import make_request, parse_message
    req = make_request("BYE", "sip:mary@127.0.0.1:5070", via=("127.0.0.1", 5064), from_="<tel:+15550201>;tag=a",
                       to="<sip:mary@cpm-a.lab>;tag=b", call_id="c1", cseq=7, routes=["<sip:127.0.0.1:5062;lr>"])
    parsed = parse_message(req.to_bytes())
    assert parsed.headers.get("Via").startswith("SIP/2.0/TCP 127.0.0.1:5064;branch=z9hG4bK")
    assert [n for n, _ in parsed.headers.items()] == ["Via", "Max-Forwards", "Route", "From", "To", "Call-ID",
                                                      "CSeq", "Content-Length"]
    assert parsed.headers.get("CSeq") == "7 BYE" and parsed.uri == "sip:mary@127.0.0.1:5070"


def test_the_answer_to_an_unparseable_request_parses_itself():
    """Found by the socket mutation run: a 400 that echoed a Call-ID with a space was as unreadable
    as the request. The answer keeps only what is well formed, so the client can read why."""
    from iwlab.backends.protocols.sip import SipResponse, answer_to_unparseable, parse_message
    data = (b"MESSAGE sip:peter@cpm-b.lab SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKx1\r\n"
            b"From: <sip:eve@evil.test>;tag=f1\r\nTo: <sip:peter@cpm-b.lab>\r\nCall-ID: %s{x} fuzz-1\r\n"
            b"CSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(SipParseError) as refused:
        parse_message(data)
    answer = answer_to_unparseable(refused.value)
    assert answer is not None and answer.status == 400 and answer.headers.get("Call-ID") is None
    again = parse_message(answer.to_bytes())
    assert isinstance(again, SipResponse) and again.headers.get("CSeq") == "1 MESSAGE"
    assert again.headers.get("Via") == "SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKx1"
