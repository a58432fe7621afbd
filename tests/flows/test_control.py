"""Commands that change a running lab (what `iwlab serve` reads on stdin)."""

from iwlab.backends.lab.control import run_command
from tests.helpers.raw_smpp import SmppHandset
from tests.helpers.sip_client import received_text


def command(lab, line: str) -> str:
    return lab.run(run_command(lab.lab, line))


def test_help_and_errors_are_plain_text(lab_factory):
    lab = lab_factory(devices="none")
    assert "state USER" in command(lab, "help")
    assert command(lab, "bogus").startswith("error: unknown command")
    assert command(lab, "state nobody").startswith("error: no user 'nobody'")
    assert command(lab, "state peter roaming=perhaps").startswith("error: roaming takes yes or no")
    assert command(lab, "threads sideways").startswith("error:")
    assert command(lab, 'send mary "unbalanced').startswith("error:")
    assert command(lab, "") == ""


def test_state_changes_the_route_and_says_why(lab_factory):
    lab = lab_factory(devices="mary")
    assert "Mary is registered to CPM -> CPM" in command(lab, "users")
    answer = command(lab, "state mary roaming=yes")     # a network without CPM: no CPM registration
    assert "registered=no" in answer and "Mary is roaming in a network without CPM" in answer
    assert lab.lab.device("mary").registered is False
    answer = command(lab, "state peter roaming=yes")
    assert "Peter is roaming in a network without CPM -> SMS via SMSC" in answer
    command(lab, "state peter roaming=no")
    # Peter gets a CPM app beside his handset: not CPM-capable at first, then capable.
    assert "Peter's device is not CPM-capable -> SMS via SMSC" in command(lab, "state peter registered=yes")
    assert "Peter is registered to CPM -> CPM" in command(lab, "state peter capable=yes")
    assert "Peter is not registered to CPM -> SMS via SMSC" in command(lab, "state peter registered=no")
    answer = command(lab, "state mary roaming=no registered=yes")
    assert "Mary is registered to CPM -> CPM" in answer


def test_throttle_threads_and_send(lab_factory):
    lab = lab_factory(devices="mary")
    peter = SmppHandset(lab.lab.endpoints()["smpp"], "15550201")
    try:
        assert command(lab, "throttle 2") == "SMSC throttles 1 submit_sm in 2"
        assert lab.lab.smsc.throttle_every == 2
        assert command(lab, "threads pool") == "SMS thread policy: pool"
        assert "Mary -> Peter: sent" in command(lab, "send mary peter hello from the console")
        pdu = peter.next_message()
        assert received_text(pdu) == "hello from the console"
        assert pdu.source_addr.decode().startswith("1555029")     # the pool policy took effect
    finally:
        peter.close()
