"""Group chat with SMS and email members (issue 17 item 1), driven through sockets by real clients.

Mary is a raw SIP client and a raw MSRP client; she asks her operator's conference factory for a
group (RFC 5366: an INVITE with her SDP offer and a resource list). Peter is a real smpplib client
bound as 15550201, John is stdlib smtplib and his Maildir. In between: CPM-A, its focus (Focus-A),
CPM-B, the IWF (joining for Peter and John), the SMSC, the mail server.
"""
from __future__ import annotations

import dataclasses
import uuid

import pytest

from iwlab.backends.lab.scenarios import ScenarioError, ScenarioRun, load_requirements, load_scenarios, requirement_verdicts
from iwlab.backends.nodes.conference import focus as focus_module
from iwlab.backends.nodes.conference.group import Group
from iwlab.backends.protocols import sdp
from iwlab.backends.protocols.cpim import parse_cpim
from iwlab.backends.protocols.sip import SipResponse, uri_of
from tests.helpers.mail_client import JohnsInbox, john_writes, text_of
from tests.helpers.raw_sip import RawSipClient
from tests.helpers.sessions import SESSION_SERVICE, RawMsrpClient, answer_sms, final, in_dialog, sms_text
from tests.helpers.sip_client import MARY, received_text
from tests.helpers.waiting import wait_until

FACTORY = "sip:conference-factory@cpm-a.lab"
PETER, JOHN = "tel:+15550201", "tel:+15550202"
LIST = (b'<?xml version="1.0" encoding="UTF-8"?>\r\n'
        b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">\r\n<list>\r\n'
        b'<entry uri="tel:+15550201"/>\r\n<entry uri="tel:+15550202"/>\r\n</list>\r\n</resource-lists>\r\n')


def group_invite(mary: RawSipClient, offer: bytes, *, resource_list: bytes = LIST,
                 require: str = "recipient-list-invite") -> str:
    """Mary's INVITE to the factory, written by hand: multipart/mixed with her SDP and the list."""
    body = (b"--b1\r\nContent-Type: application/sdp\r\n\r\n" + offer + b"\r\n"
            b"--b1\r\nContent-Type: application/resource-lists+xml\r\nContent-Disposition: recipient-list\r\n\r\n"
            + resource_list + b"\r\n--b1--\r\n")
    extra = [f"Contact: <sip:mary@{mary.local[0]}:{mary.local[1]};transport=tcp>",
             f"P-Preferred-Service: {SESSION_SERVICE}", f"Conversation-ID: {uuid.uuid4().hex}"]
    if require:
        extra.append(f"Require: {require}")
    return mary.request("INVITE", FACTORY, from_uri=MARY, to_uri=FACTORY, body=body,
                        content_type="multipart/mixed;boundary=b1", extra=extra)


def mary_hears(media: RawMsrpClient) -> tuple[str, str]:
    """The next group message on Mary's MSRP: (its author's URI, its text)."""
    cpim = parse_cpim(media.next_text().encode())
    return uri_of(cpim.sender), cpim.text


@pytest.fixture
def group_lab(session_lab):
    """As session_lab (tests/flows/conftest.py), with John's inbox read from the mail server."""
    def start():
        lab, mary, peter, media = session_lab()
        return lab, mary, peter, media, JohnsInbox(lab)
    return start


def test_mary_peter_and_john_chat_in_one_group(group_lab):
    lab, mary, peter, media, john = group_lab()
    call_id = group_invite(mary, media.offer())
    ok = final(mary, call_id)
    assert ok.status == 200, ok.reason
    assert "isfocus" in ok.headers.get("Contact")
    in_dialog(mary, "ACK", ok, 1)
    media.connect(sdp.parse_sdp(ok.body))

    # The IWF joins for each, gives Peter a number of the group's own, tells both who is in it and how to leave.
    invitation = peter.next_message()
    group_number = invitation.source_addr.decode()
    assert group_number in {"15550290", "15550291", "15550292", "15550293"}
    text = received_text(invitation)
    assert "Mary added you to a group chat" in text and "John" in text and "END" in text and group_number in text
    welcome = john.next()
    assert "Mary added you to a group chat" in text_of(welcome) and "Peter" in text_of(welcome)
    joined = {mary_hears(media)[1], mary_hears(media)[1]}
    assert joined == {"Peter joined the group.", "John joined the group."}
    # Whoever joined first hears of the other's joining, before anything else: set aside as it comes.
    notices: list[str] = []
    peter_reads = skipping_join_notices(lambda: sms_text(peter), notices)
    john_reads = skipping_join_notices(lambda: text_of(john.next()), notices)

    # Mary -> both, in her order; Peter's replies to the group number -> Mary over MSRP and John by email.
    for n in range(3):
        media.send(f"Mary {n}")
    assert [peter_reads() for _ in range(3)] == [f"Mary: Mary {n}" for n in range(3)]
    assert [john_reads() for _ in range(3)] == [f"Mary: Mary {n}" for n in range(3)]
    assert notices in (["John joined the group."], ["Peter joined the group."])
    for n in range(3):
        answer_sms(peter, f"Peter {n}", to=group_number)
    assert [mary_hears(media) for _ in range(3)] == [(PETER, f"Peter {n}") for n in range(3)]
    assert [text_of(john.next()) for _ in range(3)] == [f"Peter: Peter {n}" for n in range(3)]

    # John answers in the group's thread: to Mary over MSRP, to Peter from the group number.
    thread = welcome["Message-ID"]
    for n in range(2):
        john_writes(lab, f"John {n}", subject=f"Re: {welcome['Subject']}", in_reply_to=thread)
    assert [mary_hears(media) for _ in range(2)] == [(JOHN, f"John {n}") for n in range(2)]
    for n in range(2):
        sms = peter.next_message()
        assert sms.source_addr.decode() == group_number
        assert received_text(sms) == f"John: John {n}"

    # Peter leaves; then Mary ends the group, and John is told.
    answer_sms(peter, "END", to=group_number)
    assert sms_text(peter) == "You left the group chat."
    assert mary_hears(media)[1] == "Peter left the group."
    assert text_of(john.next()) == "Peter left the group."
    in_dialog(mary, "BYE", ok, 2)
    assert final(mary, call_id, "BYE").status == 200
    assert text_of(john.next()) == "Mary left; the group chat has ended."
    assert text_of(john.next()) == "The group chat has ended."

    # The focus is a node on the ladder: Mary's INVITE reaches it through CPM-A, its own go out through CPM-A.
    events = lab.lab.trace.events()
    assert any(e.src == "CPM-A" and e.dst == "Focus-A" and e.summary.startswith("INVITE") for e in events)
    assert any(e.src == "Focus-A" and e.dst == "CPM-A" and e.summary.startswith("INVITE") for e in events)
    assert any(e.dst == "Focus-A" and e.protocol == "MSRP" and e.summary.startswith("SEND") for e in events)


def skipping_join_notices(read, notices: list[str]):
    def next_text() -> str:
        text = read()
        while text.endswith(" joined the group."):
            notices.append(text)
            text = read()
        return text
    return next_text


@pytest.mark.parametrize("require, resource_list, status", [
    ("", LIST, 200),                                     # Require is the client's duty; the list is still read
    ("recipient-list-invite, x-unknown", LIST, 420),     # an option the focus does not know
    ("recipient-list-invite", LIST.replace(b"</list>", b""), 400),     # not well-formed
    ("recipient-list-invite", b'<!DOCTYPE r [<!ENTITY a "a">]>' + LIST[39:], 400),
])
def test_the_factory_refuses_what_it_cannot_use_with_the_sip_answer(group_lab, require, resource_list, status):
    lab, mary, peter, media, john = group_lab()
    call_id = group_invite(mary, media.offer(), resource_list=resource_list, require=require)
    response = final(mary, call_id)
    assert response.status == status, response.reason
    if status == 420:
        assert response.headers.get("Unsupported") == "x-unknown"
    if status == 200:
        in_dialog(mary, "ACK", response, 1)
        in_dialog(mary, "BYE", response, 2)
        assert final(mary, call_id, "BYE").status == 200


def test_a_plain_invite_to_the_factory_is_unsupported_media(group_lab):
    lab, mary, peter, media, john = group_lab()
    call_id = mary.request("INVITE", FACTORY, from_uri=MARY, to_uri=FACTORY, body=media.offer(),
                           content_type="application/sdp", extra=["Require: recipient-list-invite"])
    response = final(mary, call_id)
    assert isinstance(response, SipResponse) and response.status == 415
    assert "application/resource-lists+xml" in response.headers.get_all("Accept")


# -- the scenario's verdict fails when the group breaks (its positive side: tests/flows/test_scenarios.py) ----
GROUP = load_scenarios()["IOP-xxx-1-group"]


def test_a_focus_that_forgets_legacy_members_fails_the_group_verdict(lab_factory, monkeypatch):
    """The focus relays only to CPM members: Peter and John never get Mary's text."""
    lab = lab_factory()
    original = Group.relay

    def cpm_only(self, author, text):
        saved, self.members = self.members, [m for m in self.members if m.is_owner or m is author]
        try:
            return original(self, author, text)
        finally:
            self.members = saved
    monkeypatch.setattr(Group, "relay", cpm_only)
    run = ScenarioRun(lab.lab, GROUP, timeout=5.0)
    with pytest.raises(ScenarioError, match="peter receiving 'Mary: Hello") as raised:   # nothing for him to answer
        lab.run(run.play(), timeout=90)
    verdict = run.failed(str(raised.value))
    assert requirement_verdicts([verdict], load_requirements())["CPM-IOP-xxx-1"][0] == "failed", verdict.report()
    [mary_check] = [r for r in verdict.results if r.check.params.get("from") == "mary"]
    assert not mary_check.passed and mary_check.evidence
    assert "Peter got [], expected ['Mary: Hello Peter and John, one chat for the three of us']" in mary_check.detail


def test_a_focus_that_reorders_an_author_fails_the_group_verdict(lab_factory, monkeypatch):
    """The focus holds an author's first message back until the second: everything arrives, out of order."""
    lab = lab_factory()
    held: list[str] = []
    original = Group.relay

    def swapping(self, author, text):
        if not author.is_owner:
            return original(self, author, text)
        if not held:
            held.append(text)
            return 0
        original(self, author, text)
        return original(self, author, held.pop())
    monkeypatch.setattr(Group, "relay", swapping)
    texts = ["first of two", "second of two"]
    steps = [GROUP.steps[0]] + [dataclasses.replace(GROUP.steps[1], text=t) for t in texts] + [GROUP.steps[-1]]
    check = dataclasses.replace(GROUP.checks[0], params={**GROUP.checks[0].params, "texts": texts})
    verdict = lab.run(ScenarioRun(lab.lab, dataclasses.replace(GROUP, steps=steps, checks=[check]),
                                  timeout=5.0).play(), timeout=90)
    [result] = verdict.results
    assert not result.passed and result.decided_failure, verdict.report()
    assert "Peter got ['Mary: second of two', 'Mary: first of two']" in result.detail


def test_two_groups_give_peter_two_numbers_and_each_reply_finds_its_group(group_lab):
    lab, mary, peter, media, john = group_lab()
    only_peter = LIST.replace(b'<entry uri="tel:+15550202"/>\r\n', b"")
    second_media = RawMsrpClient()
    try:
        numbers = []
        for client in (media, second_media):
            ok = final(mary, group_invite(mary, client.offer(), resource_list=only_peter))
            in_dialog(mary, "ACK", ok, 1)
            client.connect(sdp.parse_sdp(ok.body))
            invitation = peter.next_message()
            assert "Mary added you to a group chat." in received_text(invitation)    # nobody else in it
            numbers.append(invitation.source_addr.decode())
            assert mary_hears(client)[1] == "Peter joined the group."
        assert len(set(numbers)) == 2
        answer_sms(peter, "to the second", to=numbers[1])
        answer_sms(peter, "to the first", to=numbers[0])
        assert mary_hears(second_media) == (PETER, "to the second")
        assert mary_hears(media) == (PETER, "to the first")
    finally:
        second_media.close()


def test_a_cpm_member_is_invited_by_the_focus_and_sees_the_group(lab_factory, topology):
    """Peter with a CPM phone (this lab's simulated one): the focus's invitation rings on it, with the
    group's roster; he accepts, and the group's messages show their authors."""
    peter_user = topology.user("peter")
    peter_user.device, peter_user.sip, peter_user.cpm_registered, peter_user.cpm_capable = \
        "cpm", "sip:peter@cpm-b.lab", True, True
    lab = lab_factory(devices="peter")
    phone = lab.lab.device("peter")
    wait_until(lambda: phone.registered, 10, "Peter's phone registered")
    mary = RawSipClient(lab.lab.endpoints()["sip"]["cpm-a.lab"])
    media = RawMsrpClient()
    try:
        assert mary.register(MARY, "cpm-a.lab").status == 200
        with_peter = LIST.replace(b"tel:+15550201", b"sip:peter@cpm-b.lab")
        ok = final(mary, group_invite(mary, media.offer(), resource_list=with_peter))
        in_dialog(mary, "ACK", ok, 1)
        media.connect(sdp.parse_sdp(ok.body))
        sessions = phone.sessions
        wait_until(lambda: sessions.sessions, 10, "the focus's invitation on Peter's phone")
        [session] = sessions.sessions.values()
        assert session.peer_name == "Mary's group" and [m.name for m in session.members] == ["Mary", "John"]
        lab.run(sessions.accept(session))
        assert {mary_hears(media)[1] for _ in range(2)} == {"Peter joined the group.", "John joined the group."}
        media.send("Hello Peter's phone")
        wait_until(lambda: any(m.text == "Mary: Hello Peter's phone" for m in session.messages), 10,
                   "Mary's text on Peter's phone, with her name")
        lab.run(_call(sessions.send, session, "Hi from my phone"))
        assert mary_hears(media) == ("sip:peter@cpm-b.lab", "Hi from my phone")
    finally:
        mary.close()
        media.close()


async def _call(fn, *args):
    return fn(*args)


def test_a_list_naming_a_focus_makes_no_group_of_groups(group_lab):
    """The factory itself (or a group) in the list is left out: a focus never invites a focus."""
    lab, mary, peter, media, john = group_lab()
    loop = LIST.replace(b'<entry uri="tel:+15550202"/>', b'<entry uri="sip:conference-factory@cpm-a.lab"/>'
                                                          b'<entry uri="sip:group-0@cpm-b.lab"/>')
    ok = final(mary, group_invite(mary, media.offer(), resource_list=loop))
    in_dialog(mary, "ACK", ok, 1)
    media.connect(sdp.parse_sdp(ok.body))
    assert mary_hears(media)[1] == "Peter joined the group."
    assert [e.summary for e in lab.lab.trace.events() if e.src == "Focus-A" and e.summary.startswith("INVITE")] \
        == ["INVITE tel:+15550201"]
    assert len(lab.lab.focuses["A"].groups) == 1


def test_peters_text_after_the_focus_vanished_is_answered_not_lost(group_lab):
    lab, mary, peter, media, john = group_lab()
    only_peter = LIST.replace(b'<entry uri="tel:+15550202"/>\r\n', b"")
    ok = final(mary, group_invite(mary, media.offer(), resource_list=only_peter))
    in_dialog(mary, "ACK", ok, 1)
    media.connect(sdp.parse_sdp(ok.body))
    number = peter.next_message().source_addr.decode()
    assert mary_hears(media)[1] == "Peter joined the group."
    [member] = lab.lab.iwf.groups.table.by_call_id.values()
    lab.run(_call(member.msrp.close))          # its MSRP connection is gone, and no BYE came
    answer_sms(peter, "anyone there?", to=number)
    assert sms_text(peter) == "The group chat cannot be reached any more; your message was not sent."


def test_an_inviter_who_never_connects_ends_her_group(group_lab, monkeypatch):
    monkeypatch.setattr(focus_module, "CONNECT_WITHIN", 0.3)
    lab, mary, peter, media, john = group_lab()
    only_peter = LIST.replace(b'<entry uri="tel:+15550202"/>\r\n', b"")
    ok = final(mary, group_invite(mary, media.offer(), resource_list=only_peter))
    assert ok.status == 200                      # and then no MSRP connection from Mary
    assert "added you to a group chat" in received_text(peter.next_message())
    assert sms_text(peter) == "Mary did not connect; the group chat has ended."
    assert sms_text(peter) == "The group chat has ended."


def test_a_focus_holding_its_most_groups_refuses_one_more(group_lab, monkeypatch):
    monkeypatch.setattr(focus_module, "MAX_GROUPS", 1)
    lab, mary, peter, media, john = group_lab()
    ok = final(mary, group_invite(mary, media.offer()))
    assert ok.status == 200
    refused = final(mary, group_invite(mary, media.offer()))
    assert refused.status == 486 and "1 groups" in refused.reason
    in_dialog(mary, "ACK", ok, 1)                 # the first group is whole: both joined
    media.connect(sdp.parse_sdp(ok.body))
    assert {mary_hears(media)[1] for _ in range(2)} == {"Peter joined the group.", "John joined the group."}


def test_the_iwf_joins_no_group_an_outsider_made_up(group_lab):
    """An INVITE that only looks like a focus's (isfocus, a roster) from outside the lab: the IWF
    does not join Peter, and he gets no text from the pool."""
    lab, mary, peter, media, john = group_lab()
    outsider = RawSipClient(lab.lab.endpoints()["sip"]["cpm-b.lab"])
    try:
        body = (b"--b1\r\nContent-Type: application/sdp\r\n\r\n" + media.offer() + b"\r\n--b1\r\n"
                b"Content-Type: application/resource-lists+xml\r\nContent-Disposition: recipient-list\r\n\r\n"
                + LIST + b"\r\n--b1--\r\n")
        for group, referred in (("sip:group-1@evil.test", MARY), ("sip:group-1@cpm-a.lab", "sip:eve@evil.test")):
            call_id = outsider.request("INVITE", PETER, from_uri=group, to_uri=PETER, body=body,
                                       content_type="multipart/mixed;boundary=b1",
                                       extra=[f"Contact: <{group}>;isfocus", f"Referred-By: <{referred}>"])
            response = final(outsider, call_id)
            assert response.status == 403 and "conference focuses" in response.reason
        assert peter.received.empty()
    finally:
        outsider.close()
