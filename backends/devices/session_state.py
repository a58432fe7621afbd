"""The states of a chat session on the simulated CPM phone, and which changes are allowed.

A session starts INVITING (we invited) or INCOMING (we were invited), is answered once
(established, declined, failed or cancelled) and, if established, ends. Keeping the table here
means a late or duplicated event (a 200 after a CANCEL, a BYE for a session never answered)
cannot quietly move a finished session back to life: ChatSession.move_to refuses it.
"""
from __future__ import annotations

from enum import Enum


class SessionState(Enum):
    """The value is the word the phone shows ("Session with Peter: ringing")."""
    INVITING = "inviting"          # our INVITE is out
    RINGING = "ringing"            # ... and 180 Ringing came back
    INCOMING = "incoming"          # we were invited and have not answered
    ESTABLISHED = "established"    # answered, MSRP up
    DECLINED = "declined"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ENDED = "ended"

    @property
    def is_open(self) -> bool:
        """Still to be answered, or established: not finished."""
        return self in _OPEN

    def may_become(self, other: SessionState) -> bool:
        return other in TRANSITIONS[self]


_OPEN = frozenset({SessionState.INVITING, SessionState.RINGING, SessionState.INCOMING, SessionState.ESTABLISHED})
_ANSWERED = frozenset({SessionState.ESTABLISHED, SessionState.DECLINED, SessionState.FAILED, SessionState.CANCELLED})

TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.INVITING: _ANSWERED | {SessionState.RINGING},
    SessionState.RINGING: _ANSWERED,
    SessionState.INCOMING: _ANSWERED,
    SessionState.ESTABLISHED: frozenset({SessionState.ENDED}),
    SessionState.DECLINED: frozenset(),
    SessionState.FAILED: frozenset(),
    SessionState.CANCELLED: frozenset(),
    SessionState.ENDED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A change the table does not allow (a bug in whoever asked for it)."""

    def __init__(self, old: SessionState, new: SessionState) -> None:
        super().__init__(f"a chat session cannot go from {old.value} to {new.value}")
        self.old, self.new = old, new
