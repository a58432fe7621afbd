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
import base64
import binascii
import dataclasses
import time
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from iwlab.backends.clock import LabLoop
from iwlab.backends.devices.cpm_phone import CpmDevice
from iwlab.backends.devices.cpm_sessions import ChatSession
from iwlab.backends.devices.email_client import EmailClient, reply_subject
from iwlab.backends.devices.session_state import SessionState
from iwlab.backends.devices.sms_handset import SmsHandset
from iwlab.backends.lab import conditions
from iwlab.backends.lab.checks import CHECKS, REQUIRED_PARAMS, STRESS, Check, CheckResult, evaluate
from iwlab.backends.lab.control import run_command
from iwlab.backends.lab.lab import Lab

__all__ = ["Check", "CheckResult", "Scenario", "ScenarioError", "ScenarioRun", "Step", "Verdict", "evaluate",
           "load_requirements", "load_scenario", "load_scenarios", "requirement_verdicts"]

ACTIONS = ("send", "reply", "wait", "state", "start_session", "accept_session", "session_send", "end_session",
           "cancel_session", "restart", "read", "open_link", "start_group")
SESSION_ACTIONS = ("start_session", "accept_session", "session_send", "end_session", "cancel_session", "start_group")
STATE_KEYS = ("registered", "capable", "roaming", "accepting", "answering", "bound", "confirming")
# A scenario's [settings], applied when it starts and given back when it ends: conditions (as the
# conditions panel and `iwlab serve` set them; the name -> its conditions.Settings field) and the
# IWF's session answer timeout and the CPM servers' fallback time.
CONDITION_SETTINGS = {"smsc_throttle_every": "throttle_every", "smsc_queue_full_every": "queue_full_every",
                      "smsc_delay_ms": "delay_ms", "smsc_jitter_ms": "jitter_ms", "smsc_drop_every": "drop_every",
                      "mail_busy_seconds": "mail_busy_seconds", "mail_busy_code": "mail_busy_code",
                      "mail_delay_ms": "mail_delay_ms",
                      "mail_jitter_ms": "mail_jitter_ms"}
SETTINGS = (*CONDITION_SETTINGS, "session_timeout_seconds", "fallback_seconds")


async def _quiet() -> None:
    """On the lab's own loop: until everything set in motion has happened (no byte waiting on any
    socket, nothing ready to run), so a verdict is never taken between two hops of one burst (a
    second copy on its way would otherwise be missed)."""
    loop = asyncio.get_running_loop()
    if isinstance(loop, LabLoop):
        await loop.when_idle()


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
    texts: list[str] = field(default_factory=list)          # "send": a burst, one right after another
    content_type: str = ""                                  # "send": a payload other than text ...
    data: bytes = b""                                       # ... given as base64 in the file
    node: str = ""                                          # "restart": which node (smsc)
    read_receipt: bool = False                              # "send" by email: ask for an MDN


@dataclass
class Scenario:
    id: str
    title: str
    use_case: str
    flow: str
    steps: list[Step]
    checks: list[Check]
    source: str = ""
    settings: dict[str, float] = field(default_factory=dict)


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
        if "under" in check and check["under"] not in STRESS:
            raise ScenarioError(f"{where}: 'under' is one of {', '.join(STRESS)}")
    settings = data.get("settings", {})
    if not isinstance(settings, dict) or any(k not in SETTINGS or not isinstance(v, (int, float))
                                             for k, v in settings.items()):
        raise ScenarioError(f"{where}: [settings] takes numbers for {', '.join(SETTINGS)}")
    try:
        steps = [Step(action=s["action"], explain=s.get("explain", "").strip(), seed_step=str(s.get("seed_step", "")),
                      sender=s.get("from", s.get("user", "")), recipient=s.get("to", ""), text=s.get("text", ""),
                      state={**{k: bool(s[k]) for k in STATE_KEYS if k in s},
                             **({"transport": str(s["transport"])} if "transport" in s else {})},
                      texts=list(s.get("texts", [])), content_type=s.get("content_type", ""),
                      data=_payload(s, where), node=s.get("node", ""), read_receipt=bool(s.get("read_receipt")))
                 for s in data.get("steps", [])]
        checks = [Check(kind=c["kind"], requirements=list(c.get("requirements", [])),
                        params={k: v for k, v in c.items() if k not in ("kind", "requirements")})
                  for c in data.get("checks", [])]
        scenario = Scenario(id=str(data["id"]), title=data["title"], use_case=data.get("use_case", ""),
                            flow=data.get("flow", ""), steps=steps, checks=checks, source=str(path),
                            settings=dict(settings))
    except KeyError as exc:
        raise ScenarioError(f"{where}: missing {exc}") from None
    for step in steps:
        if step.action not in ACTIONS:
            raise ScenarioError(f"{where}: unknown action {step.action!r} (known: {', '.join(ACTIONS)})")
    for check in checks:
        if check.kind not in CHECKS:
            raise ScenarioError(f"{where}: unknown check {check.kind!r} (known: {', '.join(CHECKS)})")
    return scenario


def _payload(step: dict[str, Any], where: str) -> bytes:
    """A step's non-text payload: base64 in the file (a picture, a file description)."""
    if "data_base64" not in step:
        return b""
    try:
        return base64.b64decode("".join(str(step["data_base64"]).split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ScenarioError(f"{where}: data_base64 is not base64 ({exc})") from None


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
    """Plays one scenario on a running lab, a step at a time if asked (trainer mode): each action,
    waiting for its preconditions, settings given back at the end, and the verdict once every
    check is decided. Its size is the action vocabulary; the checks are checks.py's."""

    def __init__(self, lab: Lab, scenario: Scenario, *, settle: float = 0.3, timeout: float = 15.0) -> None:
        self.lab = lab
        self.scenario = scenario
        self.settle = settle          # the lab is quiet when nothing was recorded for this long
        self.timeout = timeout
        self.position = 0
        self.first_seq = self.lab.trace.last_seq()
        self.started = time.time()
        self.rows_of_step: list[tuple[int, int]] = []   # (first, last) trace seq of each step
        self._tasks: list[asyncio.Task] = []
        # Scenarios change people's conditions; the lab is given back as it was found.
        self._conditions = {u.id: (u.cpm_capable, u.roaming_without_cpm) for u in lab.topology.users}
        self._apps = set(lab.cpm_apps)
        self._phones = {uid: (d.registered, d.accepting, d.user.sip_transport) for uid, d in lab.devices.items()
                        if isinstance(d, CpmDevice)}
        self._handsets = {uid: h.bound for uid, h in self._all_handsets().items()}
        self._settings_before: dict[str, Any] | None = None
        self._conditions_before: conditions.Settings | None = None
        self._sent: list[tuple[str, str]] = []      # (recipient id, text) as the steps sent them, in order
        # user id -> the newest message they had when something left for them that arrives changed
        # (an invitation, a picture): a later step waits for another
        self._expect_new: dict[str, object | None] = {}

    @property
    def finished(self) -> bool:
        return self.position >= len(self.scenario.steps)

    def _all_handsets(self) -> dict[str, SmsHandset]:
        found = {uid: d for uid, d in self.lab.devices.items() if isinstance(d, SmsHandset)}
        return {**self.lab.sms_sides, **found}

    def _apply_settings(self) -> None:
        """The scenario's [settings] (SMSC throttling, a short answer timeout), given back by finish()."""
        settings = self.scenario.settings
        self._settings_before = {}
        wanted = {CONDITION_SETTINGS[name]: value for name, value in settings.items() if name in CONDITION_SETTINGS}
        if wanted:
            before = self._conditions_before = conditions.current(self.lab)
            conditions.apply(self.lab, dataclasses.replace(
                before, **{name: type(getattr(before, name))(value) for name, value in wanted.items()}))
        if "fallback_seconds" in settings:   # RCC.07 revoke and fall back: the patience of each CPM server using it
            self._settings_before["fallback_seconds"] = {
                name: server.fallback.seconds for name, server in self.lab.cpm_servers.items()}
            for server in self.lab.cpm_servers.values():
                if server.fallback.seconds:
                    server.fallback.seconds = float(settings["fallback_seconds"])
        if "session_timeout_seconds" in settings and self.lab.iwfs:
            self._settings_before["session_timeout_seconds"] = next(iter(self.lab.iwfs.values())).sessions.rules.timeout
            for iwf in self.lab.iwfs.values():
                iwf.sessions.set_timeout(float(settings["session_timeout_seconds"]))

    def _restore_settings(self) -> None:
        before, self._settings_before = self._settings_before or {}, None
        conditions_before, self._conditions_before = self._conditions_before, None
        if conditions_before is not None:
            conditions.apply(self.lab, conditions_before)
        if "fallback_seconds" in before:   # each server its own value back
            for name, seconds in before["fallback_seconds"].items():
                if name in self.lab.cpm_servers:
                    self.lab.cpm_servers[name].fallback.seconds = seconds
        if "session_timeout_seconds" in before:
            for iwf in self.lab.iwfs.values():
                iwf.sessions.set_timeout(before["session_timeout_seconds"])

    async def step(self) -> Step:
        step = self.scenario.steps[self.position]
        if self._settings_before is None:
            self._apply_settings()
        before = self.lab.trace.last_seq()
        await self._act(step)
        await self._settle()
        self.rows_of_step.append((before + 1, self.lab.trace.last_seq()))
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
        await _quiet()
        verdict = self.verdict()
        while not all(r.decided for r in verdict.results) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            await _quiet()
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
        self._restore_settings()
        for user_id in set(self.lab.cpm_apps) - self._apps:
            await self.lab.set_cpm_app(user_id, False)
        for user in self.lab.topology.users:
            capable, roaming = self._conditions.get(user.id, (user.cpm_capable, user.roaming_without_cpm))
            user.cpm_capable, user.roaming_without_cpm = capable, roaming
        for user_id, (registered, accepting, transport) in self._phones.items():
            phone = self.lab.devices[user_id]
            assert isinstance(phone, CpmDevice)
            if (phone.registered, phone.accepting, phone.user.sip_transport) != (registered, accepting, transport):
                await phone.set_state(registered=registered, accepting=accepting, sip_transport=transport)
        for user_id, bound in self._handsets.items():
            handset = self._all_handsets().get(user_id)
            if handset is not None and handset.bound != bound:
                await handset.set_bound(bound)

    async def _settle(self) -> None:
        await self._settle_for(self.settle)

    async def _settle_for(self, quiet: float) -> None:
        deadline = time.monotonic() + self.timeout
        last, quiet_since = self.lab.trace.last_seq(), time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            now_last = self.lab.trace.last_seq()
            if now_last != last:
                last, quiet_since = now_last, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet:
                return

    async def _act(self, step: Step) -> None:
        if step.action == "wait":
            return
        if step.action in ("state", "restart"):   # the same commands a trainer types in `iwlab serve`
            settings = " ".join(f"{k}={v if isinstance(v, str) else 'yes' if v else 'no'}"
                                for k, v in step.state.items())
            command = f"state {step.sender} {settings}" if step.action == "state" else f"restart {step.node}"
            answer = await run_command(self.lab, command)
            if answer.startswith("error"):
                raise ScenarioError(f"{self.scenario.id}: {answer}")
            return
        device = self.lab.devices.get(step.sender)
        if step.action in SESSION_ACTIONS:
            await self._session_act(step, device)
            return
        if device is None:
            raise ScenarioError(f"{self.scenario.id}: {step.sender!r} is not a simulated device in this lab")
        if step.action == "send":
            recipient = self.lab.topology.user(step.recipient)
            for text in step.texts or [step.text]:     # a burst: one right after another, nothing settles between
                if step.content_type:   # what arrives is an adaptation, not this text: wait for something new
                    self._expect_new[recipient.id] = _newest_in(self.lab.devices.get(recipient.id))
                await self._send(device, recipient, text, step)
                if not step.content_type:
                    self._sent.append((recipient.id, text))
        elif step.action in ("reply", "read", "open_link"):
            awaited = self._awaited(step.sender)
            if awaited is not None:   # the message being answered may still be on its way
                await self._until(lambda: awaited in _inbox_texts(device),
                                  f"{step.sender} receiving {awaited!r} (to {step.action.replace('_', ' ')})")
            elif step.sender in self._expect_new:   # an invitation, an adapted picture may still be on its way
                mark = self._expect_new.pop(step.sender)
                await self._until(lambda: _newest_in(device) is not mark,
                                  f"{step.sender} receiving what was sent (to {step.action.replace('_', ' ')})")
            if step.action == "reply":
                await self._reply(device, step)
            elif step.action == "read" and isinstance(device, EmailClient) and device.inbox:
                await device.open(device.inbox[-1])       # answers a read-receipt request (MDN)
            elif step.action == "read" and isinstance(device, CpmDevice) and \
                    any(m.direction == "in" for m in device.messages):
                await device.read(next(m for m in reversed(device.messages) if m.direction == "in"))   # IMDN displayed
            elif step.action == "open_link" and isinstance(device, SmsHandset):
                link = next((word for sms in reversed(device.inbox) for word in sms.text.split()
                             if word.startswith("http://")), None)
                if link is None:
                    raise ScenarioError(f"{self.scenario.id}: {step.sender} got no link to open")
                await device.open_link(link)
            else:
                raise ScenarioError(f"{self.scenario.id}: {step.sender} cannot {step.action} here")

    async def _send(self, device, recipient, text: str, step: Step) -> None:
        if isinstance(device, CpmDevice):
            if step.content_type:
                await device.send_message(recipient, text or f"[{step.content_type}]",
                                          content_type=step.content_type, body=step.data)
            else:
                await device.send_message(recipient, text)
        elif isinstance(device, SmsHandset):
            await device.send_sms(recipient, text)
        elif isinstance(device, EmailClient):
            address = recipient.email or (recipient.sip or "")[4:]
            await device.send(address, text[:60], text, read_receipt=step.read_receipt)

    async def _reply(self, device, step: Step) -> None:
        """Reply to what came last, as the user would hit Reply: by SMS to the number it came from,
        by email to its sender (threaded), on a CPM phone to its sender (by SMS while roaming)."""
        if isinstance(device, SmsHandset) and device.inbox:
            number = device.inbox[-1].number
            await device.send_sms(number, step.text)
            peer = self.lab.sms_peer(device.user, number)
        elif isinstance(device, EmailClient) and device.inbox:
            last = device.inbox[-1]
            await device.send(last.parsed.sender, reply_subject(last.subject), step.text, reply_to=last)
            peer = self.lab.topology.user_by_email(last.parsed.sender) or self.lab.topology.user_by_uri(
                "sip:" + last.parsed.sender)
        elif isinstance(device, CpmDevice) and any(m.direction == "in" for m in device.messages):
            last_in = next(m for m in reversed(device.messages) if m.direction == "in")
            await device.send_message(last_in.peer_uri, step.text, in_reply_to=last_in)
            peer = self.lab.topology.user_by_uri(last_in.peer_uri)
        else:
            raise ScenarioError(f"{self.scenario.id}: {step.sender} has nothing to reply to")
        if peer is not None:
            self._sent.append((peer.id, step.text))

    def _awaited(self, user_id: str) -> str | None:
        """The last text the steps sent to this user (what a reply, a read or a link waits for)."""
        return next((text for recipient, text in reversed(self._sent) if recipient == user_id), None)

    async def _session_act(self, step: Step, device) -> None:
        if not isinstance(device, CpmDevice) or device.sessions is None:
            raise ScenarioError(f"{self.scenario.id}: {step.sender} has no CPM phone with sessions")
        sessions = device.sessions
        if step.action == "start_session":
            invitee = self.lab.devices.get(step.recipient)
            self._expect_new[step.recipient] = _newest_in(invitee)   # the adapted invitation comes next
            # Returns when the invitee answers, which is a later step: let it run.
            self._tasks.append(asyncio.create_task(sessions.start_session(self.lab.topology.user(step.recipient))))
            return
        if step.action == "start_group":    # to = "peter, john": the focus invites each; the step after waits
            members = [self.lab.topology.user(uid.strip()) for uid in step.recipient.split(",")]
            for member in members:
                self._expect_new[member.id] = _newest_in(self.lab.devices.get(member.id))
            self._tasks.append(asyncio.create_task(sessions.start_group(members)))
            return
        def newest() -> ChatSession | None:
            return list(sessions.sessions.values())[-1] if sessions.sessions else None
        wanted = {"accept_session": SessionState.INCOMING,
                  "cancel_session": SessionState.RINGING}.get(step.action, SessionState.ESTABLISHED)
        await self._until(lambda: (found := newest()) is not None and found.state is wanted,
                          f"a session of {step.sender}'s in state {wanted.value} (for {step.action})")
        session = newest()
        assert session is not None
        if step.action == "accept_session":
            await sessions.accept(session)
        elif step.action == "cancel_session":
            sessions.cancel(session)
        elif step.action == "session_send":
            sessions.send(session, step.text)
            peer = self.lab.topology.user_by_uri(session.peer_uri)
            if peer is not None:
                self._sent.append((peer.id, step.text))
            for member in session.members:     # a group: each member gets it with its author's name
                self._sent.append((member.id, f"{device.user.name}: {step.text}"))
        else:
            await sessions.end(session)

    def failed(self, reason: str) -> Verdict:
        """A verdict for a scenario that could not be played to the end: it proves none of its
        requirements, so each of them fails (with the reason), rather than going unexercised; each
        check is shown too, on what the wire holds so far (its rows: how far things got)."""
        requirements = list(dict.fromkeys(r for check in self.scenario.checks for r in check.requirements))
        played = CheckResult(Check("played", requirements, {}), False, f"could not be played: {reason}",
                             [self.rows_of_step[-1][1]] if self.rows_of_step else [], decided_failure=True)
        verdict = self.verdict()
        verdict.results.insert(0, played)
        return verdict

    def verdict(self) -> Verdict:
        events = self.lab.trace.events_since(self.first_seq)   # not the whole trace, unpacked, every 50 ms
        results = [evaluate(check, events, self.lab) for check in self.scenario.checks]  # backends/lab/checks.py
        return Verdict(self.scenario, results, self.first_seq + 1, self.lab.trace.last_seq(), self.started,
                       time.time() - self.started)


# -- checks: read the trace only (backends/lab/checks.py) ------------------------------------

def _newest_in(device) -> object | None:
    """The newest message a device received (None: none yet): "something new came" is another
    one there. Not a count: a folder keeps its newest history.KEPT, so a full one stays that long."""
    if isinstance(device, (SmsHandset, EmailClient)):
        return device.inbox[-1] if device.inbox else None
    if isinstance(device, CpmDevice):
        return next((m for m in reversed(device.messages) if m.direction == "in"), None)
    return None


def _inbox_texts(device) -> list[str]:
    if isinstance(device, SmsHandset):
        return [sms.text for sms in device.inbox]
    if isinstance(device, EmailClient):
        return [item.parsed.text.strip() for item in device.inbox]
    if isinstance(device, CpmDevice):
        return [m.text for m in device.messages if m.direction == "in"]
    return []


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

