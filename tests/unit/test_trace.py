"""The trace is bounded in bytes as well as in events: junk cannot grow the lab without limit;
what it keeps costs the cycle collector nothing and reads back exactly as recorded."""
from __future__ import annotations

import datetime
import gc

from iwlab.backends.protocols import sip
from iwlab.backends.trace import Trace


def test_a_huge_pdu_is_kept_truncated_with_a_note():
    trace = Trace(max_raw=100)
    event = trace.record("x", "SMSC", "SMPP", "submit_sm", raw=b"a" * 1000)
    assert event.raw == b"a" * 100
    assert event.fields["raw_truncated"] == {"kept": 100, "size": 1000}
    assert "first 100 of 1000 kept" in event.note


def test_the_oldest_events_go_when_the_bytes_run_out_and_are_counted():
    trace = Trace(max_bytes=20_000, max_raw=10_000)
    for i in range(100):
        trace.record("x", "y", "SIP", f"MESSAGE {i}", raw=b"b" * 5_000)
    kept = trace.events()
    assert trace.bytes <= 20_000 and len(kept) < 100
    assert trace.dropped == 100 - len(kept) and kept[-1].summary == "MESSAGE 99"


def test_decoded_fields_count_as_much_again_as_their_bytes_and_are_walked_where_raw_was_cut():
    trace = Trace(max_raw=100)
    whole = trace.record("x", "y", "SIP", "MESSAGE", raw=b"c" * 50, fields={"body": "c" * 50})
    assert whole.footprint >= 100            # the body in raw and again in the fields
    cut = trace.record("x", "y", "SIP", "MESSAGE", raw=b"d" * 1000, fields={"body": "d" * 1000})
    assert cut.footprint >= 100 + 1000       # raw kept short, the decoded body whole: counted whole
    bare = trace.record("x", "y", "SMPP", "connection lost", raw=b"", fields={"note": "e" * 500})
    assert bare.footprint >= 500


def test_events_since_any_number_whatever_was_let_go_or_cleared():
    trace = Trace(max_events=50)
    for i in range(120):
        trace.record("a", "b", "SIP", f"e{i}", raw=b"x")
    kept = trace.events()
    assert [e.seq for e in kept] == list(range(71, 121))
    for seq in (0, 10, 70, 71, 80, 95, 119, 120, 500):
        assert trace.events_since(seq) == [e for e in kept if e.seq > seq], seq
    trace.clear()
    assert trace.events_since(0) == []
    trace.record("a", "b", "SIP", "after", raw=b"x")
    assert [e.summary for e in trace.events_since(120)] == ["after"] and trace.events_since(121) == []


def _recorded_sip(trace: Trace, n: int) -> None:
    body = b"From: <sip:mary@cpm-a.lab>\r\nTo: <tel:+15550201>\r\n\r\nContent-Type: text/plain\r\n\r\nhi"
    raw = (f"MESSAGE tel:+15550201 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK{n}\r\n"
           f"From: <sip:mary@cpm-a.lab>;tag={n}\r\nTo: <tel:+15550201>\r\nCall-ID: {n}@lab\r\n"
           f"CSeq: 1 MESSAGE\r\nContent-Type: message/cpim\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    summary, fields, correlation = sip.describe(sip.parse_message(raw))
    trace.record("Mary", "CPM-A", "SIP", summary, raw=raw, fields=fields, correlation=correlation,
                 addresses=(("127.0.0.1", 40000 + n % 1000), ("127.0.0.1", 5060)), transport="tcp")


def test_an_event_is_let_go_by_the_collector_at_its_first_collection():
    # A tuple inside the kept one (the correlation, an address) is looked at after it: the kept
    # tuple stayed watched and went on to the next generation, to the oldest when its first
    # collection was a generation-1 one, and every full collection walked it again.
    gc.collect()
    gc.disable()   # no collection before the one looked at
    try:
        trace = Trace()
        for n in range(2_000):
            _recorded_sip(trace, n)
        gc.collect(1)
        watched = [kept for kept in trace._events if gc.is_tracked(kept)]
    finally:
        gc.enable()
    assert len(trace) == 2_000 and not watched
    event = trace.events()[5]
    assert event.correlation == {k: v for k, v in sip.describe(sip.parse_message(event.raw))[2].items() if v}
    assert event.correlation["call_id"] == "5@lab" and event.src_address == ("127.0.0.1", 40005)


def test_kept_events_are_nothing_the_cycle_collector_walks():
    # Kept as objects (an event, its fields dict, its headers list), 100,000 events made each
    # full collection stop the lab for ~250 ms, and full collections come as the heap grows.
    trace = Trace()
    for n in range(2_000):
        _recorded_sip(trace, n)
    trace.record("IWF", "SMSC", "SMPP", "deliver_sm", raw=b"d", fields={"esm_class": {"value": 4}, "udh": [{"iei": 0}]})
    gc.collect()
    gc.collect()   # a tuple looked at before one of its parts is let go at the collection after
    assert len(trace) == 2_001
    assert not [kept for kept in trace._events if gc.is_tracked(kept)]


def test_an_event_reads_back_as_it_was_recorded():
    trace = Trace()
    _recorded_sip(trace, 7)
    recorded: list = []
    trace.subscribe(recorded.append)
    _recorded_sip(trace, 8)
    odd = trace.record("x", "y", "SMTP", "DATA", raw=b"d", fields={"when": datetime.date(2026, 12, 3)})
    kept = trace.events()
    assert kept[1] == recorded[0] and kept[1].fields["headers"] == recorded[0].fields["headers"]
    assert kept[1].correlation["call_id"] == "8@lab" and kept[1].src_address == ("127.0.0.1", 40008)
    assert kept[1].footprint == recorded[0].footprint
    assert kept[2] == odd    # a value marshal cannot write is kept as it is


def test_events_since_hands_out_pages():
    trace = Trace(max_events=50)
    for i in range(120):
        trace.record("a", "b", "SIP", f"e{i}", raw=b"x")
    assert [e.seq for e in trace.events_since(0, limit=5)] == [71, 72, 73, 74, 75]
    assert [e.seq for e in trace.events_since(110, limit=5)] == [111, 112, 113, 114, 115]
    assert [e.seq for e in trace.events_since(118, limit=5)] == [119, 120]


def test_events_since_involving_some_nodes_hands_out_only_theirs_of_the_page():
    trace = Trace()
    hops = [("Mary", "CPM-A"), ("CPM-A", "CPM-B"), ("CPM-B", "IWF"), ("IWF", "SMSC"), ("SMSC", "Peter"),
            ("Peter", "SMSC")]
    for i in range(60):
        trace.record(*hops[i % len(hops)], "SIP", f"e{i + 1}", raw=b"x")
    mine = trace.events_since(12, limit=24, involving={"Mary", "Peter"})
    assert [(e.seq, e.src, e.dst) for e in mine] == [(seq, *hops[(seq - 1) % len(hops)]) for seq in range(13, 37)
                                                    if (seq - 1) % len(hops) in (0, 4, 5)]
    assert mine == [e for e in trace.events_since(12, limit=24) if {e.src, e.dst} & {"Mary", "Peter"}]
    assert trace.events_since(0, involving=set()) == []
