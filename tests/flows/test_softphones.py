"""Plain softphones nobody here wrote take Mary's place (CPM-IOP-001, issue 13): PJSIP's pjsua2
(the pjsua2-python wheel) registers without CPM feature tags, over UDP and over TLS, sends
text/plain to Peter's SMS handset, and gets his SMS reply as text/plain."""
from __future__ import annotations

import importlib.util
import ssl
import time

import pytest

from tests.helpers.raw_smpp import SmppHandset
from tests.helpers.sip_client import received_text
from tests.helpers.smpp_client import encoded, peter_submits

PJSUA = importlib.util.find_spec("pjsua2") is not None


def listener(lab, node: str, transport: str, family: str = ".") -> str:
    return next(item["address"] for item in lab.lab.endpoints()["listeners"]
                if item["node"] == node and item["transport"] == transport and family in item["address"])


@pytest.mark.skipif(not PJSUA, reason="pjsua2 is not installed (pip install pjsua2-python, x86_64 CPython 3.11)")
@pytest.mark.parametrize("transport", ["udp", "tls"])
def test_pjsua_as_mary_texts_peter_and_gets_his_reply(lab_factory, transport):
    from tests.helpers.pjsua_peer import PjsuaPeer
    lab = lab_factory(devices="none")
    endpoints = lab.lab.endpoints()
    peter = SmppHandset(endpoints["smpp"], "15550201")
    mary = PjsuaPeer(user="mary", domain="cpm-a.lab", proxy=listener(lab, "CPM-A", transport), transport=transport,
                     ca=endpoints.get("ca"))
    try:
        assert mary.wait_for("registered") == 200
        mary.send("sip:+15550201@cpm-b.lab;user=phone", f"Hi Peter, over {transport}")
        assert mary.wait_for("sent") == 202
        assert received_text(peter.next_message(timeout=15)) == f"Hi Peter, over {transport}"
        peter_submits(peter, encoded("Got it"))
        reply = mary.wait_for("message")
        assert reply["text"] == "Got it" and reply["content_type"].startswith("text/plain")
    finally:
        mary.close()
        peter.close()
    registered = next(e for e in lab.lab.trace.events() if e.summary.startswith("REGISTER"))
    assert registered.transport == transport
    notes = [e.note for e in lab.lab.trace.events() if e.note]
    assert any("without CPM feature tags" in n for n in notes)   # the policy that applied is on the ladder


def test_python_ssl_client_talks_sip_over_tls_against_the_lab_ca(lab_factory):
    """Python's own TLS client trusts ca.pem (as written in the endpoints) and gets its OPTIONS answered."""
    import socket
    import uuid
    lab = lab_factory(devices="none")
    endpoints = lab.lab.endpoints()
    host, port = listener(lab, "CPM-A", "tls").rsplit(":", 1)
    context = ssl.create_default_context(cafile=endpoints["ca"])
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="cpm-a.lab") as tls:
            local = tls.getsockname()
            tls.sendall("\r\n".join([
                "OPTIONS sip:cpm-a.lab SIP/2.0", f"Via: SIP/2.0/TLS {local[0]}:{local[1]};branch=z9hG4bK{uuid.uuid4().hex}",
                "From: <sip:mary@cpm-a.lab>;tag=t1", "To: <sip:cpm-a.lab>", f"Call-ID: {uuid.uuid4().hex}",
                "CSeq: 1 OPTIONS", "Max-Forwards: 70", "Content-Length: 0", "", ""]).encode())
            deadline, answer = time.monotonic() + 10, b""
            while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
                answer += tls.recv(4096)
    assert answer.startswith(b"SIP/2.0 200")
    assert any(e.summary.startswith("OPTIONS") and e.src.startswith("127.0.0.1") for e in lab.lab.trace.events())
