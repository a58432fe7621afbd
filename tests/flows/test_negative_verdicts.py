"""Every verdict fails when its behaviour breaks: one negative test per requirement.

Each test breaks the lab on purpose (a node method monkeypatched, a lab setting flipped, something
deliberately wrong sent) while a bundled scenario (or a small one cut from it) plays, and asserts
that the requirement's verdict is "failed", that the failing check points at trace rows, and
that its detail says what went wrong. The positive side (every scenario passes on a working lab)
is tests/flows/test_scenarios.py, as are the first two negative tests (CPM-IOP-xxx-5: ordering
switched off; CPM-IOP-001: a lab without TLS).

Where a broken flow leaves a check undecided (something that never arrives), the run is given a
short timeout: ScenarioRun.conclude() then returns at it, never a fixed sleep here.
"""
from __future__ import annotations

import dataclasses

import pytest

from iwlab.backends.lab.checks import CheckResult
from iwlab.backends.lab.scenarios import (
    ScenarioError,
    ScenarioRun,
    Step,
    Verdict,
    load_requirements,
    load_scenarios,
    requirement_verdicts,
)
from iwlab.backends.devices.cpm_phone import CpmDevice
from iwlab.backends.nodes.cpm_server.fallback import Fallback
from iwlab.backends.nodes.iwf import content as iwf_content
from iwlab.backends.nodes.iwf import email_leg
from iwlab.backends.nodes.iwf import sms_outbox
from iwlab.backends.nodes.iwf.cpm_leg import Answer
from iwlab.backends.nodes.iwf.email_leg import EmailLeg
from iwlab.backends.nodes.iwf.sms_leg import SmsLeg
from iwlab.backends.nodes.iwf.session import Reply, SessionRules
from iwlab.backends.nodes.smsc import session as smsc_session
from iwlab.backends.nodes.smsc.message import relayed_receipt_fields
from iwlab.backends.nodes.smsc.owed import OwedReceipts
from iwlab.backends.nodes.smsc.session import SmppSession
from iwlab.backends.protocols import mail, reports, smpp, smstext
from iwlab.backends.protocols.cpim import parse_cpim
from iwlab.backends.routing import EMAIL, SMS, Route
from tests.helpers.waiting import until

SCENARIOS = load_scenarios()
REQUIREMENTS = load_requirements()
SHORT = 5.0      # the run's timeout where a broken flow leaves a check undecided


def play(lab, scenario_id_or_scenario, *, timeout: float = SHORT) -> Verdict:
    scenario = SCENARIOS[scenario_id_or_scenario] if isinstance(scenario_id_or_scenario, str) \
        else scenario_id_or_scenario
    return lab.run(ScenarioRun(lab.lab, scenario, timeout=timeout).play(), timeout=90)


def failing(verdict: Verdict, rid: str, kind: str) -> CheckResult:
    """The requirement failed, and the failing `kind` check names its rows; that result."""
    assert requirement_verdicts([verdict], REQUIREMENTS)[rid][0] == "failed", verdict.report()
    failed = [r for r in verdict.results if rid in r.check.requirements and not r.passed]
    assert failed and all(r.evidence for r in failed), verdict.report()
    found = [r for r in failed if r.check.kind == kind]
    assert found, verdict.report()
    return found[0]


def passed_kinds(verdict: Verdict) -> set[str]:
    return {r.check.kind for r in verdict.results if r.passed}


def with_header(device, method: str, value: str):
    """Mary's phone, broken: it stamps its own technology choice on every `method` it sends."""
    original = device.new_request

    def stamped(m, uri, **kwargs):
        req = original(m, uri, **kwargs)
        if m == method:
            req.headers.add(Route.HEADER, value)
        return req
    return stamped


# -- CPM-IOP-001 ----------------------------------------------------------------------------------------
def test_001_a_phone_stuck_on_tcp_fails_all_ip_networks(lab_factory, monkeypatch):
    """Mary's phone ignores the transport changes (it stays on TCP): the same three messages
    still reach Peter, but not over UDP or TLS, so "interoperable on all IP networks" is not shown."""
    lab = lab_factory()
    phone = lab.lab.device("mary")
    original = phone.set_state

    async def stuck_on_tcp(**changes):
        changes.pop("sip_transport", None)
        await original(**changes)
    monkeypatch.setattr(phone, "set_state", stuck_on_tcp)
    verdict = play(lab, "IOP-001-networks")
    result = failing(verdict, "CPM-IOP-001", "networks")
    assert "over tcp/IPv4" in result.detail and "none over udp, tls" in result.detail, result.detail
    assert "delivered" in passed_kinds(verdict), "only the transports broke: every message still arrived"


# -- CPM-IOP-002 ----------------------------------------------------------------------------------------
def test_002_an_iwf_that_accepts_and_drops_fails_cpm_to_legacy(lab_factory, monkeypatch):
    """The IWF answers 202 Accepted to Mary's MESSAGEs and never submits them to the SMSC: Peter
    gets nothing, so it is not possible to send a message from CPM to a non-CPM device."""
    lab = lab_factory()
    monkeypatch.setattr(lab.lab.iwf.sms, "take_message",
                        lambda req, cpim, recipient: Answer(202, "Accepted", "broken on purpose: dropped"))
    verdict = play(lab, "5.8.5")
    result = failing(verdict, "CPM-IOP-002", "delivered")
    assert result.detail == "Peter received [], expected ['Hi Peter', 'Are you there?'] in this order"
    assert "addressed_to_person" in passed_kinds(verdict)


# -- CPM-IOP-003 ----------------------------------------------------------------------------------------
def test_003_a_sender_that_picks_the_technology_fails(lab_factory, monkeypatch):
    """Mary's phone decides itself that John is reached by email (P-Iwlab-Route on her MESSAGE):
    the message still gets through, but the sender determined the technology."""
    lab = lab_factory()
    phone = lab.lab.device("mary")
    monkeypatch.setattr(phone, "new_request", with_header(phone, "MESSAGE", 'email;reason="Mary chose email"'))
    verdict = play(lab, "IOP-005-email")
    result = failing(verdict, "CPM-IOP-003", "addressed_to_person")
    assert result.detail == "1 of 1 requests from Mary: chose a technology itself (P-Iwlab-Route)"
    assert result.decided_failure
    assert "delivered" in passed_kinds(verdict), "the network still routed it: only the sender's choice is wrong"


def test_003_a_phone_that_texts_by_itself_fails(lab_factory, monkeypatch):
    """Mary's phone decides itself that Peter is an SMS user and texts him the second message from
    its own SMS side, around CPM: Peter gets both, but the sender determined the technology.
    (This one passed before checks.addressed_to_person also read what the sender's device put
    on the wire by SMS or email.)"""
    lab = lab_factory()
    phone = lab.lab.device("mary")
    original = phone.send_message

    async def texts_the_second(to, text, **kwargs):
        if text == "Are you there?":
            return await phone._send_sms(to, to.cpm_uri, text)
        return await original(to, text, **kwargs)
    monkeypatch.setattr(phone, "send_message", texts_the_second)
    verdict = play(lab, "5.8.5")
    result = failing(verdict, "CPM-IOP-003", "addressed_to_person")
    assert result.detail == "Mary's device chose a technology itself: 1 message(s) sent by SMS, around CPM"
    assert result.decided_failure
    assert "delivered" in passed_kinds(verdict), "Peter got both: only how the second left Mary's phone is wrong"


# -- CPM-IOP-004 ----------------------------------------------------------------------------------------
def test_004_an_iwf_that_swallows_sms_fails_legacy_to_cpm(lab_factory, monkeypatch):
    """The IWF acknowledges Peter's SMS (deliver_sm_resp OK) and never hands them to CPM: Mary gets
    nothing, so it is not possible to send from a non-CPM device to a CPM user."""
    lab = lab_factory()
    monkeypatch.setattr(lab.lab.iwf.sms, "_incoming", lambda sms: None)
    verdict = play(lab, "5.9.5")
    result = failing(verdict, "CPM-IOP-004", "delivered")
    assert result.detail == "Mary received [], expected ['Hi Mary', 'Are you there?'] in this order"


# -- CPM-IOP-005 ----------------------------------------------------------------------------------------
def test_005_a_decision_that_ignores_the_device_fails_most_appropriate(lab_factory, monkeypatch):
    """The terminating CPM server ignores that John's device is email-only and sends everything
    to a number by SMS (John has one): not the most appropriate technology."""
    lab = lab_factory()
    for server in lab.lab.cpm_servers.values():
        original = server.route_for

        def sms_always(user, original=original):
            route = original(user)
            if route.technology == EMAIL:
                return Route(SMS, route.reason.split(" -> ")[0] + " -> SMS via SMSC")
            return route
        monkeypatch.setattr(server, "route_for", sms_always)
    verdict = play(lab, "IOP-005-email")
    result = failing(verdict, "CPM-IOP-005", "route")
    assert result.detail.endswith("for John: sms, expected email"), result.detail
    assert result.decided_failure


# -- CPM-IOP-xxx-1 --------------------------------------------------------------------------------------
def test_xxx_1_an_iwf_that_mishears_the_answer_fails_conveying_it(lab_factory, monkeypatch):
    """Peter answers NO to Mary's chat invitation; the IWF hears every answer as yes and sends Mary
    200 OK: the invitation response is not conveyed back to the CPM user."""
    lab = lab_factory()
    monkeypatch.setattr(SessionRules, "reply", lambda self, text: Reply.ACCEPT if text.strip() else None)
    verdict = play(lab, "5.8.6-decline")
    result = failing(verdict, "CPM-IOP-xxx-1", "session_answer")
    assert result.detail == "no 603 to an INVITE reached Mary (got 200 OK (INVITE))"
    assert result.decided_failure


# -- CPM-IOP-xxx-2 --------------------------------------------------------------------------------------
def test_xxx_2_peter_never_told_of_the_acceptance_fails(lab_factory, monkeypatch):
    """Peter asks Mary for a chat (CHAT); she accepts, but the IWF never tells Peter: the invitation
    response is not conveyed back to the non-CPM user (even though the chat then runs)."""
    lab = lab_factory()
    table = lab.lab.iwf.sessions.table
    original = table.tell

    def tell_all_but_acceptance(session, text, subject=None):
        if "accepted" not in text:
            original(session, text, subject)
    monkeypatch.setattr(table, "tell", tell_all_but_acceptance)
    verdict = play(lab, "5.9.6")
    result = failing(verdict, "CPM-IOP-xxx-2", "session_established")
    assert result.detail == "200 OK (INVITE) to IWF, but missing: Peter told of the answer"


# -- CPM-IOP-xxx-3 --------------------------------------------------------------------------------------
def test_xxx_3_an_invite_that_names_its_technology_fails(lab_factory, monkeypatch):
    """Mary's phone puts its own technology choice (P-Iwlab-Route: sms) on the INVITE for Peter:
    the session still comes about, but the CPM user determined the other user's technology."""
    lab = lab_factory()
    phone = lab.lab.device("mary")
    monkeypatch.setattr(phone, "new_request", with_header(phone, "INVITE", 'sms;reason="Mary chose SMS"'))
    verdict = play(lab, "5.8.6")
    result = failing(verdict, "CPM-IOP-xxx-3", "addressed_to_person")
    assert result.detail == "1 of 1 requests from Mary: chose a technology itself (P-Iwlab-Route)"
    assert "session_established" in passed_kinds(verdict)


# -- CPM-IOP-xxx-4 --------------------------------------------------------------------------------------
def test_xxx_4_an_iwf_that_forgets_threads_fails_the_threaded_view(lab_factory, monkeypatch):
    """The IWF forgets which CPM message an SMS answers: Peter's reply reaches Mary as a new
    conversation, without the InReplyTo-Contribution-ID, so it is not shown in her thread."""
    lab = lab_factory()
    monkeypatch.setattr(lab.lab.iwf.threads, "inbound_sms", lambda **where: None)
    verdict = play(lab, "5.9-threads")
    result = failing(verdict, "CPM-IOP-xxx-4", "threaded")
    assert result.detail == "the reply is not tied to 'Dinner at eight?' (InReplyTo-Contribution-ID None)"
    assert result.decided_failure


# -- CPM-IOP-xxx-5 (the others: tests/flows/test_scenarios.py) -------------------------------------------
def test_xxx_5_an_smsc_that_never_cuts_the_link_shows_no_stress(lab_factory, monkeypatch):
    """The drop-every condition is set but the SMSC never acts on it: the five messages still
    arrive in order, yet nothing on the wire shows the order was put to the test."""
    lab = lab_factory()
    monkeypatch.setattr(SmppSession, "_cut_by_condition", lambda self, pdu, raw: False)
    verdict = play(lab, "IOP-xxx-5-link-cuts")
    result = failing(verdict, "CPM-IOP-xxx-5", "delivered")
    assert result.detail.endswith("but nothing on the wire shows the SMSC cut the link")


def test_xxx_5_an_iwf_that_drops_mail_on_a_temporary_refusal_fails(lab_factory, monkeypatch):
    """The IWF gives up at the mail server's first 451 4.3.2 (a temporary refusal): John gets nothing."""
    lab = lab_factory()
    monkeypatch.setattr(email_leg, "GIVE_UP_AFTER", -1.0)
    verdict = play(lab, "IOP-xxx-5-mail-busy")
    result = failing(verdict, "CPM-IOP-xxx-5", "delivered")
    assert result.detail.startswith("John received [], expected ['first', 'second', 'third']")


# -- CPM-IOP-xxx-6 --------------------------------------------------------------------------------------
def test_xxx_6_an_iwf_without_sessions_fails_free_choice_of_interaction(lab_factory, monkeypatch):
    """The IWF interworks pager messages only and refuses every INVITE (488): Mary cannot choose
    to start a session with Peter, so the free choice of interaction fails (the scenario cannot
    go on: Peter never gets an invitation to answer)."""
    lab = lab_factory()
    sessions = lab.lab.iwf.sessions
    original = sessions.on_request

    def no_sessions(conn, req):
        if req.method == "INVITE":
            sessions.table.respond(conn, req, 488, "Sessions not interworked (broken on purpose)")
        else:
            original(conn, req)
    monkeypatch.setattr(sessions, "on_request", no_sessions)
    run = ScenarioRun(lab.lab, SCENARIOS["5.8.6"], timeout=SHORT)
    with pytest.raises(ScenarioError, match="receiving what was sent") as raised:
        lab.run(run.play(), timeout=90)
    verdict = run.failed(str(raised.value))
    result = failing(verdict, "CPM-IOP-xxx-6", "session_established")
    assert result.detail.startswith("no 200 OK to an INVITE reached Mary (488 "), result.detail
    assert result.decided_failure


# -- CPM-IOP-xxx-7 --------------------------------------------------------------------------------------
class _BrokenCoder:
    """The IWF's SMS coder (sms_outbox.smstext) with one function replaced; the rest is real."""

    def __init__(self, **replaced) -> None:
        self.__dict__.update(replaced)

    def __getattr__(self, name):
        return getattr(smstext, name)


def _always_ucs2(text, *, ref, **kwargs):
    """Every single-part text as UCS-2, even when GSM 03.38 carries it."""
    parts = smstext.encode(text, ref=ref, **kwargs)
    if len(parts) > 1:
        return parts
    return [smstext.SmsPart(smstext.UCS2, b"", text.encode("utf-16-be"), False)]


def _without_udh(text, *, ref, **kwargs):
    """The parts of a long text, each sent as a plain SM: nothing says they belong together."""
    return [smstext.SmsPart(p.data_coding, b"", p.payload, False) for p in smstext.encode(text, ref=ref, **kwargs)]


def _break_charsets(lab, monkeypatch):
    monkeypatch.setattr(sms_outbox, "smstext", _BrokenCoder(encode=_always_ucs2))


def _break_concatenation(lab, monkeypatch):
    monkeypatch.setattr(sms_outbox, "smstext", _BrokenCoder(encode=_without_udh))


def _break_receipts(lab, monkeypatch):
    monkeypatch.setattr(lab.lab.iwf.sms, "_receipt", lambda pdu: None)


def _break_mdns(lab, monkeypatch):
    monkeypatch.setattr(lab.lab.iwf.email, "_mdn", lambda incoming: None)


def _break_bounces(lab, monkeypatch):
    monkeypatch.setattr(lab.lab.iwf.email, "bounce", lambda origin, req, response: None)


def _break_attachments(lab, monkeypatch):
    original = iwf_content.for_email
    monkeypatch.setattr(iwf_content, "for_email",
                        lambda cpim, sender_name: dataclasses.replace(original(cpim, sender_name), attachment=None))


def _first_send_only(scenario_id: str):
    """The concatenation scenario cut to Mary's long message (Peter's reply would wait for it whole)."""
    scenario = SCENARIOS[scenario_id]
    return dataclasses.replace(scenario, steps=scenario.steps[:1], checks=scenario.checks[:1])


@pytest.mark.parametrize("scenario, breaks, kind, detail", [
    pytest.param("IOP-xxx-7-charsets", _break_charsets, "encoded", "data_coding [8], expected 0 (GSM 03.38)",
                 id="charsets"),
    pytest.param(_first_send_only("IOP-xxx-7-concatenation"), _break_concatenation, "concatenated",
                 "no SMS parts on the wire reassemble to the text for Peter", id="concatenation"),
    pytest.param("IOP-xxx-7-delivery-report", _break_receipts, "notified",
                 "the SMSC's delivery receipt came, but no IMDN delivered reached Mary", id="delivery-report"),
    pytest.param("IOP-xxx-7-read-report", _break_mdns, "notified",
                 "the reader's MDN (RFC 8098) came, but no IMDN displayed reached Mary", id="read-report"),
    pytest.param("5.9-email-bounce", _break_bounces, "reported", "no DSN reached John", id="email-bounce"),
    pytest.param("IOP-xxx-7-content", _break_attachments, "adapted",
                 "John's email has no attachment equal to the image/png", id="content"),
])
def test_xxx_7_broken_additional_interworking_fails(lab_factory, monkeypatch, scenario, breaks, kind, detail):
    """Each additional interworking function broken in the IWF: GSM text sent as UCS-2; a long
    text's parts sent without the UDH that joins them; SMSC receipts or read receipts (MDN) not
    mapped to IMDNs; a refused email not bounced; a picture to email sent without its attachment.
    Interworking is then not seamless, and CPM-IOP-xxx-7 must fail on that check."""
    lab = lab_factory()
    breaks(lab, monkeypatch)
    verdict = play(lab, scenario)
    result = failing(verdict, "CPM-IOP-xxx-7", kind)
    assert result.detail == detail


def test_xxx_7_an_expired_message_reported_as_delivered_fails(lab_factory, monkeypatch):
    """Peter's handset is off and the SMSC lets Mary's message expire (validity 1 s): its receipt
    says EXPIRED. The IWF, broken, reads every receipt as delivered and sends Mary IMDN
    "delivered": the report is mapped wrongly, so CPM-IOP-xxx-7 must fail. (This one passed
    before checks.notified read what the receipt said.)"""
    lab = lab_factory(validity_seconds=1.0)
    monkeypatch.setattr(smpp, "receipt_outcome", lambda message_state, stat: "delivered")
    bundled = SCENARIOS["IOP-xxx-7-delivery-report"]
    handset_off = Step(action="state", sender="peter", state={"bound": False}, seed_step="pre",
                       explain="Peter's handset is off: the SMSC keeps the message until it expires.")
    verdict = play(lab, dataclasses.replace(bundled, steps=[handset_off, *bundled.steps]), timeout=10)
    result = failing(verdict, "CPM-IOP-xxx-7", "notified")
    assert result.detail == "IMDN delivered reached Mary, but the SMSC's delivery receipt said EXPIRED, not DELIVRD"
    assert result.decided_failure


def test_xxx_7_falling_back_without_revoking_fails(lab_factory, monkeypatch):
    """CPM-B, broken, sends the unconfirmed message by SMS without asking Peter's client to give it
    back: Peter may now have it twice (CPM and SMS), so the RCC.07 fallback check must fail."""
    lab = lab_factory()
    monkeypatch.setattr(Fallback, "_due", lambda self, watched: self._send_by_sms(watched))
    verdict = play(lab, "IOP-xxx-7-fallback")
    result = failing(verdict, "CPM-IOP-xxx-7", "fallback")
    assert result.detail == "not on the wire: a revoke request, a revoke response success"


def test_xxx_7_a_server_that_never_falls_back_fails(lab_factory, monkeypatch):
    """CPM-B, broken, never watches for the delivery notification: the message sits unconfirmed in
    Peter's silent app and never comes by SMS, so the fallback check (and Mary's tick) must fail."""
    lab = lab_factory()
    monkeypatch.setattr(Fallback, "watch", lambda self, user, req: None)
    verdict = play(lab, "IOP-xxx-7-fallback")
    result = failing(verdict, "CPM-IOP-xxx-7", "fallback")
    assert result.detail.startswith("not on the wire: a revoke request, a revoke response success, the hand-over")


def test_xxx_7_a_revoke_before_the_deadline_fails(lab_factory, monkeypatch):
    """CPM-B, broken, revokes the moment Peter's client takes the message (its note still says 1 s):
    the revoke came before the deadline, so the fallback check must fail for good."""
    lab = lab_factory()
    monkeypatch.setattr(Fallback, "_arm", lambda self, watched: (
        self._watched.__setitem__(watched.message_id, watched), self._due(watched)))
    verdict = play(lab, "IOP-xxx-7-fallback")
    result = failing(verdict, "CPM-IOP-xxx-7", "fallback")
    assert result.detail.startswith("revoked 0.") and result.detail.endswith("before the 1 s its note names")
    assert result.decided_failure


def test_xxx_7_an_sms_after_the_clients_imdn_fails(lab_factory, monkeypatch):
    """Peter's app confirms delivery (IMDN delivered) yet gives the message back; CPM-B, broken,
    does not see IMDNs: the SMS is a second copy of a delivered message, the check must fail."""
    lab = lab_factory()
    bundled = SCENARIOS["IOP-xxx-7-fallback"]
    confirming = dataclasses.replace(bundled.steps[0], state={**bundled.steps[0].state, "confirming": True})
    blind = Fallback.take
    monkeypatch.setattr(Fallback, "take", lambda self, conn, req: False if parse_cpim(req.body).is_imdn
                        else blind(self, conn, req))
    lying = CpmDevice._revoke_received
    monkeypatch.setattr(CpmDevice, "_revoke_received", lambda self, cpim: (self._confirmed.clear(),
                                                                          lying(self, cpim)))
    verdict = play(lab, dataclasses.replace(bundled, steps=[confirming, *bundled.steps[1:]]))
    result = failing(verdict, "CPM-IOP-xxx-7", "fallback")
    assert result.detail == "Peter's client sent an IMDN for it (delivered): it had the message, so it must not " \
                            "come by SMS"
    assert result.decided_failure


def test_xxx_7_a_hand_over_before_the_revoke_response_fails(lab_factory, monkeypatch):
    """CPM-B, broken, sends the SMS as it sends the revoke, not waiting for "success" (which Peter's
    app sends once the hand-over is on the wire): the check must fail for good."""
    lab = lab_factory()
    due, respond = Fallback._due, CpmDevice._send_revoke_response
    monkeypatch.setattr(Fallback, "_due", lambda self, watched: (due(self, watched), self._send_by_sms(watched)))

    async def after_the_hand_over(self, answer, to):
        await until(lambda: any("revoked, sent by SMS" in e.note for e in lab.lab.trace.events()))
        await respond(self, answer, to)
    monkeypatch.setattr(CpmDevice, "_send_revoke_response", after_the_hand_over)
    verdict = play(lab, "IOP-xxx-7-fallback")
    result = failing(verdict, "CPM-IOP-xxx-7", "fallback")
    assert result.detail == "handed to the IWF as SMS before the revoke response"
    assert result.decided_failure


def test_xxx_7_a_second_sms_copy_fails(lab_factory, monkeypatch):
    """CPM-B, broken, hands the revoked message over twice and the IWF, broken, sends both: Peter
    gets two SMS copies, which the check counts exactly."""
    lab = lab_factory()
    hand_over = Fallback._send_by_sms
    monkeypatch.setattr(Fallback, "_send_by_sms", lambda self, watched: (hand_over(self, watched),
                                                                        hand_over(self, watched)))
    monkeypatch.setattr(sms_outbox.SmsOutbox, "seen", lambda self, sender, message_id: False)
    verdict = play(lab, "IOP-xxx-7-fallback")
    result = failing(verdict, "CPM-IOP-xxx-7", "fallback")
    assert result.detail == "'Are you there?' reached Peter by SMS 2 times" and result.decided_failure


# -- CPM-IOP-xxx-7, the other way: reports made from the CPM recipient's IMDN ---------------------------
def _smsc_receipts_at_once(lab, monkeypatch):
    """The SMSC receipts as before issue 17: its own, when the IWF took the SMS."""
    for account in lab.lab.smsc.accounts:
        monkeypatch.setattr(account, "end_to_end_receipts", False)


def _imdns_ignored(lab, monkeypatch):
    monkeypatch.setattr(SmsLeg, "imdn_arrived", lambda self, imdn, reporter: None)
    monkeypatch.setattr(EmailLeg, "imdn_arrived", lambda self, imdn, reporter: None)


def _every_imdn_a_failure(lab, monkeypatch):
    monkeypatch.setattr(reports, "sms_state_for_imdn", lambda kind, status: smpp.MessageState.UNDELIVERABLE)


def _reports_relayed_twice(lab, monkeypatch):
    """The IWF sends its report twice and the SMSC, broken, does not see the repeat."""
    send = SmsLeg._send_report

    def twice(self, meta, state, why):
        send(self, meta, state, why)
        send(self, meta, state, why)
    monkeypatch.setattr(SmsLeg, "_send_report", twice)
    monkeypatch.setattr(OwedReceipts, "answered", lambda self, message_id: None)


def _message_state_contradicts_stat(lab, monkeypatch):
    def contradicting(*args):
        return {**relayed_receipt_fields(*args), "message_state": smpp.MessageState.UNDELIVERABLE}
    monkeypatch.setattr(smsc_session, "relayed_receipt_fields", contradicting)


def _every_report_delivered(lab, monkeypatch):
    send = SmsLeg._send_report
    monkeypatch.setattr(SmsLeg, "_send_report", lambda self, meta, state, why:
                        send(self, meta, smpp.MessageState.DELIVERED, why))


def _mdn_says_deleted(lab, monkeypatch):
    mdn_for = mail.mdn_for
    monkeypatch.setattr(mail, "mdn_for", lambda **kw: mdn_for(**{**kw, "disposition": "deleted"}))


@pytest.mark.parametrize("scenario, breaks, detail, decided", [
    pytest.param("IOP-xxx-7-status-report", _reports_relayed_twice,
                 "2 receipts for id 1A2B3C01 reached Peter: one was owed", True, id="two-receipts"),
    pytest.param("IOP-xxx-7-status-report", _message_state_contradicts_stat,
                 "Peter's receipt says stat:DELIVRD but message_state 5", True, id="state-not-stat"),
    pytest.param("IOP-xxx-7-status-report-refused", _every_report_delivered,
                 "Peter's receipt says stat:DELIVRD, not UNDELIV", True, id="refused-reported-delivered"),
    pytest.param("IOP-xxx-7-mdn-from-imdn", _mdn_says_deleted,
                 "the MDN to John: its Disposition is manual-action/MDN-sent-automatically; deleted, not displayed",
                 True, id="mdn-disposition"),
    pytest.param("IOP-xxx-7-status-report", _smsc_receipts_at_once,
                 "Peter's receipt (stat:DELIVRD) came before Mary's IMDN delivered: it does not report her phone",
                 True, id="receipt-before-imdn"),
    pytest.param("IOP-xxx-7-status-report", _imdns_ignored, "no status report for id 1A2B3C01 reached Peter",
                 False, id="imdn-ignored"),
    pytest.param("IOP-xxx-7-status-report", _every_imdn_a_failure,
                 "Peter's receipt says stat:UNDELIV, not DELIVRD", True, id="wrong-stat"),
    pytest.param("IOP-xxx-7-mdn-from-imdn", _imdns_ignored, "no MDN reached John", False, id="no-mdn"),
])
def test_xxx_7_a_report_not_made_from_the_imdn_fails(lab_factory, monkeypatch, scenario, breaks, detail, decided):
    """The legacy sender's report must come from the CPM recipient's IMDN, after it: the SMSC's
    own receipt when the IWF took the SMS (Mary's phone was off), an IWF that ignores IMDNs, or
    one that maps delivered to UNDELIV, must each fail CPM-IOP-xxx-7; so must an email sender
    left without his MDN."""
    lab = lab_factory()
    breaks(lab, monkeypatch)
    verdict = play(lab, scenario)
    result = failing(verdict, "CPM-IOP-xxx-7", "status_reported")
    assert result.detail == detail
    assert result.decided_failure is decided
