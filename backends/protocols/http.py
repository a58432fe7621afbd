"""HTTP/1.1 (RFC 9112), the little a content server needs, sans-I/O: a request head in,
a request object out (or HttpError with the status to answer), a response out as bytes.

Only what the lab's content server serves: GET and HEAD of a path, no request bodies, no
chunked transfer, no ranges. Heads are bounded by whoever reads them (MAX_HEAD).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import formatdate

MAX_HEAD = 8192                       # bytes of request line + header fields
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
            431: "Request Header Fields Too Large", 501: "Not Implemented",
            505: "HTTP Version Not Supported"}


class HttpError(ValueError):
    """A request that cannot be served as sent: answer `status`, then close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class HttpRequest:
    method: str
    target: str
    version: str                         # "HTTP/1.1"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def keep_alive(self) -> bool:
        connection = (self.header("Connection") or "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


def parse_request_head(head: bytes) -> HttpRequest:
    """The request line and header fields (up to and including the blank line)."""
    if len(head) > MAX_HEAD:
        raise HttpError(431, "Request Header Fields Too Large")
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "non-ASCII bytes in the request head") from None
    lines = text.split("\r\n")
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise HttpError(400, "empty request")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.match(method):
        raise HttpError(400, "malformed method")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, f"{version[:20]!r} not supported")
    if not target.startswith("/"):
        raise HttpError(400, "only origin-form targets are served")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name):      # also a folded line (obsolete, RFC 9112 5.2)
            raise HttpError(400, f"malformed header field {line[:40]!r}")
        headers.append((name, value.strip(" \t")))
    request = HttpRequest(method, target, version, headers)
    if version == "HTTP/1.1" and sum(1 for k, _ in headers if k.lower() == "host") != 1:
        raise HttpError(400, "HTTP/1.1 needs exactly one Host")   # RFC 9112 3.2
    if request.header("Transfer-Encoding") is not None:
        raise HttpError(501, "request bodies are not taken here")
    length = request.header("Content-Length")
    if length not in (None, "0"):
        raise HttpError(413 if (length or "").isdigit() else 400, "request bodies are not taken here")
    return request


def response(status: int, *, body: bytes = b"", content_type: str | None = None, head_only: bool = False,
             close: bool = False, extra: list[tuple[str, str]] | None = None) -> bytes:
    """A whole response. head_only (a HEAD): the length of the body, not the body."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}", f"Date: {formatdate(usegmt=True)}",
             "Server: iwlab-content"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    lines += [f"{name}: {value}" for name, value in extra or []]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


def request_head(target: str, host: str, method: str = "GET") -> bytes:
    """A client's request head (a device opening a link)."""
    return f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("ascii")


def parse_response_head(head: bytes) -> tuple[int, dict[str, str]]:
    """(status, header fields by lower-case name) of a response head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError(502, f"not an HTTP response: {lines[0][:40]!r}")
    fields = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            fields[name.strip().lower()] = value.strip()
    return int(parts[1]), fields


def describe_request(request: HttpRequest) -> tuple[str, dict]:
    return f"{request.method} {request.target[:80]}", {
        "request_line": f"{request.method} {request.target} {request.version}", "headers": request.headers}


def describe_response(data: bytes) -> tuple[str, dict]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:] if ":" in line]
    content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
    summary = lines[0].partition(" ")[2] + (f" {content_type} ({len(body)} B)" if content_type else "")
    return summary, {"status_line": lines[0], "headers": headers, "body_size": len(body)}
