"""Sessions with John, whose only device is an email client (use cases 5.8.6 and 5.9.6 over email).

Real clients only: Mary is the raw SIP client and raw MSRP client of tests/test_sessions.py, John is
stdlib smtplib (what he sends) and his Maildir (what he gets). In between: CPM-A, CPM-B, the IWF (its
MSRP listener and its email leg), the lab's mail server.
"""
from __future__ import annotations

import uuid

import pytest

from iwlab.backends.devices.events import SessionChanged
from iwlab.backends.devices.session_state import SessionState
from iwlab.backends.protocols import sdp
from iwlab.backends.protocols.msrp import MsrpRequest
from iwlab.backends.protocols.sip import SipRequest, SipResponse
from tests.helpers.mail_client import JohnsInbox, john_writes, text_of
from tests.helpers.raw_sip import RawSipClient
from tests.helpers.sessions import SESSION_SERVICE, RawMsrpClient, cancel, final, in_dialog, invite, wait_for
from tests.helpers.sip_client import MARY

JOHN_TEL = "tel:+15550202"


@pytest.fixture
def email_session_lab(lab_factory, topology):
    clients: list = []

    def start(timeout: float = 60.0, devices: str = "none"):
        topology.operator("B").iwf.session_timeout_seconds = timeout
        lab = lab_factory(devices=devices)
        mary = RawSipClient(lab.lab.endpoints()["sip"]["cpm-a.lab"])
        if devices == "none":       # else Mary's simulated phone is the one registered
            assert mary.register(MARY, "cpm-a.lab").status == 200
        media = RawMsrpClient()
        clients.extend([mary, media])
        return lab, mary, media, JohnsInbox(lab)
    yield start
    for client in clients:
        client.close()


def established(lab, mary, media, inbox):
    """Mary invites John, he answers YES by email: the 200, ACK and MSRP connection; his 'now chatting' email."""
    call_id = invite(mary, media.offer(), to=JOHN_TEL)
    invitation = inbox.next()
    john_writes(lab, "yes", subject="Re: " + invitation["Subject"], in_reply_to=invitation["Message-ID"])
    ok = final(mary, call_id)
    assert ok.status == 200, ok.reason
    in_dialog(mary, "ACK", ok, 1)
    media.connect(sdp.parse_sdp(ok.body))
    assert "now chatting with Mary" in text_of(inbox.next())
    return call_id, ok, invitation


def test_mary_invites_john_who_accepts_by_email_and_they_chat_over_msrp(email_session_lab):
    lab, mary, media, inbox = email_session_lab()
    call_id = invite(mary, media.offer(), to=JOHN_TEL)
    ringing = mary.receive(lambda m: isinstance(m, SipResponse) and m.status == 180)
    assert ringing.headers.get("Call-ID") == call_id
    invitation = inbox.next()
    assert invitation["Subject"] == "Mary invites you to chat"
    assert invitation["From"] == "Mary <mary@cpm-a.lab>"             # so his reply goes back to Mary
    body = text_of(invitation)
    assert "YES" in body and "NO" in body and "END" in body
    # John hits Reply: his client quotes the invitation, whose keywords must not count.
    john_writes(lab, f"Yes, happy to!\n\nOn Tue, Mary wrote:\n> {body.splitlines()[-2]}\n",
                subject="Re: Mary invites you to chat", in_reply_to=invitation["Message-ID"])
    ok = final(mary, call_id)
    assert ok.status == 200, ok.reason
    assert ok.headers.get("Content-Type") == "application/sdp"
    answer = sdp.parse_sdp(ok.body)
    assert answer.path and answer.path[0].startswith("msrp://")
    in_dialog(mary, "ACK", ok, 1)
    media.connect(answer)
    accepted = inbox.next()
    assert "now chatting with Mary" in text_of(accepted)
    media.send("Hello John, in a session")
    media.send("and a second line")
    first, second = inbox.next(), inbox.next()
    assert (text_of(first), text_of(second)) == ("Hello John, in a session", "and a second line")
    for message in (accepted, first, second):                        # one thread in John's client
        assert message["In-Reply-To"] == invitation["Message-ID"]
        assert message["Subject"] == "Re: Mary invites you to chat"
    john_writes(lab, "Hi Mary, nice to chat", subject="Re: Mary invites you to chat",
                in_reply_to=first["Message-ID"])
    john_writes(lab, "and mine keep their order too")                 # no In-Reply-To: by sender
    assert media.next_text() == "Hi Mary, nice to chat"
    assert media.next_text() == "and mine keep their order too"
    in_dialog(mary, "BYE", ok, 2)
    assert final(mary, call_id, "BYE").status == 200
    closing = inbox.next()
    assert "Mary ended the chat" in text_of(closing) and closing["In-Reply-To"] == invitation["Message-ID"]
    events = lab.lab.trace.events()
    assert any("adapted invitation sent by email to John" in e.note for e in events)
    assert any(e.protocol == "MSRP" and e.src == "IWF" and "Hi Mary" in e.summary for e in events)
    # After the session, John's mail to Mary is an ordinary message again (a CPIM MESSAGE).
    john_writes(lab, "thanks for the chat")
    message = mary.receive(lambda m: isinstance(m, SipRequest) and m.method == "MESSAGE")
    assert b"thanks for the chat" in message.body


def test_john_declines_by_email_and_mary_gets_603(email_session_lab):
    lab, mary, media, inbox = email_session_lab()
    call_id = invite(mary, media.offer(), to=JOHN_TEL)
    invitation = inbox.next()
    john_writes(lab, "no, sorry, busy", subject="Re: " + invitation["Subject"], in_reply_to=invitation["Message-ID"])
    assert final(mary, call_id).status == 603


def test_keywords_in_the_quoted_invitation_do_not_answer_it(email_session_lab):
    lab, mary, media, inbox = email_session_lab()
    call_id = invite(mary, media.offer(), to=JOHN_TEL)
    invitation = inbox.next()
    john_writes(lab, "Let me check my diary first.\n\nOn Tue, Mary wrote:\n> Reply YES to accept or NO to decline.\n",
                subject="Re: " + invitation["Subject"], in_reply_to=invitation["Message-ID"])
    message = mary.receive(lambda m: isinstance(m, SipRequest) and m.method == "MESSAGE")   # an ordinary one
    mary.answer(message)
    assert b"Let me check my diary first." in message.body and b"YES" not in message.body
    john_writes(lab, "OK: yes", subject="Re: " + invitation["Subject"], in_reply_to=invitation["Message-ID"])
    assert final(mary, call_id).status == 200


def test_no_answer_gives_408_and_an_expired_email(email_session_lab):
    _, mary, media, inbox = email_session_lab(timeout=0.5)
    call_id = invite(mary, media.offer(), to=JOHN_TEL)
    inbox.next()
    response = final(mary, call_id)
    assert response.status == 408 and "John" in response.reason and "email" in response.reason
    assert "expired" in text_of(inbox.next())


def test_mary_cancels_and_john_is_told_the_invitation_was_withdrawn(email_session_lab):
    _, mary, media, inbox = email_session_lab()
    call_id = invite(mary, media.offer(), to=JOHN_TEL)
    ringing = mary.receive(lambda m: isinstance(m, SipResponse) and m.status == 180)
    inbox.next()
    cancel(mary, {"uri": JOHN_TEL, "from": ringing.headers.get("From"), "to": f"<{JOHN_TEL}>",
                  "call_id": call_id, "cseq": ringing.headers.get("CSeq").split()[0],
                  "via": ringing.headers.get_all("Via")[0]})
    assert final(mary, call_id, "CANCEL").status == 200
    assert final(mary, call_id).status == 487
    assert "withdrew" in text_of(inbox.next())


def test_john_ends_with_end_and_mary_gets_bye(email_session_lab):
    lab, mary, media, inbox = email_session_lab()
    call_id, ok, invitation = established(lab, mary, media, inbox)
    john_writes(lab, "End\n\n-- \nJohn", subject="Re: " + invitation["Subject"], in_reply_to=invitation["Message-ID"])
    bye = mary.receive(lambda m: isinstance(m, SipRequest) and m.method == "BYE")
    assert bye.headers.get("Call-ID") == call_id
    mary.answer(bye)
    assert "You ended the chat" in text_of(inbox.next())


def test_john_asks_for_a_chat_by_email_and_a_raw_client_as_mary_accepts(email_session_lab):
    """5.9.6 from email: the IWF's INVITE (from John's tel: identity) reaches the raw SIP client."""
    lab, mary, media, inbox = email_session_lab()
    request = john_writes(lab, "Chat?", subject="The trip")
    inv = mary.receive(lambda m: isinstance(m, SipRequest) and m.method == "INVITE")
    assert JOHN_TEL in inv.headers.get("From") and "John" in inv.headers.get("From")
    assert inv.headers.get("P-Preferred-Service") == SESSION_SERVICE
    assert inv.headers.get("Conversation-ID")
    offer = sdp.parse_sdp(inv.body)
    body = media.answer_sdp(offer)
    lines = ["SIP/2.0 200 OK", *[f"Via: {v}" for v in inv.headers.get_all("Via")],
             *[f"Record-Route: {r}" for r in inv.headers.get_all("Record-Route")],
             f"From: {inv.headers.get('From')}", f"To: {inv.headers.get('To')};tag=marytag",
             f"Call-ID: {inv.headers.get('Call-ID')}", f"CSeq: {inv.headers.get('CSeq')}",
             f"Contact: <sip:mary@{mary.local[0]}:{mary.local[1]};transport=tcp>",
             "Content-Type: application/sdp", f"Content-Length: {len(body)}"]
    mary.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert mary.receive(lambda m: isinstance(m, SipRequest) and m.method == "ACK")
    media.accept(offer)
    media.answer(media.receive(lambda m: isinstance(m, MsrpRequest)))      # the bodiless SEND
    accepted = inbox.next()
    assert "Mary accepted: you are now chatting; reply END to stop" in text_of(accepted)
    assert accepted["In-Reply-To"] == request["Message-ID"] and accepted["Subject"] == "Re: The trip"
    john_writes(lab, "Train or car?", subject="Re: The trip", in_reply_to=accepted["Message-ID"])
    assert media.next_text() == "Train or car?"
    media.send("Train!")
    assert text_of(inbox.next()) == "Train!"
    john_writes(lab, "END", subject="Re: The trip", in_reply_to=accepted["Message-ID"])
    bye = mary.receive(lambda m: isinstance(m, SipRequest) and m.method == "BYE")
    assert bye.headers.get("Call-ID") == inv.headers.get("Call-ID")
    mary.answer(bye)
    assert "You ended the chat with Mary" in text_of(inbox.next())


@pytest.mark.parametrize("accept", [True, False])
def test_john_asks_and_marys_phone_answers(email_session_lab, accept):
    lab, mary, media, inbox = email_session_lab(devices="mary")
    device = lab.lab.device("mary")
    events: list = []
    lab.call(device.listeners.append, events.append)
    john_writes(lab, "chat", subject="Quick chat?")
    wait_for(lambda: any(isinstance(e, SessionChanged) and e.state is SessionState.INCOMING for e in list(events)))
    session = lab.call(lambda: next(iter(device.sessions.sessions.values())))
    assert session.direction == "in" and session.peer_name == "John"
    if not accept:
        lab.call(device.sessions.decline, session)
        assert "Mary declined" in text_of(inbox.next())
        return
    lab.run(device.sessions.accept(session))
    assert "Mary accepted" in text_of(inbox.next())
    wait_for(lambda: session.msrp is not None and session.msrp.connection is not None)
    lab.call(device.sessions.send, session, "Sure, what's up?")
    assert text_of(inbox.next()) == "Sure, what's up?"
    john_writes(lab, f"Lunch? {uuid.uuid4().hex[:4]}")
    wait_for(lambda: any(m.text.startswith("Lunch?") for m in session.messages))


def test_marys_phone_starts_a_session_with_john_whose_email_client_answers(lab_factory):
    """The same Start-session action as toward Peter; John answers from the lab's email client."""
    lab = lab_factory(devices="mary,john")
    phone, john = lab.lab.device("mary"), lab.lab.device("john")
    pending = lab.submit(phone.sessions.start_session(lab.lab.user("john")))
    wait_for(lambda: len(john.inbox) == 1)
    invitation = john.inbox[0]
    assert invitation.subject == "Mary invites you to chat"
    lab.run(john.send(invitation.parsed.sender, "Re: " + invitation.subject, "Yes!", reply_to=invitation))
    session = pending.result(10)
    assert session.state is SessionState.ESTABLISHED
    wait_for(lambda: len(john.inbox) == 2 and "now chatting" in john.inbox[1].parsed.text)
    lab.call(phone.sessions.send, session, "Hi John, from the phone")
    wait_for(lambda: len(john.inbox) == 3)
    assert john.inbox[2].parsed.text == "Hi John, from the phone"
    lab.run(john.send("mary@cpm-a.lab", "Re: " + invitation.subject, "Hi Mary", reply_to=john.inbox[2]))
    wait_for(lambda: any(m.text == "Hi Mary" and m.direction == "in" for m in session.messages))
    lab.run(phone.sessions.end(session))
    wait_for(lambda: len(john.inbox) == 4)
    assert "Mary ended the chat" in john.inbox[3].parsed.text


def test_marys_phone_does_not_answer_johns_request_in_time(email_session_lab):
    lab, _, _, inbox = email_session_lab(timeout=0.5, devices="mary")
    john_writes(lab, "CHAT", subject="Now?")
    assert "Mary did not answer your chat request." in text_of(inbox.next())


def test_a_late_reply_to_a_session_email_joins_marys_conversation(email_session_lab):
    lab, mary, media, inbox = email_session_lab()
    call_id, ok, invitation = established(lab, mary, media, inbox)
    media.send("see you then")
    in_session = inbox.next()
    in_dialog(mary, "BYE", ok, 2)
    assert final(mary, call_id, "BYE").status == 200
    inbox.next()                                                      # the closing email
    john_writes(lab, "one more thing", subject="Re: " + invitation["Subject"],
                in_reply_to=in_session["Message-ID"])                 # answers an email from the session
    message = mary.receive(lambda m: isinstance(m, SipRequest) and m.method == "MESSAGE")
    assert b"one more thing" in message.body
    assert message.headers.get("Conversation-ID") == "conv-session-1"
    assert message.headers.get("InReplyTo-Contribution-ID") == "contrib-session-1"
