"""The seed's use cases as data (resources/scenarios/*.toml), played on a lab,
with verdicts taken from the trace.

A scenario says who does what (steps, each with the seed step it plays and a
sentence or two for trainers) and what must then be seen on the wire
(checks, each naming the CPM-IOP requirements it proves). Adding a use case
is adding a file. Verdicts never trust the scenario's own bookkeeping: they
read the PDUs that reached the devices.
"""
from __future__ import annotations

import asyncio
import time
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from iwlab.backends.devices.cpm_phone import CpmDevice
from iwlab.backends.devices.cpm_sessions import ChatSession
from iwlab.backends.devices.email_client import EmailClient, reply_subject
from iwlab.backends.devices.session_state import SessionState
from iwlab.backends.devices.sms_handset import SmsHandset
from iwlab.backends.lab.control import run_command
from iwlab.backends.lab.evidence import received_by
from iwlab.backends.lab.lab import Lab
from iwlab.backends.trace import TraceEvent

ACTIONS = ("send", "reply", "wait", "state", "start_session", "accept_session", "session_send", "end_session")
STATE_KEYS = ("registered", "capable", "roaming")
CHECKS = ("delivered", "route", "addressed_to_person", "threaded", "session_established", "networks")


class ScenarioError(ValueError):
    """A scenario file that cannot be played; the text says where and why."""


@dataclass
class Step:
    action: str
    explain: str
    seed_step: str = ""
    sender: str = ""           # user id ("from")
    recipient: str = ""        # user id ("to")
    text: str = ""
    state: dict[str, bool | str] = field(default_factory=dict)   # "state": the user's new conditions


@dataclass
class Check:
    kind: str
    requirements: list[str]
    params: dict[str, Any]


@dataclass
class Scenario:
    id: str
    title: str
    use_case: str
    flow: str
    steps: list[Step]
    checks: list[Check]
    source: str = ""


@dataclass
class CheckResult:
    check: Check
    passed: bool
    detail: str
    evidence: list[int] = field(default_factory=list)
    # Failed for good (not merely not yet passed): e.g. every expected text arrived, in the wrong order.
    decided_failure: bool = False

    @property
    def decided(self) -> bool:
        return self.passed or self.decided_failure


@dataclass
class Verdict:
    scenario: Scenario
    results: list[CheckResult]
    first_seq: int
    last_seq: int
    started: float = 0.0         # wall clock when the run began
    duration: float = 0.0        # seconds the run took, to its verdict

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def report(self) -> str:
        head = f"{'PASS' if self.passed else 'FAIL'}  {self.scenario.id}  {self.scenario.title}"
        lines = [head]
        for result in self.results:
            mark = "ok  " if result.passed else "FAIL"
            rows = f"  (trace rows {', '.join(map(str, result.evidence))})" if result.evidence else ""
            lines.append(f"      {mark} [{', '.join(result.check.requirements)}] {result.detail}{rows}")
        return "\n".join(lines)


# -- loading ---------------------------------------------------------------------------

def scenario_dir() -> Path:
    return Path(str(resources.files("iwlab.resources").joinpath("scenarios")))


REQUIRED_PARAMS = {"networks": ("from", "to", "over"), "delivered": ("to", "texts"), "route": ("note",), "addressed_to_person": ("from", "to"),
                   "threaded": ("to", "text", "answers"), "session_established": ("answered_to",)}


def load_scenario(path: Path) -> Scenario:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{path.name}: {exc}") from exc
    where = path.name
    for key in ("steps", "checks"):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise ScenarioError(f"{where}: '{key}' must be an array of tables ([[{key}]])")
    for check in data.get("checks", []):
        if not isinstance(check.get("requirements", []), list):
            raise ScenarioError(f"{where}: a check's 'requirements' must be a list of labels")
        if "texts" in check and not isinstance(check["texts"], list):
            raise ScenarioError(f"{where}: 'texts' must be a list of strings")
        missing = [p for p in REQUIRED_PARAMS.get(check.get("kind", ""), ()) if p not in check]
        if missing:
            raise ScenarioError(f"{where}: a {check.get('kind')} check needs {', '.join(missing)}")
    try:
        steps = [Step(action=s["action"], explain=s.get("explain", "").strip(), seed_step=str(s.get("seed_step", "")),
                      sender=s.get("from", s.get("user", "")), recipient=s.get("to", ""), text=s.get("text", ""),
                      state={**{k: bool(s[k]) for k in STATE_KEYS if k in s},
                             **({"transport": str(s["transport"])} if "transport" in s else {})})
                 for s in data.get("steps", [])]
        checks = [Check(kind=c["kind"], requirements=list(c.get("requirements", [])),
                        params={k: v for k, v in c.items() if k not in ("kind", "requirements")})
                  for c in data.get("checks", [])]
        scenario = Scenario(id=str(data["id"]), title=data["title"], use_case=data.get("use_case", ""),
                            flow=data.get("flow", ""), steps=steps, checks=checks, source=str(path))
    except KeyError as exc:
        raise ScenarioError(f"{where}: missing {exc}") from None
    for step in steps:
        if step.action not in ACTIONS:
            raise ScenarioError(f"{where}: unknown action {step.action!r} (known: {', '.join(ACTIONS)})")
    for check in checks:
        if check.kind not in CHECKS:
            raise ScenarioError(f"{where}: unknown check {check.kind!r} (known: {', '.join(CHECKS)})")
    return scenario


def load_scenarios(directory: Path | None = None) -> dict[str, Scenario]:
    scenarios: dict[str, Scenario] = {}
    for path in sorted((directory or scenario_dir()).glob("*.toml")):
        scenario = load_scenario(path)
        if scenario.id in scenarios:
            raise ScenarioError(f"{path.name}: id {scenario.id!r} is already used by "
                                f"{Path(scenarios[scenario.id].source).name}")
        scenarios[scenario.id] = scenario
    return scenarios


def load_requirements() -> dict[str, str]:
    data = tomllib.loads(resources.files("iwlab.resources").joinpath("requirements.toml").read_text(encoding="utf-8"))
    return {r["id"]: r["text"] for r in data["requirements"]}


# -- playing -----------------------------------------------------------------------------

class ScenarioRun:
    """Plays one scenario on a running lab, a step at a time if asked (trainer mode)."""

    def __init__(self, lab: Lab, scenario: Scenario, *, settle: float = 0.3, timeout: float = 15.0) -> None:
        self.lab = lab
        self.scenario = scenario
        self.settle = settle          # the lab is quiet when nothing was recorded for this long
        self.timeout = timeout
        self.position = 0
        self.first_seq = self._last_seq()
        self.started = time.time()
        self.rows_of_step: list[tuple[int, int]] = []   # (first, last) trace seq of each step
        self._tasks: list[asyncio.Task] = []
        # Scenarios change people's conditions; the lab is given back as it was found.
        self._conditions = {u.id: (u.cpm_capable, u.roaming_without_cpm) for u in lab.topology.users}
        self._apps = set(lab.cpm_apps)

    @property
    def finished(self) -> bool:
        return self.position >= len(self.scenario.steps)

    def _last_seq(self) -> int:
        events = self.lab.trace.events()
        return events[-1].seq if events else 0

    async def step(self) -> Step:
        step = self.scenario.steps[self.position]
        before = self._last_seq()
        await self._act(step)
        await self._settle()
        self.rows_of_step.append((before + 1, self._last_seq()))
        self.position += 1
        return step

    async def play(self, pace: float = 0.0) -> Verdict:
        try:
            while not self.finished:
                await self.step()
                if pace:
                    await asyncio.sleep(pace)
            return await self.conclude()
        finally:
            await self.finish()

    async def conclude(self) -> Verdict:
        """The verdict once every check is decided (passed, or failed for good), or at the timeout.

        What the steps started may still be on its way (a receipt, the last SMS part): the
        verdict waits for it rather than for a fixed time.
        """
        deadline = time.monotonic() + self.timeout
        verdict = self.verdict()
        while not all(r.decided for r in verdict.results) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            verdict = self.verdict()
        return verdict

    async def _until(self, ready, what: str) -> None:
        """Wait for a step's precondition (what an earlier step set in motion), never for a fixed time."""
        deadline = time.monotonic() + self.timeout
        while not ready():
            if time.monotonic() > deadline:
                raise ScenarioError(f"{self.scenario.id}: {what} did not happen within {self.timeout:g} s")
            await asyncio.sleep(0.02)

    async def finish(self) -> None:
        """Wait for what the steps started (a session INVITE) and put the people back as they were."""
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=self.timeout)
            for task in pending:
                task.cancel()
            self._tasks.clear()
        for user_id in set(self.lab.cpm_apps) - self._apps:
            await self.lab.set_cpm_app(user_id, False)
        for user in self.lab.topology.users:
            capable, roaming = self._conditions.get(user.id, (user.cpm_capable, user.roaming_without_cpm))
            user.cpm_capable, user.roaming_without_cpm = capable, roaming

    async def _settle(self) -> None:
        await self._settle_for(self.settle)

    async def _settle_for(self, quiet: float) -> None:
        deadline = time.monotonic() + self.timeout
        last, quiet_since = self._last_seq(), time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            now_last = self._last_seq()
            if now_last != last:
                last, quiet_since = now_last, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet:
                return

    async def _act(self, step: Step) -> None:
        if step.action == "wait":
            return
        if step.action == "state":   # the same command a trainer types in `iwlab serve`
            settings = " ".join(f"{k}={v if isinstance(v, str) else 'yes' if v else 'no'}"
                                for k, v in step.state.items())
            answer = await run_command(self.lab, f"state {step.sender} {settings}")
            if answer.startswith("error"):
                raise ScenarioError(f"{self.scenario.id}: {answer}")
            return
        device = self.lab.devices.get(step.sender)
        if step.action in ("start_session", "accept_session", "session_send", "end_session"):
            await self._session_act(step, device)
            return
        if device is None:
            raise ScenarioError(f"{self.scenario.id}: {step.sender!r} is not a simulated device in this lab")
        if step.action == "send":
            recipient = self.lab.topology.user(step.recipient)
            if isinstance(device, CpmDevice):
                await device.send_message(recipient, step.text)
            elif isinstance(device, SmsHandset):
                await device.send_sms(recipient, step.text)
            elif isinstance(device, EmailClient):
                address = recipient.email or (recipient.sip or "")[4:]
                await device.send(address, step.text[:60], step.text)
        elif step.action == "reply":
            awaited = self._last_text_sent_to(step.sender)
            if awaited is not None:   # the message being answered may still be on its way
                await self._until(lambda: awaited in _inbox_texts(device),
                                  f"{step.sender} receiving {awaited!r} (to reply to it)")
            if isinstance(device, SmsHandset) and device.inbox:
                await device.send_sms(device.inbox[-1].number, step.text)
            elif isinstance(device, EmailClient) and device.inbox:
                last = device.inbox[-1]
                await device.send(last.parsed.sender, reply_subject(last.subject), step.text, reply_to=last)
            else:
                raise ScenarioError(f"{self.scenario.id}: {step.sender} has nothing to reply to")

    def _last_text_sent_to(self, user_id: str) -> str | None:
        earlier = self.scenario.steps[:self.position]
        return next((s.text for s in reversed(earlier) if s.action in ("send", "reply") and s.recipient == user_id
                     and s.text), None)

    async def _session_act(self, step: Step, device) -> None:
        if not isinstance(device, CpmDevice) or device.sessions is None:
            raise ScenarioError(f"{self.scenario.id}: {step.sender} has no CPM phone with sessions")
        sessions = device.sessions
        if step.action == "start_session":
            # Returns when the invitee answers, which is a later step: let it run.
            self._tasks.append(asyncio.create_task(sessions.start_session(self.lab.topology.user(step.recipient))))
            return
        def newest() -> ChatSession | None:
            return list(sessions.sessions.values())[-1] if sessions.sessions else None
        wanted = SessionState.INCOMING if step.action == "accept_session" else SessionState.ESTABLISHED
        await self._until(lambda: (found := newest()) is not None and found.state is wanted,
                          f"a session of {step.sender}'s in state {wanted.value} (for {step.action})")
        session = newest()
        assert session is not None
        if step.action == "accept_session":
            await sessions.accept(session)
        elif step.action == "session_send":
            sessions.send(session, step.text)
        else:
            await sessions.end(session)

    def failed(self, reason: str) -> Verdict:
        """A verdict for a scenario that could not be played to the end: it proves none of its
        requirements, so each of them fails (with the reason), rather than going unexercised."""
        requirements = list(dict.fromkeys(r for check in self.scenario.checks for r in check.requirements))
        check = Check("played", requirements, {})
        return Verdict(self.scenario, [CheckResult(check, False, f"could not be played: {reason}",
                                                   decided_failure=True)],
                       self.first_seq + 1, self._last_seq(), self.started, time.time() - self.started)

    def verdict(self) -> Verdict:
        events = [e for e in self.lab.trace.events() if e.seq > self.first_seq]
        results = [evaluate(check, events, self.lab) for check in self.scenario.checks]
        return Verdict(self.scenario, results, self.first_seq + 1, self._last_seq(), self.started,
                       time.time() - self.started)


# -- checks: read the trace only ------------------------------------------------------------

def _inbox_texts(device) -> list[str]:
    if isinstance(device, SmsHandset):
        return [sms.text for sms in device.inbox]
    if isinstance(device, EmailClient):
        return [item.parsed.text.strip() for item in device.inbox]
    if isinstance(device, CpmDevice):
        return [m.text for m in device.messages if m.direction == "in"]
    return []


def evaluate(check: Check, events: list[TraceEvent], lab: Lab) -> CheckResult:
    return {"delivered": _delivered, "route": _route, "addressed_to_person": _addressed,
            "threaded": _threaded, "session_established": _session_established,
            "networks": _networks}[check.kind](check, events, lab)


def _delivered(check: Check, events: list[TraceEvent], lab: Lab) -> CheckResult:
    """texts: exactly these, in this order; with among_others = true: these in this order among others."""
    user = lab.topology.user(check.params["to"])
    wanted = list(check.params["texts"])
    got = received_by(user, events)
    if check.params.get("among_others"):
        remaining = iter(text for _, text in got)
        passed = all(any(text == w for text in remaining) for w in wanted)   # an ordered subsequence
        got = [(e, text) for e, text in got if text in wanted]
    else:
        passed = [text for _, text in got] == wanted
    texts = [text for _, text in got]
    detail = f"{user.name} received {texts}" + ("" if passed else f", expected {wanted} in this order")
    # Everything expected has arrived: waiting longer cannot mend the order.
    arrived = set(wanted) <= set(texts)
    return CheckResult(check, passed, detail, [e.seq for e, _ in got], decided_failure=arrived and not passed)


def _route(check: Check, events: list[TraceEvent], lab: Lab) -> CheckResult:
    note = check.params["note"]
    hits = [e for e in events if note in e.note]
    detail = f"route: {note}" if hits else f"no PDU carries the routing reason {note!r}"
    return CheckResult(check, bool(hits), detail, [e.seq for e in hits[:1]])


def _addressed(check: Check, events: list[TraceEvent], lab: Lab) -> CheckResult:
    sender, recipient = lab.topology.user(check.params["from"]), lab.topology.user(check.params["to"])
    first = next((e for e in events if e.protocol == "SIP" and e.src == sender.name and not e.is_response
                  and e.summary.startswith("MESSAGE")), None)
    if first is None:
        return CheckResult(check, False, f"no MESSAGE from {sender.name} on the wire")
    uri = first.fields.get("request_line", "").split(" ")[1]
    passed = uri == recipient.cpm_uri
    detail = (f"{sender.name} addressed {recipient.name} as {uri}: a person, no technology chosen" if passed
              else f"{sender.name} addressed {uri}, not {recipient.name}'s identity {recipient.cpm_uri}")
    return CheckResult(check, passed, detail, [first.seq])


def _threaded(check: Check, events: list[TraceEvent], lab: Lab) -> CheckResult:
    user = lab.topology.user(check.params["to"])
    reply = next((e for e, text in received_by(user, events) if text.strip() == check.params["text"]), None)
    asked = next((e for e in events if e.protocol == "SIP" and e.src == user.name and not e.is_response
                  and (e.fields.get("cpim") or {}).get("body") == check.params["answers"]), None)
    if reply is None or asked is None:
        return CheckResult(check, False, "the question or the reply is missing from the trace")
    answered = reply.correlation.get("in_reply_to_contribution_id")
    same_thread = reply.correlation.get("conversation_id") == asked.correlation.get("conversation_id")
    passed = same_thread and answered == asked.correlation.get("contribution_id")
    detail = (f"the reply carries {user.name}'s Conversation-ID and the InReplyTo-Contribution-ID of "
              f"{check.params['answers']!r}" if passed
              else f"the reply is not tied to {check.params['answers']!r} (InReplyTo-Contribution-ID {answered})")
    return CheckResult(check, passed, detail, [asked.seq, reply.seq])


def _session_established(check: Check, events: list[TraceEvent], lab: Lab) -> CheckResult:
    """A 200 OK to an INVITE reached the inviting side, and the ACK went back (the SIP responses on the wire)."""
    node = check.params["answered_to"]
    ok = next((e for e in events if e.protocol == "SIP" and e.is_response and e.dst == node
               and e.summary.startswith("200 ") and e.summary.endswith("(INVITE)")), None)
    if ok is None:
        return CheckResult(check, False, f"no 200 OK to an INVITE reached {node}")
    call_id = ok.correlation.get("call_id")
    ack = next((e for e in events if e.protocol == "SIP" and e.summary.startswith("ACK") and e.src == node
                and e.correlation.get("call_id") == call_id), None)
    msrp = next((e for e in events if e.protocol == "MSRP" and e.summary.startswith("SEND")
                 and e.correlation.get("call_id") == call_id), None)
    passed = ack is not None
    detail = f"session established: 200 OK (INVITE) to {node}, ACK" + (", MSRP flowing" if msrp else "")
    return CheckResult(check, passed, detail if passed else f"200 OK to {node} but no ACK",
                       [e.seq for e in (ok, ack, msrp) if e is not None])


def requirement_verdicts(verdicts: list[Verdict], requirements: dict[str, str]) -> dict[str, tuple[str, list[int]]]:
    """Per requirement: 'passed', 'failed' or 'not exercised', with the proving trace rows."""
    table: dict[str, tuple[str, list[int]]] = {rid: ("not exercised", []) for rid in requirements}
    for verdict in verdicts:
        for result in verdict.results:
            for rid in result.check.requirements:
                state, rows = table.get(rid, ("not exercised", []))
                if not result.passed:
                    state = "failed"
                elif state != "failed":
                    state = "passed"
                table[rid] = (state, rows + result.evidence)
    return table


def _networks(check: Check, events: list[TraceEvent], lab: Lab) -> CheckResult:
    """CPM-IOP-001: the same messages got through over every transport (and address family) the
    sender used: each of the sender's MESSAGEs, as its first hop carried it, reached the recipient."""
    sender, recipient = lab.topology.user(check.params["from"]), lab.topology.user(check.params["to"])
    arrived = {text for _, text in received_by(recipient, events)}
    first_hops = [e for e in events if e.protocol == "SIP" and e.src == sender.name and not e.is_response
                  and e.summary.startswith("MESSAGE") and "imdn" not in (e.fields.get("cpim") or {}).get(
                      "Content-Type", "")]
    through: dict[str, list[int]] = {}
    for event in first_hops:
        text = (event.fields.get("cpim") or {}).get("body", event.fields.get("body"))
        if text in arrived and event.src_address:
            family = "IPv6" if ":" in event.src_address[0] else "IPv4"
            through.setdefault(f"{event.transport}/{family}", []).append(event.seq)
    wanted = [str(t).lower() for t in check.params["over"]]
    missing = [t for t in wanted if not any(key.startswith(f"{t}/") for key in through)]
    detail = (f"{sender.name}'s messages reached {recipient.name} over {', '.join(sorted(through)) or 'nothing'}"
              + (f"; none over {', '.join(missing)}" if missing else ""))
    return CheckResult(check, not missing, detail, [seqs[0] for seqs in through.values()],
                       decided_failure=False)
