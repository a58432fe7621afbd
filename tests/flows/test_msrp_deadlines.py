"""An MSRP listener's deadlines (RFC 4975 5.4; slow loris): a connection that names no session in
time, or that begins a message and never finishes it, is closed and the ladder says why; one that
named its session stays, and the listener serves on."""
from __future__ import annotations

import asyncio

from iwlab.backends.directory import NodeDirectory
from iwlab.backends.protocols import msrp, sdp
from iwlab.backends.trace import Trace
from iwlab.backends.transports import msrp as msrp_transport
from iwlab.backends.transports import partial
from iwlab.backends.transports.msrp import MsrpListener

PEER = "msrp://127.0.0.1:9/peer;tcp"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def listening(trace: Trace) -> MsrpListener:
    listener = MsrpListener(host="127.0.0.1", local_name="IWF", trace=trace, nodes=NodeDirectory())
    await listener.start()
    return listener


async def connected(listener: MsrpListener) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", listener.port)


async def bind(listener: MsrpListener, reader, writer) -> None:
    """A SEND naming a session the listener answered: 200 OK comes back."""
    session = listener.new_session(call_id="call-1")
    writer.write(msrp.bodiless_send([session.local_uri], [PEER]).to_bytes())
    [answer] = msrp.MsrpStreamParser().feed(await reader.readuntil(b"$\r\n"))
    assert answer.status == 200


def notes(trace: Trace, event: str) -> list[str]:
    return [e.note for e in trace.events() if e.fields.get("event") == event]


def test_a_connection_that_names_no_session_in_time_is_closed_and_one_that_did_stays(monkeypatch):
    monkeypatch.setattr(msrp_transport, "BIND_SECONDS", 0.3)

    async def scenario():
        trace = Trace()
        listener = await listening(trace)
        bound_reader, bound_writer = await connected(listener)
        await bind(listener, bound_reader, bound_writer)
        idle_reader, idle_writer = await connected(listener)   # its deadline falls after the bound one's
        assert await idle_reader.read() == b""                  # closed by the listener
        idle_writer.close()
        [note] = notes(trace, "msrp_bind_timeout")
        assert "within 0.3 s" in note and "RFC 4975 5.4" in note
        session = next(iter(listener.sessions.values()))   # the bound connection still carries its session
        bound_writer.write(msrp.chunk([session.local_uri], [PEER], msrp.new_message_id(), "text/plain",
                                      b"still here")[0].to_bytes())
        [answer] = msrp.MsrpStreamParser().feed(await bound_reader.readuntil(b"$\r\n"))
        assert answer.status == 200
        bound_writer.close()
        await listener.stop()
    run(scenario())


def test_a_message_begun_and_never_finished_closes_the_connection(monkeypatch):
    monkeypatch.setattr(partial, "PARTIAL_MESSAGE_SECONDS", 0.3)

    async def scenario():
        trace = Trace()
        listener = await listening(trace)
        reader, writer = await connected(listener)
        await bind(listener, reader, writer)
        writer.write(b"MSRP slow SEND\r\nTo-Path: " + sdp.msrp_path("127.0.0.1", listener.port, "x").encode())
        assert await reader.read() == b""
        writer.close()
        [note] = notes(trace, "partial_message_timeout")
        assert "0.3 s ago is still not complete" in note
        reader, writer = await connected(listener)      # the listener serves on
        await bind(listener, reader, writer)
        writer.close()
        await listener.stop()
    run(scenario())


def test_the_parser_knows_when_a_message_is_under_way():
    parser = msrp.MsrpStreamParser()
    assert not parser.in_a_message
    parser.feed(b"\r\n")
    assert not parser.in_a_message                   # keep-alive CRLFs are not a message
    parser.feed(b"MSRP t1 SEND\r\nTo-Path: msrp://a:1/s;tcp\r\n")
    assert parser.in_a_message
    parser.feed(b"From-Path: msrp://b:2/t;tcp\r\nMessage-ID: m\r\nByte-Range: 1-0/0\r\n-------t1$\r\n")
    assert not parser.in_a_message
