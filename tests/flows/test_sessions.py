"""Sessions across the bridge (use cases 5.8.6 and 5.9.6), driven through sockets by real clients.

Mary is a raw SIP client with a small raw MSRP client written here on the msrp.py codec; Peter is a
real smpplib client bound as 15550201. In between: CPM-A, CPM-B, the IWF (its MSRP listener), the SMSC.
"""
from __future__ import annotations

import time
import uuid

import pytest

from iwlab.backends.devices.events import SessionChanged, SessionMessageAdded
from iwlab.backends.devices.session_state import SessionState
from iwlab.backends.protocols import msrp, sdp
from iwlab.backends.protocols.msrp import MsrpRequest, MsrpResponse
from iwlab.backends.protocols.sip import SipRequest, SipResponse
from tests.helpers.raw_smpp import SmppHandset
from tests.helpers.sessions import (
    SESSION_SERVICE,
    RawMsrpClient,
    answer_sms,
    cancel,
    establish,
    final,
    in_dialog,
    invite,
    sms_text,
    wait_for,
)
from tests.helpers.sip_client import PETER_TEL, received_text

JOHN_TEL = "tel:+15550202"






















def test_mary_invites_peter_who_accepts_by_sms_and_they_chat_over_msrp(session_lab):
    lab, mary, peter, media = session_lab()
    call_id = invite(mary, media.offer())
    ringing = mary.receive(lambda m: isinstance(m, SipResponse) and m.status == 180)
    assert ringing.headers.get("Call-ID") == call_id
    invitation = peter.next_message()
    assert invitation.source_addr == b"15550101"          # from Mary's number, as the thread map says
    text = received_text(invitation)
    assert "Mary" in text and "YES" in text and "NO" in text
    answer_sms(peter, "oh yes, why not")                   # surrounding text tolerated
    ok = final(mary, call_id)
    assert ok.status == 200, ok.reason
    assert ok.headers.get("Content-Type") == "application/sdp"
    answer = sdp.parse_sdp(ok.body)
    assert answer.path and answer.path[0].startswith("msrp://")
    in_dialog(mary, "ACK", ok, 1)
    media.connect(answer)
    assert "now chatting with Mary" in sms_text(peter)
    media.send("Hello Peter, in a session")
    assert sms_text(peter) == "Hello Peter, in a session"
    answer_sms(peter, "Hi Mary, nice to chat")
    assert media.next_text() == "Hi Mary, nice to chat"
    in_dialog(mary, "BYE", ok, 2)
    assert final(mary, call_id, "BYE").status == 200
    assert "Mary ended the chat" in sms_text(peter)
    events = lab.lab.trace.events()
    sip_ladder = [e.summary.split()[0] for e in events if e.protocol == "SIP"
                  and e.correlation.get("call_id") == call_id and e.src == "CPM-B" and e.dst == "IWF"
                  or (e.protocol == "SIP" and e.correlation.get("call_id") == call_id and e.src == "IWF")]
    assert sip_ladder[:2] == ["INVITE", "180"] and "200" in sip_ladder and "ACK" in sip_ladder
    msrp_events = [e for e in events if e.protocol == "MSRP"]
    assert any(e.summary.startswith("SEND") and "Hello Peter" in e.summary and e.dst == "IWF" for e in msrp_events)
    assert any(e.summary.startswith("200 OK") for e in msrp_events)
    assert all(e.correlation.get("call_id") == call_id for e in msrp_events)
    assert any("adapted invitation" in e.note for e in events)


def test_long_msrp_message_is_chunked_and_reassembled(session_lab):
    lab, mary, peter, media = session_lab()
    call_id, ok = establish(mary, peter, media)
    text = "".join(f"chunk {i:03d}. " for i in range(40))      # 440 bytes in 100-byte chunks
    media.send(text, max_chunk=100)
    parts = [peter.next_message() for _ in range(3)]          # one message -> concatenated SMS
    assert "".join(received_text(p) for p in parts) == text
    ranges = [e.summary for e in lab.lab.trace.events() if e.protocol == "MSRP" and e.summary.startswith("SEND")
              and "/440" in e.summary]
    assert len(ranges) == 5


def test_peter_declines_and_mary_gets_603(session_lab):
    _, mary, peter, media = session_lab()
    call_id = invite(mary, media.offer())
    peter.next_message()
    answer_sms(peter, "No, sorry")
    assert final(mary, call_id).status == 603


def test_no_answer_in_time_gives_408_and_peter_is_told(session_lab):
    _, mary, peter, media = session_lab(timeout=0.5)
    call_id = invite(mary, media.offer())
    peter.next_message()
    response = final(mary, call_id)
    assert response.status == 408 and "Peter" in response.reason
    assert "expired" in sms_text(peter)


def test_mary_cancels_before_the_answer(session_lab):
    _, mary, peter, media = session_lab()
    call_id = invite(mary, media.offer())
    ringing = mary.receive(lambda m: isinstance(m, SipResponse) and m.status == 180)
    sent = {"uri": PETER_TEL, "from": ringing.headers.get("From"), "to": f"<{PETER_TEL}>",
            "call_id": call_id, "cseq": ringing.headers.get("CSeq").split()[0],
            "via": ringing.headers.get_all("Via")[0]}
    peter.next_message()
    cancel(mary, sent)
    assert final(mary, call_id, "CANCEL").status == 200
    assert final(mary, call_id).status == 487
    assert "withdrew" in sms_text(peter)


def test_peter_ends_with_end_and_mary_gets_bye(session_lab):
    _, mary, peter, media = session_lab()
    call_id, ok = establish(mary, peter, media)
    answer_sms(peter, "end")
    bye = mary.receive(lambda m: isinstance(m, SipRequest) and m.method == "BYE")
    assert bye.headers.get("Call-ID") == call_id
    mary.answer(bye)
    assert "You ended the chat" in sms_text(peter)


def session_states(events: list) -> list:
    """The states Mary's phone reported for its sessions, in order (each as it was when reported)."""
    return [e.state for e in list(events) if isinstance(e, SessionChanged)]


@pytest.fixture
def phone_lab(lab_factory, topology):
    clients: list = []

    def start(timeout: float = 60.0, policy: str = "last"):
        topology.operator("B").iwf.session_timeout_seconds = timeout
        topology.operator("B").iwf.thread_policy = policy
        lab = lab_factory(devices="mary")
        peter = SmppHandset(lab.lab.endpoints()["smpp"], "15550201")
        clients.append(peter)
        device = lab.lab.device("mary")
        events: list = []
        lab.call(device.listeners.append, events.append)
        return lab, device, peter, events
    yield start
    for client in clients:
        client.close()


def test_marys_phone_starts_a_session_with_peter_who_accepts(phone_lab):
    lab, device, peter, events = phone_lab()
    pending = lab.submit(device.sessions.start_session(lab.lab.user("peter")))
    assert "Mary" in sms_text(peter)
    answer_sms(peter, "Yes!")
    session = pending.result(10)
    assert session.state is SessionState.ESTABLISHED
    assert session.describe() == "Session with Peter: established — MSRP"
    assert "now chatting" in sms_text(peter)
    lab.call(device.sessions.send, session, "Hi from the phone")
    assert sms_text(peter) == "Hi from the phone"
    sent = [e for e in lab.lab.trace.events() if e.protocol == "MSRP" and "Hi from the phone" in e.summary]
    assert sent[0].fields["Content-Type"] == "message/cpim", "the phone wraps session messages in CPIM"
    answer_sms(peter, "Hi phone")
    wait_for(lambda: any(m.text == "Hi phone" and m.direction == "in" for m in session.messages))
    lab.run(device.sessions.end(session))
    assert "Mary ended the chat" in sms_text(peter)
    assert session_states(events) == [SessionState.INVITING, SessionState.RINGING, SessionState.ESTABLISHED,
                                      SessionState.ENDED]
    assert SessionMessageAdded(session, "in", "Hi phone") in events


def test_marys_phone_sees_a_decline(phone_lab):
    lab, device, peter, _ = phone_lab()
    pending = lab.submit(device.sessions.start_session(lab.lab.user("peter")))
    sms_text(peter)
    answer_sms(peter, "no")
    session = pending.result(10)
    assert session.state is SessionState.DECLINED and "603" in session.reason


def test_marys_phone_cancels_before_peter_answers(phone_lab):
    lab, device, peter, _ = phone_lab()
    pending = lab.submit(device.sessions.start_session(lab.lab.user("peter")))
    sms_text(peter)
    session = lab.call(lambda: next(iter(device.sessions.sessions.values())))
    wait_for(lambda: session.state is SessionState.RINGING)
    lab.call(device.sessions.cancel, session)
    assert pending.result(10).state is SessionState.CANCELLED
    assert "withdrew" in sms_text(peter)


def test_peter_asks_mary_for_a_chat_and_her_phone_accepts(phone_lab):
    lab, device, peter, events = phone_lab()
    answer_sms(peter, "chat?")
    wait_for(lambda: SessionState.INCOMING in session_states(events))
    session = lab.call(lambda: next(iter(device.sessions.sessions.values())))
    assert session.direction == "in" and session.peer_name == "Peter"
    lab.run(device.sessions.accept(session))
    assert "Mary accepted: you are now chatting; reply END to stop" in sms_text(peter)
    wait_for(lambda: session.msrp is not None and session.msrp.connection is not None)
    lab.call(device.sessions.send, session, "Sure, what's up?")
    assert sms_text(peter) == "Sure, what's up?"
    answer_sms(peter, "Lunch tomorrow?")
    wait_for(lambda: any(m.text == "Lunch tomorrow?" for m in session.messages))
    answer_sms(peter, "END")
    wait_for(lambda: session.state is SessionState.ENDED)
    assert "You ended the chat" in sms_text(peter)
    invite = [e for e in lab.lab.trace.events() if e.protocol == "SIP" and e.summary.startswith("INVITE")
              and e.dst == "Mary"]
    assert invite and invite[0].correlation.get("call_id") == session.call_id
    assert any(e.protocol == "MSRP" and e.dst == "Mary" and "Lunch tomorrow?" in e.summary
               for e in lab.lab.trace.events()), "Mary's phone is the accepting end: it records MSRP"


def test_mary_declines_peters_chat_request(phone_lab):
    lab, device, peter, events = phone_lab()
    answer_sms(peter, "CHAT")
    wait_for(lambda: SessionState.INCOMING in session_states(events))
    session = lab.call(lambda: next(iter(device.sessions.sessions.values())))
    lab.call(device.sessions.decline, session)
    assert "Mary declined" in sms_text(peter)


def test_a_success_report_is_sent_when_asked(session_lab):
    _, mary, peter, media = session_lab()
    call_id = invite(mary, media.offer())
    peter.next_message()
    answer_sms(peter, "YES")
    ok = final(mary, call_id)
    in_dialog(mary, "ACK", ok, 1)
    media.connect(sdp.parse_sdp(ok.body))
    [tid] = media.send("report this", headers=[("Success-Report", "yes")])
    response = media.receive(lambda m: isinstance(m, MsrpResponse) and m.transaction_id == tid)
    assert response.status == 200
    report = media.receive(lambda m: isinstance(m, MsrpRequest) and m.method == "REPORT")
    assert report.get("Status") == "000 200 OK" and report.byte_range == (1, 11, 11)


def test_peter_asks_for_a_chat_and_a_raw_client_as_mary_accepts(session_lab):
    """5.9.6 with real clients only: the IWF's INVITE reaches the raw SIP client; the IWF connects for MSRP."""
    lab, mary, peter, media = session_lab()
    answer_sms(peter, "Chat?")
    inv = mary.receive(lambda m: isinstance(m, SipRequest) and m.method == "INVITE")
    assert "tel:+15550201" in inv.headers.get("From")
    assert inv.headers.get("P-Preferred-Service") == SESSION_SERVICE
    assert inv.headers.get("Contribution-ID") and inv.headers.get("Conversation-ID")
    offer = sdp.parse_sdp(inv.body)
    assert offer.setup == "active" and "message/cpim" in offer.accept_types
    assert "message/imdn+xml" in offer.accept_wrapped_types
    body = media.answer_sdp(offer)
    lines = ["SIP/2.0 200 OK", *[f"Via: {v}" for v in inv.headers.get_all("Via")],
             *[f"Record-Route: {r}" for r in inv.headers.get_all("Record-Route")],
             f"From: {inv.headers.get('From')}", f"To: {inv.headers.get('To')};tag=marytag",
             f"Call-ID: {inv.headers.get('Call-ID')}", f"CSeq: {inv.headers.get('CSeq')}",
             f"Contact: <sip:mary@{mary.local[0]}:{mary.local[1]};transport=tcp>",
             "Content-Type: application/sdp", f"Content-Length: {len(body)}"]
    mary.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    ack = mary.receive(lambda m: isinstance(m, SipRequest) and m.method == "ACK")
    assert ack.headers.get("Call-ID") == inv.headers.get("Call-ID")
    media.accept(offer)
    bind = media.receive(lambda m: isinstance(m, MsrpRequest))
    assert bind.method == "SEND" and not bind.body          # the offerer's bodiless SEND comes first
    media.answer(bind)
    assert "Mary accepted: you are now chatting; reply END to stop" in sms_text(peter)
    answer_sms(peter, "Train or car?")
    assert media.next_text() == "Train or car?"
    media.send("Train!")
    assert sms_text(peter) == "Train!"
    bye_from = {"From": f"{inv.headers.get('To')};tag=marytag", "To": inv.headers.get("From")}
    lines = [f"BYE {inv.headers.get('Contact').strip('<>')} SIP/2.0",
             f"Via: SIP/2.0/TCP {mary.local[0]}:{mary.local[1]};branch=z9hG4bKbye{uuid.uuid4().hex[:8]}",
             "Max-Forwards: 70", f"From: {bye_from['From']}", f"To: {bye_from['To']}",
             f"Call-ID: {inv.headers.get('Call-ID')}", "CSeq: 1 BYE", "Content-Length: 0"]
    mary.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert final(mary, inv.headers.get("Call-ID"), "BYE").status == 200
    assert "Mary ended the chat" in sms_text(peter)


def test_messages_keep_their_order_both_ways(session_lab):
    _, mary, peter, media = session_lab()
    call_id, ok = establish(mary, peter, media)
    texts = [f"msrp {i}" for i in range(6)]
    for text in texts:
        media.send(text)
    assert [sms_text(peter) for _ in texts] == texts
    replies = [f"sms {i}" for i in range(6)]
    for text in replies:
        answer_sms(peter, text)
    assert [media.next_text() for _ in replies] == replies


# -- the MSRP transport on its own ----------------------------------------------------------------

def test_msrp_transport_chunks_reassembles_and_records_on_the_accepting_end():
    import asyncio

    from iwlab.backends.directory import NodeDirectory
    from iwlab.backends.trace import Trace
    from iwlab.backends.transports.msrp import MsrpListener, connect, local_session

    async def scenario():
        trace, nodes = Trace(), NodeDirectory()
        listener = MsrpListener(host="127.0.0.1", local_name="IWF", trace=trace, nodes=nodes)
        await listener.start()
        got_answerer, got_offerer = [], []
        answerer = listener.new_session(call_id="call-1", on_message=lambda s, t, c, m: got_answerer.append(t))
        offerer = local_session("127.0.0.1", 9, call_id="call-1", on_message=lambda s, t, c, m: got_offerer.append(t))
        offerer.max_chunk = answerer.max_chunk = 1000
        offerer.remote_path, answerer.remote_path = [answerer.local_uri], [offerer.local_uri]
        answerer.send_text("queued before the offerer connected")
        await connect(offerer, "127.0.0.1", listener.port, local_name="Mary", nodes=nodes)
        long_text = "é" * 1500                               # 3000 bytes: three chunks, splits inside a character
        offerer.send_text(long_text)
        answerer_long = "ü" * 1200
        await until(lambda: got_answerer and got_offerer)
        answerer.send_text(answerer_long)
        await until(lambda: len(got_offerer) == 2)
        await listener.stop()
        offerer.close()
        return trace.events(), got_answerer, got_offerer, long_text, answerer_long

    async def until(condition, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "the MSRP messages did not arrive"
            await asyncio.sleep(0.01)

    events, got_answerer, got_offerer, long_text, answerer_long = asyncio.run(scenario())
    assert got_answerer == [long_text]
    assert got_offerer == ["queued before the offerer connected", answerer_long]
    summaries = [(e.src, e.dst, e.summary) for e in events]
    assert summaries[0][:2] == ("Mary", "IWF") and "bodiless" in summaries[0][2]   # bound at once, named by claim
    sends = [s for src, dst, s in summaries if src == "Mary" and s.startswith("SEND") and "/3000" in s]
    assert [s.split()[2] for s in sends] == ["1-1000/3000", "1001-2000/3000", "2001-3000/3000"]
    assert sum(1 for src, dst, s in summaries if src == "IWF" and s.startswith("200 OK")) == 4
    assert all(e.protocol == "MSRP" and e.correlation.get("call_id") == "call-1" for e in events)


def test_msrp_for_an_unknown_session_gets_481():
    import asyncio

    from iwlab.backends.transports.msrp import MsrpListener

    async def scenario():
        listener = MsrpListener(host="127.0.0.1", local_name="IWF", trace=None, nodes=None)
        await listener.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        stray = msrp.bodiless_send([sdp.msrp_path("127.0.0.1", listener.port, "nosuchsession")],
                                   ["msrp://127.0.0.1:9/me;tcp"])
        writer.write(stray.to_bytes())
        data = await asyncio.wait_for(reader.readuntil(b"$\r\n"), 5)
        writer.close()
        await listener.stop()
        return msrp.MsrpStreamParser().feed(data)

    [response] = asyncio.run(scenario())
    assert isinstance(response, MsrpResponse) and response.status == 481


def test_marys_phone_does_not_answer_peters_request_in_time(phone_lab):
    lab, device, peter, events = phone_lab(timeout=0.5)
    answer_sms(peter, "CHAT")
    wait_for(lambda: SessionState.INCOMING in session_states(events))
    assert "Mary did not answer your chat request." in sms_text(peter)
    wait_for(lambda: SessionState.CANCELLED in session_states(events))      # the IWF's CANCEL reached her phone


def test_peter_withdraws_his_request_with_end(phone_lab):
    lab, device, peter, events = phone_lab()
    answer_sms(peter, "CHAT")
    wait_for(lambda: SessionState.INCOMING in session_states(events))
    answer_sms(peter, "end")
    assert "You withdrew your chat request to Mary." in sms_text(peter)
    wait_for(lambda: SessionState.CANCELLED in session_states(events))


def test_a_chat_request_to_a_pool_number_reaches_the_thread_owner_in_her_thread(phone_lab):
    lab, device, peter, events = phone_lab(policy="pool")
    message = lab.run(device.send_message(lab.lab.user("peter"), "Coffee later?"))
    pdu = peter.next_message()
    pool_number = pdu.source_addr.decode()
    assert pool_number.startswith("1555029")
    answer_sms(peter, "CHAT", to=pool_number)
    wait_for(lambda: SessionState.INCOMING in session_states(events))
    session = lab.call(lambda: next(iter(device.sessions.sessions.values())))
    assert session.conversation_id == message.conversation_id
    lab.run(device.sessions.accept(session))
    accepted = peter.next_message()
    assert accepted.source_addr.decode() == pool_number     # answers come from the number he wrote to
    assert "Mary accepted" in received_text(accepted)


def test_a_second_invitation_while_peter_chats_gets_486(session_lab):
    _, mary, peter, media = session_lab()
    call_id = invite(mary, media.offer())
    peter.next_message()
    answer_sms(peter, "YES")
    assert final(mary, call_id).status == 200
    other = RawMsrpClient()
    try:
        second = invite(mary, other.offer())
        response = final(mary, second)
    finally:
        other.close()
    assert response.status == 486 and "already in a chat session" in response.reason


@pytest.mark.parametrize("text", ["chat tomorrow about the budget?", "CHAT about the trip?"])
def test_a_text_that_only_begins_with_the_keyword_is_a_message(session_lab, text):
    lab, mary, peter, _ = session_lab()
    answer_sms(peter, text)
    message = mary.receive(lambda m: isinstance(m, SipRequest))
    mary.answer(message)
    assert message.method == "MESSAGE" and text.encode() in message.body   # nothing swallowed, no INVITE
    assert not any(e.summary.startswith("INVITE") for e in lab.lab.trace.events())


def test_end_with_more_words_in_a_session_is_a_chat_line(phone_lab):
    lab, device, peter, events = phone_lab()
    answer_sms(peter, "CHAT")
    wait_for(lambda: SessionState.INCOMING in session_states(events))
    session = lab.call(lambda: next(iter(device.sessions.sessions.values())))
    lab.run(device.sessions.accept(session))
    assert "Mary accepted" in sms_text(peter)
    wait_for(lambda: session.msrp is not None and session.msrp.connection is not None)
    answer_sms(peter, "end of story, see you")
    wait_for(lambda: any(m.text == "end of story, see you" for m in session.messages))
    assert session.state is SessionState.ESTABLISHED
    answer_sms(peter, "End.")
    wait_for(lambda: session.state is SessionState.ENDED)


def test_marys_phone_keeps_the_newest_sessions_that_are_over(phone_lab, monkeypatch):
    """Each session holds its dialog and its closed MSRP connection: the phone keeps the newest
    history.KEPT of those over (1 here), and every open one."""
    from iwlab.backends.devices import history
    monkeypatch.setattr(history, "KEPT", 1)
    lab, device, peter, _ = phone_lab()
    chats = []
    for n in range(3):
        pending = lab.submit(device.sessions.start_session(lab.lab.user("peter")))
        sms_text(peter)                     # the invitation
        answer_sms(peter, "Yes!")
        chats.append(pending.result(10))
        sms_text(peter)                     # "now chatting"
        if n < 2:
            lab.run(device.sessions.end(chats[-1]))
            sms_text(peter)                 # "Mary ended the chat"
    kept = lab.call(lambda: list(device.sessions.sessions.values()))
    assert kept == chats[1:] and chats[2].state is SessionState.ESTABLISHED
