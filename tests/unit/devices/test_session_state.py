"""The phone's chat-session states: the transition table, and what the phone shows for each."""
import pytest

from iwlab.backends.devices.cpm_sessions import ChatSession
from iwlab.backends.devices.session_state import TRANSITIONS, IllegalTransition, SessionState


def session(direction: str = "out") -> ChatSession:
    return ChatSession("call-1", direction, "tel:+15550201", "Peter")


def test_a_session_starts_inviting_or_incoming_by_its_direction():
    assert session("out").state is SessionState.INVITING
    assert session("in").state is SessionState.INCOMING


def test_every_state_has_a_row_and_finished_states_go_nowhere():
    assert set(TRANSITIONS) == set(SessionState)
    for state in SessionState:
        assert state.is_open == bool(TRANSITIONS[state])


def test_what_the_phone_shows_is_unchanged():
    s = session()
    s.move_to(SessionState.RINGING, "180 Ringing")
    assert s.describe() == "Session with Peter: ringing (180 Ringing)"
    s.move_to(SessionState.ESTABLISHED, "200 OK")
    assert s.describe() == "Session with Peter: established — MSRP"
    s.move_to(SessionState.ENDED, "you ended the session")
    assert s.describe() == "Session with Peter: ended (you ended the session)"
    assert not s.is_open


@pytest.mark.parametrize("path", [
    [SessionState.ENDED],                                  # never answered, never ended
    [SessionState.CANCELLED, SessionState.ESTABLISHED],    # a 200 after our CANCEL does not revive it
    [SessionState.ESTABLISHED, SessionState.CANCELLED],
    [SessionState.DECLINED, SessionState.FAILED],
    [SessionState.RINGING, SessionState.INVITING],
    [SessionState.RINGING, SessionState.RINGING],
])
def test_an_illegal_change_is_refused_and_leaves_the_session_as_it_was(path):
    s = session()
    *legal, illegal = path
    for state in legal:
        s.move_to(state, "ok")
    before = (s.state, s.reason)
    with pytest.raises(IllegalTransition):
        s.move_to(illegal, "no")
    assert (s.state, s.reason) == before


def test_an_incoming_session_cannot_ring():
    with pytest.raises(IllegalTransition):
        session("in").move_to(SessionState.RINGING)
