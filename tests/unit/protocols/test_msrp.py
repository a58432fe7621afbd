"""Byte-level tests of the sans-I/O MSRP codec (backends/msrp.py), RFC 4975."""
from __future__ import annotations

import random

import pytest

from iwlab.backends.protocols.msrp import (
    MsrpParseError,
    MsrpRequest,
    MsrpResponse,
    MsrpStreamParser,
    MsrpUri,
    Reassembler,
    bodiless_send,
    chunk,
    error_response,
    needs_response,
    new_message_id,
    new_transaction_id,
    parse_msrp_uri,
    report_for,
    response_for,
    wants_success_report,
)

BOB = "msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp"
ALICE = "msrp://atlanta.example.com:7654/jshA7weztas;tcp"

# RFC 4975 7.1 (the body really is 23 octets; the RFC's Byte-Range says 25: framing never uses it)
SEND = (b"MSRP a786hjs2 SEND\r\n"
        b"To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n"
        b"From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n"
        b"Message-ID: 87652491\r\n"
        b"Byte-Range: 1-25/25\r\n"
        b"Content-Type: text/plain\r\n"
        b"\r\n"
        b"Hey Bob, are you there?\r\n"
        b"-------a786hjs2$\r\n")
OK = (b"MSRP a786hjs2 200 OK\r\n"
      b"To-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n"
      b"From-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n"
      b"-------a786hjs2$\r\n")
REPORT = (b"MSRP dkei38sd REPORT\r\n"
          b"To-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp\r\n"
          b"From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp\r\n"
          b"Message-ID: 12339sdqwer\r\n"
          b"Byte-Range: 1-106/106\r\n"
          b"Status: 000 200 OK\r\n"
          b"-------dkei38sd$\r\n")
BODILESS = (b"MSRP bd01ab SEND\r\n"
            b"To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n"
            b"From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n"
            b"Message-ID: 9a8b7c6d\r\n"
            b"Byte-Range: 1-0/0\r\n"
            b"-------bd01ab$\r\n")


def parse_one(data: bytes):
    parser = MsrpStreamParser()
    events = parser.feed(data)
    assert len(events) == 1, events
    assert not parser.broken
    return events[0]


def test_rfc4975_send_parses_and_reserialises_byte_exact():
    req = parse_one(SEND)
    assert isinstance(req, MsrpRequest)
    assert (req.transaction_id, req.method, req.continuation) == ("a786hjs2", "SEND", "$")
    assert req.to_path == [BOB] and req.from_path == [ALICE]
    assert req.message_id == "87652491" and req.byte_range == (1, 25, 25)
    assert req.content_type == "text/plain" and req.headers == []
    assert req.body == b"Hey Bob, are you there?"
    assert req.to_bytes() == SEND


def test_rfc4975_response_parses_and_reserialises_byte_exact():
    resp = parse_one(OK)
    assert isinstance(resp, MsrpResponse)
    assert (resp.transaction_id, resp.status, resp.comment) == ("a786hjs2", 200, "OK")
    assert resp.to_path == [ALICE] and resp.from_path == [BOB]
    assert resp.to_bytes() == OK


def test_response_for_the_send_is_the_rfc_200():
    assert response_for(parse_one(SEND)).to_bytes() == OK


def test_rfc4975_report_parses_and_reserialises_byte_exact():
    rep = parse_one(REPORT)
    assert rep.method == "REPORT" and rep.message_id == "12339sdqwer"
    assert rep.byte_range == (1, 106, 106)
    assert rep.headers == [("Status", "000 200 OK")] and rep.get("status") == "000 200 OK"
    assert rep.body == b"" and rep.content_type is None
    assert rep.to_bytes() == REPORT
    assert not needs_response(rep)   # REPORTs are never answered


def test_bodiless_send_round_trip_and_builder():
    req = parse_one(BODILESS)
    assert req.body == b"" and req.content_type is None and req.byte_range == (1, 0, 0)
    assert req.to_bytes() == BODILESS
    built = bodiless_send([BOB], [ALICE])
    wire = built.to_bytes()
    assert b"Content-Type" not in wire and b"\r\n\r\n" not in wire
    assert b"Byte-Range: 1-0/0\r\n-------" + built.transaction_id.encode() + b"$\r\n" in wire
    assert parse_one(wire) == built
    assert Reassembler().add(built) is None   # binds the connection, carries no message


def test_response_without_comment_and_other_headers_round_trip():
    resp = MsrpResponse("tx12345", 481, None, [ALICE], [BOB])
    assert resp.to_bytes().startswith(b"MSRP tx12345 481\r\nTo-Path: ")
    assert parse_one(resp.to_bytes()) == resp


def test_multi_hop_paths_and_header_order():
    relay = "msrps://relay.example.com:2855/asfd34;tcp"
    req = MsrpRequest("t0ab12", "SEND", [relay, BOB], [ALICE], "m1", (1, 2, 2), "text/plain",
                      [("Success-Report", "yes"), ("Failure-Report", "partial"), ("Content-ID", "<x@y>")], b"hi")
    wire = req.to_bytes()
    assert wire.decode().split("\r\n")[:8] == [
        "MSRP t0ab12 SEND", f"To-Path: {relay} {BOB}", f"From-Path: {ALICE}", "Message-ID: m1",
        "Byte-Range: 1-2/2", "Success-Report: yes", "Failure-Report: partial", "Content-ID: <x@y>"]
    assert b"Content-Type: text/plain\r\n\r\nhi\r\n-------t0ab12$\r\n" in wire
    assert parse_one(wire) == req


def test_header_names_are_case_insensitive_and_whitespace_tolerated():
    wire = SEND.replace(b"Message-ID: ", b"message-id:   ").replace(b"To-Path", b"TO-PATH")
    req = parse_one(wire)
    assert req.message_id == "87652491" and req.to_path == [BOB]
    assert req.to_bytes() == SEND   # canonical names on output


def test_utf8_body_round_trip():
    text = "Grüße aus Köln 👋 — ok"
    req = MsrpRequest("u8u8u8", "SEND", [BOB], [ALICE], "m8", (1, len(text.encode()), len(text.encode())),
                      "text/plain; charset=utf-8", [], text.encode())
    parsed = parse_one(req.to_bytes())
    assert parsed.body.decode("utf-8") == text and parsed == req


# -- framing ------------------------------------------------------------------


def test_two_messages_split_at_every_byte_position():
    stream = SEND + OK
    for cut in range(len(stream) + 1):
        parser = MsrpStreamParser()
        events = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        assert [e.to_bytes() for e in events] == [SEND, OK], cut


def test_feed_byte_by_byte_and_all_in_one_chunk():
    stream = SEND + OK + REPORT + BODILESS
    parser = MsrpStreamParser()
    events = [e for i in range(len(stream)) for e in parser.feed(stream[i:i + 1])]
    assert b"".join(e.to_bytes() for e in events) == stream
    assert b"".join(e.to_bytes() for e in MsrpStreamParser().feed(stream)) == stream


def test_random_splits():
    stream = SEND + REPORT + OK + SEND
    rng = random.Random(4975)
    for _ in range(200):
        parser, events, at = MsrpStreamParser(), [], 0
        while at < len(stream):
            n = rng.randint(1, 40)
            events += parser.feed(stream[at:at + n])
            at += n
        assert b"".join(e.to_bytes() for e in events) == stream


def _send(tid: str, body: bytes, flag: str = "$") -> MsrpRequest:
    return MsrpRequest(tid, "SEND", [BOB], [ALICE], "mid1", (1, len(body), len(body)), "text/plain", [], body, flag)


@pytest.mark.parametrize("body", [
    b"-------",
    b"line\r\n-------\r\nmore",
    b"\r\n-------other1$\r\n",                 # another transaction's end-line
    b"x\r\n-------a1b2c3d4e5\r\n",             # our tid as a prefix of a longer token
    b"x\r\n-------a1b2c3d4X$\r\n",             # one character off
    b"x-------a1b2c3d4$\r\n",                 # not at the start of a line
    b"x\r\n-------a1b2c3d4!\r\n",              # not a continuation flag
    b"x\r\n-------a1b2c3d4$ trailing",         # flag not followed by CRLF
    b"\r\n\r\n",
    b"MSRP a1b2c3d4 200 OK\r\n",
])
def test_body_may_contain_dashes_and_foreign_end_lines(body):
    req = _send("a1b2c3d4", body)
    wire = req.to_bytes()
    parser = MsrpStreamParser()
    assert parser.feed(wire + OK) == [req, parse_one(OK)]
    events = [e for i in range(len(wire)) for e in parser.feed(wire[i:i + 1])]
    assert events == [req]


def test_to_bytes_refuses_a_body_holding_its_own_end_line():
    with pytest.raises(ValueError, match="end-line"):
        _send("a1b2c3d4", b"x\r\n-------a1b2c3d4+\r\ny").to_bytes()
    with pytest.raises(ValueError, match="end-line"):
        _send("a1b2c3d4", b"x\r\n-------a1b2c3d4#").to_bytes()   # + the framing CRLF it would end
    with pytest.raises(ValueError, match="end-line"):
        _send("a1b2c3d4", b"-------a1b2c3d4$\r\nat the very start").to_bytes()


def test_end_line_right_after_the_blank_line_is_an_empty_body():
    wire = _send("a1b2c3d4", b"").to_bytes()
    assert wire.endswith(b"Content-Type: text/plain\r\n\r\n\r\n-------a1b2c3d4$\r\n")
    sloppy = wire.replace(b"\r\n\r\n\r\n", b"\r\n\r\n")
    for data in (wire, sloppy):
        [req] = MsrpStreamParser().feed(data)
        assert req.body == b"" and req.content_type == "text/plain"


def test_stray_crlf_between_messages_is_skipped():
    events = MsrpStreamParser().feed(SEND + b"\r\n" + OK)
    assert [e.to_bytes() for e in events] == [SEND, OK]


@pytest.mark.parametrize("flag", ["+", "#"])
def test_continuation_flags(flag):
    req = parse_one(SEND.replace(b"a786hjs2$", b"a786hjs2" + flag.encode()))
    assert req.continuation == flag


# -- errors ---------------------------------------------------------------------


def test_garbage_start_line_is_fatal():
    parser = MsrpStreamParser()
    [error] = parser.feed(b"HELLO world\r\n")
    assert isinstance(error, MsrpParseError) and error.fatal and error.transaction_id is None
    assert parser.broken and parser.feed(SEND) == []


def test_garbage_is_seen_before_the_line_ends():
    parser = MsrpStreamParser()
    assert parser.feed(b"MSR") == []
    [error] = parser.feed(b"X")
    assert error.fatal


@pytest.mark.parametrize("start, reason", [
    (b"MSRP a786hjs2 send", "malformed start line"),
    (b"MSRP a786hjs2", "malformed start line"),
    (b"MSRP a786hjs2 20 OK", "malformed start line"),
    (b"MSRP abc SEND", "malformed transaction id"),
])
def test_malformed_start_line_with_a_tid_is_framed_and_reported(start, reason):
    wire = SEND.replace(b"MSRP a786hjs2 SEND", start)
    if b"abc " in start:
        wire = wire.replace(b"-------a786hjs2$", b"-------abc$")
    parser = MsrpStreamParser()
    events = parser.feed(wire + OK)
    assert isinstance(events[0], MsrpParseError) and reason in events[0].reason
    assert events[0].transaction_id == start.split()[1].decode() and not events[0].fatal
    assert events[1] == parse_one(OK) and not parser.broken


def test_missing_to_path_gives_an_error_with_tid_and_a_400_answer():
    wire = SEND.replace(b"To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n", b"")
    error = parse_one(wire)
    assert isinstance(error, MsrpParseError)
    assert (error.reason, error.transaction_id, error.status) == ("missing To-Path", "a786hjs2", 400)
    resp = error_response(error, local_uri=BOB)
    assert resp.to_bytes() == OK.replace(b"200 OK", b"400 Bad Request")


@pytest.mark.parametrize("old, new, reason", [
    (b"From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n", b"", "missing From-Path"),
    (b"To-Path: msrp://", b"To-Path: http://", "To-Path: malformed MSRP URI"),
    (b"Byte-Range: 1-25/25", b"Byte-Range: 0-25/25", "malformed Byte-Range"),
    (b"Byte-Range: 1-25/25", b"Byte-Range: 1-x/25", "malformed Byte-Range"),
    (b"Message-ID: 87652491", b"Message-ID: a b", "malformed Message-ID"),
    (b"Message-ID: 87652491\r\n", b"Message-ID: 87652491\r\nMessage-ID: 2\r\n", "duplicate Message-ID"),
    (b"Content-Type: text/plain\r\n", b"", "a body without Content-Type"),
    (b"Byte-Range: 1-25/25\r\n", b"Byte-Range: 1-25/25\r\nno colon here\r\n", "malformed header line"),
])
def test_bad_headers_are_reported_with_tid(old, new, reason):
    assert old in SEND
    error = parse_one(SEND.replace(old, new))
    assert isinstance(error, MsrpParseError) and error.reason.startswith(reason)
    assert error.transaction_id == "a786hjs2" and error.partial.method == "SEND"


def test_content_type_without_body_and_response_with_body_are_errors():
    wire = BODILESS.replace(b"Byte-Range: 1-0/0\r\n", b"Byte-Range: 1-0/0\r\nContent-Type: text/plain\r\n")
    assert parse_one(wire).reason == "Content-Type without a body"
    wire = OK.replace(b"-------", b"\r\nbody\r\n-------")
    assert "response carries no body" in parse_one(wire).reason


def test_no_response_to_an_unanswerable_error():
    error = parse_one(SEND.replace(b"From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n", b""))
    assert error_response(error) is None   # nowhere to send it
    error = parse_one(OK.replace(b"To-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n", b""))
    assert error_response(error) is None   # responses are never answered
    error = parse_one(SEND.replace(b"Byte-Range: 1-25/25", b"Byte-Range: x\r\nFailure-Report: no"))
    assert error_response(error) is None


def test_oversized_chunk_is_a_413_and_the_stream_goes_on():
    big = _send("big0big0", b"x" * 5000)
    for feed in (lambda p, d: p.feed(d), lambda p, d: [e for i in range(0, len(d), 7) for e in p.feed(d[i:i + 7])]):
        parser = MsrpStreamParser(max_chunk_size=1000)
        events = feed(parser, big.to_bytes() + SEND)
        assert len(events) == 2 and isinstance(events[0], MsrpParseError)
        assert (events[0].status, events[0].transaction_id, events[0].fatal) == (413, "big0big0", False)
        assert events[0].partial.message_id == "mid1" and not parser.broken
        assert events[1].to_bytes() == SEND
        assert len(parser._buf) == 0


def test_oversized_chunk_is_reported_before_it_ends_and_memory_stays_bounded():
    parser = MsrpStreamParser(max_chunk_size=1000)
    head = _send("big1big1", b"").to_bytes().split(b"\r\n-------")[0]
    assert parser.feed(head) == []
    [error] = parser.feed(b"y" * 1500)
    assert error.status == 413
    for _ in range(100):
        assert parser.feed(b"z" * 1000) == []
    assert len(parser._buf) < 100
    assert parser.feed(b"\r\n-------big1big1$\r\n" + OK) == [parse_one(OK)]


def test_oversized_header_block_is_skipped_to_the_end_line():
    parser = MsrpStreamParser(max_header_size=300)
    wire = SEND.replace(b"Content-Type", b"X-Big: " + b"h" * 400 + b"\r\nContent-Type")
    events = parser.feed(wire + OK)
    assert [type(e) for e in events] == [MsrpParseError, MsrpResponse]
    assert events[0].transaction_id == "a786hjs2" and not parser.broken


def test_eof_inside_a_message():
    parser = MsrpStreamParser()
    parser.feed(SEND[:-5])
    [error] = parser.feed_eof()
    assert error.transaction_id == "a786hjs2" and error.fatal
    parser = MsrpStreamParser()
    parser.feed(SEND + b"\r\n")
    assert parser.feed_eof() == []


# -- chunking and reassembly ---------------------------------------------------


BODY_5000 = bytes(random.Random(5).randrange(256) for _ in range(5000))


def test_chunk_5000_bytes():
    sends = chunk([BOB], [ALICE], "msg5000", "application/octet-stream", BODY_5000)
    assert [s.byte_range for s in sends] == [(1, 2048, 5000), (2049, 4096, 5000), (4097, 5000, 5000)]
    assert [s.continuation for s in sends] == ["+", "+", "$"]
    assert {s.message_id for s in sends} == {"msg5000"}
    assert len({s.transaction_id for s in sends}) == 3
    wire = b"".join(s.to_bytes() for s in sends)
    assert b"Byte-Range: 1-2048/5000\r\n" in wire and b"Byte-Range: 2049-4096/5000\r\n" in wire
    assert b"Byte-Range: 4097-5000/5000\r\n" in wire
    assert b"".join(s.body for s in sends) == BODY_5000
    parsed = MsrpStreamParser().feed(wire)
    assert parsed == sends


def test_chunk_edges():
    [empty] = chunk([BOB], [ALICE], "e1", "text/plain", b"")
    assert empty.byte_range == (1, 0, 0) and empty.continuation == "$" and empty.content_type == "text/plain"
    assert Reassembler().add(parse_one(empty.to_bytes())) == b""
    exact = chunk([BOB], [ALICE], "e2", "text/plain", b"a" * 4096)
    assert [s.byte_range for s in exact] == [(1, 2048, 4096), (2049, 4096, 4096)]
    with pytest.raises(ValueError):
        chunk([BOB], [ALICE], "e3", "text/plain", b"a", max_chunk=0)


def test_chunking_splits_utf8_and_reassembly_is_byte_based():
    text = "é" * 7
    sends = chunk([BOB], [ALICE], "u1", "text/plain; charset=utf-8", text.encode(), max_chunk=3)
    assert sends[0].body == b"\xc3\xa9\xc3"   # a split inside a sequence is legal
    r = Reassembler()
    results = [r.add(s) for s in sends]
    assert results[-1].decode() == text and results[:-1] == [None] * (len(sends) - 1)


def test_reassembly_out_of_order_with_a_duplicate():
    sends = chunk([BOB], [ALICE], "msg5000", "application/octet-stream", BODY_5000)
    r = Reassembler()
    assert r.add(sends[2]) is None
    assert r.add(sends[0]) is None
    assert r.add(sends[0]) is None   # duplicate
    assert r.add(sends[1]) == BODY_5000
    assert r.add(sends[1]) is None   # forgotten once delivered: a late duplicate starts afresh, never completes


def test_reassembly_interleaved_messages_and_unknown_totals():
    a = chunk([BOB], [ALICE], "ma", "text/plain", b"A" * 10, max_chunk=4)
    b = chunk([BOB], [ALICE], "mb", "text/plain", b"B" * 10, max_chunk=4)
    for s in a[:-1] + b[:-1]:
        s.byte_range = (s.byte_range[0], None, None)   # "N-*/*": size unknown until the '$' chunk
    r = Reassembler()
    out = [r.add(s) for s in (a[0], b[0], b[1], a[1], b[2], a[2])]
    assert out == [None, None, None, None, b"B" * 10, b"A" * 10]


def test_abort_forgets_the_message():
    sends = chunk([BOB], [ALICE], "abrt", "text/plain", b"x" * 100, max_chunk=40)
    r = Reassembler()
    assert r.add(sends[0]) is None
    abort = MsrpRequest("ab0rt01", "SEND", [BOB], [ALICE], "abrt", (41, 41, 100), "text/plain", [], b"x", "#")
    assert parse_one(abort.to_bytes()) == abort
    assert r.add(abort) is None
    assert r._parts == {}
    assert [r.add(s) for s in sends[1:]] == [None, None]   # late chunks of an aborted message


def test_single_chunk_without_byte_range_and_rfc_example():
    r = Reassembler()
    assert r.add(parse_one(SEND)) == b"Hey Bob, are you there?"   # '$' wins over the RFC's /25
    req = _send("nbr0nbr0", b"abc")
    req.byte_range = None
    assert r.add(req) == b"abc"
    assert r.add(parse_one(REPORT)) is None


def test_reassembly_bound():
    r = Reassembler(max_size=100)
    with pytest.raises(MsrpParseError) as info:
        r.add(MsrpRequest("tbig0001", "SEND", [BOB], [ALICE], "m", (1, 10, 1000), "text/plain", [], b"0" * 10, "+"))
    assert info.value.status == 413 and info.value.transaction_id == "tbig0001"


# -- responses and reports -------------------------------------------------------


def test_failure_report_rules():
    req = parse_one(SEND)
    assert needs_response(req)
    req.headers = [("Failure-Report", "no")]
    assert not needs_response(req) and not needs_response(req, 400)
    req.headers = [("Failure-Report", "partial")]
    assert not needs_response(req) and needs_response(req, 413)
    req.headers = [("Failure-Report", "yes")]
    assert needs_response(req)


def test_response_goes_to_the_previous_hop_only():
    relay = "msrp://relay.example.com:2855/r1;tcp"
    req = MsrpRequest("hop0hop0", "SEND", [BOB], [relay, ALICE], "m", None, None, [], b"")
    resp = response_for(req, 413, local_uri="msrp://me.example.com:1/s;tcp")
    assert (resp.to_path, resp.from_path, resp.comment) == ([relay], ["msrp://me.example.com:1/s;tcp"],
                                                          "Message Too Large")
    assert response_for(req, 200, "Fine").to_bytes().startswith(b"MSRP hop0hop0 200 Fine\r\n")


def test_success_report():
    wire = SEND.replace(b"Content-Type", b"Success-Report: yes\r\nContent-Type")
    req = parse_one(wire)
    assert wants_success_report(req) and not wants_success_report(parse_one(SEND))
    report = report_for(req)
    assert report.method == "REPORT" and report.message_id == "87652491"
    assert report.to_path == [ALICE] and report.from_path == [BOB]
    wire = report.to_bytes()
    assert b"Byte-Range: 1-25/25\r\nStatus: 000 200 OK\r\n-------" in wire
    assert parse_one(wire) == report


def test_report_for_the_last_chunk_covers_the_whole_message():
    sends = chunk([BOB], [ALICE], "m5000", "text/plain", b"q" * 5000, headers=[("Success-Report", "yes")])
    report = report_for(sends[-1])
    assert report.byte_range == (1, 5000, 5000)
    assert b"Byte-Range: 1-5000/5000\r\n" in report.to_bytes()
    unknown = _send("unk0unk0", b"abcd")
    unknown.byte_range = (1, None, None)
    assert report_for(unknown).byte_range == (1, 4, 4)
    failed = report_for(unknown, 413, "Message Too Large", total=10)
    assert failed.get("Status") == "000 413 Message Too Large" and failed.byte_range == (1, 10, 10)


# -- URIs and ids -------------------------------------------------------------------


def test_parse_msrp_uri():
    uri = parse_msrp_uri(BOB)
    assert uri == MsrpUri("msrp", "biloxi.example.com", 12763, "kjhd37s2s20w2a", "tcp")
    assert str(uri) == BOB
    full = "MSRPS://bob@[2001:db8::1]:2855/a+b=c/d;tcp;foo=bar"
    uri = parse_msrp_uri(full)
    assert (uri.scheme, uri.user, uri.host, uri.port, uri.session_id, uri.params) == \
        ("msrps", "bob", "[2001:db8::1]", 2855, "a+b=c/d", ("foo=bar",))
    assert parse_msrp_uri("msrp://relay.example.com;tcp").session_id is None
    assert parse_msrp_uri("msrp://h.example.com:1/S;TCP").matches(parse_msrp_uri("msrp://H.example.com:1/S;tcp"))
    assert not parse_msrp_uri("msrp://h:1/S;tcp").matches(parse_msrp_uri("msrp://h:1/s;tcp"))


@pytest.mark.parametrize("bad", ["sip:bob@example.com", "msrp://host:1/sess", "msrp://host:99999/s;tcp",
                                 "msrp://host:1/s p;tcp", ""])
def test_bad_msrp_uris(bad):
    with pytest.raises(MsrpParseError):
        parse_msrp_uri(bad)


def test_new_ids_are_idents():
    import re
    for make in (new_transaction_id, new_message_id):
        values = {make() for _ in range(50)}
        assert len(values) == 50
        assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-+%=]{3,31}", v) for v in values)


def test_to_bytes_refuses_injection_and_bad_flags():
    with pytest.raises(ValueError):
        MsrpRequest("inj0inj0", "SEND", [BOB + "\r\nX: y"], [ALICE]).to_bytes()
    with pytest.raises(ValueError):
        MsrpRequest("inj0inj0", "SEND", [BOB], [ALICE], continuation="*").to_bytes()
    with pytest.raises(ValueError, match="Content-Type"):
        MsrpRequest("inj0inj0", "SEND", [BOB], [ALICE], body=b"x").to_bytes()


def test_an_answer_that_would_echo_a_malformed_path_is_not_made():
    # Found by the socket mutation run: a 400 whose From-Path echoed the bad To-Path was itself no MSRP.
    bad_to = parse_one(SEND.replace(b"To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp",
                                    b"To-Path: msrp:/%s{x}/biloxi.example.com"))
    assert isinstance(bad_to, MsrpParseError) and error_response(bad_to) is None
    assert parse_one(error_response(bad_to, local_uri=BOB).to_bytes()).status == 400   # our own URI: answerable
    bad_from = parse_one(SEND.replace(b"From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp",
                                      b"From-Path: msrp:ba684459c2"))
    assert error_response(bad_from, local_uri=BOB) is None   # nowhere valid to send it


def test_a_refused_message_keeps_its_octets_as_they_came():
    wire = SEND.replace(b"Message-ID: 87652491", b"Message-ID: a b")
    error = parse_one(wire)
    assert isinstance(error, MsrpParseError) and error.raw == wire
    parser = MsrpStreamParser()
    assert parser.feed(wire[:40]) == []
    [cut] = parser.feed_eof()
    assert cut.fatal and cut.raw == wire[:40]


@pytest.mark.parametrize("old, new", [
    (b"Content-Type: text/plain", b"Content-Type: text/\rplain"),
    (b"Content-Type: text/plain", b"Content-Type: text/plain\r\nX-Note: a\rb"),
    (b"Content-Type: text/plain", b"Content-Type: text/plain\r\nX-Note: a\nb"),
])
def test_a_bare_cr_or_lf_inside_a_header_is_a_malformed_line(old, new):
    # Found by the socket mutation run: parsed as good, such a message could not be written again
    # (for the trace), and the listener's handler raised.
    error = parse_one(SEND.replace(old, new))
    assert isinstance(error, MsrpParseError) and "malformed header line" in error.reason
    assert error_response(error, local_uri=BOB).to_bytes().startswith(b"MSRP a786hjs2 400")
