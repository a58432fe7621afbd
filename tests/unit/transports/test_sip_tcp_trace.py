"""What the recording end of a SIP TCP connection puts in the trace: the octets that arrived."""
from __future__ import annotations

import asyncio

from iwlab.backends.protocols import sip
from iwlab.backends.trace import Trace
from iwlab.backends.transports.sip import SipConnection
from tests.helpers.waiting import until

# Compact forms, a folded line, odd spacing and a lower-case name: all legal (RFC 3261 7.3.1,
# 7.3.3), all of which a serialisation of the parsed message would have written otherwise.
OPTIONS = (
    b"OPTIONS sip:cpm-a.lab SIP/2.0\r\n"
    b"v: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKcompact1\r\n"
    b"f:   <sip:mary@cpm-a.lab>;tag=1\r\n"
    b"t: <sip:cpm-a.lab>\r\n"
    b"i: compact-1@cpm-a.lab\r\n"
    b"CSeq: 1\r\n OPTIONS\r\n"
    b"max-forwards: 70\r\n"
    b"l: 0\r\n"
    b"\r\n"
)


def test_an_arriving_message_is_recorded_as_the_octets_it_came_in():
    async def scenario():
        trace, handed_up = Trace(), []
        server = await asyncio.get_running_loop().create_server(
            lambda: SipConnection(lambda conn, message: handed_up.append(message), local_name="CPM-A", trace=trace),
            "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        writer.write(OPTIONS[:40])          # in two segments, split inside a header
        await writer.drain()
        writer.write(OPTIONS[40:])
        await until(lambda: handed_up, what="the OPTIONS handed up")
        writer.close()
        server.close()
        await server.wait_closed()
        return trace.events(), handed_up
    events, handed_up = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert [e.raw for e in events] == [OPTIONS]
    assert events[0].summary.startswith("OPTIONS sip:cpm-a.lab")
    message = handed_up[0]
    assert message.headers.get("Call-ID") == "compact-1@cpm-a.lab" and sip.cseq_method(message) == "OPTIONS"
    assert message.wire == b""   # the trace holds them; the message taken up does not as well
