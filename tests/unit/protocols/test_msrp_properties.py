"""Properties of backends.protocols.msrp: chunk() -> to_bytes -> MsrpStreamParser (any chunking of the
stream) -> Reassembler (chunks in any order) gives back the body; arbitrary and mutated octets give only
MsrpParseError events, the parser's buffer stays bounded and it never stalls on a framable message."""
from hypothesis import given, settings
from hypothesis import strategies as st

from iwlab.backends.protocols.msrp import (
    MsrpParseError,
    MsrpRequest,
    MsrpResponse,
    MsrpStreamParser,
    Reassembler,
    bodiless_send,
    chunk,
    describe,
    error_response,
    parse_msrp_uri,
    report_for,
    response_for,
)
from iwlab.backends.protocols.sdp import msrp_path
from tests.helpers.mutation import mutations

label = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789"), min_size=1, max_size=8)
host = st.one_of(st.lists(label, min_size=1, max_size=3).map(".".join), st.just("127.0.0.1"), st.just("::1"))
session = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~+="),
                  min_size=1, max_size=16)
uri = st.builds(msrp_path, host, st.integers(1, 65535), session, tls=st.booleans())
paths = st.lists(uri, min_size=1, max_size=3)
ident = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789"), min_size=4, max_size=20)
# Bodies that look like framing: end-lines of other transactions, CRLFs, the MSRP start of a message.
tricky = st.sampled_from([b"\r\n", b"-------", b"-------abcd$\r\n", b"\r\n-------", b"$", b"+", b"#", b"MSRP ",
                          b"\r\n\r\n", b"\xff", "é€😀".encode()])
body = st.lists(st.binary(max_size=40) | tricky, max_size=12).map(b"".join)
header_value = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"), max_size=20) \
    .map(lambda v: v.strip())
extra = st.lists(st.tuples(st.sampled_from(["Success-Report", "Failure-Report", "X-Lab", "Content-Disposition"]),
                           header_value), max_size=2)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


def same(parsed, built) -> None:
    assert type(parsed) is type(built)
    if isinstance(built, MsrpResponse):
        assert (parsed.transaction_id, parsed.status, parsed.comment, parsed.to_path, parsed.from_path,
                parsed.headers) == (built.transaction_id, built.status, built.comment, built.to_path, built.from_path,
                                    built.headers)
    else:
        assert parsed == built


@settings(max_examples=50)
@given(to_path=paths, from_path=paths, message_id=ident, content_type=st.sampled_from(["message/cpim", "text/plain"]),
       data=body, max_chunk=st.integers(1, 64), headers=extra, cuts=st.lists(st.integers(0, 10_000), max_size=20),
       seed=st.randoms(use_true_random=False), interleave=st.booleans())
def test_chunks_survive_the_stream_and_any_order(to_path, from_path, message_id, content_type, data, max_chunk,
                                                 headers, cuts, seed, interleave):
    sends = chunk(to_path, from_path, message_id, content_type, data, max_chunk=max_chunk, headers=headers)
    assert all(len(s.body) <= max_chunk for s in sends) and b"".join(s.body for s in sends) == data
    wire = [bodiless_send(to_path, from_path)] + sends
    if interleave:   # the answers and a REPORT share the connection
        wire += [response_for(sends[0], 200), report_for(sends[-1], 200, total=len(data))]
    stream = b"".join((b"\r\n" if i % 3 == 2 else b"") + m.to_bytes() for i, m in enumerate(wire))
    parser, events = MsrpStreamParser(), []
    for piece in split(stream, cuts):
        events += parser.feed(piece)
    assert parser.feed_eof() == []
    assert len(events) == len(wire)
    for event, message in zip(events, wire):
        same(event, message)
        describe(event)
    received = events[1:1 + len(sends)]
    seed.shuffle(received)
    reassembler, whole = Reassembler(), []
    # duplicates before the message is complete are harmless (after it, a resend is a new message)
    for send in received[:-1] + received[:2][:len(received) - 1] + received[-1:]:
        got = reassembler.add(send)
        if got is not None:
            whole.append(got)
    assert whole == [data]


@settings(max_examples=40)
@given(u=uri)
def test_msrp_uri_round_trips(u):
    parsed = parse_msrp_uri(u)
    assert str(parsed) == u and parsed.matches(parse_msrp_uri(str(parsed)))


# -- hostile input -------------------------------------------------------------------------

MAX_HEADER, MAX_CHUNK = 200, 100
ALICE, BOB = "msrp://a.lab:7654/s1;tcp", "msrp://b.lab:12763/s2;tcp"
SEND = chunk([BOB], [ALICE], "m1", "message/cpim", b"Hey Bob\r\n-------xyz$\r\nare you there?", 16)
VALID = b"".join(m.to_bytes() for m in [bodiless_send([BOB], [ALICE]), *SEND, response_for(SEND[0], 200)])


SPECIALS = [b"\r\n", b"\n", b"\r", b":", b" ", b"-------", b"$\r\n", b"+", b"#",
    b"MSRP ", b"\r\n\r\n", b"Byte-Range: 1-99999999/*\r\n", b"*",
    b"Content-Type: x\r\n", b"x" * 150, b"\xff", b"\0"]   # octets the grammar cares about


def mutated():
    return mutations([VALID], SPECIALS, max_rounds=6)


def check_event(event) -> None:
    assert isinstance(event, (MsrpRequest, MsrpResponse, MsrpParseError))
    if isinstance(event, MsrpParseError):
        assert 400 <= event.status <= 599
        response = error_response(event, local_uri=BOB)
        if response is not None:
            response.to_bytes()
    else:
        describe(event)


@settings(max_examples=100)
@given(chunks=st.lists(mutated() | st.binary(max_size=100), min_size=1, max_size=3),
       cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_stream_parser_on_hostile_octets(chunks, cuts):
    parser, events, reassembler = MsrpStreamParser(max_header_size=MAX_HEADER, max_chunk_size=MAX_CHUNK), [], \
        Reassembler(max_size=300)
    for piece in split(b"".join(chunks), cuts):
        got = parser.feed(piece)
        events += got
        assert len(parser._buf) <= MAX_HEADER + MAX_CHUNK + 64, "the buffer grows without bound"
        if parser.broken:
            assert parser.feed(VALID) == []
    events += parser.feed_eof()
    assert sum(isinstance(e, MsrpParseError) and e.fatal for e in events) <= 1
    for event in events:
        check_event(event)
        if isinstance(event, MsrpRequest):
            try:
                reassembler.add(event)
            except MsrpParseError as exc:
                assert exc.status == 413


@settings(max_examples=25)
@given(chunks=st.lists(mutated(), min_size=1, max_size=2))
def test_a_valid_message_after_garbage_that_framed_is_still_read(chunks):
    """Whatever a framable message held, the parser goes on: a valid SEND after it is not lost."""
    parser = MsrpStreamParser()
    events = []
    for piece in chunks:
        events += parser.feed(piece)
    if parser.broken:
        return
    # Whatever is left half-read, a fresh end-line of the pending transaction would end it; so instead check that
    # a parser that framed everything so far reads a clean message next.
    if parser._tid is None and not parser._buf:
        assert [type(e) for e in parser.feed(VALID)] == [MsrpRequest] * 4 + [MsrpResponse]


@settings(max_examples=60)
@given(st.text(max_size=60))
def test_uri_parsing_raises_only_msrp_parse_error(text):
    try:
        str(parse_msrp_uri(text))
    except MsrpParseError:
        pass
