"""Which technology reaches a recipient, and why, in words.

One decision in one place (CPM-IOP-003 / -005): the sender never chooses the
technology; the terminating domain does, from the recipient's live CPM state
and legacy identities. Data in, decision out: no sockets here.
"""
from __future__ import annotations

from dataclasses import dataclass

from iwlab.backends.topology import User

CPM, STORE, SMS, EMAIL, NONE = "cpm", "store", "sms", "email", "none"


@dataclass(frozen=True)
class Route:
    technology: str      # cpm | store (CPM, deferred until registration) | sms | email | none
    reason: str          # shown in the trace, the ladder and the inspector


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
