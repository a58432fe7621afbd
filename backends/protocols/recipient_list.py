"""An INVITE with a recipient list (RFC 5366): the body that asks a conference factory for a group
chat, sans-I/O. multipart/mixed (multipart.py) holding the SDP offer and, with
`Content-Disposition: recipient-list`, an `application/resource-lists+xml` list (resource_lists.py).

The same shape carries the member list the focus sends each invitee (RCS group chat does so), so
the IWF can tell a legacy member who is in the group.
"""
from __future__ import annotations

from dataclasses import dataclass

from iwlab.backends.protocols.multipart import MultipartError, Part, build_multipart, parse_multipart
from iwlab.backends.protocols.refusal import BodyRefused
from iwlab.backends.protocols.resource_lists import Entry, ResourceListError, build_resource_list, parse_resource_list

OPTION_TAG = "recipient-list-invite"
FACTORY_USER = "conference-factory"     # sip:conference-factory@<domain>: where a group chat is asked for
RESOURCE_LISTS = "application/resource-lists+xml"
DISPOSITION = "recipient-list"
UNDERSTOOD = ("application/sdp", RESOURCE_LISTS)


def factory_uri(domain: str) -> str:
    return f"sip:{FACTORY_USER}@{domain}"


class RecipientListError(BodyRefused):
    """``status``: the SIP answer (400, 403, 413, 415; 488 is the SDP's, sdp.SdpError)."""


@dataclass(frozen=True)
class RecipientListBody:
    sdp: bytes
    recipients: list[Entry]


def parse_body(content_type: str | None, body: bytes) -> RecipientListBody:
    """The SDP offer and the recipients of an INVITE body; RecipientListError when it has no list,
    no SDP, two of either, or a part it must understand and does not (RFC 3261 20.11)."""
    try:
        parts = parse_multipart(content_type or "", body)
    except MultipartError as exc:
        raise RecipientListError(exc.reason, exc.status) from None
    sdp_parts = [p for p in parts if p.media_type == "application/sdp"]
    lists = [p for p in parts if p.disposition_type == DISPOSITION]
    for part in parts:
        if part in lists and part.media_type != RESOURCE_LISTS:
            raise RecipientListError(f"a recipient-list part must be {RESOURCE_LISTS}", 415)
        if part.media_type not in UNDERSTOOD and part.handling_required:
            raise RecipientListError(f"body part {part.media_type[:40]} not understood", 415)
    if len(sdp_parts) != 1:
        raise RecipientListError("the INVITE needs exactly one SDP offer")
    if len(lists) != 1:
        raise RecipientListError(f"the INVITE needs exactly one {RESOURCE_LISTS} part "
                                 f"with Content-Disposition: {DISPOSITION}")
    try:
        recipients = parse_resource_list(lists[0].body)
    except ResourceListError as exc:
        raise RecipientListError(exc.reason, exc.status) from None
    return RecipientListBody(sdp_parts[0].body, recipients)


def build_body(sdp: bytes, recipients: list[Entry]) -> tuple[str, bytes]:
    """(Content-Type, body) of an INVITE with an SDP offer and a recipient list."""
    return build_multipart([Part("application/sdp", sdp),
                            Part(RESOURCE_LISTS, build_resource_list(recipients), f"{DISPOSITION};handling=required")])
