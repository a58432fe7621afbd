"""A real softphone (PJSIP's pjsua2, from the `pjsua2-python` wheel) in a process of its own.

    python -m tests.helpers.pjsua_peer --user mary --domain cpm-a.lab --proxy 127.0.0.1:5060 \
        --transport udp [--ca ca.pem] [--feature-tag]

It registers through the proxy (PJSIP cannot resolve the lab's domains, so the proxy is
the outbound proxy and the registrar), then reads commands from stdin, one JSON object a
line ({"send": {"to": URI, "text": "..."}}, {"quit": true}), and prints what happens on
stdout, one JSON object a line ({"registered": 200}, {"message": {...}}, {"sent": 202}).
A process of its own: PJSIP's threads and signals stay out of pytest, and a crash of the
softphone is a failed test, not a dead test run. `PjsuaPeer` is the test side of it.
"""
from __future__ import annotations

import argparse
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path


def _emit(**event) -> None:
    print(json.dumps(event), flush=True)


def main() -> int:   # the softphone process
    import pjsua2 as pj

    parser = argparse.ArgumentParser()
    parser.add_argument("--user", required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--proxy", required=True, help="host:port of the lab's CPM server")
    parser.add_argument("--transport", choices=("udp", "tcp", "tls"), default="udp")
    parser.add_argument("--ca", help="the lab's ca.pem, for TLS")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--feature-tag", action="store_true", help="register with the CPM feature tag")
    args = parser.parse_args()

    endpoint = pj.Endpoint()
    endpoint.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = True
    config.logConfig.level = 0
    config.logConfig.consoleLevel = 0
    config.medConfig.noVad = True
    endpoint.libInit(config)
    endpoint.audDevManager().setNullDev()
    transport_config = pj.TransportConfig()
    transport_config.port = 0
    transport_config.boundAddress = args.bind
    transport_config.publicAddress = args.bind
    kind = {"udp": pj.PJSIP_TRANSPORT_UDP, "tcp": pj.PJSIP_TRANSPORT_TCP, "tls": pj.PJSIP_TRANSPORT_TLS}
    if args.transport == "tls":
        transport_config.tlsConfig.CaListFile = args.ca or ""
        transport_config.tlsConfig.verifyServer = True
        transport_config.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD
    if ":" in args.bind:   # IPv6
        kind = {"udp": pj.PJSIP_TRANSPORT_UDP6, "tcp": pj.PJSIP_TRANSPORT_TCP6, "tls": pj.PJSIP_TRANSPORT_TLS6}
    endpoint.transportCreate(kind[args.transport], transport_config)
    endpoint.libStart()

    proxy = f"sip:{args.proxy};transport={args.transport};lr"

    class Account(pj.Account):
        def onRegState(self, prm):
            _emit(registered=prm.code)

        def onInstantMessage(self, prm):
            _emit(message={"from": prm.fromUri, "to": prm.toUri, "text": prm.msgBody,
                           "content_type": prm.contentType})

        def onInstantMessageStatus(self, prm):
            _emit(sent=prm.code, reason=prm.reason)

    account_config = pj.AccountConfig()
    account_config.idUri = f"sip:{args.user}@{args.domain}"
    account_config.regConfig.registrarUri = f"sip:{args.proxy};transport={args.transport}"
    account_config.sipConfig.proxies.append(proxy)
    if args.feature_tag:
        account_config.sipConfig.contactParams = ';+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg"'
    account = Account()
    account.create(account_config)
    buddies = []

    commands: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [commands.put(line) for line in sys.stdin] + [commands.put(None)],
                     daemon=True).start()
    try:
        while True:
            endpoint.libHandleEvents(20)
            try:
                line = commands.get_nowait()
            except queue.Empty:
                continue
            if line is None:
                break
            command = json.loads(line)
            if command.get("quit"):
                break
            if "send" in command:
                buddy_config = pj.BuddyConfig()
                buddy_config.uri = command["send"]["to"]
                buddy = pj.Buddy()
                buddy.create(account, buddy_config)
                buddies.append(buddy)
                message = pj.SendInstantMessageParam()
                message.content = command["send"]["text"]
                message.contentType = "text/plain"
                buddy.sendInstantMessage(message)
    finally:
        account.shutdown()
        endpoint.libDestroy()
    return 0


class PjsuaPeer:
    """The softphone seen from a test: start it, send through it, wait for what it reports."""

    def __init__(self, *, user: str, domain: str, proxy: str, transport: str = "udp", ca: Path | None = None,
                 bind: str = "127.0.0.1", feature_tag: bool = False) -> None:
        args = [sys.executable, "-m", "tests.helpers.pjsua_peer", "--user", user, "--domain", domain,
                "--proxy", proxy, "--transport", transport, "--bind", bind]
        if ca:
            args += ["--ca", str(ca)]
        if feature_tag:
            args.append("--feature-tag")
        root = Path(__file__).resolve().parents[2]
        self.process = subprocess.Popen(args, cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                pass   # PJSIP's own output, if any
        self.events.put(None)

    def wait_for(self, kind: str, timeout: float = 20.0, where=lambda value: True):
        """The next event of this kind (others are skipped) that satisfies `where`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if event is None:
                raise AssertionError(f"the softphone exited: {self.stderr()}")
            if kind in event and where(event[kind]):
                return event[kind]
        raise AssertionError(f"the softphone reported no {kind} within {timeout:g} s")

    def send(self, to: str, text: str) -> None:
        self._command({"send": {"to": to, "text": text}})

    def _command(self, command: dict) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def stderr(self) -> str:
        return self.process.stderr.read() if self.process.poll() is not None and self.process.stderr else ""

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self._command({"quit": True})
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream:
                stream.close()


if __name__ == "__main__":
    sys.exit(main())
