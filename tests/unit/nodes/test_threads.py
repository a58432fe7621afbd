"""The IWF's thread map (sans-I/O) and receipt id matching."""
import pytest

from iwlab.backends.nodes.iwf.threads import ThreadMap
from iwlab.backends.protocols.smpp import receipt_keys


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


MARY = "sip:mary@cpm-a.lab"


def test_last_policy_answers_the_newest_conversation_within_the_expiry():
    clock = Clock()
    threads = ThreadMap("last", expiry=60, clock=clock)
    assert threads.outbound_sms(cpm_uri=MARY, cpm_number="+15550101", peer="+15550201",
                                conversation_id="c1", contribution_id="m1") == "15550101"
    threads.outbound_sms(cpm_uri=MARY, cpm_number="+15550101", peer="+15550201",
                         conversation_id="c2", contribution_id="m2")
    ref = threads.inbound_sms(peer="15550201", dest_number="15550101", cpm_uri=MARY)
    assert (ref.conversation_id, ref.contribution_id) == ("c2", "m2")
    assert threads.inbound_sms(peer="15550299", dest_number="15550101", cpm_uri=MARY) is None
    clock.now += 61
    assert threads.inbound_sms(peer="15550201", dest_number="15550101", cpm_uri=MARY) is None


def test_pool_policy_gives_each_open_conversation_its_own_number():
    threads = ThreadMap("pool", pool=["+15550290", "+15550291"], clock=Clock())
    first = threads.outbound_sms(cpm_uri=MARY, cpm_number="15550101", peer="15550201",
                                 conversation_id="c1", contribution_id="m1")
    second = threads.outbound_sms(cpm_uri=MARY, cpm_number="15550101", peer="15550201",
                                  conversation_id="c2", contribution_id="m2")
    again = threads.outbound_sms(cpm_uri=MARY, cpm_number="15550101", peer="15550201",
                                 conversation_id="c1", contribution_id="m3")
    assert first != second and again == first
    assert threads.inbound_sms(peer="15550201", dest_number=first, cpm_uri=None).contribution_id == "m3"
    assert threads.inbound_sms(peer="15550201", dest_number=second, cpm_uri=None).conversation_id == "c2"
    # Another person may get the same numbers: the key is (peer, number).
    other = threads.outbound_sms(cpm_uri=MARY, cpm_number="15550101", peer="15550202",
                                 conversation_id="c9", contribution_id="m9")
    assert other == first


def test_pool_exhausted_reuses_the_number_idle_the_longest():
    clock = Clock()
    threads = ThreadMap("pool", pool=["15550290"], clock=clock)
    threads.outbound_sms(cpm_uri=MARY, cpm_number="1", peer="p", conversation_id="c1", contribution_id="m1")
    clock.now += 5
    assert threads.outbound_sms(cpm_uri=MARY, cpm_number="1", peer="p", conversation_id="c2",
                                contribution_id="m2") == "15550290"
    assert threads.inbound_sms(peer="p", dest_number="15550290", cpm_uri=None).conversation_id == "c2"


def test_a_reply_answers_the_cpm_users_latest_message_not_itself():
    threads = ThreadMap("last", clock=Clock())
    threads.outbound_sms(cpm_uri=MARY, cpm_number="1", peer="p", conversation_id="c1", contribution_id="m1")
    ref = threads.inbound_sms(peer="p", dest_number="1", cpm_uri=MARY)
    threads.note_reply("p", ref)
    # The peer's next SMS answers Mary's message again, not his own reply.
    assert threads.inbound_sms(peer="p", dest_number="1", cpm_uri=MARY).contribution_id == "m1"
    threads.outbound_sms(cpm_uri=MARY, cpm_number="1", peer="p", conversation_id="c1", contribution_id="m2")
    assert threads.inbound_sms(peer="p", dest_number="1", cpm_uri=MARY).contribution_id == "m2"


def test_a_reply_keeps_the_conversation_alive():
    clock = Clock()
    threads = ThreadMap("last", expiry=100, clock=clock)
    threads.outbound_sms(cpm_uri=MARY, cpm_number="1", peer="p", conversation_id="c1", contribution_id="m1")
    clock.now += 90
    threads.note_reply("p", threads.inbound_sms(peer="p", dest_number="1", cpm_uri=MARY))
    clock.now += 90
    assert threads.inbound_sms(peer="p", dest_number="1", cpm_uri=MARY).contribution_id == "m1"


def test_email_ids():
    threads = ThreadMap("last", clock=Clock())
    threads.remember_id("<abc@cpm-a.lab>", cpm_uri=MARY, conversation_id="c1", contribution_id="abc")
    assert threads.find_by_ids(["<zzz@x>", "abc@cpm-a.lab"]).conversation_id == "c1"
    assert threads.find_by_ids(["<zzz@x>"]) is None


@pytest.mark.parametrize("bad", [("nope", []), ("pool", [])])
def test_bad_policies_are_refused(bad):
    with pytest.raises(ValueError):
        ThreadMap(bad[0], pool=bad[1])


@pytest.mark.parametrize("submitted, in_receipt", [
    ("1A2B3C01", "1a2b3c01"), ("1A2B3C01", str(0x1A2B3C01)), ("00FF", "FF"), ("00FF", "255"),
    ("12345", "0012345"), ("12345", f"{12345:X}"),
])
def test_receipt_ids_match_in_hex_or_decimal_with_or_without_zeros(submitted, in_receipt):
    assert set(receipt_keys(submitted)) & set(receipt_keys(in_receipt))


def test_a_receipt_goes_to_its_own_message_even_when_ids_read_alike():
    """'10' (decimal) and '16' read as each other in the other base: the exact id wins."""
    from iwlab.backends.nodes.iwf.sms_leg import ReceiptBook
    from iwlab.backends.nodes.iwf.sms_outbox import OutboundSms
    book = ReceiptBook()

    def sms(name):
        return OutboundSms(source="1", dest="2", text=name, imdn_message_id=name, sender_uri="s",
                           recipient_uri="r", disposition=("positive-delivery",), datetime="")
    ten, sixteen = sms("ten"), sms("sixteen")
    book.expect("10", ten, 0)
    book.expect("16", sixteen, 0)
    assert book.find("10")[0] is ten
    assert book.find("0016")[0] is sixteen
    assert book.find("A") is None or book.find("A")[0] is ten   # 0xA = 10: unique
    assert book.find("99") is None


@pytest.mark.parametrize("state, stat, outcome", [
    (2, None, "delivered"), (None, "DELIVRD", "delivered"), (3, None, "failed"), (None, "UNDELIV", "failed"),
    (5, "UNDELIV", "failed"), (1, None, None), (6, "ACCEPTD", None), (7, "UNKNOWN", None), (None, "ENROUTE", None),
])
def test_receipt_outcomes(state, stat, outcome):
    from iwlab.backends.protocols.smpp import receipt_outcome
    assert receipt_outcome(state, stat) == outcome
