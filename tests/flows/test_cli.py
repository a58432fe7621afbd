"""The command line as a user runs it: `iwlab serve`, `iwlab play`, and `iwlab` with no display."""
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.raw_sip import RawSipClient
from tests.helpers.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def iwlab(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "iwlab.app.cli", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or os.environ.copy(), **kwargs)


def finished(proc: subprocess.Popen, seconds: float = 100) -> tuple[str, str]:
    """Its output once it exits; if it has not within `seconds` (under pytest-timeout's 120), the
    test fails with what it printed so far, which says where it stood."""
    try:
        return proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"still running after {seconds:g} s; its output ends:\n{out[-6000:]}\n{err[-3000:]}")


def listening(proc: subprocess.Popen, endpoints_file: Path) -> None:
    """Until `serve` has written its endpoints (it fails the test if the lab exits first)."""
    def written() -> bool:
        assert proc.poll() is None, proc.stderr.read()
        return endpoints_file.exists()
    wait_until(written, 30, "iwlab serve listening")


def without_display() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    return env


def test_serve_writes_endpoints_prints_pdus_and_stops_cleanly_on_sigterm(tmp_path):
    endpoints_file = tmp_path / "endpoints.json"
    proc = iwlab("serve", "--port-base", "0", "--devices", "peter", "--endpoints-file", str(endpoints_file))
    try:
        listening(proc, endpoints_file)
        endpoints = json.loads(endpoints_file.read_text())
        assert set(endpoints["sip"]) == {"cpm-a.lab", "cpm-b.lab"}
        for address in [*endpoints["sip"].values(), endpoints["smpp"]]:
            host, port = address.rsplit(":", 1)
            assert host == "127.0.0.1" and int(port) > 0
        # A real client takes Mary's place (she is not simulated: --devices peter).
        mary = RawSipClient(endpoints["sip"]["cpm-a.lab"])
        assert mary.register("sip:mary@cpm-a.lab", "cpm-a.lab").status == 200
        mary.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "SIP  UDP CPM-A (cpm-a.lab)" in out and "SIP  TLS CPM-B (cpm-b.lab)" in out and "SMPP TCP SMSC" in out
    assert "SMTP TCP Mail" in out and "Maildir" in out and "ca.pem" in out
    assert "Mary" in out and "not simulated" in out
    assert "REGISTER sip:cpm-a.lab" in out          # one line per PDU, live
    assert "Stopping the lab" in out
    assert "Traceback" not in err


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_leaves_no_work_folder_behind(tmp_path, stop_signal):
    """Without a state folder of the user's, the lab's temporary folder goes when it stops."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    endpoints_file = tmp_path / "endpoints.json"
    proc = iwlab("serve", "--port-base", "0", "--quiet", "--endpoints-file", str(endpoints_file),
                 env={**os.environ, "TMPDIR": str(temp)})
    try:
        listening(proc, endpoints_file)
        maildir = Path(json.loads(endpoints_file.read_text())["maildir"])
        assert maildir.is_relative_to(temp) and maildir.exists()
    finally:
        proc.send_signal(stop_signal)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert list(temp.iterdir()) == []


def test_play_runs_the_flows_headless_and_reports_verdicts():
    proc = iwlab("play", "--port-base", "0", env=without_display())
    out, err = finished(proc)
    assert proc.returncode == 0, out + err
    assert "PASS  5.8.5" in out and "PASS  5.9.6" in out
    assert re.search(r"^\d+ passed, 0 failed$", out, re.MULTILINE)
    assert "deliver_sm" in out and "MESSAGE (CPIM)" in out
    assert "passed         CPM-IOP-002" in out


def test_no_display_runs_the_flows_instead_of_a_window():
    proc = iwlab(env=without_display())
    out, err = finished(proc)
    assert proc.returncode == 0, out + err
    assert "no display" in out
    assert "PASS  5.8.5" in out


@pytest.mark.parametrize("args, message", [
    (["serve", "--devices", "nobody"], "unknown device"),
    (["play", "9.9.9"], "unknown use case"),
    (["serve", "--topology", "/nonexistent.toml"], "nonexistent.toml"),
])
def test_bad_arguments_get_a_clear_error(args, message):
    proc = iwlab(*args, "--port-base", "0", env=without_display())
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert message in err


def test_serve_takes_commands_on_stdin(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "iwlab.app.cli", "serve", "--port-base", "0", "--quiet"],
                            cwd=ROOT, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        proc.stdin.write("threads pool\nstate peter roaming=yes\n")
        proc.stdin.flush()
        lines = []
        while not any("roaming in a network without CPM" in line for line in lines):
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line)
        assert "SMS thread policy: pool\n" in lines
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_play_works_from_any_folder(tmp_path):
    """The installed iwlab package, not the checkout's folders, is what runs."""
    proc = subprocess.Popen([sys.executable, "-m", "iwlab.app.cli", "play", "5.8.5", "--port-base", "0", "--quiet"],
                            cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=without_display())
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert "PASS  5.8.5" in out


def test_version_and_documented_exit_codes(tmp_path):
    proc = iwlab("--version")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.startswith("iwlab 0.")
    proc = iwlab("--help")
    out, _ = proc.communicate(timeout=30)
    assert "1 a use case failed" in out and "3 the lab could not start" in out
    proc = iwlab("play", "no-such-case", env=without_display())
    proc.communicate(timeout=30)
    assert proc.returncode == 2                                  # a usage error


def test_a_port_in_use_is_exit_code_3(tmp_path):
    import socket as socket_module
    blocker = socket_module.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    topology = tmp_path / "lab.toml"
    text = (ROOT / "resources" / "topology.toml").read_text()
    topology.write_text(text.replace("sip_port = 5060", f"sip_port = {blocker.getsockname()[1]}"))
    try:
        proc = iwlab("play", "5.8.5", "--topology", str(topology), env=without_display())
        _, err = proc.communicate(timeout=60)
    finally:
        blocker.close()
    assert proc.returncode == 3 and "cannot start the lab" in err


def test_serve_offers_its_trace_feed_and_a_viewer_sees_every_pdu_until_the_lab_stops(tmp_path):
    from iwlab.backends.lab.trace_feed import Answer, TraceFeedClient
    endpoints_file = tmp_path / "endpoints.json"
    proc = iwlab("serve", "--port-base", "0", "--quiet", "--trace-feed", "0", "--trace-feed-control",
                 "--endpoints-file", str(endpoints_file))
    try:
        listening(proc, endpoints_file)
        host, port = json.loads(endpoints_file.read_text())["trace_feed"].rsplit(":", 1)

        async def first_pdus():
            client = await TraceFeedClient.connect(host, int(port))
            seen, answer = [], None
            client.command("throttle 2")    # --trace-feed-control: a viewer may change the lab
            async for item in client.items(0):
                if isinstance(item, Answer):
                    answer = item
                else:
                    seen.append(item)
                if answer and len(seen) >= client.hello.last_seq:
                    break
            await client.aclose()
            return seen, answer
        seen, answer = asyncio.run(asyncio.wait_for(first_pdus(), 30))
        assert answer == Answer("throttle 2", "SMSC throttles 1 submit_sm in 2")
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
        assert any(e.summary.startswith("REGISTER sip:cpm-a.lab") for e in seen)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert re.search(rf"FEED TCP Trace feed \(iwlab window --watch\) +127\.0\.0\.1:{port}\n", out), out


def test_window_watch_takes_host_and_port_and_refuses_anything_else():
    from iwlab.app.cli import host_and_port
    assert host_and_port("127.0.0.1:7000") == ("127.0.0.1", 7000)
    assert host_and_port("[::1]:7000") == ("::1", 7000)
    proc = iwlab("window", "--watch", "nowhere", env=without_display())
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "expected HOST:PORT" in err
