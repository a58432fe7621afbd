"""sipp (Debian package sip-tester), a SIP peer nobody here wrote, runs sessions against the lab.

Skipped when sipp is not installed (.ci/run installs it: apt-get install -y sip-tester).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from iwlab.backends.devices.events import SessionChanged
from iwlab.backends.devices.session_state import SessionState
from tests.helpers.raw_smpp import SmppHandset
from tests.helpers.sip_client import received_text
from tests.helpers.smpp_client import encoded, peter_submits
from tests.helpers.waiting import wait_until

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).parent / "sipp"
pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp is not installed (Debian package sip-tester)")


def run_sipp(scenario: str, remote: str, tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [SIPP, remote, "-sf", str(SCENARIOS / scenario), "-t", "t1", "-i", "127.0.0.1",
         "-m", "1", "-timeout", "30s", "-recv_timeout", "20000", "-nostdin", "-trace_err",
         "-error_file", str(tmp_path / "sipp-errors.log"), *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)


def test_sipp_invites_peter_who_accepts_by_sms_then_hangs_up(lab_factory, tmp_path):
    lab = lab_factory(devices="none")
    endpoints = lab.lab.endpoints()
    peter = SmppHandset(endpoints["smpp"], "15550201")
    try:
        sipp = run_sipp("uac_invite_peter.xml", endpoints["sip"]["cpm-a.lab"], tmp_path)
        invitation = received_text(peter.next_message(timeout=15))
        assert "Mary" in invitation and "YES" in invitation
        peter_submits(peter, encoded("yes"))
        _, err = sipp.communicate(timeout=30)
        errors = (tmp_path / "sipp-errors.log")
        assert sipp.returncode == 0, (err.decode(errors="replace")[-2000:],
                                      errors.read_text(errors="replace")[-2000:] if errors.exists() else "")
        assert "now chatting with Mary" in received_text(peter.next_message())
        assert "Mary ended the chat" in received_text(peter.next_message())
    finally:
        peter.close()
    hops = [(e.src, e.dst, e.summary.split()[0]) for e in lab.lab.trace.events() if e.protocol == "SIP"]
    for hop in [("CPM-B", "IWF", "INVITE"), ("IWF", "CPM-B", "180"), ("IWF", "CPM-B", "200"),
                ("CPM-B", "IWF", "ACK"), ("CPM-B", "IWF", "BYE")]:
        assert hop in hops, hop


def test_sipp_gets_603_when_peter_declines(lab_factory, tmp_path):
    lab = lab_factory(devices="none")
    endpoints = lab.lab.endpoints()
    peter = SmppHandset(endpoints["smpp"], "15550201")
    try:
        sipp = run_sipp("uac_declined.xml", endpoints["sip"]["cpm-a.lab"], tmp_path)
        peter.next_message(timeout=15)
        peter_submits(peter, encoded("NO thanks"))
        _, err = sipp.communicate(timeout=30)
        assert sipp.returncode == 0, err.decode(errors="replace")[-2000:]
    finally:
        peter.close()


def test_sipp_cancels_before_peter_answers(lab_factory, tmp_path):
    lab = lab_factory(devices="none")
    endpoints = lab.lab.endpoints()
    peter = SmppHandset(endpoints["smpp"], "15550201")
    try:
        sipp = run_sipp("uac_cancel.xml", endpoints["sip"]["cpm-a.lab"], tmp_path)
        peter.next_message(timeout=15)
        _, err = sipp.communicate(timeout=30)
        assert sipp.returncode == 0, err.decode(errors="replace")[-2000:]
        assert "withdrew" in received_text(peter.next_message())
    finally:
        peter.close()


def test_sipp_invites_marys_phone_which_accepts(lab_factory, tmp_path):
    """Mary's simulated phone as the UAS of a session, facing sipp: 180, 200 with its SDP answer, ACK, BYE."""
    lab = lab_factory(devices="mary")
    device = lab.lab.device("mary")
    states: list = []
    lab.call(device.listeners.append,
             lambda event: states.append(event.state) if isinstance(event, SessionChanged) else None)
    sipp = run_sipp("uac_invite_mary.xml", lab.lab.endpoints()["sip"]["cpm-a.lab"], tmp_path)
    wait_until(lambda: SessionState.INCOMING in states or sipp.poll() is not None, 15, "an invitation at Mary's phone")
    assert SessionState.INCOMING in states, "no invitation reached Mary's phone"
    session = lab.call(lambda: next(iter(device.sessions.sessions.values())))
    lab.run(device.sessions.accept(session))
    _, err = sipp.communicate(timeout=30)
    assert sipp.returncode == 0, err.decode(errors="replace")[-2000:]
    wait_until(lambda: SessionState.ENDED in states, 10, "the session's end")
    assert states == [SessionState.INCOMING, SessionState.ESTABLISHED, SessionState.ENDED]
    assert session.reason == "Sipp ended the session"


def udp_register(server: str, aor: str, contact_port: int) -> int:
    """A REGISTER over UDP whose Contact is another port (sipp's, as a softphone would): the status."""
    import socket
    import uuid
    host, port = server.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()
        request = "\r\n".join([
            "REGISTER sip:cpm-a.lab SIP/2.0", f"Via: SIP/2.0/UDP {local[0]}:{local[1]};rport;branch=z9hG4bK{uuid.uuid4().hex}",
            f"From: <{aor}>;tag=reg1", f"To: <{aor}>", f"Call-ID: {uuid.uuid4().hex}", "CSeq: 1 REGISTER",
            f"Contact: <sip:mary@127.0.0.1:{contact_port}>;+g.3gpp.icsi-ref="
            '"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg,urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session"',
            "Expires: 600", "Max-Forwards: 70", "Content-Length: 0", "", ""])
        sock.sendto(request.encode(), (host, int(port)))
        return int(sock.recvfrom(65535)[0].split(b" ")[1])


def free_udp_port() -> int:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_udp_bound(port: int, timeout: float = 10.0) -> None:
    """Until something (sipp) listens on the UDP port: a proxy does not retransmit a request it
    forwards over UDP, so an INVITE sent before sipp has bound its socket is lost. Read from
    /proc/net/udp, without touching the port (a probe bind could take it from sipp)."""
    def listening() -> bool:
        with open("/proc/net/udp") as table:
            return any(line.split()[1].endswith(f":{port:04X}") for line in list(table)[1:])
    wait_until(listening, timeout, f"sipp listening on UDP port {port}")


def test_sipp_as_mary_answers_486_and_gets_the_ack(lab_factory, tmp_path):
    """A UAS that refuses gets the ACK its 486 is owed, from CPM-A (hop by hop, RFC 3261 16.7/17.1.1.3),
    over UDP, to the Contact it registered."""
    lab = lab_factory(devices="none")
    endpoints = lab.lab.endpoints()
    port = free_udp_port()
    sipp = subprocess.Popen(
        [SIPP, "-sf", str(SCENARIOS / "uas_mary_busy.xml"), "-t", "u1", "-i", "127.0.0.1", "-p", str(port),
         "-m", "1", "-timeout", "30s", "-nostdin", "-trace_err", "-error_file", str(tmp_path / "sipp-errors.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    peter = SmppHandset(endpoints["smpp"], "15550201")
    try:
        wait_udp_bound(port)
        assert udp_register(endpoints["sip"]["cpm-a.lab"], "sip:mary@cpm-a.lab", port) == 200
        peter_submits(peter, encoded("CHAT"))
        _, err = sipp.communicate(timeout=30)
        errors = tmp_path / "sipp-errors.log"
        assert sipp.returncode == 0, (err.decode(errors="replace")[-2000:],
                                      errors.read_text(errors="replace")[-2000:] if errors.exists() else "")
    finally:
        peter.close()
        if sipp.poll() is None:
            sipp.kill()
            sipp.communicate()

    def acks():
        return [(e.src, e.dst) for e in lab.lab.trace.events() if e.protocol == "SIP" and e.summary.startswith("ACK")]
    wanted = [("CPM-A", "127.0.0.1:%d" % port),     # CPM-A ACKs sipp's 486 itself
              ("CPM-B", "CPM-A"),                   # CPM-B the 486 CPM-A relayed
              ("IWF", "CPM-B")]                     # and the IWF's INVITE client the 486 it got
    # sipp is done at its own ACK; the others follow
    wait_until(lambda: all(hop in acks() for hop in wanted), 10, f"the ACKs {wanted}")


@pytest.mark.parametrize("transport, family", [("u1", "127.0.0.1"), ("t1", "::1")],
                         ids=["udp-ipv4", "tcp-ipv6"])
def test_sipp_as_mary_writes_to_peter(lab_factory, topology, tmp_path, transport, family):
    """CPM-IOP-001: the same message from a client nobody here wrote, over UDP on IPv4 and over TCP on IPv6."""
    topology.hosts = ["127.0.0.1", "::1"]
    lab = lab_factory(devices="none")
    address = next(item["address"] for item in lab.lab.endpoints()["listeners"]
                   if item["node"] == "CPM-A" and item["transport"] == ("udp" if transport == "u1" else "tcp")
                   and (":" in item["address"].rsplit(":", 1)[0]) == (":" in family))
    peter = SmppHandset(lab.lab.endpoints()["smpp"], "15550201")
    try:
        sipp = subprocess.Popen(
            [SIPP, address, "-sf", str(SCENARIOS / "uac_register_message.xml"), "-t", transport, "-i", family,
             "-m", "1", "-timeout", "30s", "-recv_timeout", "20000", "-nostdin", "-trace_err",
             "-error_file", str(tmp_path / "sipp-errors.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
        _, err = sipp.communicate(timeout=40)
        errors = tmp_path / "sipp-errors.log"
        assert sipp.returncode == 0, (err.decode(errors="replace")[-2000:],
                                      errors.read_text(errors="replace")[-2000:] if errors.exists() else "")
        text = received_text(peter.next_message(timeout=15)).strip()
        assert text == f"Hello from sipp over {'UDP' if transport == 'u1' else 'TCP'}"
    finally:
        peter.close()
    message = next(e for e in lab.lab.trace.events() if e.summary.startswith("MESSAGE") and e.dst == "CPM-A")
    assert message.transport == ("udp" if transport == "u1" else "tcp")
    assert (":" in message.src_address[0]) == (family == "::1")
