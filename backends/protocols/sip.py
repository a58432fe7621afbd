"""SIP message codec (an RFC 3261 subset), sans-I/O in the style of h11.

Bytes in, objects out, and back: no sockets, no event loop.

* ``parse_message`` takes one complete message (a UDP datagram, a file).
* ``SipStreamParser`` frames a TCP byte stream by Content-Length (RFC 3261 18.3).
* ``validate_request`` makes the semantic checks a UAS / registrar owes a
  request before acting on it (RFC 4475 sections 3.2 and 3.3).

Text is decoded as UTF-8 with ``surrogateescape`` so whatever octets a peer
sent survive a parse / serialise round trip unchanged.
"""
from __future__ import annotations

import functools
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, TypeVar
from urllib.parse import quote, unquote

from iwlab.backends.protocols import revoke
from iwlab.backends.protocols.cpim import CpimError, parse_cpim, parse_imdn_xml

SIP_VERSION = "SIP/2.0"
MAX_HEADER_SIZE = 64 * 1024      # a header block larger than this -> 513
MAX_BODY_SIZE = 1024 * 1024      # a Content-Length larger than this -> 413
_MAX_CSEQ = 2**32 - 1            # RFC 3261 8.1.1.5: a 32-bit unsigned integer

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE = re.compile(_TOKEN)
_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"]+")   # any absolute URI, no LWS
_HOST = r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+"
_HEAD_END = re.compile(rb"\r?\n\r?\n")                          # bare LF tolerated
# Patterns the hot path uses, compiled once (re's own cache lookup cost ~1% of the lab's time).
_VIA_TRANSPORT = re.compile(r"^(\s*SIP\s*/\s*2\.0\s*/\s*)[A-Za-z0-9.!%*_+`'~-]+", re.I)
_BARE_RPORT = re.compile(r";\s*rport(?=\s*(;|$))", re.I)
_DIGITS = re.compile(r"[0-9]+")
_CALL_ID = re.compile(r"\S+")
_MAX_FORWARDS = re.compile(r"[0-9]{1,10}")
_LINE_SPLIT = re.compile(r"\r?\n")
_REQUEST_LINE = re.compile(rf"({_TOKEN}) (\S+) ([Ss][Ii][Pp]/[0-9]+\.[0-9]+)")
_STATUS_LINE = re.compile(r"([Ss][Ii][Pp]/[0-9]+\.[0-9]+) ([0-9]{3})(?: (.*))?", re.S)
_VIA_RE = re.compile(
    rf"\s*({_TOKEN})\s*/\s*({_TOKEN})\s*/\s*({_TOKEN})\s+({_HOST})(?:\s*:\s*([0-9]{{1,5}}))?(.*)", re.S)
_CSEQ_RE = re.compile(rf"\s*([0-9]+)\s+({_TOKEN})\s*")
_QUOTED_RE = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_PARAM_VALUE_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~\[\]:]+")   # token, or host incl. IPv6 reference
_DATE_RE = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov"
                      r"|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT")

# RFC 3261 7.3.3 and later RFCs' compact forms.
_COMPACT = {"a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
            "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact", "k": "Supported",
            "l": "Content-Length", "m": "Contact", "n": "Identity-Info", "o": "Event", "r": "Refer-To",
            "s": "Subject", "t": "To", "u": "Allow-Events", "v": "Via", "x": "Session-Expires", "y": "Identity"}
_CANONICAL = {name.lower(): name for name in (
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Authentication-Info",
    "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
    "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info", "Expires", "From",
    "In-Reply-To", "Max-Forwards", "Min-Expires", "MIME-Version", "Organization", "Priority",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "Record-Route", "Reply-To", "Require",
    "Retry-After", "Route", "Server", "Subject", "Supported", "Timestamp", "To", "Unsupported", "User-Agent",
    "Via", "Warning", "WWW-Authenticate", "RAck", "RSeq", "Event", "Allow-Events", "Subscription-State",
    "Refer-To", "Referred-By", "Path", "Service-Route", "Session-Expires", "Min-SE", "Identity",
    "Identity-Info", "Privacy", "Reason", "Accept-Contact", "Reject-Contact", "Request-Disposition",
    "P-Asserted-Identity", "P-Preferred-Identity", "P-Asserted-Service", "P-Preferred-Service",
    "P-Associated-URI", "P-Called-Party-ID", "P-Charging-Vector", "Conversation-ID", "Contribution-ID",
    "InReplyTo-Contribution-ID", "Session-Replaces", "Message-Expires", "Message-UID")}
_CANONICAL.update(_COMPACT)
# Headers whose grammar is a comma-separated list (RFC 3261 7.3.1); get_all splits these.
_LIST_HEADERS = {n.lower() for n in (
    "Via", "Contact", "Route", "Record-Route", "Accept", "Accept-Encoding", "Accept-Language", "Allow",
    "Supported", "Require", "Proxy-Require", "Unsupported", "Path", "Service-Route", "Allow-Events",
    "Content-Encoding", "Content-Language", "In-Reply-To", "Alert-Info", "Call-Info", "Error-Info",
    "Warning", "Reason", "P-Asserted-Identity", "P-Preferred-Identity", "P-Associated-URI",
    "Accept-Contact", "Reject-Contact")}
_SINGLE_HEADERS = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Type")
_MANDATORY_REQUEST_HEADERS = ("To", "From", "Call-ID", "CSeq", "Via")   # not Max-Forwards: RFC 4475 3.4.1

REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 183: "Session Progress", 200: "OK",
    202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 413: "Request Entity Too Large", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large", 603: "Decline",
}
_CLASS_PHRASES = {1: "Provisional", 2: "Success", 3: "Redirection", 4: "Client Error", 5: "Server Error",
                  6: "Global Failure"}


class SipParseError(Exception):
    """A message that cannot be used; ``status`` is what a server should answer with.

    ``partial`` is the best-effort message (Via/From/To/Call-ID/CSeq as received)
    so a server can still build its error response; ``raw`` the offending octets.
    """

    def __init__(self, status: int, reason: str, partial: SipRequest | SipResponse | None = None,
                 raw: bytes = b"") -> None:
        # The reason may end up in a reason phrase: keep it to one printable ASCII line.
        self.status = status
        self.reason = re.sub(r"[^\x20-\x7e]", "?", reason)[:120]
        self.partial = partial
        self.raw = raw
        super().__init__(f"{status} {self.reason}")


@functools.lru_cache(maxsize=1024)   # every message brings the same few dozen names
def _canon(name: str) -> str:
    name = name.strip()
    return _CANONICAL.get(name.lower(), name)


@functools.lru_cache(maxsize=512)
def _key(name: str) -> str:
    """The lookup key of a header name: canonical (compact forms expanded), lower case."""
    return _canon(name).lower()


def _split_top(value: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quoted strings and <...>; parts are stripped, empty ones kept."""
    if '"' not in value and "<" not in value:   # the common case (every Via): nothing to protect
        return [part.strip() for part in value.split(sep)]
    parts, buf, quoted, angle, i = [], [], False, 0, 0
    while i < len(value):
        ch = value[i]
        if quoted and ch == "\\":
            buf.append(value[i:i + 2])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            angle += 1
        elif not quoted and ch == ">":
            angle = max(0, angle - 1)
        elif not quoted and not angle and ch == sep:
            parts.append("".join(buf).strip())
            buf = []
            i += 1
            continue
        buf.append(ch)
        i += 1
    parts.append("".join(buf).strip())
    return parts


def _elements(values: Iterable[str]) -> Iterator[str]:
    """The non-empty elements of a list header's fields (Via: a, b  ->  a, b)."""
    return (part for value in values for part in _split_top(value, ",") if part)


class Headers:
    """Ordered multi-map of header fields: names case-insensitive, compact forms expanded."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        self._keys: list[str] = []   # lower-case canonical names, parallel to _items (hot path)
        self._by_key: dict[str, list[str]] | None = None
        self._sound_index: dict[str, list[str]] | None = None   # the index _header_problem found sound
        for name, value in items:
            self.add(name, value)

    @staticmethod
    def _field(name: str, value: str) -> tuple[str, str]:
        name = _canon(name)
        if not _TOKEN_RE.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if "\r" in value or "\n" in value:   # would let a value inject header lines
            raise ValueError(f"CR/LF in the value of {name}")
        return name, value

    def _index(self) -> dict[str, list[str]]:
        # A proxy reads the same few headers many times per message: index them once
        # (rebuilt lazily after any change). Callers must not change the lists.
        index = self._by_key
        if index is None:
            index = {}
            for k, item in zip(self._keys, self._items):
                index.setdefault(k, []).append(item[1])
            self._by_key = index
        return index

    def _values(self, name: str) -> list[str]:
        return list(self._index().get(_key(name), ()))

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value; for list headers (Via, Contact ...) the first list element."""
        key = _key(name)
        values = self._index().get(key)
        if not values:
            return default
        if key not in _LIST_HEADERS:
            return values[0]
        return next(_elements(values), default)

    def get_all(self, name: str) -> list[str]:
        values = self._values(name)
        if values and _key(name) in _LIST_HEADERS:
            return list(_elements(values))
        return values

    def add(self, name: str, value: str) -> None:
        item = self._field(name, value)
        self._items.append(item)
        self._keys.append(item[0].lower())
        self._by_key = None

    def _position(self, name: str, default: int) -> int:
        key = name.lower()
        return next((i for i, k in enumerate(self._keys) if k == key), default)

    def set(self, name: str, value: str) -> None:
        item = self._field(name, value)
        at = self._position(item[0], len(self._items))
        self.remove(name)
        at = min(at, len(self._items))
        self._items.insert(at, item)
        self._keys.insert(at, item[0].lower())
        self._by_key = None

    def remove(self, name: str) -> None:
        key = _key(name)
        kept = [(k, item) for k, item in zip(self._keys, self._items) if k != key]
        self._keys = [k for k, _ in kept]
        self._items = [item for _, item in kept]
        self._by_key = None

    def prepend(self, name: str, value: str) -> None:
        """Insert before the first field of that name (or at the top): a proxy's new Via."""
        item = self._field(name, value)
        at = self._position(item[0], 0)
        self._items.insert(at, item)
        self._keys.insert(at, item[0].lower())
        self._by_key = None

    def replace_top(self, name: str, value: str) -> None:
        """Replace the first value of a list header (a Via), where it stands; the others follow
        it as fields of their own."""
        values = self.get_all(name)
        if not values:
            self.add(name, value)
            return
        at = self._position(name, len(self._items))
        self.remove(name)
        for offset, item in enumerate(self._field(name, v) for v in [value, *values[1:]]):
            self._items.insert(at + offset, item)
            self._keys.insert(at + offset, item[0].lower())
        self._by_key = None

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def copy(self) -> Headers:
        clone = Headers()
        clone._items = list(self._items)
        clone._keys = list(self._keys)
        clone._by_key = None
        return clone

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._index().get(_key(name)))

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def _serialise(start_line: str, headers: Headers, body: bytes | str) -> bytes:
    if isinstance(body, str):
        body = body.encode("utf-8")
    lines, wrote_length = [start_line.replace("\r", " ").replace("\n", " ")], False
    for name, value in headers.items():
        if name == "Content-Length":   # always the real length, written once, where it stood
            if wrote_length:
                continue
            value, wrote_length = str(len(body)), True
        lines.append(f"{name}: {value}")
    if not wrote_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + bytes(body)


@dataclass
class SipRequest:
    method: str
    uri: str
    headers: Headers
    body: bytes = b""
    version: str = SIP_VERSION
    # The octets it arrived as (a parsed message; b"" for one built here): what the trace records.
    wire: bytes = field(default=b"", repr=False, compare=False)

    def to_bytes(self) -> bytes:
        return _serialise(f"{self.method} {self.uri} {self.version}", self.headers, self.body)


@dataclass
class SipResponse:
    status: int          # 0 only in a SipParseError.partial whose status code was unreadable
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = SIP_VERSION
    # The octets it arrived as (a parsed message; b"" for one built here): what the trace records.
    wire: bytes = field(default=b"", repr=False, compare=False)

    def to_bytes(self) -> bytes:
        return _serialise(f"{self.version} {self.status:03d} {self.reason}", self.headers, self.body)


SipMessage = SipRequest | SipResponse


# -- header values -------------------------------------------------------------


def _scan_quoted(text: str, start: int) -> tuple[str, int]:
    """Unescape the quoted-string at ``text[start] == '"'``; return it and the index after it."""
    m = _QUOTED_RE.match(text, start)
    if not m:
        raise SipParseError(400, "unterminated quoted string")
    return re.sub(r"\\(.)", r"\1", m.group()[1:-1], flags=re.S), m.end()


def _parse_params(text: str, what: str) -> dict[str, str | None]:
    """``;name[=value]`` pairs (LWS allowed around ; and =); names lower-cased, quoted values kept quoted."""
    text = text.strip()
    if not text:
        return {}
    if not text.startswith(";"):
        raise SipParseError(400, f"unexpected text after the {what}")
    params: dict[str, str | None] = {}
    for item in _split_top(text[1:], ";"):
        name, eq, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not _TOKEN_RE.fullmatch(name):
            raise SipParseError(400, f"empty or malformed parameter after the {what}")
        if eq and not (_PARAM_VALUE_RE.fullmatch(value) or _QUOTED_RE.fullmatch(value)):
            raise SipParseError(400, f"malformed value of parameter {name[:30]}")
        params[name.lower()] = value if eq else None
    return params


@dataclass
class NameAddr:
    """From / To / Contact / Route value: display name, URI and header parameters."""
    display: str | None
    uri: str
    params: dict[str, str | None] = field(default_factory=dict)

    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        display = ""
        if self.display is not None:
            display = '"' + self.display.replace("\\", "\\\\").replace('"', '\\"') + '" '
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"{display}<{self.uri}>{params}"


def parse_name_addr(value: str) -> NameAddr:
    """``"Display" <uri>;params``, ``token words <uri>``, or a bare addr-spec ``uri;params``."""
    text = value.strip()
    display: str | None
    if text.startswith('"'):
        display, end = _scan_quoted(text, 0)
        rest = text[end:].lstrip()
        if not rest.startswith("<"):
            raise SipParseError(400, "quoted display name not followed by <URI>")
    else:
        lt = text.find("<")
        if lt < 0:   # addr-spec: the URI ends at the first ';' or LWS, the rest are header params
            uri = re.match(r"[^;\s]*", text).group()  # type: ignore[union-attr]  # matches always
            if "?" in uri or "," in uri:   # RFC 3261 20: such a URI must be enclosed in <>
                raise SipParseError(400, "URI with '?' or ',' not enclosed in <>")
            if not _URI_RE.fullmatch(uri):
                raise SipParseError(400, "malformed URI")
            return NameAddr(None, uri, _parse_params(text[len(uri):], "URI"))
        words = text[:lt].split()
        if not all(_TOKEN_RE.fullmatch(w) for w in words):
            raise SipParseError(400, "display name is neither tokens nor a quoted string")
        display, rest = " ".join(words) or None, text[lt:]
    gt = rest.find(">")
    if gt < 0:
        raise SipParseError(400, "'<' without '>'")
    uri = rest[1:gt]
    if not _URI_RE.fullmatch(uri):   # catches LWS inside <> (RFC 4475 3.1.2.14)
        raise SipParseError(400, "malformed URI inside <>")
    return NameAddr(display, uri, _parse_params(rest[gt + 1:], "URI"))


@dataclass
class SipUri:
    scheme: str                        # lower case: "sip", "sips", "tel", or anything else
    user: str | None = None            # %-escapes decoded; the number for tel:
    host: str = ""                     # IPv6 references keep their brackets
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)   # names lower-cased, escapes decoded
    headers: dict[str, str] = field(default_factory=dict)
    password: str | None = None
    opaque: str = ""                   # the text after "scheme:" for schemes not modelled here


def _unescape(text: str) -> str:
    return unquote(text, errors="surrogateescape")


def _uri_params(parts: list[str]) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for part in parts:
        name, eq, value = part.partition("=")
        if not name:
            raise SipParseError(400, "empty URI parameter")
        params[_unescape(name).lower()] = _unescape(value) if eq else None
    return params


def parse_uri(uri: str) -> SipUri:
    """sip:/sips: URIs in full, tel: as number + params, any other scheme kept opaque."""
    if not _URI_RE.fullmatch(uri):
        raise SipParseError(400, "malformed URI")
    scheme, rest = uri.split(":", 1)
    scheme = scheme.lower()
    if scheme == "tel":
        number, *params = rest.split(";")
        return SipUri("tel", user=_unescape(number), params=_uri_params(params))
    if scheme not in ("sip", "sips"):
        return SipUri(scheme, opaque=rest)
    # The user part may itself hold ';', '?' and ':' (RFC 4475 3.1.1.2), never an unescaped '@'.
    userinfo, at, hostpart = rest.rpartition("@")
    user = password = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        user, password = _unescape(user_text), (_unescape(password_text) if colon else None)
    hostpart, _, header_text = hostpart.partition("?")
    hostport, *params = hostpart.split(";")
    m = re.fullmatch(rf"({_HOST})(?::([0-9]{{1,5}}))?", hostport)
    if not m or (m.group(2) and int(m.group(2)) > 65535):
        raise SipParseError(400, "malformed host or port in URI")
    headers = {}
    for item in filter(None, header_text.split("&")):
        name, _, value = item.partition("=")
        headers[_unescape(name)] = _unescape(value)
    return SipUri(scheme, user, m.group(1).lower(), int(m.group(2)) if m.group(2) else None,
                  _uri_params(params), headers, password)


@dataclass
class Via:
    protocol: str          # "SIP/2.0"
    transport: str         # upper case: "UDP", "TCP", "TLS", "SCTP", or an extension
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)   # branch, received, rport (None if valueless)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")


def parse_via(value: str) -> Via:
    """One via-parm (split a Via header with ``Headers.get_all`` first)."""
    m = _VIA_RE.fullmatch(value)
    if not m or (m.group(5) and int(m.group(5)) > 65535):
        raise SipParseError(400, "malformed Via")
    name, version, transport, host, port, rest = m.groups()
    return Via(f"{name.upper()}/{version}", transport.upper(), host, int(port) if port else None,
               _parse_params(rest, "Via sent-by"))


def parse_cseq(value: str) -> tuple[int, str]:
    m = _CSEQ_RE.fullmatch(value)
    if not m:
        raise SipParseError(400, "malformed CSeq")
    digits = m.group(1).lstrip("0") or "0"
    if len(digits) > 10 or int(digits) > _MAX_CSEQ:   # length guard first: int() of huge strings is slow
        raise SipParseError(400, "sequence number larger than 2**32-1")
    return int(digits), m.group(2)


def hostport(host: str, port: int | None = None) -> str:
    """host[:port] as SIP writes it: an IPv6 address in brackets (RFC 3261 25.1, RFC 5118)."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return shown if port is None else f"{shown}:{port}"


def with_via_transport(via: str, transport: str) -> str:
    """A Via value with its transport token replaced (the transport that really carries it)."""
    return _VIA_TRANSPORT.sub(rf"\g<1>{transport.upper()}", via, count=1)


def mark_received(via: str, source: tuple[str, int]) -> str:
    """The top Via of a request as a server keeps it (RFC 3261 18.2.1, RFC 3581): received= the
    source address when it differs from sent-by (always, when the client asked for rport), and
    rport= the source port when the client asked for it. Responses go back there, which is what
    lets a client behind NAT, or one that sent from another port, hear them."""
    try:
        parsed = parse_via(via)
    except SipParseError:
        return via
    wants_rport = "rport" in parsed.params
    value = via
    if wants_rport:
        value = _BARE_RPORT.sub(f";rport={source[1]}", value, count=1)
    if (wants_rport or parsed.host.strip("[]") != source[0]) and parsed.received is None:
        value += f";received={source[0]}"
    return value


_NOT_IN_QUOTED = re.compile(r"[\x00-\x1f\x7f]")   # RFC 3261 25.1: not even as a quoted-pair (CR, LF)
_HOST_RE = re.compile(_HOST)


def quote_display_name(name: str) -> str:
    """A display name as an RFC 3261 25.1 quoted-string, whatever it holds: `"` and `\\`
    escaped as quoted-pairs, and what a quoted-string cannot carry at all (CR, LF and the other
    control characters, which an RFC 2047 word may decode to) as spaces."""
    text = " ".join(_NOT_IN_QUOTED.sub(" ", name).split())
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def name_addr(uri: str, display: str | None = None, *, tag: str | None = None) -> str:
    """A From/To value: `"display" <uri>;tag=...`, the display name quoted whatever it holds."""
    shown = f"{quote_display_name(display)} " if display else ""
    return f"{shown}<{uri}>" + (f";tag={tag}" if tag else "")


def sip_uri_for_address(address: str) -> str:
    """A mail address (local@domain) as a sip: URI: the local part %-escaped down to RFC 3261's
    unreserved characters, so `"x y"@evil.test` becomes sip:%22x%20y%22@evil.test. Raises
    ValueError for a domain that is no SIP host (IDN domains go as their A-label)."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not a local@domain address: {address[:60]!r}")
    try:
        host = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError(f"domain {domain[:60]!r} is no host name") from None
    if not _HOST_RE.fullmatch(host):
        raise ValueError(f"domain {domain[:60]!r} is no SIP host")
    user = quote(local.encode("utf-8", "surrogateescape"), safe="-_.!~*'()")
    return f"sip:{user}@{host}"


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)   # the RFC 3261 magic cookie marks a unique branch


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(10)}@{host}"


# -- whole messages ---------------------------------------------------------------


def _parse_start_line(line: str, headers: Headers) -> tuple[SipMessage, tuple[int, str] | None]:
    """The message (best effort) and the start line's problem, if any."""
    if line[:4].upper() == "SIP/":
        m = _STATUS_LINE.fullmatch(line)
        if not m or not 100 <= int(m.group(2)) <= 699:
            return SipResponse(0, line[:80], headers), (400, "malformed status line")
        response = SipResponse(int(m.group(2)), m.group(3) or "", headers, version=m.group(1).upper())
        if response.version != SIP_VERSION:
            return response, (505, "Version Not Supported")
        return response, None
    m = _REQUEST_LINE.fullmatch(line)
    if not m:
        words = line.split()
        guess = SipRequest(words[0] if words else "", words[1] if len(words) > 1 else "", headers)
        if line != line.strip() or "  " in line:
            return guess, (400, "extra whitespace in the request line")
        return guess, (400, "malformed request line")
    request = SipRequest(m.group(1), m.group(2), headers, version=m.group(3).upper())
    if not _URI_RE.fullmatch(request.uri):   # e.g. <sip:...> (RFC 4475 3.1.2.7)
        return request, (400, "malformed Request-URI")
    if request.version != SIP_VERSION:
        return request, (505, "Version Not Supported")
    return request, None


def _parse_head(head: bytes) -> tuple[SipMessage, tuple[int, str] | None]:
    """Start line and header fields, unfolded; never raises, reports the first problem."""
    lines = _LINE_SPLIT.split(head.decode("utf-8", "surrogateescape"))
    fields: list[list[str]] = []
    problem = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):   # folded continuation: equivalent to one SP (RFC 3261 7.3.1)
            if fields:
                fields[-1][1] += " " + line.strip(" \t")
            else:
                problem = problem or (400, "continuation line before the first header")
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _TOKEN_RE.fullmatch(name) or "\r" in value:   # a bare CR ends no line
            problem = problem or (400, "malformed header line")
            continue
        fields.append([name, value])
    headers = Headers()
    headers._items = [(_canon(name), value.strip(" \t")) for name, value in fields]
    headers._keys = [name.lower() for name, _ in headers._items]
    headers._by_key = None
    message, start_problem = _parse_start_line(lines[0], headers)
    return message, start_problem or problem


def _content_length(headers: Headers) -> int | None:
    values = {v.strip() for v in headers._values("Content-Length")}
    if not values:
        return None
    if len(values) > 1:   # RFC 4475 3.3.9: as bad as no value at all
        raise SipParseError(400, "conflicting Content-Length values")
    value = values.pop()
    if not _DIGITS.fullmatch(value):
        raise SipParseError(400, "invalid Content-Length")
    value = value.lstrip("0") or "0"
    return int(value) if len(value) < 16 else 10**16


_REMEMBERED_LENGTH = 1024    # header values up to this long have what is read from them remembered

_R = TypeVar("_R")


def _remembered(read: Callable[..., _R]) -> Callable[..., _R]:
    """Remember what `read` makes of a header value (its last argument). The same From, To,
    Via and Route values cross every hop of a message and every message of a dialog.
    Bounded in count (4,096) and, by _REMEMBERED_LENGTH, in size: longer values are read each time."""
    cached = functools.lru_cache(maxsize=4096)(read)

    @functools.wraps(read)
    def lookup(*args: str) -> _R:
        return cached(*args) if len(args[-1]) <= _REMEMBERED_LENGTH else read(*args)
    return lookup


@_remembered
def _value_problem(kind: str, value: str) -> str | None:
    try:
        parse_via(value) if kind == "via" else parse_name_addr(value)
    except SipParseError as exc:
        return exc.reason
    return None


def _header_problem(message: SipMessage) -> tuple[int, str] | None:
    """Grammar of the headers this codec itself interprets. Headers found sound stay so until
    they change (which makes a new index): the parser checks every message, and a server's
    validate_request() need not check the same fields again."""
    headers = message.headers
    index = headers._index()
    if headers._sound_index is index:
        return None
    problem = _first_header_problem(headers, index)
    if problem is None:
        headers._sound_index = index
    return problem


def _first_header_problem(headers: Headers, index: dict[str, list[str]]) -> tuple[int, str] | None:
    """The first problem of these headers (index: their _index()), None if they are sound."""
    if len(index) < len(headers._keys):   # some name repeats: is it one that must not?
        for name in _SINGLE_HEADERS:
            if len(index.get(_key(name), ())) > 1:
                return 400, f"more than one {name} header"
    for name in ("Via", "Contact", "Route", "Record-Route"):
        for value in index.get(_key(name), ()):
            for part in _split_top(value, ","):
                if not part:
                    return 400, f"empty element in {name}"
                if name == "Contact" and part == "*":
                    continue
                problem = _value_problem("via" if name == "Via" else "name-addr", part)
                if problem:
                    return 400, f"{name}: {problem}"
    for name in ("From", "To"):
        if name in headers:
            problem = _value_problem("name-addr", headers.get(name) or "")
            if problem:
                return 400, f"{name}: {problem}"
    try:
        if "CSeq" in headers:
            parse_cseq(headers.get("CSeq") or "")
    except SipParseError as exc:
        return 400, f"CSeq: {exc.reason}"
    call_id = headers.get("Call-ID")
    if call_id is not None and not _CALL_ID.fullmatch(call_id):
        return 400, "malformed Call-ID"
    return None


def parse_message(data: bytes, *, max_header_size: int = MAX_HEADER_SIZE,
                  max_body_size: int = MAX_BODY_SIZE) -> SipMessage:
    """Parse one complete message; octets after Content-Length are discarded (RFC 3261 18.3).

    Without a Content-Length the body is everything after the header block, as
    for a UDP datagram. Raises SipParseError.
    """
    data = bytes(data)
    stripped = data.lstrip(b"\r\n")   # CRLFs before the start line are ignored (RFC 3261 7.5)
    end = _HEAD_END.search(stripped)
    head, rest = (stripped[:end.start()], stripped[end.end():]) if end else (stripped.rstrip(b"\r\n"), b"")
    if len(head) > max_header_size:
        raise SipParseError(513, "Message Too Large", raw=data)
    message, problem = _parse_head(head)
    message.body = rest
    if problem is None:
        try:
            length = _content_length(message.headers)
        except SipParseError as exc:
            problem = (exc.status, exc.reason)
        else:
            if length is not None and length > max_body_size:
                message.body, problem = b"", (413, "Request Entity Too Large")
            elif length is not None and length > len(rest):
                problem = (400, "Content-Length larger than the message")
            elif length is not None:
                message.body = rest[:length]
    if problem is None and end is None:
        problem = (400, "no empty line after the header fields")
    problem = problem or _header_problem(message)
    if problem:
        raise SipParseError(*problem, partial=message, raw=data)
    message.wire = data
    return message


class SipStreamParser:
    """Frames SIP messages on a stream transport by Content-Length (RFC 3261 18.3).

    ``feed`` returns messages and SipParseErrors in arrival order. A header block
    whose Content-Length is missing or unusable cannot be framed: that error is the
    last event and ``broken`` becomes True (answer it, then close the connection).
    Any other bad message is one error event and parsing goes on after it.
    ``pings`` counts RFC 5626 double-CRLF keep-alives seen between messages.
    """

    def __init__(self, *, max_header_size: int = MAX_HEADER_SIZE, max_body_size: int = MAX_BODY_SIZE) -> None:
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self.broken = False
        self.pings = 0
        self._buf = bytearray()
        self._scan_from = 0      # where to resume looking for the end of the header block
        self._pending: tuple[SipMessage, tuple[int, str] | None, int, bytes] | None = None   # head read, body due
        self._discard = 0        # octets of an oversized body still to drop
        self._crlf_run = 0

    def _fail(self, status: int, reason: str, partial: SipMessage | None = None) -> SipParseError:
        raw = bytes(self._buf[:4096])
        self.broken, self._pending, self._buf = True, None, bytearray()
        return SipParseError(status, reason, partial=partial, raw=raw)

    @property
    def in_a_message(self) -> bool:
        """Part of a message has arrived and the rest not yet (an oversized body being dropped too)."""
        return bool(self._buf.strip(b"\r\n")) or self._discard > 0

    def _skip_keepalives(self) -> bool:
        n = 0
        while n < len(self._buf) and self._buf[n] in b"\r\n":
            n += 1
        if n:
            del self._buf[:n]
            self._crlf_run += n
            self.pings += self._crlf_run // 4
            self._crlf_run %= 4
        if self._buf:
            self._crlf_run = 0
        return bool(self._buf)

    def feed(self, data: bytes) -> list[SipMessage | SipParseError]:
        events: list[SipMessage | SipParseError] = []
        if self.broken:
            return events
        self._buf += data
        while True:
            if self._discard:
                n = min(self._discard, len(self._buf))
                del self._buf[:n]
                self._discard -= n
                if self._discard:
                    break
            if self._pending is None:
                if not self._skip_keepalives():
                    break
                end = _HEAD_END.search(self._buf, self._scan_from)
                if end is None or end.start() > self.max_header_size:
                    if len(self._buf) > self.max_header_size:
                        events.append(self._fail(513, "Message Too Large"))
                    else:
                        self._scan_from = max(0, len(self._buf) - 3)
                    break
                head = bytes(self._buf[:end.start()])
                message, problem = _parse_head(head)
                try:
                    length = _content_length(message.headers)
                except SipParseError as exc:
                    events.append(self._fail(exc.status, exc.reason, message))
                    break
                if length is None:
                    events.append(self._fail(400, "Content-Length required on a stream transport", message))
                    break
                raw_head = bytes(self._buf[:end.end()])
                del self._buf[:end.end()]
                self._scan_from = 0
                if length > self.max_body_size:   # drop the body as it arrives, keep framing
                    self._discard = length
                    events.append(SipParseError(413, "Request Entity Too Large", partial=message, raw=raw_head))
                    continue
                self._pending = (message, problem, length, raw_head)
            message, problem, length, raw_head = self._pending
            if len(self._buf) < length:
                break
            message.body = bytes(self._buf[:length])
            del self._buf[:length]
            self._pending = None
            problem = problem or _header_problem(message)
            message.wire = raw_head + message.body
            events.append(SipParseError(*problem, partial=message, raw=message.wire) if problem else message)
        return events

    def feed_eof(self) -> list[SipParseError]:
        """The peer closed: an incomplete message pending is an error (e.g. RFC 4475 clerr)."""
        if self.broken:
            return []
        pending, leftover = self._pending, bytes(self._buf)
        self.broken, self._pending, self._buf = True, None, bytearray()
        if pending is not None:
            message = pending[0]
            message.body = leftover
            return [SipParseError(400, "connection closed before the end of the body (Content-Length too large)",
                                  partial=message, raw=leftover)]
        if self._discard or not leftover.strip(b"\r\n"):
            return []
        message, _ = _parse_head(leftover.lstrip(b"\r\n").rstrip(b"\r\n"))
        return [SipParseError(400, "connection closed inside a header block", partial=message, raw=leftover)]


# -- server side ------------------------------------------------------------------


def make_request(method: str, uri: str, *, via: tuple[str, int], from_: str, to: str, call_id: str, cseq: int,
                 routes: Iterable[str] = ()) -> SipRequest:
    """A new request from a user agent: a fresh Via branch over TCP, Max-Forwards 70, the
    given From/To (name-addr, tags included), Call-ID, CSeq and any Route set."""
    headers = Headers()
    headers.add("Via", f"SIP/2.0/TCP {hostport(via[0], via[1])};branch={new_branch()}")
    headers.add("Max-Forwards", "70")
    for route in routes:
        headers.add("Route", route)
    headers.add("From", from_)
    headers.add("To", to)
    headers.add("Call-ID", call_id)
    headers.add("CSeq", f"{cseq} {method}")
    return SipRequest(method, uri, headers)


def make_response(request: SipRequest, status: int, reason: str | None = None, *, to_tag: str | None = None,
                  body: bytes = b"", content_type: str | None = None) -> SipResponse:
    """A response carrying the request's Via (all, in order), From, To, Call-ID and CSeq (RFC 3261 8.2.6),
    copied as received (for a request that does not even parse, see echoable)."""
    headers = Headers()
    for via in request.headers._values("Via"):
        headers.add("Via", via)
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.headers.get(name)
        if value is None:
            continue
        if name == "To" and to_tag and not _has_tag(value):
            value = f"{value};tag={to_tag}"
        headers.add(name, value)
    if content_type:
        headers.add("Content-Type", content_type)
    if reason is None:
        reason = REASON_PHRASES.get(status, _CLASS_PHRASES.get(status // 100, ""))
    return SipResponse(status, reason, headers, body)


def echoable(name: str, value: str) -> bool:
    """A Via/From/To/Call-ID/CSeq value well formed enough to copy into the answer to a request
    that does not parse: echoing a malformed one would make the answer as unreadable as the request."""
    try:
        if name == "Via":
            for part in _split_top(value, ","):
                parse_via(part)
        elif name in ("From", "To"):
            parse_name_addr(value)
        elif name == "CSeq":
            parse_cseq(value)
        elif name == "Call-ID":
            return _CALL_ID.fullmatch(value) is not None
    except SipParseError:
        return False
    return True


def answer_to_unparseable(error: SipParseError) -> SipResponse | None:
    """The answer to a request that did not parse: its status, and those of its Via/From/To/
    Call-ID/CSeq that are themselves well formed (echoable), a To tag added. None for a response
    or an ACK, which nothing answers."""
    request = error.partial
    if not isinstance(request, SipRequest) or request.method == "ACK":
        return None
    headers = Headers()
    for via in request.headers._values("Via"):
        if not echoable("Via", via):
            break         # only the leading well-formed ones: the path back, in order (none: the
        headers.add("Via", via)   # answer still goes back on the connection or to the source address)
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.headers.get(name)
        if value is not None and echoable(name, value):
            if name == "To" and not _has_tag(value):
                value = f"{value};tag={new_tag()}"     # RFC 3261 8.2.6.2
            headers.add(name, value)
    phrase = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in error.reason)[:120]
    return SipResponse(error.status, phrase or "Bad Request", headers)


def _has_tag(value: str) -> bool:
    try:
        return parse_name_addr(value).tag() is not None
    except SipParseError:   # a malformed To (in an error response): look for the parameter textually
        return re.search(r";\s*tag\s*=", value, re.I) is not None


def max_forwards(req: SipRequest) -> int | None:
    """Max-Forwards as an int, or None if absent or out of 0..255 (RFC 4475 3.1.2.4: treat as absent)."""
    value = (req.headers.get("Max-Forwards") or "").strip()
    if not _MAX_FORWARDS.fullmatch(value) or int(value) > 255:
        return None
    return int(value)


def unsupported_options(req: SipRequest, supported: Iterable[str] = (), *, proxy: bool = False) -> list[str]:
    """Option tags of Require (and Proxy-Require, for a proxy) not in ``supported``: the 420's Unsupported."""
    known = {tag.lower() for tag in supported}
    names = ("Require", "Proxy-Require") if proxy else ("Require",)
    return [tag for name in names for tag in req.headers.get_all(name) if tag.lower() not in known]


def validate_request(req: SipRequest, *, supported: Iterable[str] = (),
                     proxy: bool = False) -> tuple[int, str] | None:
    """Checks a UAS/registrar makes before acting (RFC 3261 8.2, 16.3; RFC 4475 3.2, 3.3).

    Returns (status, reason) for the response to send, or None. Left to the caller:
    methods it does not implement (501/405), Max-Forwards (see ``max_forwards``),
    body types it cannot handle (415), unknown users (404), authentication.
    """
    if req.version.upper() != SIP_VERSION:
        return 505, "Version Not Supported"
    headers = req.headers
    missing = [name for name in _MANDATORY_REQUEST_HEADERS if name not in headers]
    if missing:
        return 400, "Missing " + ", ".join(missing)
    problem = _header_problem(req)
    if problem:
        return problem
    if parse_cseq(headers.get("CSeq") or "")[1] != req.method:
        return 400, "CSeq method does not match the request method"
    try:
        length = _content_length(headers)
    except SipParseError as exc:
        return exc.status, exc.reason
    if length is not None and length != len(req.body):
        return 400, "Content-Length does not match the body"
    date = headers.get("Date")
    if date is not None and not _DATE_RE.fullmatch(date.strip()):
        return 400, "Date must be an RFC 1123 date in GMT"
    if (parse_via(headers.get("Via") or "").branch or "").lower() == "z9hg4bk":
        # RFC 4475 3.2.1: the magic cookie alone identifies no transaction
        return 400, "Via branch has no transaction identifier"
    if not _URI_RE.fullmatch(req.uri):
        return 400, "malformed Request-URI"
    scheme = req.uri.split(":", 1)[0].lower()
    if scheme not in ("sip", "sips", "tel"):
        return 416, "Unsupported URI Scheme"
    try:
        target = parse_uri(req.uri)
    except SipParseError as exc:
        return 400, f"Request-URI: {exc.reason}"
    if target.headers:   # RFC 3261 19.1.1: no headers in a Request-URI (RFC 4475 3.1.2.11)
        return 400, "Request-URI must not contain headers"
    if req.method == "REGISTER":   # a registrar needs a SIP AOR in To (RFC 4475 3.3.4)
        to_uri = parse_name_addr(headers.get("To") or "").uri
        if to_uri.split(":", 1)[0].lower() not in ("sip", "sips"):
            return 400, "To of a REGISTER must be a sip: or sips: URI"
    if req.method not in ("ACK", "CANCEL") and unsupported_options(req, supported, proxy=proxy):
        return 420, "Bad Extension"
    return None


# -- dialog and transaction helpers (RFC 3261 8.1.1, 9.1, 17.1.1.3) ----------------------------

def tag_of(name_addr: str | None) -> str:
    """The tag parameter of a From/To value, "" if it has none or does not parse."""
    return _tag_of(name_addr or "")


@_remembered
def _tag_of(value: str) -> str:
    try:
        return parse_name_addr(value).tag() or ""
    except SipParseError:
        return ""


def from_tag(message: SipRequest | SipResponse) -> str:
    return tag_of(message.headers.get("From"))


def to_tag(message: SipRequest | SipResponse) -> str:
    return tag_of(message.headers.get("To"))


def cseq_method(message: SipRequest | SipResponse) -> str:
    """The method of the CSeq (for a response: the request it answers), "" if unreadable."""
    try:
        return parse_cseq(message.headers.get("CSeq") or "")[1]
    except SipParseError:
        return ""


def top_branch(message: SipRequest | SipResponse) -> str:
    """The branch of the top Via: the client transaction a response belongs to."""
    vias = message.headers.get_all("Via")
    if not vias:
        return ""
    return _branch_of(vias[0])


@_remembered
def _branch_of(via: str) -> str:
    try:
        return parse_via(via).params.get("branch") or ""
    except SipParseError:
        return ""


def uri_of(name_addr: str | None) -> str:
    """The URI of a From/To/Contact/Route value, tolerant of odd forms ("" for none)."""
    if not name_addr:
        return ""
    try:
        return parse_name_addr(name_addr).uri
    except SipParseError:
        value = name_addr.strip()
        if "<" in value and ">" in value:
            return value[value.index("<") + 1:value.index(">")]
        return value.split(";", 1)[0].strip()


def make_cancel(invite: SipRequest) -> SipRequest:
    """The CANCEL of an INVITE this end sent (RFC 3261 9.1): same Request-URI, Call-ID, To, From
    and CSeq number, one Via equal to the INVITE's top Via (so it names the same transaction),
    and the INVITE's Route set."""
    headers = Headers()
    headers.add("Via", invite.headers.get_all("Via")[0])
    headers.add("Max-Forwards", "70")
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    for name in ("From", "To", "Call-ID"):
        headers.add(name, invite.headers.get(name) or "")
    headers.add("CSeq", f"{parse_cseq(invite.headers.get('CSeq') or '1 INVITE')[0]} CANCEL")
    return SipRequest("CANCEL", invite.uri, headers)


def make_non2xx_ack(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK a client transaction owes a 3xx-6xx answer to its INVITE (RFC 3261 17.1.1.3):
    the INVITE's Request-URI, Call-ID, From, top Via and Route set, the response's To (its tag
    included) and the INVITE's CSeq number with method ACK. It is part of the INVITE's
    transaction, hop by hop: it goes only as far as the next hop."""
    headers = Headers()
    headers.add("Via", invite.headers.get_all("Via")[0])
    headers.add("Max-Forwards", "70")
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or invite.headers.get("To") or "")
    headers.add("Call-ID", invite.headers.get("Call-ID") or "")
    headers.add("CSeq", f"{parse_cseq(invite.headers.get('CSeq') or '1 INVITE')[0]} ACK")
    return SipRequest("ACK", invite.uri, headers)


# -- digest authentication (RFC 2617 / RFC 7616 with MD5, as RFC 3261 22.4 uses it) ----------

def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()   # noqa: S324 - RFC 3261 digest is MD5


def digest_challenge(realm: str, nonce: str, *, stale: bool = False) -> str:
    """A WWW-Authenticate value: realm, nonce, MD5 and qop=auth."""
    return (f'Digest realm={quote_display_name(realm)}, nonce="{nonce}", algorithm=MD5, qop="auth"'
            + (", stale=true" if stale else ""))


def parse_digest(value: str) -> dict[str, str]:
    """The parameters of a `Digest k=v, k="v"` value (names lower-cased, quotes removed); {} if
    it is no Digest credential or challenge."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return {}
    params: dict[str, str] = {}
    for item in _split_top(rest, ","):
        name, eq, raw = item.partition("=")
        if not eq:
            continue
        raw = raw.strip()
        if raw.startswith('"'):
            try:
                raw = _scan_quoted(raw, 0)[0]
            except SipParseError:
                return {}
        params[name.strip().lower()] = raw
    return params


def digest_response(*, username: str, realm: str, password: str, method: str, uri: str, nonce: str,
                    nc: str = "", cnonce: str = "", qop: str = "") -> str:
    """The `response` of RFC 2617 3.2.2.1 (MD5; with qop=auth when qop is given)."""
    ha1, ha2 = _md5(f"{username}:{realm}:{password}"), _md5(f"{method}:{uri}")
    if qop:
        return _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _md5(f"{ha1}:{nonce}:{ha2}")


def digest_authorization(challenge: str, *, username: str, password: str, method: str, uri: str,
                         cnonce: str | None = None, nc: int = 1) -> str:
    """The Authorization value answering a WWW-Authenticate challenge (a client's side)."""
    params = parse_digest(challenge)
    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    qop = "auth" if "auth" in [q.strip() for q in params.get("qop", "").split(",")] else ""
    cnonce = cnonce or secrets.token_hex(8)
    count = f"{nc:08x}"
    response = digest_response(username=username, realm=realm, password=password, method=method, uri=uri,
                               nonce=nonce, nc=count, cnonce=cnonce, qop=qop)
    value = (f"Digest username={quote_display_name(username)}, realm={quote_display_name(realm)}, "
             f'nonce="{nonce}", uri="{uri}", response="{response}", algorithm=MD5')
    if qop:
        value += f', qop={qop}, nc={count}, cnonce="{cnonce}"'
    return value


# -- the trace's view of a message -----------------------------------------------------------

def describe(message: SipRequest | SipResponse) -> tuple[str, dict, dict[str, str]]:
    """One-line summary, decoded fields and correlation ids of a SIP message."""
    headers = message.headers
    correlation = {
        "call_id": headers.get("Call-ID") or "",
        "conversation_id": headers.get("Conversation-ID") or "",
        "contribution_id": headers.get("Contribution-ID") or "",
        "in_reply_to_contribution_id": headers.get("InReplyTo-Contribution-ID") or "",
    }
    fields: dict = {"headers": headers.items()}
    content_type = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    detail = ""
    if content_type == "message/cpim" and message.body:
        try:
            cpim = parse_cpim(message.body)
        except CpimError as exc:
            fields["cpim_error"] = str(exc)
        else:
            correlation["imdn_message_id"] = cpim.message_id
            fields["cpim"] = {
                "From": cpim.sender, "To": cpim.recipient, "DateTime": cpim.datetime,
                "imdn.Message-ID": cpim.message_id,
                "imdn.Disposition-Notification": ", ".join(cpim.disposition),
                "Content-Type": cpim.content_type,
                "body": cpim.text,
            }
            if revoke.is_revoke(cpim.content_type):
                detail = " REVOKE"
                try:
                    taken = revoke.parse_revoke(cpim.body)
                    detail = f" REVOKE {getattr(taken, 'result', 'request')}"
                    correlation["imdn_message_id"] = taken.message_id
                except revoke.RevokeError:
                    pass
            elif cpim.is_imdn:
                detail = " IMDN"
                try:
                    imdn = parse_imdn_xml(cpim.body)
                    detail = f" IMDN {imdn.status}"
                    correlation["imdn_message_id"] = imdn.message_id
                except CpimError:
                    pass
            else:
                text = cpim.text.replace("\r", " ").replace("\n", " ")
                detail = f' "{text[:40]}{"…" if len(text) > 40 else ""}"'
    elif message.body:
        fields["body"] = message.body.decode("utf-8", errors="replace")
    if isinstance(message, SipRequest):
        fields["request_line"] = f"{message.method} {message.uri} {message.version}"
        kind = " (CPIM)" if content_type == "message/cpim" else ""
        summary = f"{message.method}{kind} {message.uri}{detail}"
    else:
        fields["status_line"] = f"{message.version} {message.status} {message.reason}"
        summary = f"{message.status} {message.reason} ({cseq_method(message) or '?'})"
    return summary, fields, correlation
