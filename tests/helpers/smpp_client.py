"""Shared by the flow tests (moved from test_legacy_to_cpm.py)."""
import smpplib.consts

from iwlab.backends.protocols import smstext
from iwlab.backends.protocols.cpim import parse_cpim
from iwlab.backends.protocols.sip import SipRequest
from tests.helpers.raw_sip import RawSipClient
from tests.helpers.raw_smpp import SmppHandset


def is_message(m) -> bool:
    return isinstance(m, SipRequest) and m.method == "MESSAGE"


def next_message(mary: RawSipClient, *, imdn: bool = False) -> SipRequest:
    """The next MESSAGE for Mary (answered 200, as her phone would); IMDNs or chat as asked."""
    while True:
        request = mary.receive(is_message)
        mary.answer(request)
        if parse_cpim(request.body).is_imdn == imdn:
            return request


def peter_submits(peter: SmppHandset, text_or_parts, *, to: str = "15550101", esm_class: int = 0,
                  data_coding: int = 0, **more) -> list[str]:
    """Peter's submit_sm for each part (more: registered_delivery, validity_period ...); the
    message ids the SMSC's submit_sm_resp gave."""
    parts = text_or_parts if isinstance(text_or_parts, list) else [text_or_parts]
    ids = []
    for short_message in parts:
        peter.client.send_message(source_addr_ton=1, source_addr="15550201", dest_addr_ton=1,
                                  destination_addr=to, esm_class=esm_class, data_coding=data_coding,
                                  short_message=short_message, **more)
        response = peter.responses.get(timeout=10)
        assert response.status == smpplib.consts.SMPP_ESME_ROK
        ids.append(response.message_id.decode())
    return ids


def encoded(text: str) -> bytes:
    [part] = smstext.encode(text, ref=1)
    return part.short_message()
