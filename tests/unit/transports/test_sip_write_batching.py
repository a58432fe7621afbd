"""What a SIP connection writes while it handles the bytes it received goes out in one write per
connection, in order, once they are handled; what is written at any other time goes at once."""
from __future__ import annotations

import asyncio
import gc
import weakref

from iwlab.backends.protocols import sip
from iwlab.backends.transports.sip import SipConnection
from tests.helpers.recording_transport import RecordingTransport
from tests.helpers.waiting import until


def options(n: int) -> bytes:
    return sip.make_request("OPTIONS", "sip:cpm-a.lab", via=("127.0.0.1", 5999), from_=f"<sip:mary@cpm-a.lab>;tag={n}",
                            to="<sip:cpm-a.lab>", call_id=f"batch-{n}", cseq=n).to_bytes()


def test_the_answers_and_forwards_of_one_chunk_leave_in_one_write_per_connection_in_order():
    async def scenario():
        onward = SipConnection(lambda conn, message: None, local_name="CPM-A")
        onward_transport = RecordingTransport(onward, peer=("127.0.0.1", 5062))

        def answer_and_forward(conn, request):
            onward.send(request)                                      # another connection's write
            conn.send(sip.make_response(request, 200, "OK", to_tag="a"))
            assert not transport.written, "written before the chunk was handled"

        conn = SipConnection(answer_and_forward, local_name="CPM-A")
        transport = RecordingTransport(conn)
        conn.data_received(options(1) + options(2) + options(3))
        assert len(transport.written) == 1 and len(onward_transport.written) == 1
        assert [m.headers.get("Call-ID") for m in transport.sent_sip()] == ["batch-1", "batch-2", "batch-3"]
        assert [m.status for m in transport.sent_sip()] == [200, 200, 200]
        assert [m.headers.get("Call-ID") for m in onward_transport.sent_sip()] == ["batch-1", "batch-2", "batch-3"]
        onward.send(sip.parse_message(options(4)))                    # outside a chunk: at once
        assert len(onward_transport.written) == 2
    asyncio.run(scenario())


def test_a_task_begun_while_a_chunk_was_handled_writes_when_it_runs():
    async def scenario():
        def answer_later(conn, request):
            async def later():
                conn.send(sip.make_response(request, 200, "OK", to_tag="a"))
            asyncio.get_running_loop().create_task(later())   # it inherits the chunk's context

        conn = SipConnection(answer_later, local_name="CPM-A")
        transport = RecordingTransport(conn)
        conn.data_received(options(1))
        await until(lambda: transport.written, what="the task's answer written")
        assert [m.status for m in transport.sent_sip()] == [200]
    asyncio.run(scenario())


def test_what_was_written_before_a_close_in_the_chunk_goes_before_it():
    async def scenario():
        def answer_and_close(conn, request):
            conn.send(sip.make_response(request, 200, "OK", to_tag="a"))
            conn.close()

        conn = SipConnection(answer_and_close, local_name="CPM-A")
        transport = RecordingTransport(conn)   # asserts that nothing is written after the close
        conn.data_received(options(1) + options(2))
        assert [m.status for m in transport.sent_sip()] == [200] and transport.is_closing()
    asyncio.run(scenario())


def test_a_task_begun_in_a_chunk_does_not_keep_the_connections_that_wrote_in_it():
    async def scenario():
        lingering = asyncio.Event()
        tasks = []

        def answer_and_linger(conn, request):
            conn.send(sip.make_response(request, 200, "OK", to_tag="a"))
            tasks.append(asyncio.get_running_loop().create_task(lingering.wait()))   # the chunk's context

        conn = SipConnection(answer_and_linger, local_name="CPM-A")
        transport = RecordingTransport(conn)
        conn.data_received(options(1))
        conn.close()
        closed = conn.closed
        await until(closed.done, what="the connection closed")
        gone = weakref.ref(conn)
        del conn, transport
        gc.collect()
        assert gone() is None, "a lingering task's context kept the connection"
        lingering.set()
        await asyncio.gather(*tasks)
    asyncio.run(scenario())
