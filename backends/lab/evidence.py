"""Evidence read from the trace: what reached a device, what a device sent, and in what order.

Verdicts, the ladder's order badges and the devices' views all read these; none of them
re-derive what went over the wire.

The order check (seed 5.8.5 / 5.9.5 step 6, CPM-IOP-xxx-5): what a sender put on the
wire (its own MESSAGEs, submit_sm, mails), numbered per (sender, recipient) in sending order,
and what the recipient's device accepted (received_by). A message is known by its text; the
k-th sending of one text is matched with its k-th arrival, so repeated texts are counted, not
confused. Each arrival gets its position ("3 of 5"), and is flagged when it comes after a
later one (an inversion) or is one more copy than was sent (a duplicate).

Pure: events in, findings out. The ladder, the devices' badges and the verdict read it.
"""
from __future__ import annotations

import bisect
import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Iterable

from iwlab.backends.protocols import smpp, smstext
from iwlab.backends.topology import Topology, User
from iwlab.backends.trace import TraceEvent


@dataclass(frozen=True)
class Arrival:
    event: TraceEvent          # the PDU that delivered it to the recipient's device
    text: str
    position: int | None       # 1-based place in the sender's sequence; None: never sent (or one copy too many)
    of: int                    # how many the sender had sent to this recipient by then
    inverted: bool             # an earlier message arrives after a later one
    duplicate: bool            # more copies arrived than were sent

    @property
    def badge(self) -> str:
        where = f"{self.position} of {self.of}" if self.position else "?"
        if self.duplicate:
            return f"{where} · duplicate"
        return f"{where} · out of order" if self.inverted else where


@dataclass(frozen=True)
class PairOrder:
    sender: str
    recipient: str
    sent: list[tuple[TraceEvent, str]]
    arrivals: list[Arrival]

    @property
    def in_order(self) -> bool:
        return not any(a.inverted or a.duplicate for a in self.arrivals)


def received_by(user, events: list[TraceEvent]) -> list[tuple[TraceEvent, str]]:
    """What reached a user's device on the wire, in order, as (event, text). A CPM phone is also
    an SMS handset: what reached its SMS side counts too (its node has the user's name)."""
    found: list[tuple[TraceEvent, str]] = []
    if user.device == "cpm":
        reassembler = smstext.Reassembler(timeout=3600)
        for e in events:
            cpim = e.fields.get("cpim") if not e.is_response else None
            if e.protocol == "SIP" and e.dst == user.name and cpim and "imdn" not in cpim.get("Content-Type", "") \
                    and "rcsrevoke" not in cpim.get("Content-Type", ""):   # a revoke takes back, delivers nothing
                found.append((e, cpim.get("body", "")))
            elif _sms_delivered_to(user, e, events):
                found += [(e, sms.text) for sms in smpp.reassemble(reassembler, smpp.parse(e.raw))]
    elif user.device == "sms":
        reassembler = smstext.Reassembler(timeout=3600)
        for e in events:
            if e.protocol == "SMPP" and e.dst == user.name and e.summary.startswith("deliver_sm ") \
                    and _answered_ok(e, events, "deliver_sm_resp", " ok"):
                pdu = smpp.parse(e.raw)
                if (pdu.esm_class or 0) & 0x3C:
                    continue   # a receipt, not a message
                for sms in smpp.reassemble(reassembler, pdu):
                    found.append((e, sms.text))
    elif user.device == "email" and user.email:
        for e in events:
            envelope = e.fields.get("envelope") or {}
            if e.protocol == "SMTP" and e.summary.startswith("DATA (") and \
                    user.email.lower() in [r.lower() for r in envelope.get("rcpt_to", [])] and \
                    _answered_ok(e, events, "250 ", ""):
                message = message_from_bytes(_undot(e.raw), policy=policy.default)
                body = message.get_body(preferencelist=("plain",))
                found.append((e, body.get_content().strip() if body else ""))
    return found


def _sms_delivered_to(user, e: TraceEvent, events: list[TraceEvent]) -> bool:
    """A deliver_sm (a message, not a receipt) the user's handset took."""
    if not (e.protocol == "SMPP" and e.dst == user.name and e.summary.startswith("deliver_sm ")
            and _answered_ok(e, events, "deliver_sm_resp", " ok")):
        return False
    try:
        return not (smpp.parse(e.raw).esm_class or 0) & 0x3C
    except smpp.ParseError:
        return False


def header(event: TraceEvent, name: str) -> str | None:
    """A SIP header of a recorded message (the first one), as it was on the wire."""
    name = name.lower()
    return next((v for k, v in event.fields.get("headers") or [] if k.lower() == name), None)


def request_uri(event: TraceEvent) -> str:
    parts = (event.fields.get("request_line") or "").split(" ")
    return parts[1] if len(parts) > 1 else ""


def is_sip_request(event: TraceEvent, *methods: str) -> bool:
    return event.protocol == "SIP" and not event.is_response and event.summary.split(" ", 1)[0] in methods


def is_imdn(event: TraceEvent) -> bool:
    return "imdn" in ((event.fields.get("cpim") or {}).get("Content-Type") or "")


def mail_of(event: TraceEvent) -> EmailMessage | None:
    """The message an SMTP DATA event carried (None for anything else)."""
    if event.protocol != "SMTP" or not event.summary.startswith("DATA ("):
        return None
    parsed = message_from_bytes(_undot(event.raw), policy=policy.default)
    return parsed if isinstance(parsed, EmailMessage) else None


def mail_text(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    return body.get_content().strip() if body is not None else ""


def mails(events: list[TraceEvent], *, to: str | None = None, src: str | None = None,
          accepted: bool = True) -> list[tuple[TraceEvent, EmailMessage]]:
    """SMTP DATA on the wire: to an envelope recipient and/or from a node; accepted (250) only."""
    found = []
    for e in events:
        message = mail_of(e)
        if message is None or (src and e.src != src):
            continue
        recipients = [r.lower() for r in (e.fields.get("envelope") or {}).get("rcpt_to", [])]
        if to and to.lower() not in recipients:
            continue
        if accepted and not _answered_ok(e, events, "250 ", ""):
            continue
        found.append((e, message))
    return found


def sms_pdus(events: list[TraceEvent], command: str, *, src: str | None = None, dst: str | None = None,
             destination: str | None = None) -> list[tuple[TraceEvent, object]]:
    """submit_sm / deliver_sm (messages, not receipts) on the wire, parsed."""
    found = []
    for e in events:
        if e.protocol != "SMPP" or not e.summary.startswith(command + " ") or (src and e.src != src) \
                or (dst and e.dst != dst):
            continue
        try:
            pdu = smpp.parse(e.raw)
        except smpp.ParseError:
            continue
        if (pdu.esm_class or 0) & 0x3C:
            continue
        if destination and smpp.text(pdu.destination_addr).lstrip("+") != destination.lstrip("+"):
            continue
        found.append((e, pdu))
    return found


def _answered_ok(request: TraceEvent, events: list[TraceEvent], answer: str, ok: str) -> bool:
    """Did the receiver accept this PDU? The first answer after it on the same exchange says.

    SMPP: the deliver_sm_resp with the same sequence from the handset; SMTP: the reply
    after DATA in the same session. A refused or unanswered PDU is not a delivery.
    """
    start = bisect.bisect_right(events, request.seq, key=lambda e: e.seq)   # events are in seq order
    for e in itertools.islice(events, start, None):
        if e.protocol != request.protocol or e.src != request.dst:
            continue
        if request.protocol == "SMPP":
            if e.summary.startswith(answer) and e.correlation.get("smpp_seq") == request.correlation.get("smpp_seq"):
                return e.summary.endswith(ok)
        elif e.correlation.get("smtp_session") == request.correlation.get("smtp_session") and e.is_response:
            return e.summary.startswith(answer)
    return False


def _undot(data: bytes) -> bytes:
    """The message inside an SMTP DATA block: no terminating dot line, dot-stuffing undone."""
    if data.endswith(b"\r\n.\r\n"):
        data = data[:-3]
    return b"\r\n".join(line[1:] if line.startswith(b"..") else line for line in data.split(b"\r\n"))


def sent_by(user: User, events: Iterable[TraceEvent], topology: Topology) -> list[tuple[TraceEvent, User, str]]:
    """What a user's device put on the wire, in order, as (event, recipient, text)."""
    found: list[tuple[TraceEvent, User, str]] = []
    for e in events:
        if e.src != user.name or e.is_response:
            continue
        if e.protocol == "SIP" and e.summary.startswith("MESSAGE"):
            cpim = e.fields.get("cpim") or {}
            if "imdn" in cpim.get("Content-Type", ""):
                continue
            uri = (e.fields.get("request_line") or "").split(" ")[1:2]
            recipient = topology.user_by_uri(uri[0]) if uri else None
            text = cpim.get("body") if cpim else e.fields.get("body")
            if recipient is not None and text is not None:
                found.append((e, recipient, text))
        elif e.protocol == "SMPP" and e.summary.startswith("submit_sm "):
            try:
                pdu = smpp.parse(e.raw)
            except smpp.ParseError:
                continue
            recipient = topology.user_by_number(smpp.text(pdu.destination_addr))
            _, text = smpp.content(pdu)
            if recipient is not None and text is not None:
                found.append((e, recipient, text))
    return found


def check_order(sender: User, recipient: User, events: list[TraceEvent], topology: Topology,
                received: list[tuple[TraceEvent, str]] | None = None) -> PairOrder:
    """The order in which recipient's device got what sender sent it. received: received_by(recipient,
    events), when the caller checks several senders against one recipient."""
    sent = [(e, text) for e, to, text in sent_by(sender, events, topology) if to.id == recipient.id]
    sent_texts = [text for _, text in sent]
    positions: dict[str, list[int]] = defaultdict(list)        # text -> its positions, in sending order
    for index, text in enumerate(sent_texts, 1):
        positions[text].append(index)
    sent_seqs = sorted(e.seq for e, _ in sent)   # how many were sent before an arrival: a bisect, not a walk
    seen: Counter = Counter()
    highest = 0
    arrivals: list[Arrival] = []
    for event, text in received if received is not None else received_by(recipient, events):
        if text not in positions:
            continue   # from someone else, or not a message of this pair
        copy = seen[text]
        seen[text] += 1
        duplicate = copy >= len(positions[text])
        position = None if duplicate else positions[text][copy]
        sent_so_far = bisect.bisect_left(sent_seqs, event.seq)
        inverted = position is not None and position < highest
        if position is not None:
            highest = max(highest, position)
        arrivals.append(Arrival(event, text, position, max(sent_so_far, position or 0), inverted, duplicate))
    return PairOrder(sender.id, recipient.id, sent, arrivals)
