"""Revoke and fall back to SMS (issue 17 item 3, GSMA RCC.07), over real sockets: Peter's CPM client is a
raw SIP client registered as his number, his SMS handset a real smpplib client. The lab's clock is moved
ahead, never waited for: fallback_seconds pass in the lab, not in the test."""
from __future__ import annotations

import pytest

from iwlab.backends.clock import LabClock
from iwlab.backends.lab.lab import Lab
from iwlab.backends.lab.lab_thread import LabThread
from iwlab.backends.lab.scenarios import ScenarioRun, load_scenarios
from iwlab.backends.protocols.cpim import Imdn, imdn_message, parse_cpim
from iwlab.backends.protocols.revoke import RevokeRequest, RevokeResponse, is_revoke, parse_revoke, revoke_message
from iwlab.backends.protocols.sip import SipRequest
from tests.conftest import lab_threads, no_new_lab_threads
from tests.helpers.jumpable import Jumpable
from tests.helpers.raw_sip import RawSipClient
from tests.helpers.raw_smpp import SmppHandset
from tests.helpers.sip_client import MARY, received_text, send_cpm_message
from tests.helpers.smpp_client import is_message, next_message
from tests.helpers.waiting import wait_until

PETER_SIP = "sip:+15550201@cpm-b.lab"
FALLBACK = 10.0


class FallbackLab:
    def __init__(self, topology, state_dir=None, devices="none") -> None:
        topology.operator("B").iwf.fallback_seconds = FALLBACK
        self.topology, self.state_dir = topology, state_dir
        self.time = Jumpable()
        self.runner = LabThread(Lab(topology, devices=devices, state_dir=state_dir),
                                clock=LabClock(self.time)).start()
        self.lab = self.runner.lab
        endpoints = self.lab.endpoints()
        self.mary = RawSipClient(endpoints["sip"]["cpm-a.lab"])
        assert self.mary.register(MARY, "cpm-a.lab").status == 200
        self.peter_cpm = RawSipClient(endpoints["sip"]["cpm-b.lab"])
        assert self.peter_cpm.register(PETER_SIP, "cpm-b.lab").status == 200
        self.peter_sms = SmppHandset(endpoints["smpp"], "15550201")

    def send(self, text: str) -> str:
        """Mary sends; Peter's client takes it (200) and keeps quiet. Returns the imdn.Message-ID."""
        call_id = send_cpm_message(self.mary, text)
        message = self.peter_cpm.receive(is_message)
        self.peter_cpm.answer(message)
        assert self.mary.response_to(call_id).status == 200
        return parse_cpim(message.body).message_id

    def pass_time(self, seconds: float) -> None:
        """The lab's clock moves on; the test goes on once the lab has done what that set off."""
        self.time.ahead += seconds
        self.idle()

    def idle(self) -> None:
        async def idle():
            await self.runner.loop.when_idle()
        self.runner.run(idle())

    def answer_revoke(self, result: str) -> tuple[RevokeRequest, int]:
        taken = self.take_revoke()
        return taken, self.revoke_response(taken.message_id, result)

    def take_revoke(self) -> RevokeRequest:
        """Peter's client gets the revoke request and answers its MESSAGE 200 (its revoke response is apart)."""
        request = self.peter_cpm.receive(is_message)
        self.peter_cpm.answer(request)
        envelope = parse_cpim(request.body)
        assert is_revoke(envelope.content_type)
        taken = parse_revoke(envelope.body)
        assert isinstance(taken, RevokeRequest)
        return taken

    def revoke_response(self, message_id: str, result: str) -> int:
        body = revoke_message(RevokeResponse(message_id, result), sender=f"<{PETER_SIP}>",
                              recipient=f"<{MARY}>").to_bytes()
        call_id = self.peter_cpm.request("MESSAGE", MARY, from_uri=PETER_SIP, to_uri=MARY,
                                         content_type="message/cpim", body=body)
        status = self.peter_cpm.response_to(call_id).status
        self.idle()
        return status

    def passed_on_to_mary(self):
        """Revoke responses that reached Mary's client (none should: they are CPM-B's)."""
        return [e for e in self.lab.trace.events() if " REVOKE " in e.summary and e.dst == "Mary"]

    def events(self, what: str, to: str = ""):
        return [e for e in self.lab.trace.events() if what in e.summary and (not to or e.dst == to)]

    def close(self) -> None:
        self.peter_sms.close()
        self.mary.close()
        self.peter_cpm.close()
        self.runner.stop()


@pytest.fixture
def fallback_lab(topology):
    before = set(lab_threads())
    lab = FallbackLab(topology)
    yield lab
    lab.close()
    assert no_new_lab_threads(before)


def test_undelivered_message_is_revoked_and_reaches_peter_once_by_sms(fallback_lab):
    lab = fallback_lab
    message_id = lab.send("Are you there?")
    lab.pass_time(FALLBACK / 2)
    assert not lab.events("REVOKE"), "revoked before fallback_seconds"
    lab.pass_time(FALLBACK / 2 + 0.5)
    taken, status = lab.answer_revoke("success")
    assert taken.message_id == message_id and status == 200
    sms = lab.peter_sms.next_message()
    assert received_text(sms) == "Are you there?"
    imdn = parse_cpim(next_message(lab.mary, imdn=True).body)   # the SMSC's receipt, as an IMDN for Mary
    assert message_id.encode() in imdn.body and b"delivered" in imdn.body
    lab.idle()
    assert len(lab.events("deliver_sm", to="Peter")) == 1 and lab.peter_sms.received.empty()
    [to_iwf] = [e for e in lab.events("MESSAGE") if e.src == "CPM-B" and e.dst == "IWF" and not e.is_response]
    assert to_iwf.note == "not delivered within 10 s: revoked, sent by SMS"
    [revoke] = lab.events("REVOKE request", to="Peter")
    assert "has not confirmed delivery within 10 s" in revoke.note
    assert lab.lab.cpm_servers["B"].fallback.holding() == 0
    assert lab.lab.store.queue("CPM-B fallback").count() == 0


def test_a_failed_revocation_sends_no_sms(fallback_lab):
    lab = fallback_lab
    lab.send("Seen it already?")
    lab.pass_time(FALLBACK + 0.5)
    _, status = lab.answer_revoke("failed")
    assert status == 200
    [answer] = [e for e in lab.events("200 OK") if e.dst == "Peter" and "revoke response: failed" in e.note]
    assert "not sent by SMS" in answer.note
    assert not lab.events("submit_sm") and lab.peter_sms.received.empty()
    assert lab.lab.store.queue("CPM-B fallback").count() == 0


def test_a_delivery_notification_in_time_means_no_revoke_and_no_sms(fallback_lab):
    lab = fallback_lab
    message_id = lab.send("Quick one")
    imdn = imdn_message(Imdn(message_id, "delivery", "delivered", "2026-11-24T09:00:00.000Z", PETER_SIP),
                        sender=f"<{PETER_SIP}>", recipient=f"<{MARY}>").to_bytes()
    lab.peter_cpm.request("MESSAGE", MARY, from_uri=PETER_SIP, to_uri=MARY, content_type="message/cpim", body=imdn)
    assert isinstance(next_message(lab.mary, imdn=True), SipRequest)   # it goes on to Mary
    lab.pass_time(FALLBACK + 0.5)
    assert not lab.events("REVOKE") and not lab.events("submit_sm") and lab.peter_sms.received.empty()
    assert lab.lab.store.queue("CPM-B fallback").count() == 0


def test_a_watch_outlives_a_restart(topology, tmp_path):
    """What CPM-B watches is in the durable store: after a restart the revoke still comes when due,
    and the SMS reaches Peter once."""
    before = set(lab_threads())
    lab = FallbackLab(topology, state_dir=tmp_path)
    try:
        lab.send("Still there?")
        assert lab.lab.store.queue("CPM-B fallback").count() == 1
        lab.close()
        lab = FallbackLab(topology, state_dir=tmp_path)     # a new lab on the same state: a new clock too
        lab.pass_time(FALLBACK + 0.5)
        _, status = lab.answer_revoke("success")
        assert status == 200 and received_text(lab.peter_sms.next_message()) == "Still there?"
        lab.idle()
        assert len(lab.events("deliver_sm", to="Peter")) == 1
        assert lab.lab.store.queue("CPM-B fallback").count() == 0
    finally:
        lab.close()
    assert no_new_lab_threads(before)


def test_a_late_revoke_success_still_sends_the_sms_and_is_not_passed_on(fallback_lab):
    """Review finding 1: a slow client's "success" after fallback_seconds more: it has dropped the
    message, so the SMS goes; the answer is CPM-B's, never Mary's."""
    lab = fallback_lab
    message_id = lab.send("Slow phone?")
    lab.pass_time(FALLBACK + 0.5)
    assert lab.take_revoke().message_id == message_id
    lab.pass_time(3 * FALLBACK)                       # long past the old wait for the answer
    assert lab.revoke_response(message_id, "success") == 200
    assert received_text(lab.peter_sms.next_message()) == "Slow phone?"
    lab.idle()
    assert not lab.passed_on_to_mary()
    assert len(lab.events("deliver_sm", to="Peter")) == 1
    assert lab.lab.store.queue("CPM-B fallback").count() == 0


def test_every_revoke_response_from_our_user_is_answered_here(fallback_lab):
    """A repeated answer, or one for a message never revoked, is answered 200 by CPM-B, not passed on."""
    lab = fallback_lab
    message_id = lab.send("Once only")
    lab.pass_time(FALLBACK + 0.5)
    lab.answer_revoke("success")
    assert received_text(lab.peter_sms.next_message()) == "Once only"
    assert lab.revoke_response(message_id, "success") == 200      # a resend of the answer
    assert lab.revoke_response("never-revoked", "failed") == 200
    [*_, stray] = [e for e in lab.events("200 OK") if e.dst == "Peter" and "revoke response" in e.note]
    assert "no revoke of ours waits for it" in stray.note
    lab.idle()
    assert not lab.passed_on_to_mary() and len(lab.events("deliver_sm", to="Peter")) == 1


def test_a_declined_message_is_not_watched(fallback_lab):
    """Review finding 2: Peter's client refuses the message (603, Mary is told): no revoke, no SMS."""
    lab = fallback_lab
    call_id = send_cpm_message(lab.mary, "Not for me")
    lab.peter_cpm.answer(lab.peter_cpm.receive(is_message), 603, "Decline")
    assert lab.mary.response_to(call_id).status == 603
    assert lab.lab.store.queue("CPM-B fallback").count() == 0
    lab.pass_time(FALLBACK + 0.5)
    assert not lab.events("REVOKE") and not lab.events("submit_sm")


def test_the_watches_are_capped_and_the_ladder_says_so(fallback_lab):
    """Review finding 8: past `limit` watches a message is not watched (no revoke, no SMS), and its
    forwarded MESSAGE says why on the ladder."""
    lab = fallback_lab
    lab.runner.call(setattr, lab.lab.cpm_servers["B"].fallback, "limit", 1)
    lab.send("First")
    lab.send("Second")
    assert lab.lab.store.queue("CPM-B fallback").count() == 1
    [second] = [e for e in lab.events("MESSAGE", to="Peter") if (e.fields.get("cpim") or {}).get("body") == "Second"]
    assert "not watched for SMS fallback: 1 messages are watched already (the cap)" in second.note
    lab.pass_time(FALLBACK + 0.5)
    assert len(lab.events("REVOKE request", to="Peter")) == 1


def test_a_revoke_response_after_a_restart_still_counts(topology, tmp_path):
    """Review finding 12: CPM-B restarts while its revoke waits for the answer: the answer, to the
    restarted server, still sends the SMS (once) and is not passed on to Mary; no second revoke."""
    before = set(lab_threads())
    lab = FallbackLab(topology, state_dir=tmp_path)
    try:
        message_id = lab.send("Across a restart")
        lab.pass_time(FALLBACK + 0.5)
        lab.take_revoke()
        lab.close()
        lab = FallbackLab(topology, state_dir=tmp_path)
        lab.pass_time(FALLBACK + 0.5)
        assert not lab.events("REVOKE request"), "revoked again after the restart"
        assert lab.revoke_response(message_id, "success") == 200
        assert received_text(lab.peter_sms.next_message()) == "Across a restart"
        lab.idle()
        assert not lab.passed_on_to_mary() and len(lab.events("deliver_sm", to="Peter")) == 1
        assert lab.lab.store.queue("CPM-B fallback").count() == 0
    finally:
        lab.close()
    assert no_new_lab_threads(before)


def test_a_fallback_sms_to_a_cpm_user_does_not_loop(topology):
    """Review finding 9: Peter is a CPM user (his number is the IWF's): the SMS the fallback sends
    comes back into CPM through the IWF. That copy is not watched again: no second revoke, no loop."""
    topology.user("peter").device = "cpm"
    before = set(lab_threads())
    lab = FallbackLab(topology)
    try:
        lab.send("Round and round?")
        lab.pass_time(FALLBACK + 0.5)
        lab.answer_revoke("success")
        again = lab.peter_cpm.receive(is_message)           # the SMS, back into CPM by the IWF
        lab.peter_cpm.answer(again)
        assert parse_cpim(again.body).text == "Round and round?"
        lab.pass_time(FALLBACK + 0.5)
        lab.pass_time(FALLBACK + 0.5)
        assert len(lab.events("REVOKE request", to="Peter")) == 1
        assert lab.lab.store.queue("CPM-B fallback").count() == 0
    finally:
        lab.close()
    assert no_new_lab_threads(before)


def test_the_simulated_phone_answers_failed_for_a_message_it_does_not_hold(lab_factory, topology):
    """Review finding 2: a revoke for a message Mary's phone never took cannot succeed: "failed"."""
    runner = lab_factory(devices="all")
    lab = runner.lab
    mary = topology.user("mary")
    wait_until(lambda: lab.cpm_servers["A"].is_registered(mary), what="Mary's phone registered")
    peter = RawSipClient(runner.lab.endpoints()["sip"]["cpm-b.lab"])
    try:
        assert peter.register(PETER_SIP, "cpm-b.lab").status == 200
        body = revoke_message(RevokeRequest("not-a-message-of-hers"), sender=f"<{PETER_SIP}>",
                              recipient=f"<{MARY}>").to_bytes()
        assert peter.response_to(peter.request("MESSAGE", MARY, from_uri=PETER_SIP, to_uri=MARY,
                                               content_type="message/cpim", body=body)).status == 200

        def answers():
            return [e for e in lab.trace.events() if e.src == "Mary" and " REVOKE " in e.summary
                    and not e.is_response]
        wait_until(answers, what="Mary's phone's revoke response")
        assert "REVOKE failed" in answers()[0].summary
    finally:
        peter.close()


def test_a_scenario_gives_each_server_its_own_fallback_seconds_back(lab_factory):
    """Review finding 12: [settings] fallback_seconds is for the run; afterwards each CPM server has
    its own value again (not the largest any server had)."""
    runner = lab_factory()
    servers = runner.lab.cpm_servers
    runner.call(setattr, servers["A"].fallback, "seconds", 7.0)
    runner.call(setattr, servers["B"].fallback, "seconds", 10.0)
    scenario = load_scenarios()["IOP-xxx-7-fallback"]
    runner.run(ScenarioRun(runner.lab, scenario, timeout=5.0).play(), timeout=90)
    assert (servers["A"].fallback.seconds, servers["B"].fallback.seconds) == (7.0, 10.0)
