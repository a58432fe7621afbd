"""The seed's use cases as runnable flows with verdicts taken from the trace.

A verdict never trusts the flow's own bookkeeping: it reads what reached the
devices on the wire (the trace), e.g. which deliver_sm PDUs the SMSC sent to
Peter's handset and in what order.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from .lab import Lab
from .smpp_codec import delivered_text
from .trace import TraceEvent


@dataclass
class Verdict:
    use_case: str
    title: str
    requirements: list[str]
    passed: bool = False
    details: list[str] = field(default_factory=list)
    evidence: list[int] = field(default_factory=list)   # trace seq numbers that prove it

    def report(self) -> str:
        head = f"{'PASS' if self.passed else 'FAIL'}  {self.use_case}  {self.title}  [{', '.join(self.requirements)}]"
        lines = [head] + [f"      {d}" for d in self.details]
        if self.evidence:
            lines.append(f"      evidence: trace rows {', '.join(map(str, self.evidence))}")
        return "\n".join(lines)


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return predicate()


def deliveries_to(lab: Lab, node: str, since: int = 0) -> list[tuple[TraceEvent, str]]:
    """deliver_sm PDUs the SMSC sent to a node, with their text, in wire order."""
    found = []
    for event in lab.trace.events():
        if event.seq > since and event.protocol == "SMPP" and event.dst == node \
                and event.summary.startswith("deliver_sm "):
            text = delivered_text(event.raw)
            if text is not None:
                found.append((event, text))
    return found


async def cpm_to_sms_messages(lab: Lab) -> Verdict:
    """5.8.5: Mary sends two messages in a row to Peter, who has only an SMS handset."""
    verdict = Verdict("5.8.5", "CPM user -> non-CPM user: sending messages, in order",
                      ["CPM-IOP-002", "CPM-IOP-003", "CPM-IOP-005", "CPM-IOP-xxx (order)"])
    mary, peter = lab.user("mary"), lab.user("peter")
    phone = lab.device("mary")
    since = len(lab.trace) and lab.trace.events()[-1].seq
    texts = ["Hi Peter", "Are you there?"]
    for text in texts:
        # Mary picks Peter, a person, from her address book: no technology chosen.
        await phone.send_message(peer_from_contacts(phone, peter.id), text)
    await wait_for(lambda: len(deliveries_to(lab, peter.name, since)) >= len(texts))
    received = deliveries_to(lab, peter.name, since)
    got = [text for _, text in received]
    verdict.evidence = [event.seq for event, _ in received]
    verdict.details.append(f"Mary sent {texts}; Peter's handset received {got}")
    route_notes = [e for e in lab.trace.events() if e.seq > since and "SMS via SMSC" in e.note]
    if route_notes:
        verdict.details.append(f"routing: {route_notes[0].note}")
        verdict.evidence.insert(0, route_notes[0].seq)
    sources = {event.fields.get("source_addr") for event, _ in received}
    verdict.passed = got == texts and bool(route_notes) and sources <= {mary.msisdn, f"+{mary.msisdn}"}
    if sources and not sources <= {mary.msisdn, f"+{mary.msisdn}"}:
        verdict.details.append(f"unexpected SMS source address(es): {sources}")
    return verdict


def peer_from_contacts(device, user_id: str):
    for contact in device.contacts():
        if contact.id == user_id:
            return contact
    raise LookupError(f"{user_id} is not in {device.name}'s address book")


USE_CASES: dict[str, Callable[[Lab], Awaitable[Verdict]]] = {
    "5.8.5": cpm_to_sms_messages,
}


async def run_use_cases(lab: Lab, names: list[str]) -> list[Verdict]:
    return [await USE_CASES[name](lab) for name in (names or list(USE_CASES))]
