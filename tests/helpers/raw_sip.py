"""A raw SIP-over-TCP client for tests: blocking socket, bytes we write ourselves.

It plays a real outside client (a softphone as Mary): nothing in it comes
from the lab's own user agent.
"""
from __future__ import annotations

import socket
import uuid

from iwlab.backends.protocols.sip import SipRequest, SipResponse, SipStreamParser, hostport


class RawSipClient:
    def __init__(self, address: str, timeout: float = 10.0) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        self.local = self.sock.getsockname()
        self.parser = SipStreamParser()
        self.inbox: list[SipRequest | SipResponse] = []
        self.cseq = 0

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self, predicate=lambda m: True) -> SipRequest | SipResponse:
        """The next message (in arrival order) that matches; others stay queued."""
        while True:
            for i, message in enumerate(self.inbox):
                if predicate(message):
                    return self.inbox.pop(i)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            for event in self.parser.feed(data):
                assert not isinstance(event, Exception), f"unparseable message from the lab: {event}"
                self.inbox.append(event)

    def response_to(self, call_id: str) -> SipResponse:
        msg = self.receive(lambda m: isinstance(m, SipResponse) and m.headers.get("Call-ID") == call_id
                           and m.status >= 200)
        assert isinstance(msg, SipResponse)
        return msg

    def request(self, method: str, uri: str, *, from_uri: str, to_uri: str, extra: list[str] = (),
                body: bytes = b"", content_type: str | None = None) -> str:
        """Write a request by hand; returns its Call-ID."""
        self.cseq += 1
        call_id = uuid.uuid4().hex
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/TCP {hostport(self.local[0], self.local[1])};branch=z9hG4bK{uuid.uuid4().hex[:16]}",
            "Max-Forwards: 70",
            f"From: <{from_uri}>;tag={uuid.uuid4().hex[:8]}",
            f"To: <{to_uri}>",
            f"Call-ID: {call_id}",
            f"CSeq: {self.cseq} {method}",
            *extra,
        ]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
        self.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return call_id

    def register(self, aor: str, domain: str, expires: int = 600) -> SipResponse:
        contact = (f"<sip:{aor.split(':')[1].split('@')[0]}@{hostport(self.local[0], self.local[1])};transport=tcp>"
                   ';+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg"')
        call_id = self.request("REGISTER", f"sip:{domain}", from_uri=aor, to_uri=aor,
                               extra=[f"Contact: {contact}", f"Expires: {expires}"])
        return self.response_to(call_id)

    def answer(self, request: SipRequest, status: int = 200, reason: str = "OK") -> None:
        lines = [f"SIP/2.0 {status} {reason}"]
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            for value in request.headers.get_all(name) if name == "Via" else [request.headers.get(name)]:
                if name == "To" and ";tag=" not in value:
                    value += ";tag=raw1"
                lines.append(f"{name}: {value}")
        lines.append("Content-Length: 0")
        self.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode())


def cpim_body(sender: str, recipient: str, text: str, message_id: str | None = None,
              disposition: str = "positive-delivery, display") -> bytes:
    message_id = message_id or uuid.uuid4().hex[:12]
    payload = text.encode("utf-8")
    return ("\r\n".join([
        f"From: <{sender}>", f"To: <{recipient}>", "DateTime: 2026-11-24T09:00:00.000Z",
        "NS: imdn <urn:ietf:params:imdn>", f"imdn.Message-ID: {message_id}",
        f"imdn.Disposition-Notification: {disposition}", "",
        "Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(payload)}", "", "",
    ])).encode() + payload
