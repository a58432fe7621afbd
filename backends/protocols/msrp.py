"""MSRP (RFC 4975) codec, sans-I/O in the style of h11: bytes in, objects out, and back.

MSRP has no length header: ``MsrpStreamParser`` ends a message at its end-line
``-------<tid>`` + ``$``/``+``/``#`` + CRLF, so a body may hold anything but that
line (the sender picks a tid not in the body, RFC 4975 7.1; ``to_bytes`` checks).
``chunk`` / ``Reassembler`` work on bytes: a split may fall inside a UTF-8 sequence,
decode whole messages only. Text is UTF-8 with ``surrogateescape``.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Sequence

from iwlab.backends.protocols.cpim import CpimError, parse_cpim

MAX_HEADER_SIZE = 64 * 1024        # start line + header block
MAX_CHUNK_SIZE = 1024 * 1024       # one chunk's body; larger -> 413, the chunk is skipped
MAX_MESSAGE_SIZE = 16 * 1024 * 1024   # a reassembled message

_IDENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-+%=]{3,31}")   # RFC 4975 9: transact-id
_MESSAGE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-+%=]{0,63}")   # ident, length not enforced
_START_RE = re.compile(rb"MSRP ([!-~]{1,64})(?: (.*))?", re.S)       # framing needs only the tid
_METHOD_RE = re.compile(r"[A-Z]+")
_STATUS_RE = re.compile(r"([0-9]{3})(?: (.*))?", re.S)
_NAME_RE = re.compile(r"[A-Za-z0-9\-_.!%*+`'~]+")
_RANGE_RE = re.compile(r"([0-9]{1,18})-([0-9]{1,18}|\*)/([0-9]{1,18}|\*)")
_URI_RE = re.compile(r"(msrps?)://(?:([^@/\s]*)@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::([0-9]{1,5}))?"
                     r"(?:/([A-Za-z0-9\-._~+=/]+))?;([A-Za-z0-9]+)((?:;[^;\s]+)*)", re.I)
_SPECIAL = {"to-path", "from-path", "message-id", "byte-range", "content-type"}
COMMENTS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 408: "Request Timeout", 413: "Message Too Large",
            415: "Unsupported Media Type", 423: "Interval Out-of-Bounds", 481: "Session Does Not Exist",
            501: "Unknown Method", 506: "Session Already Bound"}


class MsrpParseError(ValueError):
    """A message (or stream) that cannot be used.

    ``transaction_id`` is set when the start line was readable, ``partial`` holds
    what was parsed (paths, headers) so an endpoint can answer ``status`` (see
    ``error_response``). ``fatal``: the stream cannot be framed any more (close it).
    """

    def __init__(self, reason: str, transaction_id: str | None = None, *, status: int = 400,
                 fatal: bool = False, partial: MsrpRequest | MsrpResponse | None = None) -> None:
        self.reason = re.sub(r"[^\x20-\x7e]", "?", reason)[:120]
        self.transaction_id, self.status, self.fatal, self.partial = transaction_id, status, fatal, partial
        self.raw = b""   # the octets as they came (the start of them, at most MAX_RAW_KEPT): for the trace
        super().__init__(f"{status} {self.reason}")


@dataclass(frozen=True)
class MsrpUri:
    """``msrp[s]://[user@]host[:port][/session-id];transport[;params]`` (RFC 4975 9)."""
    scheme: str
    host: str
    port: int | None
    session_id: str | None
    transport: str
    user: str | None = None
    params: tuple[str, ...] = ()

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user is not None else ""
        port = f":{self.port}" if self.port is not None else ""
        session = f"/{self.session_id}" if self.session_id is not None else ""
        return f"{self.scheme}://{user}{self.host}{port}{session};{self.transport}" + \
            "".join(f";{p}" for p in self.params)

    def matches(self, other: MsrpUri) -> bool:
        """RFC 4975 6.1 comparison: scheme, host, transport case-insensitive, session-id exact; no user/params."""
        return (self.scheme, self.host.lower(), self.port, self.session_id, self.transport.lower()) == \
            (other.scheme, other.host.lower(), other.port, other.session_id, other.transport.lower())


def parse_msrp_uri(uri: str) -> MsrpUri:
    m = _URI_RE.fullmatch(uri.strip())
    if not m:
        raise MsrpParseError(f"malformed MSRP URI {uri[:60]!r}")
    scheme, user, host, port, session, transport, params = m.groups()
    if port is not None and not 0 < int(port) < 65536:
        raise MsrpParseError(f"bad port in MSRP URI {uri[:60]!r}")
    return MsrpUri(scheme.lower(), host, int(port) if port else None, session, transport, user,
                   tuple(params.split(";")[1:]))


def new_transaction_id() -> str:
    return secrets.token_hex(8)


def new_message_id() -> str:
    return secrets.token_hex(10)


def _head(start: str, to_path: list[str], from_path: list[str], fields: list[tuple[str, str]]) -> str:
    lines = [start, "To-Path: " + " ".join(to_path), "From-Path: " + " ".join(from_path)]
    lines += [f"{name}: {value}" for name, value in fields]
    if any("\r" in line or "\n" in line for line in lines):
        raise ValueError("CR/LF inside a start line or header field")
    return "\r\n".join(lines) + "\r\n"


class _HeaderAccess:
    headers: list[tuple[str, str]]

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of one of ``headers`` (case-insensitive), e.g. Success-Report, Status."""
        return next((v for n, v in self.headers if n.lower() == name.lower()), default)


def format_byte_range(byte_range: tuple[int, int | None, int | None]) -> str:
    start, end, total = byte_range
    return f"{start}-{'*' if end is None else end}/{'*' if total is None else total}"


@dataclass
class MsrpRequest(_HeaderAccess):
    transaction_id: str
    method: str                                   # "SEND", "REPORT", or another 1*UPALPHA method
    to_path: list[str]
    from_path: list[str]
    message_id: str | None = None
    byte_range: tuple[int, int | None, int | None] | None = None   # (start, end|None='*', total|None='*')
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)   # all others, in order (incl. MIME ones)
    body: bytes = b""
    continuation: str = "$"                       # '$' complete, '+' more chunks follow, '#' aborted

    def to_bytes(self) -> bytes:
        """RFC 4975 7.1 order: To-Path, From-Path, Message-ID, Byte-Range, others, Content-Type, body."""
        if self.continuation not in ("$", "+", "#"):
            raise ValueError(f"bad continuation flag {self.continuation!r}")
        fields = []
        if self.message_id is not None:
            fields.append(("Message-ID", self.message_id))
        if self.byte_range is not None:
            fields.append(("Byte-Range", format_byte_range(self.byte_range)))
        fields += self.headers
        end = f"-------{self.transaction_id}{self.continuation}\r\n".encode()
        if self.content_type is None and not self.body:   # bodiless: no content-stuff at all
            head = _head(f"MSRP {self.transaction_id} {self.method}", self.to_path, self.from_path, fields)
            return head.encode("utf-8", "surrogateescape") + end
        if self.content_type is None:
            raise ValueError("a body needs a Content-Type")
        fields.append(("Content-Type", self.content_type))
        head = _head(f"MSRP {self.transaction_id} {self.method}", self.to_path, self.from_path, fields)
        if re.search(rb"\r\n-------" + re.escape(self.transaction_id.encode()) + rb"[$+#]\r\n",
                     b"\r\n" + self.body + b"\r\n"):
            raise ValueError("the body contains this transaction's end-line: use another transaction id")
        return head.encode("utf-8", "surrogateescape") + b"\r\n" + bytes(self.body) + b"\r\n" + end


@dataclass
class MsrpResponse(_HeaderAccess):
    transaction_id: str
    status: int
    comment: str | None
    to_path: list[str]
    from_path: list[str]
    headers: list[tuple[str, str]] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        start = f"MSRP {self.transaction_id} {self.status:03d}" + ("" if self.comment is None else f" {self.comment}")
        head = _head(start, self.to_path, self.from_path, self.headers)
        return head.encode("utf-8", "surrogateescape") + f"-------{self.transaction_id}$\r\n".encode()


def _build(tid: str, start: str, lines: list[bytes], body: bytes | None,
           flag: str) -> MsrpRequest | MsrpResponse | MsrpParseError:
    """One framed message -> the object, or a 400 error carrying the best-effort ``partial``."""
    problems = [] if _IDENT_RE.fullmatch(tid) else ["malformed transaction id"]
    special: dict[str, str] = {}
    others: list[tuple[str, str]] = []
    if "\r" in start or "\n" in start:
        problems.append("a bare CR or LF in the start line")
    for raw in lines:
        name, colon, value = raw.decode("utf-8", "surrogateescape").partition(":")
        if not colon or not _NAME_RE.fullmatch(name) or "\r" in value or "\n" in value:   # a bare CR ends no line
            problems.append(f"malformed header line {raw[:40]!r}")
        elif name.lower() not in _SPECIAL:
            others.append((name, value.strip()))
        elif name.lower() in special:
            problems.append(f"duplicate {name}")
        else:
            special[name.lower()] = value.strip()
    paths = {}
    for key in ("to-path", "from-path"):
        paths[key] = special.get(key, "").split()
        if not paths[key]:
            problems.append(f"missing {key.title()}")
        for uri in paths[key]:
            try:
                parse_msrp_uri(uri)
            except MsrpParseError as exc:
                problems.append(f"{key.title()}: {exc.reason}")
    message: MsrpRequest | MsrpResponse
    if status := _STATUS_RE.fullmatch(start):
        message = MsrpResponse(tid, int(status.group(1)), status.group(2), paths["to-path"], paths["from-path"],
                               others)
        if body is not None or set(special) - {"to-path", "from-path"}:
            problems.append("a response carries no body, Message-ID or Byte-Range")
    else:
        if not _METHOD_RE.fullmatch(start):
            problems.append(f"malformed start line {start[:40]!r}")
        message = MsrpRequest(tid, start, paths["to-path"], paths["from-path"], special.get("message-id"),
                              None, special.get("content-type"), others, body or b"", flag)
        if message.message_id is not None and not _MESSAGE_ID_RE.fullmatch(message.message_id):
            problems.append("malformed Message-ID")
        if "byte-range" in special:
            m = _RANGE_RE.fullmatch(special["byte-range"])
            first, end, total = 0, None, None
            if m:
                first = int(m.group(1))
                end, total = (None if g == "*" else int(g) for g in m.groups()[1:])
            if first < 1 or (end is not None and (end < first - 1 or (total is not None and end > total))):
                problems.append("malformed Byte-Range")
            message.byte_range = (first, end, total) if m else None
        if (body is None) != (message.content_type is None):
            problems.append("a body without Content-Type" if body is not None else "Content-Type without a body")
    return MsrpParseError(problems[0], tid, partial=message) if problems else message


MAX_RAW_KEPT = 4096   # octets of a refused message kept with its error (what the trace shows)


def _with_raw(event: MsrpRequest | MsrpResponse | MsrpParseError,
              raw: bytearray) -> MsrpRequest | MsrpResponse | MsrpParseError:
    if isinstance(event, MsrpParseError):
        event.raw = bytes(raw[:MAX_RAW_KEPT])
    return event


class MsrpStreamParser:
    """Frames MSRP messages on a TCP stream; ``feed`` returns them (and errors) in arrival order.

    A message with a readable start line is framed by its end-line whatever else is
    wrong with it: the error (with ``transaction_id`` and ``partial``) comes in its
    place and parsing goes on. A chunk body over ``max_chunk_size`` gives a 413
    error as soon as it is seen; the rest of that chunk is skipped. Only an
    unreadable start line cannot be framed: that error has ``fatal`` set, it is the
    last event and ``broken`` becomes True (close the connection).
    """

    def __init__(self, *, max_header_size: int = MAX_HEADER_SIZE, max_chunk_size: int = MAX_CHUNK_SIZE) -> None:
        self.max_header_size, self.max_chunk_size, self.broken = max_header_size, max_chunk_size, False
        self._buf = bytearray()
        self._reset()

    def _reset(self) -> None:
        self._tid: str | None = None
        self._start = ""
        self._lines: list[bytes] = []
        self._pos = 0                    # start of the next unread line (header phase)
        self._body: int | None = None    # body phase: where the body starts
        self._scan = 0                   # where to resume looking for the line end / end-line
        self._skipping = False           # an oversized chunk is being dropped

    def _fatal(self, reason: str) -> MsrpParseError:
        error = MsrpParseError(reason, self._tid, fatal=True)
        error.raw = bytes(self._buf[:MAX_RAW_KEPT])
        self.broken, self._buf = True, bytearray()
        return error

    def _skip(self, at: int | None, reason: str, status: int) -> MsrpParseError:
        """Report the message now; with ``at``, drop what is buffered before it and all up to the end-line."""
        built = _build(self._tid or "", self._start, self._lines, None, "$")
        raw = bytes(self._buf[:MAX_RAW_KEPT])
        if at is not None:
            del self._buf[:at]
            self._skipping, self._body, self._scan = True, 0, 0
        error = MsrpParseError(reason, self._tid, status=status,
                               partial=built.partial if isinstance(built, MsrpParseError) else built)
        error.raw = raw
        return error

    @property
    def in_a_message(self) -> bool:
        """Part of a message has arrived and the rest not yet (an oversized chunk being dropped too)."""
        return not self.broken and (self._tid is not None or self._skipping or bool(self._buf.strip(b"\r\n")))

    def feed(self, data: bytes) -> list[MsrpRequest | MsrpResponse | MsrpParseError]:
        events: list[MsrpRequest | MsrpResponse | MsrpParseError] = []
        if self.broken:
            return events
        self._buf += data
        while self._buf and not self.broken:
            if self._body is None:
                if self._tid is None:
                    while self._buf[:2] == b"\r\n":   # stray CRLFs between messages
                        del self._buf[:2]
                    if self._buf in (b"", b"\r"):
                        break
                    if self._buf[:5] != b"MSRP "[:len(self._buf)]:
                        events.append(self._fatal(f"not an MSRP start line: {bytes(self._buf[:40])!r}"))
                        break
                eol = self._buf.find(b"\r\n", max(self._pos, self._scan))
                if eol < 0 or eol > self.max_header_size:
                    self._scan = max(self._pos, len(self._buf) - 1)
                    if len(self._buf) > self.max_header_size:
                        if self._tid is None:
                            events.append(self._fatal("start line too long"))
                        else:
                            events.append(self._skip(max(0, self._pos - 2), "header block too large", 400))
                            continue
                    break
                line, self._pos = bytes(self._buf[self._pos:eol]), eol + 2
                if self._tid is None:
                    if not (m := _START_RE.fullmatch(line)):
                        events.append(self._fatal(f"unreadable start line {line[:40]!r}"))
                        break
                    self._tid, self._start = m.group(1).decode(), (m.group(2) or b"").decode("utf-8", "surrogateescape")
                elif line == b"":   # the end-line may follow at once: an empty body, sloppily framed
                    self._body, self._scan = self._pos, self._pos - 2
                elif line[:-1] == b"-------" + self._tid.encode() and line[-1:] in (b"$", b"+", b"#"):
                    events.append(_with_raw(_build(self._tid or "", self._start, self._lines, None,
                                                   line[-1:].decode()), self._buf[:self._pos]))
                    del self._buf[:self._pos]
                    self._reset()
                else:
                    self._lines.append(line)
                continue
            marker = b"\r\n-------" + (self._tid or "").encode()
            at = self._buf.find(marker, self._scan)
            while at >= 0 and len(self._buf) >= at + len(marker) + 3:
                tail = self._buf[at + len(marker):at + len(marker) + 3]
                if tail[:1] in (b"$", b"+", b"#") and tail[1:] == b"\r\n":
                    break
                at = self._buf.find(marker, at + 1)
            if at < 0 or len(self._buf) < at + len(marker) + 3:   # no end-line yet
                self._scan = max(self._scan, len(self._buf) - len(marker) - 2) if at < 0 else at
                if self._skipping:   # keep only what may hold the start of the end-line
                    del self._buf[:self._scan]
                    self._scan = 0
                elif len(self._buf) - self._body > self.max_chunk_size:
                    events.append(self._skip(self._body, "chunk too large", 413))
                    continue
                break
            end = at + len(marker) + 3
            if not self._skipping:
                body = bytes(self._buf[self._body:at])
                if len(body) > self.max_chunk_size:
                    events.append(self._skip(None, "chunk too large", 413))
                else:
                    flag = chr(self._buf[end - 3])
                    events.append(_with_raw(_build(self._tid or "", self._start, self._lines, body, flag),
                                            self._buf[:end]))
            del self._buf[:end]
            self._reset()
        return events

    def feed_eof(self) -> list[MsrpParseError]:
        """The peer closed: a message in progress is an error."""
        pending = bool(self._buf) and not self.broken and self._buf.strip(b"\r\n")
        raw = bytes(self._buf[:MAX_RAW_KEPT])
        partial = self._skip(None, "", 400).partial if pending and self._tid else None
        self.broken, self._buf = True, bytearray()
        if not pending:
            return []
        error = MsrpParseError("connection closed inside a message", self._tid, fatal=True, partial=partial)
        error.raw = raw
        return [error]


# -- chunking and reassembly ----------------------------------------------------


def chunk(to_path: list[str], from_path: list[str], message_id: str, content_type: str, body: bytes,
          max_chunk: int = 2048, headers: Sequence[tuple[str, str]] = ()) -> list[MsrpRequest]:
    """SENDs carrying ``body`` in pieces of at most ``max_chunk`` bytes (RFC 4975 5.1): Byte-Range
    1-based, inclusive ("1-2048/5000"); '+' on all but the last, '$' on the last; a fresh transaction
    id each; same Message-ID. Splits fall anywhere (even inside a UTF-8 sequence); b"" -> one "1-0/0"."""
    if max_chunk < 1:
        raise ValueError("max_chunk must be positive")
    total, sends = len(body), []
    for offset in range(0, max(total, 1), max_chunk):
        piece = bytes(body[offset:offset + max_chunk])
        req = MsrpRequest("", "SEND", list(to_path), list(from_path), message_id,
                          (offset + 1, offset + len(piece), total), content_type, list(headers), piece,
                          "$" if offset + max_chunk >= total else "+")
        while not req.transaction_id or (b"-------" + req.transaction_id.encode()) in piece:
            req.transaction_id = new_transaction_id()
        sends.append(req)
    return sends


class Reassembler:
    """Joins the chunks of SEND requests per Message-ID, in any arrival order.

    ``add`` returns the whole body once every byte is in, else None; duplicates and overlaps are
    harmless. The '$' chunk fixes the end (so a total of '*' is fine); a '#' chunk aborts: the
    message is forgotten and its later chunks ignored. A bodiless SEND (no Content-Type) gives
    None. A range beyond ``max_size`` raises MsrpParseError(413) for the caller to answer.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self.max_size = max_size
        self._parts: dict[str, tuple[bytearray, bytearray, list[int | None]]] = {}   # data, have-mask, total
        self._aborted: dict[str, None] = {}   # insertion-ordered set, bounded

    def add(self, req: MsrpRequest) -> bytes | None:
        if req.method != "SEND" or (req.content_type is None and not req.body):
            return None
        key = req.message_id or f"tid:{req.transaction_id}"
        if key in self._aborted:
            return None
        if req.continuation == "#":
            self._parts.pop(key, None)
            self._aborted[key] = None
            while len(self._aborted) > 1024:
                del self._aborted[next(iter(self._aborted))]
            return None
        start = (req.byte_range[0] if req.byte_range else 1) - 1
        stop = start + len(req.body)
        header_total = req.byte_range[2] if req.byte_range else None
        if stop > self.max_size or (header_total or 0) > self.max_size:
            self._parts.pop(key, None)
            raise MsrpParseError("message too large", req.transaction_id, status=413, partial=req)
        data, have, total = self._parts.setdefault(key, (bytearray(), bytearray(), [None]))
        if len(data) < stop:
            data.extend(bytes(stop - len(data)))
            have.extend(bytes(stop - len(have)))
        data[start:stop], have[start:stop] = req.body, b"\x01" * len(req.body)
        if req.continuation == "$":
            total[0] = stop
        elif total[0] is None and header_total is not None:
            total[0] = header_total
        if total[0] is not None and len(have) >= total[0] and have.find(0, 0, total[0]) < 0:
            del self._parts[key]
            return bytes(data[:total[0]])
        return None


# -- answers an endpoint owes -------------------------------------------------


def needs_response(req: MsrpRequest, status: int = 200) -> bool:
    """False for a REPORT (never answered), Failure-Report: no, and a 200 under Failure-Report: partial."""
    failure = (req.get("Failure-Report") or "yes").strip().lower()
    if req.method == "REPORT" or failure == "no":
        return False
    return not (failure == "partial" and status == 200)


def wants_success_report(req: MsrpRequest) -> bool:
    return req.method == "SEND" and (req.get("Success-Report") or "no").strip().lower() == "yes"


def response_for(req: MsrpRequest, status: int = 200, comment: str | None = None, *,
                 local_uri: str | None = None) -> MsrpResponse:
    """RFC 4975 7.2: To-Path = the first URI of the request's From-Path (the previous hop),
    From-Path = ``local_uri`` or else the request's first To-Path URI (the responder)."""
    return MsrpResponse(req.transaction_id, status, COMMENTS.get(status) if comment is None else comment,
                        req.from_path[:1], [local_uri] if local_uri else req.to_path[:1])


def error_response(error: MsrpParseError, *, local_uri: str | None = None) -> MsrpResponse | None:
    """The response answering a bad request, when one can and may be sent."""
    req = error.partial
    if not isinstance(req, MsrpRequest) or not req.transaction_id or not req.from_path \
            or not (local_uri or req.to_path) or not needs_response(req, error.status):
        return None
    answer = response_for(req, error.status, local_uri=local_uri)
    # Its paths echo the request's: where one is no MSRP URI, no valid answer can be made (and
    # one that echoed it would be as broken as the request): none is sent, the sender times out.
    return answer if all(_is_msrp_uri(uri) for uri in (*answer.to_path, *answer.from_path)) else None


def _is_msrp_uri(uri: str) -> bool:
    try:
        parse_msrp_uri(uri)
    except MsrpParseError:
        return False
    return True


def report_for(req: MsrpRequest, status: int = 200, comment: str = "OK", *,
               total: int | None = None) -> MsrpRequest:
    """A REPORT (RFC 4975 7.1.2) back along the request's From-Path, from our own URI (the last
    in To-Path), same Message-ID, Byte-Range covering the whole message, Status "000 <status> <comment>"."""
    if total is None:
        start, end, header_total = req.byte_range or (1, None, None)
        total = header_total if header_total is not None else end if end is not None else start - 1 + len(req.body)
    return MsrpRequest(new_transaction_id(), "REPORT", list(req.from_path), req.to_path[-1:], req.message_id,
                       (1, total, total), headers=[("Status", f"000 {status:03d} {comment}")])


def bodiless_send(to_path: list[str], from_path: list[str]) -> MsrpRequest:
    """The empty SEND the connecting endpoint sends first to bind the connection (RFC 4975 5.4, 7.1.1)."""
    return MsrpRequest(new_transaction_id(), "SEND", list(to_path), list(from_path), new_message_id(), (1, 0, 0))


# -- the trace's view of a message ---------------------------------------------------------

def describe(message: MsrpRequest | MsrpResponse) -> tuple[str, dict]:
    """One-line summary and decoded fields of an MSRP message."""
    fields: dict = {"To-Path": " ".join(message.to_path), "From-Path": " ".join(message.from_path),
                    "headers": list(message.headers)}
    if isinstance(message, MsrpResponse):
        fields["status_line"] = f"{message.status} {message.comment or ''}".strip()
        return f"{message.status} {message.comment or ''} tid={message.transaction_id}".replace("  ", " "), fields
    fields.update({"method": message.method, "Message-ID": message.message_id,
                   "Byte-Range": format_byte_range(message.byte_range) if message.byte_range else None,
                   "Content-Type": message.content_type, "continuation": message.continuation})
    summary = f"{message.method} tid={message.transaction_id}"
    if message.byte_range:
        summary += " " + format_byte_range(message.byte_range)
    if message.method == "REPORT":
        summary += f" {message.get('Status') or ''}"
    elif message.body:
        text = message.body.decode("utf-8", "replace")
        if (message.content_type or "").lower().startswith("message/cpim"):
            try:
                text = parse_cpim(message.body).text
            except CpimError:
                pass
        fields["body"] = text
        text = text.replace("\r", " ").replace("\n", " ")
        summary += f' "{text[:40]}{"…" if len(text) > 40 else ""}"'
    elif message.method == "SEND":
        summary += " (bodiless: binds the connection)"
    return summary, fields
