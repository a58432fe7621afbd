"""GSMA RCC.07 message revocation: the revoke request and the client's revoke response.

RCC.07 (Rich Communication Suite - Advanced Communications Services and Client Specification,
chat message revocation, "+g.gsma.rcs.msgrevoke") lets the messaging server take back a chat
message the recipient's client has not confirmed delivered, so it can go by SMS instead
(network fallback): the server sends a pager-mode SIP MESSAGE to the recipient whose CPIM
envelope carries an `application/vnd.gsma.rcsrevoke+xml` body naming the message; the client
answers the SIP MESSAGE (200) and then sends its revoke response, the same content type, in a
MESSAGE of its own: "success" (the message is gone from the client, never shown) or "failed"
(it was already delivered or displayed; the server must not send it again another way).

What is taken from the real format: the content type `application/vnd.gsma.rcsrevoke+xml`,
carried wrapped in CPIM in pager mode (so GSMA UP stacks treat it: Ecrio's CPIM module
`CPIMContentType_MessageRevoke`, Juphoon's "rcsrevoke+xml wrapt by cpim", Apple's
"Using pager for Revoke message"), the XML namespace `urn:gsma:params:xml:ns:rcs:rcs:rcsrevoke`
(Samsung's `STR_UP_URN_REVOKE`), the feature tag, the flow (revoke request, 200, revoke
response "success"/"failed", 200), and the message named by its imdn.Message-ID.
What is the lab's reading: the element names. The schema text of RCC.07 was not at hand when this
was written; the elements below (`<revoke>` / `<revoke-response>`, `<Message-ID>`, `<result>`)
follow RCC.07's naming of the IMDN identity and are the one place to change if a real client
spells them otherwise.

    <?xml version="1.0" encoding="UTF-8"?>
    <revoke xmlns="urn:gsma:params:xml:ns:rcs:rcs:rcsrevoke"><Message-ID>k3l1</Message-ID></revoke>

    <revoke-response xmlns="urn:gsma:params:xml:ns:rcs:rcs:rcsrevoke">
      <Message-ID>k3l1</Message-ID><result>success</result></revoke-response>

Sans-I/O: objects to bytes and back; what is not a revoke body raises RevokeError.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from iwlab.backends.protocols.cpim import CpimMessage, media_type

CONTENT_TYPE = "application/vnd.gsma.rcsrevoke+xml"
NAMESPACE = "urn:gsma:params:xml:ns:rcs:rcs:rcsrevoke"
FEATURE_TAG = "+g.gsma.rcs.msgrevoke"
RESULTS = ("success", "failed")
MAX_ID = 256          # an imdn.Message-ID is short; a longer one is no message of ours

_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")   # XML 1.0 Char


class RevokeError(ValueError):
    """Not a usable revoke request or response; the text says why."""


@dataclass(frozen=True)
class RevokeRequest:
    message_id: str       # the imdn.Message-ID of the message taken back


@dataclass(frozen=True)
class RevokeResponse:
    message_id: str
    result: str           # "success": revoked; "failed": the client had it already

    @property
    def revoked(self) -> bool:
        return self.result == "success"


Revoke = RevokeRequest | RevokeResponse


def is_revoke(content_type: str | None) -> bool:
    return media_type(content_type) == CONTENT_TYPE


def build_revoke(revoke: Revoke) -> bytes:
    """The XML body; ValueError for what it cannot carry (an empty or over-long id, a result
    that is neither success nor failed, characters XML cannot hold)."""
    _check_id(revoke.message_id, ValueError)
    root = ET.Element("revoke" if isinstance(revoke, RevokeRequest) else "revoke-response", xmlns=NAMESPACE)
    ET.SubElement(root, "Message-ID").text = revoke.message_id
    if isinstance(revoke, RevokeResponse):
        if revoke.result not in RESULTS:
            raise ValueError(f"revoke result {revoke.result[:20]!r} is not one of {RESULTS}")
        ET.SubElement(root, "result").text = revoke.result
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")


def parse_revoke(data: bytes) -> Revoke:
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, LookupError, ValueError) as exc:
        raise RevokeError(f"revoke body is not XML: {exc}") from None
    names = {f"{{{NAMESPACE}}}revoke": RevokeRequest, f"{{{NAMESPACE}}}revoke-response": RevokeResponse}
    kind = names.get(root.tag)
    if kind is None:
        raise RevokeError(f"not a revoke body: root element {root.tag[:80]!r}")

    def text(tag: str) -> str:
        found = root.findall(f"{{{NAMESPACE}}}{tag}")
        if len(found) != 1:
            raise RevokeError(f"a revoke body needs exactly one <{tag}> ({len(found)} found)")
        return (found[0].text or "").strip()

    message_id = text("Message-ID")
    _check_id(message_id, RevokeError)
    if kind is RevokeRequest:
        return RevokeRequest(message_id)
    result = text("result")
    if result not in RESULTS:
        raise RevokeError(f"revoke result {result[:20]!r} is not one of {RESULTS}")
    return RevokeResponse(message_id, result)


def revoke_message(revoke: Revoke, *, sender: str, recipient: str) -> CpimMessage:
    """The CPIM envelope a revoke travels in (pager mode); it asks for no notification."""
    return CpimMessage(sender=sender, recipient=recipient, body=build_revoke(revoke), content_type=CONTENT_TYPE,
                       disposition=())


def _check_id(message_id: str, error: type[ValueError]) -> None:
    if not message_id or len(message_id) > MAX_ID or message_id != message_id.strip() \
            or _NOT_XML_CHAR.search(message_id):
        raise error(f"unusable revoke Message-ID {message_id[:40]!r}")
