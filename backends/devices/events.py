"""What a simulated device tells its listeners: one small frozen value per thing that happened.

Listeners (the window's bridges, tests, scenarios) dispatch on the event's type, so a renamed or
new event is a visible change rather than a string nobody matches any more. Payloads are the
device's own records (a ChatMessage, an Sms, a MailItem ...): the event is frozen, the record it
points at is the device's live model, as before.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from iwlab.backends.devices.cpm_phone import ChatMessage
    from iwlab.backends.devices.cpm_sessions import ChatSession
    from iwlab.backends.devices.email_client import MailItem
    from iwlab.backends.devices.session_state import SessionState
    from iwlab.backends.devices.sms_handset import Sms
    from iwlab.backends.topology import User


@dataclass(frozen=True)
class DeviceEvent:
    """Base of every device event (for isinstance and for the listener type)."""


DeviceListener = Callable[[DeviceEvent], None]


# -- the CPM phone ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegistrationChanged(DeviceEvent):
    registered: bool


@dataclass(frozen=True)
class ConditionsChanged(DeviceEvent):
    """The trainer changed the user's conditions (registered, CPM-capable, roaming)."""
    user: User


@dataclass(frozen=True)
class MessageAdded(DeviceEvent):
    """A pager-mode message the phone sent or received."""
    message: ChatMessage


@dataclass(frozen=True)
class MessageStatusChanged(DeviceEvent):
    """A sent message's tick moved (sent, delivered, displayed, failed)."""
    message: ChatMessage


@dataclass(frozen=True)
class SessionChanged(DeviceEvent):
    """A chat session appeared or changed state; `state` is the state it changed to, as it was then."""
    session: ChatSession
    state: SessionState


@dataclass(frozen=True)
class SessionMessageAdded(DeviceEvent):
    """A message inside a chat session, sent ("out") or received ("in") over MSRP."""
    session: ChatSession
    direction: str
    text: str


# -- the SMS handset ------------------------------------------------------------------------------
@dataclass(frozen=True)
class BindStateChanged(DeviceEvent):
    """The handset's SMPP bind to the SMSC changed ("bound", "closed" ...)."""
    state: str


@dataclass(frozen=True)
class SmsReceived(DeviceEvent):
    sms: Sms


@dataclass(frozen=True)
class SmsSent(DeviceEvent):
    """An SMS the handset submitted; its status says "sent" or "failed: ..."."""
    sms: Sms


@dataclass(frozen=True)
class ReceiptReceived(DeviceEvent):
    """An SMSC delivery receipt (a deliver_sm PDU) reached the handset; sms: the sent SMS it
    reports on (its report updated), if the handset knows it."""
    pdu: Any
    sms: Any = None


# -- the email client -------------------------------------------------------------------------------
@dataclass(frozen=True)
class MailReceived(DeviceEvent):
    item: MailItem


@dataclass(frozen=True)
class MailSent(DeviceEvent):
    """A mail the client submitted; its status says "sent" or "failed: ..."."""
    item: MailItem


@dataclass(frozen=True)
class ReadReceiptSent(DeviceEvent):
    """Opening `item` answered its read-receipt request with an MDN."""
    item: MailItem


@dataclass(frozen=True)
class ReadReceiptFailed(DeviceEvent):
    """The MDN for `item` could not be sent; opening it again retries."""
    item: MailItem
    error: str
