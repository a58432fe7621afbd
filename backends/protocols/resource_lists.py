"""Resource lists (RFC 4826 `application/resource-lists+xml`) as a URI-list service reads them
(RFC 5366 recipient lists, RFC 5364 copy control), sans-I/O.

The XML comes from outside and is treated as hostile: bounded in bytes and in entries, UTF-8 only,
and no document type declaration at all (the way to entity bombs and external entities), checked
before the stdlib parser sees it; then ElementTree, which resolves no external entity. What is
refused is refused with the SIP answer RFC 5366 would give (400 malformed, 403 a list larger than
the service allows), never half-read.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from iwlab.backends.protocols.refusal import BodyRefused

NS = "urn:ietf:params:xml:ns:resource-lists"
CP_NS = "urn:ietf:params:xml:ns:copycontrol"
MAX_BYTES = 32 * 1024
MAX_ENTRIES = 32          # the lab's service policy: a group of at most this many invitees
MAX_URI = 256
COPY_CONTROLS = ("to", "cc", "bcc")
_DECLARED_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*\bencoding\s*=\s*["']([^"']*)["']""")
_URI = re.compile(r"(?i)(sips?|tel):[\x21\x23-\x3b\x3d\x3f-\x7e]+")   # printable ASCII, no < > " (RFC 3261 25.1)


class ResourceListError(BodyRefused):
    """A list that cannot be used; ``status`` is the SIP answer."""


@dataclass(frozen=True)
class Entry:
    uri: str
    display_name: str = ""
    copy_control: str = "to"     # RFC 5364: to / cc / bcc (bcc: not shown to the others)


def parse_resource_list(data: bytes, *, max_entries: int = MAX_ENTRIES) -> list[Entry]:
    """The entries of every <list>, in document order, duplicates (same URI) dropped (RFC 5366 4)."""
    root = _safe_root(data)
    if root.tag != f"{{{NS}}}resource-lists":
        raise ResourceListError("the root element is not resource-lists")
    for unsupported in ("entry-ref", "external"):
        if root.find(f".//{{{NS}}}{unsupported}") is not None:
            raise ResourceListError(f"<{unsupported}> is not supported: list the URIs themselves")
    entries: list[Entry] = []
    seen: set[str] = set()
    for element in root.iter(f"{{{NS}}}entry"):
        entry = _entry(element)
        if entry.uri.lower() in seen:
            continue
        seen.add(entry.uri.lower())
        entries.append(entry)
        if len(entries) > max_entries:
            raise ResourceListError(f"more than {max_entries} recipients", 403)
    if not entries:
        raise ResourceListError("the resource list names nobody")
    return entries


def _safe_root(data: bytes) -> ET.Element:
    if len(data) > MAX_BYTES:
        raise ResourceListError(f"resource list larger than {MAX_BYTES} bytes", 413)
    declared = _DECLARED_ENCODING.match(data)
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8", b"us-ascii"):
        raise ResourceListError("resource list not in UTF-8", 415)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ResourceListError("resource list not in UTF-8", 415) from None
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ResourceListError("document type declarations are not accepted")
    try:
        return ET.fromstring(data)
    except (ET.ParseError, ValueError, LookupError) as exc:
        raise ResourceListError(f"resource list is not XML: {exc}"[:100]) from None


def usable_uri(uri: str) -> bool:
    """A sip:, sips: or tel: URI a list may name (and a focus may write into one): printable ASCII, bounded."""
    return len(uri) <= MAX_URI and _URI.fullmatch(uri) is not None


def _entry(element: ET.Element) -> Entry:
    uri = (element.get("uri") or "").strip()
    if not usable_uri(uri):
        raise ResourceListError(f"entry with an unusable uri {uri[:40]!r}")
    name_element = element.find(f"{{{NS}}}display-name")
    name = " ".join((name_element.text or "").split()) if name_element is not None else ""
    copy_control = (element.get(f"{{{CP_NS}}}copyControl") or "to").strip().lower()
    if copy_control not in COPY_CONTROLS:
        raise ResourceListError(f"copyControl {copy_control[:10]!r} is not to, cc or bcc")
    return Entry(uri, name[:100], copy_control)


def build_resource_list(entries: list[Entry]) -> bytes:
    """A resource list of one <list>; ValueError for what XML cannot carry."""
    ET.register_namespace("", NS)
    ET.register_namespace("cp", CP_NS)
    root = ET.Element(f"{{{NS}}}resource-lists")
    listing = ET.SubElement(root, f"{{{NS}}}list")
    for entry in entries:
        for value in (entry.uri, entry.display_name):
            if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", value):
                raise ValueError(f"{value!r} cannot be written in XML")
        element = ET.SubElement(listing, f"{{{NS}}}entry", {"uri": entry.uri})
        if entry.copy_control != "to":
            element.set(f"{{{CP_NS}}}copyControl", entry.copy_control)
        if entry.display_name:
            ET.SubElement(element, f"{{{NS}}}display-name").text = entry.display_name
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")
