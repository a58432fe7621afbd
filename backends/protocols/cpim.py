"""CPIM (RFC 3862) envelopes with the IMDN namespace, and IMDN (RFC 5438) bodies.

Sans-I/O: bytes in, objects out, and back. A CPIM message is three blocks:
the CPIM headers, the MIME headers of the payload, the payload.
"""
from __future__ import annotations

import functools
import re
import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, TypeVar

# OMA CPM services (P-Preferred-Service) and their feature tags in a REGISTER Contact (+g.3gpp.icsi-ref).
CPM_MSG_SERVICE = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg"
CPM_SESSION_SERVICE = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session"


def icsi_ref(service: str) -> str:
    """A service URN as a +g.3gpp.icsi-ref feature tag value (its colons %-escaped)."""
    return service.replace(":", "%3A")


CPM_MSG_ICSI = icsi_ref(CPM_MSG_SERVICE)
CPM_SESSION_ICSI = icsi_ref(CPM_SESSION_SERVICE)
MMTEL_ICSI = icsi_ref("urn:urn-7:3gpp-service.ims.icsi.mmtel")   # an IMS voice phone: registered, not CPM

IMDN_NS = "urn:ietf:params:imdn"
IMDN_XML_NS = "urn:ietf:params:xml:ns:imdn"
DELIVERY_STATUSES = ("delivered", "failed", "forbidden", "error")
DISPLAY_STATUSES = ("displayed", "forbidden", "error")
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")   # a header name (RFC 3862 / RFC 3261 token)


class CpimError(ValueError):
    """The body is not a usable CPIM message; the text says why."""


def media_type(content_type: str | None) -> str:
    """A Content-Type's media type, lower case, without its parameters ("" for none)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def new_message_id() -> str:
    return secrets.token_hex(8)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class CpimMessage:
    sender: str                  # CPIM "From", e.g. '"Mary" <sip:mary@cpm-a.lab>'
    recipient: str               # CPIM "To"
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    message_id: str = field(default_factory=new_message_id)
    datetime: str = field(default_factory=utc_now)
    disposition: tuple[str, ...] = ("positive-delivery", "display")  # imdn.Disposition-Notification
    extra_headers: list[tuple[str, str]] = field(default_factory=list)  # other CPIM headers, kept in order
    content_headers: list[tuple[str, str]] = field(default_factory=list)  # other MIME headers of the payload

    @property
    def text(self) -> str:
        match = re.search(r'charset\s*=\s*"?([\w.:-]+)', self.content_type, re.IGNORECASE)
        try:
            return self.body.decode(match.group(1) if match else "utf-8", errors="replace")
        except (LookupError, UnicodeError):   # an unknown charset, or a codec that cannot replace
            return self.body.decode("utf-8", errors="replace")

    @property
    def is_imdn(self) -> bool:
        return media_type(self.content_type) == "message/imdn+xml"

    def to_bytes(self) -> bytes:
        lines = [
            f"From: {self.sender}",
            f"To: {self.recipient}",
            f"DateTime: {self.datetime}",
            f"NS: imdn <{IMDN_NS}>",
            f"imdn.Message-ID: {self.message_id}",
        ]
        if self.disposition:
            lines.append(f"imdn.Disposition-Notification: {', '.join(self.disposition)}")
        lines += [f"{name}: {value}" for name, value in self.extra_headers]
        lines += ["", f"Content-Type: {self.content_type}"]
        lines += [f"{name}: {value}" for name, value in self.content_headers]
        lines += [f"Content-Length: {len(self.body)}", "", ""]
        if any("\r" in line or "\n" in line for line in lines):
            raise ValueError("CR/LF inside a CPIM or MIME header value")
        return "\r\n".join(lines).encode("utf-8") + self.body


def _split_block(data: bytes, what: str) -> tuple[list[tuple[str, str]], bytes]:
    # The first blank line ends the block, whichever line ending it uses.
    ends = [(data.find(sep), sep) for sep in (b"\r\n\r\n", b"\n\n") if data.find(sep) >= 0]
    if not ends:
        raise CpimError(f"no blank line after the {what} headers")
    at, sep = min(ends)
    head, rest = data[:at], data[at + len(sep):]
    headers: list[tuple[str, str]] = []
    # CR and LF end lines; str.splitlines() would also cut at U+2028, U+0085, FF ... inside a value.
    for line in re.split(r"\r\n|\r|\n", head.decode("utf-8", errors="replace")):
        if not line.strip():
            continue
        if line[0] in " \t" and headers:  # folded continuation
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip(" \t"))
            continue
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name.strip()):
            raise CpimError(f"bad {what} header line: {line[:60]!r}")
        headers.append((name.strip(), value.strip(" \t")))   # LWS only: a value may end in NBSP
    return headers, rest


_REMEMBERED_SIZE = 8192    # bodies up to this long have their parse remembered
_T = TypeVar("_T")


def _remembered(copy: Callable[[_T], _T]) -> Callable[[Callable[[bytes], _T]], Callable[[bytes], _T]]:
    """Every hop and the trace read the same body (a proxy's routing, its fallback watch, the
    trace's correlation): each distinct body of up to 8 KB is parsed once (1,024 remembered, a
    CpimError too), and every caller gets `copy` of the result, to change if it likes."""
    def remembering(parse: Callable[[bytes], _T]) -> Callable[[bytes], _T]:
        @functools.lru_cache(maxsize=1024)
        def result_of(data: bytes) -> _T | CpimError:
            try:
                return parse(data)
            except CpimError as exc:
                return exc

        @functools.wraps(parse)
        def read(data: bytes) -> _T:
            if len(data) > _REMEMBERED_SIZE:
                return parse(data)
            parsed = result_of(bytes(data))
            if isinstance(parsed, CpimError):
                raise CpimError(str(parsed))
            return copy(parsed)
        return read
    return remembering


def _copy_cpim(parsed: CpimMessage) -> CpimMessage:
    return CpimMessage(parsed.sender, parsed.recipient, parsed.body, parsed.content_type, parsed.message_id,
                       parsed.datetime, parsed.disposition, list(parsed.extra_headers), list(parsed.content_headers))


@_remembered(_copy_cpim)
def parse_cpim(data: bytes) -> CpimMessage:
    """The message in a CPIM body; raises CpimError."""
    return _parse_cpim(data)


def _parse_cpim(data: bytes) -> CpimMessage:
    cpim_headers, rest = _split_block(data, "CPIM")
    mime_headers, body = _split_block(rest, "MIME")
    # CPIM header names are namespaced by the NS prefix; RFC 3862 names are case-sensitive.
    prefix = "imdn"
    for name, value in cpim_headers:
        if name == "NS" and IMDN_NS in value:
            prefix = value.split("<", 1)[0].strip() or prefix
    msg = CpimMessage(sender="", recipient="", body=b"", disposition=())
    for name, value in cpim_headers:
        if name == "From":
            msg.sender = value
        elif name == "To":
            msg.recipient = value
        elif name == "DateTime":
            msg.datetime = value
        elif name == f"{prefix}.Message-ID":
            msg.message_id = value
        elif name == f"{prefix}.Disposition-Notification":
            msg.disposition = tuple(v.strip() for v in value.split(",") if v.strip())
        elif name != "NS":
            msg.extra_headers.append((name, value))
    if not msg.sender or not msg.recipient:
        raise CpimError("CPIM From and To are required")
    length = None
    for name, value in mime_headers:
        lname = name.lower()
        if lname == "content-type":
            msg.content_type = value
        elif lname == "content-length":
            try:
                length = int(value)
            except ValueError:
                raise CpimError(f"bad payload Content-Length {value!r}") from None
        else:
            msg.content_headers.append((name, value))
    if length is not None:
        if length > len(body):
            raise CpimError(f"payload Content-Length {length} exceeds the {len(body)} bytes present")
        body = body[:length]
    msg.body = body
    return msg


# -- IMDN -----------------------------------------------------------------

@dataclass(frozen=True)
class Imdn:
    message_id: str                 # the imdn.Message-ID of the message being reported on
    kind: str                       # "delivery" or "display"
    status: str                     # delivered / failed / displayed / forbidden / error
    datetime: str                   # when the reported message was sent
    recipient_uri: str | None = None


_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")   # XML 1.0 Char
_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def build_imdn_xml(imdn: Imdn) -> bytes:
    """The message/imdn+xml body; ValueError for what XML cannot carry (ElementTree would write it
    anyway, as a body no receiver can parse): control characters, or a kind/status that is no name."""
    for name in ("message_id", "datetime", "recipient_uri"):
        if _NOT_XML_CHAR.search(getattr(imdn, name) or ""):
            raise ValueError(f"IMDN {name} holds a character XML cannot carry")
    if not (_XML_NAME.fullmatch(imdn.kind) and _XML_NAME.fullmatch(imdn.status)):
        raise ValueError(f"IMDN kind/status {imdn.kind[:20]!r}/{imdn.status[:20]!r} is not an XML name")
    root = ET.Element("imdn", xmlns=IMDN_XML_NS)
    ET.SubElement(root, "message-id").text = imdn.message_id
    ET.SubElement(root, "datetime").text = imdn.datetime
    if imdn.recipient_uri:
        ET.SubElement(root, "recipient-uri").text = imdn.recipient_uri
        ET.SubElement(root, "original-recipient-uri").text = imdn.recipient_uri
    notification = ET.SubElement(root, f"{imdn.kind}-notification")
    ET.SubElement(ET.SubElement(notification, "status"), imdn.status)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")


@_remembered(lambda imdn: imdn)   # an Imdn is frozen: every caller may share it
def parse_imdn_xml(data: bytes) -> Imdn:
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, LookupError, ValueError) as exc:   # LookupError: encoding="TTF-8" in the declaration
        raise CpimError(f"IMDN body is not XML: {exc}") from None
    ns = {"i": IMDN_XML_NS}

    def text(tag: str) -> str | None:
        node = root.find(f"i:{tag}", ns)
        return node.text.strip() if node is not None and node.text else None

    message_id = text("message-id")
    if not message_id:
        raise CpimError("IMDN without <message-id>")
    for kind in ("delivery", "display"):
        status = root.find(f"i:{kind}-notification/i:status", ns)
        if status is not None and len(status):
            value = status[0].tag.split("}", 1)[-1]
            return Imdn(message_id, kind, value, text("datetime") or "", text("recipient-uri"))
    raise CpimError("IMDN without a delivery or display notification status")


def imdn_message(imdn: Imdn, *, sender: str, recipient: str) -> CpimMessage:
    """The CPIM envelope that carries an IMDN back to the original sender."""
    return CpimMessage(
        sender=sender, recipient=recipient, body=build_imdn_xml(imdn),
        content_type="message/imdn+xml", disposition=(),
        content_headers=[("Content-Disposition", "notification")],
    )


def uri_of(cpim_address: str) -> str:
    """'"Mary" <sip:mary@cpm-a.lab>' -> 'sip:mary@cpm-a.lab'."""
    if "<" in cpim_address and ">" in cpim_address:
        return cpim_address.split("<", 1)[1].split(">", 1)[0].strip()
    return cpim_address.strip()


# -- what a pager-mode MESSAGE carries ----------------------------------------------------------

# Bodies the lab can interwork without CPIM around them: what plain softphones send.
PLAIN_TEXT_TYPES = ("text/plain",)
ACCEPTED_TYPES = ("message/cpim", *PLAIN_TEXT_TYPES)   # the Accept of a 415


class UnsupportedContent(CpimError):
    """A MESSAGE body type the lab cannot carry: the answer is 415 with ACCEPTED_TYPES."""


def message_content(content_type: str | None, body: bytes, *, sender: str, recipient: str) -> CpimMessage:
    """The CPIM message a MESSAGE carries, whether CPIM-wrapped (CPM clients) or a bare text
    body (Linphone, Zoiper, pjsua: `text/plain`). A bare body gets the SIP From/To as its
    CPIM From/To, and asks for no notification: its sender never said it wanted one and
    could not read an IMDN anyway. Raises CpimError (malformed CPIM) or UnsupportedContent."""
    media = (content_type or "text/plain").split(";", 1)[0].strip().lower()
    if media == "message/cpim":
        return parse_cpim(body)
    if media in PLAIN_TEXT_TYPES:
        return CpimMessage(sender=sender, recipient=recipient, body=body,
                           content_type=content_type or "text/plain; charset=utf-8", disposition=())
    raise UnsupportedContent(f"{media} cannot be interworked; send {' or '.join(ACCEPTED_TYPES)}")
