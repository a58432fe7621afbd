"""RFC 4475 torture messages sent over TCP to a running CPM server.

Each file goes on a fresh connection, which the client then half-closes so
a message that can never complete is answered too. A valid message must be
parsed and answered sensibly (never 400), an invalid one answered with the
status RFC 4475 names, a response never answered, and the server must keep
serving after every one.
"""
import socket

import pytest

from iwlab.backends.protocols.sip import SipResponse, SipStreamParser
from tests.helpers.raw_sip import RawSipClient
from tests.helpers.rfc4475 import RFC4475_DIR, RFC4475_EXPECTATIONS, stream_expectations

pytestmark = pytest.mark.skipif(not RFC4475_DIR.is_dir(), reason="RFC 4475 files not available")


@pytest.fixture(scope="module")
def cpm_b():
    from iwlab.backends.lab.lab import Lab
    from iwlab.backends.lab.lab_thread import LabThread
    from iwlab.backends.topology import load_topology
    runner = LabThread(Lab(load_topology().with_free_ports(), devices="none")).start()
    yield runner.lab.endpoints()["sip"]["cpm-b.lab"]
    runner.stop()


def exchange(address: str, data: bytes) -> list[SipResponse]:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    parser = SipStreamParser()
    messages = parser.feed(received) + parser.feed_eof()
    assert all(isinstance(m, SipResponse) for m in messages), f"the server sent something unreadable: {messages}"
    return messages


def still_serving(address: str) -> None:
    client = RawSipClient(address)
    try:
        call_id = client.request("OPTIONS", "sip:cpm-b.lab", from_uri="sip:probe@cpm-a.lab", to_uri="sip:cpm-b.lab")
        assert client.response_to(call_id).status == 200
    finally:
        client.close()


@pytest.mark.parametrize("name", sorted(RFC4475_EXPECTATIONS))
def test_torture_message_over_tcp(cpm_b, name):
    responses = exchange(cpm_b, (RFC4475_DIR / name).read_bytes())
    statuses = [r.status for r in responses]
    expected_requests = [(kind, value) for kind, value in stream_expectations(name)
                         if not (kind == "accept" and isinstance(value, int))
                         and not (kind == "reject" and name in RESPONSE_FILES)]
    assert len(statuses) == len(expected_requests), f"{name}: got {statuses} for {expected_requests}"
    for status, (kind, value) in zip(statuses, expected_requests):
        if kind == "accept":
            assert status not in (400, 505) and status >= 200, f"{name}: valid {value} answered {status}"
        else:
            assert status == value, f"{name}: expected {value}, got {status}"
    if RFC4475_EXPECTATIONS[name] == ("reject", 420):
        assert responses[0].headers.get("Unsupported"), "a 420 lists what is unsupported"
    still_serving(cpm_b)


RESPONSE_FILES = {"scalarlg.dat", "bigcode.dat", "unreason.dat", "noreason.dat", "bcast.dat"}
