"""What Wireshark and CI read: a pcapng of the trace that tshark decodes without a malformed frame."""
from __future__ import annotations

import collections
import shutil
import subprocess
from pathlib import Path

import junitparser
import pytest

from iwlab.backends.lab.lab import Lab
from iwlab.backends.lab.pcap import to_pcapng
from iwlab.backends.lab.report import write_junit
from iwlab.backends.lab.scenarios import ScenarioRun, load_scenarios

TSHARK = shutil.which("tshark")


def tshark_protocols(path, decode_as: dict[int, str]) -> collections.Counter:
    args = [TSHARK, "-r", str(path), "-T", "fields", "-e", "frame.protocols", "-e", "_ws.malformed"]
    for port, protocol in decode_as.items():
        args += ["-d", f"tcp.port=={port},{protocol}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout
    counts: collections.Counter = collections.Counter()
    for line in out.splitlines():
        protocols, _, malformed = line.partition("\t")
        counts["malformed"] += bool(malformed.strip()) or "malformed" in protocols
        for name in ("sip", "smpp", "smtp", "msrp"):
            counts[name] += f":{name}" in protocols
    return counts


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (Debian package tshark)")
@pytest.mark.parametrize("scenario_id, present", [("5.8.5", {"sip", "smpp"}), ("5.8.6", {"sip", "msrp", "smpp"}),
                                                  ("IOP-005-email", {"sip", "smtp"})])
def test_tshark_decodes_the_pcapng_with_no_malformed_frame(lab_factory, tmp_path, scenario_id, present):
    lab = lab_factory()
    verdict = lab.run(ScenarioRun(lab.lab, load_scenarios()[scenario_id]).play(), timeout=60)
    assert verdict.passed, verdict.report()
    path = tmp_path / "trace.pcapng"
    path.write_bytes(to_pcapng(lab.lab.trace.events()))
    the_lab: Lab = lab.lab
    sip_ports = {server.port: "sip" for server in the_lab.cpm_servers.values()}
    sip_ports[the_lab.iwf.port] = "sip"
    sip_ports[the_lab.smsc.port] = "smpp"      # free ports: not the well-known ones tshark knows
    sip_ports[the_lab.mail.port] = "smtp"
    counts = tshark_protocols(path, sip_ports)
    assert counts["malformed"] == 0
    for protocol in present:
        assert counts[protocol] > 0, (protocol, counts)


XMLLINT = shutil.which("xmllint")
SCHEMA = Path(__file__).resolve().parents[1] / "data" / "junit.xsd"


def junit_of(tmp_path, lab_factory, scenario_id: str, *, break_it: bool = False) -> Path:
    lab = lab_factory(throttle_every=2) if break_it else lab_factory()
    scenario = load_scenarios()[scenario_id]
    verdict = lab.run(ScenarioRun(lab.lab, scenario).play(), timeout=60)
    path = tmp_path / "junit.xml"
    write_junit(path, [verdict, ScenarioRun(lab.lab, scenario).failed("a use case that could not be played")])
    return path


@pytest.mark.skipif(XMLLINT is None, reason="xmllint is not installed (Debian package libxml2-utils)")
def test_junit_validates_against_the_schema_ci_servers_expect(lab_factory, tmp_path):
    path = junit_of(tmp_path, lab_factory, "5.8.5")
    check = subprocess.run([XMLLINT, "--noout", "--schema", str(SCHEMA), str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_junitparser_reads_the_verdicts(lab_factory, tmp_path):
    path = junit_of(tmp_path, lab_factory, "5.8.5")
    parsed = junitparser.JUnitXml.fromfile(str(path))
    suite = parsed if isinstance(parsed, junitparser.TestSuite) else next(iter(parsed))
    cases = list(suite)
    assert suite.tests == 2 and suite.failures == 1 and suite.errors == 0
    assert cases[0].name.startswith("5.8.5") and cases[0].is_passed
    assert not cases[1].is_passed and "could not be played" in cases[1].result[0].message
