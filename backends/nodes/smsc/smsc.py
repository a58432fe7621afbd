"""The SMSC: lifecycle, accounts and authentication, routes, events for the lab.

Deliveries are the Delivery's (delivery.py); each connection is an
SmppSession (session.py), which asks this class who may bind and where a
destination goes.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Callable, Iterable

from smpplib import consts as C

from iwlab.backends.directory import NodeDirectory
from iwlab.backends.nodes.smsc.delivery import OK, Delivery
from iwlab.backends.nodes.smsc.events import EventCallback, Events
from iwlab.backends.nodes.smsc.message import Message
from iwlab.backends.nodes.smsc.session import SmppSession
from iwlab.backends.store import Store
from iwlab.backends.trace import Trace
from iwlab.backends.transports.guard import ConnectionGuard
from iwlab.backends.transports.listen import listen_on


@dataclass
class EsmeAccount:
    system_id: str
    password: str
    node_name: str
    # Destination numbers (digits, no '+') or prefixes ending in '*' whose SMS
    # go to this account's receiver bind instead of a handset.
    routes: list[str] = field(default_factory=list)
    # The account reports deliveries itself (an IWF, the IP-SM-GW of TS 23.204 6.10): the SMSC
    # sends no receipt when the account takes a message, the account's report becomes it.
    end_to_end_receipts: bool = False
    # How long such an account has to report on a message it took; then the SMSC sends EXPIRED
    # itself. Longer than the account keeps trying (an IWF: its message validity), so that the
    # account's own report, EXPIRED included, comes first.
    report_seconds: float = 3660.0

    def routes_to(self, digits: str) -> str | None:
        """The matching route pattern, if any."""
        for route in self.routes:
            pattern = route.lstrip("+")
            if (digits.startswith(pattern[:-1]) if pattern.endswith("*") else digits == pattern):
                return route
        return None


class Smsc:
    # What a trainer or a QA engineer sets (backends/lab/conditions.py); a restarted SMSC keeps it.
    CONDITIONS = ("throttle_every", "queue_full_every", "answer_delay_ms", "answer_jitter_ms", "drop_every",
                  "refuse_binds_until")

    def __init__(self, trace: Trace, nodes: NodeDirectory, *, accounts: list[EsmeAccount],
                 handset_password: str, handset_numbers: dict[str, str], name: str = "SMSC",
                 throttle_every: int = 0, validity_seconds: float = 60.0, retry_seconds: float = 1.0,
                 response_seconds: float = 10.0, system_id_name: Callable[[str], str | None] | None = None,
                 store: Store | None = None,
                 handset_first: Callable[[str, bool], str | None] | None = None) -> None:
        """store: the lab's durable store (what the SMSC accepted and not yet delivered waits there);
        handset_first(digits, bound): for a number both a handset and an account's route claim (a
        CPM user's number: her phone's SMS side, and the IWF), why the handset takes it now, or
        None; bound: the handset has a receiving bind now (see route())."""
        self._handset_first = handset_first
        self.trace, self.nodes, self.name = trace, nodes, name
        self.accounts = accounts                  # kept by reference: edits apply at once
        self.handset_password = handset_password
        self.handset_numbers = handset_numbers    # digits -> node name
        # Conditions a trainer or a QA engineer sets (backends/lab/conditions.py):
        self.throttle_every = throttle_every      # every Nth submit_sm per bind -> ESME_RTHROTTLED
        self.queue_full_every = 0                 # every Nth submit_sm per bind -> ESME_RMSGQFUL
        self.answer_delay_ms = 0                  # submit_sm_resp (and the delivery) this much later ...
        self.answer_jitter_ms = 0                 # ... plus a random 0..jitter: answers may overtake
        self.drop_every = 0                       # cut a bound link (no unbind) at every Nth request it sends
        self.refuse_binds_until = 0.0             # until then (lab clock) every bind gets ESME_RBINDFAIL
        self._system_id_name = system_id_name
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._sessions: set[SmppSession] = set()
        self._events = Events()
        store = store or Store()
        self._delivery = Delivery(self._events, self.name_for, validity_seconds=validity_seconds,
                                  retry_seconds=retry_seconds, response_seconds=response_seconds,
                                  store=store.queue(f"{name} held"), owed_store=store.queue(f"{name} receipts owed"),
                                  report_seconds=self.report_seconds)
        self._servers: list[asyncio.Server] = []
        self.guard = ConnectionGuard(name)     # a connection limit: a flood is refused, the rest served
        self.session_init_seconds = 30.0       # a connection must bind within this (SMPP v3.4 2.9)
        self._restored = False

    # The delivery's settings, here where the lab and the tests set them.
    @property
    def validity_seconds(self) -> float:
        """Unless a submit_sm sets validity_period."""
        return self._delivery.validity_seconds

    @validity_seconds.setter
    def validity_seconds(self, value: float) -> None:
        self._delivery.validity_seconds = value

    @property
    def retry_seconds(self) -> float:
        """After a failed deliver_sm."""
        return self._delivery.retry_seconds

    @retry_seconds.setter
    def retry_seconds(self, value: float) -> None:
        self._delivery.retry_seconds = value

    @property
    def response_seconds(self) -> float:
        """No deliver_sm_resp by then: failed, retry."""
        return self._delivery.response_seconds

    @response_seconds.setter
    def response_seconds(self, value: float) -> None:
        self._delivery.response_seconds = value

    # -- lifecycle --------------------------------------------------------------------
    async def start(self, host: str | list[str] = "127.0.0.1", port: int = 0) -> int:
        if self._server and self.port is not None:
            return self.port
        loop = asyncio.get_running_loop()
        self._delivery.open(loop)
        if not self._restored:   # once per process: a stop and start keeps the mailboxes in memory
            self._restored = True
            self._delivery.restore()
        self._servers = await listen_on(self.guard.factory(lambda: SmppSession(self, self._delivery, loop)), host, port)
        self._server = self._servers[0]
        self.port = port = self._server.sockets[0].getsockname()[1]
        self._delivery.start()
        return port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._delivery.halt()
        servers, self._servers = self._servers, []
        for each in servers:
            each.close()
        sessions = list(self._sessions)
        for session in sessions:
            session.close()
        if sessions:
            await asyncio.wait([s.gone for s in sessions], timeout=2)
            for session in sessions:
                if not session.gone.done():
                    session.abort()
        for each in servers:
            await each.wait_closed()
        await self._delivery.stop()

    # -- events for the lab -------------------------------------------------------------
    def on_event(self, callback: EventCallback) -> Callable[[], None]:
        """callback(kind, details) on the server's loop: bound, unbound, stored,
        delivered, expired, undeliverable, receipt_dropped. Returns unsubscribe."""
        return self._events.subscribe(callback)

    def pending(self, system_id: str | None = None) -> int:
        """Messages waiting for delivery (to one owner, or in all)."""
        return self._delivery.pending(system_id)

    # -- accounts, names, routes -----------------------------------------------------------
    def authenticate(self, system_id: str, password: str) -> int:
        """The bind_*_resp status for these credentials."""
        for account in self.accounts:
            if account.system_id == system_id:
                return OK if account.password == password else C.SMPP_ESME_RINVPASWD
        if system_id in self.handset_numbers:
            return OK if password == self.handset_password else C.SMPP_ESME_RINVPASWD
        return C.SMPP_ESME_RINVSYSID

    def reports_end_to_end(self, system_id: str) -> bool:
        """Does this account owe the receipts for what it takes (EsmeAccount.end_to_end_receipts)?"""
        return any(a.system_id == system_id and a.end_to_end_receipts for a in self.accounts)

    def report_seconds(self, system_id: str) -> float:
        """How long an end-to-end account has to report (EsmeAccount.report_seconds)."""
        return next((a.report_seconds for a in self.accounts if a.system_id == system_id), EsmeAccount.report_seconds)

    def name_for(self, system_id: str) -> str | None:
        if self._system_id_name:
            name = self._system_id_name(system_id)
            if name:
                return name
        for account in self.accounts:
            if account.system_id == system_id:
                return account.node_name
        return self.handset_numbers.get(system_id)

    def route(self, digits: str) -> tuple[str, str, str] | None:
        """(owner system_id, node name, why) for destination digits, or None.

        A CPM user's number is claimed twice: by the IWF's route (like an IP-SM-GW, SMS to CPM
        users reach the IWF, which hands them to CPM) and by the user's own phone, which is also
        an SMS handset. The handset takes it when CPM cannot deliver it now and the handset can
        (handset_first says why): she roams where CPM is not supported (then her handset, bound
        or not: CPM could not reach her there at all), or she is not registered to CPM while her
        phone's SMS side is bound (it takes it now; CPM would only store it). Otherwise the IWF
        does, and she reads it in CPM: also when her phone is off altogether, where CPM keeps it
        until she registers, and while an IWF session or thread uses her number as its
        originating address, the replies to which must reach that IWF. Decided per message at
        submit time, so a message already held keeps its way."""
        name = self.handset_numbers.get(digits)
        why = self._handset_first(digits, self._delivery.has_receiver(digits)) if name and self._handset_first else None
        if name and why:
            return digits, name, f"handset {name}: {why}"
        for account in self.accounts:
            pattern = account.routes_to(digits)
            if pattern:
                return account.system_id, account.node_name, f"route {pattern} -> {account.node_name}"
        name = self.handset_numbers.get(digits)
        if name:
            return digits, name, f"handset {name}"
        return None

    # -- sessions (called by SmppSession) ------------------------------------------------------
    @property
    def accepting(self) -> bool:
        """False while stopping: a connection accepted then is closed at once."""
        return self._server is not None

    def session_opened(self, session: SmppSession) -> None:
        self._sessions.add(session)

    def keep_conditions_of(self, other: Smsc) -> None:
        for name in self.CONDITIONS:
            setattr(self, name, getattr(other, name))

    def drop(self, system_id: str) -> int:
        """Condition: cut every connection bound as system_id now, without an unbind (as a dying
        link would); how many were cut. Their clients rebind by themselves."""
        cut = [session for session in self._sessions if session.system_id == system_id]
        for session in cut:
            session.abort()
        return len(cut)

    def session_closed(self, session: SmppSession) -> None:
        self._sessions.discard(session)

    def bound(self, session: SmppSession) -> None:
        if session.receiving:
            self._delivery.add_receiver(session.system_id, session)
        if self._events:
            self._events.emit("bound", system_id=session.system_id, node=session.name, mode=session.mode)
        if session.receiving:
            self._delivery.deliver_waiting(session.system_id)

    def detached(self, session: SmppSession, unanswered: Iterable[Message]) -> None:
        """The session takes no more deliveries (closing or gone); unanswered: its deliver_sm still unacknowledged."""
        self._delivery.receiver_gone(session.system_id, session, unanswered)
        if session.mode and self._events:
            self._events.emit("unbound", system_id=session.system_id, node=session.name)
