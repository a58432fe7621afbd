"""SDP (RFC 4566 subset) for MSRP sessions (RFC 4975 8, RFC 6135), and offer/answer (RFC 3264).

Sans-I/O: bytes in, objects out, and back. Only what an MSRP endpoint uses is
modelled; other lines and attributes are tolerated on input (media-level
attributes we do not model are kept in ``extra``, verbatim).
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

from iwlab.backends.protocols.msrp import MsrpParseError, parse_msrp_uri

TRANSPORTS = ("TCP/MSRP", "TCP/TLS/MSRP")
_SETUP_ANSWER = {"active": "passive", "passive": "active", "actpass": "passive"}


class SdpError(ValueError):
    """An SDP an MSRP endpoint cannot use; ``status`` is the SIP answer (488 Not Acceptable Here)."""

    def __init__(self, reason: str, status: int = 488) -> None:
        self.reason = reason
        self.status = status
        super().__init__(reason)


def _new_sdp_id() -> int:
    return secrets.randbelow(2**31)


@dataclass
class MsrpSdp:
    host: str                                # c=IN IP4|IP6 <host> (also the o= address)
    port: int                                # m=message <port> TCP/MSRP *
    path: list[str]                          # a=path: the URIs to reach this endpoint, itself last
    accept_types: list[str] = field(default_factory=list)
    accept_wrapped_types: list[str] = field(default_factory=list)
    setup: str | None = None                 # RFC 6135: active / passive / actpass
    session_name: str = "-"
    origin_user: str = "-"
    session_id: int = field(default_factory=_new_sdp_id)
    version: int = 1
    transport: str = "TCP/MSRP"
    extra: list[str] = field(default_factory=list)   # other media-level attributes, without "a="

    @property
    def address_type(self) -> str:
        return "IP6" if ":" in self.host else "IP4"

    def connect_address(self) -> tuple[str, int]:
        """Where the active side opens its TCP connection: the first hop of ``path``."""
        uri = parse_msrp_uri(self.path[0])
        return uri.host.strip("[]"), uri.port if uri.port is not None else self.port

    def to_bytes(self) -> bytes:
        lines = ["v=0", f"o={self.origin_user} {self.session_id} {self.version} IN {self.address_type} {self.host}",
                 f"s={self.session_name}", f"c=IN {self.address_type} {self.host}", "t=0 0",
                 f"m=message {self.port} {self.transport} *"]
        if self.accept_types:
            lines.append("a=accept-types:" + " ".join(self.accept_types))
        if self.accept_wrapped_types:
            lines.append("a=accept-wrapped-types:" + " ".join(self.accept_wrapped_types))
        lines.append("a=path:" + " ".join(self.path))
        if self.setup is not None:
            lines.append(f"a=setup:{self.setup}")
        lines += [f"a={attribute}" for attribute in self.extra]
        if any("\r" in line or "\n" in line for line in lines):
            raise ValueError("CR/LF inside an SDP line")
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def parse_sdp(data: bytes) -> MsrpSdp:
    """The first ``m=message`` stream of an SDP body; SdpError if an MSRP endpoint cannot use it."""
    session: dict[str, str] = {}
    media: list[tuple[str, list[tuple[str, str]]]] = []   # (m= value, its lines)
    for line in re.split(r"\r?\n", data.decode("utf-8", "replace")):
        kind, eq, value = line.partition("=")
        if not eq or len(kind) != 1:   # not an SDP line: tolerated, like unknown ones
            continue
        if kind == "m":
            media.append((value, []))
        elif media:
            media[-1][1].append((kind, value))
        else:
            session.setdefault(kind, value)
            if kind == "a" and value.startswith("setup:"):
                session["setup"] = value[6:].strip()
    stream = next(((m, lines) for m, lines in media if m.split(" ", 1)[0] == "message"), None)
    if stream is None:
        raise SdpError("no m=message stream")
    m_line, lines = stream
    parts = m_line.split()
    if len(parts) < 3:
        raise SdpError(f"malformed m= line {m_line[:40]!r}")
    if parts[2].upper() not in TRANSPORTS:
        raise SdpError(f"m=message transport {parts[2][:20]!r} is not TCP/MSRP")
    if not re.fullmatch(r"[0-9]{1,5}", parts[1]) or not 0 < int(parts[1]) < 65536:
        raise SdpError(f"bad m=message port {parts[1][:20]!r}")
    connection = next((v for k, v in lines if k == "c"), session.get("c"))
    c_parts = (connection or "").split()
    if len(c_parts) != 3 or c_parts[0] != "IN" or c_parts[1] not in ("IP4", "IP6"):
        raise SdpError("no usable c= line")
    sdp = MsrpSdp(host=c_parts[2].split("/", 1)[0], port=int(parts[1]), path=[], setup=session.get("setup"),
                  session_name=session.get("s", "-"), transport=parts[2].upper())
    origin = session.get("o", "").split()
    # ASCII digits only, and few of them: str.isdigit() takes '²' (int() does not) and int() refuses
    # more than 4300 digits. An unusable o= is tolerated like other lines.
    if len(origin) >= 3 and all(re.fullmatch(r"[0-9]{1,20}", n) for n in origin[1:3]):
        sdp.origin_user, sdp.session_id, sdp.version = origin[0], int(origin[1]), int(origin[2])
    for kind, value in lines:
        if kind != "a":
            continue
        name, _, attr = value.partition(":")
        if name == "accept-types":
            sdp.accept_types = attr.split()
        elif name == "accept-wrapped-types":
            sdp.accept_wrapped_types = attr.split()
        elif name == "path":
            sdp.path = attr.split()
        elif name == "setup":
            sdp.setup = attr.strip()
        else:
            sdp.extra.append(value)
    if not sdp.path:
        raise SdpError("no a=path in the m=message stream")
    try:
        for uri in sdp.path:
            parse_msrp_uri(uri)
    except MsrpParseError as exc:
        raise SdpError(f"a=path: {exc.reason}") from None
    if not sdp.accept_types:
        raise SdpError("no a=accept-types in the m=message stream")
    return sdp


def msrp_path(host: str, port: int, session_id: str, *, tls: bool = False) -> str:
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"msrp{'s' if tls else ''}://{host}:{port}/{session_id};tcp"


def offer(*, host: str, port: int, session_id_path: str, accept_types=("message/cpim", "text/plain"),
          accept_wrapped_types=("text/plain", "message/imdn+xml"), setup: str = "active") -> MsrpSdp:
    """A CPM-style offer; the offerer is active: it opens the connection (RFC 4975 5.4, RFC 6135)."""
    return MsrpSdp(host=host, port=port, path=[msrp_path(host, port, session_id_path)],
                   accept_types=list(accept_types), accept_wrapped_types=list(accept_wrapped_types), setup=setup)


def _matches(ours: str, theirs: str) -> bool:
    a, b = ours.split(";", 1)[0].strip().lower(), theirs.split(";", 1)[0].strip().lower()
    if a == b or "*" in (a, b):
        return True
    return (a.endswith("/*") and b.startswith(a[:-1])) or (b.endswith("/*") and a.startswith(b[:-1]))


def _common(ours, theirs) -> list[str]:
    """Our types the other side accepts too; our "*" stands for all of theirs."""
    common: list[str] = []
    for t in ours:
        for m in (theirs if t == "*" else [t] if any(_matches(t, o) for o in theirs) else []):
            if m not in common:
                common.append(m)
    return common


def answer(offer: MsrpSdp, *, host: str, port: int, path: str, accept_types=("message/cpim", "text/plain"),
           accept_wrapped_types=("text/plain", "message/imdn+xml")) -> MsrpSdp:
    """The answer to ``offer``: our types that the offer accepts too (SdpError 488 if none); setup
    passive to an active or actpass offer, active to a passive one, absent if the offer has none
    (then RFC 4975's rule holds: the offerer connects)."""
    if offer.setup is not None and offer.setup not in _SETUP_ANSWER:
        raise SdpError(f"unsupported a=setup:{offer.setup[:20]}")
    types = _common(accept_types, offer.accept_types)
    if not types:
        raise SdpError("no accept-types in common")
    return MsrpSdp(host=host, port=port, path=[path], accept_types=types,
                   accept_wrapped_types=_common(accept_wrapped_types, offer.accept_wrapped_types),
                   setup=_SETUP_ANSWER.get(offer.setup) if offer.setup else None, transport=offer.transport)
