"""Email <-> CPM conversions, sans-I/O: stdlib `email` with `policy.default`.

CPM -> email builds an RFC 5322 message whose Message-ID is derived from the
Contribution-ID, so a reply's In-Reply-To leads straight back to the CPM
message. Email -> CPM reduces a real client's mail (plain, HTML-only,
multipart, attachments, quoted history, MDNs) to what the person wrote.
`why_malformed` is the mail server's gate: a reason, or None when the
message is acceptable.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, Message, MIMEPart
from email.parser import BytesParser, HeaderParser
from email.utils import format_datetime, getaddresses, make_msgid
from html.parser import HTMLParser
from typing import Any, Iterator

SUBJECT_WORDS, SUBJECT_CHARS = 8, 60
REFERENCES_KEPT = 12          # the first + the last 11, as common clients trim
MDN_TYPES = ("message/disposition-notification", "message/global-disposition-notification")

_MSG_ID = re.compile(r"<[^<>\s]+>")
# Characters a Contribution-ID may keep as is in a msg-id's dot-atom; the rest become =XX.
_ID_SAFE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/?^_`{|}~]")
_SUBJECT_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?|aw|sv|vs|wg|tr|antw)\s*(?:\[\d+\])?\s*[:：]\s*)+", re.I)


# -- CPM -> email -----------------------------------------------------------------------------
def message_id_for(contribution_id: str, domain: str) -> str:
    """<contribution_id@domain>, with characters a msg-id cannot carry escaped as =XX."""
    left = "".join(ch if _ID_SAFE.fullmatch(ch) else "".join(f"={b:02X}" for b in ch.encode())
                   for ch in contribution_id)
    # Dots are fine between atoms only; escaping them all keeps the rule trivial.
    return f"<{left or '=00'}@{domain}>"


def contribution_id_from_message_id(message_id: str, domains: set[str] | None = None) -> str | None:
    """The inverse of message_id_for; None for ids that are not ours (pass the
    domains we mint ids in to exclude other clients' ids)."""
    match = re.fullmatch(r"\s*<?([^<>@\s]+)@([^<>@\s]+)>?\s*", message_id or "")
    if not match or (domains is not None and match.group(2).lower() not in {d.lower() for d in domains}):
        return None
    left = match.group(1)
    try:
        return re.sub(rb"=([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]),
                      left.encode("ascii")).decode("utf-8")
    except (UnicodeError, ValueError):
        return None


def subject_from_text(text: str, fallback: str = "Message") -> str:
    """The first words: at most 8 words and 60 characters, one line, '…' when cut."""
    words = text.split()
    if not words:
        return fallback
    kept: list[str] = []
    for word in words[:SUBJECT_WORDS]:
        if len(" ".join(kept + [word])) > SUBJECT_CHARS:
            break
        kept.append(word)
    if not kept:                                   # one enormous first word
        return words[0][: SUBJECT_CHARS - 1] + "…"
    return " ".join(kept) + ("…" if len(kept) < len(words) else "")


def normalise_message_id(value: str | None) -> str:
    value = (value or "").strip()
    if not value:
        return ""
    return value if value.startswith("<") else f"<{value.strip('<>')}>"


def trim_references(references: list[str]) -> list[str]:
    return references if len(references) <= REFERENCES_KEPT else [references[0], *references[-(REFERENCES_KEPT - 1):]]


# The characters str.splitlines() ends a line at (the stdlib refuses a header value holding one:
# ValueError "Header values may not contain linefeed ..."), and other controls (a NUL makes the mail
# one our own server refuses), though a SIP header value may hold all but CR/LF.
_LINE_BREAK = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


def _unstructured(value: str) -> str:
    """A free-text header value that the stdlib will store and send on one line: one with a line
    break or control character goes as an RFC 2047 encoded-word, which the parser decodes back.
    A NUL becomes U+FFFD: the stdlib writes the decoded text out again, and no mail may hold a NUL."""
    value = value.replace("\0", "\ufffd")
    if not _LINE_BREAK.search(value):
        return value
    return "=?utf-8?b?" + base64.b64encode(value.encode("utf-8", "surrogateescape")).decode("ascii") + "?="


def _display_name(name: str) -> str:
    """A display name on one line: its line break and control characters become spaces."""
    return _LINE_BREAK.sub(" ", name)


def cpm_to_email(*, sender_name: str, sender_address: str, recipient_address: str, text: str,
                 contribution_id: str, conversation_id: str, in_reply_to_message_id: str | None = None,
                 references: list[str] | tuple[str, ...] = (), request_mdn: bool = True, domain: str,
                 subject: str | None = None, date: datetime | None = None,
                 attachments: list[tuple[bytes, str, str]] | tuple = ()) -> EmailMessage:
    """A CPM message as the email John's client receives. `subject` None: the first words.
    attachments: (data, content type, file name) of what the text cannot carry (an image ...)."""
    msg = EmailMessage(policy=policy.default)
    sender_name = _display_name(sender_name)
    msg["From"] = Address(display_name=sender_name, addr_spec=sender_address)
    msg["To"] = recipient_address
    msg["Subject"] = _unstructured(subject if subject is not None
                                   else subject_from_text(text, f"Message from {sender_name}"))
    msg["Date"] = format_datetime(date or datetime.now().astimezone())
    msg["Message-ID"] = message_id_for(contribution_id, domain)
    if in_reply_to_message_id:
        parent = normalise_message_id(in_reply_to_message_id)
        chain = [normalise_message_id(r) for r in references if r and normalise_message_id(r) != parent]
        msg["In-Reply-To"] = parent
        msg["References"] = " ".join(trim_references(list(dict.fromkeys(chain)) + [parent]))
    msg["Conversation-ID"] = _unstructured(conversation_id)
    msg["Contribution-ID"] = _unstructured(contribution_id)
    if request_mdn:
        # Not an address header to the stdlib registry: store its text form.
        msg["Disposition-Notification-To"] = str(Address(display_name=sender_name, addr_spec=sender_address))
    msg.set_content(text, charset="utf-8")       # 8bit UTF-8: our server offers 8BITMIME
    for data, content_type, filename in attachments:
        maintype, _, subtype = content_type.partition("/")
        msg.add_attachment(bytes(data), maintype=maintype or "application", subtype=subtype or "octet-stream",
                           filename=_display_name(filename) or None)
    return msg


# -- email -> CPM -----------------------------------------------------------------------------
@dataclass
class IncomingEmail:
    sender: str
    sender_name: str
    recipients: list[str]
    subject: str
    text: str                          # what the person wrote: quoted history trimmed
    message_id: str
    in_reply_to: str | None
    references: list[str]
    conversation_id: str | None
    attachments: list[str]             # "name (type, size)": listed, never dropped silently
    was_html_only: bool
    is_mdn: bool
    mdn_original_message_id: str | None
    mdn_disposition: str | None        # "displayed", "deleted" ...
    warnings: list[str] = field(default_factory=list)
    disposition_notification_to: str | None = None   # the sender asked for an MDN, to this address
    trimmed_quote: bool = False        # quoted history was cut from `text`


def parse_incoming(raw: bytes | EmailMessage) -> IncomingEmail:
    """From the wire bytes, or from the EmailMessage the mail server hands over."""
    msg = raw if isinstance(raw, EmailMessage) else BytesParser(policy=policy.default).parsebytes(raw)
    warnings: list[str] = []
    sender, sender_name = _first_address(msg, "From")
    if not sender:
        warnings.append("no usable From address")
    recipients = [a for name in ("To", "Cc") for a in _addresses(msg, name)]
    dnt, _ = _first_address(msg, "Disposition-Notification-To")

    is_mdn, original_id, disposition = _mdn_fields(msg)
    body = msg.get_body(preferencelist=("plain", "html"))
    text, was_html_only = "", False
    if body is not None:
        text = _text_of(body, warnings)
        if body.get_content_subtype() == "html":
            text, was_html_only = html_to_text(text), True
    elif not is_mdn:
        warnings.append(f"no text part in {msg.get_content_type()}")

    attachments: list[str] = []
    for part, in_alternative in ([] if is_mdn else _leaves(msg)):
        if part is body:
            continue
        if _is_attachment(part):
            attachments.append(_describe_attachment(part))
        elif not in_alternative:       # more inline text (Apple Mail splits text around an image)
            more = _text_of(part, warnings)
            text += "\n" + (html_to_text(more) if part.get_content_subtype() == "html" else more)
    kept, trimmed = trim_quoted(text) if not is_mdn else (text.strip(), False)
    return IncomingEmail(
        sender=sender, sender_name=sender_name, recipients=recipients,
        subject=_text_header(msg, "Subject"), text=kept,
        message_id=normalise_message_id(_text_header(msg, "Message-ID")),
        in_reply_to=next(iter(_MSG_ID.findall(_text_header(msg, "In-Reply-To"))), None),
        references=_MSG_ID.findall(_text_header(msg, "References")),
        conversation_id=_text_header(msg, "Conversation-ID").strip() or None,
        attachments=attachments, was_html_only=was_html_only, is_mdn=is_mdn,
        mdn_original_message_id=original_id, mdn_disposition=disposition, warnings=warnings,
        disposition_notification_to=dnt or None, trimmed_quote=trimmed)


def _header(msg: Message, name: str) -> Any:
    """The header as the policy parses it, or its raw text when the stdlib's structured parser breaks on
    a hostile value (Message-ID "<" raises IndexError, an odd address HeaderParseError ...)."""
    try:
        return msg.get(name)
    except Exception:   # noqa: BLE001 - whatever the stdlib raises, a peer's header must not stop us
        raw = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), None)
        if raw is None:
            return None
        return str(raw).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _text_header(msg: Message, name: str) -> str:
    return str(_header(msg, name) or "")


def _addresses(msg: Message, name: str) -> list[str]:
    header = _header(msg, name)
    return [a.addr_spec for a in getattr(header, "addresses", ()) if a.addr_spec and a.addr_spec != "<>"]


def _first_address(msg: Message, name: str) -> tuple[str, str]:
    header = _header(msg, name)
    if header is None:
        return "", ""
    if hasattr(header, "addresses"):
        pairs = [(a.display_name, a.addr_spec) for a in header.addresses]
    else:                      # a header the registry does not know (Disposition-Notification-To)
        pairs = getaddresses([str(header)])
    for display_name, addr_spec in pairs:
        if addr_spec and "@" in addr_spec:
            return addr_spec, display_name
    return "", ""


def _text_of(part: MIMEPart, warnings: list[str]) -> str:
    try:
        text = part.get_content()
    except (LookupError, UnicodeError) as exc:   # an unknown or lying charset: keep what we can
        warnings.append(f"text part charset {part.get_content_charset()!r}: {exc}; decoded as UTF-8 with replacements")
        payload = part.get_payload(decode=True)
        text = (payload if isinstance(payload, bytes) else b"").decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n")


def _leaves(part: MIMEPart, in_alternative: bool = False) -> Iterator[tuple[MIMEPart, bool]]:
    """(leaf part, whether it is one form of an alternative); an attached
    message/rfc822 counts as one leaf."""
    if part.get_content_maintype() == "multipart":
        inside = in_alternative or part.get_content_subtype() == "alternative"
        for sub in part.iter_parts():
            yield from _leaves(sub, inside)
    else:
        yield part, in_alternative


def _is_attachment(part: MIMEPart) -> bool:
    """Inline text/plain and text/html without a file name are the body (or its
    other forms); everything else is something the person attached."""
    return part.is_attachment() or bool(part.get_filename()) or \
        part.get_content_type() not in ("text/plain", "text/html")


def _describe_attachment(part: Message) -> str:
    name = part.get_filename() or f"unnamed.{part.get_content_subtype()}"
    payload = part.get_payload()
    if isinstance(payload, list):      # an attached message
        size = sum(len(p.as_bytes()) for p in payload if isinstance(p, Message))
    else:
        decoded = part.get_payload(decode=True)
        size = len(decoded) if isinstance(decoded, bytes) else 0
    return f"{name} ({part.get_content_type()}, {format_size(size)})"


def format_size(size: int) -> str:
    if size < 1000:
        return f"{size} B"
    return f"{size / 1000:.1f} kB" if size < 1_000_000 else f"{size / 1_000_000:.1f} MB"


# -- MDN (RFC 8098) ---------------------------------------------------------------------------
def _mdn_fields(msg: EmailMessage) -> tuple[bool, str | None, str | None]:
    """(is_mdn, Original-Message-ID, disposition type)."""
    if msg.get_content_type() != "multipart/report" or \
            str(msg.get_param("report-type", "")).lower() not in ("disposition-notification",
                                                                  "global-disposition-notification"):
        return False, None, None
    for part in msg.walk():
        if part.get_content_type() in MDN_TYPES:
            payload = part.get_payload()
            # The parser treats message/* bodies as an embedded header block.
            fields: Message = payload[0] if isinstance(payload, list) and payload and \
                isinstance(payload[0], Message) else HeaderParser(policy=policy.default).parsestr(str(payload))
            original = normalise_message_id(str(fields.get("Original-Message-ID", "") or "")) or None
            disposition = str(fields.get("Disposition", "") or "")
            kind = disposition.partition(";")[2].strip().split("/")[0].strip().lower() or None
            return True, original, kind
    return True, None, None


def build_mdn(*, original: IncomingEmail | EmailMessage, reader_address: str, reader_name: str,
              disposition: str = "displayed", reporting_ua: str = "iwlab email client") -> EmailMessage:
    """The read receipt John's client sends back (RFC 8098, manually sent)."""
    if isinstance(original, IncomingEmail):
        original_id, subject = original.message_id, original.subject
        to = original.disposition_notification_to or original.sender
    else:
        original_id = normalise_message_id(str(original.get("Message-ID", "") or ""))
        subject = str(original.get("Subject", "") or "")
        to = _first_address(original, "Disposition-Notification-To")[0] or _first_address(original, "From")[0]
    return mdn_for(original_id=original_id, subject=subject, to=to, reader_address=reader_address,
                   reader_name=reader_name, disposition=disposition, reporting_ua=reporting_ua)


def mdn_for(*, original_id: str, subject: str, to: str, reader_address: str, reader_name: str,
            disposition: str = "displayed", reporting_ua: str = "iwlab email client",
            mode: str = "manual-action/MDN-sent-manually") -> EmailMessage:
    """An RFC 8098 MDN for the mail original_id (threaded to it by In-Reply-To and References);
    mode: the disposition mode (a gateway reporting its user's display: manual-action/MDN-sent-automatically)."""
    domain = reader_address.rpartition("@")[2] or "localhost"
    report = EmailMessage(policy=policy.default)
    report["From"] = Address(display_name=reader_name, addr_spec=reader_address)
    report["To"] = to
    report["Subject"] = f"Read: {subject}" if subject else "Read receipt"
    report["Date"] = format_datetime(datetime.now().astimezone())
    report["Message-ID"] = make_msgid(domain=domain)
    if original_id:
        report["In-Reply-To"] = original_id
        report["References"] = original_id
    report["Content-Type"] = "multipart/report; report-type=disposition-notification"
    human = EmailMessage(policy=policy.default)
    human.set_content(f"The message sent to {reader_address}"
                      f"{f' with subject “{subject}”' if subject else ''} was {disposition}.\n"
                      "This is no guarantee that the message has been read or understood.\n")
    machine = EmailMessage(policy=policy.default)
    machine["Content-Type"] = "message/disposition-notification"
    fields = [f"Reporting-UA: {domain}; {reporting_ua}", f"Final-Recipient: rfc822; {reader_address}"]
    if original_id:
        fields.append(f"Original-Message-ID: {original_id}")
    fields.append(f"Disposition: {mode}; {disposition}")
    machine.set_payload("\r\n".join(fields) + "\r\n")
    report.set_payload([human, machine])
    return report


# -- refusals and bounces ---------------------------------------------------------------------------
class RelayRefused(Exception):
    """What a relay hand-off says when it cannot carry a message: `reply` is the whole SMTP
    reply ("550 5.1.1 ...", "554 5.6.0 ..."), given to the client instead of a 250."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = " ".join(reply.split())


# A SIP final response as the RFC 3463 status of a failed delivery.
_SIP_TO_DSN = {400: "5.6.0", 403: "5.7.1", 404: "5.1.1", 408: "5.4.7", 410: "5.1.6", 413: "5.3.4",
               415: "5.6.1", 480: "5.4.7", 484: "5.1.3", 488: "5.6.0", 503: "5.4.7", 603: "5.7.1"}


def dsn_status_for_sip(status: int) -> str:
    return _SIP_TO_DSN.get(status, "5.0.0")


def build_dsn(*, original_message_id: str, original_subject: str, original_sender: str, original_recipient: str,
              reporting_domain: str, status: int, reason: str, arrival: datetime | None = None) -> EmailMessage:
    """A delivery status notification for a mail that could not be delivered on (a failure DSN,
    RFC 3464, inside multipart/report, RFC 6522): a human-readable part, the machine-readable
    message/delivery-status, and the original's headers as far as they are known. Threaded to the
    original (In-Reply-To / References), so the sender's client shows it with what it reports on.
    status/reason: what the next hop answered (a SIP status: 4xx/5xx/6xx, all final here)."""
    now = datetime.now().astimezone()
    report = EmailMessage(policy=policy.default)
    report["From"] = Address(display_name="Mail Delivery System", addr_spec=f"mailer-daemon@{reporting_domain}")
    report["To"] = original_sender
    report["Subject"] = _unstructured("Undelivered: " + (original_subject or "your message"))
    report["Date"] = format_datetime(now)
    report["Message-ID"] = make_msgid(domain=reporting_domain)
    report["Auto-Submitted"] = "auto-replied"          # RFC 3834: no robot answers this one
    parent = normalise_message_id(original_message_id)
    if parent:
        report["In-Reply-To"] = parent
        report["References"] = parent
    reason = _display_name(reason)
    human = EmailMessage(policy=policy.default)
    human.set_content(f"Your message to {original_recipient} could not be delivered.\n\n"
                      f"The recipient's service answered: {status} {reason}\n", charset="utf-8")
    machine = EmailMessage(policy=policy.default)
    machine["Content-Type"] = "message/delivery-status"
    # SIP's 6xx and a final 4xx/5xx are permanent here (the IWF already waited out the temporary ones):
    # a 5.x.x status, its detail from the SIP status (RFC 3463).
    per_message = [("Reporting-MTA", f"dns; {reporting_domain}"), ("Arrival-Date", format_datetime(arrival or now))]
    per_recipient = [("Final-Recipient", f"rfc822; {original_recipient}"), ("Action", "failed"),
                     ("Status", dsn_status_for_sip(status)), ("Diagnostic-Code", f"X-SIP; {status} {reason}")]
    blocks: list[Message | str] = []
    for fields in (per_message, per_recipient):    # the generator writes each block as a header block
        block = Message(policy=policy.default)
        for name, value in fields:
            block[name] = value
        blocks.append(block)
    machine.set_payload(blocks)
    headers = EmailMessage(policy=policy.default)
    headers["Content-Type"] = "text/rfc822-headers"
    original = [f"From: {original_sender}", f"To: {original_recipient}"]
    if original_subject:
        original.append(f"Subject: {_display_name(original_subject)}")
    if parent:
        original.append(f"Message-ID: {parent}")
    headers.set_payload("\r\n".join(original) + "\r\n")
    report.set_payload([human, machine, headers])
    report.set_param("report-type", "delivery-status")
    report.set_type("multipart/report")
    return report


def dsn_fields(msg: EmailMessage) -> list[dict[str, str]] | None:
    """The per-recipient fields of a DSN (multipart/report; report-type=delivery-status), or None."""
    if msg.get_content_type() != "multipart/report" or \
            str(msg.get_param("report-type", "")).lower() != "delivery-status":
        return None
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            payload = part.get_payload()
            if isinstance(payload, list):     # the parser makes each field block a Message
                blocks = [dict(block.items()) for block in payload if isinstance(block, Message)]
            else:
                blocks = [dict(HeaderParser(policy=policy.default).parsestr(chunk).items())
                          for chunk in re.split(r"\r?\n\r?\n", str(payload)) if chunk.strip()]
            return [{k: str(v) for k, v in block.items()} for block in blocks[1:]]
    return []


# -- HTML and quoted history --------------------------------------------------------------------
_BLOCK_TAGS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol",
               "pre", "hr", "blockquote", "section", "article", "header", "footer"}


_LINK_SCHEMES = ("http:", "https:", "ftp:", "mailto:", "tel:", "sip:", "sips:")


class _HtmlText(HTMLParser):
    """Visible text with a line break per block; <blockquote> becomes '> ' lines,
    so the plain-text quote trimming applies to HTML replies too. A link keeps its
    target: <a href="http://x.example/plan">the plan</a> -> "the plan (http://x.example/plan)"
    (plain text has no other place for it; the target alone when it is the text)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._line: list[str] = []
        self._line_depth = 0
        self._quote_depth = 0
        self._hidden = 0            # inside <script>/<style>/<head>
        self._links: list[tuple[str, int]] = []   # open <a>: its target, where its text starts in _line

    def _break(self) -> None:
        text = re.sub(r"[ \t\r\n\f\xa0]+", " ", "".join(self._line)).strip()
        self.lines.append("> " * self._line_depth + text if text or self._line_depth else text)
        self._line, self._line_depth = [], self._quote_depth
        self._links = [(href, 0) for href, _ in self._links]   # a link across a block break goes on

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "body":          # whatever <head> left open ends here
            self._hidden = 0
        elif tag in ("script", "style", "head", "title"):
            self._hidden += 1
        elif tag in _BLOCK_TAGS:
            if self._line or tag in ("br", "p"):
                self._break()
            if tag == "blockquote":
                self._quote_depth += 1
                self._line_depth = self._quote_depth
            if tag == "li":
                self._line.append("- ")
        elif tag == "a" and not self._hidden:
            href = next((value or "" for name, value in attrs if name == "href"), "").strip()
            # Only targets a reader can follow: no javascript:, no in-page anchors.
            self._links.append((href if href.lower().startswith(_LINK_SCHEMES) else "", len(self._line)))

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._links:
            href, start = self._links.pop()
            if not href:
                return
            text = "".join(self._line[start:]).strip() if start <= len(self._line) else ""
            bare = href.split(":", 1)[1] if href.lower().startswith(("mailto:", "tel:")) else href
            if not text:
                self._line.append(f" {href} ")
            elif text not in (href, bare) and href not in text:
                self._line.append(f" ({href})")
            return
        if tag in ("script", "style", "head", "title"):
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCK_TAGS and tag != "br":
            if self._line:
                self._break()
            if tag == "blockquote":
                self._quote_depth = max(0, self._quote_depth - 1)
                self._line_depth = self._quote_depth

    def handle_data(self, data: str) -> None:
        if not self._hidden and (self._line or data.strip()):   # leading whitespace of a line means nothing
            if not self._line:
                self._line_depth = self._quote_depth
            self._line.append(data)


def html_to_text(markup: str) -> str:
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    if parser._line:
        parser._break()
    text = "\n".join(line.rstrip() for line in parser.lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()   # entities: convert_charrefs did them


_ATTRIBUTION = [re.compile(p, re.I) for p in (
    r"^\s*on\b.*\bwrote\s*:\s*$", r"^\s*le\b.*\ba\s+écrit\s*:\s*$", r"^\s*am\b.*\bschrieb\b.*:\s*$",
    r"^\s*el\b.*\bescribió\s*:\s*$", r"^.*\bwrote\s*:\s*$")]
_ATTRIBUTION_START = re.compile(r"^\s*(on|le|am|el)\s", re.I)
_ATTRIBUTION_END = re.compile(r"(wrote|a\s+écrit|schrieb|escribió)\s*:\s*$", re.I)
_OUTLOOK_SEPARATOR = re.compile(r"^\s*-{2,}\s*(original message|ursprüngliche nachricht|message d'origine)\s*-{2,}\s*$", re.I)
_OUTLOOK_FROM = re.compile(r"^\s*\*?(from|von|de)\s*:\*?\s+\S", re.I)
_OUTLOOK_SENT = re.compile(r"^\s*\*?(sent|date|gesendet|envoyé)\s*:\*?\s+\S", re.I)


def trim_quoted(text: str) -> tuple[str, bool]:
    """(what the person wrote, whether history was cut). Cuts an Outlook-style
    original-message block, a '-- ' signature, and quote blocks ('>' lines,
    with their "On ... wrote:" attribution) at the start and at the end;
    quotes in the middle (an interleaved reply) stay as context."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    original = list(lines)
    for i, line in enumerate(lines):
        outlook_header = _OUTLOOK_FROM.match(line) and any(_OUTLOOK_SENT.match(n) for n in lines[i + 1:i + 4])
        if _OUTLOOK_SEPARATOR.match(line) or outlook_header:
            lines = lines[:i]
            while lines and set(lines[-1].strip()) <= {"_", "-"}:   # the ____ rule above it
                lines.pop()
            break
    for i, line in enumerate(lines):
        if line.rstrip("\r") in ("-- ", "--"):
            lines = lines[:i]
            break
    lines = _cut_trailing_quotes(lines)
    lines = _cut_leading_quotes(lines)
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    whole = "\n".join(original).strip()
    if not lines:                      # all of it was history (a bare forward): keep it all
        return whole, False
    kept = "\n".join(lines)
    return kept, kept != whole


def _is_quote(line: str) -> bool:
    return line.lstrip().startswith(">")


def _attribution_span(lines: list[str], end: int, strict: bool = False) -> int:
    """Index where an attribution ending at lines[end-1] starts (it may wrap onto
    two lines), or `end` if there is none. `strict`: not the generic "... wrote:"
    (alone, without quotes after it, that could be the person's own words)."""
    patterns = _ATTRIBUTION[:-1] if strict else _ATTRIBUTION
    if end >= 1 and any(p.match(lines[end - 1]) for p in patterns):
        return end - 1
    if end >= 2 and _ATTRIBUTION_START.match(lines[end - 2]) and _ATTRIBUTION_END.search(lines[end - 1]):
        return end - 2
    return end


def _cut_trailing_quotes(lines: list[str]) -> list[str]:
    while True:
        end = len(lines)
        while end and not lines[end - 1].strip():
            end -= 1
        start = end
        while start and (_is_quote(lines[start - 1]) or (not lines[start - 1].strip() and start < end)):
            start -= 1
        while start < end and not lines[start].strip():
            start += 1
        if start == end:               # no quote block at the end; maybe a lone attribution
            cut = _attribution_span(lines, end, strict=True)
            return lines[:cut] if cut < end else lines[:end]
        before = start
        while before and not lines[before - 1].strip():
            before -= 1
        lines = lines[:_attribution_span(lines, before)]


def _cut_leading_quotes(lines: list[str]) -> list[str]:
    start = 0
    while start < len(lines) and not lines[start].strip():
        start += 1
    head = start
    if start < len(lines) and not _is_quote(lines[start]):   # an attribution, then quotes
        for span in (1, 2):
            if start + span < len(lines) and _is_quote(lines[start + span]) and \
                    _attribution_span(lines, start + span) == start:
                head = start + span
                break
    if head >= len(lines) or not _is_quote(lines[head]):
        return lines
    end = head
    while end < len(lines) and (_is_quote(lines[end]) or not lines[end].strip()):
        end += 1
    return lines[end:]


# -- threading ---------------------------------------------------------------------------------
def thread_key_candidates(email: IncomingEmail) -> list[str]:
    """Message-IDs to look up in the thread map, best first: the parent, then
    the References chain newest first."""
    ids = ([email.in_reply_to] if email.in_reply_to else []) + list(reversed(email.references))
    return list(dict.fromkeys(i for i in ids if i))


def normalise_subject(subject: str) -> str:
    """The subject-based threading fallback: no Re:/Fwd:/AW:/SV: prefixes, one
    space between words, case-folded."""
    previous = None
    while previous != subject:
        previous, subject = subject, _SUBJECT_PREFIX.sub("", subject)
    return " ".join(subject.split()).casefold()


# -- the mail server's gate ----------------------------------------------------------------------
_FIELD_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]+:")


def why_malformed(raw: bytes) -> str | None:
    """Why a DATA payload (CRLF lines, dot-stuffing removed) is not an
    acceptable RFC 5322 message, or None."""
    if b"\0" in raw:
        return "NUL byte in message data"
    bare = raw.replace(b"\r\n", b"")
    for char, name in ((b"\n", "LF"), (b"\r", "CR")):
        if char in bare:
            line_no = raw[: raw.replace(b"\r\n", b"  ").find(char)].count(b"\r\n") + 1
            return (f"bare {name} in message data (line {line_no}); lines must end with CRLF "
                    "(RFC 5321 2.3.8; SMTP smuggling guard)")
    lines = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if not raw.startswith(b"\r\n") else [b""]
    if not lines[0] or not _FIELD_NAME.match(lines[0]):
        first = lines[0][:40].decode("utf-8", "replace")
        return f"no header block: line 1 {first!r} is not a header field (RFC 5322 2.2)"
    fields: list[list[str]] = []                   # [name, unfolded value]
    for number, line in enumerate(lines, 1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return f"header line {number} has 8-bit bytes that are not UTF-8"
        if line[:1] in (b" ", b"\t"):
            fields[-1][1] += text
        elif _FIELD_NAME.match(line):
            name, _, value = text.partition(":")
            fields.append([name, value.strip()])
        else:
            return f"header line {number} does not parse: {text[:40]!r}"
    senders = [value for name, value in fields if name.lower() == "from"]
    if not senders:
        return "no From header (RFC 5322 3.6.2)"
    # Only From (the CPM sender to be) goes through the structured parser: it
    # costs ~0.3 ms a header, and a bad To/Cc harms nobody here.
    try:
        header = policy.default.header_factory("From", senders[0])
    except Exception:   # noqa: BLE001 - the stdlib's parser raises IndexError on "<", '"', "a@" ...
        return f"From header does not parse: {senders[0][:60]!r}"
    if any("address" in str(d).lower() for d in header.defects) or \
            not any(a.addr_spec and "@" in a.addr_spec for a in header.addresses):
        return f"From header does not parse: {senders[0][:60]!r}"
    return None
