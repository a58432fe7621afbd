"""Shared by the flow tests (moved from test_lab_core.py)."""
from iwlab.backends.protocols import smstext
from tests.helpers.raw_sip import RawSipClient, cpim_body

MARY = "sip:mary@cpm-a.lab"


PETER_TEL = "tel:+15550201"


def send_cpm_message(client: RawSipClient, text: str, to: str = PETER_TEL, conversation: str = "conv-1"):
    return client.request(
        "MESSAGE", to, from_uri=MARY, to_uri=to, content_type="message/cpim",
        body=cpim_body(MARY, to, text),
        extra=["P-Preferred-Service: urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg",
               f"Conversation-ID: {conversation}", f"Contribution-ID: {text.__hash__() & 0xffffff:x}"])


def received_text(pdu) -> str:
    udh, payload = smstext.split_udh(pdu.short_message, pdu.esm_class or 0)
    return smstext.decode_payload(pdu.data_coding or 0, payload)
