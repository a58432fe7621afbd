"""Shared by the flow tests (moved from test_sessions.py)."""
from __future__ import annotations

import socket
import uuid

from iwlab.backends.protocols import msrp, sdp
from iwlab.backends.protocols.msrp import MsrpRequest, MsrpResponse
from iwlab.backends.protocols.sip import SipResponse
from tests.helpers.raw_sip import RawSipClient
from tests.helpers.raw_smpp import SmppHandset
from tests.helpers.sip_client import MARY, PETER_TEL, received_text
from tests.helpers.smpp_client import encoded, peter_submits
from tests.helpers.waiting import wait_until

SESSION_SERVICE = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session"


class RawMsrpClient:
    """A blocking MSRP endpoint: bound before the offer so its a=path names a real address."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.settimeout(10)
        self.uri = sdp.msrp_path(host, self.sock.getsockname()[1], uuid.uuid4().hex[:12])
        self.parser = msrp.MsrpStreamParser()
        self.inbox: list[MsrpRequest | MsrpResponse] = []
        self.to_path: list[str] = []
        self.connected = False

    def offer(self) -> bytes:
        host, port = self.sock.getsockname()
        o = sdp.offer(host=host, port=port, session_id_path="x")
        o.path = [self.uri]
        return o.to_bytes()

    def connect(self, answer: sdp.MsrpSdp) -> None:
        self.to_path = list(answer.path)
        self.sock.connect(answer.connect_address())
        self.connected = True
        self.sock.sendall(msrp.bodiless_send(self.to_path, [self.uri]).to_bytes())

    def accept(self, offer: sdp.MsrpSdp) -> None:
        """The answerer's side: the offerer connects to us and binds with a bodiless SEND."""
        self.to_path = list(offer.path)
        listener = self.sock
        self.sock, _ = listener.accept()
        self.sock.settimeout(10)
        listener.close()
        self.connected = True

    def answer_sdp(self, offer: sdp.MsrpSdp) -> bytes:
        """Our SDP answer; we listen from now on (the offerer may connect as soon as it reads it)."""
        self.sock.listen(1)
        host, port = self.sock.getsockname()
        return sdp.answer(offer, host=host, port=port, path=self.uri).to_bytes()

    def send(self, text: str, max_chunk: int = 2048, headers=()) -> list[str]:
        sends = msrp.chunk(self.to_path, [self.uri], msrp.new_message_id(), "text/plain", text.encode(),
                           max_chunk=max_chunk, headers=list(headers))
        for req in sends:
            self.sock.sendall(req.to_bytes())
        return [req.transaction_id for req in sends]

    def answer(self, req: MsrpRequest) -> None:
        self.sock.sendall(msrp.response_for(req, 200, local_uri=self.uri).to_bytes())

    def receive(self, predicate) -> MsrpRequest | MsrpResponse:
        while True:
            for i, message in enumerate(self.inbox):
                if predicate(message):
                    return self.inbox.pop(i)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("MSRP peer closed")
            for event in self.parser.feed(data):
                assert not isinstance(event, Exception), event
                self.inbox.append(event)

    def next_text(self) -> str:
        """The next whole message sent to us (answered 200), chunks joined."""
        reassembler = msrp.Reassembler()
        while True:
            req = self.receive(lambda m: isinstance(m, MsrpRequest) and m.method == "SEND")
            self.answer(req)
            body = reassembler.add(req)
            if body is not None:
                return body.decode()

    def close(self) -> None:
        self.sock.close()


def invite(mary: RawSipClient, offer: bytes, to: str = PETER_TEL) -> str:
    return mary.request("INVITE", to, from_uri=MARY, to_uri=to, content_type="application/sdp", body=offer,
                        extra=[f"Contact: <sip:mary@{mary.local[0]}:{mary.local[1]};transport=tcp>",
                               f"P-Preferred-Service: {SESSION_SERVICE}",
                               "Contribution-ID: contrib-session-1", "Conversation-ID: conv-session-1"])


def final(mary: RawSipClient, call_id: str, method: str = "INVITE") -> SipResponse:
    msg = mary.receive(lambda m: isinstance(m, SipResponse) and m.headers.get("Call-ID") == call_id
                       and m.status >= 200 and m.headers.get("CSeq").endswith(method))
    assert isinstance(msg, SipResponse)
    return msg


def in_dialog(mary: RawSipClient, method: str, response: SipResponse, cseq: int) -> None:
    """ACK / BYE / CANCEL written by hand from the INVITE's response."""
    routes = list(reversed(response.headers.get_all("Record-Route")))
    contact = response.headers.get("Contact")
    target = contact.strip("<>").split(">")[0] if contact else response.headers.get("To").split("<")[1].split(">")[0]
    lines = [f"{method} {target} SIP/2.0",
             f"Via: SIP/2.0/TCP {mary.local[0]}:{mary.local[1]};branch=z9hG4bK{uuid.uuid4().hex[:16]}",
             "Max-Forwards: 70", *[f"Route: {r}" for r in routes],
             f"From: {response.headers.get('From')}", f"To: {response.headers.get('To')}",
             f"Call-ID: {response.headers.get('Call-ID')}", f"CSeq: {cseq} {method}", "Content-Length: 0"]
    mary.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode())


def cancel(mary: RawSipClient, invite_raw: dict) -> None:
    lines = ["CANCEL " + invite_raw["uri"] + " SIP/2.0", f"Via: {invite_raw['via']}", "Max-Forwards: 70",
             f"From: {invite_raw['from']}", f"To: {invite_raw['to']}", f"Call-ID: {invite_raw['call_id']}",
             f"CSeq: {invite_raw['cseq']} CANCEL", "Content-Length: 0"]
    mary.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode())


def answer_sms(peter: SmppHandset, text: str, to: str = "15550101") -> None:
    peter_submits(peter, encoded(text), to=to)


def sms_text(peter: SmppHandset) -> str:
    return received_text(peter.next_message())


def wait_for(predicate, timeout: float = 10.0) -> None:
    wait_until(predicate, timeout)


def establish(mary, peter, media):
    """Mary invites Peter, he answers YES, she ACKs and opens MSRP; his "now chatting" text is read."""
    call_id = invite(mary, media.offer())
    peter.next_message()
    answer_sms(peter, "YES")
    ok = final(mary, call_id)
    in_dialog(mary, "ACK", ok, 1)
    media.connect(sdp.parse_sdp(ok.body))
    sms_text(peter)
    return call_id, ok
