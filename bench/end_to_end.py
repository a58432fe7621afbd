"""Messages per second, Mary -> Peter end to end, beside raw submit_sm, in one run.

    .venv/bin/python bench/end_to_end.py [--messages 2000]

The lab runs as `iwlab serve` in a process of its own. End to end: a raw SIP client registered as Mary on CPM-A sends pager-mode
MESSAGEs to tel:+15550201 as fast as the lab accepts them (a window of
outstanding requests); CPM-A -> CPM-B -> IWF -> SMSC; a real smpplib client
bound as Peter counts deliver_sm and checks the order. Raw: one smpplib ESME
submits directly to the same SMSC, lock-step (one submit, wait for its
response) and pipelined (a window of 10). Rates are counted where the
messages arrive. Figures are printed, nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import smpplib.client  # noqa: E402
import smpplib.consts  # noqa: E402

from iwlab.backends.topology import default_topology_path  # noqa: E402
from tests.helpers.raw_sip import RawSipClient, cpim_body  # noqa: E402
from tests.helpers.raw_smpp import SmppHandset  # noqa: E402

MARY, PETER = "sip:mary@cpm-a.lab", "tel:+15550201"


def wait_for(handset: SmppHandset, count: int, prefix: str) -> tuple[float, list[str]]:
    """Collect this run's texts; a redelivery left over from an earlier run is skipped."""
    texts: list[str] = []
    while len(texts) < count:
        text = handset.next_message(timeout=60).short_message.decode("latin-1")
        if text.startswith(prefix):
            texts.append(text)
    return time.perf_counter(), texts


def in_order(texts: list[str], prefix: str) -> str:
    expected = [f"{prefix}{i:06d}" for i in range(len(texts))]
    return "in order" if texts == expected else f"OUT OF ORDER ({sum(a != b for a, b in zip(texts, expected))} misplaced)"


def end_to_end(endpoints: dict, count: int, window: int) -> None:
    mary = RawSipClient(endpoints["sip"]["cpm-a.lab"])
    mary.register(MARY, "cpm-a.lab")
    peter = SmppHandset(endpoints["smpp"], "15550201")
    bodies = [cpim_body(MARY, PETER, f"e2e{i:06d}", disposition="") for i in range(count)]
    start = time.perf_counter()
    outstanding: list[str] = []
    for body in bodies:
        outstanding.append(mary.request("MESSAGE", PETER, from_uri=MARY, to_uri=PETER,
                                        content_type="message/cpim", body=body))
        if len(outstanding) >= window:
            mary.response_to(outstanding.pop(0))
    for call_id in outstanding:
        mary.response_to(call_id)
    accepted = time.perf_counter()
    done, texts = wait_for(peter, count, "e2e")
    print(f"  end to end  Mary -SIP-> CPM-A -> CPM-B -> IWF -SMPP-> SMSC -> Peter: "
          f"{count / (done - start):7.0f} msg/s  ({count} msgs, SIP window {window}; "
          f"all 202 after {accepted - start:.2f} s; {in_order(texts, 'e2e')})")
    mary.close()
    peter.close()


def raw_submit(endpoints: dict, count: int, window: int, label: str) -> None:
    peter = SmppHandset(endpoints["smpp"], "15550201")
    host, port = endpoints["smpp"].rsplit(":", 1)
    client = smpplib.client.Client(host, int(port), timeout=None, allow_unknown_opt_params=True)
    client.connect()
    client._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.bind_transceiver(system_id="15550209", password="iwlab")   # the bench's own handset
    answered = threading.Semaphore(window)
    client.set_message_sent_handler(lambda pdu: answered.release())
    client.set_error_pdu_handler(lambda pdu: None)
    reader = threading.Thread(target=lambda: _read(client), daemon=True)
    reader.start()
    prefix = f"raw{label[0]}"
    start = time.perf_counter()
    for i in range(count):
        answered.acquire()
        client.send_message(source_addr_ton=1, source_addr="15550209", dest_addr_ton=1,
                            destination_addr="15550201", short_message=f"{prefix}{i:06d}".encode())
    done, texts = wait_for(peter, count, prefix)
    print(f"  raw submit_sm ({label}) smpplib ESME -> SMSC -> Peter:"
          f"{' ' * (27 - len(label))}{count / (done - start):7.0f} msg/s  ({count} msgs; {in_order(texts, prefix)})")
    client._socket.shutdown(2)
    reader.join(5)
    client.disconnect()
    peter.close()


def _read(client) -> None:
    try:
        while True:
            client.read_once(auto_send_enquire_link=False)
    except Exception:  # noqa: BLE001 - the bench closes the socket to stop
        pass


BENCH_USER = """
[[users]]
id = "bencher"
name = "Bencher"
operator = "B"
tel = "+15550209"
device = "sms"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sip-window", type=int, default=32)
    args = parser.parse_args()
    # The lab runs in its own process (`iwlab serve`), as it would for real
    # clients: the clients here do not share its interpreter lock.
    workdir = Path(tempfile.mkdtemp(prefix="iwlab-bench-"))
    topology = workdir / "topology.toml"
    topology.write_text(default_topology_path().read_text() + BENCH_USER)
    endpoints_file = workdir / "endpoints.json"
    profile = ["-m", "cProfile", "-o", os.environ["IWLAB_PROFILE"]] if os.environ.get("IWLAB_PROFILE") else []
    lab = subprocess.Popen([sys.executable, *profile, "-m", "iwlab.app.cli", "serve", "--quiet", "--devices", "none",
                            "--port-base", "0", "--topology", str(topology), "--endpoints-file", str(endpoints_file)],
                           cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not endpoints_file.exists() and time.monotonic() < deadline and lab.poll() is None:
            time.sleep(0.05)
        endpoints = json.loads(endpoints_file.read_text())
        print(f"iwlab bench, {args.messages} distinct texts per run, order checked at the receiving handset:")
        end_to_end(endpoints, args.messages, args.sip_window)
        raw_submit(endpoints, args.messages, 1, "lock-step")
        raw_submit(endpoints, args.messages, 10, "window 10")
    finally:
        lab.send_signal(signal.SIGTERM)
        lab.wait(30)


if __name__ == "__main__":
    main()
