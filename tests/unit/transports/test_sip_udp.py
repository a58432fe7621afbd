"""SIP over UDP on real loopback sockets: flows per address, retransmissions, received/rport."""
from __future__ import annotations

import asyncio
import socket

from iwlab.backends.protocols import sip
from iwlab.backends.protocols.sip import SipRequest
from iwlab.backends.trace import Trace
from iwlab.backends.transports.sip_udp import open_udp_endpoint


def options(sent_by: tuple[str, int], rport: bool = True) -> SipRequest:
    request = sip.make_request("OPTIONS", "sip:cpm-a.lab", via=sent_by, from_="<sip:mary@cpm-a.lab>;tag=1",
                               to="<sip:cpm-a.lab>", call_id=sip.new_call_id("x"), cseq=1)
    via = sip.with_via_transport(request.headers.get_all("Via")[0], "UDP")
    request.headers.replace_top("Via", via + ";rport" if rport else via)
    return request


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_a_request_is_answered_on_the_flow_it_came_from_with_received_and_rport():
    async def scenario():
        seen = []

        def answer(flow, message):
            seen.append(message)
            flow.send(sip.make_response(message, 200, to_tag="t"))
        trace = Trace()
        server = await open_udp_endpoint("127.0.0.1", 0, answer, local_name="CPM-A", trace=trace)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind(("127.0.0.1", 0))
        client.settimeout(5)
        # sent-by names another port than the one we send from: rport says where to answer
        sent = options(("127.0.0.1", 9)).to_bytes()
        client.sendto(sent, server.local_address)
        data = await asyncio.get_running_loop().run_in_executor(None, client.recvfrom, 65535)
        response = sip.parse_message(data[0])
        server.close()
        client.close()
        return seen, response, trace.events()[0], sent
    seen, response, recorded, sent = run(scenario())
    via = sip.parse_via(response.headers.get_all("Via")[0])
    assert response.status == 200
    assert via.params["received"] == "127.0.0.1" and via.params["rport"] not in (None, "9")
    assert seen[0].headers.get_all("Via")[0].endswith(f";rport={via.params['rport']};received=127.0.0.1")
    # The trace has the request as the client sent it: its bytes, and its decoded Via too.
    assert recorded.raw == sent
    assert [v for k, v in recorded.fields["headers"] if k == "Via"] == [sip.parse_message(sent).headers.get("Via")]


def test_a_retransmitted_request_gets_the_same_answer_and_is_handed_up_once():
    async def scenario():
        handed_up = []

        def answer(flow, message):
            handed_up.append(message)
            flow.send(sip.make_response(message, 200, to_tag="t"))
        server = await open_udp_endpoint("127.0.0.1", 0, answer, local_name="CPM-A")
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(5)
        raw = options(("127.0.0.1", 9)).to_bytes()
        loop = asyncio.get_running_loop()
        client.sendto(raw, server.local_address)
        first = await loop.run_in_executor(None, client.recvfrom, 65535)
        client.sendto(raw, server.local_address)      # as if our 200 had been lost
        again = await loop.run_in_executor(None, client.recvfrom, 65535)
        server.close()
        client.close()
        return handed_up, first[0], again[0]
    handed_up, first, again = run(scenario())
    assert len(handed_up) == 1 and first == again


def test_an_unanswered_request_is_retransmitted_until_the_answer_comes():
    async def scenario():
        client_end = await open_udp_endpoint("127.0.0.1", 0, lambda flow, message: None, local_name="IWF")
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(5)
        flow = client_end.flow(peer.getsockname())
        request = options(client_end.local_address, rport=False)
        pending = flow.request(request)
        loop = asyncio.get_running_loop()
        first = await loop.run_in_executor(None, peer.recvfrom, 65535)     # dropped on purpose
        second = await loop.run_in_executor(None, peer.recvfrom, 65535)    # T1 later
        peer.sendto(sip.make_response(sip.parse_message(second[0]), 200, to_tag="t").to_bytes(), second[1])
        response = await asyncio.wait_for(pending, 5)
        client_end.close()
        peer.close()
        return first[0], second[0], response
    first, second, response = run(scenario())
    assert first == second and response.status == 200
