"""Kannel (Debian's `kannel`) through the lab's own SMSC, for the side-by-side table in bench/run.py.

Kannel binds as a handset of the bench topology (system_id 15550208, the topology's handset
password) and takes HTTP sendsms requests; every SMS it submits reaches the SMSC, which
delivers it to the bench's Peter. Its own files live in a temporary folder; it listens on
loopback ports the bench picks. Skipped, with the reason, where Kannel cannot be had.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

KANNEL_NUMBER = "15550208"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available() -> str | None:
    """None if Kannel can run here, else why not."""
    missing = [tool for tool in ("bearerbox", "smsbox") if not shutil.which(tool)
               and not Path(f"/usr/sbin/{tool}").exists()]
    return f"Kannel is not installed ({', '.join(missing)} missing; apt-get install kannel)" if missing else None


class Kannel:
    def __init__(self, smsc: str, password: str, *, max_pending: int = 100) -> None:
        host, port = smsc.rsplit(":", 1)
        self.folder = Path(tempfile.mkdtemp(prefix="iwlab-bench-kannel-"))
        self.admin, self.box, self.http = free_port(), free_port(), free_port()
        config = self.folder / "kannel.conf"
        config.write_text(f"""
group = core
admin-port = {self.admin}
admin-password = bench
admin-allow-ip = "127.0.0.1"
smsbox-port = {self.box}
box-allow-ip = "127.0.0.1"
log-file = "{self.folder}/bearerbox.log"
log-level = 4
store-type = spool
store-location = "{self.folder}/spool"

group = smsc
smsc = smpp
host = {host}
port = {port}
transceiver-mode = true
smsc-username = {KANNEL_NUMBER}
smsc-password = {password}
system-type = ""
source-addr-ton = 1
source-addr-npi = 1
dest-addr-ton = 1
dest-addr-npi = 1
max-pending-submits = {max_pending}
log-level = 4

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {self.box}
sendsms-port = {self.http}
sendsms-interface = 127.0.0.1
log-file = "{self.folder}/smsbox.log"
log-level = 4

group = sendsms-user
username = bench
password = bench
max-messages = 1
concatenation = false
""")
        (self.folder / "spool").mkdir()
        sbin = lambda tool: shutil.which(tool) or f"/usr/sbin/{tool}"   # noqa: E731
        self.processes = [subprocess.Popen([sbin("bearerbox"), str(config)], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)]
        time.sleep(0.5)   # smsbox retries its connection to bearerbox; give bearerbox a head start
        self.processes.append(subprocess.Popen([sbin("smsbox"), str(config)], stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until bearerbox says its SMPP link is online and smsbox takes HTTP."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/status.txt?password=bench",
                                            timeout=2) as page:
                    status = page.read().decode("utf-8", "replace")
                if "online" in status:
                    with socket.create_connection(("127.0.0.1", self.http), timeout=2):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"Kannel did not come up (logs in {self.folder})")

    def sendsms(self, to: str, text: str) -> None:
        query = urllib.parse.urlencode({"username": "bench", "password": "bench", "from": KANNEL_NUMBER,
                                        "to": to, "text": text})
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/cgi-bin/sendsms?{query}", timeout=30) as answer:
            answer.read()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)
