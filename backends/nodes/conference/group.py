"""One group chat at the focus: its members, and the relay of their messages (an MSRP switch).

Every member has a SIP dialog with the focus and an MSRP session of their own; what one member
sends goes to every other joined member, wrapped in CPIM with the author as From (so an IWF can
say who wrote it), in the order it came: one MSRP session per member keeps each author's order.
Joins and leaves are told the same way, from the group's own URI (the conference event package,
RFC 4575, is not done: a member learns of changes from these notices).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import StrEnum

from iwlab.backends.protocols import sip
from iwlab.backends.protocols.cpim import CpimMessage
from iwlab.backends.protocols.resource_lists import Entry
from iwlab.backends.protocols.sip import SipRequest, SipResponse
from iwlab.backends.transports.msrp import MsrpSession
from iwlab.backends.transports.sip import SipConnection


class MemberState(StrEnum):
    INVITED = "invited"
    JOINED = "joined"
    DECLINED = "declined"       # the invitation failed or was refused
    LEFT = "left"


@dataclass
class Member:
    uri: str
    name: str
    call_id: str
    is_owner: bool = False           # who made the group: her leaving ends it
    state: MemberState = MemberState.INVITED
    msrp: MsrpSession | None = None
    local_tag: str = field(default_factory=sip.new_tag)
    remote_tag: str = ""
    remote_target: str = ""          # the member's Contact: in-dialog requests go there
    route_set: list[str] = field(default_factory=list)
    invite: SipRequest | None = None     # the owner's INVITE as it reached us (we are its UAS)
    invite_conn: SipConnection | None = None
    cseq: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def joined(self) -> bool:
        return self.state is MemberState.JOINED

    def learn_dialog(self, response: SipResponse) -> None:
        """Our INVITE's 2xx sets the dialog (RFC 3261 12.1.2: the route set reversed)."""
        self.remote_tag = sip.to_tag(response)
        self.remote_target = sip.uri_of(response.headers.get("Contact")) or self.uri
        self.route_set = list(reversed(response.headers.get_all("Record-Route")))


@dataclass
class Group:
    uri: str
    name: str                        # "Mary's group"
    conversation_id: str
    members: list[Member] = field(default_factory=list)
    ended: bool = False

    def roster(self) -> list[Entry]:
        """Everyone asked in, for the invitations' resource list (bcc is not used here)."""
        return [Entry(m.uri, m.name) for m in self.members if m.state is not MemberState.DECLINED]

    def joined(self) -> list[Member]:
        return [m for m in self.members if m.joined]

    def relay(self, author: Member, text: str) -> int:
        """A message from `author` to every other joined member; how many it went to."""
        if self.ended or not author.joined:
            return 0
        return self._send(text, sender=sip.name_addr(author.uri, author.name), skip=author)

    def notice(self, text: str, skip: Member | None = None) -> None:
        """What the group says itself (X joined, Y left, the end), from its own URI."""
        self._send(text, sender=sip.name_addr(self.uri, self.name), skip=skip)

    def _send(self, text: str, *, sender: str, skip: Member | None) -> int:
        count = 0
        for member in self.joined():
            if member is skip or member.msrp is None or member.msrp.closed:
                continue
            envelope = CpimMessage(sender=sender, recipient=sip.name_addr(member.uri, member.name),
                                   body=text.encode("utf-8"), disposition=())
            member.msrp.send_bytes(envelope.to_bytes(), "message/cpim")
            count += 1
        return count
