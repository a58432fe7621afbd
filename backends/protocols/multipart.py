"""multipart/mixed bodies (RFC 2046 5.1) as SIP carries them: an INVITE with an SDP offer beside a
recipient list (RFC 5366), sans-I/O, bytes in and out.

Parsing is the stdlib `email` package's, over input treated as hostile: bounded in size and in
parts, one level deep (a part that is itself multipart is refused), and any defect the parser
notes (no start or close boundary, a broken header) refuses the whole body with 400, never a
half-read list of parts. Bodies are binary, as SIP sends them (RFC 3261 7.4: no transfer encoding).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesParser

from iwlab.backends.protocols.refusal import BodyRefused

MAX_BODY = 64 * 1024     # an INVITE body: an SDP and a list of a few dozen people
MAX_PARTS = 8


class MultipartError(BodyRefused):
    """A body that cannot be used; ``status`` is the SIP answer (400 malformed, 415 not understood)."""


@dataclass(frozen=True)
class Part:
    content_type: str                   # as written, parameters kept ("application/sdp")
    body: bytes
    disposition: str = ""               # Content-Disposition as written ("recipient-list")
    headers: tuple[tuple[str, str], ...] = ()   # any other MIME headers of the part, in order

    @property
    def media_type(self) -> str:
        return self.content_type.split(";", 1)[0].strip().lower()

    @property
    def disposition_type(self) -> str:
        return self.disposition.split(";", 1)[0].strip().lower()

    @property
    def handling_required(self) -> bool:
        """RFC 3261 20.11: handling=required (the default) means: refuse what you do not understand."""
        params = [p.strip().lower() for p in self.disposition.split(";")[1:]]
        return "handling=optional" not in [p.replace(" ", "") for p in params]


def is_multipart_mixed(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == "multipart/mixed"


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """The parts of a multipart/mixed body, in order; MultipartError for anything else."""
    if not is_multipart_mixed(content_type):
        raise MultipartError(f"not multipart/mixed: {content_type[:40]!r}", 415)
    if len(body) > MAX_BODY:
        raise MultipartError(f"multipart body larger than {MAX_BODY} bytes", 413)
    if any(c in content_type for c in "\r\n\x00"):
        raise MultipartError("Content-Type with a line break")
    message = _parse(b"Content-Type: " + content_type.encode("utf-8", "replace") + b"\r\n\r\n" + body)
    boundary = message.get_boundary()
    if not boundary:
        raise MultipartError("multipart/mixed without a boundary parameter")
    if not message.is_multipart() or message.defects:
        raise MultipartError(_defect(message, "no part found between the boundaries"))
    payload = message.get_payload()
    assert isinstance(payload, list)
    if not payload:
        raise MultipartError("multipart/mixed with no parts")
    if len(payload) > MAX_PARTS:
        raise MultipartError(f"more than {MAX_PARTS} body parts", 413)
    return [_part(item) for item in payload if isinstance(item, Message)]


def _parse(data: bytes) -> Message:
    try:
        return BytesParser(policy=policy.compat32).parsebytes(data)
    except (ValueError, LookupError, TypeError, IndexError) as exc:   # the parser is lenient; be sure
        raise MultipartError(f"unreadable multipart body: {exc}"[:100]) from None


def _defect(message: Message, fallback: str) -> str:
    return type(message.defects[0]).__name__ if message.defects else fallback


def _part(item: Message) -> Part:
    if item.get_content_maintype() == "multipart":
        raise MultipartError("nested multipart bodies are not supported", 415)
    if item.defects:
        raise MultipartError(f"broken body part: {_defect(item, '')}")
    encoding = (item.get("Content-Transfer-Encoding") or "binary").strip().lower()
    if encoding not in ("binary", "8bit", "7bit"):
        raise MultipartError(f"Content-Transfer-Encoding {encoding[:20]} in a SIP body", 415)
    body = item.get_payload(decode=True)     # the bytes as sent (8bit kept, no transfer decoding above)
    assert isinstance(body, bytes)
    headers = tuple((name, str(value)) for name, value in item.items()
                    if name.lower() not in ("content-type", "content-disposition"))
    return Part(content_type=str(item.get("Content-Type") or "text/plain"), body=body,
                disposition=str(item.get("Content-Disposition") or ""), headers=headers)


def build_multipart(parts: list[Part], boundary: str | None = None) -> tuple[str, bytes]:
    """(Content-Type with its boundary, body): the boundary is chosen to occur in no part."""
    boundary = boundary or secrets.token_hex(12)
    while any(boundary.encode() in part.body for part in parts):
        boundary = secrets.token_hex(12)
    chunks: list[bytes] = []
    for part in parts:
        head = [f"Content-Type: {part.content_type}"]
        if part.disposition:
            head.append(f"Content-Disposition: {part.disposition}")
        head += [f"{name}: {value}" for name, value in part.headers]
        chunks.append(f"--{boundary}\r\n".encode() + "\r\n".join(head).encode() + b"\r\n\r\n" + part.body + b"\r\n")
    return f"multipart/mixed;boundary={boundary}", b"".join(chunks) + f"--{boundary}--\r\n".encode()
