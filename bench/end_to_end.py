"""Messages per second through the lab beside Kannel and raw submit_sm, in one run, order checked.

    .venv/bin/python bench/end_to_end.py [--messages 3000] [--runs 3] [--no-kannel]

The lab runs as `iwlab serve` in a process of its own, as it would for real clients, with a
bench topology: 16 CPM senders beside Mary, a handset account for Kannel (15550208) and one
for raw submits (15550209). Every path ends at the same smpplib client bound as Peter, where
rates are counted and order is checked per sender:

- iwlab, 1 sender: raw SIP MESSAGEs (a window of 32) Mary -> CPM-A -> CPM-B -> IWF -> SMSC -> Peter;
  with receipts on, the rate of IMDN "delivered" back at Mary as well;
- iwlab, 16 senders at once (16 conversations);
- Kannel 1.4.5 (HTTP sendsms -> bearerbox -> SMPP) with 1 and with 32 HTTP clients;
- raw smpplib, lock-step submit_sm;
- latency, p50/p99, of Mary -> Peter at a steady 100 msg/s;
- the lab's peak resident memory.
Every path runs `--runs` times, in rounds (a shared machine's rates vary 15-20% run to run): the median
run's rate is printed with the range. Figures are printed with the ratios; nothing is asserted (speed is not a test).
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import smpplib.client  # noqa: E402

from bench import kannel as kannel_bench  # noqa: E402
from iwlab.backends.topology import default_topology_path  # noqa: E402
from tests.helpers.raw_sip import RawSipClient, cpim_body  # noqa: E402
from tests.helpers.raw_smpp import SmppHandset  # noqa: E402

PETER = "tel:+15550201"
SENDERS = 16


def bench_topology() -> str:
    users = [f'\n[[users]]\nid = "bench{i:02d}"\nname = "Bench{i:02d}"\noperator = "A"\n'
             f'sip = "sip:bench{i:02d}@cpm-a.lab"\ntel = "+155501{i + 10:02d}"\ndevice = "cpm"\n'
             for i in range(SENDERS)]
    handsets = ['\n[[users]]\nid = "kannel"\nname = "Kannel"\noperator = "B"\ntel = "+15550208"\ndevice = "sms"\n',
                '\n[[users]]\nid = "raw"\nname = "Raw"\noperator = "B"\ntel = "+15550209"\ndevice = "sms"\n']
    return default_topology_path().read_text() + "".join(users + handsets)


class Peter:
    """The one handset everything is counted at: texts by sender prefix, with arrival times."""

    def __init__(self, smpp: str) -> None:
        self.handset = SmppHandset(smpp, "15550201")

    def collect(self, prefix: str, count: int, timeout: float = 120.0) -> list[tuple[float, str]]:
        got: list[tuple[float, str]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            try:
                pdu = self.handset.next_message(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            text = pdu.short_message.decode("latin-1")
            if text.startswith(prefix):
                got.append((time.perf_counter(), text))
        return got

    def close(self) -> None:
        self.handset.close()


def inversions(texts: list[str]) -> int:
    """Arrivals that come after a later message of the same sender ('<sender>:<n>' texts)."""
    highest: dict[str, int] = {}
    count = 0
    for text in texts:
        sender, _, number = text.rpartition(":")
        n = int(number)
        if n < highest.get(sender, -1):
            count += 1
        highest[sender] = max(highest.get(sender, -1), n)
    return count


def sip_burst(address: str, user: str, prefix: str, count: int, window: int, receipts: bool) -> RawSipClient:
    client = RawSipClient(address, timeout=60)
    uri = f"sip:{user}@cpm-a.lab"
    client.register(uri, "cpm-a.lab")
    disposition = "positive-delivery" if receipts else ""
    outstanding: list[str] = []
    for i in range(count):
        outstanding.append(client.request("MESSAGE", PETER, from_uri=uri, to_uri=PETER, content_type="message/cpim",
                                          body=cpim_body(uri, PETER, f"{prefix}:{i}", disposition=disposition)))
        if len(outstanding) >= window:
            client.response_to(outstanding.pop(0))
    for call_id in outstanding:
        client.response_to(call_id)
    return client


def count_imdns(client: RawSipClient, count: int, timeout: float = 120.0) -> float:
    """Answer the IMDNs that come back; when the last one arrived."""
    deadline, seen = time.monotonic() + timeout, 0
    client.sock.settimeout(timeout)
    while seen < count and time.monotonic() < deadline:
        request = client.receive(lambda m: getattr(m, "method", "") == "MESSAGE")
        client.answer(request)
        seen += b"<delivered" in request.body      # ElementTree writes <delivered />
    return time.perf_counter()


def iwlab_run(endpoints: dict, peter: Peter, senders: int, count: int, receipts: bool = False) -> dict:
    address = endpoints["sip"]["cpm-a.lab"]
    users = ["mary"] if senders == 1 else [f"bench{i:02d}" for i in range(senders)]
    per_sender = count // len(users)
    tag = f"i{senders}{'r' if receipts else ''}-{time.monotonic_ns() % 10**6}"
    start = time.perf_counter()
    with ThreadPoolExecutor(len(users)) as pool:
        clients = list(pool.map(lambda u: sip_burst(address, u, f"{tag}-{u}", per_sender, 32, receipts), users))
    imdns_done: list[float] = []
    answering = threading.Thread(target=lambda: imdns_done.append(count_imdns(clients[0], per_sender)), daemon=True)
    if receipts:   # Mary answers her IMDNs while Peter counts, as a phone would
        answering.start()
    arrived = peter.collect(tag, per_sender * len(users))
    result = {"rate": len(arrived) / (arrived[-1][0] - start) if arrived else 0.0, "count": len(arrived),
              "sent": per_sender * len(users), "inversions": inversions([t for _, t in arrived])}
    if receipts:
        answering.join(120)
        result["imdn_rate"] = per_sender / (imdns_done[0] - start) if imdns_done else 0.0
    for client in clients:
        client.close()
    return result


def kannel_run(kannel: kannel_bench.Kannel, peter: Peter, clients: int, count: int) -> dict:
    per_client = count // clients
    tag = f"k{clients}-{time.monotonic_ns() % 10**6}"
    start = time.perf_counter()

    def client(n: int) -> None:
        for i in range(per_client):
            kannel.sendsms("15550201", f"{tag}-{n}:{i}")
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    arrived = peter.collect(tag, per_client * clients)
    return {"rate": len(arrived) / (arrived[-1][0] - start) if arrived else 0.0, "count": len(arrived),
            "sent": per_client * clients, "inversions": inversions([t for _, t in arrived])}


def raw_lockstep(endpoints: dict, peter: Peter, count: int) -> dict:
    host, port = endpoints["smpp"].rsplit(":", 1)
    client = smpplib.client.Client(host, int(port), timeout=30, allow_unknown_opt_params=True)
    client.set_message_sent_handler(lambda pdu, **_: None)   # smpplib's own warns of each submit_sm_resp
    client.connect()
    client._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.bind_transceiver(system_id="15550209", password="iwlab")
    tag = f"raw-{time.monotonic_ns() % 10**6}"
    start = time.perf_counter()
    for i in range(count):
        client.send_message(source_addr_ton=1, source_addr="15550209", dest_addr_ton=1, destination_addr="15550201",
                            short_message=f"{tag}:{i}".encode())
        client.read_once(auto_send_enquire_link=False)    # its submit_sm_resp: one at a time
    arrived = peter.collect(tag, count)
    client.unbind()
    client.disconnect()
    return {"rate": len(arrived) / (arrived[-1][0] - start) if arrived else 0.0, "count": len(arrived),
            "sent": count, "inversions": inversions([t for _, t in arrived])}


def latency(endpoints: dict, peter: Peter, rate: float, seconds: float) -> dict:
    """Mary -> Peter at a steady rate: each text says when it was sent."""
    mary = RawSipClient(endpoints["sip"]["cpm-a.lab"], timeout=60)
    mary.register("sip:mary@cpm-a.lab", "cpm-a.lab")
    tag, count = f"lat-{time.monotonic_ns() % 10**6}", int(rate * seconds)
    sent: dict[str, float] = {}
    answers = threading.Thread(target=lambda: [mary.receive(lambda m: getattr(m, "status", 0) >= 200)
                                               for _ in range(count)], daemon=True)
    answers.start()
    # Peter counts while Mary sends: an arrival is stamped when it arrives, not when it is read.
    arrivals: list[list[tuple[float, str]]] = []
    counting = threading.Thread(target=lambda: arrivals.append(peter.collect(tag, count)), daemon=True)
    counting.start()
    start = time.perf_counter()
    for i in range(count):
        due = start + i / rate
        time.sleep(max(due - time.perf_counter(), 0))
        text = f"{tag}:{i}"
        sent[text] = time.perf_counter()
        mary.request("MESSAGE", PETER, from_uri="sip:mary@cpm-a.lab", to_uri=PETER, content_type="message/cpim",
                     body=cpim_body("sip:mary@cpm-a.lab", PETER, text, disposition=""))
    counting.join(150)
    arrived = arrivals[0] if arrivals else []
    answers.join(30)
    mary.close()
    delays = sorted((at - sent[text]) * 1000 for at, text in arrived)
    return {"p50": statistics.median(delays), "p99": delays[int(len(delays) * 0.99) - 1], "count": len(delays)}


def cpu_seconds(pid: int) -> float:
    """The lab's user + system CPU time so far (/proc/PID/stat): a row's cost per message, steadier
    than a rate on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(pid: int, run: Callable[[], dict]) -> dict:
    before = cpu_seconds(pid)
    result = run()
    result["cpu_ms"] = (cpu_seconds(pid) - before) * 1000 / max(result["count"], 1)
    return result


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_lab(folder: Path, state_dir: Path | None = None) -> tuple[subprocess.Popen, dict]:
    """`iwlab serve` with the bench topology in a process of its own; its endpoints once it listens.
    state_dir: the lab keeps what it has acknowledged there (sqlite, as a user's lab would)."""
    (folder / "topology.toml").write_text(bench_topology())
    endpoints_file = folder / "endpoints.json"
    endpoints_file.unlink(missing_ok=True)
    profile = ["-m", "cProfile", "-o", os.environ["IWLAB_PROFILE"]] if os.environ.get("IWLAB_PROFILE") else []
    durable = ["--state-dir", str(state_dir), "--fresh"] if state_dir else []
    lab = subprocess.Popen([sys.executable, *profile, "-m", "iwlab.app.cli", "serve", "--quiet", "--devices", "none",
                            "--port-base", "0", "--topology", str(folder / "topology.toml"),
                            "--endpoints-file", str(endpoints_file), *durable],
                           cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL, stdin=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not endpoints_file.exists() and time.monotonic() < deadline and lab.poll() is None:
        time.sleep(0.05)
    return lab, json.loads(endpoints_file.read_text())


def stop_lab(lab: subprocess.Popen) -> None:
    lab.send_signal(signal.SIGTERM)
    lab.wait(30)


def combined(runs: list[dict]) -> dict:
    """One row's runs: the median rate (and the range), the median CPU per text; inversions summed."""
    middle = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
    result = {**middle, "low": min(r["rate"] for r in runs), "high": max(r["rate"] for r in runs),
              "cpu_ms": statistics.median(r["cpu_ms"] for r in runs), "inversions": sum(r["inversions"] for r in runs),
              "count": sum(r["count"] for r in runs), "sent": sum(r["sent"] for r in runs)}
    if "imdn_rate" in middle:
        result["imdn_rate"] = statistics.median(r["imdn_rate"] for r in runs)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3,
                        help="rounds of every row, in turn (a shared machine's rates vary 15-20%% run to run)")
    parser.add_argument("--no-kannel", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="iwlab-bench-"))
    lab, endpoints = start_lab(folder)
    kannel = None
    try:
        peter = Peter(endpoints["smpp"])
        n = args.messages
        one_sender = "iwlab, 1 sender (Mary -SIP-> CPM-A -> CPM-B -> IWF -SMPP-> SMSC)"
        many_senders = f"iwlab, {SENDERS} senders at once"
        kannel_one, kannel_many = "Kannel, 1 HTTP client (sendsms -> bearerbox -SMPP-> SMSC)", "Kannel, 32 HTTP clients"
        paths: list[tuple[str, Callable[[], dict]]] = [
            (one_sender, lambda: iwlab_run(endpoints, peter, 1, n)),
            ("iwlab, 1 sender, receipts on (IMDN back to Mary)", lambda: iwlab_run(endpoints, peter, 1, n, True)),
            (many_senders, lambda: iwlab_run(endpoints, peter, SENDERS, n))]
        why_not = None if not args.no_kannel else "--no-kannel"
        why_not = why_not or kannel_bench.available()
        if why_not is None:
            kannel = kannel_bench.Kannel(endpoints["smpp"], "iwlab")
            kannel.wait_ready()
            paths += [(kannel_one, lambda: kannel_run(kannel, peter, 1, n)),
                      (kannel_many, lambda: kannel_run(kannel, peter, 32, n))]
        paths.append(("raw smpplib, lock-step submit_sm -> SMSC", lambda: raw_lockstep(endpoints, peter, n)))
        runs: dict[str, list[dict]] = {label: [] for label, _ in paths}
        for _ in range(args.runs):   # each round runs every path: iwlab and Kannel share the machine's moods
            for label, run in paths:
                runs[label].append(measured(lab.pid, run))
        rows = {label: combined(results) for label, results in runs.items()}
        steady = latency(endpoints, peter, 100.0, 10.0)
        print(f"iwlab bench, {n} distinct texts per run, {args.runs} rounds of every path (the median run's rate, "
              "the range of all; the median lab CPU), counted and order-checked at Peter's handset; lab CPU is "
              "the lab process's CPU time per text (for Kannel and raw: the lab's SMSC alone)\n")
        for label, result in rows.items():
            extra = f", IMDNs at Mary {result['imdn_rate']:.0f}/s" if "imdn_rate" in result else ""
            print(f"  {label:<72} {result['rate']:7.0f} msg/s ({result['low']:.0f}-{result['high']:.0f})  "
                  f"lab CPU {result['cpu_ms']:.2f} ms/msg  ({result['count']} of {result['sent']} arrived, "
                  f"{result['inversions']} inversions{extra})")
        if why_not:
            print(f"  Kannel: skipped ({why_not})")
        print(f"\n  latency Mary -> Peter at a steady 100 msg/s: p50 {steady['p50']:.1f} ms, p99 {steady['p99']:.1f} ms "
              f"({steady['count']} messages)")
        print(f"  the lab's peak RSS: {peak_rss_mb(lab.pid):.0f} MB")
        if kannel_one in rows:
            print(f"\n  ratios: iwlab 1 sender / Kannel 1 client = {rows[one_sender]['rate'] / rows[kannel_one]['rate']:.2f}; "
                  f"iwlab {SENDERS} senders / Kannel 32 clients = "
                  f"{rows[many_senders]['rate'] / rows[kannel_many]['rate']:.2f}")
        peter.close()
    finally:
        if kannel:
            kannel.stop()
        stop_lab(lab)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
