"""A socket-level mutation run per protocol: valid conversations, mutated with a fixed seed (bytes
flipped, dropped, repeated, cut, inserted), each sent on its own connection to a running lab.

For every input the lab answers in its protocol's own frames (SIP responses, SMPP responses,
SMTP reply lines, MSRP and HTTP responses) or closes; it never crashes, never writes garbage, keeps serving a valid client
afterwards, and its memory stays bounded. A fixed budget of inputs per protocol (not of time), so
every run tries the same inputs: a failure reproduces. `make fuzz` runs 5,000 per protocol and
prints the lab's memory after each burst.
"""
from __future__ import annotations

import logging
import os
import random
import re
import socket
import struct

import pytest

from iwlab.backends.protocols import msrp, smpp
from iwlab.backends.protocols.msrp import MsrpResponse, MsrpStreamParser
from iwlab.backends.protocols.sip import SipResponse, SipStreamParser
from tests.helpers.raw_sip import RawSipClient
from tests.helpers.raw_smpp import SmppHandset
from tests.helpers.sip_client import MARY

INPUTS_PER_PROTOCOL = int(os.environ.get("IWLAB_FUZZ_INPUTS", "150"))   # `make fuzz`: many more
SEED = 4475


def sip_seed() -> bytes:
    body = b"Hi Peter"
    return (b"MESSAGE sip:+15550201@cpm-b.lab;user=phone SIP/2.0\r\n"
            b"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKfuzz1\r\n"
            b"Max-Forwards: 70\r\nFrom: <sip:eve@evil.test>;tag=f1\r\nTo: <tel:+15550201>\r\n"
            b"Call-ID: fuzz-1\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def sip_group_seed() -> bytes:
    """A group chat asked of the conference factory (RFC 5366): multipart, SDP and resource list."""
    sdp_offer = (b"v=0\r\no=eve 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                 b"m=message 9 TCP/MSRP *\r\na=accept-types:text/plain\r\na=path:msrp://127.0.0.1:9/f;tcp\r\n")
    listing = (b'<?xml version="1.0" encoding="UTF-8"?><resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">'
               b'<list><entry uri="sip:nobody@cpm-b.lab"><display-name>N</display-name></entry></list>'
               b'</resource-lists>')
    body = (b"--b1\r\nContent-Type: application/sdp\r\n\r\n" + sdp_offer + b"\r\n--b1\r\n"
            b"Content-Type: application/resource-lists+xml\r\nContent-Disposition: recipient-list\r\n\r\n"
            + listing + b"\r\n--b1--\r\n")
    return (b"INVITE sip:conference-factory@cpm-a.lab SIP/2.0\r\n"
            b"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKfuzz2\r\nMax-Forwards: 70\r\n"
            b"From: <sip:eve@evil.test>;tag=f2\r\nTo: <sip:conference-factory@cpm-a.lab>\r\n"
            b"Call-ID: fuzz-2\r\nCSeq: 1 INVITE\r\nRequire: recipient-list-invite\r\n"
            b"Content-Type: multipart/mixed;boundary=b1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def smpp_seed() -> bytes:
    bind = smpp.encode(smpp.make("bind_transceiver", 1, system_id="15550201", password="iwlab"))
    submit = smpp.encode(smpp.make("submit_sm", 2, source_addr_ton=1, source_addr="15550201", dest_addr_ton=1,
                                   destination_addr="15550101", short_message=b"hello"))
    return bind + submit


SMTP_SEED = (b"EHLO fuzz.test\r\nMAIL FROM:<eve@evil.test>\r\nRCPT TO:<mary@cpm-a.lab>\r\nDATA\r\n"
             b"From: eve@evil.test\r\nTo: mary@cpm-a.lab\r\nSubject: fuzz\r\n\r\nhello\r\n.\r\nQUIT\r\n")


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(out)) if out else 0
        kind = rng.randrange(6)
        if kind == 0 and out:                              # flip a byte
            out[where] = rng.randrange(256)
        elif kind == 1 and out:                            # drop a run
            del out[where:where + rng.randint(1, 16)]
        elif kind == 2:                                    # repeat a run
            out[where:where] = out[where:where + rng.randint(1, 64)] * rng.randint(2, 20)
        elif kind == 3:                                    # cut the rest
            del out[where:]
        elif kind == 4:                                    # insert hostile bytes
            out[where:where] = rng.choice([b"\x00", b"\r\n", b"\xff\xfe", b"%s{x}", b"\r\n.\r\n", b"<img src=x>",
                                           struct.pack(">I", rng.choice([0, 15, 16, 0xFFFFFFFF]))])
        else:                                              # a digit becomes another number
            digits = [i for i, b in enumerate(out) if 48 <= b <= 57]
            if digits:
                out[rng.choice(digits)] = rng.randrange(48, 58)
    return bytes(out)


def exchange(address: str, data: bytes) -> bytes:
    """Send, say we are done (EOF), and read everything until the lab closes."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host.strip("[]"), int(port)), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return b""          # the lab closed first (e.g. an impossible length): also an answer
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def sip_frames_ok(answer: bytes) -> bool:
    events = SipStreamParser().feed(answer)
    return all(isinstance(e, SipResponse) for e in events)


def smpp_frames_ok(answer: bytes) -> bool:
    while answer:
        if len(answer) < 16:
            return False
        length = struct.unpack(">I", answer[:4])[0]
        if length < 16 or length > len(answer):
            return False
        pdu = smpp.parse(answer[:length])
        if not pdu.is_response() and pdu.command != "deliver_sm":   # answers, or a delivery for Peter
            return False
        answer = answer[length:]
    return True


SMTP_LINE = re.compile(rb"^[2-5]\d\d[ -][^\r\n]*$")


def smtp_frames_ok(answer: bytes) -> bool:
    lines = answer.split(b"\r\n")
    return lines[-1] == b"" and all(SMTP_LINE.match(line) for line in lines[:-1])


def no_handler_failed(caplog) -> bool:
    """A protocol handler that raised is logged by asyncio ("Fatal error: protocol.data_received()
    call failed") and its connection dropped: a close that looks like an answer, so look for it."""
    failures = [r.getMessage()[:200] for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert not failures, f"{len(failures)} handler failures, the first: {failures[0]}"
    return True


HTTP_STATUS = re.compile(rb"HTTP/1\.1 [1-5]\d\d [^\r\n]*\r\n")


def http_frames_ok(answer: bytes) -> bool:
    """Whole HTTP/1.1 responses, one after another (a HEAD's has a Content-Length and no body)."""
    while answer:
        head_end = answer.find(b"\r\n\r\n")
        if not HTTP_STATUS.match(answer) or head_end < 0:
            return False
        length = re.search(rb"\r\nContent-Length: (\d+)\r\n", answer[:head_end + 2])
        rest = answer[head_end + 4:]
        body = int(length.group(1)) if length else 0
        answer = rest[body:] if len(rest) >= body and not rest.startswith(b"HTTP/1.1 ") else rest
        if answer and not answer.startswith(b"HTTP/1.1 "):
            return False
    return True


def http_seed(token_url: str) -> bytes:
    path = token_url.split("/", 3)[-1]
    return (b"GET /%s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n"
            b"GET /c/nothing HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path.encode())


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.parametrize("protocol", ["sip", "sip-group", "smpp", "smtp", "http"])
def test_mutated_conversations_get_protocol_answers_and_the_lab_keeps_serving(lab_factory, protocol, caplog):
    lab = lab_factory(devices="none")
    endpoints = lab.lab.endpoints()
    address, seed, frames_ok = {
        "sip": (endpoints["sip"]["cpm-a.lab"], sip_seed(), sip_frames_ok),
        "sip-group": (endpoints["sip"]["cpm-a.lab"], sip_group_seed(), sip_frames_ok),
        "smpp": (endpoints["smpp"], smpp_seed(), smpp_frames_ok),
        "smtp": (endpoints["smtp"], SMTP_SEED, smtp_frames_ok),
        "http": (endpoints.get("content", ""), http_seed(lab.call(lab.lab.content.put, b"a picture", "image/png")),
                 http_frames_ok),
    }[protocol]
    rng = random.Random(f"{SEED}-{protocol}")
    before = rss_mb()
    assert frames_ok(exchange(address, seed)), "the unmutated conversation itself"
    bad = []
    for n in range(INPUTS_PER_PROTOCOL):
        data = mutate(seed, rng)
        answer = exchange(address, data)
        if not frames_ok(answer):
            bad.append((n, data[:120], answer[:200]))
    assert not bad, f"{len(bad)} inputs got an answer that is not {protocol}: {bad[:3]}"
    assert no_handler_failed(caplog)
    assert lab.lab.running
    grown = rss_mb() - before
    print(f"\n{protocol}: {INPUTS_PER_PROTOCOL} mutated conversations, RSS {before:.0f} -> {rss_mb():.0f} MB")
    assert grown < 200, f"memory grew by {grown:.0f} MB over {INPUTS_PER_PROTOCOL} hostile inputs"
    # The lab goes on serving a valid client.
    if protocol.startswith("sip"):
        mary = RawSipClient(endpoints["sip"]["cpm-a.lab"])
        assert mary.register(MARY, "cpm-a.lab").status == 200
        if protocol == "sip-group":    # what reached the focus was hostile; it still makes a group
            reached = [e for e in lab.lab.trace.events() if e.dst == "Focus-A" and e.summary.startswith("INVITE")]
            assert len(reached) > INPUTS_PER_PROTOCOL // 4, "the mutated INVITEs reached the focus"
            seed = sip_group_seed().replace(b"sip:eve@evil.test", MARY.encode()).replace(b"fuzz-2", b"fuzz-ok")
            mary.send_raw(seed.replace(b"127.0.0.1:5999", b"%s:%d" % (mary.local[0].encode(), mary.local[1])))
            assert mary.response_to("fuzz-ok").status == 200
        mary.close()
    elif protocol == "smpp":
        SmppHandset(endpoints["smpp"], "15550201").close()
    elif protocol == "http":
        assert exchange(address, http_seed(lab.call(lab.lab.content.put, b"x", "text/plain"))).startswith(
            b"HTTP/1.1 200 OK")
    else:
        assert exchange(endpoints["smtp"], b"EHLO ok.test\r\nQUIT\r\n").startswith(b"220 ")


def msrp_seed(session_uri: str) -> bytes:
    """A chat session's first SEND (bodiless, naming the IWF's session) and a message in it."""
    peer = ["msrp://127.0.0.1:9/eve;tcp"]
    return (msrp.bodiless_send([session_uri], peer).to_bytes()
            + msrp.chunk([session_uri], peer, "fuzz-m1", "text/plain", b"Hi Peter")[0].to_bytes())


def msrp_frames_ok(answer: bytes) -> bool:
    parser = MsrpStreamParser()
    return all(isinstance(e, MsrpResponse) for e in parser.feed(answer)) and not parser.in_a_message


def test_mutated_msrp_gets_msrp_answers_and_the_iwf_keeps_serving(lab_factory, caplog):
    """The IWF's MSRP listener (the legacy side of a chat session), fed mutated SENDs for a session
    it answered: 200, 400, 413, 481, 501 or a close; never anything else, and it serves on."""
    lab = lab_factory(devices="none")
    listener = lab.lab.iwf.sessions.listener

    async def a_session() -> str:
        await listener.start()
        return listener.new_session(call_id="fuzz").local_uri
    address = f"127.0.0.1:{lab.run(a_session()) and listener.port}"
    rng = random.Random(f"{SEED}-msrp")
    before = rss_mb()
    assert msrp_frames_ok(exchange(address, msrp_seed(lab.run(a_session())))), "the unmutated conversation itself"
    bad = []
    for n in range(INPUTS_PER_PROTOCOL):   # each for a session of its own (a broken connection closes its session)
        data = mutate(msrp_seed(lab.run(a_session())), rng)
        answer = exchange(address, data)
        if not msrp_frames_ok(answer):
            bad.append((n, data[:120], answer[:200]))
    assert not bad, f"{len(bad)} inputs got an answer that is not MSRP: {bad[:3]}"
    assert no_handler_failed(caplog)
    print(f"\nmsrp: {INPUTS_PER_PROTOCOL} mutated conversations, RSS {before:.0f} -> {rss_mb():.0f} MB")
    assert rss_mb() - before < 200
    answer = exchange(address, msrp_seed(lab.run(a_session())))   # a new session is served as ever
    assert [e.status for e in MsrpStreamParser().feed(answer)] == [200, 200]


def udp_exchange(address: str, data: bytes, n: int) -> list[bytes]:
    """Send a datagram, then an OPTIONS probe; every datagram back until the probe's answer (what
    the mutated one got comes before it, or never: the probe is the condition, not a time)."""
    host, port = address.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        me = "%s:%d" % sock.getsockname()
        probe = (f"OPTIONS sip:cpm-a.lab SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKprobe{n}\r\n"
                 f"Max-Forwards: 70\r\nFrom: <sip:probe@fuzz.test>;tag=p{n}\r\nTo: <sip:cpm-a.lab>\r\n"
                 f"Call-ID: probe-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
        sock.sendto(data.replace(b"127.0.0.1:5999", me.encode()).replace(b"SIP/2.0/TCP", b"SIP/2.0/UDP"),
                    (host, int(port)))
        answers: list[bytes] = []
        for _ in range(5):   # UDP: the probe is sent again if it (or its answer) was lost, as Timer A would
            sock.sendto(probe, (host, int(port)))
            sock.settimeout(2)
            try:
                while not answers or f"Call-ID: probe-{n}\r\n".encode() not in answers[-1]:
                    answers.append(sock.recv(65535))
                return [a for a in answers if f"Call-ID: probe-{n}\r\n".encode() not in a]
            except socket.timeout:
                continue
        raise AssertionError(f"the probe after datagram {n} was never answered")


def test_mutated_sip_datagrams_get_sip_answers_and_the_server_keeps_serving(lab_factory, caplog):
    """SIP over UDP: each mutated datagram gets SIP responses or nothing, never garbage, and no
    handler fails; an OPTIONS after each is answered (the server keeps serving, datagram by datagram)."""
    lab = lab_factory(devices="none")
    address = lab.lab.endpoints()["sip"]["cpm-a.lab"]
    rng = random.Random(f"{SEED}-sip-udp")
    bad = []
    for n in range(INPUTS_PER_PROTOCOL):
        data = mutate(sip_seed(), rng)
        answers = udp_exchange(address, data, n)
        if not all(sip_frames_ok(a) and SipStreamParser().feed(a) for a in answers):
            bad.append((n, data[:120], answers[:2]))
    assert not bad, f"{len(bad)} datagrams got an answer that is not SIP: {bad[:3]}"
    assert no_handler_failed(caplog)
    print(f"\nsip-udp: {INPUTS_PER_PROTOCOL} mutated datagrams")
