"""Store and forward for CPM users who are offline (CPM-IOP: a CPM user keeps her CPM service).

A MESSAGE for such a user was answered 202 when it came; it waits here and is
delivered when the user registers, one at a time, in the order the messages
came. The head leaves the store only when the device has answered it with
2xx; anything else keeps it for the next registration.

Each message is in the lab's durable store before the 202 leaves, and a restarted server
picks them up again (restore), so a crash loses none of them.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

from iwlab.backends.nodes.cpm_server.proxy import Proxy
from iwlab.backends.nodes.cpm_server.registrar import Registrar
from iwlab.backends.protocols import sip
from iwlab.backends.protocols.sip import SipRequest
from iwlab.backends.routing import CPM, Route
from iwlab.backends.store import DurableQueue
from iwlab.backends.topology import User


class MessageStore:
    """`route_for` is the server's route decision: a message goes only while the user is reachable by CPM."""

    def __init__(self, registrar: Registrar, proxy: Proxy, route_for: Callable[[User], Route],
                 durable: DurableQueue, users: Callable[[str], User | None]) -> None:
        """durable: where the messages wait; users: a user by id (what the store names them by)."""
        self._durable = durable
        self._users = users
        self._stored_ids: dict[int, int] = {}              # id(request) -> its item in the store
        self._registrar = registrar
        self._proxy = proxy
        self._route_for = route_for
        self._waiting: dict[str, deque[SipRequest]] = {}   # user id -> MESSAGEs waiting for registration
        self._in_flight: set[str] = set()                   # user ids with a stored message out now

    def waiting(self, user: User) -> int:
        """How many messages wait for `user`."""
        return len(self._waiting.get(user.id, ()))

    def keep(self, user: User, req: SipRequest) -> int:
        """Keep `req` (durably: the caller answers 202 next) behind what already waits for `user`;
        returns how many wait now."""
        self._stored_ids[id(req)] = self._durable.put(user.id, req.to_bytes())
        return self._queue(user.id, req)

    def _queue(self, user_id: str, req: SipRequest) -> int:
        queue = self._waiting.setdefault(user_id, deque())
        queue.append(req)
        return len(queue)

    def restore(self) -> int:
        """After a restart: the messages kept before, in the order they came."""
        items = self._durable.items()
        for item in items:
            try:
                request = sip.parse_message(item.payload)
            except sip.SipParseError:
                self._durable.remove(item.id)
                continue
            assert isinstance(request, SipRequest)
            if self._users(item.key) is None:     # a user the topology no longer has
                self._durable.remove(item.id)
                continue
            self._stored_ids[id(request)] = item.id
            self._queue(item.key, request)
        return len(items)

    def holding(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def deliver(self, user: User) -> None:
        """Send the oldest waiting message, unless one is out already or the user is not reachable by CPM."""
        queue = self._waiting.get(user.id)
        binding = self._registrar.binding(user)
        if not queue or user.id in self._in_flight or binding is None \
                or self._route_for(user).technology != CPM:
            return
        head = queue[0]
        # The original transaction was answered (202); this delivery is ours.
        self._in_flight.add(user.id)
        sent = self._proxy.send_own(head, binding.flow, request_uri=binding.target,
                                    note=f"stored message delivered now that {user.name} is registered",
                                    on_final=lambda status: self._answered(user, head, delivered=status < 300))
        if not sent:
            self._in_flight.discard(user.id)

    def _answered(self, user: User, request: SipRequest, delivered: bool) -> None:
        self._in_flight.discard(user.id)
        queue = self._waiting.get(user.id)
        if delivered and queue and queue[0] is request:
            queue.popleft()
            stored = self._stored_ids.pop(id(request), None)
            if stored is not None:
                self._durable.remove(stored)
            self.deliver(user)
