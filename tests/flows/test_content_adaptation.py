"""Content adaptation (CPM-IOP-xxx-7): what SMS and email cannot carry as text never goes as raw bytes.

Mary is a raw SIP client sending CPIM bodies of image/png and FT-over-HTTP XML; Peter is a real
smpplib client; John's Maildir is read with the stdlib. Peter's link is fetched with urllib from
the lab's own HTTP content server, over loopback.
"""
from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from iwlab.backends.nodes.iwf.content import FT_HTTP
from tests.helpers.mail_client import wait_for_mail
from tests.helpers.raw_sip import RawSipClient
from tests.helpers.raw_smpp import SmppHandset
from tests.helpers.sip_client import MARY, PETER_TEL, received_text

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89" \
      b"\x00\x00\x00\nIDATx\x9cc\x00\x01\x00\x00\x05\x00\x01\r\n-\xb4\x00\x00\x00\x00IEND\xaeB`\x82"
FT_XML = (b'<?xml version="1.0" encoding="UTF-8"?>\n<file xmlns="urn:gsma:params:xml:ns:rcs:rcs:fthttp">'
          b'<file-info type="file"><file-size>24000</file-size><file-name>plan.pdf</file-name>'
          b'<content-type>application/pdf</content-type>'
          b'<data url="https://ft.cpm-a.lab/f/plan" until="2026-12-31T00:00:00Z"/></file-info></file>')


def cpim_payload(recipient: str, body: bytes, content_type: str, disposition: str = "") -> bytes:
    head = ["From: <sip:mary@cpm-a.lab>", f"To: <{recipient}>", "DateTime: 2026-11-24T09:00:00.000Z",
            "NS: imdn <urn:ietf:params:imdn>", "imdn.Message-ID: content-1"]
    if disposition:
        head.append(f"imdn.Disposition-Notification: {disposition}")
    head += ["", f"Content-Type: {content_type}", 'Content-Disposition: inline; filename="dot.png"',
             f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(head).encode() + body


@pytest.fixture
def lab_mary_peter(lab_factory):
    lab = lab_factory(devices="none")
    endpoints = lab.lab.endpoints()
    mary = RawSipClient(endpoints["sip"]["cpm-a.lab"])
    assert mary.register(MARY, "cpm-a.lab").status == 200
    peter = SmppHandset(endpoints["smpp"], "15550201")
    yield lab, mary, peter
    mary.close()
    peter.close()


def send(mary: RawSipClient, to: str, body: bytes, content_type: str) -> None:
    call_id = mary.request("MESSAGE", to, from_uri=MARY, to_uri=to, content_type="message/cpim",
                           body=cpim_payload(to, body, content_type),
                           extra=["Conversation-ID: conv-pic", "Contribution-ID: contrib-pic"])
    assert mary.response_to(call_id).status == 202


@pytest.mark.parametrize("body, content_type, words", [
    (PNG, "image/png", "Mary sent an image (dot.png, image/png, 67 B): "),
    (FT_XML, FT_HTTP, "Mary sent a file (plan.pdf, application/pdf, 24.0 kB): "),
])
def test_peter_gets_a_short_text_with_a_link_that_returns_the_original(lab_mary_peter, body, content_type, words):
    lab, mary, peter = lab_mary_peter
    send(mary, PETER_TEL, body, content_type)
    text = received_text(peter.next_message())
    assert text.startswith(words), text
    assert "\ufffd" not in text and "PNG" not in text and "<file" not in text     # never the raw bytes
    [link] = re.findall(r"http://127\.0\.0\.1:\d+/c/\S+", text)
    assert link.startswith("http://" + lab.lab.endpoints()["content"])
    with urllib.request.urlopen(link, timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"] == content_type
        assert answer.read() == body
    served = [e for e in lab.lab.trace.events() if e.protocol == "HTTP" and e.src == "Content"]
    assert served and served[-1].summary.startswith("200 OK") and served[-1].raw.endswith(body)


def test_the_content_server_serves_nothing_else(lab_mary_peter):
    lab, _, _ = lab_mary_peter
    base = "http://" + lab.lab.endpoints()["content"]
    for path in ("/c/guess", "/", "/c/../etc/passwd"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + path, timeout=10)
        refused.value.close()
        assert refused.value.code == 404
    request = urllib.request.Request(base + "/c/x", data=b"x" * 10, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    refused.value.close()
    assert refused.value.code in (405, 413)


def test_john_gets_the_image_as_an_attachment(lab_mary_peter):
    lab, mary, _ = lab_mary_peter
    send(mary, "tel:+15550202", PNG, "image/png")
    [stored] = wait_for_mail(lab)
    parts = list(stored.walk())
    text = next(p for p in parts if p.get_content_type() == "text/plain").get_payload(decode=True).decode()
    assert text.startswith("Mary sent an image (dot.png, image/png, 67 B), attached.")
    [image] = [p for p in parts if p.get_content_type() == "image/png"]
    assert image.get_filename() == "dot.png" and image.get_payload(decode=True) == PNG


def test_an_oversized_head_gets_431_and_two_requests_share_a_connection(lab_mary_peter):
    import socket
    lab, _, _ = lab_mary_peter
    host, port = lab.lab.endpoints()["content"].rsplit(":", 1)
    link = lab.call(lab.lab.content.put, b"hello", "text/plain", "")
    path = link.split(port, 1)[1].encode()
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall((b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n") * 2)
        data = b""
        while data.count(b"hello") < 2:
            chunk = conn.recv(65536)
            assert chunk, f"the connection closed after {data!r}"
            data += chunk
        assert data.count(b"HTTP/1.1 200 OK") == 2
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n")
        assert conn.recv(65536).startswith(b"HTTP/1.1 431 ")
