"""A simulated device remembers the newest history.KEPT messages of each folder, as a phone does:
a lab under load for hours stays the size it was (the trace keeps every PDU, within its bounds).
KEPT is made 3 here so that a few real messages, over the lab's real legs, overflow each folder."""
import pytest

from iwlab.backends.devices import history
from iwlab.backends.devices.cpm_phone import CpmDevice
from iwlab.backends.devices.email_client import EmailClient
from iwlab.backends.devices.sms_handset import SmsHandset
from tests.helpers.waiting import wait_until

TEXTS = [f"message {n}" for n in range(5)]


@pytest.fixture
def lab(lab_factory, monkeypatch):
    monkeypatch.setattr(history, "KEPT", 3)
    return lab_factory()


def test_each_folder_keeps_the_newest_messages_and_each_end_still_gets_the_next(lab):
    mary: CpmDevice = lab.lab.device("mary")
    peter: SmsHandset = lab.lab.device("peter")
    for text in TEXTS:
        assert lab.run(mary.send_message(lab.lab.user("peter"), text)).status in ("sent", "delivered")   # 202, or its IMDN already back
    wait_until(lambda: lab.call(lambda: [s.text for s in peter.inbox]) == TEXTS[2:], 20, what="Peter's newest three")
    lab.call(setattr, mary, "confirming", False)   # no IMDN delivered: Peter's reports stay awaited
    for text in TEXTS:
        lab.run(peter.send_sms(lab.lab.user("mary"), f"re: {text}"))
    wait_until(lambda: lab.call(lambda: [m.text for m in mary.messages]) == [f"re: {t}" for t in TEXTS[2:]], 20,
               what="Mary's newest three")
    assert lab.call(lambda: [s.text for s in peter.sent]) == [f"re: {t}" for t in TEXTS[2:]]
    # What is forgotten is forgotten everywhere: no id is kept for a message no longer held.
    assert lab.call(lambda: len(mary._by_imdn_id)) == 3   # noqa: SLF001 - what would grow without bound
    assert lab.call(lambda: len(peter._awaiting)) == 3   # noqa: SLF001 - the reports of the sent it keeps


def test_a_mail_inbox_keeps_the_newest(lab):
    mary: CpmDevice = lab.lab.device("mary")
    john: EmailClient = lab.lab.device("john")
    for text in TEXTS:
        assert lab.run(mary.send_message(lab.lab.user("john"), text)).status in ("sent", "delivered")   # 202, or its IMDN already back
    wait_until(lambda: lab.call(lambda: [item.parsed.text.strip() for item in john.inbox]) == TEXTS[2:], 20,
               what="John's newest three")


def test_a_client_that_connects_per_message_lets_go_of_its_claim_each_time(lab):
    """John's client opens a connection per mail and claims it, so the mail server names him:
    once it is closed the claim goes too (else one was kept per mail, and a later outside client
    on that port pair would have been taken for John)."""
    john: EmailClient = lab.lab.device("john")
    mary: CpmDevice = lab.lab.device("mary")

    def mary_has(count: int) -> None:
        wait_until(lambda: len(lab.call(lambda: [m for m in mary.messages if m.direction == "in"])) == count, 20,
                   what=f"Mary has John's {count} mails")
    async def settled() -> None:   # every hop's consequences over (Mary's IMDNs back too)
        await lab.loop.when_idle()
    lab.run(john.send("mary@cpm-a.lab", "hello", "first"))   # the lab's own links along the way are up now
    mary_has(1)
    lab.run(settled())
    claims = len(lab.lab.nodes)
    for text in TEXTS[:2]:
        lab.run(john.send("mary@cpm-a.lab", "hello", text))
    mary_has(3)
    lab.run(settled())
    assert len(lab.lab.nodes) == claims
    greeted = [e.src for e in lab.lab.trace.events() if e.protocol == "SMTP" and e.summary.startswith("EHLO")
               and e.dst == "Mail"]
    assert greeted[-3:] == ["John"] * 3, "each connection named while it was open"
