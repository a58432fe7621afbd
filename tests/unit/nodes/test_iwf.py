"""The IWF node's logic without sockets: a real SipConnection on a recording transport, a fake ESME.

What the flows prove end to end over sockets (tests/flows), these pin down at the node: admission
of a CPM MESSAGE, the SMS outbox it lands in, and the session state machine.
"""
from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace

import pytest
import smpplib.consts as c

from iwlab.backends.directory import NodeDirectory
from iwlab.backends.nodes.iwf.iwf import Iwf
from iwlab.backends.nodes.iwf.session import (
    TRANSITIONS,
    Direction,
    IllegalTransition,
    IwfSession,
    Reply,
    SessionRules,
    SessionState,
)
from iwlab.backends.nodes.iwf.sms_leg import ReceiptBook
from iwlab.backends.nodes.iwf.sms_outbox import OutboundSms
from iwlab.backends.protocols import sip, smpp
from iwlab.backends.protocols.cpim import CpimMessage, Imdn, imdn_message
from iwlab.backends.protocols.sip import SipResponse
from iwlab.backends.routing import CPM, EMAIL, SMS, Route
from iwlab.backends.store import Store
from iwlab.backends.topology import load_topology
from iwlab.backends.trace import Trace
from tests.helpers.recording_transport import RecordingTransport
from tests.helpers.waiting import until

MARY = "sip:mary@cpm-a.lab"
PETER = "tel:+15550201"
JOHN = "tel:+15550202"


class FakeEsme:
    """Esme's constructor and submit(): answers every submit_sm, throttling the first `throttle` ones."""
    throttle = 0

    def __init__(self, host, port, system_id, password, *, node_name, nodes, on_deliver, on_state, accept):
        self.on_deliver, self.accept = on_deliver, accept
        self.submits: list[dict] = []
        self._ids = itertools.count(0x10)
        self._throttled = 0
        FakeEsme.last = self

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def submit(self, **params):
        if self._throttled < self.throttle:
            self._throttled += 1
            return SimpleNamespace(status=c.SMPP_ESME_RTHROTTLED, message_id=b"")
        self.submits.append(params)
        return SimpleNamespace(status=c.SMPP_ESME_ROK, message_id=f"{next(self._ids):X}".encode())


def make_iwf(**kwargs) -> Iwf:
    topology = load_topology()
    return Iwf(topology.iwf_operator(), topology, Trace(), NodeDirectory(), host="127.0.0.1", store=Store(),
               smsc_address=lambda: ("127.0.0.1", 9), cpm_address=lambda: None, make_esme=FakeEsme, **kwargs)


def message(to: str, text: str = "Hi Peter", *, route: Route | None = Route(SMS, "Peter is not registered"),
            cpim: CpimMessage | None = None, body: bytes | None = None) -> bytes:
    """A MESSAGE as CPM-B hands it to the IWF: Mary's, with the route CPM-B decided."""
    req = sip.make_request("MESSAGE", to, via=("127.0.0.1", 5062), from_=f"<{MARY}>;tag=m1", to=f"<{to}>",
                           call_id="call-1@cpm-b.lab", cseq=1)
    if route is not None:
        req.headers.add(Route.HEADER, route.to_header())
    req.headers.add("Conversation-ID", "conv-1")
    req.headers.add("Content-Type", "message/cpim")
    req.body = body if body is not None else (cpim or CpimMessage(
        sender=f"<{MARY}>", recipient=f"<{to}>", body=text.encode(), disposition=("positive-delivery",))).to_bytes()
    return req.to_bytes()


def answer_to(iwf: Iwf, raw: bytes) -> SipResponse:
    """Feed one request to a connection the IWF's listener would have accepted; its one answer."""
    conn = iwf.new_connection()
    transport = RecordingTransport(conn)
    conn.data_received(raw)
    [response] = transport.sent_sip()
    assert isinstance(response, SipResponse)
    return response


def run(scenario):
    return asyncio.run(scenario())


# -- admission -------------------------------------------------------------------------------

def test_a_message_without_a_route_is_refused():
    async def scenario():
        iwf = make_iwf()
        response = answer_to(iwf, message(PETER, route=None))
        assert response.status == 403 and Route.HEADER in response.reason
        assert iwf.sms.outbox.queued() == []
    run(scenario)


def test_a_cpim_message_routed_to_sms_is_accepted_and_queued_for_the_recipients_number():
    async def scenario():
        iwf = make_iwf()
        response = answer_to(iwf, message(PETER, "Hi Peter"))
        assert response.status == 202
        [queued] = iwf.sms.outbox.queued()
        assert (queued.source, queued.dest, queued.text) == ("15550101", "15550201", "Hi Peter")
        assert queued.conversation_id == "conv-1" and queued.sender_uri == MARY
        [event] = [e for e in iwf.trace.events() if e.is_response]
        assert event.note == "queued for SMS to Peter (+15550201)"
    run(scenario)


def test_an_imdn_for_a_legacy_user_gets_200_with_its_note():
    async def scenario():
        iwf = make_iwf()
        imdn = imdn_message(Imdn("m-1", "display", "displayed", "2026-11-24T09:00:00Z", MARY),
                            sender=f"<{MARY}>", recipient=f"<{PETER}>")
        response = answer_to(iwf, message(PETER, cpim=imdn))
        assert response.status == 200
        [event] = [e for e in iwf.trace.events() if e.is_response]
        assert event.note == "IMDN displayed for Peter not interworked: no report was asked for imdn.Message-ID m-1 by SMS"
        assert iwf.sms.outbox.queued() == []
    run(scenario)


def test_too_long_for_sms_is_413():
    async def scenario():
        iwf = make_iwf()
        response = answer_to(iwf, message(PETER, "x" * 40_000))
        assert response.status == 413 and response.reason.startswith("Too long for SMS")
        assert iwf.sms.outbox.queued() == []
    run(scenario)


@pytest.mark.parametrize("raw, status", [
    (message("sip:nobody@cpm-b.lab"), 404),
    (message(PETER, body=b"not CPIM at all"), 400),
    (message(PETER, route=Route(CPM, "Peter is registered")), 403),   # not for interworking
    (message(JOHN, route=Route(EMAIL, "John reads email")), 480),   # this IWF has no email leg
])
def test_what_the_iwf_will_not_take(raw, status):
    async def scenario():
        assert answer_to(make_iwf(), raw).status == status
    run(scenario)


def test_options_is_answered_and_an_unknown_method_is_501():
    async def scenario():
        iwf = make_iwf()
        options = sip.make_request("OPTIONS", "sip:iwf@cpm-b.lab", via=("127.0.0.1", 5062), from_="<sip:x@y>;tag=1",
                                   to="<sip:iwf@cpm-b.lab>", call_id="o-1", cseq=1)
        assert answer_to(iwf, options.to_bytes()).status == 200
        options.method = "SUBSCRIBE"
        options.headers.set("CSeq", "2 SUBSCRIBE")
        assert answer_to(iwf, options.to_bytes()).status == 501
    run(scenario)


def test_session_requests_go_to_the_session_leg():
    async def scenario():
        iwf = make_iwf()
        bye = sip.make_request("BYE", "sip:iwf@127.0.0.1", via=("127.0.0.1", 5062), from_=f"<{MARY}>;tag=m1",
                               to=f"<{PETER}>;tag=i1", call_id="no-such-dialog", cseq=2)
        assert answer_to(iwf, bye.to_bytes()).status == 481
        invite = sip.make_request("INVITE", PETER, via=("127.0.0.1", 5062), from_=f"<{MARY}>;tag=m1",
                                  to=f"<{PETER}>", call_id="invite-1", cseq=1)   # no route decided
        conn = iwf.new_connection()
        transport = RecordingTransport(conn)
        conn.data_received(invite.to_bytes())
        await until(lambda: transport.sent_sip(), 10, "the session leg's answer")   # it answers from a task
        assert [m.status for m in transport.sent_sip()] == [403]
        await iwf.stop()
    run(scenario)


# -- the SMS outbox ------------------------------------------------------------------------------

def test_the_outbox_submits_in_order_and_a_throttled_part_goes_again_before_the_next(monkeypatch):
    monkeypatch.setattr(FakeEsme, "throttle", 1)

    async def scenario():
        iwf = make_iwf()
        await iwf.sms.start()
        for text in ("one", "two", "three"):
            assert answer_to(iwf, message(PETER, text)).status == 202
        await until(lambda: not iwf.sms.outbox.pending(), 10, "the outbox emptied")
        submits = FakeEsme.last.submits
        assert [smpp.decode_text(s["short_message"], s["data_coding"]) for s in submits] == ["one", "two", "three"]
        assert {(s["source_addr"], s["destination_addr"]) for s in submits} == {("15550101", "15550201")}
        assert all(s["registered_delivery"] == 1 for s in submits)   # positive-delivery asked for
        assert (iwf.sms.outbox.submitted, iwf.sms.outbox.retries) == (3, 1)
        await iwf.stop()
    run(scenario)


def test_the_esme_refuses_an_sms_nobody_here_can_take():
    async def scenario():
        iwf = make_iwf()
        await iwf.sms.start()
        accept = FakeEsme.last.accept
        peter = {"source_addr": b"15550201", "source_addr_ton": 1}
        to_mary = SimpleNamespace(esm_class=0, destination_addr=b"15550101", **peter)
        to_nobody = SimpleNamespace(esm_class=0, destination_addr=b"15559999", **peter)   # no user, no pool number
        receipt = SimpleNamespace(esm_class=smpp.RECEIPT_ESM_CLASS, destination_addr=b"15559999", **peter)
        # From an SMSC that let CR/LF through: it would become a SIP From, so it is refused here too.
        crlf = SimpleNamespace(esm_class=0, destination_addr=b"15550101", source_addr=b"1555\r\n", source_addr_ton=1)
        assert (accept(to_mary), accept(to_nobody), accept(receipt), accept(crlf)) == (
            c.SMPP_ESME_ROK, c.SMPP_ESME_RINVDSTADR, c.SMPP_ESME_ROK, c.SMPP_ESME_RINVSRCADR)
        await iwf.stop()
    run(scenario)


def test_a_receipt_that_overtook_its_submit_sm_resp_is_kept_for_it():
    book = ReceiptBook()
    sms = OutboundSms(source="1", dest="2", text="t", imdn_message_id="i", sender_uri="s", recipient_uri="r",
                      disposition=("positive-delivery",), datetime="")
    early = object()
    book.hold("1a", early)
    assert book.find("1A") is None
    sms.smsc_ids.append("001A")                       # as the outbox does, then tells the book
    assert book.expect("001A", sms, 0) is early     # hex, zeros or not: the same message
    assert book.find(str(0x1A)) == (sms, 0)
    book.forget(sms)
    assert book.find("1A") is None



def test_a_receipt_taken_by_its_message_leaves_no_form_of_its_id_for_another():
    """Receipts overtake their submit_sm_resp on most messages (the outbox reads the response a
    turn later). SMSC id "10" is also 0x10 = 16: a form of it left behind took the receipt of
    message "10" for message "16", which Mary would have been told was delivered at once."""
    book = ReceiptBook()
    first, second = (OutboundSms(source="1", dest="2", text=t, imdn_message_id=t, sender_uri="s", recipient_uri="r",
                                 disposition=("positive-delivery",), datetime="") for t in ("first", "second"))
    early = object()
    book.hold("10", early)
    first.smsc_ids.append("10")
    assert book.expect("10", first, 0) is early
    second.smsc_ids.append("16")
    assert book.expect("16", second, 0) is None      # its own receipt is still to come
    assert book.find("16") == (second, 0)


def test_two_early_receipts_whose_ids_are_one_in_another_base_each_go_to_their_own_message():
    book = ReceiptBook()
    ten, sixteen = object(), object()
    book.hold("10", ten)
    book.hold("16", sixteen)     # "16" is also 0x16, and "10" is 16 in hex: each is exactly one
    assert book.expect("16", _sms("second"), 0) is sixteen
    assert book.expect("10", _sms("first"), 0) is ten


def test_an_early_receipt_in_another_base_is_taken_only_when_it_is_the_one_held():
    book = ReceiptBook()
    receipt = object()
    book.hold(str(0x1A2B3C01), receipt)                     # an SMSC writing its hex id in decimal
    assert book.expect("1A2B3C01", _sms("one"), 0) is receipt
    book.hold("16", object())
    book.hold("A", object())                                # both are forms of "10"
    assert book.expect("10", _sms("two"), 0) is None, "two could be it: neither is taken"


def test_early_receipts_beyond_the_limit_go_oldest_first_and_whole():
    book = ReceiptBook(early_limit=2)
    first, second, third = object(), object(), object()
    for receipt_id, receipt in (("10", first), ("20", second), ("30", third)):
        book.hold(receipt_id, receipt)
    assert book.expect("10", _sms("gone"), 0) is None
    assert book.expect("16", _sms("not 10's"), 0) is None   # no form of the let-go receipt is left
    assert book.expect("20", _sms("kept"), 0) is second


def _sms(text: str) -> OutboundSms:
    return OutboundSms(source="1", dest="2", text=text, imdn_message_id=text, sender_uri="s", recipient_uri="r",
                       disposition=("positive-delivery",), datetime="")

# -- sessions -------------------------------------------------------------------------------------

S = SessionState
LEGAL = {(S.RINGING, S.ESTABLISHED), (S.RINGING, S.DECLINED), (S.RINGING, S.EXPIRED), (S.RINGING, S.CANCELLED),
         (S.RINGING, S.FAILED), (S.RINGING, S.ENDED), (S.ESTABLISHED, S.ENDED), (S.ESTABLISHED, S.FAILED)}


def test_the_transition_table_is_the_one_written_down():
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == LEGAL
    assert set(TRANSITIONS) == set(SessionState)


@pytest.mark.parametrize("start, target", list(itertools.product(SessionState, SessionState)))
def test_a_session_moves_only_along_the_table(start, target):
    session = IwfSession(call_id="c", direction=Direction.TO_LEGACY, cpm_user=None, cpm_uri=MARY,
                         legacy_number="15550201", legacy_name="Peter", sms_source="15550101", state=start)
    if (start, target) in LEGAL:
        session.move(target)
        assert session.state is target
    else:
        with pytest.raises(IllegalTransition):
            session.move(target)
        assert session.state is start          # refused: nothing changed


def test_only_ringing_and_established_sessions_are_open():
    assert {s for s in SessionState if IwfSession(
        call_id="c", direction=Direction.FROM_LEGACY, cpm_user=None, cpm_uri=MARY, legacy_number="1",
        legacy_name="P", sms_source="2", state=s).open} == {S.RINGING, S.ESTABLISHED}


@pytest.mark.parametrize("text, reply", [
    ("yes", Reply.ACCEPT), ("Yes please!", Reply.ACCEPT), ("no", Reply.DECLINE), ("no... well, yes", Reply.DECLINE),
    ("yes, no", Reply.ACCEPT), ("yesterday", None), ("nothing", None), ("", None),
])
def test_an_invitees_answer_is_the_first_whole_keyword(text, reply):
    rules = SessionRules("YES", "NO", "END", "CHAT", 60.0)
    assert rules.reply(text) is reply


def test_end_and_request_count_only_as_the_keyword_alone():
    rules = SessionRules("YES", "NO", "END", "CHAT", 60.0)
    assert rules.is_end("end") and rules.is_end("  End.") and not rules.is_end("the end is near")
    assert not rules.is_end("END of story, see you")
    assert rules.is_request("chat?") and rules.is_request("CHAT") and rules.is_request(" Chat!\n")
    assert not rules.is_request("let's chat") and not rules.is_request("chatter")
    assert not rules.is_request("chat tomorrow about the budget?") and not rules.is_request("CHAT about the trip?")
