"""The lab without a window: `iwlab serve` and `iwlab play`. No Qt here.

Exit codes (also in `iwlab --help`): 0 all well, 1 a use case failed its verdict,
2 a usage error (unknown use case, bad topology, bad option), 3 the lab could not start
(a port in use, an address that is not ours).
"""
from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from iwlab.app.collector import set_aside_what_lasts
from iwlab.backends.lab.control import run_command
from iwlab.backends.lab.lab import Lab
from iwlab.backends.lab.pcap import to_pcapng
from iwlab.backends.lab.report import write_html, write_junit, write_trace_json
from iwlab.backends.lab.scenarios import (
    ScenarioError,
    ScenarioRun,
    load_requirements,
    load_scenarios,
    requirement_verdicts,
)
from iwlab.backends.lab.trace_feed import TraceFeed
from iwlab.backends.protocols import sip
from iwlab.backends.topology import Topology
from iwlab.backends.trace import TraceEvent

EXIT_OK, EXIT_VERDICT_FAILED, EXIT_USAGE, EXIT_CANNOT_START = 0, 1, 2, 3


@dataclass(frozen=True)
class Exports:
    """Files a run writes when it ends (each optional)."""
    junit: str | None = None         # JUnit XML verdicts (play)
    report: str | None = None        # a self-contained HTML report (play)
    trace_json: str | None = None    # the whole trace as JSON (File > Open trace reads it)
    pcap: str | None = None          # the whole trace as pcapng (Wireshark, tshark)

    def write_traces(self, events: list[TraceEvent]) -> None:
        if self.trace_json:
            write_trace_json(Path(self.trace_json), events)
        if self.pcap:
            Path(self.pcap).write_bytes(to_pcapng(events))


def _print_event(event: TraceEvent) -> None:
    print(event.ladder_line(), flush=True)


def endpoints_table(lab: Lab, endpoints: dict | None = None) -> str:
    """Every listener, as people point clients at them, then who is simulated and who is not."""
    endpoints = endpoints or lab.endpoints()
    rows = []
    for item in endpoints["listeners"]:
        what = f"{item['protocol'].upper():<4} {item['transport'].upper():<3}"
        who = f"{item['node']} ({item['domain']})" if item.get("domain") else item["node"]
        rows.append((f"{what} {who}", item["address"]))
    if "maildir" in endpoints:
        rows.append(("Maildir (what John's mail client reads)", endpoints["maildir"]))
    if "ca" in endpoints:
        rows.append(("TLS: the lab's CA certificate (trust it in clients)", endpoints["ca"]))
    width = max(len(name) for name, _ in rows)
    lines = [f"  {name:<{width}}  {address}" for name, address in rows]
    users = []
    for user in lab.topology.users:
        ids = ", ".join(i for i in (user.sip, user.tel, user.email) if i)
        where = "simulated in-process" if user.id in lab.devices else "not simulated: connect a real client"
        if user.id in lab.sms_sides:
            where += f"; the phone's SMS side binds as {user.msisdn}"
        users.append(f"  {user.name:<6} {user.device:<5} {ids}  ({where})")
    handset_hint = (f"  A real SMPP client binds as system_id=<MSISDN digits>, password="
                    f"{lab.topology.smsc.handset_password!r} to be that handset.")
    return "\n".join(["Endpoints:", *lines, "Users:", *users, handset_hint])


async def _serve(topology: Topology, devices: str, endpoints_file: str | None, quiet: bool, exports: Exports,
                 state_dir: str | None, fresh: bool, trace_feed_port: int | None, trace_feed_control: bool) -> int:
    lab = Lab(topology, devices=devices, state_dir=state_dir, fresh=fresh)
    if not quiet:
        lab.trace.subscribe(_print_event)
    # Before anything is announced: a stop asked for as soon as the endpoints are known is a clean stop.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    await lab.start()
    set_aside_what_lasts()   # the served lab lives until the process ends
    feed = None
    if trace_feed_port is not None:
        try:
            feed = await offer_trace_feed(lab, trace_feed_port, control=trace_feed_control)
        except BaseException:
            await lab.stop()
            raise
    endpoints = feed.endpoints if feed else lab.endpoints()
    print(endpoints_table(lab, endpoints), flush=True)
    if endpoints_file:
        _write_atomically(Path(endpoints_file), json.dumps(endpoints, indent=2) + "\n")
    print("Lab running. Type 'help' for commands; Ctrl-C or SIGTERM stops it.", flush=True)
    commands = asyncio.create_task(_read_commands(lab), name="stdin commands")
    await stop.wait()
    commands.cancel()
    print("Stopping the lab...", flush=True)
    if feed is not None:
        await feed.stop()
    await lab.stop()
    exports.write_traces(lab.trace.events())
    return EXIT_OK


async def offer_trace_feed(lab: Lab, port: int, *, control: bool = False) -> TraceFeed:
    """The lab's trace feed, listening on the lab's addresses (port 0: a free one); its viewers
    are told the lab's endpoints, the feed's own among them. control: they may send console
    commands too."""
    topology = lab.topology
    feed = TraceFeed(lab.trace, ladder_nodes(topology),
                     commands=functools.partial(run_command, lab) if control else None)
    await feed.start(topology.hosts or [topology.host], port)
    endpoints = lab.endpoints()
    endpoints["trace_feed"] = sip.hostport(topology.host, feed.port)
    endpoints["listeners"] += [{"node": "Trace feed (iwlab window --watch)", "protocol": "feed",
                                "transport": "tcp", "address": sip.hostport(host, port)}
                               for host, port in feed.addresses()]
    feed.endpoints = endpoints
    return feed


def _write_atomically(path: Path, text: str) -> None:
    """A tool polling for the file never reads half of it."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


async def _read_commands(lab: Lab) -> None:
    """Commands on stdin (backends/control.py), one per line, answered on stdout."""
    if sys.stdin is None or sys.stdin.closed:
        return
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:   # a plain thread: works for a tty, a pipe or a file alike
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, name="stdin-commands", daemon=True).start()
    while (line := await lines.get()) is not None:
        answer = await run_command(lab, line)
        if answer:
            print(answer, flush=True)


def serve(topology: Topology, *, devices: str = "all", endpoints_file: str | None = None,
          quiet: bool = False, exports: Exports = Exports(), state_dir: str | None = None, fresh: bool = False,
          trace_feed_port: int | None = None, trace_feed_control: bool = False) -> int:
    """trace_feed_port: offer the trace feed (backends/lab/trace_feed.py) on it (0: a free port);
    trace_feed_control: its viewers may send console commands (as on stdin) too."""
    try:
        return asyncio.run(_serve(topology, devices, endpoints_file, quiet, exports, state_dir, fresh,
                                  trace_feed_port, trace_feed_control))
    except ValueError as exc:   # e.g. an unknown device name
        print(f"iwlab serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:      # e.g. a port already in use
        print(f"iwlab serve: cannot start the lab: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START


async def _play(topology: Topology, names: list[str], quiet: bool, exports: Exports) -> int:
    scenarios = load_scenarios()
    lab = Lab(topology)
    if not quiet:
        lab.trace.subscribe(_print_event)
    await lab.start()
    verdicts = []
    try:
        for name in names or list(scenarios):
            run = ScenarioRun(lab, scenarios[name])
            try:
                verdicts.append(await run.play())
            except ScenarioError as exc:   # one broken scenario does not end the run, and says why
                verdicts.append(run.failed(str(exc)))
    finally:
        await lab.stop()
    print()
    for verdict in verdicts:
        print(verdict.report())
    requirements = load_requirements()
    print("\nRequirements:")
    for rid, (state, rows) in requirement_verdicts(verdicts, requirements).items():
        shown = sorted(set(rows))
        proof = f"  rows {', '.join(map(str, shown[:12]))}{' …' if len(shown) > 12 else ''}" if shown else ""
        print(f"  {state:<14} {rid}{proof}")
    events = lab.trace.events()
    if exports.junit:
        write_junit(Path(exports.junit), verdicts)
    if exports.report:
        write_html(Path(exports.report), verdicts, events, ladder_nodes(topology), requirements)
    exports.write_traces(events)
    failed = [v for v in verdicts if not v.passed]
    print(f"\n{len(verdicts) - len(failed)} passed, {len(failed)} failed")
    return EXIT_VERDICT_FAILED if failed else EXIT_OK


def play(topology: Topology, names: list[str], *, quiet: bool = False, exports: Exports = Exports()) -> int:
    try:
        known = load_scenarios()
    except ScenarioError as exc:
        print(f"iwlab play: {exc}", file=sys.stderr)
        return EXIT_USAGE
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"iwlab play: unknown use case(s) {', '.join(unknown)}; known: {', '.join(known)}",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_play(topology, names, quiet, exports))
    except OSError as exc:
        print(f"iwlab play: cannot start the lab: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START


def ladder_nodes(topology: Topology) -> list[str]:
    """Columns left to right: CPM devices, CPM domains (each followed by its conference focus when it
    has CPM users, and by its own IWF, unless that IWF is the bridge beside the SMSC), the bridge, legacy networks, the content server, legacy devices."""
    cpm_users = [u.name for u in topology.users if u.device == "cpm"]
    legacy_users = [u.name for u in topology.users if u.device != "cpm"]
    main = topology.iwf_operator()
    servers: list[str] = []
    for op in topology.operators:
        servers.append(op.node_name)
        if any(u.device == "cpm" and u.operator == op.id for u in topology.users):
            servers.append(op.focus_name)     # where its CPM users' group chats are made
        if op.iwf and op is not main:
            servers.append(op.iwf.node_name)
    bridge = [main.iwf.node_name, "SMSC"] if main and main.iwf else []
    if main and main.mail_domain:
        bridge.append("Mail")
    if main:
        bridge.append("Content")
    return cpm_users + servers + bridge + legacy_users
