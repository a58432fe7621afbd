"""The trace feed on real loopback sockets: every PDU, in order, exactly as recorded; a viewer
that fell behind is told what it missed; a bad request gets the feed's error and the feed serves on."""
from __future__ import annotations

import asyncio
import contextlib
import json
from typing import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iwlab.backends.lab.report import event_dict
from iwlab.backends.lab.trace_feed import (
    MAX_REQUEST,
    Answer,
    FeedError,
    Gap,
    TraceFeed,
    TraceFeedClient,
    encode_line,
    decode_line,
    feed_item,
)
from iwlab.backends.trace import Trace, TraceEvent
from tests.helpers.mutation import mutations
from tests.helpers.waiting import until

NODES = ["Mary", "CPM-A", "IWF", "SMSC", "Peter"]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def record(trace: Trace, n: int, first: int = 0) -> None:
    for i in range(first, first + n):
        trace.record("Mary", "CPM-A", "SIP", f"MESSAGE {i} — ünïcode", raw=bytes([i % 256, 0, 255]) + b"\r\n",
                     fields={"body": f"text {i}", "parts": [1, 2]}, correlation={"call_id": f"c{i}"},
                     addresses=(("127.0.0.1", 5000), ("::1", 5060)), transport="tcp")


@contextlib.asynccontextmanager
async def feeding(trace: Trace, **options) -> AsyncIterator[TraceFeed]:
    feed = TraceFeed(trace, NODES, **options)
    await feed.start("127.0.0.1", 0)
    try:
        yield feed
    finally:
        await feed.stop()


@contextlib.asynccontextmanager
async def viewing(feed: TraceFeed) -> AsyncIterator[TraceFeedClient]:
    client = await TraceFeedClient.connect("127.0.0.1", feed.port)
    try:
        yield client
    finally:
        await client.aclose()


async def take(client: TraceFeedClient, n: int, since: int = 0) -> list:
    items = []
    async for item in client.items(since):
        items.append(item)
        if len(items) == n:
            break
    return items


async def raw_exchange(port: int, request: bytes) -> list[dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    lines = [json.loads(line) for line in (await reader.read()).splitlines()]
    writer.close()
    return lines


def test_a_viewer_gets_what_was_recorded_before_and_after_it_came_in_order_and_intact():
    async def scenario():
        trace = Trace()
        record(trace, 3)
        async with feeding(trace) as feed, viewing(feed) as client:
            assert client.hello.nodes == NODES and client.hello.last_seq == 3 and client.hello.lab == trace.id
            record(trace, 2, first=3)
            got = await take(client, 5)
        assert got == trace.events()    # every field, the raw bytes and the addresses alike
        assert got[0].summary == "MESSAGE 0 — ünïcode" and got[0].raw == b"\x00\x00\xff\r\n"
    run(scenario())


def test_since_resumes_after_the_last_event_a_viewer_had():
    async def scenario():
        trace = Trace()
        record(trace, 10)
        async with feeding(trace) as feed, viewing(feed) as client:
            assert [e.seq for e in await take(client, 3, since=7)] == [8, 9, 10]
    run(scenario())


def test_a_viewer_behind_the_traces_bounds_is_told_exactly_what_it_missed():
    async def scenario():
        trace = Trace(max_events=5)
        record(trace, 12)
        async with feeding(trace) as feed, viewing(feed) as client:
            items = await take(client, 6, since=2)
        assert items[0] == Gap(after=2, next=8) and items[0].lost == 5
        assert [e.seq for e in items[1:]] == [8, 9, 10, 11, 12]
    run(scenario())


@pytest.mark.parametrize("request_line", [b"hello\n", b"since -1\n", b"since 1 2\n", b"\xff\xfe\n",
                                          b"since " + b"9" * (MAX_REQUEST + 10) + b"\n"])
def test_a_bad_request_gets_the_feeds_error_and_the_feed_serves_the_next_viewer(request_line):
    async def scenario():
        trace = Trace()
        record(trace, 1)
        async with feeding(trace) as feed:
            hello, error = await raw_exchange(feed.port, request_line)
            assert hello["type"] == "hello" and error["type"] == "error" and "since SEQ" in error["reason"]
            async with viewing(feed) as client:
                assert [e.seq for e in await take(client, 1)] == [1]
    run(scenario())


def test_one_viewer_too_many_is_told_the_feed_is_busy():
    async def scenario():
        async with feeding(Trace(), max_viewers=1) as feed, viewing(feed):
            with pytest.raises(FeedError, match="busy: 1 viewers"):
                await TraceFeedClient.connect("127.0.0.1", feed.port)
            assert (await raw_exchange(feed.port, b"since 0\n"))[0] == {
                "type": "error", "reason": "busy: 1 viewers already watch this lab"}
    run(scenario())


def test_a_viewer_that_leaves_lets_go_of_the_trace():
    async def scenario():
        trace = Trace()
        record(trace, 1)
        async with feeding(trace) as feed:
            async with viewing(feed) as client:
                await take(client, 1)
                await until(lambda: trace.listener_count() == 1, what="the viewer following the trace")
            await until(lambda: trace.listener_count() == 0 and feed.viewer_count == 0, what="the viewer let go")
    run(scenario())


def test_a_viewer_that_reads_nothing_for_a_while_gets_everything_afterwards_and_the_lab_never_waits():
    async def scenario():
        trace = Trace()
        async with feeding(trace) as feed:
            reader, writer = await asyncio.open_connection("127.0.0.1", feed.port, limit=2 ** 22)
            writer.write(b"since 0\n")
            for i in range(2_000):   # each ~10 KB: far more than the sockets' buffers hold
                trace.record("CPM-B", "IWF", "SIP", f"MESSAGE {i}", raw=b"x" * 10_000)
            lines = [json.loads(await reader.readline()) for _ in range(2_001)]
            writer.close()
        assert [line["summary"] for line in lines[1:]] == [f"MESSAGE {i}" for i in range(2_000)]
    run(scenario())


def test_stopping_the_feed_ends_every_viewers_items():
    async def scenario():
        trace = Trace()
        record(trace, 1)
        async with feeding(trace) as feed, viewing(feed) as client:
            await take(client, 1)
            await feed.stop()
            assert [item async for item in client.items()] == []
    run(scenario())


@pytest.mark.parametrize("line, reason", [
    (b"not json\n", "not JSON"),
    (b"[1, 2]\n", "not a JSON object"),
    (b'{"type": "event", "seq": "one"}\n', "damaged event"),
    (b'{"type": "event", "seq": 1, "time": 0, "src": "a", "dst": "b", "protocol": "SIP", "summary": "s",'
     b' "is_response": false, "fields": {}, "raw": "not base64!", "correlation": {}, "note": ""}\n', "damaged event"),
    (b'{"type": "surprise"}\n', "unknown line"),
    (b'{"type": "event"', "middle of a line"),
])
def test_a_viewer_refuses_what_no_lab_would_send(line, reason):
    async def scenario():
        async def hostile(reader, writer):
            writer.write(b'{"type": "hello", "iwlab_trace_feed": 1, "lab": "x", "nodes": [], "last_seq": 0}\n' + line)
            await reader.readline()
            writer.close()
        server = await asyncio.start_server(hostile, "127.0.0.1", 0)
        client = await TraceFeedClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        with pytest.raises(FeedError, match=reason):
            [item async for item in client.items()]
        client.close()
        server.close()
    run(scenario())


async def answers(client: TraceFeedClient, n: int) -> list[Answer]:
    got = []
    async for item in client.items(0):
        if isinstance(item, Answer):
            got.append(item)
            if len(got) == n:
                return got
    return got


def test_a_viewer_may_send_console_commands_where_the_lab_takes_them():
    async def console(line: str) -> str:
        return f"did {line}"

    async def scenario():
        trace = Trace()
        record(trace, 2)
        async with feeding(trace, commands=console) as feed, viewing(feed) as client:
            client.command("throttle   3")
            client.command("smsc delay 50")
            got = await answers(client, 2)
        assert got == [Answer("throttle 3", "did throttle 3"), Answer("smsc delay 50", "did smsc delay 50")]
    run(scenario())


def test_commands_are_refused_where_the_lab_takes_none_and_junk_is_refused_but_the_feed_goes_on():
    async def scenario():
        trace = Trace()
        async with feeding(trace) as feed:
            async with viewing(feed) as client:
                client.command("throttle 3")
                [refused] = await answers(client, 1)
            assert refused.command == "throttle 3" and refused.text.startswith("refused: this lab takes no commands")
            reader, writer = await asyncio.open_connection("127.0.0.1", feed.port)
            writer.write(b"since 0\nhello there\ncommand " + b"x" * (MAX_REQUEST * 3) + b"\ncommand users\n")
            lines = [json.loads(await reader.readline()) for _ in range(4)]
            writer.close()
        assert [line["type"] for line in lines] == ["hello", "answer", "answer", "answer"]
        assert "'command LINE' lines only" in lines[1]["text"] and lines[2]["command"] == "(too long)"
        assert lines[3]["command"] == "users" and lines[3]["text"].startswith("refused")
    run(scenario())


# -- the viewer's side, sans I/O: whatever a "lab" sends, a PDU, a gap or FeedError -------------

def an_event_line() -> bytes:
    trace = Trace()
    record(trace, 1)
    return encode_line({"type": "event", **event_dict(trace.events()[0])})


def read_back(line: bytes):
    try:
        return feed_item(decode_line(line))
    except FeedError:
        return None


def test_an_event_line_reads_back_as_the_event():
    event = read_back(an_event_line())
    assert isinstance(event, TraceEvent) and event.summary == "MESSAGE 0 — ünïcode" and event.raw == b"\x00\x00\xff\r\n"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_give_a_pdu_a_gap_an_answer_or_a_feed_error(data):
    assert read_back(data + b"\n") is None or isinstance(read_back(data + b"\n"), (TraceEvent, Gap, Answer))


@settings(max_examples=300, deadline=None)
@given(mutations([an_event_line()], [b'"', b"\\u0000", b"null", b"1e999", b"[]", b"{}", b'"seq":true']))
def test_a_mutated_event_line_gives_a_pdu_a_gap_or_a_feed_error(mutated):
    assert read_back(mutated) is None or isinstance(read_back(mutated), (TraceEvent, Gap, Answer))
