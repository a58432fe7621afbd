"""Properties of backends.protocols.sip: what the lab builds (make_request, make_response, SipRequest.to_bytes)
parses back to the same message, whole or fed to SipStreamParser in any chunking; arbitrary and mutated
octets give nothing but SipParseError (or error events), and the stream parser's buffer stays bounded."""
from hypothesis import given, settings
from hypothesis import strategies as st

from iwlab.backends.protocols.sip import (
    Headers,
    NameAddr,
    SipParseError,
    SipRequest,
    SipResponse,
    SipStreamParser,
    describe,
    make_request,
    make_response,
    parse_cseq,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    validate_request,
)
from tests.helpers.mutation import mutations

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
token = st.text(st.sampled_from(TOKEN_CHARS), min_size=1, max_size=12)
label = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789"), min_size=1, max_size=8)
host = st.one_of(st.lists(label, min_size=1, max_size=3).map(".".join),
                 st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
                 st.just("[2001:db8::1]"))
user = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789+-_.!~*'()&=$,"), min_size=1, max_size=12)
sip_uri = st.builds(lambda scheme, u, h, port, transport: f"{scheme}:{u + '@' if u else ''}{h}"
                    f"{f':{port}' if port else ''}{f';transport={transport}' if transport else ''}",
                    st.sampled_from(["sip", "sips"]), st.none() | user, host, st.none() | st.integers(1, 65535),
                    st.none() | st.sampled_from(["tcp", "udp", "tls"]))
tel_uri = st.integers(10**6, 10**12).map(lambda n: f"tel:+{n}")
uri = sip_uri | tel_uri
# Display names: anything on one line (quotes and backslashes are escaped by NameAddr).
display = st.none() | st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"), max_size=20)
name_addr = st.builds(NameAddr, display, uri, st.dictionaries(token.map(str.lower), st.none() | token, max_size=2))
# Header values as a peer may send them: one line, no lone surrogates, no surrounding blanks (they are LWS).
value = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"), max_size=40) \
    .map(lambda v: v.strip(" \t"))
extra_headers = st.lists(st.tuples(token.map(lambda t: "X-" + t), value), max_size=4)
body = st.binary(max_size=300)


@st.composite
def requests(draw):
    method = draw(token.map(str.upper))
    req = make_request(method, draw(uri), via=(draw(host), draw(st.integers(1, 65535))),
                       from_=str(draw(name_addr)), to=str(draw(name_addr)),
                       call_id=draw(st.builds(lambda a, b: f"{a}@{b}", token, host)),
                       cseq=draw(st.integers(0, 2**32 - 1)),
                       routes=[f"<{r};lr>" for r in draw(st.lists(sip_uri, max_size=2))])
    for name, v in draw(extra_headers):
        req.headers.add(name, v)
    req.body = draw(body)
    if req.body:
        req.headers.add("Content-Type", draw(st.sampled_from(["message/cpim", "text/plain", "application/sdp"])))
    return req


@st.composite
def responses(draw):
    req = draw(requests())
    resp = make_response(req, draw(st.integers(100, 699)), draw(st.none() | value),
                         to_tag=draw(st.none() | token), body=draw(body),
                         content_type=draw(st.none() | st.just("text/plain")))
    for name, v in draw(extra_headers):
        resp.headers.add(name, v)
    return resp


def same(parsed, built) -> None:
    assert type(parsed) is type(built)
    if isinstance(built, SipRequest):
        assert (parsed.method, parsed.uri, parsed.version) == (built.method, built.uri, built.version)
    else:
        assert (parsed.status, parsed.reason, parsed.version) == (built.status, built.reason, built.version)
    assert parsed.headers.items() == built.headers.items() + [("Content-Length", str(len(built.body)))]
    assert parsed.body == built.body


@settings(max_examples=35)
@given(message=requests() | responses())
def test_built_messages_parse_back(message):
    raw = message.to_bytes()
    parsed = parse_message(raw)
    same(parsed, message)
    assert parsed.to_bytes() == raw
    if isinstance(parsed, SipRequest):
        assert validate_request(parsed) is None
        assert parse_cseq(parsed.headers.get("CSeq")) == (int(message.headers.get("CSeq").split()[0]),
                                                           parsed.method)
    describe(parsed)


@settings(max_examples=40)
@given(na=name_addr)
def test_name_addr_round_trips(na):
    assert parse_name_addr(str(na)) == na


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@settings(max_examples=20)
@given(messages=st.lists(requests() | responses(), min_size=1, max_size=3),
       pings=st.lists(st.sampled_from([b"", b"\r\n\r\n", b"\r\n"]), min_size=4, max_size=4),
       cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_stream_parser_frames_any_chunking(messages, pings, cuts):
    stream = b"".join(ping + m.to_bytes() for ping, m in zip(pings, messages))
    parser, events = SipStreamParser(), []
    for piece in split(stream, cuts):
        events += parser.feed(piece)
    assert parser.feed_eof() == []
    assert len(events) == len(messages)
    for event, message in zip(events, messages):
        same(event, message)
    assert parser.pings == sum(p == b"\r\n\r\n" for p in pings[:len(messages)])


# -- hostile input -------------------------------------------------------------------------

def check_parse(raw: bytes) -> None:
    try:
        message = parse_message(raw)
    except SipParseError as exc:
        assert 400 <= exc.status <= 599
        if isinstance(exc.partial, SipRequest):   # a server answers even a broken request
            make_response(exc.partial, exc.status, exc.reason).to_bytes()
        return
    describe(message)
    if isinstance(message, SipRequest):
        validate_request(message)
        make_response(message, 200, to_tag="x").to_bytes()


SEEDS = [
    make_request("MESSAGE", "sip:bob@cpm-b.lab", via=("127.0.0.1", 5060), from_='"Al" <sip:al@a.lab>;tag=1',
                 to="<sip:bob@cpm-b.lab>", call_id="c1@a", cseq=1, routes=["<sip:p.lab;lr>"]),
    make_request("INVITE", "tel:+15550201", via=("[::1]", 5062), from_="<sip:al@a.lab>;tag=2",
                 to="sip:+15550201@b.lab;user=phone", call_id="c2", cseq=7),
]
SEEDS[0].headers.add("Content-Type", "message/cpim")
SEEDS[0].body = (b"From: <sip:al@a.lab>\r\nTo: <sip:bob@b.lab>\r\nNS: imdn <urn:ietf:params:imdn>\r\n"
                 b"imdn.Message-ID: 1\r\n\r\nContent-Type: text/plain\r\n\r\nHi")
SEEDS[1].headers.add("Contact", '<sip:al@127.0.0.1:5062;transport=tcp>;+g.3gpp.icsi-ref="urn%3Aurn-7"')
SEEDS[1].headers.add("Content-Type", "application/sdp")
SEEDS[1].body = b"v=0\r\nm=message 7394 TCP/MSRP *\r\n"
VALID = [m.to_bytes() for m in SEEDS] + [make_response(SEEDS[0], 486, to_tag="9").to_bytes()]


SPECIALS = [b"\r\n", b"\n", b"\r", b":", b";", b",", b'"', b"<", b">", b"\\",
    b" ", b"\t", b"\r\n ", b"\xff", b"\0", b"=", b"@", b"9" * 20]   # octets the grammar cares about


def mutated():
    return mutations(VALID, SPECIALS, max_rounds=5)


@settings(max_examples=80)
@given(st.binary(max_size=200))
def test_arbitrary_octets_raise_only_sip_parse_error(raw):
    check_parse(raw)


@settings(max_examples=100)
@given(mutated())
def test_mutated_messages_raise_only_sip_parse_error(raw):
    check_parse(raw)


@settings(max_examples=80)
@given(st.text(max_size=60) | mutated().map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_header_value_parsers_raise_only_sip_parse_error(text):
    for parse in (parse_name_addr, parse_uri, parse_via, parse_cseq):
        try:
            parse(text)
        except SipParseError:
            pass
    Headers([("X-Any", text.replace("\r", "").replace("\n", ""))]).get_all("X-Any")


MAX_HEADER, MAX_BODY = 300, 200


@settings(max_examples=50)
@given(chunks=st.lists(mutated() | st.binary(max_size=120) | st.just(b"\r\n\r\n"), max_size=6),
       cuts=st.lists(st.integers(0, 10_000), max_size=10))
def test_stream_parser_on_hostile_octets(chunks, cuts):
    parser = SipStreamParser(max_header_size=MAX_HEADER, max_body_size=MAX_BODY)
    events = []
    for piece in split(b"".join(chunks), cuts):
        got = parser.feed(piece)
        events += got
        assert len(parser._buf) <= max(MAX_HEADER, MAX_BODY), "the buffer grows without bound"
        if parser.broken:
            assert not parser._buf and parser.feed(VALID[0]) == []
    events += parser.feed_eof()
    for event in events:
        assert isinstance(event, (SipRequest, SipResponse, SipParseError))
        if isinstance(event, SipParseError):
            assert 400 <= event.status <= 599 and isinstance(event.raw, bytes)
            if isinstance(event.partial, SipRequest):
                make_response(event.partial, event.status).to_bytes()
        else:
            describe(event)


@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=30), uri)
def test_any_display_name_makes_a_from_that_parses_back(name, target):
    """Issue 15, finding 3: whatever a display name holds (quotes, backslashes, CR/LF an RFC 2047
    word decoded to), name_addr makes a valid From; control characters become spaces."""
    from iwlab.backends.protocols.sip import name_addr as make_name_addr
    value = make_name_addr(target, name, tag="t1")
    request = make_request("MESSAGE", "sip:mary@cpm-a.lab", via=("127.0.0.1", 5060), from_=value,
                           to="<sip:mary@cpm-a.lab>", call_id="c@x", cseq=1)
    parsed = parse_message(request.to_bytes())
    assert validate_request(parsed) is None
    got = parse_name_addr(parsed.headers.get("From"))
    expected = " ".join("".join(" " if ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in name).split())
    assert (got.display or "", got.uri, got.tag()) == (expected, target, "t1")


@given(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30), host)
def test_any_mail_local_part_makes_a_sip_uri_with_that_user(local, domain):
    from iwlab.backends.protocols.sip import sip_uri_for_address
    uri = sip_uri_for_address(f"{local}@{domain}")
    parsed = parse_uri(uri)
    assert (parsed.scheme, parsed.user, parsed.host) == ("sip", local, domain.lower())
    assert parse_name_addr(f"<{uri}>").uri == uri
