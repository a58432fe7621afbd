"""Which technology reaches a recipient, and why, in words.

One decision in one place (CPM-IOP-003 / -005): the sender never chooses the
technology; the terminating domain does, from the recipient's live CPM state
and legacy identities. Data in, decision out: no sockets here.

The decision travels with a request the CPM server hands to its interworking
function, in the lab's own header (`Route.to_header` / `Route.from_header`),
so the IWF and the trace read the decision rather than make it again.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from iwlab.backends.topology import User


class Technology(StrEnum):
    CPM = "cpm"          # to the user's registered CPM device
    STORE = "store"      # CPM, deferred until the user registers
    SMS = "sms"          # through the IWF to the SMSC
    EMAIL = "email"      # through the IWF to the mail server
    NONE = "none"        # nothing can reach the user now

    @property
    def interworked(self) -> bool:
        return self in (Technology.SMS, Technology.EMAIL)


CPM, STORE, SMS, EMAIL, NONE = Technology.CPM, Technology.STORE, Technology.SMS, Technology.EMAIL, Technology.NONE
_HEADER_RE = re.compile(r'^\s*(\w+)\s*(?:;\s*reason="((?:[^"\\]|\\.)*)")?\s*$')


@dataclass(frozen=True)
class Route:
    technology: Technology
    reason: str          # shown in the trace, the ladder and the inspector

    HEADER = "P-Iwlab-Route"   # the terminating domain's decision, for its IWF and the trace

    def to_header(self) -> str:
        reason = self.reason.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
        return f'{self.technology.value};reason="{reason}"'

    @classmethod
    def from_header(cls, value: str | None) -> "Route | None":
        """The decision a request carries, or None when it carries none (or an unreadable one)."""
        match = _HEADER_RE.match(value or "")
        if not match:
            return None
        try:
            technology = Technology(match.group(1).lower())
        except ValueError:
            return None
        reason = re.sub(r"\\(.)", r"\1", match.group(2) or "")
        return cls(technology, reason)


def decide_route(user: User, *, registered: bool, cpm_capable: bool, iwf_available: bool) -> Route:
    """registered: the registrar holds a live binding for the user;
    cpm_capable: that binding's Contact carries the CPM feature tag (or, when
    not registered, the device is known to be CPM-capable)."""
    name = user.name
    if registered and cpm_capable and not user.roaming_without_cpm:
        return Route(CPM, f"{name} is registered to CPM -> CPM")
    if not registered and user.device == "cpm" and cpm_capable and not user.roaming_without_cpm:
        # A CPM user who is merely offline keeps her CPM service: store and forward.
        return Route(STORE, f"{name} is a CPM user, not registered now -> stored until {name} registers")
    if user.roaming_without_cpm:
        why = f"{name} is roaming in a network without CPM"
    elif not registered:
        why = f"{name} is not registered to CPM"
    else:
        why = f"{name}'s device is not CPM-capable"
    if not iwf_available:
        return Route(NONE, f"{why} and no interworking function serves {name}")
    # An SMS-only or email-only device is reached by its own service first.
    preference = (EMAIL, SMS) if user.device == "email" else (SMS, EMAIL)
    for technology in preference:
        if technology == SMS and user.tel:
            return Route(SMS, f"{why} -> SMS via SMSC")
        if technology == EMAIL and user.email:
            return Route(EMAIL, f"{why} -> email via mail server")
    return Route(NONE, f"{why} and has no SMS or email identity")
