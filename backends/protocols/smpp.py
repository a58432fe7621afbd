"""SMPP v3.4 codec helpers over smpplib's PDU classes (sans-I/O).

Bytes in, PDU objects and trace descriptions out, and back; no sockets here.

- `Framer` cuts a TCP byte stream into whole PDUs (by command_length).
- `parse` / `make` / `encode` wrap smpplib.smpp.parse_pdu / make_pdu and
  PDU.generate, hiding their quirks (see FIELD-NOTES): they draw sequence
  numbers from a "client" object (we pass a dummy and set `pdu.sequence`
  ourselves), parsed strings are bytes while generation wants str, unknown
  TLVs raise unless allow_unknown_opt_params=True.
- `describe` turns a PDU into the trace's one-line summary and a dict of
  decoded fields (JSON-friendly: str, int, bool, lists, dicts; octet strings
  as hex).
"""
from __future__ import annotations

import re
import struct
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import IntEnum
from typing import Any

from smpplib import command as sm_command
from smpplib import command_codes, consts, smpp
from smpplib.exceptions import UnknownCommandError

from iwlab.backends.protocols import smstext

HEADER = struct.Struct(">LLLL")     # command_length, command_id, command_status, sequence_number
MIN_LENGTH = 16
# Largest sane PDU: a 64 KiB message_payload plus the mandatory fields. A
# bigger command_length is garbage, and the stream cannot be re-synchronised.
MAX_LENGTH = 0x10000 + 512
RESPONSE_BIT = 0x80000000
GENERIC_NACK = 0x80000000

STATUS_NAMES = {value: name[5:] for name, value in vars(consts).items() if name.startswith("SMPP_ESME_")}
COMMAND_NAMES = {code: name for name, code in command_codes.commands.items()}
TLV_NAMES = frozenset(consts.OPTIONAL_PARAMS)
RECEIPT_ESM_CLASS = 0x04   # esm_class message type "SMSC delivery receipt"; smpplib has no constant
INTERMEDIATE_ESM_CLASS = 0x20   # "intermediate delivery notification"
ACK_ESM_CLASS = 0x08            # "(E)SME delivery acknowledgement": an SME's own report on a message
MESSAGE_TYPE_MASK = 0x3C        # the esm_class bits that say what kind of deliver_sm this is


def is_receipt(esm_class: int | None) -> bool:
    """A deliver_sm that reports on a message (a receipt or an intermediate notification), not a message."""
    return (esm_class or 0) & MESSAGE_TYPE_MASK in (RECEIPT_ESM_CLASS, INTERMEDIATE_ESM_CLASS)


class MessageState(IntEnum):
    """SMPP v3.4 5.2.28 message_state."""
    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8

    @property
    def stat(self) -> str:
        """The de-facto receipt text's stat: word."""
        return _STATS[self]


_STATS = {MessageState.ENROUTE: "ENROUTE", MessageState.DELIVERED: "DELIVRD", MessageState.EXPIRED: "EXPIRED",
          MessageState.DELETED: "DELETED", MessageState.UNDELIVERABLE: "UNDELIV", MessageState.ACCEPTED: "ACCEPTD",
          MessageState.UNKNOWN: "UNKNOWN", MessageState.REJECTED: "REJECTD"}


def state_of_stat(stat: str) -> MessageState | None:
    """The message_state a receipt text's stat: word names (DELIVRD -> DELIVERED), if any."""
    return next((state for state, word in _STATS.items() if word == stat.strip().upper()), None)


FINAL_FAILURE_STATES = frozenset({MessageState.EXPIRED, MessageState.DELETED, MessageState.UNDELIVERABLE,
                                  MessageState.REJECTED})


def receipt_outcome(message_state: int | None, stat: str | None) -> str | None:
    """'delivered', 'failed', or None while the message is not final."""
    stat = (stat or "").upper()
    if message_state in FINAL_FAILURE_STATES or stat in {s.stat for s in FINAL_FAILURE_STATES}:
        return "failed"
    if message_state == MessageState.DELIVERED or stat == MessageState.DELIVERED.stat:
        return "delivered"
    return None


def normalised_message_id(message_id: str) -> str:
    return message_id.strip().upper().lstrip("0") or "0"


def receipt_keys(message_id: str) -> list[str]:
    """Every form one SMSC message id may take in a receipt (hex or decimal, leading zeros or
    not), the id as written first: real SMSCs disagree on the form (DOMAIN-NOTES)."""
    value = message_id.strip()
    keys = [normalised_message_id(value)]
    if value and all(ch in "0123456789abcdefABCDEF" for ch in value):
        keys += [f"{int(value, 16):X}", str(int(value, 16))]
    if value.isdigit():
        keys += [f"{int(value):X}", str(int(value))]
    return list(dict.fromkeys(keys))


TON_INTERNATIONAL = 0x01
TON_ALPHANUMERIC = 0x05
MAX_E164_DIGITS = 15


def address_problem(address: str, ton: int | None) -> str | None:
    """Why an SMPP address (source_addr, destination_addr) cannot be carried on, or None.

    Checked where an address enters the lab: a CR/LF or other control character would
    travel on into a SIP From or a mail header and fail there, after the SMSC had said
    "accepted". TON international means an E.164 number: digits only (a '+' tolerated)."""
    if any(ord(ch) < 0x20 or ord(ch) > 0x7E for ch in address):
        return "control or non-ASCII characters in the address"
    if ton == TON_INTERNATIONAL:
        digits = address[1:] if address.startswith("+") else address
        if not digits.isdigit() or len(digits) > MAX_E164_DIGITS:
            return f"TON international needs 1 to {MAX_E164_DIGITS} digits, not {address!r}"
    elif ton == TON_ALPHANUMERIC and len(address) > 11:
        return "an alphanumeric address has at most 11 characters"
    return None


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, f"0x{status:08X}")


# -- framing ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BadLength:
    """An impossible command_length: the rest of the stream is unusable."""
    length: int
    sequence: int      # from the header if 16 bytes were there, else 0
    data: bytes        # the unusable bytes, for the trace


class Framer:
    """Feed bytes, get whole PDUs. After a BadLength (`error`) it yields nothing more."""

    def __init__(self, max_length: int = MAX_LENGTH) -> None:
        self._buf = bytearray()
        self.max_length = max_length
        self.error: BadLength | None = None

    def feed(self, data: bytes) -> list[bytes]:
        if self.error:
            return []
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos, end = 0, len(buf)
        while end - pos >= 4:
            length = int.from_bytes(buf[pos:pos + 4], "big")
            if length < MIN_LENGTH or length > self.max_length:
                seq = int.from_bytes(buf[pos + 12:pos + 16], "big") if end - pos >= 16 else 0
                self.error = BadLength(length, seq, bytes(buf[pos:]))
                buf.clear()
                return frames
            if end - pos < length:
                break
            frames.append(bytes(buf[pos:pos + length]))
            pos += length
        if pos:
            del buf[:pos]
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buf)


# -- parse / build ---------------------------------------------------------------------

class ParseError(Exception):
    """A whole PDU smpplib cannot turn into an object; answer with generic_nack(status)."""

    def __init__(self, status: int, command_id: int, sequence: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.command_id, self.sequence, self.reason = status, command_id, sequence, reason


class _NoSequence:
    """smpplib PDUs draw a sequence number from a client object when built or
    parsed; we set every sequence ourselves, so hand them this instead."""
    sequence = 0

    @staticmethod
    def next_sequence() -> int:
        return 0


_NOSEQ = _NoSequence()
_TEMPLATES: dict[str, tuple[type, dict[str, Any]]] = {}


def _blank(name: str) -> sm_command.Command:
    """A fresh PDU object of smpplib's class for `name`.

    smpplib's constructors walk every parameter with hasattr/getattr (~20 us
    for a submit_sm); we build one instance per command the official way and
    copy its attribute dict (all immutable values) for the next ones.
    """
    entry = _TEMPLATES.get(name)
    if entry is None:
        first = smpp.make_pdu(name, client=_NOSEQ, allow_unknown_opt_params=True)
        entry = _TEMPLATES[name] = (type(first), dict(vars(first)))
    cls, template = entry
    pdu: Any = object.__new__(cls)
    pdu.__dict__.update(template)
    return pdu


def parse(raw: bytes) -> sm_command.Command:
    """One whole PDU (from Framer) -> smpplib PDU object. Raises ParseError."""
    if len(raw) < MIN_LENGTH:
        raise ParseError(consts.SMPP_ESME_RINVCMDLEN, 0, 0, f"{len(raw)} octets are no PDU header")
    length, command_id, _status, sequence = HEADER.unpack_from(raw)
    if length != len(raw):   # smpplib ignores command_length: it would read a neighbour's octets as TLVs
        raise ParseError(consts.SMPP_ESME_RINVCMDLEN, command_id, sequence,
                         f"command_length {length} but {len(raw)} octets")
    name = COMMAND_NAMES.get(command_id)
    if name is None:
        raise ParseError(consts.SMPP_ESME_RINVCMDID, command_id, sequence,
                         f"unknown command_id 0x{command_id:08X}")
    try:
        pdu = _blank(name)
    except UnknownCommandError:   # replace_sm, cancel_sm, submit_multi, outbind: no smpplib class
        raise ParseError(consts.SMPP_ESME_RINVCMDID, command_id, sequence,
                         f"{name} is not supported") from None
    if length == MIN_LENGTH and pdu.params_order and not command_id & RESPONSE_BIT:
        raise ParseError(consts.SMPP_ESME_RINVCMDLEN, command_id, sequence, f"{name} without a body")
    problem = body_problem(pdu, raw[MIN_LENGTH:], is_response=bool(command_id & RESPONSE_BIT))
    if problem is not None:
        raise ParseError(problem[0], command_id, sequence, f"{name}: {problem[1]}")
    try:
        pdu.parse(raw)
    except Exception as exc:   # smpplib raises struct.error, KeyError, IndexError ... on bad bodies
        raise ParseError(consts.SMPP_ESME_RINVCMDLEN, command_id, sequence,
                         f"{name} body unreadable ({type(exc).__name__}: {exc})") from None
    return pdu


# A C-octet string that is too long says which field is wrong with its own status (SMPP v3.4 5.1.3).
_FIELD_STATUS = {
    "source_addr": consts.SMPP_ESME_RINVSRCADR, "destination_addr": consts.SMPP_ESME_RINVDSTADR,
    "system_id": consts.SMPP_ESME_RINVSYSID, "password": consts.SMPP_ESME_RINVPASWD,
    "service_type": consts.SMPP_ESME_RINVSERTYP, "schedule_delivery_time": consts.SMPP_ESME_RINVSCHED,
    "validity_period": consts.SMPP_ESME_RINVEXPIRY, "message_id": consts.SMPP_ESME_RINVMSGID,
}
TLV_BY_TAG = {tag: name for name, tag in consts.OPTIONAL_PARAMS.items()}


_TLV: dict[tuple[type, str], bool] = {}   # (command class, field) -> an optional parameter (TLV)?


def _is_tlv(pdu: Any, field: str) -> bool:
    """smpplib's field_is_optional, asked once per command class and field: the checks below ask it
    of every field of every PDU (a class's parameters never change)."""
    key = (type(pdu), field)
    known = _TLV.get(key)
    if known is None:
        known = _TLV[key] = pdu.field_is_optional(field)
    return known


def body_problem(pdu: Any, body: bytes, *, is_response: bool = False) -> tuple[int, str] | None:
    """(status, reason) if a PDU body does not follow its command's layout, else None.

    smpplib's parser is lenient (FIELD-NOTES): a missing field becomes None, a TLV that runs
    past the PDU is skipped, sm_length is not checked against what follows. A server must
    refuse such PDUs rather than act on half of them, so the layout is walked here first:
    every mandatory field present and within its size, short_message exactly sm_length
    octets, then a well-formed TLV stream to the last byte.
    """
    if is_response and not body:
        return None   # many ESMEs answer deliver_sm with a header-only deliver_sm_resp
    pos, previous = 0, "the header"
    lengths: dict[str, int] = {}
    for field in pdu.params_order:
        if _is_tlv(pdu, field):
            break
        param = pdu.params[field]
        empty = param.type is _OSTR and not lengths.get(getattr(param, "len_field", ""), 0)
        if pos >= len(body) and not empty:   # an sm_length of 0 may end the PDU: no short_message octets
            return consts.SMPP_ESME_RINVCMDLEN, f"the body stops after {previous}: {field} is missing"
        if param.type is int:
            size = getattr(param, "size", 1)
            if pos + size > len(body):
                return consts.SMPP_ESME_RINVCMDLEN, f"{field} is cut short"
            lengths[field] = int.from_bytes(body[pos:pos + size], "big")
            pos += size
        elif param.type is str:
            end = body.find(b"\0", pos)
            limit = getattr(param, "max", None)
            if end < 0:
                return consts.SMPP_ESME_RINVCMDLEN, f"{field} has no terminating NUL before the end of the PDU"
            if limit is not None and end - pos + 1 > limit:
                return (_FIELD_STATUS.get(field, consts.SMPP_ESME_RINVCMDLEN),
                        f"{field} is {end - pos + 1} octets with its NUL, at most {limit}")
            pos = end + 1
        else:   # an octet string whose length is in an earlier field (short_message <- sm_length)
            size = lengths.get(getattr(param, "len_field", ""), 0)
            if pos + size > len(body):
                return (consts.SMPP_ESME_RINVMSGLEN,
                        f"sm_length {size} but only {len(body) - pos} octets follow")
            pos += size
        previous = field
    while pos < len(body):
        if pos + 4 > len(body):
            return consts.SMPP_ESME_RINVOPTPARSTREAM, f"{len(body) - pos} stray octets after the last TLV"
        tag, size = int.from_bytes(body[pos:pos + 2], "big"), int.from_bytes(body[pos + 2:pos + 4], "big")
        if pos + 4 + size > len(body):
            name = TLV_BY_TAG.get(tag, f"0x{tag:04X}")
            return (consts.SMPP_ESME_RINVOPTPARSTREAM,
                    f"TLV {name} says {size} octets, only {len(body) - pos - 4} are left"
                    + ("; or sm_length does not match short_message" if "sm_length" in lengths else ""))
        name = TLV_BY_TAG.get(tag)
        param = pdu.params.get(name) if name else None
        if name and param is None:
            return consts.SMPP_ESME_ROPTPARNOTALLWD, f"TLV {name} is not allowed in {pdu.command}"
        if param is not None and param.type is int and size != getattr(param, "size", size):
            return consts.SMPP_ESME_RINVPARLEN, f"TLV {name} is {size} octets, must be {param.size}"
        pos += 4 + size
    return None


def make(name: str, sequence: int, status: int = 0, **fields: Any) -> sm_command.Command:
    """A PDU object to send. String fields must be str (latin-1 round-trips bytes).

    Raises ValueError for a value smpplib would not send as given: it cuts an over-long
    C-octet string short, a NUL inside one ends it early (the rest is read as the next
    fields), a string TLV goes out as UTF-8 with its length counted in characters, and an
    integer too large for its octets fails deep inside generate()."""
    pdu = _blank(name)
    for key, value in fields.items():
        problem = _field_problem(pdu, key, value)
        if problem:
            raise ValueError(f"{name}: {problem}")
    pdu.__dict__.update(fields)   # what make_pdu(**fields) does to a fresh PDU, minus its cost
    pdu.status = status
    pdu.sequence = sequence       # (make_pdu would ignore a sequence argument)
    mandatory, optional = _plan(type(pdu))
    if optional:
        # generate() visits every TLV the class knows (~1 us each); list only those set.
        pdu.params_order = tuple(k for k, _ in mandatory) + tuple(
            k for k, _ in optional if fields.get(k) is not None)
    return pdu


def _field_problem(pdu: Any, key: str, value: Any) -> str | None:
    param = pdu.params.get(key)
    if param is None or value is None:
        return None
    tlv = _is_tlv(pdu, key)
    if param.type is int and isinstance(value, int):
        size = getattr(param, "size", 1)
        if not 0 <= value < 1 << 8 * size:
            return f"{key} {value} does not fit in {size} octet(s)"
    elif param.type is str and isinstance(value, str):
        limit = getattr(param, "max", None)
        if "\0" in value:
            return f"NUL inside {key}"
        if limit is not None and len(value) + 1 > limit:
            return f"{key} is {len(value) + 1} octets with its NUL, at most {limit}"
        if not (value.isascii() if tlv else all(ord(ch) < 256 for ch in value)):
            return f"{key} has characters that are not {'ASCII' if tlv else 'Latin-1'}"
    elif param.type is _OSTR and isinstance(value, (bytes, bytearray)):
        limit = 0xFFFF if tlv else getattr(param, "max", 0xFF)
        if len(value) > limit:
            return f"{key} is {len(value)} octets, at most {limit}"
    return None


def error_response(command_id: int, sequence: int, status: int) -> sm_command.Command | None:
    """The request's own response carrying an error status (SMPP v3.4 5.1.3: a known request
    whose body is wrong gets e.g. submit_sm_resp ESME_RINVMSGLEN), or None where only a
    generic_nack fits: an unknown command_id, a response, or a command smpplib has no class for."""
    name = COMMAND_NAMES.get(command_id)
    if name is None or command_id & RESPONSE_BIT or status == consts.SMPP_ESME_RINVCMDID:
        return None
    try:
        return make(name + "_resp", sequence, status)
    except UnknownCommandError:   # outbind, alert_notification (no response), replace_sm ... (no class)
        return None


def encode(pdu: sm_command.Command) -> bytes:
    """Wire bytes. An error response is header-only, as SMPP v3.4 says."""
    if pdu.status and pdu.command != "generic_nack" and pdu.is_response():
        return HEADER.pack(MIN_LENGTH, command_codes.commands[pdu.command], pdu.status, pdu.sequence)
    return pdu.generate()


def text(value: bytes | str | None) -> str:
    """A C-octet string field as str, whether parsed (bytes) or built (str)."""
    if value is None:
        return ""
    return value.decode("latin-1") if isinstance(value, bytes) else value


# -- message content -------------------------------------------------------------------

DATA_CODINGS = {
    0x00: "SMSC default alphabet (GSM 03.38)",
    0x01: "IA5 / ASCII",
    0x02: "8-bit binary",
    0x03: "Latin-1 (ISO-8859-1)",
    0x04: "8-bit binary",
    0x05: "JIS (X 0208-1990)",
    0x06: "Cyrillic (ISO-8859-5)",
    0x07: "Latin/Hebrew (ISO-8859-8)",
    0x08: "UCS-2 (ISO/IEC-10646)",
    0x09: "Pictogram",
    0x0A: "ISO-2022-JP (music codes)",
    0x0D: "Extended Kanji JIS (X 0212-1990)",
    0x0E: "KS C 5601",
}
ESM_MODES = ("default (store and forward)", "datagram", "forward (transaction)", "store and forward")
ESM_TYPES = {
    0x00: "normal message",
    0x04: "SMSC delivery receipt",
    0x08: "SME delivery acknowledgement",
    0x10: "SME manual/user acknowledgement",
    0x18: "conversation abort",
    0x20: "intermediate delivery notification",
}
RECEIPT_REQUESTS = ("none", "on success and failure", "on failure only", "reserved")

BINARY_CODINGS = {0x02, 0x04}


def decode_text(data: bytes, data_coding: int) -> str | None:
    """User data as text, or None for binary codings. One decoder for the whole lab
    (smstext), so the inspector shows what the handsets and the IWF read."""
    dc = data_coding or 0
    if dc in BINARY_CODINGS or (dc & 0xF0 == 0xF0 and dc & 0x04):   # 8-bit data
        return None
    return smstext.decode_payload(dc, data)


def parse_udh(data: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """(information elements, the rest) of a short_message that starts with a UDH."""
    if not data:
        return [], data
    udhl = data[0]
    udh, rest = data[1:1 + udhl], data[1 + udhl:]
    ies: list[dict[str, Any]] = []
    pos = 0
    while pos + 2 <= len(udh):
        iei, iel = udh[pos], udh[pos + 1]
        value = udh[pos + 2:pos + 2 + iel]
        pos += 2 + iel
        if len(value) < iel:   # cut short by the UDH length or the message: shown as it is, not decoded
            ies.append({"iei": iei, "name": f"IE 0x{iei:02X} (cut short: {len(value)} of {iel} octets)",
                        "data": value.hex()})
        elif iei == 0x00 and iel == 3:
            ies.append({"iei": iei, "name": "concatenation, 8-bit ref",
                        "ref": value[0], "total": value[1], "seq": value[2]})
        elif iei == 0x08 and iel == 4:
            ies.append({"iei": iei, "name": "concatenation, 16-bit ref",
                        "ref": int.from_bytes(value[:2], "big"), "total": value[2], "seq": value[3]})
        elif iei == 0x05 and iel == 4:
            ies.append({"iei": iei, "name": "application port, 16-bit",
                        "dest": int.from_bytes(value[:2], "big"), "src": int.from_bytes(value[2:], "big")})
        else:
            ies.append({"iei": iei, "name": f"IE 0x{iei:02X}", "data": value.hex()})
    return ies, rest


def content(pdu: Any) -> tuple[list[dict[str, Any]], str | None]:
    """(UDH elements, text) of a submit_sm / deliver_sm / data_sm."""
    data = getattr(pdu, "short_message", None) or getattr(pdu, "message_payload", None) or b""
    if isinstance(data, str):
        data = data.encode("latin-1")
    ies: list[dict[str, Any]] = []
    if (pdu.esm_class or 0) & 0x40:
        ies, data = parse_udh(data)
    return ies, decode_text(data, pdu.data_coding or 0)


_CONCAT_TLVS = ("sar_msg_ref_num", "sar_total_segments", "sar_segment_seqnum", "message_payload")


def message_fields(pdu: Any) -> dict[str, Any]:
    """What a deliver_sm carries of a message, JSON-friendly (octets as hex): enough to keep a
    part that waits for the others, and to feed it to a Reassembler again later."""
    tlvs = {name: getattr(pdu, name) for name in _CONCAT_TLVS if getattr(pdu, name, None) is not None}
    return {"source": text(pdu.source_addr), "dest": text(pdu.destination_addr),
            "data_coding": pdu.data_coding or 0, "esm_class": pdu.esm_class or 0,
            "short_message": bytes(pdu.short_message or b"").hex(),
            # What an SMSC with end-to-end receipts tells (nodes/smsc/message.py): the report owed.
            "smsc_id": text(getattr(pdu, "receipted_message_id", None)),
            "registered_delivery": (pdu.registered_delivery or 0) & 0x03,
            "validity_period": text(pdu.validity_period),
            "tlvs": {k: (bytes(v).hex() if isinstance(v, (bytes, bytearray)) else v) for k, v in tlvs.items()}}


def reassemble_fields(reassembler, fields: dict[str, Any]) -> list:
    """Feed message_fields() to an smstext.Reassembler."""
    tlvs = {k: (bytes.fromhex(v) if k == "message_payload" else v) for k, v in fields["tlvs"].items()}
    return reassembler.add(source=fields["source"], dest=fields["dest"], data_coding=fields["data_coding"],
                           esm_class=fields["esm_class"], short_message=bytes.fromhex(fields["short_message"]),
                           tlvs=tlvs)


def reassemble(reassembler, pdu: Any) -> list:
    """Feed a deliver_sm to an smstext.Reassembler: the one place that knows which
    PDU fields carry concatenation (UDH in short_message, SAR TLVs, message_payload)."""
    return reassemble_fields(reassembler, message_fields(pdu))


def delivered_text(raw: bytes) -> str | None:
    """The text of a deliver_sm carrying a message (not a receipt); else None."""
    try:
        pdu = parse(raw)
    except (ParseError, struct.error):
        return None
    if pdu.command != "deliver_sm" or (pdu.esm_class or 0) & 0x3C == RECEIPT_ESM_CLASS:
        return None
    return content(pdu)[1]


# -- receipts and validity ---------------------------------------------------------------

def receipt_text(message_id: str, stat: str, submitted: float, done: float, text_start: str,
                 *, err: int = 0, delivered: bool = True) -> str:
    """The de-facto receipt text (SMPP v3.4 Appendix B)."""
    fmt = "%y%m%d%H%M"
    return (f"id:{message_id} sub:001 dlvrd:{'001' if delivered else '000'} "
            f"submit date:{time.strftime(fmt, time.localtime(submitted))} "
            f"done date:{time.strftime(fmt, time.localtime(done))} "
            f"stat:{stat} err:{err:03d} text:{text_start[:20]}")


_RECEIPT_RE = re.compile(
    r"id:(?P<id>\S*)\s+sub:(?P<sub>\S*)\s+dlvrd:(?P<dlvrd>\S*)\s+submit date:(?P<submit_date>\d*)"
    r"\s+done date:(?P<done_date>\d*)\s+stat:(?P<stat>\w*)\s+err:(?P<err>\w*)(?:\s+text:(?P<text>.*))?",
    re.IGNORECASE | re.DOTALL)


def parse_receipt_text(value: str) -> dict[str, str] | None:
    match = _RECEIPT_RE.search(value)
    if not match:
        return None
    return {k: v for k, v in match.groupdict().items() if v is not None}


def absolute_time(moment: float) -> str:
    """An SMPP absolute time ("YYMMDDhhmmss000+", UTC) for a wall-clock moment."""
    return time.strftime("%y%m%d%H%M%S", time.gmtime(moment)) + f"{int(moment * 10) % 10}00+"


def validity_seconds(value: str, now: float | None = None) -> float | None:
    """Seconds until a validity_period ("YYMMDDhhmmsstnnp") ends; None if empty.

    'R' = relative, '+'/'-' = absolute with the UTC offset in quarter hours.
    Raises ValueError for a malformed value.
    """
    if not value:
        return None
    if len(value) != 16 or not value[:15].isdigit() or value[15] not in "R+-":
        raise ValueError(f"bad validity_period {value!r}")
    yy, mo, dd, hh, mi, ss = (int(value[i:i + 2]) for i in range(0, 12, 2))
    tenths, sign = int(value[12]), value[15]
    if sign == "R":   # months and years are approximate, as SMSCs treat them
        return (yy * 365 + mo * 30 + dd) * 86400 + hh * 3600 + mi * 60 + ss + tenths / 10
    offset = int(value[13:15]) * 900 * (1 if sign == "+" else -1)
    moment = datetime(2000 + yy, mo, dd, hh, mi, ss, tenths * 100_000, tzinfo=timezone.utc).timestamp() - offset
    return moment - (time.time() if now is None else now)


# -- describing for the trace -------------------------------------------------------------

_OSTR = sm_command.ostr
_PLANS: dict[type, tuple[tuple[tuple[str, Any], ...], tuple[tuple[str, Any], ...]]] = {}


def _plan(cls: Any) -> tuple[tuple[tuple[str, Any], ...], tuple[tuple[str, Any], ...]]:
    """(mandatory, optional) (name, type) pairs of a PDU class, worked out once."""
    plan = _PLANS.get(cls)
    if plan is None:
        mandatory = getattr(cls, "mandatory_fields", ())   # a str in QuerySMResp: "in" still works
        pairs = [(key, cls.params[key].type) for key in cls.params_order]
        plan = _PLANS[cls] = (tuple(p for p in pairs if p[0] not in TLV_NAMES or p[0] in mandatory),
                              tuple(p for p in pairs if p[0] in TLV_NAMES and p[0] not in mandatory))
    return plan


def _value(value: Any, kind: type) -> Any:
    if kind is int:
        return int(value or 0)   # not an IntEnum (message_state): the trace marshals plain values
    if kind is _OSTR:
        return value.hex() if isinstance(value, bytes) else (value or "").encode("latin-1").hex()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return "" if value is None else value


def describe(pdu: Any) -> tuple[str, dict[str, Any]]:
    """(one-line summary, decoded fields) of a parsed or built PDU."""
    name, seq, status = pdu.command, pdu.sequence, pdu.status or 0
    fields: dict[str, Any] = {"command": name, "command_id": f"0x{command_codes.commands[name]:08X}",
                              "status": status_name(status), "sequence": seq}
    attrs = pdu.__dict__
    mandatory, optional = _plan(type(pdu))
    for key, kind in mandatory:
        fields[key] = _value(attrs.get(key), kind)
    for key, kind in optional:
        value = attrs.get(key)
        if value is not None:
            fields[key] = _value(value, kind)

    if name in ("submit_sm", "deliver_sm", "data_sm"):
        return _describe_message(pdu, fields), fields
    if name == "generic_nack":
        return f"generic_nack seq={seq} {status_name(status)}", fields
    summary = f"{name} seq={seq}"
    if name.startswith("bind_") and not name.endswith("_resp"):
        summary += f" system_id={fields['system_id']}"
    elif name == "query_sm":
        summary += f" id={fields['message_id']}"
    if pdu.is_response():
        if fields.get("message_id"):
            summary += f" id={fields['message_id']}"
        summary += " ok" if status == 0 else f" {status_name(status)}"
    return summary, fields


def _describe_message(pdu: Any, fields: dict[str, Any]) -> str:
    esm = pdu.esm_class or 0
    dc = pdu.data_coding or 0
    fields["esm_class"] = {"value": esm, "mode": ESM_MODES[esm & 0x03],
                           "type": ESM_TYPES.get(esm & 0x3C, f"reserved 0x{esm & 0x3C:02X}"),
                           "udhi": bool(esm & 0x40), "reply_path": bool(esm & 0x80)}
    fields["data_coding"] = {"value": dc, "meaning": DATA_CODINGS.get(dc, f"0x{dc:02X}")}
    rd = pdu.registered_delivery or 0
    fields["registered_delivery"] = {"value": rd, "smsc_receipt": RECEIPT_REQUESTS[rd & 0x03]}
    ies, body = content(pdu)
    if ies:
        fields["udh"] = ies
    if body is not None:
        fields["text"] = body
    summary = f"{pdu.command} seq={pdu.sequence} {fields['source_addr']}->{fields['destination_addr']}"
    if esm & 0x3C in (RECEIPT_ESM_CLASS, ACK_ESM_CLASS):
        receipt = parse_receipt_text(body or "")
        if receipt:
            fields["receipt"] = receipt
        rid = fields.get("receipted_message_id") or (receipt or {}).get("id", "?")
        what = "receipt" if esm & 0x3C == RECEIPT_ESM_CLASS else "report"
        return f"{summary} {what} id={rid} {(receipt or {}).get('stat', '')}".rstrip()
    concat = next((ie for ie in ies if ie["iei"] in (0x00, 0x08) and "seq" in ie), None)
    if concat:
        summary += f" part {concat['seq']}/{concat['total']} ref={concat['ref']}"
    elif getattr(pdu, "sar_total_segments", None):
        summary += f" part {pdu.sar_segment_seqnum}/{pdu.sar_total_segments} ref={pdu.sar_msg_ref_num} (SAR)"
    if body is None:
        return f"{summary} ({fields['data_coding']['meaning']})"
    shown = body if len(body) <= 40 else body[:39] + "…"
    return f'{summary} "{shown}"'.replace("\n", "\\n").replace("\r", "\\r")


def describe_raw(raw: bytes) -> tuple[str, dict[str, Any]]:
    """Summary and fields of bytes that are not a PDU smpplib can read."""
    if len(raw) < MIN_LENGTH:
        return f"unreadable bytes ({len(raw)})", {"raw_length": len(raw), "hex": raw[:64].hex()}
    length, command_id, status, seq = HEADER.unpack_from(raw)
    name = COMMAND_NAMES.get(command_id, f"0x{command_id:08X}")
    fields = {"command": name, "command_id": f"0x{command_id:08X}", "command_length": length,
              "status": status_name(status), "sequence": seq, "raw_length": len(raw)}
    return f"{name} seq={seq} (unreadable, {len(raw)} bytes)", fields
