"""The lab on IPv4 and IPv6 at once (`[lab] host = "127.0.0.1,::1"`, `--host`): SIP, SMPP and SMTP
all answer on ::1, and an SMS handset and a mail client there reach Mary."""
from __future__ import annotations

import smtplib
import socket
import time
from email.message import EmailMessage

import pytest

from iwlab.backends.protocols import smpp
from iwlab.backends.protocols.cpim import parse_cpim
from iwlab.backends.protocols.sip import SipRequest
from tests.helpers.raw_sip import RawSipClient
from tests.helpers.sip_client import MARY


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")


def v6(lab, protocol: str, node: str) -> tuple[str, int]:
    address = next(item["address"] for item in lab.lab.endpoints()["listeners"]
                   if item["protocol"] == protocol and item["node"] == node and item["address"].startswith("[::1]"))
    return "::1", int(address.rsplit(":", 1)[1])


def read_pdu(sock: socket.socket) -> bytes:
    head = b""
    while len(head) < 4:
        head += sock.recv(4 - len(head))
    rest, length = b"", int.from_bytes(head, "big") - 4
    while len(rest) < length:
        rest += sock.recv(length - len(rest))
    return head + rest


def test_an_sms_and_an_email_over_ipv6_reach_mary(lab_factory, topology):
    topology.hosts = ["127.0.0.1", "::1"]
    lab = lab_factory(devices="none")
    mary = RawSipClient(f"[::1]:{v6(lab, 'sip', 'CPM-A')[1]}")
    try:
        assert mary.register(MARY, "cpm-a.lab").status == 200
        with socket.create_connection(v6(lab, "smpp", "SMSC"), timeout=10) as handset:
            handset.sendall(smpp.encode(smpp.make("bind_transceiver", 1, system_id="15550201", password="iwlab",
                                                  system_type="", interface_version=0x34, addr_ton=0, addr_npi=0,
                                                  address_range="")))
            assert smpp.parse(read_pdu(handset)).status == 0
            handset.sendall(smpp.encode(smpp.make("submit_sm", 2, source_addr_ton=1, source_addr_npi=1,
                                                  source_addr="15550201", dest_addr_ton=1, dest_addr_npi=1,
                                                  destination_addr="15550101", short_message=b"over IPv6")))
            assert smpp.parse(read_pdu(handset)).status == 0
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "John <john@mail-b.lab>", "mary@cpm-a.lab", "v6"
        message.set_content("mail over IPv6")
        with smtplib.SMTP(*v6(lab, "smtp", "Mail"), timeout=10) as client:
            client.send_message(message)
        texts = []
        deadline = time.monotonic() + 15
        while len(texts) < 2 and time.monotonic() < deadline:
            request = mary.receive(lambda m: isinstance(m, SipRequest) and m.method == "MESSAGE")
            mary.answer(request)
            texts.append(parse_cpim(request.body).text.strip())
        assert sorted(texts) == ["mail over IPv6", "over IPv6"]
    finally:
        mary.close()
    register = next(e for e in lab.lab.trace.events() if e.summary.startswith("REGISTER"))
    assert register.src_address[0] == "::1"
    via = next(value for name, value in register.fields["headers"] if name == "Via")
    assert "[::1]:" in via                              # an IPv6 sent-by is bracketed (RFC 5118)


def test_the_trace_feed_serves_viewers_on_ipv6_too():
    import asyncio

    from iwlab.app.cli import host_and_port
    from iwlab.backends.lab.trace_feed import TraceFeed, TraceFeedClient
    from iwlab.backends.trace import Trace

    async def scenario():
        trace = Trace()
        trace.record("Mary", "CPM-A", "SIP", "MESSAGE over v6", raw=b"x")
        feed = TraceFeed(trace, ["Mary", "CPM-A"])
        await feed.start(["127.0.0.1", "::1"], 0)
        assert {host for host, _ in feed.addresses()} == {"127.0.0.1", "::1"}
        client = await TraceFeedClient.connect(*host_and_port(f"[::1]:{feed.port}"))
        async for event in client.items(0):
            break
        await client.aclose()
        await feed.stop()
        return event
    assert asyncio.run(asyncio.wait_for(scenario(), 20)).summary == "MESSAGE over v6"
