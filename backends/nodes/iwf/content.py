"""Content adaptation (CPM-IOP-xxx-7): what a CPM payload becomes on a legacy leg.

Text (text/plain, any text/*; HTML reduced to text with its links) goes as text. Anything else
(an image, a file, an FT-over-HTTP file description, any non-text CPIM payload) never goes as
raw bytes: for SMS it becomes a short text with a link on the lab's content server, which
returns the original bytes and Content-Type; for email it becomes an attachment beside a short
text. Pure: the content server is reached through the `put` callable it is given.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable

from iwlab.backends.protocols import mail
from iwlab.backends.protocols.cpim import CpimMessage

FT_HTTP = "application/vnd.gsma.rcs-ft-http+xml"     # RCS/CPM file transfer over HTTP: a file description
Put = Callable[[bytes, str, str], "str | None"]      # (data, content type, file name) -> link, or None


@dataclass(frozen=True)
class Attachment:
    data: bytes
    content_type: str
    filename: str


@dataclass(frozen=True)
class Adapted:
    text: str                                # what the legacy leg carries as text
    attachment: Attachment | None = None     # email: the original payload, attached
    note: str = ""                           # why it changed (the trace says it), "" for plain text


def media_type(cpim: CpimMessage) -> str:
    return (cpim.content_type or "text/plain").split(";", 1)[0].strip().lower() or "text/plain"


def is_text(cpim: CpimMessage) -> bool:
    return media_type(cpim).startswith("text/")


def as_text(cpim: CpimMessage) -> str:
    """A text payload as the person reads it (HTML reduced, links kept)."""
    return mail.html_to_text(cpim.text) if media_type(cpim) == "text/html" else cpim.text


@dataclass(frozen=True)
class _Described:
    what: str              # "an image", "a file"
    filename: str
    content_type: str      # of what the person sent (inside an FT description: the file's)
    size: int
    file_url: str = ""     # FT over HTTP: where the file itself is


def describe(cpim: CpimMessage) -> _Described:
    kind = media_type(cpim)
    filename = _filename(cpim)
    if kind == FT_HTTP:
        found = _ft_http(cpim.body)
        if found is not None:
            name, file_type, size, url = found
            return _Described("a file", name or filename, file_type or "application/octet-stream", size, url)
    main = kind.split("/", 1)[0]
    what = {"image": "an image", "audio": "an audio clip", "video": "a video"}.get(main, "a file")
    return _Described(what, filename, kind, len(cpim.body))


def for_sms(cpim: CpimMessage, sender_name: str, put: Put | None) -> Adapted:
    if is_text(cpim):
        text = as_text(cpim)
        return Adapted(text, note="HTML reduced to text, links kept" if media_type(cpim) == "text/html" else "")
    d = describe(cpim)
    link = put(cpim.body, cpim.content_type, d.filename) if put is not None else None
    label = _label(d)
    if link is None:
        return Adapted(f"{sender_name} sent {d.what} ({label}) that SMS cannot carry.",
                       note=f"{media_type(cpim)} cannot go by SMS and the content server could not keep it")
    return Adapted(f"{sender_name} sent {d.what} ({label}): {link}",
                   note=f"{media_type(cpim)} ({mail.format_size(len(cpim.body))}) cannot go by SMS: "
                        "a link on the lab's content server instead")


def for_email(cpim: CpimMessage, sender_name: str) -> Adapted:
    if is_text(cpim):
        return Adapted(as_text(cpim))
    d = describe(cpim)
    extension = media_type(cpim).split("/", 1)[-1].split("+", 1)[0].split(".")[-1] or "bin"
    if media_type(cpim) == FT_HTTP:
        filename = "file-transfer.xml"       # the description itself; its file's own name is in the text
    else:
        filename = d.filename or f"attachment.{extension}"
    attachment = Attachment(cpim.body, media_type(cpim), filename)
    text = f"{sender_name} sent {d.what} ({_label(d)}), attached."
    if d.file_url:
        text += f"\nThe file: {d.file_url}"
    return Adapted(text, attachment, note=f"{media_type(cpim)} attached to the email")


def _label(d: _Described) -> str:
    return ", ".join(([d.filename] if d.filename else []) + [d.content_type, mail.format_size(d.size)])


def _filename(cpim: CpimMessage) -> str:
    for name, value in cpim.content_headers:
        if name.lower() == "content-disposition":
            match = re.search(r'filename\s*=\s*"?([^";]+)"?', value, re.IGNORECASE)
            if match:
                return match.group(1).strip()[:100]
    return ""


def _ft_http(body: bytes) -> tuple[str, str, int, str] | None:
    """(file name, content type, size, data URL) of the file an FT-over-HTTP description names."""
    try:
        root = ET.fromstring(body)     # bounded by the SIP body; expat refuses entity-expansion bombs
    except ET.ParseError:
        return None
    for info in root.iter():
        if _local(info.tag) != "file-info" or info.get("type", "file") != "file":
            continue
        texts = {_local(child.tag): (child.text or "").strip() for child in info}
        data = next((child for child in info if _local(child.tag) == "data"), None)
        size = texts.get("file-size", "0")
        return (texts.get("file-name", "")[:100], texts.get("content-type", "")[:100],
                int(size) if size.isdigit() else 0, (data.get("url") or "")[:500] if data is not None else "")
    return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
