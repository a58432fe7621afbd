"""What a scenario's checks look for on the wire: one function per check kind, trace in, verdict out.

Every check reads the PDUs the trace recorded (never a node's own bookkeeping) and names the rows
that prove it; a failed check names the rows that show how far things got. A check is decided
when it passed, or failed for good (a wrong technology on the wire, a refusal, an order that can
no longer come right); otherwise the run waits for it (ScenarioRun.conclude).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Callable

from iwlab.backends.lab import evidence as ev
from iwlab.backends.lab.evidence import received_by
from iwlab.backends.lab.lab import Lab
from iwlab.backends.protocols import mail, reports, sip, smpp, smstext
from iwlab.backends.protocols.cpim import CpimError, parse_cpim, parse_imdn_xml
from iwlab.backends.routing import Route
from iwlab.backends.topology import User
from iwlab.backends.trace import TraceEvent

Events = list[TraceEvent]


@dataclass
class Check:
    kind: str
    requirements: list[str]
    params: dict[str, Any]


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


# Which parameters each kind needs (the loader says so when one is missing).
REQUIRED_PARAMS: dict[str, tuple[str, ...]] = {
    "delivered": ("to", "texts"),
    "route": ("to", "technology"),
    "addressed_to_person": ("from",),
    "threaded": ("to", "text", "answers"),
    "session_established": ("answered_to", "cpm_user", "legacy_user"),
    "session_answer": ("answered_to", "status"),
    "reported": ("to", "technology", "for_text"),
    "notified": ("to", "status", "for_text"),
    "status_reported": ("to", "from", "for_text", "says"),
    "concatenated": ("to", "text"),
    "encoded": ("to", "text", "data_coding"),
    "adapted": ("to", "content_type"),
    "networks": ("from", "to", "over"),
    "fallback": ("to", "text"),
    "group_delivered": ("from", "to", "texts"),
}


def evaluate(check: Check, events: Events, lab: Lab) -> CheckResult:
    return CHECKS[check.kind](check, events, lab)


def _rows(*events: TraceEvent | None) -> list[int]:
    return sorted({e.seq for e in events if e is not None})


def _user(lab: Lab, check: Check, key: str) -> User:
    return lab.topology.user(check.params[key])


def _where_texts(events: Events, texts: list[str]) -> list[TraceEvent]:
    """Where wanted texts were last seen on the wire: evidence for a delivery that did not happen."""
    found = []
    for e in events:
        cpim = e.fields.get("cpim") or {}
        if cpim.get("body") in texts or e.fields.get("text") in texts or e.fields.get("body") in texts:
            found.append(e)
    return found[-6:]


# -- messages ------------------------------------------------------------------------------------------
STRESS = {   # delivered's `under`: what must be on the wire for the order to have been put to the test
    "throttling": ("the SMSC throttled", lambda e: e.protocol == "SMPP" and "THROTTLED" in e.summary),
    "smsc restart": ("messages kept across an SMSC restart",
                     lambda e: e.protocol == "SMPP" and "kept across a restart" in e.note),
    "link cuts": ("the SMSC cut the link", lambda e: e.protocol == "SMPP" and "cuts this link" in e.note),
    "mail busy": ("the mail server refused for a while", lambda e: e.protocol == "SMTP" and e.summary.startswith("451")),
}


def delivered(check: Check, events: Events, lab: Lab) -> CheckResult:
    """texts: exactly these, in this order; with among_others = true: these in this order among others.
    under = "throttling" / "smsc restart" / "link cuts" / "mail busy": and the wire shows the stress
    happened (its rows too)."""
    user = _user(lab, check, "to")
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
    rows = [e.seq for e, _ in got] or [e.seq for e in _where_texts(events, wanted)]
    under = check.params.get("under")
    if under:
        what, seen = STRESS[under]
        stress = [e for e in events if seen(e)]
        rows = sorted(set(rows + [e.seq for e in stress[:5]]))
        if not stress:
            return CheckResult(check, False, detail + f"; but nothing on the wire shows {what}", rows,
                               decided_failure=arrived)
        detail += f", with {what} ({len(stress)} PDU(s))"
    return CheckResult(check, passed, detail, rows, decided_failure=arrived and not passed)


def addressed_to_person(check: Check, events: Events, lab: Lab) -> CheckResult:
    """CPM-IOP-003 on every message (and invitation) the sender's device put on the wire: each is
    addressed to a person's own identity, and carries no technology of the sender's choosing;
    and none left the device by SMS or email itself (the device choosing the technology by going
    around CPM; a phone roaming without CPM does that by design, so this check is not for it)."""
    sender = _user(lab, check, "from")
    only = check.params.get("to")
    bypassed = [e for e in events if e.src == sender.name and (
        e.protocol == "SMPP" and e.summary.startswith("submit_sm ") or ev.mail_of(e) is not None)]
    if bypassed:
        how = " and ".join(sorted({"SMS" if e.protocol == "SMPP" else "email" for e in bypassed}))
        return CheckResult(check, False, f"{sender.name}'s device chose a technology itself: "
                                         f"{len(bypassed)} message(s) sent by {how}, around CPM",
                           [e.seq for e in bypassed], decided_failure=True)
    sent = [e for e in events if e.src == sender.name and ev.is_sip_request(e, "MESSAGE", "INVITE")
            and not ev.is_imdn(e)]
    if not sent:
        return CheckResult(check, False, f"no MESSAGE or INVITE from {sender.name} on the wire")
    wrong = []
    for e in sent:
        uri = ev.request_uri(e)
        person = lab.topology.user_by_uri(uri)
        if person is None or uri != person.cpm_uri or (only and person.id != only) or ev.header(e, Route.HEADER):
            wrong.append((e, uri))
    if wrong:
        e, uri = wrong[0]
        why = "chose a technology itself (P-Iwlab-Route)" if ev.header(e, Route.HEADER) else \
            f"addressed {uri}, not a person's own identity"
        return CheckResult(check, False, f"{len(wrong)} of {len(sent)} requests from {sender.name}: {why}",
                           [w.seq for w, _ in wrong], decided_failure=True)
    people = sorted({lab.topology.user_by_uri(ev.request_uri(e)).name for e in sent})  # type: ignore[union-attr]
    count = f"all {len(sent)} requests" if len(sent) > 1 else "the request"
    return CheckResult(check, True, f"{count} from {sender.name} addressed a person "
                                    f"({', '.join(people)}) by identity: no technology chosen",
                       [e.seq for e in sent])


def threaded(check: Check, events: Events, lab: Lab) -> CheckResult:
    """The reply reached `to` tied to the message of theirs it answers: in CPM by Conversation-ID
    and InReplyTo-Contribution-ID, in email by In-Reply-To (the Message-ID of their mail)."""
    user = _user(lab, check, "to")
    text, answers = check.params["text"], check.params["answers"]
    if user.device == "email" and user.email:
        asked = next(((e, m) for e, m in ev.mails(events, src=user.name) if ev.mail_text(m) == answers), None)
        reply = next(((e, m) for e, m in ev.mails(events, to=user.email) if ev.mail_text(m).startswith(text)), None)
        if asked is None or reply is None:
            return CheckResult(check, False, "the question or the reply is missing from the trace",
                               _rows(asked[0] if asked else None, reply[0] if reply else None))
        parent = mail.normalise_message_id(str(reply[1].get("In-Reply-To") or ""))
        own = mail.normalise_message_id(str(asked[1].get("Message-ID") or ""))
        passed = bool(own) and parent == own
        detail = (f"the reply's In-Reply-To is {user.name}'s mail {answers!r}: his client threads it" if passed
                  else f"the reply is not tied to {answers!r} (In-Reply-To {parent or 'none'})")
        return CheckResult(check, passed, detail, _rows(asked[0], reply[0]), decided_failure=not passed)
    reply_event = next((e for e, got in received_by(user, events) if got.strip() == text and e.protocol == "SIP"), None)
    asked_event = next((e for e in events if ev.is_sip_request(e, "MESSAGE") and e.src == user.name
                        and (e.fields.get("cpim") or {}).get("body") == answers), None)
    if reply_event is None or asked_event is None:
        return CheckResult(check, False, "the question or the reply is missing from the trace",
                           _rows(asked_event, reply_event))
    answered = reply_event.correlation.get("in_reply_to_contribution_id")
    same_thread = reply_event.correlation.get("conversation_id") == asked_event.correlation.get("conversation_id")
    passed = same_thread and answered == asked_event.correlation.get("contribution_id")
    detail = (f"the reply carries {user.name}'s Conversation-ID and the InReplyTo-Contribution-ID of "
              f"{answers!r}" if passed
              else f"the reply is not tied to {answers!r} (InReplyTo-Contribution-ID {answered})")
    return CheckResult(check, passed, detail, _rows(asked_event, reply_event), decided_failure=not passed)


# -- the route decision and the leg taken ---------------------------------------------------------------
def route(check: Check, events: Events, lab: Lab) -> CheckResult:
    """The terminating domain's decision as it crossed the wire (P-Iwlab-Route on the request its
    CPM server hands to its IWF), and the leg the IWF then really took toward that person:
    submit_sm to their number for sms, SMTP to their address for email. Every decision for this
    person in the scenario must name `technology`; `note`, when given, is in its reason."""
    user = _user(lab, check, "to")
    technology, note = check.params["technology"], check.params.get("note", "")
    iwfs = {iwf.name for iwf in lab.iwfs.values()}
    decisions = []
    for e in events:
        if e.dst in iwfs and ev.is_sip_request(e, "MESSAGE", "INVITE") and not ev.is_imdn(e) \
                and lab.topology.user_by_uri(ev.request_uri(e)) is user:
            decisions.append((e, Route.from_header(ev.header(e, Route.HEADER))))
    if not decisions:
        return CheckResult(check, False, f"no request for {user.name} reached an IWF "
                                         f"(the route decision never crossed the wire)")
    rows: list[int] = []
    for e, decided in decisions:
        if decided is None or decided.technology.value != technology:
            said = decided.technology.value if decided else "no P-Iwlab-Route"
            return CheckResult(check, False, f"{e.src} -> {e.dst} for {user.name}: {said}, expected {technology}",
                               [e.seq], decided_failure=True)
        leg = _leg_taken(e, events, user)
        if leg is None:
            return CheckResult(check, False, f"{e.src} decided {technology} for {user.name}, "
                                             f"but {e.dst} has not sent it on yet", rows + [e.seq])
        kind, leg_event = leg
        if kind != technology:
            return CheckResult(check, False, f"{e.src} decided {technology} for {user.name}, "
                                             f"but {e.dst} took the {kind} leg", rows + [e.seq, leg_event.seq],
                               decided_failure=True)
        rows += [e.seq, leg_event.seq]
    reasons = [d.reason for _, d in decisions if d is not None]
    if note and not any(note in reason for reason in reasons):
        return CheckResult(check, False, f"the decision's reason is {reasons[0]!r}, expected {note!r}",
                           rows, decided_failure=True)
    leg_words = {"sms": "submit_sm to the SMSC", "email": "SMTP to the mail server"}.get(technology, technology)
    return CheckResult(check, True, f"{len(decisions)} decision(s) on the wire ({Route.HEADER}: {technology}; "
                                    f"{reasons[0]}) and the leg taken: {leg_words}", rows)


def _leg_taken(decision: TraceEvent, events: Events, user: User) -> tuple[str, TraceEvent] | None:
    """The first thing the IWF sent toward the person after the decision: by SMS or by email."""
    iwf = decision.dst
    for e in events:
        if e.seq <= decision.seq or e.src != iwf:
            continue
        if e.protocol == "SMPP" and e.summary.startswith("submit_sm ") and user.msisdn and \
                f"->{user.msisdn}" in e.summary:
            return "sms", e
        if user.email and ev.mail_of(e) is not None and \
                user.email.lower() in [r.lower() for r in (e.fields.get("envelope") or {}).get("rcpt_to", [])]:
            return "email", e
    return None


# -- sessions --------------------------------------------------------------------------------------------
def _invite_responses(events: Events, node: str) -> list[TraceEvent]:
    return [e for e in events if e.protocol == "SIP" and e.is_response and e.dst == node
            and e.summary.endswith("(INVITE)") and int(e.summary.split(" ", 1)[0]) >= 200]


def session_established(check: Check, events: Events, lab: Lab) -> CheckResult:
    """Established means used: the 200 OK to the INVITE reached the inviting side and its ACK went
    back; text crossed the session both ways as MSRP on the CPM side (from and to the CPM user's
    phone); and the legacy user was told of the answer (an adapted text after the 200 OK)."""
    node = check.params["answered_to"]
    cpm_user, legacy = _user(lab, check, "cpm_user"), _user(lab, check, "legacy_user")
    finals = _invite_responses(events, node)
    ok = next((e for e in finals if e.summary.startswith("200 ")), None)
    if ok is None:
        refused = finals[0] if finals else None
        # How far it got: the INVITE and what came back before any answer.
        tried = [e for e in events if e.protocol == "SIP" and (ev.is_sip_request(e, "INVITE") and e.src == node or
                                                                e.is_response and e.dst == node
                                                                and e.summary.endswith("(INVITE)"))]
        return CheckResult(check, False, f"no 200 OK to an INVITE reached {node}" +
                           (f" ({refused.summary})" if refused else ""), _rows(refused, *tried[:4]),
                           decided_failure=refused is not None)
    call_id = ok.correlation.get("call_id")
    ack = next((e for e in events if e.protocol == "SIP" and e.summary.startswith("ACK") and e.src == node
                and e.correlation.get("call_id") == call_id), None)
    texts = [e for e in events if e.protocol == "MSRP" and e.fields.get("method") == "SEND"
             and e.correlation.get("call_id") == call_id and (e.fields.get("body") or "").strip()]
    out = next((e for e in texts if e.src == cpm_user.name), None)
    back = next((e for e in texts if e.dst == cpm_user.name), None)
    relayed = {(e.fields.get("body") or "").strip() for e in texts if e.src == cpm_user.name}
    # Told of the answer (after whoever answered sent the 200 OK, which may be before it reached
    # `node`) and before the chat itself reaches him: a closing text later is no answer.
    answered = next(e for e in events if e.protocol == "SIP" and e.is_response and e.summary.startswith("200 ")
                    and e.summary.endswith("(INVITE)") and e.correlation.get("call_id") == call_id)
    after = [(e, text.strip()) for e, text in received_by(legacy, events) if e.seq > answered.seq]
    first_relayed = next((i for i, (_, text) in enumerate(after) if text in relayed), len(after))
    told = next((e for e, text in after[:first_relayed] if text not in relayed), None)
    missing = [what for what, found in (("the ACK", ack), (f"MSRP text from {cpm_user.name}", out),
                                        (f"MSRP text to {cpm_user.name}", back),
                                        (f"{legacy.name} told of the answer", told)) if found is None]
    rows = _rows(ok, ack, out, back, told)
    if missing:
        return CheckResult(check, False, f"200 OK (INVITE) to {node}, but missing: {', '.join(missing)}", rows)
    return CheckResult(check, True, f"session established: 200 OK (INVITE) to {node}, ACK, MSRP text both ways "
                                    f"with {cpm_user.name}'s phone, and {legacy.name} was told", rows)


def session_answer(check: Check, events: Events, lab: Lab) -> CheckResult:
    """A session that did not come about: the final response `status` (603 declined, 408 no
    answer in time, 487 withdrawn) reached the inviting side; with legacy_user, they were told."""
    node, status = check.params["answered_to"], int(check.params["status"])
    finals = _invite_responses(events, node)
    final = next((e for e in finals if e.summary.startswith(f"{status} ")), None)
    if final is None:
        other = finals[0] if finals else None
        return CheckResult(check, False, f"no {status} to an INVITE reached {node}" +
                           (f" (got {other.summary})" if other else ""), _rows(other),
                           decided_failure=other is not None)
    legacy = check.params.get("legacy_user")
    if not legacy:
        return CheckResult(check, True, f"{final.summary} reached {node}", [final.seq])
    user = lab.topology.user(legacy)
    invite_seq = next((e.seq for e in events if ev.is_sip_request(e, "INVITE")
                       and e.correlation.get("call_id") == final.correlation.get("call_id")), 0)
    # The first text after the INVITE is the adapted invitation; the next one tells the outcome
    # (it may overtake the final response on its way to the inviter, so it is not ordered after it).
    arrivals = [(e, text) for e, text in received_by(user, events) if e.seq > invite_seq]
    told = next((e for e, _ in arrivals[1:]), None)
    if told is None:
        return CheckResult(check, False, f"{final.summary} reached {node}, but {user.name} was not told",
                           _rows(final, *(e for e, _ in arrivals)))
    return CheckResult(check, True, f"{final.summary} reached {node}; {user.name} was told by "
                                    f"{'SMS' if told.protocol == 'SMPP' else 'email'}", _rows(final, told))


# -- reports ----------------------------------------------------------------------------------------------
def reported(check: Check, events: Events, lab: Lab) -> CheckResult:
    """A failure reported back to the legacy sender by the technology his message came in: an SMS
    sender by SMS, an email sender by a DSN (multipart/report; report-type=delivery-status)
    threaded to his mail; never by the other technology."""
    user, technology, text = _user(lab, check, "to"), check.params["technology"], check.params["for_text"]
    wrong_sms = ev.sms_pdus(events, "submit_sm", destination=user.msisdn) if user.msisdn and technology != "sms" \
        else []
    wrong_mail = ev.mails(events, to=user.email, accepted=False) if user.email and technology != "email" else []
    if technology == "email" and user.email:
        sent = next(((e, m) for e, m in ev.mails(events, src=user.name) if ev.mail_text(m) == text), None)
        dsn = next(((e, m) for e, m in ev.mails(events, to=user.email) if _is_dsn(m)), None)
        if wrong_sms:
            return CheckResult(check, False, f"the report went to {user.name} by SMS", _rows(*(e for e, _ in wrong_sms)),
                               decided_failure=True)
        if sent is None or dsn is None:
            return CheckResult(check, False, f"no DSN reached {user.name}" if sent else f"{user.name}'s mail is missing",
                               _rows(sent[0] if sent else None))
        threaded = mail.normalise_message_id(str(dsn[1].get("In-Reply-To") or "")) == \
            mail.normalise_message_id(str(sent[1].get("Message-ID") or ""))
        fields = mail.dsn_fields(dsn[1]) or [{}]
        detail = (f"a DSN reached {user.name} by email (Action: {fields[0].get('Action')}, "
                  f"{fields[0].get('Diagnostic-Code')}), threaded to his mail")
        return CheckResult(check, threaded, detail if threaded else f"the DSN is not threaded to {user.name}'s mail",
                           _rows(sent[0], dsn[0]), decided_failure=not threaded)
    sent_sms = next((e for e, pdu in ev.sms_pdus(events, "submit_sm", src=user.name)
                     if smpp.content(pdu)[1] == text), None)
    bounce = next((e for e, got in received_by(user, events) if "not delivered" in got and
                   (sent_sms is None or e.seq > sent_sms.seq)), None)
    if wrong_mail:
        return CheckResult(check, False, f"the report went to {user.name} by email", [wrong_mail[0][0].seq],
                           decided_failure=True)
    if sent_sms is None or bounce is None:
        return CheckResult(check, False, f"no report reached {user.name} by SMS", _rows(sent_sms))
    return CheckResult(check, True, f"the report reached {user.name} by SMS", _rows(sent_sms, bounce))


def _is_dsn(message: EmailMessage) -> bool:
    return message.get_content_type() == "multipart/report" and \
        str(message.get_param("report-type", "")).lower() == "delivery-status"


def notified(check: Check, events: Events, lab: Lab) -> CheckResult:
    """A legacy report mapped to an IMDN: the SMSC's delivery receipt (deliver_sm, esm_class 0x04)
    becomes IMDN "delivered", the reader's MDN becomes IMDN "displayed", for the CPM user's message
    (same imdn.Message-ID), in that order on the wire. The legacy report must say so itself (stat
    DELIVRD, disposition displayed): an IMDN that claims more than the report said fails."""
    user, status, text = _user(lab, check, "to"), check.params["status"], check.params["for_text"]
    sent = next((e for e in events if ev.is_sip_request(e, "MESSAGE") and e.src == user.name
                 and (e.fields.get("cpim") or {}).get("body") == text), None)
    if sent is None:
        return CheckResult(check, False, f"{user.name}'s message {text!r} is not on the wire")
    message_id = sent.correlation.get("imdn_message_id")
    iwfs = {iwf.name for iwf in lab.iwfs.values()}
    reports: list[tuple[TraceEvent, str]]     # (report, what it said)
    if status == "displayed":
        reports = [(e, incoming.mdn_disposition or "") for e, m in ev.mails(events) if e.seq > sent.seq
                   and (incoming := mail.parse_incoming(m.as_bytes())).is_mdn]
        what, says = "the reader's MDN (RFC 8098)", "displayed"
    else:
        reports = [(e, _receipt_stat(e)) for e in events if e.seq > sent.seq and e.protocol == "SMPP"
                   and e.dst in iwfs and e.summary.startswith("deliver_sm ") and " receipt " in e.summary]
        what, says = "the SMSC's delivery receipt", "DELIVRD"
    report = next((e for e, said in reports if said.lower() == says.lower()), None)
    imdns = [e for e in events if ev.is_sip_request(e, "MESSAGE") and e.dst == user.name and ev.is_imdn(e)
             and e.correlation.get("imdn_message_id") == message_id]
    statuses = {e.seq: _imdn_status(e) for e in imdns}
    imdn = next((e for e in imdns if statuses[e.seq] == status), None)
    contrary = next(((e, said) for e, said in reports if said.lower() != says.lower()), None)
    if report is None and imdn is not None and contrary is not None:
        return CheckResult(check, False, f"IMDN {status} reached {user.name}, but {what} said "
                                         f"{contrary[1] or 'nothing'}, not {says}",
                           _rows(sent, contrary[0], imdn), decided_failure=True)
    if report is None or imdn is None:
        failed = next((e for e in imdns if statuses[e.seq] == "failed"), None)
        return CheckResult(check, False, f"no {what} and IMDN {status} for {text!r}" if report is None else
                           f"{what} came, but no IMDN {status} reached {user.name}", _rows(sent, report, failed),
                           decided_failure=failed is not None)
    in_order = report.seq < imdn.seq
    return CheckResult(check, in_order, f"{what} became IMDN {status} for imdn.Message-ID {message_id}" if in_order
                       else f"IMDN {status} came before {what}", _rows(sent, report, imdn), decided_failure=not in_order)


def status_reported(check: Check, events: Events, lab: Lab) -> CheckResult:
    """The other way (SMS / email -> CPM): the legacy sender's report is made from the CPM
    recipient's IMDN for his message and comes after it on the wire. A handset's delivery receipt
    (deliver_sm, esm_class 0x04) for the id his submit_sm_resp gave, exactly one, saying `says` in
    stat: and message_state alike (DELIVRD after IMDN delivered, UNDELIV after failed or after the
    CPM side refused it, EXPIRED when no IMDN came at all); an email sender's one MDN (RFC 8098,
    Disposition displayed, Original-Message-ID and threading his mail's) after IMDN displayed. A
    receipt before the IMDN is the SMSC speaking for a phone it never reached: failed for good."""
    sender, reader = _user(lab, check, "to"), _user(lab, check, "from")
    text, says = check.params["for_text"], str(check.params["says"]).upper()
    carried = next((e for e in events if ev.is_sip_request(e, "MESSAGE") and e.dst == reader.name and not ev.is_imdn(e)
                    and (e.fields.get("cpim") or {}).get("body") == text), None)
    if carried is None:
        return CheckResult(check, False, f"{sender.name}'s {text!r} did not reach {reader.name} by CPM")
    message_id = carried.correlation.get("imdn_message_id")
    wanted = reports.IMDN_FOR.get(says)
    imdns = [e for e in events if ev.is_sip_request(e, "MESSAGE") and e.src == reader.name and ev.is_imdn(e)
             and e.correlation.get("imdn_message_id") == message_id]
    imdn = next((e for e in imdns if _imdn_status(e) == wanted), None) if wanted else None
    if wanted == "failed" and imdn is None:     # the CPM side refused it: that stands for IMDN failed
        imdn = next((e for e in events if e.protocol == "SIP" and e.is_response and e.src == reader.name
                     and e.correlation.get("call_id") == carried.correlation.get("call_id")
                     and e.summary[:1] in ("3", "4", "5", "6")), None)
    if wanted and imdn is None:
        return CheckResult(check, False, f"no IMDN {wanted} from {reader.name} for {text!r}", _rows(carried))
    if sender.device == "email":
        return _mdn_after(check, events, sender, text, carried, imdn)
    sent = next((e for e, pdu in ev.sms_pdus(events, "submit_sm", src=sender.name) if smpp.content(pdu)[1] == text), None)
    smsc_id = sent.correlation.get("smpp_message_id") if sent else None
    if not smsc_id:
        return CheckResult(check, False, f"{sender.name}'s submit_sm of {text!r} was not accepted", _rows(sent))
    receipts = [e for e in events if e.dst == sender.name and e.summary.startswith("deliver_sm ")
                and " receipt " in e.summary and e.fields.get("receipted_message_id") == smsc_id]
    if not receipts:
        return CheckResult(check, False, f"no status report for id {smsc_id} reached {sender.name}",
                           _rows(sent, carried, imdn))
    receipt = receipts[0]
    said = _receipt_stat(receipt).upper()
    rows = _rows(sent, carried, imdn, *receipts)
    if len(receipts) > 1:
        return CheckResult(check, False, f"{len(receipts)} receipts for id {smsc_id} reached {sender.name}: "
                                         "one was owed", rows, decided_failure=True)
    if imdn is not None and receipt.seq < imdn.seq:
        return CheckResult(check, False, f"{sender.name}'s receipt (stat:{said}) came before {reader.name}'s "
                                         f"IMDN {wanted}: it does not report her phone", rows, decided_failure=True)
    if said != says:
        return CheckResult(check, False, f"{sender.name}'s receipt says stat:{said}, not {says}", rows,
                           decided_failure=True)
    state = receipt.fields.get("message_state")
    if state is None or smpp.state_of_stat(said) != state:
        return CheckResult(check, False, f"{sender.name}'s receipt says stat:{said} but message_state "
                                         f"{'none' if state is None else state}", rows, decided_failure=True)
    if not wanted and imdns:
        return CheckResult(check, False, f"{sender.name}'s receipt says {said}, yet {reader.name} sent IMDN "
                                         f"{_imdn_status(imdns[0])} for it", _rows(sent, carried, imdns[0], receipt),
                           decided_failure=True)
    after = f"after {reader.name}'s IMDN {wanted}" if imdn is not None else f"with no IMDN from {reader.name}"
    return CheckResult(check, True, f"{sender.name}'s receipt for id {smsc_id} says stat:{said}, {after}", rows)


def _mdn_after(check: Check, events: Events, sender: User, text: str, carried: TraceEvent,
               imdn: TraceEvent | None) -> CheckResult:
    sent = next(((e, m) for e, m in ev.mails(events, src=sender.name) if ev.mail_text(m) == text), None)
    if sent is None:
        return CheckResult(check, False, f"{sender.name}'s mail is missing", _rows(carried, imdn))
    original = mail.normalise_message_id(str(sent[1].get("Message-ID") or ""))
    mdns = [(e, m) for e, m in ev.mails(events, to=sender.email) if _is_mdn(m) and original in (
            mail.normalise_message_id(str(m.get("In-Reply-To") or "")),
            mail.normalise_message_id(_mdn_fields(m).get("original-message-id", "")))]
    if not mdns:
        return CheckResult(check, False, f"no MDN reached {sender.name}", _rows(sent[0], carried, imdn))
    mdn = mdns[0]
    rows = _rows(sent[0], carried, imdn, *(e for e, _ in mdns))
    if len(mdns) > 1:
        return CheckResult(check, False, f"{len(mdns)} MDNs for {sender.name}'s mail: one was owed", rows,
                           decided_failure=True)
    if imdn is None or mdn[0].seq < imdn.seq:
        return CheckResult(check, False, f"the MDN to {sender.name} came before any IMDN displayed", rows,
                           decided_failure=True)
    threaded = mail.normalise_message_id(str(mdn[1].get("In-Reply-To") or "")) == original and \
        original in mail.normalise_message_id(str(mdn[1].get("References") or ""))
    fields = _mdn_fields(mdn[1])
    problem = ("it is not threaded to his mail (In-Reply-To, References)" if not threaded else
               f"its Original-Message-ID is {fields.get('original-message-id') or 'missing'}"
               if mail.normalise_message_id(fields.get("original-message-id", "")) != original else
               f"its Disposition is {fields.get('disposition') or 'missing'}, not displayed"
               if fields.get("disposition", "").rpartition(";")[2].strip().lower() != "displayed" else "")
    if problem:
        return CheckResult(check, False, f"the MDN to {sender.name}: {problem}", rows, decided_failure=True)
    return CheckResult(check, True, f"an MDN (displayed) reached {sender.name} after the IMDN, threaded to his mail",
                       rows)


def _mdn_fields(message: EmailMessage) -> dict[str, str]:
    """The machine-readable part of an MDN (message/disposition-notification), lower-case names."""
    part = next((p for p in message.walk() if p.get_content_type() == "message/disposition-notification"), None)
    payload = part.get_payload() if part is not None else None
    text = str(payload[0] if isinstance(payload, list) and payload else payload or "")
    fields = {}
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if colon:
            fields[name.strip().lower()] = value.strip()
    return fields


def _is_mdn(message: EmailMessage) -> bool:
    return message.get_content_type() == "multipart/report" and \
        str(message.get_param("report-type", "")).lower() == "disposition-notification"


def _receipt_stat(event: TraceEvent) -> str:
    """What an SMSC delivery receipt on the wire says (stat: DELIVRD, EXPIRED, UNDELIV ...)."""
    stat = str((event.fields.get("receipt") or {}).get("stat") or "")
    return stat or (event.summary.rsplit(" ", 1)[-1] if " receipt " in event.summary else "")


def _imdn_status(event: TraceEvent) -> str:
    try:
        request = sip.parse_message(event.raw)
        return parse_imdn_xml(parse_cpim(request.body).body).status
    except (sip.SipParseError, CpimError):
        return ""


# -- SMS details ------------------------------------------------------------------------------------------
def _sms_parts_for(check: Check, events: Events, lab: Lab, user: User) -> tuple[list[TraceEvent], list, bool]:
    """The SMS parts on the wire that carried the text toward `user` (submit_sm to their number,
    or deliver_sm to the IWF for a CPM user), their PDUs, and whether they reassemble to it."""
    text = check.params["text"]
    iwfs = {iwf.name for iwf in lab.iwfs.values()}
    if user.device == "cpm":
        pdus = [(e, p) for e, p in ev.sms_pdus(events, "deliver_sm", destination=user.msisdn) if e.dst in iwfs]
    else:
        pdus = [(e, p) for e, p in ev.sms_pdus(events, "submit_sm", destination=user.msisdn) if e.src in iwfs]
    reassembler = smstext.Reassembler(timeout=3600)
    collected: dict[tuple[str, str, int | None], list[tuple[TraceEvent, Any]]] = {}
    for e, pdu in pdus:
        fields = smpp.message_fields(pdu)
        concat = smstext.concatenation(esm_class=fields["esm_class"], short_message=bytes.fromhex(fields["short_message"]),
                                       tlvs=fields["tlvs"])
        key = (fields["source"], fields["dest"], concat.ref if concat else None)
        collected.setdefault(key, []).append((e, pdu))
        for sms in smpp.reassemble(reassembler, pdu):
            if sms.text == text:
                parts = collected.pop(key, [(e, pdu)]) if concat else [(e, pdu)]
                return [pe for pe, _ in parts], [pp for _, pp in parts], True
            collected.pop(key, None)
    return [], [], False


def _fits_one_sm(pdu: Any) -> bool:
    """One SM on the air carries 140 octets: 160 GSM septets (SMPP carries GSM unpacked, a septet
    an octet, and the UDH packs into ceil(8n/7) septets), or 140 octets of 8-bit / UCS-2 data."""
    data = bytes(pdu.short_message or b"")
    udh = data[0] + 1 if (pdu.esm_class or 0) & 0x40 and data else 0
    if (pdu.data_coding or 0) in (0, 1):
        return -(-udh * 8 // 7) + len(data) - udh <= 160
    return len(data) <= 140


def _arrived_whole(user: User, events: Events, text: str) -> list[TraceEvent]:
    return [e for e, got in received_by(user, events) if got == text]


def concatenated(check: Check, events: Events, lab: Lab) -> CheckResult:
    """A long text crossed as a concatenated SMS (UDH or SAR, at least min_parts parts, each fitting
    one SM) and reached the other side as one whole message."""
    user, text = _user(lab, check, "to"), check.params["text"]
    least = int(check.params.get("min_parts", 2))
    parts, pdus, found = _sms_parts_for(check, events, lab, user)
    whole = _arrived_whole(user, events, text)
    if not found:
        return CheckResult(check, False, f"no SMS parts on the wire reassemble to the text for {user.name}",
                           [e.seq for e in _where_texts(events, [text])])
    oversized = [p for p in pdus if not _fits_one_sm(p)]
    if len(parts) < least or oversized:
        return CheckResult(check, False, f"{len(parts)} part(s)" + (", one too big for an SM" if oversized else "") +
                           f", expected at least {least} that each fit one SM", [e.seq for e in parts],
                           decided_failure=True)
    if len(whole) != 1:
        return CheckResult(check, False, f"{user.name} got the text {len(whole)} times whole (expected once)",
                           [e.seq for e in parts + whole], decided_failure=len(whole) > 1)
    return CheckResult(check, True, f"{len(parts)} SMS parts (each fits one SM, UDH included) reassembled: "
                                    f"{user.name} got one whole message", [e.seq for e in parts + whole])


def encoded(check: Check, events: Events, lab: Lab) -> CheckResult:
    """The text crossed SMS in the expected character set (data_coding 0: GSM 03.38, 8: UCS-2)
    and arrived exactly as written."""
    user, text, coding = _user(lab, check, "to"), check.params["text"], int(check.params["data_coding"])
    parts, pdus, found = _sms_parts_for(check, events, lab, user)
    whole = _arrived_whole(user, events, text)
    if not found:
        return CheckResult(check, False, f"no SMS on the wire carries the text for {user.name} intact",
                           [e.seq for e in _where_texts(events, [text])])
    codings = sorted({p.data_coding or 0 for p in pdus})
    names = {0: "GSM 03.38", 8: "UCS-2"}
    if codings != [coding]:
        return CheckResult(check, False, f"data_coding {codings}, expected {coding} ({names.get(coding, '?')})",
                           [e.seq for e in parts], decided_failure=True)
    if not whole:
        return CheckResult(check, False, f"sent as {names.get(coding)}, but {user.name} has not got it intact",
                           [e.seq for e in parts])
    return CheckResult(check, True, f"{len(parts)} part(s) in {names.get(coding, coding)}; {user.name} got "
                                    f"{text!r} exactly", [e.seq for e in parts + whole[:1]])


# -- content adaptation --------------------------------------------------------------------------------------
def adapted(check: Check, events: Events, lab: Lab) -> CheckResult:
    """A payload the legacy side cannot carry never went as raw bytes: SMS got a short text with a
    link, and the link (opened on the wire) returned the original bytes and Content-Type; email got
    the original as an attachment."""
    user, content_type = _user(lab, check, "to"), check.params["content_type"]
    sender = lab.topology.user(check.params.get("from", "mary"))
    original = _original_payload(events, sender, user, content_type)
    if original is None:
        return CheckResult(check, False, f"no {content_type} from {sender.name} to {user.name} on the wire")
    sent, body = original
    if user.device == "email" and user.email:
        got = next(((e, m) for e, m in ev.mails(events, to=user.email) if e.seq > sent.seq), None)
        if got is None:
            return CheckResult(check, False, f"no email reached {user.name}", [sent.seq])
        e, message = got
        attached = [p for p in message.iter_attachments() if p.get_content_type() == content_type]
        same = any(p.get_payload(decode=True) == body for p in attached)
        raw_in_text = _raw_leaked(ev.mail_text(message), body)
        passed = same and not raw_in_text
        detail = (f"{user.name}'s email carries the {content_type} as an attachment, byte for byte" if passed
                  else f"{user.name}'s email has no attachment equal to the {content_type}")
        return CheckResult(check, passed, detail, _rows(sent, e), decided_failure=not passed)
    arrival = next(((e, text) for e, text in received_by(user, events) if e.seq > sent.seq), None)
    if arrival is None:
        return CheckResult(check, False, f"nothing reached {user.name} after {sender.name}'s {content_type}",
                           [sent.seq])
    e, text = arrival
    if _raw_leaked(text, body) or "://" not in text:
        return CheckResult(check, False, f"{user.name} got {text[:40]!r}: raw bytes, or no link",
                           _rows(sent, e), decided_failure=True)
    token = text.rstrip().rsplit("/", 1)[-1]
    served = next((s for s in events if s.protocol == "HTTP" and s.is_response and s.src == lab.content.name
                   and s.correlation.get("content_token") == token), None)
    if served is None:
        return CheckResult(check, False, f"{user.name} got a link, not opened yet", _rows(sent, e))
    head, _, data = served.raw.partition(b"\r\n\r\n")
    served_type = next((line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-type:")), "")
    passed = data == body and served_type == content_type
    detail = (f"{user.name} got a short text with a link; the link returned the original {len(body)} bytes "
              f"as {served_type}" if passed else
              f"the link returned {len(data)} bytes of {served_type!r}, not the original {content_type}")
    return CheckResult(check, passed, detail, _rows(sent, e, served), decided_failure=not passed)


def _original_payload(events: Events, sender: User, to: User, content_type: str) -> tuple[TraceEvent, bytes] | None:
    for e in events:
        if ev.is_sip_request(e, "MESSAGE") and e.src == sender.name and \
                (e.fields.get("cpim") or {}).get("Content-Type", "").split(";")[0].strip() == content_type and \
                lab_user_is(to, ev.request_uri(e)):
            try:
                return e, parse_cpim(sip.parse_message(e.raw).body).body
            except (sip.SipParseError, CpimError):
                return None
    return None


def lab_user_is(user: User, uri: str) -> bool:
    return uri in (user.cpm_uri, user.sip, f"tel:{user.tel}")


def _raw_leaked(text: str, body: bytes) -> bool:
    """Did the payload's bytes reach the text (decoded somehow)?"""
    sample = body[:16].decode("utf-8", "replace")
    return "\ufffd" in text or (len(sample.strip()) > 4 and sample in text)


def networks(check: Check, events: Events, lab: Lab) -> CheckResult:
    """CPM-IOP-001: the same messages got through over every transport (and address family) the
    sender used: each of the sender's MESSAGEs, as its first hop carried it, reached the recipient."""
    sender, recipient = _user(lab, check, "from"), _user(lab, check, "to")
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
    return CheckResult(check, not missing, detail, [seqs[0] for seqs in through.values()] or _rows(*first_hops[:4]))


def fallback(check: Check, events: Events, lab: Lab) -> CheckResult:
    """RCC.07 revoke and fall back: the CPM message carrying `text` to `to` was accepted by the client,
    which sent no IMDN delivered (or displayed) for it; revoked from the client no sooner than the
    time the revoke names after that acceptance; answered "success"; handed to the IWF as SMS after
    that answer, with the reason on the ladder; and reached `to`'s handset by SMS exactly once, after
    the hand-over. A failed revocation, an IMDN from the client, a step out of order or a second copy
    fails for good."""
    user = _user(lab, check, "to")
    text = check.params["text"]
    sent = next((e for e in events if e.protocol == "SIP" and not e.is_response and e.dst == user.name
                 and (e.fields.get("cpim") or {}).get("body") == text), None)
    if sent is None:
        return CheckResult(check, False, f"no CPM MESSAGE with {text!r} reached {user.name}'s client",
                           _rows(*_where_texts(events, [text])))
    message_id = sent.correlation.get("imdn_message_id", "")
    call_id = sent.correlation.get("call_id")
    accepted = next((e for e in events if e.protocol == "SIP" and e.is_response and e.src == user.name
                     and e.correlation.get("call_id") == call_id and e.summary[:1] == "2"), None)
    mine = [e for e in events if e.protocol == "SIP" and e.correlation.get("imdn_message_id") == message_id]
    revoked = next((e for e in mine if "REVOKE request" in e.summary and e.dst == user.name), None)
    answer = next((e for e in mine if " REVOKE " in e.summary and e.src == user.name and not e.is_response), None)
    handed = next((e for e in mine if e.dst in lab.topology.iwf_names() and not e.is_response
                   and "revoked, sent by SMS" in e.note), None)
    confirmed = next((e for e in mine if e.src == user.name and not e.is_response
                      and (" IMDN delivered" in e.summary or " IMDN displayed" in e.summary)), None)
    copies = [e for e, got in received_by(dataclasses.replace(user, device="sms"), events)
              if got == text and e.seq > sent.seq]
    rows = _rows(sent, accepted, revoked, answer, handed, confirmed, *copies)

    def failed(detail: str) -> CheckResult:
        return CheckResult(check, False, detail, rows, decided_failure=True)

    if answer is not None and "REVOKE failed" in answer.summary:
        return failed(f"{user.name}'s client answered the revoke: failed (it had the message)")
    if confirmed is not None:
        return failed(f"{user.name}'s client sent an IMDN for it ({confirmed.summary.rsplit(' IMDN ', 1)[-1]}): "
                      "it had the message, so it must not come by SMS")
    if len(copies) > 1:
        return failed(f"{text!r} reached {user.name} by SMS {len(copies)} times")
    if revoked is not None and accepted is not None:
        waited, due = revoked.time - accepted.time, _seconds_named(revoked.note)
        if due is None or waited < due - 0.1:
            return failed(f"revoked {waited:.1f} s after {user.name}'s client took it, before the "
                          f"{'deadline' if due is None else f'{due:g} s'} its note names")
    for later, earlier, what in ((answer, revoked, "the revoke response came before the revoke request"),
                                 (handed, answer, "handed to the IWF as SMS before the revoke response"),
                                 (handed, revoked, "handed to the IWF as SMS before the revoke request"),
                                 (copies[0] if copies else None, handed, "the SMS reached "
                                                                         f"{user.name} before the hand-over")):
        if later is not None and earlier is not None and later.seq < earlier.seq:
            return failed(what)
    if copies and handed is None:
        return failed(f"the SMS reached {user.name} with no hand-over from a revoke")
    missing = [what for what, seen in (("the client's 2xx", accepted), ("a revoke request", revoked),
                                       ("a revoke response success", answer),
                                       ("the hand-over to the IWF as SMS with its reason", handed),
                                       (f"the SMS at {user.name}'s handset", copies)) if not seen]
    if missing:
        return CheckResult(check, False, "not on the wire: " + ", ".join(missing), rows)
    assert handed is not None
    return CheckResult(check, True, f"revoked from {user.name}'s client, sent by SMS once ({handed.note})", rows)


def _seconds_named(note: str) -> float | None:
    """The wait a revoke's note names ("... within 10 s ..."), None for a note naming none."""
    found = re.search(r"within (\d+(?:\.\d+)?) s", note)
    return float(found.group(1)) if found else None


# -- group chats ------------------------------------------------------------------------------------------
def group_delivered(check: Check, events: Events, lab: Lab) -> CheckResult:
    """A group chat: every text of `from` reached every member in `to`, in the author's order, among
    whatever else the group said. A CPM member gets it from a conference focus over MSRP with the
    author as the CPIM From; a legacy member by SMS or email, prefixed with the author's name."""
    author = _user(lab, check, "from")
    wanted = [str(t) for t in check.params["texts"]]
    members = [lab.topology.user(uid) for uid in check.params["to"]]
    passed, settled, rows, lines = True, True, [], []
    for member in members:
        expected = wanted if member.device == "cpm" else [f"{author.name}: {t}" for t in wanted]
        got = _from_focus(member, author, events) if member.device == "cpm" else received_by(member, events)
        got = [(e, text) for e, text in got if text in expected]
        texts = [text for _, text in got]
        ok = texts == expected
        passed, settled = passed and ok, settled and set(expected) <= set(texts)
        rows += [e.seq for e, _ in got]
        lines.append(f"{member.name} got {texts}" + ("" if ok else f", expected {expected}"))
    detail = f"{author.name}'s group messages: " + "; ".join(lines)
    return CheckResult(check, passed, detail, sorted(set(rows)) or [e.seq for e in _where_texts(events, wanted)],
                       decided_failure=settled and not passed)


def _from_focus(member: User, author: User, events: Events) -> list[tuple[TraceEvent, str]]:
    """MSRP SENDs a focus put on the wire to a CPM member, written by `author` (the CPIM From)."""
    found = []
    for e in events:
        if e.protocol != "MSRP" or e.is_response or not e.src.startswith("Focus-") or e.dst != member.name \
                or not e.summary.startswith("SEND") or "body" not in e.fields:
            continue
        try:
            cpim = parse_cpim(e.raw[e.raw.index(b"\r\n\r\n") + 4:e.raw.rindex(b"\r\n-------")])
        except (ValueError, CpimError):
            continue
        if lab_user_is(author, sip.uri_of(cpim.sender)):
            found.append((e, cpim.text))
    return found


CHECKS: dict[str, Callable[[Check, Events, Lab], CheckResult]] = {
    "delivered": delivered, "route": route, "addressed_to_person": addressed_to_person, "threaded": threaded,
    "session_established": session_established, "session_answer": session_answer, "reported": reported,
    "notified": notified, "status_reported": status_reported, "concatenated": concatenated, "encoded": encoded,
    "adapted": adapted, "networks": networks, "fallback": fallback, "group_delivered": group_delivered,
}
