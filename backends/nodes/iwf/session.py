"""One interworked chat session: its state machine, its SIP dialog, and the words that drive it.

States move only along TRANSITIONS, through IwfSession.move: a session that has ended can
not come back to life because an answer or a timer arrived late.

An invitee's answer is the first whole accept or decline word, surrounding text tolerated (the
invitation asked for an answer). The end and request keywords count only as the whole text, the
keyword alone as the topology words it (any case, spaces and a closing "." "!" "?" aside): "chat
tomorrow about the budget?" is a message for Mary and "end of story" a line in the chat; nothing
a user writes is swallowed as a command.
"""
from __future__ import annotations

import asyncio
import itertools
import re
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from iwlab.backends.protocols import sdp, sip
from iwlab.backends.protocols.sip import SipRequest, SipResponse
from iwlab.backends.topology import IwfAccount, User
from iwlab.backends.transports.msrp import MsrpSession
from iwlab.backends.transports.sip import SipConnection


class SessionState(StrEnum):
    RINGING = "ringing"            # invited, no answer yet
    ESTABLISHED = "established"
    DECLINED = "declined"
    EXPIRED = "expired"            # no answer in time
    CANCELLED = "cancelled"        # withdrawn before the answer
    FAILED = "failed"
    ENDED = "ended"


# A BYE may end a session that is still ringing (the IWF has always taken one): RINGING -> ENDED.
TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.RINGING: frozenset({SessionState.ESTABLISHED, SessionState.DECLINED, SessionState.EXPIRED,
                                     SessionState.CANCELLED, SessionState.FAILED, SessionState.ENDED}),
    SessionState.ESTABLISHED: frozenset({SessionState.ENDED, SessionState.FAILED}),
    SessionState.DECLINED: frozenset(),
    SessionState.EXPIRED: frozenset(),
    SessionState.CANCELLED: frozenset(),
    SessionState.FAILED: frozenset(),
    SessionState.ENDED: frozenset(),
}


class IllegalTransition(ValueError):
    pass


class Direction(Enum):
    TO_LEGACY = "to-legacy"        # 5.8.6: a CPM user invites a legacy user
    FROM_LEGACY = "from-legacy"    # 5.9.6: a legacy user asks a CPM user


@dataclass
class IwfSession:
    call_id: str
    direction: Direction
    cpm_user: User | None          # the CPM side's person (inviter or invitee)
    cpm_uri: str
    legacy_number: str             # the SMS user's MSISDN digits ("" for an email user)
    legacy_name: str
    sms_source: str                # the number the SMS user sees (and answers to)
    legacy_email: str = ""         # the email user's address: set means the legacy leg is email
    email_thread: str = ""         # the Message-ID every session email answers (In-Reply-To)
    email_subject: str = ""        # the thread's subject, "Re:"-prefixed on the later emails
    conversation_id: str = ""
    local_tag: str = field(default_factory=sip.new_tag)
    remote_tag: str = ""
    local_uri: str = ""            # our From (UAC) / To (UAS) URI in the dialog
    remote_target: str = ""        # where in-dialog requests go (the peer's Contact)
    route_set: list[str] = field(default_factory=list)
    invite: SipRequest | None = None       # 5.8.6: the INVITE as it reached us; 5.9.6: the one we sent
    invite_conn: SipConnection | None = None
    offer: sdp.MsrpSdp | None = None
    msrp: MsrpSession | None = None
    state: SessionState = SessionState.RINGING
    timer: asyncio.TimerHandle | None = None
    cseq: itertools.count = field(default_factory=lambda: itertools.count(1))

    def move(self, state: SessionState) -> None:
        """The one way a session changes state; an illegal step raises and changes nothing."""
        if state not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"session {self.call_id}: {self.state.value} -> {state.value}")
        self.state = state

    @property
    def cpm_name(self) -> str:
        return self.cpm_user.name if self.cpm_user else self.cpm_uri

    @property
    def open(self) -> bool:
        return self.state in (SessionState.RINGING, SessionState.ESTABLISHED)

    @property
    def ringing(self) -> bool:
        return self.state is SessionState.RINGING

    @property
    def via(self) -> str:
        return "email" if self.legacy_email else "SMS"

    def in_dialog_request(self, method: str, via: tuple[str, int], cseq: int | None = None) -> SipRequest:
        return sip.make_request(
            method, self.remote_target or self.cpm_uri, via=via,
            routes=self.route_set, from_=f"<{self.local_uri}>;tag={self.local_tag}",
            to=f"<{self.cpm_uri}>;tag={self.remote_tag}", call_id=self.call_id,
            cseq=cseq if cseq is not None else next(self.cseq))

    def learn_dialog(self, response: SipResponse, fallback_target: str) -> None:
        """Our INVITE's 2xx sets the dialog: the peer's tag, its Contact, the route set (reversed, UAC)."""
        self.remote_tag = sip.to_tag(response)
        self.remote_target = sip.uri_of(response.headers.get("Contact")) or fallback_target
        self.route_set = list(reversed(response.headers.get_all("Record-Route")))


class Reply(Enum):
    ACCEPT = "accept"
    DECLINE = "decline"


@dataclass(frozen=True)
class SessionRules:
    """The operator's session words and patience (topology: the IWF account)."""
    accept_word: str
    decline_word: str
    end_word: str
    request_word: str
    timeout: float

    @classmethod
    def of(cls, account: IwfAccount) -> "SessionRules":
        return cls(account.session_accept, account.session_decline, account.session_end,
                   account.session_request, account.session_timeout_seconds)

    def reply(self, text: str) -> Reply | None:
        """An invitee's answer: whichever keyword comes first; None when the text has neither."""
        yes, no = keyword_in(text, self.accept_word), keyword_in(text, self.decline_word)
        if yes < 0 and no < 0:
            return None
        return Reply.DECLINE if no >= 0 and (yes < 0 or no < yes) else Reply.ACCEPT

    def is_end(self, text: str) -> bool:
        return is_keyword_alone(text, self.end_word)

    def is_request(self, text: str) -> bool:
        return is_keyword_alone(text, self.request_word)


def keyword_in(text: str, keyword: str) -> int:
    """Where the keyword stands as a whole word (case-insensitive), or -1."""
    match = re.search(rf"(?<![^\W_]){re.escape(keyword)}(?![^\W_])", text, re.IGNORECASE)
    return match.start() if match else -1


def is_keyword_alone(text: str, keyword: str) -> bool:
    """The whole text is the keyword (any case; surrounding spaces and a closing . ! ? allowed)."""
    return re.fullmatch(rf"\s*{re.escape(keyword)}\s*[.!?]*\s*", text, re.IGNORECASE) is not None


def reply_subject(subject: str, fallback: str) -> str:
    subject = " ".join((subject or "").split()) or fallback
    return subject if re.match(r"(?i)re\s*:", subject) else f"Re: {subject}"
