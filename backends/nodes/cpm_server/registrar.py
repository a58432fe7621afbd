"""The registrar of a CPM service provider domain (RFC 3261 10.3).

A binding ties a user to the TCP flow the device registered on: requests for
the user go back on that flow, so the binding ends with it, with an
unregistering REGISTER, or when it is not refreshed in time. The flow is also
who the user is (users_on): the server asserts a sender from it.

A user with a `sip_password` in the topology registers with digest
authentication (RFC 3261 22.4, MD5, qop=auth; username = the user id); without
one anyone may register as the user. A registration from another connection
replaces the binding, and the 200 OK's note on the ladder says so.
"""
from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass
from typing import Callable

from iwlab.backends import clock
from iwlab.backends.protocols import sip
from iwlab.backends.protocols.sip import SipRequest, make_response
from iwlab.backends.topology import Operator, Topology, User
from iwlab.backends.transports.sip import SipConnection, respond
from iwlab.backends.transports.sip_udp import SipUdpFlow

_ICSI_RE = re.compile(r'\+g\.3gpp\.icsi-ref="([^"]*)"', re.IGNORECASE)

RegistrationListener = Callable[[User, bool], None]
NONCE_SECONDS = 300.0
MAX_NONCES = 1000          # challenges outstanding; the oldest go first

@dataclass
class Binding:
    user: User
    connection: SipConnection
    contact: str
    expires_at: float
    icsi_refs: tuple[str, ...]

    @property
    def target(self) -> str:
        """The Contact URI: where requests for this user go (the Request-URI)."""
        return sip.uri_of(self.contact) or self.user.cpm_uri or ""

    @property
    def cpm_capable(self) -> bool:
        return any("oma.cpm" in ref.replace("%3A", ":") for ref in self.icsi_refs)

    @property
    def flow(self) -> SipConnection:
        """Where requests for the user go. Over a stream, back on the connection the device
        registered on (its Contact may not even listen); over UDP, to the Contact's address
        (RFC 3261: a softphone may register from one port and listen on another)."""
        if isinstance(self.connection, SipUdpFlow):
            address = _literal_address(self.target)
            if address is not None and address != self.connection.peer_address:
                return self.connection.endpoint.flow(address)
        return self.connection

    @property
    def untagged(self) -> bool:
        """No service feature tag at all: how plain softphones register (the topology's policy decides)."""
        return not self.icsi_refs


class Registrar:
    """Bindings of one operator's users, and who hears when a user comes or goes.

    `listeners` hear (user, True) when a user becomes registered and (user, False)
    when a binding ends; `on_bound` runs after every successful binding (first or
    refresh), so what waited for the user can go.
    """

    def __init__(self, operator: Operator, topology: Topology, *,
                 on_bound: Callable[[User], None] = lambda user: None) -> None:
        self._operator = operator
        self._topology = topology
        self._on_bound = on_bound
        self.bindings: dict[str, Binding] = {}           # user id -> binding
        self.listeners: list[RegistrationListener] = []
        self._nonces: dict[str, tuple[float, int]] = {}  # nonce we challenged with -> (valid until, last nc)

    # -- state --------------------------------------------------------------
    def binding(self, user: User) -> Binding | None:
        return self.bindings.get(user.id)

    def users_on(self, conn: SipConnection) -> list[User]:
        """Who is registered on this connection (flow): the identities it may send as."""
        now = clock.monotonic()
        return [b.user for b in self.bindings.values() if b.connection is conn and b.expires_at > now]

    def is_registered(self, user: User) -> bool:
        binding = self.bindings.get(user.id)
        return bool(binding and binding.expires_at > clock.monotonic() and binding.connection.is_open)

    def unbind(self, user_id: str) -> None:
        binding = self.bindings.pop(user_id, None)
        if binding:
            for listener in self.listeners:
                listener(binding.user, False)

    def expire(self, now: float) -> None:
        for user_id in [u for u, b in self.bindings.items() if b.expires_at < now]:
            self.unbind(user_id)   # not refreshed in time: no longer registered

    def connection_closed(self, conn: SipConnection) -> None:
        for user_id, binding in list(self.bindings.items()):
            if binding.connection is conn:   # the flow the device registered on is gone
                self.unbind(user_id)

    # -- REGISTER -------------------------------------------------------------
    def register(self, conn: SipConnection, req: SipRequest) -> None:
        aor = sip.uri_of(req.headers.get("To"))
        user = self._topology.user_by_uri(aor)
        if user is None:
            respond(conn, req, 404, "User Not Found")
            return
        if user.operator != self._operator.id:
            respond(conn, req, 403, f"{user.name} is not a subscriber of {self._operator.cpm_domain}")
            return
        if user.sip_password is not None:
            problem = self._authenticate(req, user)
            if problem is not None:
                stale, why = problem
                respond(conn, req, 401, "Unauthorized", note=f"digest authentication: {why}",
                        extra_headers=[("WWW-Authenticate", self._challenge(stale))])
                return
        contacts = req.headers.get_all("Contact")
        if not contacts:   # a query of the bindings
            response = make_response(req, 200, to_tag=sip.new_tag())
            binding = self.bindings.get(user.id)
            if binding and self.is_registered(user):
                response.headers.add("Contact", binding.contact)
            conn.send(response)
            return
        contact = contacts[0]
        expires = _expires(contact, req.headers.get("Expires"))
        if expires is None:
            respond(conn, req, 400, "Bad Expires")
            return
        if contact.strip() == "*" and (expires != 0 or len(contacts) > 1):
            respond(conn, req, 400, "Contact: * needs Expires: 0 and no other Contact")   # RFC 3261 10.3
            return
        conn.peer_name = conn.peer_name or user.name
        if expires == 0 or contact.strip() == "*":
            self.unbind(user.id)
            conn.send(make_response(req, 200, to_tag=sip.new_tag()))
            return
        binding = Binding(user, conn, contact.split(";expires=")[0], clock.monotonic() + expires,
                          tuple(_ICSI_RE.findall(contact)))
        was_registered = self.is_registered(user)
        previous = self.bindings.get(user.id)
        note = ""
        if was_registered and previous is not None and previous.connection is not conn:
            # Not silent: the other device loses the user's requests from now on.
            note = (f"binding replaced: {user.name} was registered from {previous.connection.name_of_peer()} "
                    f"({sip.hostport(*previous.connection.peer_address)}); requests for {user.name} now go here")
        self.bindings[user.id] = binding
        response = make_response(req, 200, to_tag=sip.new_tag())
        response.headers.add("Contact", f"{binding.contact};expires={expires}")
        response.headers.add("Expires", str(expires))
        conn.send(response, note=note)
        if not was_registered:
            for listener in self.listeners:
                listener(user, True)
        self._on_bound(user)


    # -- digest authentication -----------------------------------------------------------
    def _challenge(self, stale: bool = False) -> str:
        now = clock.monotonic()
        for nonce in [n for n, (until, _) in self._nonces.items() if until < now]:
            del self._nonces[nonce]
        while len(self._nonces) >= MAX_NONCES:
            self._nonces.pop(next(iter(self._nonces)))
        nonce = secrets.token_hex(16)
        self._nonces[nonce] = (now + NONCE_SECONDS, 0)
        return sip.digest_challenge(self._operator.cpm_domain, nonce, stale=stale)

    def _authenticate(self, req: SipRequest, user: User) -> tuple[bool, str] | None:
        """None when the REGISTER carries valid credentials for the user; else (stale, why)."""
        credentials = sip.parse_digest(req.headers.get("Authorization") or "")
        if not credentials:
            return False, "no credentials: challenged"
        if credentials.get("username") != user.id or credentials.get("realm") != self._operator.cpm_domain:
            return False, f"username/realm are not {user.id}@{self._operator.cpm_domain}"
        if credentials.get("uri") != req.uri:
            return False, "the digest uri is not the Request-URI"
        nonce = credentials.get("nonce", "")
        until, last_nc = self._nonces.get(nonce, (0.0, 0))
        if until < clock.monotonic():
            return True, "unknown or expired nonce: challenged again"
        nc = last_nc
        if credentials.get("qop"):     # without qop (RFC 2069 clients) there is no count to check
            try:
                nc = int(credentials.get("nc", "0"), 16)
            except ValueError:
                return False, "malformed nc"
            if nc <= last_nc:    # RFC 7616 3.4: a nonce count that does not grow is a replay
                return True, "nonce count reused (a replay?): challenged again"
        assert user.sip_password is not None
        expected = sip.digest_response(username=user.id, realm=self._operator.cpm_domain,
                                       password=user.sip_password, method=req.method,
                                       uri=credentials.get("uri", ""), nonce=nonce, nc=credentials.get("nc", ""),
                                       cnonce=credentials.get("cnonce", ""), qop=credentials.get("qop", ""))
        if not secrets.compare_digest(expected, credentials.get("response", "")):
            return False, "wrong password"
        self._nonces[nonce] = (until, nc)
        return None


def _expires(contact: str, expires_header: str | None) -> int | None:
    match = re.search(r";\s*expires\s*=\s*(\d+)", contact, re.IGNORECASE)
    value = match.group(1) if match else (expires_header or "3600")
    try:
        return min(int(value.strip()), 2**31 - 1)
    except ValueError:
        return None


def _literal_address(uri: str) -> tuple[str, int] | None:
    """(IP, port) of a Contact URI that names one (port 5060 when it names none); else None."""
    try:
        parsed = sip.parse_uri(uri)
        ipaddress.ip_address(parsed.host.strip("[]"))
    except (sip.SipParseError, ValueError):
        return None
    return parsed.host.strip("[]"), parsed.port or 5060
