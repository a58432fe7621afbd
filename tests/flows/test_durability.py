"""Accepted means kept (issue 14): `iwlab serve` killed with SIGKILL in the middle of a burst,
restarted on the same state folder, delivers every message it answered 2xx, in order, with at
most the one in flight twice."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.raw_sip import RawSipClient, cpim_body
from tests.helpers.raw_smpp import SmppHandset
from tests.helpers.sip_client import MARY, PETER_TEL
from tests.helpers.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


class Serve:
    """`iwlab serve` in a process of its own, on a state folder."""

    def __init__(self, state: Path, tmp: Path) -> None:
        self.endpoints_file = tmp / f"endpoints-{time.monotonic_ns()}.json"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "iwlab.app.cli", "serve", "--port-base", "0", "--devices", "none", "--quiet",
             "--state-dir", str(state), "--endpoints-file", str(self.endpoints_file)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(lambda: self.endpoints_file.exists() or self.process.poll() is not None, 60, "iwlab serve listening")
        assert self.process.poll() is None, self.process.stderr.read()
        self.endpoints = json.loads(self.endpoints_file.read_text())

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self.process.stderr.close()
        self.process.stdin.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)
        self.process.stderr.close()
        self.process.stdin.close()


def burst(mary: RawSipClient, count: int, kill_after: int, serve: Serve) -> list[str]:
    """Pipeline `count` MESSAGEs (32 in flight); SIGKILL the lab once `kill_after` were answered.
    Returns the texts that got a 2xx."""
    texts = [f"m{i:04d}" for i in range(count)]
    sent: list[tuple[str, str]] = []
    accepted: list[str] = []
    for text in texts:
        sent.append((mary.request("MESSAGE", PETER_TEL, from_uri=MARY, to_uri=PETER_TEL, content_type="message/cpim",
                                  body=cpim_body(MARY, PETER_TEL, text, disposition="")), text))
        if len(sent) >= 32:
            call_id, done = sent.pop(0)
            if mary.response_to(call_id).status < 300:
                accepted.append(done)
            if len(accepted) == kill_after:
                serve.kill()
                break
    # Answers already on their way before the kill still count: they were given.
    mary.sock.settimeout(2)
    for call_id, text in sent:
        try:
            if mary.response_to(call_id).status < 300:
                accepted.append(text)
        except (OSError, ConnectionError, AssertionError):
            break
    return accepted


def collect(peter: SmppHandset, wanted: set[str], timeout: float = 60.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while not wanted <= set(got) and time.monotonic() < deadline:
        try:
            got.append(peter.next_message(timeout=max(deadline - time.monotonic(), 0.01)).short_message.decode())
        except Exception:   # noqa: BLE001 - queue.Empty at the deadline
            break
    return got


def drain(peter: SmppHandset) -> list[str]:
    """What Peter's first connection got before the kill (all of it is in his queue by now)."""
    got: list[str] = []
    while True:
        try:
            got.append(peter.next_message(timeout=1.0).short_message.decode())
        except Exception:   # noqa: BLE001 - queue.Empty: nothing more came
            return got


def check(accepted: list[str], arrived: list[str]) -> None:
    missing = [t for t in accepted if t not in arrived]
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:5]}"
    first_arrivals = list(dict.fromkeys(arrived))
    assert first_arrivals == sorted(first_arrivals), "out of order"
    # At least once, as SMPP allows no better: the one message each hop had in flight when the
    # process died may come twice (the IWF's submit_sm whose answer it never saw, the SMSC's
    # deliver_sm whose deliver_sm_resp it never read), and nothing else.
    duplicates = len(arrived) - len(first_arrivals)
    assert duplicates <= 2, f"{duplicates} duplicates"
    # Both may be the same message (submitted, delivered, and neither answer read when it died):
    # then it comes three times; still no more than one extra copy per hop.
    assert all(arrived.count(text) <= 3 for text in first_arrivals)


@pytest.mark.parametrize("count, kill_after, peter_bound", [
    (1000, 400, True),
    (300, 150, False),
], ids=["peter-bound", "peter-unbound"])
def test_sigkill_in_a_burst_loses_nothing_acknowledged(tmp_path, count, kill_after, peter_bound):
    state = tmp_path / "state"
    serve = Serve(state, tmp_path)
    peter = SmppHandset(serve.endpoints["smpp"], "15550201") if peter_bound else None
    mary = RawSipClient(serve.endpoints["sip"]["cpm-a.lab"], timeout=30)
    try:
        assert mary.register(MARY, "cpm-a.lab").status == 200
        accepted = burst(mary, count, kill_after, serve)
        assert len(accepted) >= kill_after
        before = drain(peter) if peter else []
    finally:
        mary.close()
        if peter:
            peter.close()
    again = Serve(state, tmp_path)           # the same state folder
    try:
        peter = SmppHandset(again.endpoints["smpp"], "15550201")
        arrived = before + collect(peter, set(accepted) - set(before))
        peter.close()
    finally:
        again.stop()
    check(accepted, arrived)


def test_a_stuck_device_delays_only_its_own_messages_and_they_arrive_once_mary_is_back(lab_factory, topology):
    """Mary's first client never answers; she registers again from a working one while the IWF's
    request waits: the SMS and the email held for her are delivered there, nothing dropped."""
    from iwlab.backends.protocols.cpim import parse_cpim
    from iwlab.backends.protocols.sip import SipRequest
    from tests.helpers.mail_client import john_writes
    from tests.helpers.smpp_client import peter_submits
    topology.sip_transaction_seconds = 1.0           # the silent device's try fails soon
    lab = lab_factory(devices="none")
    endpoints = lab.lab.endpoints()
    stuck = RawSipClient(endpoints["sip"]["cpm-a.lab"])
    assert stuck.register(MARY, "cpm-a.lab").status == 200
    peter = SmppHandset(endpoints["smpp"], "15550201")
    working = None
    try:
        peter_submits(peter, b"for Mary, by SMS")
        john_writes(lab, "for Mary, by email")
        stuck.receive(lambda m: isinstance(m, SipRequest) and m.method == "MESSAGE")   # ...and never answered
        working = RawSipClient(endpoints["sip"]["cpm-a.lab"])
        assert working.register(MARY, "cpm-a.lab").status == 200
        got = []
        while len(got) < 2:
            request = working.receive(lambda m: isinstance(m, SipRequest) and m.method == "MESSAGE")
            working.answer(request)
            got.append(parse_cpim(request.body).text.strip())
        assert sorted(got) == ["for Mary, by SMS", "for Mary, by email"]
    finally:
        peter.close()
        stuck.close()
        if working:
            working.close()


def test_an_email_accepted_while_the_mail_server_is_down_is_sent_by_the_next_lab(topology, tmp_path):
    """Accepted (202) with nowhere to go yet, kept in the state folder: the lab that starts next sends it."""
    from iwlab.backends.lab.lab import Lab
    from iwlab.backends.lab.lab_thread import LabThread
    first = LabThread(Lab(topology, devices="mary", state_dir=tmp_path / "state")).start()
    try:
        first.run(first.lab.mail.stop())
        message = first.run(first.lab.device("mary").send_message(first.lab.user("john"), "kept for John"))
        assert message.status == "sent"
    finally:
        first.stop()
    second = LabThread(Lab(topology, devices="john", state_dir=tmp_path / "state")).start()
    try:
        john = second.lab.device("john")
        wait_until(lambda: [i for i in john.inbox if "kept for John" in i.parsed.text], 20, "John's kept mail")
        assert [i.parsed.text.strip() for i in john.inbox] == ["kept for John"]
    finally:
        second.stop()
