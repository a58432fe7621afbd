"""The IWF's thread map: which CPM conversation a legacy reply belongs to.

SMS carries no thread id, so the IWF remembers what it sent (seed 5.9,
message-thread management) under one of two policies, chosen per operator:

- "last": a reply belongs to the most recent conversation between that CPM
  user and that legacy peer, if it is younger than the expiry;
- "pool": each open conversation with a peer is sent from its own number of
  a pool, so the number a reply is addressed to names the thread.

Email has real ids (Message-ID / In-Reply-To / References); they are kept in
the same map by id. Sans-I/O: data in, data out, a clock you can pass in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from iwlab.backends import clock as lab_clock
from iwlab.backends.recent import Recent
from iwlab.backends.topology import THREAD_POLICIES

REMEMBERED_IDS = 10_000   # email ids a reply is still threaded by (the newest; older replies start a conversation)


@dataclass(frozen=True)
class ThreadRef:
    cpm_uri: str              # the CPM user's identity (who the reply goes to)
    conversation_id: str
    contribution_id: str      # the message being answered (InReplyTo-Contribution-ID)
    at: float


class ThreadMap:
    def __init__(self, policy: str = "last", *, expiry: float = 24 * 3600.0, pool: list[str] | None = None,
                 clock: Callable[[], float] = lab_clock.monotonic) -> None:
        if policy not in THREAD_POLICIES:
            raise ValueError(f"thread policy must be one of {THREAD_POLICIES}, not {policy!r}")
        if policy == "pool" and not pool:
            raise ValueError("the 'pool' thread policy needs a number pool")
        self.policy = policy
        self.expiry = expiry
        self.pool = [number.lstrip("+") for number in (pool or [])]
        self._clock = clock
        self._last: dict[tuple[str, str], ThreadRef] = {}       # (legacy peer, cpm uri) -> newest
        self._by_number: dict[tuple[str, str], ThreadRef] = {}  # (legacy peer, pool number) -> thread
        self._by_id: Recent[str, ThreadRef] = Recent(REMEMBERED_IDS)   # email Message-ID -> thread, the newest
        self._reserved: set[tuple[str, str]] = set()            # (legacy peer, pool number) a group chat holds

    def set_policy(self, policy: str) -> None:
        """Switch at run time; what either policy remembered stays usable."""
        if policy not in THREAD_POLICIES:
            raise ValueError(f"thread policy must be one of {THREAD_POLICIES}, not {policy!r}")
        if policy == "pool" and not self.pool:
            raise ValueError("the 'pool' thread policy needs a number pool")
        self.policy = policy

    # -- SMS -------------------------------------------------------------------------
    def outbound_sms(self, *, cpm_uri: str, cpm_number: str, peer: str, conversation_id: str,
                     contribution_id: str) -> str:
        """Remember a message sent to a legacy peer; returns the number to send it from."""
        ref = ThreadRef(cpm_uri, conversation_id, contribution_id, self._clock())
        peer = peer.lstrip("+")
        self._last[(peer, cpm_uri)] = ref
        if self.policy == "last":
            return cpm_number.lstrip("+")
        number = self._pool_number(peer, conversation_id)
        self._by_number[(peer, number)] = ref
        return number

    def _pool_number(self, peer: str, conversation_id: str) -> str:
        in_use = {number: ref for (p, number), ref in self._by_number.items() if p == peer}
        for number, ref in in_use.items():
            if ref.conversation_id == conversation_id:
                return number                       # the thread keeps its number
        free = [number for number in self.pool if number not in in_use and (peer, number) not in self._reserved]
        if free:
            return free[0]
        # Every number is taken with this peer: reuse the one idle the longest (never a group's).
        reusable = [number for number in in_use if (peer, number) not in self._reserved]
        return min(reusable, key=lambda number: in_use[number].at) if reusable else self.pool[0]

    def reserve(self, peer: str, number: str) -> None:
        """A group chat holds this pool number for this peer (his texts to it are the group's):
        no conversation is given it until it is released."""
        self._reserved.add((peer.lstrip("+"), number.lstrip("+")))

    def release(self, peer: str, number: str) -> None:
        self._reserved.discard((peer.lstrip("+"), number.lstrip("+")))

    def is_reserved(self, peer: str, number: str) -> bool:
        return (peer.lstrip("+"), number.lstrip("+")) in self._reserved

    def inbound_sms(self, *, peer: str, dest_number: str, cpm_uri: str | None) -> ThreadRef | None:
        """The thread an SMS from peer to dest_number answers, or None (a new conversation).

        cpm_uri: the CPM user dest_number belongs to, when it is a user's own number.
        """
        peer, dest = peer.lstrip("+"), dest_number.lstrip("+")
        now = self._clock()
        if dest in self.pool:
            ref = self._by_number.get((peer, dest))
        elif cpm_uri:
            ref = self._last.get((peer, cpm_uri))
        else:
            ref = None
        if ref is None or now - ref.at > self.expiry:
            return None
        return ref

    def is_pool_number(self, number: str) -> bool:
        return number.lstrip("+") in self.pool

    def pool_owner(self, peer: str, number: str) -> ThreadRef | None:
        return self._by_number.get((peer.lstrip("+"), number.lstrip("+")))

    # -- email and anything with real ids ------------------------------------------------------
    def remember_id(self, message_id: str, *, cpm_uri: str, conversation_id: str, contribution_id: str) -> None:
        self._by_id[message_id.strip("<>")] = ThreadRef(cpm_uri, conversation_id, contribution_id, self._clock())

    def find_by_ids(self, candidates: list[str]) -> ThreadRef | None:
        for message_id in candidates:
            ref = self._by_id.get(message_id.strip("<>"))
            if ref:
                return ref
        return None

    def ids_newest_first(self) -> Iterator[tuple[str, ThreadRef]]:
        """Every remembered id, newest first (not copied: read it before the map changes)."""
        return reversed(self._by_id.items())

    def note_reply(self, peer: str, ref: ThreadRef) -> None:
        """A legacy reply joined the thread: the conversation stays alive (its expiry starts again),
        and the peer's next SMS still answers the latest message *from the CPM user*, never the
        peer's own previous reply (after Mary's "lunch?", Peter's "sure" and "at noon" both answer
        "lunch?"). Only a new message from the CPM user (outbound_sms) moves what a reply answers."""
        refreshed = ThreadRef(ref.cpm_uri, ref.conversation_id, ref.contribution_id, self._clock())
        peer = peer.lstrip("+")
        if self._last.get((peer, ref.cpm_uri), refreshed).conversation_id == ref.conversation_id:
            self._last[(peer, ref.cpm_uri)] = refreshed
        for key, existing in list(self._by_number.items()):
            if key[0] == peer and existing.conversation_id == ref.conversation_id:
                self._by_number[key] = ThreadRef(existing.cpm_uri, existing.conversation_id,
                                                 existing.contribution_id, self._clock())
