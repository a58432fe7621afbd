"""RFC 4475 torture messages through the codec: as datagrams and as a TCP stream."""
from __future__ import annotations

import itertools

import pytest

from iwlab.backends.protocols.sip import (
    SipParseError,
    SipRequest,
    SipResponse,
    SipStreamParser,
    make_response,
    max_forwards,
    parse_cseq,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    unsupported_options,
    validate_request,
)
from tests.helpers.rfc4475 import RFC4475_DIR, RFC4475_EXPECTATIONS, stream_expectations

pytestmark = pytest.mark.skipif(not RFC4475_DIR.is_dir(), reason=f"no RFC 4475 messages in {RFC4475_DIR}")

NAMES = sorted(RFC4475_EXPECTATIONS)
SENTINEL = (b"OPTIONS sip:cpm-a.lab SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKsentinel\r\n"
            b"Max-Forwards: 70\r\nTo: <sip:cpm-a.lab>\r\nFrom: <sip:probe@cpm-a.lab>;tag=1\r\n"
            b"Call-ID: sentinel@cpm-a.lab\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")


def load(name: str) -> bytes:
    return (RFC4475_DIR / name).read_bytes()


def outcome(event: SipRequest | SipResponse | SipParseError) -> tuple[str, str | int]:
    """Reduce a parser event to the table's vocabulary."""
    if isinstance(event, SipParseError):
        return "reject", event.status
    if isinstance(event, SipResponse):
        return "accept", event.status
    problem = validate_request(event)
    return ("reject", problem[0]) if problem else ("accept", event.method)


def datagram_outcome(data: bytes) -> tuple[str, str | int]:
    try:
        return outcome(parse_message(data))
    except SipParseError as exc:
        return outcome(exc)


def chunks(data: bytes, sizes: tuple[int, ...]) -> list[bytes]:
    out, pos = [], 0
    for size in itertools.cycle(sizes):
        if pos >= len(data):
            return out
        out.append(data[pos:pos + size])
        pos += size
    return out


def test_table_covers_every_file() -> None:
    on_disk = {p.name for p in RFC4475_DIR.glob("*.dat")}
    assert on_disk == set(RFC4475_EXPECTATIONS)
    assert len(on_disk) == 49


@pytest.mark.parametrize("name", NAMES)
def test_as_datagram(name: str) -> None:
    assert datagram_outcome(load(name)) == RFC4475_EXPECTATIONS[name]


@pytest.mark.parametrize("sizes", [(1,), (3, 7, 13, 61, 2)], ids=["bytewise", "odd"])
@pytest.mark.parametrize("name", NAMES)
def test_as_stream(name: str, sizes: tuple[int, ...]) -> None:
    expected = stream_expectations(name)
    last = expected[-1][0]
    want = [("reject", status) if kind in ("eof", "close") else (kind, status) for kind, status in expected]
    # After a message that never completes, whatever follows would be taken as part of it.
    data = load(name) if last == "eof" else load(name) + SENTINEL
    parser = SipStreamParser()
    events = []
    for piece in chunks(data, sizes):
        events += parser.feed(piece)
    got = [outcome(event) for event in events]
    if last == "eof":
        assert got == want[:-1]
        errors = parser.feed_eof()
        assert [outcome(e) for e in errors] == want[-1:]
        assert isinstance(errors[0].partial, SipRequest)
    elif last == "close":
        assert got == want
        assert parser.broken
        assert parser.feed(SENTINEL) == [] and parser.feed_eof() == []
    else:   # the connection stays usable: the sentinel comes out next
        assert got == want + [("accept", "OPTIONS")]
        assert events[-1].headers.get("Call-ID") == "sentinel@cpm-a.lab"
        assert not parser.broken
        assert parser.feed_eof() == []


@pytest.mark.parametrize("name", [n for n in NAMES if RFC4475_EXPECTATIONS[n][0] == "accept"])
def test_accepted_messages_reserialise_stably(name: str) -> None:
    message = parse_message(load(name))
    again = parse_message(message.to_bytes())
    assert again.to_bytes() == message.to_bytes()
    assert again.body == message.body


@pytest.mark.parametrize("name", [n for n in NAMES if RFC4475_EXPECTATIONS[n][0] == "reject"])
def test_rejected_requests_can_be_answered(name: str) -> None:
    """A server must be able to build its error response from what was received."""
    data = load(name)
    try:
        request = parse_message(data)
        status = validate_request(request)[0]
    except SipParseError as exc:
        request, status = exc.partial, exc.status
        assert exc.raw == data
    if isinstance(request, SipResponse):
        return  # responses are dropped, never answered
    response = make_response(request, status, to_tag="abc")
    # Copied as received, even where malformed (RFC 3261 8.2.6.2).
    assert [v for n, v in response.headers.items() if n == "Via"] == [
        v for n, v in request.headers.items() if n == "Via"]
    assert response.headers.get("Call-ID") == request.headers.get("Call-ID")
    assert response.to_bytes().startswith(f"SIP/2.0 {status} ".encode())


# -- what the valid ones contain ---------------------------------------------------


def test_wsinv_whitespace_and_folding() -> None:
    m = parse_message(load("wsinv.dat"))
    h = m.headers
    assert m.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    to = parse_name_addr(h.get("To"))
    assert (to.display, to.uri, to.tag()) == (None, "sip:vivekg@chair-dnrc.example.com", "1918181833n")
    frm = parse_name_addr(h.get("from"))
    assert (frm.display, frm.uri, frm.tag()) == ('J Rosenberg \\"', "sip:jdrosen@example.com", "98asjd8")
    assert max_forwards(m) == 68
    assert parse_cseq(h.get("CSeq")) == (9, "INVITE")
    vias = [parse_via(v) for v in h.get_all("Via")]
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert h.get("Subject") == ""
    assert h.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert h.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    contact = parse_name_addr(h.get("Contact"))
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert parse_name_addr(h.get("Route")).uri == "sip:services.example.com;lr;unknownwith=value;unknown-no-value"
    assert len(m.body) == 150 and m.body.startswith(b"v=0\r\n")


def test_intmeth_wide_range_of_characters() -> None:
    m = parse_message(load("intmeth.dat"))
    uri = parse_uri(m.uri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"
    to = parse_name_addr(m.headers.get("To"))
    assert to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    frm = parse_name_addr(m.headers.get("From"))
    assert frm.display == "token1~` token2'+_ token3*%!.-"
    assert frm.tag() == "_token~1'+`*%!-."
    assert frm.params["fromparam''~+*_!.-%"] == '"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"'
    assert m.headers.get("Call-ID") == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"


def test_esc01_escapes_decoded() -> None:
    m = parse_message(load("esc01.dat"))
    target = parse_uri(m.uri)
    assert (target.scheme, target.user, target.host) == ("sip", "sips:user@example.com", "example.net")
    assert parse_uri(parse_name_addr(m.headers.get("To")).uri).user == "user"
    assert parse_uri(parse_name_addr(m.headers.get("From")).uri).user == "I have spaces"
    contact = parse_uri(parse_name_addr(m.headers.get("Contact")).uri)
    assert contact.user == "caller"
    assert contact.params == {"lr": None, "name": "value%41"}


def test_escnull_and_esc02() -> None:
    m = parse_message(load("escnull.dat"))
    assert parse_uri(parse_name_addr(m.headers.get("To")).uri).user == "null-\x00-null"
    users = [parse_uri(parse_name_addr(c).uri).user for c in m.headers.get_all("Contact")]
    assert users == ["\x00", "\x00\x00"]
    m = parse_message(load("esc02.dat"))
    assert m.method == "RE%47IST%45R"
    assert [parse_name_addr(c).uri for c in m.headers.get_all("Contact")] == [
        "sip:alias1@host1.example.com", "sip:alias3@host3.example.com"]
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert parse_name_addr(m.headers.get("To")).display == "%Z%45"
    assert parse_via(m.headers.get("Via")).branch == "z9hG4bK209%fzsnel234"


def test_lwsdisp_longreq_semiuri_transports() -> None:
    assert parse_name_addr(parse_message(load("lwsdisp.dat")).headers.get("From")).display == "caller"
    m = parse_message(load("longreq.dat"))
    vias = m.headers.get_all("Via")
    assert len(vias) == 34 and parse_via(vias[0]).host == "sip33.example.com"
    assert parse_via(vias[-1]).received == "192.0.2.5"
    to = parse_name_addr(m.headers.get("To"))
    assert to.display.startswith("I have a user name of extremeextreme") and parse_uri(to.uri).port == 6000
    assert len(parse_name_addr(m.headers.get("From")).tag()) > 150
    m = parse_message(load("semiuri.dat"))
    target = parse_uri(m.uri)
    assert (target.user, target.host, target.params) == ("user;par=u@example.net", "example.com", {})
    assert m.headers.get_all("Accept") == ["application/sdp", "application/pkcs7-mime", "multipart/mixed",
                                           "multipart/signed", "message/sip", "message/sipfrag"]
    m = parse_message(load("transports.dat"))
    assert [parse_via(v).transport for v in m.headers.get_all("Via")] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_dblreq_datagram_discards_trailing_octets() -> None:
    m = parse_message(load("dblreq.dat"))
    assert m.method == "REGISTER" and m.body == b""
    assert m.headers.get("Call-ID") == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"


def test_mpart01_unreason_noreason_bcast() -> None:
    m = parse_message(load("mpart01.dat"))
    assert len(m.body) == 553 and m.body.endswith(b"--7a9cbec02ceef655--\r\n")
    assert m.headers.get("Content-Type") == "multipart/mixed;boundary=7a9cbec02ceef655"
    r = parse_message(load("unreason.dat"))
    assert r.reason.startswith("= 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e")
    r = parse_message(load("noreason.dat"))
    assert (r.status, r.reason) == (100, "")
    r = parse_message(load("bcast.dat"))
    assert parse_via(r.headers.get_all("Via")[1]).host == "255.255.255.255"


def test_contact_params_versus_uri_params() -> None:
    contact = parse_name_addr(parse_message(load("cparam01.dat")).headers.get("Contact"))
    assert (contact.uri, contact.params) == ("sip:+19725552222@gw1.example.net", {"unknownparam": None})
    contact = parse_name_addr(parse_message(load("cparam02.dat")).headers.get("Contact"))
    assert (contact.uri, contact.params) == ("sip:+19725552222@gw1.example.net;unknownparam", {})
    assert parse_uri(contact.uri).params == {"unknownparam": None}
    contact = parse_name_addr(parse_message(load("regescrt.dat")).headers.get("Contact"))
    assert parse_uri(contact.uri).headers == {"Route": "<sip:sip.example.com>"}


def test_application_layer_details() -> None:
    m = parse_message(load("unksm2.dat"))
    assert parse_uri(parse_name_addr(m.headers.get("To")).uri).scheme == "isbn"
    assert parse_name_addr(m.headers.get("Contact")).uri == "name:John_Smith"
    assert parse_uri(parse_message(load("novelsc.dat")).uri).scheme == "soap.beep"
    assert parse_uri(parse_message(load("unkscm.dat")).uri).opaque == "totallyopaquecontent"
    assert max_forwards(parse_message(load("zeromf.dat"))) == 0
    m = parse_message(load("bext01.dat"))
    assert unsupported_options(m) == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert unsupported_options(m, proxy=True)[2:] == ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
    assert validate_request(m, supported=["nothingsupportsthis", "NothingSupportsThisEither"]) is None
    assert validate_request(m, supported=["nothingSupportsThis", "nothingSupportsThisEither"], proxy=True) == (
        420, "Bad Extension")


def test_inv2543_rfc2543_syntax() -> None:
    m = parse_message(load("inv2543.dat"))
    assert "Content-Length" not in m.headers and len(m.body) == 105   # the rest of the datagram
    assert parse_via(m.headers.get("Via")).branch is None
    assert parse_name_addr(m.headers.get("From")).tag() is None
    assert max_forwards(m) is None


def test_scalar02_overlarge_values() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(load("scalar02.dat"))
    assert info.value.status == 400 and "CSeq" in info.value.reason
    assert max_forwards(info.value.partial) is None   # 300: treated as absent
