"""Issue 15, hostile input: what an outside client sends that the lab must refuse, at the edge,
with the protocol's own error, so nothing invalid travels on to a leg where it fails silently.

Real clients on real sockets: a raw SIP client as Mary, smpplib clients as handsets, smtplib
and raw sockets for SMTP.
"""
import queue

import pytest
import smpplib.consts as C

from tests.helpers.raw_sip import RawSipClient
from tests.helpers.raw_smpp import SmppHandset
from tests.helpers.sip_client import MARY
from tests.helpers.smpp_client import encoded, next_message, peter_submits


@pytest.fixture
def mary_and_peter(lab_factory):
    lab = lab_factory(devices="none")
    endpoints = lab.lab.endpoints()
    mary = RawSipClient(endpoints["sip"]["cpm-a.lab"])
    assert mary.register(MARY, "cpm-a.lab").status == 200
    peter = SmppHandset(endpoints["smpp"], "15550201")
    yield lab, mary, peter
    mary.close()
    peter.close()


def submit_status(handset: SmppHandset, **fields) -> int:
    params = {"source_addr_ton": 1, "source_addr": "15550201", "dest_addr_ton": 1, "destination_addr": "15550101",
              "short_message": encoded("hi"), **fields}
    handset.client.send_message(**params)
    return handset.responses.get(timeout=10).status


# -- finding 2: addresses are checked where they enter --------------------------------------------

@pytest.mark.parametrize("fields, status", [
    ({"source_addr": "15550201\r\nX-Evil: 1"}, C.SMPP_ESME_RINVSRCADR),
    ({"source_addr": "1555\x070201"}, C.SMPP_ESME_RINVSRCADR),
    ({"source_addr": "peter"}, C.SMPP_ESME_RINVSRCADR),                      # TON international: digits only
    ({"destination_addr": "15550101\n"}, C.SMPP_ESME_RINVDSTADR),
    ({"destination_addr": "1555010x"}, C.SMPP_ESME_RINVDSTADR),
], ids=["crlf-source", "bell-source", "letters-international", "lf-destination", "letter-destination"])
def test_control_characters_in_addresses_are_refused_at_the_smsc(mary_and_peter, fields, status):
    lab, mary, peter = mary_and_peter
    assert submit_status(peter, **fields) == status
    peter_submits(peter, encoded("the real one"))           # the bind goes on working
    request = next_message(mary)                            # and the next message is the good one
    assert b"the real one" in request.body
    with pytest.raises(queue.Empty):
        peter.received.get(timeout=0.3)                     # no receipt or bounce for the refused one
