"""A CPM service provider domain: registrar and transaction-stateful proxy.

Listens for SIP over UDP, TCP and TLS (sip_listeners). Requests for another operator's users go to that
operator's server; requests for its own users go to their registered device
(over the TCP flow they registered on), are stored until they register, or,
when the routing decision says so, go to the operator's interworking
function. Responses retrace the Via path.

Who sends a request is identity.py's (asserted from the registration, 403 otherwise).

This module is the listener and the dispatch; the jobs are in registrar.py
(bindings), proxy.py (transactions, timers, sessions' paths), store.py (store
and forward) and links.py (connections to next hops).
"""
from __future__ import annotations

import asyncio
import ssl
from typing import Callable, Iterable

from iwlab.backends import clock
from iwlab.backends.directory import NodeDirectory
from iwlab.backends.nodes.conference.uris import is_focus_uri
from iwlab.backends.nodes.cpm_server.fallback import Fallback
from iwlab.backends.nodes.cpm_server.identity import SenderIdentity, lab_nodes
from iwlab.backends.nodes.cpm_server.links import NextHops
from iwlab.backends.nodes.cpm_server.proxy import Proxy
from iwlab.backends.nodes.cpm_server.registrar import Binding, Registrar
from iwlab.backends.nodes.cpm_server.store import MessageStore
from iwlab.backends.protocols import sip
from iwlab.backends.protocols.cpim import CpimError, media_type, parse_cpim
from iwlab.backends.protocols.sip import (
    SipParseError,
    SipRequest,
    SipResponse,
    make_response,
)
from iwlab.backends.routing import CPM, NONE, STORE, Route, decide_route
from iwlab.backends.store import Store
from iwlab.backends.topology import Operator, Topology, User
from iwlab.backends.trace import Trace
from iwlab.backends.transports.sip import SipConnection, answer_unparseable, respond
from iwlab.backends.transports.sip_listeners import SipListeners

ALLOWED = "REGISTER, MESSAGE, INVITE, ACK, BYE, CANCEL, OPTIONS"
KNOWN_METHODS = {m.strip() for m in ALLOWED.split(",")}
SUPPORTED_OPTIONS = ()   # no SIP extensions that a Require could ask for

Address = tuple[str, int]


class CpmServer:
    """Listener and dispatch: validates each request and hands it to the part whose job it is.

    The parts (registrar, proxy, message store, next-hop links) are built here and
    reached through their public methods; the route decision is made here, once.
    """

    def __init__(self, operator: Operator, topology: Topology, trace: Trace, nodes: NodeDirectory, *,
                 host: str, server_address: Callable[[str], Address | None],
                 iwf_address: Callable[[], Address | None] | None = None, store: Store | None = None,
                 trusted_nodes: Iterable[str] | None = None,
                 focus_address: Callable[[], Address | None] | None = None) -> None:
        """store: the lab's durable store (messages kept for offline users wait there);
        trusted_nodes: the node names of in-lab peers (default: every CPM server and every IWF);
        focus_address: the operator's conference focus (what its factory and groups get goes there)."""
        self._focus_address = focus_address
        self.operator = operator
        self.topology = topology
        self.trace = trace
        self.nodes = nodes
        self.host = host
        self.port = 0
        self.name = operator.node_name
        self._iwf_address = iwf_address
        self._connections: set[SipConnection] = set()
        self.sip = SipListeners(name=self.name, new_connection=self.new_connection, on_message=self._on_message,
                                trace=trace, nodes=nodes, on_close=self._connection_closed)
        self._sweeper: asyncio.Task | None = None
        self._binding_listeners: list[Callable[[User], None]] = []
        self.registrar = Registrar(operator, topology, on_bound=self._registered)
        self.identity = SenderIdentity(topology, nodes, self.registrar,
                                       lab_nodes(topology) if trusted_nodes is None else trusted_nodes)
        self.proxy = Proxy(lambda: (self.host, self.port), transaction_timeout=topology.sip_transaction_seconds)
        store = store or Store()
        self.store = MessageStore(self.registrar, self.proxy, self.route_for,
                                  durable=store.queue(f"{self.name} stored"), users=self._user_by_id)
        self.links = NextHops(name=self.name, nodes=nodes, annotate=trace.annotate, on_message=self._on_message,
                              on_undeliverable=self.proxy.next_hop_unreachable,
                              server_address=server_address, iwf_address=iwf_address)
        # RCC.07: what its client does not confirm delivered in time is revoked and sent by SMS.
        self.fallback = Fallback(seconds=operator.iwf.fallback_seconds if operator.iwf else 0.0,
                                 durable=store.queue(f"{self.name} fallback"), proxy=self.proxy,
                                 registrar=self.registrar, to_iwf=self.links.to_iwf if iwf_address else None,
                                 users=self._user_by_id, user_by_uri=topology.user_by_uri)

    @property
    def bindings(self) -> dict[str, Binding]:
        """user id -> binding (the registrar's)."""
        return self.registrar.bindings

    @property
    def binding_listeners(self) -> list[Callable[[User], None]]:
        """Called after every successful REGISTER (a first one, a refresh, a new device): other
        nodes holding something for the user try again."""
        return self._binding_listeners

    @property
    def registration_listeners(self) -> list[Callable[[User, bool], None]]:
        """Called with (user, True) when a user registers, (user, False) when the binding ends."""
        return self.registrar.listeners

    # -- lifecycle ------------------------------------------------------------
    async def start(self, port: int, *, hosts: list[str] | None = None, tls: ssl.SSLContext | None = None,
                    tls_port: int = 0) -> int:
        """UDP and TCP on `port`, TLS on `tls_port` when given a context, on every address in `hosts`."""
        await self.sip.start(hosts or [self.host], port, tls=tls, tls_port=tls_port)
        self.port = self.sip.port
        self._sweeper = asyncio.create_task(self._sweep(), name=f"{self.name} transaction timer")
        self.store.restore()
        self.fallback.restore()
        return self.port

    def _user_by_id(self, user_id: str) -> User | None:
        try:
            return self.topology.user(user_id)
        except KeyError:
            return None

    async def stop(self) -> None:
        self.sip.close()      # accept nothing more; what is open is closed below
        if self._sweeper:
            self._sweeper.cancel()
        self.fallback.stop()
        self.links.close()
        for conn in list(self._connections):
            conn.close()
        await self.sip.stop()

    def new_connection(self) -> SipConnection:
        """The protocol for one accepted connection (the listener's factory; tests give it a transport)."""
        conn = SipConnection(self._on_message, local_name=self.name, trace=self.trace, nodes=self.nodes,
                             on_close=self._connection_closed)
        self._connections.add(conn)
        return conn

    def _connection_closed(self, conn: SipConnection) -> None:
        self._connections.discard(conn)
        self.proxy.connection_closed(conn)
        self.registrar.connection_closed(conn)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = clock.monotonic()
            self.proxy.expire(now)
            self.registrar.expire(now)

    # -- state --------------------------------------------------------------
    def is_registered(self, user: User) -> bool:
        return self.registrar.is_registered(user)

    def route_for(self, user: User) -> Route:
        binding = self.registrar.binding(user)
        registered = self.is_registered(user)
        capable = binding.cpm_capable if registered and binding else user.cpm_capable
        policy = ""
        if registered and binding and binding.untagged:
            capable = self.topology.untagged_registrations == "cpm"
            policy = (" (registered without CPM feature tags: counted as CPM-capable, topology policy "
                      f'untagged_registrations = "{self.topology.untagged_registrations}")')
        route = decide_route(user, registered=registered, cpm_capable=capable,
                             iwf_available=self._iwf_address is not None and self._iwf_address() is not None)
        if policy and capable:
            return Route(route.technology, route.reason.replace(" -> ", policy + " -> ", 1))
        if policy:   # the strict IMS reading: no tag, not CPM
            return Route(route.technology, route.reason.replace("'s device is not CPM-capable",
                                                                 "'s device registered without CPM feature tags "
                                                                 '(topology policy untagged_registrations = "not-cpm")',
                                                                 1))
        return route

    def _registered(self, user: User) -> None:
        self.store.deliver(user)   # what waited for the user goes now, oldest first
        for listener in list(self.binding_listeners):
            listener(user)

    # -- incoming -----------------------------------------------------------
    def _on_message(self, conn: SipConnection, message: SipRequest | SipResponse | SipParseError) -> None:
        if isinstance(message, SipParseError):
            self._answer_parse_error(conn, message)
        elif isinstance(message, SipResponse):
            self.proxy.relay_response(message)
        else:
            self._handle_request(conn, message)

    def _answer_parse_error(self, conn: SipConnection, error: SipParseError) -> None:
        answer_unparseable(conn, error)

    def _handle_request(self, conn: SipConnection, req: SipRequest) -> None:
        problem = sip.validate_request(req, supported=SUPPORTED_OPTIONS)
        if problem and problem[0] == 420 and self._forwards(req):
            # Require is for the user agent at the end; a proxy only minds Proxy-Require (RFC 3261 16.3).
            problem = None
            unsupported = sip.unsupported_options(req, SUPPORTED_OPTIONS, proxy=True)
            unsupported = [tag for tag in unsupported if tag not in req.headers.get_all("Require")]
            if unsupported:
                respond(conn, req, 420, "Bad Extension", extra_headers=[("Unsupported", ", ".join(unsupported))])
                return
        if problem:
            extra = [("Unsupported", ", ".join(sip.unsupported_options(req, SUPPORTED_OPTIONS)))] \
                if problem[0] == 420 else []
            respond(conn, req, *problem, extra_headers=extra)
            return
        if req.method not in KNOWN_METHODS:
            respond(conn, req, 501, "Not Implemented", extra_headers=[("Allow", ALLOWED)])
            return
        if req.method == "REGISTER":
            self.registrar.register(conn, req)
            return
        target = sip.parse_uri(req.uri)
        if req.method == "OPTIONS" and not target.user and self._is_me(target.host):
            response = make_response(req, 200, to_tag=sip.new_tag())
            response.headers.set("Allow", ALLOWED)
            conn.send(response)
            return
        if req.method not in ("ACK", "CANCEL") and not sip.to_tag(req):   # in a dialog: its INVITE was checked
            refusal = self.identity.refusal(conn, req)
            if refusal:
                respond(conn, req, 403, refusal[:120], note=f"identity: {refusal}")
                return
        max_forwards = sip.max_forwards(req)
        if max_forwards is not None and max_forwards <= 0:
            respond(conn, req, 483, "Too Many Hops")
            return
        self._strip_own_route(req)
        if req.method == "MESSAGE" and not sip.to_tag(req) and self.fallback.take(conn, req):
            return   # a revoke response to a revoke of ours
        if req.method == "CANCEL" or sip.to_tag(req) or req.method == "ACK":
            self.proxy.in_dialog(conn, req)
            return
        if self._for_focus(req.uri):
            assert self._focus_address is not None
            self.proxy.forward(conn, req, self.links.to_focus(self._focus_address),
                               note="a group chat: the operator's conference focus answers")
            return
        home = self.topology.home_operator_of_uri(req.uri)
        if home is None:
            respond(conn, req, 404, f"No operator serves {req.uri}"[:80])
            return
        if home.id != self.operator.id:
            self.proxy.forward(conn, req, self.links.to_operator(home), note="")
            return
        user = self.topology.user_by_uri(req.uri)
        if user is None:
            respond(conn, req, 404, "User Not Found")
            return
        self._terminate(conn, req, user)

    def _terminate(self, conn: SipConnection, req: SipRequest, user: User) -> None:
        if req.method == "OPTIONS":
            self._capabilities(conn, req, user)
            return
        route = self.route_for(user)
        if route.technology == CPM and req.method == "MESSAGE" and self.store.waiting(user):
            # Older stored messages go first: this one waits behind them (seed 5.9.5 step 6).
            waiting = self.store.keep(user, req)
            respond(conn, req, 202, "Accepted (queued behind stored messages)",
                    note=f"{waiting - 1} older message(s) for {user.name} go first")
            self.store.deliver(user)
        elif route.technology == CPM:
            binding = self.registrar.binding(user)
            assert binding is not None   # route CPM means a live binding
            note = route.reason
            if req.method == "MESSAGE" and binding.untagged:
                adapted = for_plain_softphone(req)
                if adapted is None:
                    respond(conn, req, 200, "OK", note=f"IMDN not sent on: {user.name}'s client registered without "
                                                       "CPM feature tags (a plain softphone) cannot read one")
                    return
                if adapted is not req:
                    req, note = adapted, note + "; CPIM unwrapped to text/plain for a plain softphone"
            watch = None
            if req.method == "MESSAGE" and not binding.untagged and not self._from_iwf(conn):
                # A client that reads CPIM can be asked to give it back (never what was an SMS already).
                watch, why_not = self.fallback.watcher(user, req)
                note += why_not
            # RFC 3261 16.5/16.6: the registered Contact becomes the Request-URI.
            self.proxy.forward(conn, req, binding.flow, note=note, request_uri=binding.target, on_final=watch)
        elif route.technology == STORE and req.method == "MESSAGE":
            self.store.keep(user, req)
            respond(conn, req, 202, "Accepted (stored until the recipient registers)", note=route.reason)
        elif route.technology in (STORE, NONE):
            respond(conn, req, 480, "Temporarily Unavailable", note=route.reason)
        else:  # a legacy technology: the operator's interworking function takes it from here
            self.proxy.forward(conn, req, self.links.to_iwf(), note=route.reason, route=route)

    def _capabilities(self, conn: SipConnection, req: SipRequest, user: User) -> None:
        """Capability discovery (RFC 3840, GSMA IR.90 style): the user's home server answers from the
        registration: the CPM feature tags while a CPM-capable device is registered, none otherwise
        (then messages reach the user by their legacy service; the route reason says how)."""
        binding = self.registrar.binding(user)
        route = self.route_for(user)
        tags = binding.icsi_refs if binding is not None and route.technology == CPM else ()
        contact = f"<{user.cpm_uri}>" + (f';+g.3gpp.icsi-ref="{",".join(tags)}"' if tags else "")
        note = f"capabilities of {user.name}: " + (
            "CPM (" + ", ".join(t.replace("%3A", ":") for t in tags) + ")" if tags else f"no CPM now ({route.reason})")
        respond(conn, req, 200, "OK", note=note,
                extra_headers=[("Contact", contact), ("Accept", "message/cpim, text/plain" if tags else "text/plain")])

    # -- whose request is it ------------------------------------------------------
    def _strip_own_route(self, req: SipRequest) -> None:
        """Loose routing (RFC 3261 16.4): a Route naming us has done its job here."""
        routes = req.headers.get_all("Route")
        if not routes:
            return
        kept = [r for r in routes if not self._names_me(sip.uri_of(r))]
        if len(kept) != len(routes):
            req.headers.remove("Route")
            for route in kept:
                req.headers.add("Route", route)

    def _names_me(self, uri: str) -> bool:
        try:
            parsed = sip.parse_uri(uri)
        except SipParseError:
            return False
        return self._is_me(parsed.host) and parsed.port in (None, self.port)

    def _forwards(self, req: SipRequest) -> bool:
        """Will this request go on to another node (rather than be answered here)?"""
        if req.method == "REGISTER":
            return False
        try:
            target = sip.parse_uri(req.uri)
        except SipParseError:
            return False
        if self._for_focus(req.uri):
            return True
        if not target.user and self._is_me(target.host):
            return False
        home = self.topology.home_operator_of_uri(req.uri)
        return home is not None and (home.id != self.operator.id or self.topology.user_by_uri(req.uri) is not None)

    def _for_focus(self, uri: str) -> bool:
        return self._focus_address is not None and is_focus_uri(uri, self.operator.cpm_domain)

    def _from_iwf(self, conn: SipConnection) -> bool:
        return self.nodes.lookup(conn.peer_address, conn.local_address) in self.topology.iwf_names()

    def _is_me(self, host: str) -> bool:
        return host.lower() in (self.operator.cpm_domain, self.host, "localhost")


def for_plain_softphone(req: SipRequest) -> SipRequest | None:
    """A MESSAGE as a client without CPM feature tags can show it: a CPIM envelope unwrapped to
    its payload (text/plain, as such clients send and accept); None for an IMDN, which such a
    client cannot read (its sender asked a CPM question); the request itself when not CPIM."""
    if media_type(req.headers.get("Content-Type")) != "message/cpim":
        return req
    try:
        cpim = parse_cpim(req.body)
    except CpimError:
        return req   # the device will say what is wrong with it
    if cpim.is_imdn:
        return None
    plain = SipRequest(req.method, req.uri, req.headers.copy(), cpim.body, req.version)
    plain.headers.set("Content-Type", cpim.content_type)
    return plain
