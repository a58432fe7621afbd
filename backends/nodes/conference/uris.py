"""The URIs a conference focus answers for (RFC 4353/4579): its factory and the groups it made.

`sip:conference-factory@<domain>` makes a group (RFC 5366: an INVITE with the list of invitees);
each group is `sip:group-<id>@<domain>`. A request from a focus says so with the `isfocus`
Contact parameter (RFC 3840/4579), which is how an invitee knows it is asked into a group.
"""
from __future__ import annotations

import secrets

from iwlab.backends.protocols import sip
from iwlab.backends.protocols.recipient_list import FACTORY_USER
from iwlab.backends.protocols.sip import SipParseError, SipRequest

GROUP_PREFIX = "group-"


def new_group_uri(domain: str) -> str:
    return f"sip:{GROUP_PREFIX}{secrets.token_hex(6)}@{domain}"


def is_focus_uri(uri: str, domain: str) -> bool:
    """The factory or one of the groups of the focus of `domain`."""
    try:
        parsed = sip.parse_uri(uri)
    except SipParseError:
        return False
    user = (parsed.user or "").lower()
    return parsed.scheme in ("sip", "sips") and parsed.host.lower() == domain.lower() and (
        user == FACTORY_USER or user.startswith(GROUP_PREFIX))


def is_factory(uri: str) -> bool:
    try:
        return (sip.parse_uri(uri).user or "").lower() == FACTORY_USER
    except SipParseError:
        return False


def from_focus(req: SipRequest) -> bool:
    """An invitation from a focus: its Contact carries `isfocus` (RFC 4579 5.2)."""
    contact = req.headers.get("Contact") or ""
    params = contact.split(">", 1)[1] if ">" in contact else contact
    return any(p.strip().lower().split("=", 1)[0] == "isfocus" for p in params.split(";")[1:])
