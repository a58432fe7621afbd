"""Technology selection on the wire (CPM-IOP-003/-005): the same "send to Peter"
takes CPM, then SMS, as Peter's conditions change; John is reached by email."""
import mailbox
from pathlib import Path

from iwlab.backends.lab.control import run_command
from iwlab.backends.protocols.sip import SipRequest
from tests.helpers.raw_sip import RawSipClient
from tests.helpers.raw_smpp import SmppHandset
from tests.helpers.sip_client import MARY, received_text, send_cpm_message
from tests.helpers.waiting import wait_until

PETER_CPM = "sip:+15550201@cpm-b.lab;user=phone"   # a REGISTER names a SIP AOR


def test_route_follows_peters_registration_and_roaming(lab_factory):
    lab = lab_factory(devices="none")
    endpoints = lab.lab.endpoints()
    mary = RawSipClient(endpoints["sip"]["cpm-a.lab"])
    peter_cpm = RawSipClient(endpoints["sip"]["cpm-b.lab"])      # Peter installs a CPM client
    peter_sms = SmppHandset(endpoints["smpp"], "15550201")
    try:
        assert mary.register(MARY, "cpm-a.lab").status == 200
        assert peter_cpm.register(PETER_CPM, "cpm-b.lab").status == 200

        call_id = send_cpm_message(mary, "over CPM")
        request = peter_cpm.receive(lambda m: isinstance(m, SipRequest) and m.method == "MESSAGE")
        assert b"over CPM" in request.body
        peter_cpm.answer(request)
        assert mary.response_to(call_id).status == 200          # from Peter's CPM client itself
        assert request.uri.startswith("sip:"), "the Request-URI is Peter's registered Contact"

        assert peter_cpm.register(PETER_CPM, "cpm-b.lab", expires=0).status == 200   # deregisters
        assert mary.response_to(send_cpm_message(mary, "over SMS")).status == 202
        assert received_text(peter_sms.next_message()) == "over SMS"

        assert peter_cpm.register(PETER_CPM, "cpm-b.lab").status == 200
        assert "roaming in a network without CPM -> SMS" in lab.run(run_command(lab.lab, "state peter roaming=yes"))
        assert mary.response_to(send_cpm_message(mary, "roaming")).status == 202
        assert received_text(peter_sms.next_message()) == "roaming"

        reasons = [e.note for e in lab.lab.trace.events() if "->" in e.note and "Peter" in e.note]
        assert any("Peter is registered to CPM -> CPM" in r for r in reasons)
        assert any("Peter is not registered to CPM -> SMS via SMSC" in r for r in reasons)
        assert any("Peter is roaming in a network without CPM -> SMS via SMSC" in r for r in reasons)
    finally:
        for client in (mary, peter_cpm):
            client.close()
        peter_sms.close()


def test_mary_to_john_takes_email(lab_factory):
    lab = lab_factory(devices="none")
    mary = RawSipClient(lab.lab.endpoints()["sip"]["cpm-a.lab"])
    try:
        assert mary.register(MARY, "cpm-a.lab").status == 200
        assert mary.response_to(send_cpm_message(mary, "by email", to="tel:+15550202")).status == 202
        maildir = Path(lab.lab.endpoints()["maildir"]) / "john@mail-b.lab"
        wait_until(lambda: maildir.exists() and len(mailbox.Maildir(maildir)) == 1, 10, "the mail in John's Maildir")
        assert len(mailbox.Maildir(maildir)) == 1
        assert any("John is not registered to CPM -> email via mail server" in e.note
                   for e in lab.lab.trace.events())
    finally:
        mary.close()


def test_options_for_a_user_shows_the_cpm_tags_only_while_a_cpm_client_is_registered(lab_factory):
    """Capability discovery (issue 17): Peter's home server answers for him, from his registration."""
    from iwlab.backends.protocols.sip import SipResponse
    from tests.helpers.raw_sip import RawSipClient
    lab = lab_factory(devices="none")
    endpoints = lab.lab.endpoints()
    mary = RawSipClient(endpoints["sip"]["cpm-a.lab"])
    try:
        assert mary.register("sip:mary@cpm-a.lab", "cpm-a.lab").status == 200

        def capabilities() -> SipResponse:
            call_id = mary.request("OPTIONS", "tel:+15550201", from_uri="sip:mary@cpm-a.lab", to_uri="tel:+15550201")
            return mary.response_to(call_id)
        before = capabilities()
        assert before.status == 200 and "icsi-ref" not in (before.headers.get("Contact") or "")
        peter_app = RawSipClient(endpoints["sip"]["cpm-b.lab"])
        assert peter_app.register("sip:+15550201@cpm-b.lab;user=phone", "cpm-b.lab").status == 200
        during = capabilities()
        assert "oma.cpm.msg" in (during.headers.get("Contact") or "")
        peter_app.close()
        wait_until(lambda: "icsi-ref" not in (capabilities().headers.get("Contact") or ""), 10,
                   "OPTIONS without CPM tags")   # the flow is gone: no CPM client
    finally:
        mary.close()


def test_marys_phone_asks_how_a_message_would_reach_a_contact(lab_factory):
    lab = lab_factory()
    mary = lab.lab.device("mary")
    assert lab.run(mary.reachability(lab.lab.user("peter"))) == "not CPM"
    from iwlab.backends.lab.control import run_command
    lab.run(run_command(lab.lab, "state peter capable=yes registered=yes"))   # a CPM app on his phone
    assert lab.run(mary.reachability(lab.lab.user("peter"))) == "CPM"
