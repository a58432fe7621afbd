"""The lab's world as data: operators, users, their devices and states.

Loaded from TOML (resources/topology.toml by default). Everything else asks
the topology who owns a number or a domain and who a URI names, so a
different lab is a different file, not different code.
"""
from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

DEVICE_KINDS = ("cpm", "sms", "email")
UNTAGGED_POLICIES = ("cpm", "not-cpm")
SIP_TRANSPORTS = ("udp", "tcp", "tls")
THREAD_POLICIES = ("last", "pool")   # how the IWF ties an SMS reply to a CPM thread (nodes/iwf/threads.py)


class TopologyError(ValueError):
    """The topology file says something the lab cannot build."""


@dataclass
class IwfAccount:
    system_id: str                       # its bind at the lab's SMSC (every IWF binds there)
    password: str
    node_name: str = ""                  # its ladder column; "" = "IWF" beside the SMSC, "IWF-<operator>" elsewhere
    thread_policy: str = "last"          # "last" or "pool" (backends/threads.py)
    thread_expiry_seconds: float = 24 * 3600.0
    number_pool: list[str] = field(default_factory=list)   # originating numbers for the "pool" policy
    # Session interworking (5.8.6 / 5.9.6): the words a legacy user answers with, and how long we wait.
    session_accept: str = "YES"
    session_decline: str = "NO"
    session_end: str = "END"
    session_request: str = "CHAT"
    session_timeout_seconds: float = 60.0
    # What the IWF keeps for a CPM recipient who cannot take it now (not answering, away):
    # tried again when they register, or every retry_seconds, until the validity runs out.
    message_validity_seconds: float = 3600.0
    retry_seconds: float = 30.0
    # RCC.07 network fallback: a chat message to this operator's CPM user that the client has not
    # confirmed delivered (IMDN) within this long is revoked and sent by SMS (0: never).
    fallback_seconds: float = 0.0
    # A legacy sender's status report is the IWF's to send, when the CPM recipient's IMDN comes
    # (TS 23.204 6.10): the SMSC sends none when the IWF takes the SMS (nodes/smsc/session.py).
    # False: the SMSC's receipt when the IWF took it (says DELIVRD for a phone that is off).
    end_to_end_receipts: bool = True


@dataclass
class Operator:
    id: str
    name: str
    cpm_domain: str
    numbers: list[str]
    sip_port: int
    mail_domain: str | None = None
    iwf_sip_port: int | None = None
    sip_tls_port: int | None = None          # SIP over TLS (default: sip_port + 1)
    iwf_sip_tls_port: int | None = None      # the IWF's (default: iwf_sip_port + 1)
    smpp_port: int | None = None
    smtp_port: int | None = None
    iwf: IwfAccount | None = None

    @property
    def node_name(self) -> str:
        return f"CPM-{self.id}"

    @property
    def focus_name(self) -> str:
        """Its conference focus's ladder column (group chats)."""
        return f"Focus-{self.id}"

    def owns_number(self, number: str) -> bool:
        return any(_number_matches(pattern, number) for pattern in self.numbers)


@dataclass
class User:
    id: str
    name: str
    operator: str
    device: str
    sip: str | None = None
    tel: str | None = None
    email: str | None = None
    contacts: list[str] = field(default_factory=list)
    # Digest authentication of this user's REGISTER (RFC 3261 22, MD5; username = the user id).
    # None (the default): no authentication, anyone may register as the user (README: Security).
    sip_password: str | None = None
    # Live device state (ARCHITECTURE §2): changeable at run time.
    cpm_registered: bool = False
    cpm_capable: bool = True
    roaming_without_cpm: bool = False
    sip_transport: str = "tcp"          # how a simulated CPM phone reaches its server: udp | tcp | tls

    @property
    def msisdn(self) -> str | None:
        """The number as SMPP carries it: digits only, no '+'."""
        return self.tel.lstrip("+") if self.tel else None

    @property
    def cpm_uri(self) -> str | None:
        return self.sip or (f"tel:{self.tel}" if self.tel else None)


@dataclass
class SmscSettings:
    handset_password: str = "iwlab"
    throttle_every: int = 0
    validity_seconds: float = 120.0


@dataclass
class Topology:
    host: str
    operators: list[Operator]
    users: list[User]
    smsc: SmscSettings
    source: str = "<memory>"
    sip_transaction_seconds: float = 32.0   # RFC 3261 Timer F (64*T1): a silent device's request fails after this
    # A REGISTER without any +g.3gpp.icsi-ref (a plain softphone): "cpm" counts it CPM-capable (it can
    # send and receive pager-mode text); "not-cpm" is the strict IMS reading (no tag, no CPM).
    untagged_registrations: str = "cpm"
    hosts: list[str] = field(default_factory=list)   # every listening address (host is the first)
    tls: bool = True                        # SIP over TLS beside UDP and TCP, with the lab's own CA
    content_port: int = 0                   # the lab's HTTP content server (links for what SMS cannot carry)

    # -- lookups ---------------------------------------------------------
    def operator(self, operator_id: str) -> Operator:
        for op in self.operators:
            if op.id == operator_id:
                return op
        raise KeyError(operator_id)

    def operator_for_domain(self, domain: str) -> Operator | None:
        domain = domain.lower()
        for op in self.operators:
            if domain in (op.cpm_domain, op.mail_domain):
                return op
        return None

    def operator_for_number(self, number: str) -> Operator | None:
        user = self.user_by_number(number)
        if user:
            return self.operator(user.operator)
        return next((op for op in self.operators if op.owns_number(number)), None)

    def iwf_operator(self) -> Operator | None:
        """The operator whose IWF sits beside the lab's SMSC and mail server (operator B by default):
        the one that serves legacy users' conversations with CPM users."""
        return next((op for op in self.operators if op.iwf and op.smpp_port is not None), None) \
            or next((op for op in self.operators if op.iwf), None)

    def iwf_operators(self) -> list[Operator]:
        """Every operator running an IWF (any operator may: operator A's serves its roaming users)."""
        return [op for op in self.operators if op.iwf]

    def iwf_names(self) -> list[str]:
        """The ladder names of every IWF ("IWF", "IWF-A" ...: parse_topology names each one)."""
        return [op.iwf.node_name or "IWF" for op in self.operators if op.iwf]

    def smsc_operator(self) -> Operator | None:
        """Who runs the lab's one SMSC (every IWF and handset binds there)."""
        return next((op for op in self.operators if op.smpp_port is not None), None)

    def user(self, user_id: str) -> User:
        for user in self.users:
            if user.id == user_id:
                return user
        raise KeyError(user_id)

    def user_by_number(self, number: str) -> User | None:
        digits = _digits(number)
        return next((u for u in self.users if u.msisdn == digits), None)

    def user_by_email(self, address: str) -> User | None:
        address = address.lower()
        return next((u for u in self.users if u.email and u.email.lower() == address), None)

    def user_by_uri(self, uri: str) -> User | None:
        """sip:mary@cpm-a.lab, tel:+15550101, sip:+15550101@cpm-a.lab;user=phone, mailto:."""
        uri = uri.strip().strip("<>")
        scheme, _, rest = uri.partition(":")
        scheme = scheme.lower()
        rest = rest.split(";", 1)[0]
        if scheme == "tel":
            return self.user_by_number(rest)
        if scheme == "mailto":
            return self.user_by_email(rest)
        if scheme in ("sip", "sips"):
            userpart, _, host = rest.partition("@")
            if userpart.startswith("+"):
                return self.user_by_number(userpart)
            canonical = f"sip:{userpart}@{host.split(':', 1)[0]}".lower()
            return next((u for u in self.users if u.sip and u.sip.lower() == canonical), None)
        return None

    def home_operator_of_uri(self, uri: str) -> Operator | None:
        """Which operator a request for this URI must be routed to."""
        user = self.user_by_uri(uri)
        if user:
            return self.operator(user.operator)
        scheme, _, rest = uri.strip("<>").partition(":")
        rest = rest.split(";", 1)[0]
        if scheme.lower() == "tel":
            return self.operator_for_number(rest)
        if scheme.lower() in ("sip", "sips"):
            userpart, _, host = rest.partition("@")
            if userpart.startswith("+"):
                return self.operator_for_number(userpart)
            return self.operator_for_domain(host.split(":", 1)[0])
        return None

    def user_by_node(self, node_name: str) -> User | None:
        return next((u for u in self.users if u.name == node_name), None)

    def shift_ports(self, offset: int) -> "Topology":
        """Move every listening port by the same offset (two labs on one machine)."""
        for op in self.operators:
            op.sip_port += offset
            for name in ("iwf_sip_port", "sip_tls_port", "iwf_sip_tls_port", "smpp_port", "smtp_port"):
                if getattr(op, name) is not None:
                    setattr(op, name, getattr(op, name) + offset)
        if self.content_port:
            self.content_port += offset
        return self

    def with_free_ports(self) -> "Topology":
        """Every listening port 0: the OS picks free ones (tests, --port-base 0)."""
        for op in self.operators:
            op.sip_port = 0
            op.sip_tls_port = 0
            if op.iwf:
                op.iwf_sip_port = 0
                op.iwf_sip_tls_port = 0
            if op.smpp_port is not None:
                op.smpp_port = 0
            if op.smtp_port is not None:
                op.smtp_port = 0
        self.content_port = 0
        return self


def _digits(number: str) -> str:
    """A global number without '+' and RFC 3966 visual separators ('-', '.', '(', ')')."""
    return "".join(ch for ch in number.split(";", 1)[0] if ch not in "+-.() ")


def _number_matches(pattern: str, number: str) -> bool:
    pattern, number = pattern.lstrip("+"), _digits(number)
    if pattern.endswith("*"):
        return number.startswith(pattern[:-1])
    return number == pattern


def _iwf_account(raw: dict[str, Any], where: str, need) -> IwfAccount:
    account = IwfAccount(
        system_id=str(need(raw, "system_id", where)), password=str(need(raw, "password", where)),
        node_name=str(raw.get("name", "")),
        thread_policy=str(raw.get("thread_policy", "last")),
        thread_expiry_seconds=float(raw.get("thread_expiry_seconds", 24 * 3600)),
        number_pool=[str(n) for n in raw.get("number_pool", [])],
        session_accept=str(raw.get("session_accept", "YES")),
        session_decline=str(raw.get("session_decline", "NO")),
        session_end=str(raw.get("session_end", "END")),
        session_request=str(raw.get("session_request", "CHAT")),
        session_timeout_seconds=float(raw.get("session_timeout_seconds", 60)),
        message_validity_seconds=float(raw.get("message_validity_seconds", 3600)),
        retry_seconds=float(raw.get("retry_seconds", 30)),
        fallback_seconds=float(raw.get("fallback_seconds", 0)),
        end_to_end_receipts=bool(raw.get("end_to_end_receipts", True)))
    if account.fallback_seconds < 0:
        raise TopologyError(f"{where}: fallback_seconds must be 0 (off) or more")
    if account.thread_policy not in THREAD_POLICIES:
        raise TopologyError(f"{where}: thread_policy must be one of {THREAD_POLICIES}")
    if account.thread_policy == "pool" and not account.number_pool:
        raise TopologyError(f"{where}: the 'pool' thread policy needs a number_pool")
    return account


def default_topology_path() -> Path:
    return Path(str(resources.files("iwlab.resources").joinpath("topology.toml")))


def load_topology(path: str | Path | None = None) -> Topology:
    path = Path(path) if path else default_topology_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TopologyError(f"{path}: {exc}") from exc
    return parse_topology(data, source=str(path))


def parse_topology(data: dict[str, Any], source: str = "<memory>") -> Topology:
    def need(table: dict[str, Any], key: str, where: str) -> Any:
        if key not in table:
            raise TopologyError(f"{source}: {where} needs '{key}'")
        return table[key]

    operators = []
    for i, raw in enumerate(data.get("operators", [])):
        where = f"operators[{i}]"
        iwf_raw = raw.get("iwf")
        operators.append(Operator(
            id=str(need(raw, "id", where)),
            name=raw.get("name", f"Operator {raw['id']}"),
            cpm_domain=str(need(raw, "cpm_domain", where)).lower(),
            numbers=[str(n) for n in raw.get("numbers", [])],
            sip_port=int(need(raw, "sip_port", where)),
            mail_domain=raw.get("mail_domain"),
            iwf_sip_port=raw.get("iwf_sip_port"),
            sip_tls_port=raw.get("sip_tls_port", int(raw.get("sip_port", 0)) + 1 if raw.get("sip_port") else 0),
            iwf_sip_tls_port=raw.get("iwf_sip_tls_port",
                                     int(raw["iwf_sip_port"]) + 1 if raw.get("iwf_sip_port") else None),
            smpp_port=raw.get("smpp_port"),
            smtp_port=raw.get("smtp_port"),
            iwf=_iwf_account(iwf_raw, f"{source}: {where}.iwf", need) if iwf_raw else None,
        ))
    if not operators:
        raise TopologyError(f"{source}: no [[operators]]")
    ids = {op.id for op in operators}
    smsc_runners = [op for op in operators if op.smpp_port is not None]
    if len(smsc_runners) > 1:
        raise TopologyError(f"{source}: the lab has one SMSC; only one operator may set smpp_port")
    for op in operators:
        if op.iwf and op.iwf_sip_port is None:
            raise TopologyError(f"{source}: operator {op.id} runs an IWF and needs iwf_sip_port")
        if op.iwf and not smsc_runners:
            raise TopologyError(f"{source}: operator {op.id} runs an IWF, which binds to the lab's SMSC: "
                                "some operator needs smpp_port")
        if op.iwf and not op.iwf.node_name:
            op.iwf.node_name = "IWF" if op.smpp_port is not None else f"IWF-{op.id}"
    names = [op.iwf.node_name for op in operators if op.iwf]
    if len(set(names)) != len(names):
        raise TopologyError(f"{source}: two IWFs named alike ({', '.join(names)}): give one a name")

    users = []
    for i, raw in enumerate(data.get("users", [])):
        where = f"users[{i}]"
        user = User(
            id=str(need(raw, "id", where)),
            name=str(need(raw, "name", where)),
            operator=str(need(raw, "operator", where)),
            device=str(need(raw, "device", where)),
            sip=raw.get("sip"), tel=raw.get("tel"), email=raw.get("email"),
            contacts=list(raw.get("contacts", [])),
            sip_password=str(raw["sip_password"]) if raw.get("sip_password") is not None else None,
            cpm_registered=bool(raw.get("cpm_registered", False)),
            cpm_capable=bool(raw.get("cpm_capable", raw.get("device") == "cpm")),
            roaming_without_cpm=bool(raw.get("roaming_without_cpm", False)),
            sip_transport=str(raw.get("sip_transport", "tcp")).lower(),
        )
        if user.operator not in ids:
            raise TopologyError(f"{source}: {where} ({user.name}) names unknown operator {user.operator!r}")
        if user.sip_transport not in SIP_TRANSPORTS:
            raise TopologyError(f"{source}: {where} ({user.name}) sip_transport must be one of {SIP_TRANSPORTS}")
        if user.device not in DEVICE_KINDS:
            raise TopologyError(f"{source}: {where} ({user.name}) device must be one of {DEVICE_KINDS}")
        if user.tel and not user.tel.startswith("+"):
            raise TopologyError(f"{source}: {where} ({user.name}) tel must be international (+...)")
        users.append(user)
    known = {u.id for u in users}
    for user in users:
        for contact in user.contacts:
            if contact not in known:
                raise TopologyError(f"{source}: {user.name}'s contacts name unknown user {contact!r}")

    smsc_raw = data.get("smsc", {})
    smsc = SmscSettings(
        handset_password=str(smsc_raw.get("handset_password", "iwlab")),
        throttle_every=int(smsc_raw.get("throttle_every", 0)),
        validity_seconds=float(smsc_raw.get("validity_seconds", 120)),
    )
    lab = data.get("lab", {})
    hosts = parse_hosts(lab.get("host", "127.0.0.1"), where=f"{source}: [lab] host")
    policy = str(lab.get("untagged_registrations", "cpm"))
    if policy not in UNTAGGED_POLICIES:
        raise TopologyError(f"{source}: [lab] untagged_registrations must be one of {UNTAGGED_POLICIES}")
    return Topology(host=hosts[0], hosts=hosts, operators=operators, users=users, smsc=smsc, source=source,
                    sip_transaction_seconds=float(lab.get("sip_transaction_seconds", 32.0)),
                    untagged_registrations=policy, tls=bool(lab.get("tls", True)),
                    content_port=int(lab.get("content_port", 0)))


def parse_hosts(value: Any, *, where: str = "--host") -> list[str]:
    """"127.0.0.1", "::1", "127.0.0.1,::1" or a list: the addresses to listen on (literal IPs only)."""
    items = value if isinstance(value, list) else str(value).split(",")
    hosts = [str(item).strip().strip("[]") for item in items if str(item).strip()]
    for host in hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise TopologyError(f"{where}: {host!r} is not an IP address (e.g. 127.0.0.1, ::1)") from None
    if not hosts:
        raise TopologyError(f"{where}: no address")
    return hosts
