"""Use cases as data: every scenario plays and passes on the lab, verdicts come
from the trace, and a flow broken on purpose fails the right requirement."""
import asyncio
import json
import xml.etree.ElementTree as ET

import pytest

from iwlab.app.headless import ladder_nodes
from iwlab.backends.lab.report import (
    read_trace_json,
    write_html,
    write_junit,
    write_trace_json,
)
from iwlab.backends.lab.scenarios import (
    ScenarioError,
    ScenarioRun,
    load_requirements,
    load_scenario,
    load_scenarios,
    requirement_verdicts,
)

from tests.helpers.waiting import wait_until

SCENARIOS = load_scenarios()


def test_the_seed_flows_are_all_there():
    assert {"5.8.5", "5.8.6", "5.9.5", "5.9.6", "5.9-threads", "IOP-005-email", "IOP-005-roaming",
            "IOP-005-not-capable", "5.8.6-email", "5.9.6-email", "5.8.6-decline", "5.8.6-timeout", "5.8.6-cancel",
            "5.9-email-bounce", "IOP-005-roaming-mary", "IOP-xxx-5-throttled", "IOP-xxx-5-smsc-restart",
            "IOP-xxx-7-concatenation", "IOP-xxx-7-charsets", "IOP-xxx-7-delivery-report", "IOP-xxx-7-read-report",
            "IOP-xxx-7-content"} <= set(SCENARIOS)
    for scenario in SCENARIOS.values():
        assert scenario.steps and scenario.checks
        assert all(step.explain for step in scenario.steps), f"{scenario.id}: every step explains itself"
        requirements = load_requirements()
        assert all(r in requirements for c in scenario.checks for r in c.requirements)


@pytest.mark.parametrize("scenario_id", sorted(SCENARIOS))
def test_scenario_passes_on_the_lab(lab_factory, scenario_id):
    lab = lab_factory()
    verdict = lab.run(ScenarioRun(lab.lab, SCENARIOS[scenario_id]).play(), timeout=60)
    assert verdict.passed, verdict.report()
    assert all(result.evidence for result in verdict.results), "every verdict points at trace rows"



@pytest.mark.parametrize("scenario_id", ["IOP-xxx-7-content", "5.8.6", "5.8.6-email"])
def test_a_scenario_passes_where_the_devices_folders_are_full(lab_factory, monkeypatch, scenario_id):
    """A lab that has carried many messages: every folder holds its newest history.KEPT (2 here),
    so "something new came" cannot be a count going up (a full folder stays that long)."""
    from iwlab.backends.devices import history
    monkeypatch.setattr(history, "KEPT", 2)
    lab = lab_factory()
    mary = lab.lab.device("mary")
    for user in ("peter", "john"):
        for n in range(3):
            lab.run(mary.send_message(lab.lab.user(user), f"filler {n}"))
    for device in (lab.lab.device("peter"), lab.lab.device("john")):
        wait_until(lambda: len(lab.call(lambda: list(device.inbox))) == 2, 20, what="full folders")
    verdict = lab.run(ScenarioRun(lab.lab, SCENARIOS[scenario_id]).play(), timeout=60)
    assert verdict.passed, verdict.report()

def test_step_mode_advances_one_step_and_knows_its_rows(lab_factory):
    lab = lab_factory()
    run = ScenarioRun(lab.lab, SCENARIOS["5.8.5"])
    step = lab.run(run.step())
    assert step.seed_step == "1-5" and not run.finished
    first, last = run.rows_of_step[0]
    rows = [e for e in lab.lab.trace.events() if first <= e.seq <= last]
    assert any(e.summary.startswith("deliver_sm") and e.dst == "Peter" for e in rows)
    lab.run(run.step())
    assert run.finished and run.verdict().passed


def test_breaking_the_ordering_fails_the_ordering_requirement_with_evidence(lab_factory, tmp_path):
    (tmp_path / "order.toml").write_text('''
id = "order"
title = "three in a row"
[[steps]]
action = "send"
from = "mary"
to = "peter"
text = "one"
explain = "first"
[[steps]]
action = "send"
from = "mary"
to = "peter"
text = "two"
explain = "second"
[[steps]]
action = "send"
from = "mary"
to = "peter"
text = "three"
explain = "third"
[[checks]]
requirements = ["CPM-IOP-xxx-5"]
kind = "delivered"
to = "peter"
texts = ["one", "two", "three"]
''')
    scenario = load_scenario(tmp_path / "order.toml")
    lab = lab_factory(throttle_every=2)
    lab.call(setattr, lab.lab.iwf.sms.outbox, "ordering_enabled", False)   # the test switch: a naive gateway
    run = ScenarioRun(lab.lab, scenario, settle=0.0)

    async def all_at_once():
        # All three on their way before the SMSC answers any: the naive gateway's retry of the
        # throttled "two" (a second later) is then sure to come after "three".
        await asyncio.gather(*(run._act(step) for step in scenario.steps))
        return await run.conclude()
    verdict = lab.run(all_at_once(), timeout=30)
    assert not verdict.passed
    [result] = verdict.results
    assert "expected ['one', 'two', 'three'] in this order" in result.detail
    received = [text for text in ("one", "two", "three") if f"'{text}'" in result.detail.split(", expected")[0]]
    assert sorted(received) == ["one", "three", "two"], "all arrived, none lost or doubled: only the order broke"
    assert result.evidence
    table = requirement_verdicts([verdict], load_requirements())
    assert table["CPM-IOP-xxx-5"][0] == "failed"


def test_reports_junit_html_and_trace_json(lab_factory, tmp_path):
    lab = lab_factory()
    verdict = lab.run(ScenarioRun(lab.lab, SCENARIOS["5.8.5"]).play(), timeout=60)
    events = lab.lab.trace.events()
    write_junit(tmp_path / "junit.xml", [verdict])
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    assert suite.get("tests") == "1" and suite.get("failures") == "0"
    write_html(tmp_path / "report.html", [verdict], events, ladder_nodes(lab.lab.topology), load_requirements())
    page = (tmp_path / "report.html").read_text()
    assert "<svg" in page and "CPM-IOP-002" in page and "deliver_sm" in page
    assert "\x00" not in page                      # SMPP's binary fields as a hex dump, not as raw NULs
    assert "0000  00 00 00" in page                  # an SMPP PDU's command_length, dumped
    write_trace_json(tmp_path / "trace.json", events)
    again = read_trace_json(tmp_path / "trace.json")
    assert [e.raw for e in again] == [e.raw for e in events]
    assert json.loads((tmp_path / "trace.json").read_text())["iwlab_trace"] == 1
    for damaged in ("[]", '{"iwlab_trace": 1, "events": [{"seq": 1}]}', "\xff\xfe"):
        (tmp_path / "bad.json").write_text(damaged, encoding="latin-1")
        with pytest.raises(ValueError):
            read_trace_json(tmp_path / "bad.json")


@pytest.mark.parametrize("text, reason", [
    ('id = "x"\ntitle = "t"\n[[steps]]\naction = "teleport"\n', "unknown action 'teleport'"),
    ('id = "x"\ntitle = "t"\nsteps = "x"\n', "array of tables"),
    ('id = "x"\ntitle = "t"\n[checks]\nkind = "route"\n', "array of tables"),
    ('id = "x"\ntitle = "t"\n[[checks]]\nkind = "delivered"\nto = "peter"\n', "needs texts"),
    ('id = "x"\ntitle = "t"\n[[checks]]\nkind = "delivered"\nto = "peter"\ntexts = "Hi"\n', "list of strings"),
    ('id = "x"\n[[steps]]\naction = "wait"\n', "missing 'title'"),
    ('id = "x\ntitle', "x.toml"),
])
def test_a_broken_scenario_file_says_why(tmp_path, text, reason):
    (tmp_path / "x.toml").write_text(text)
    with pytest.raises(ScenarioError, match=reason):
        load_scenario(tmp_path / "x.toml")


def test_two_scenarios_with_one_id_are_refused(tmp_path):
    for name in ("a.toml", "b.toml"):
        (tmp_path / name).write_text('id = "same"\ntitle = "t"\n')
    with pytest.raises(ScenarioError, match="already used"):
        load_scenarios(tmp_path)


def test_without_tls_the_all_networks_requirement_fails(lab_factory, topology):
    """CPM-IOP-001 is exercised, not assumed: a lab without TLS cannot pass its TLS step."""
    topology.tls = False
    lab = lab_factory()
    run = ScenarioRun(lab.lab, SCENARIOS["IOP-001-networks"], timeout=5)
    try:
        verdict = lab.run(run.play(), timeout=60)
    except ScenarioError as exc:
        verdict = run.failed(str(exc))
    assert not verdict.passed
    assert requirement_verdicts([verdict], load_requirements())["CPM-IOP-001"][0] == "failed"
    lab.run(lab.lab.device("mary").set_state(sip_transport="tcp"))   # back for the fixture's stop
