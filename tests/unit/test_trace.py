"""The trace is bounded in bytes as well as in events: junk cannot grow the lab without limit."""
from __future__ import annotations

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
