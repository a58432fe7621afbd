"""Sans-I/O SMS text codec: GSM 03.38 / UCS-2, concatenation, reassembly.

No sockets, no Qt, no smpplib client: bytes in, bytes out.

Conventions (see DOMAIN-NOTES, "SMPP v3.4"):

* GSM 7-bit payloads are **unpacked septets, one per byte** (values 0x00-0x7F),
  the usual SMPP convention for ``data_coding`` 0x00; an escape-table
  character is the two bytes ``0x1B xx`` (e.g. ``€`` = ``1B 65``).  Packing
  to 7 bits is the SMSC's business on the air interface.
* UCS-2 payloads are UTF-16BE: a non-BMP character (emoji) is a surrogate pair
  and costs two units.
* Concatenation uses a UDH (``esm_class`` 0x40) with IEI 0x00 (8-bit ref) or
  0x08 (16-bit ref); parts are never cut inside an escape pair or a surrogate
  pair.  ``encode(..., sar=True)`` instead gives parts without UDH plus
  ``SmsPart.concat`` for the SAR TLVs, cut to the same budget (the SMSC adds
  the UDH on air).

smpplib's ``gsm.GSM_CHARACTER_TABLE`` is not reused: it has a backtick at 0x5F
where GSM has ``§`` (so ``§`` is rejected and ``\\``` is silently sent as
``§``) and lacks form feed (``1B 0A``); ``gsm.make_parts`` cuts escapes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

GSM7 = 0x00
IA5 = 0x01
LATIN1 = 0x03
UCS2 = 0x08
UDHI = 0x40          # esm_class bit: short_message starts with a UDH
ESC = 0x1B
MAX_PARTS = 255

# GSM 03.38 default alphabet, index = septet value (0x1B is the escape).
_BASIC = ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
          "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
assert len(_BASIC) == 128
_EXT = {0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\",
        0x3C: "[", 0x3D: "~", 0x3E: "]", 0x40: "|", 0x65: "€"}
_GSM_ENC: dict[str, bytes] = {c: bytes([i]) for i, c in enumerate(_BASIC) if i != ESC}
_GSM_ENC.update({c: bytes([ESC, i]) for i, c in _EXT.items()})

# (single-part limit, per-part with 8-bit-ref UDH, per-part with 16-bit-ref UDH)
_LIMITS = {GSM7: (160, 153, 152), UCS2: (70, 67, 66)}
MISSING = "[…missing part {seq}/{total}…]"


class SmsDecodeError(ValueError):
    """Malformed SMS bytes (e.g. a UDH longer than the short_message)."""


@dataclass(frozen=True)
class Concat:
    ref: int
    total: int
    seq: int
    ref16: bool


@dataclass(frozen=True)
class SmsPart:
    data_coding: int
    udh: bytes            # full UDH incl. its length byte; b"" if none
    payload: bytes        # unpacked GSM septets, or UTF-16BE
    esm_class_udhi: bool
    concat: Concat | None = None   # set on every part of a multipart message

    def short_message(self) -> bytes:
        return self.udh + self.payload

    def sar_tlvs(self) -> dict[str, int]:
        """SAR TLVs for this part (empty for a single part)."""
        if self.concat is None:
            return {}
        return {"sar_msg_ref_num": self.concat.ref,
                "sar_total_segments": self.concat.total,
                "sar_segment_seqnum": self.concat.seq}


@dataclass(frozen=True)
class IncomingSms:
    source: str
    dest: str
    text: str
    parts: int            # parts received
    total: int            # parts announced
    complete: bool
    data_coding: int
    ref: int | None
    error: str | None = None   # why the bytes were not understood, if so


# --------------------------------------------------------------- encoding

def choose_coding(text: str) -> int:
    return GSM7 if all(c in _GSM_ENC for c in text) else UCS2


def _units(text: str, coding: int) -> list[bytes]:
    """Encoded bytes per character: the atoms parts are cut between."""
    if coding == GSM7:
        return [_GSM_ENC[c] for c in text]
    return [c.encode("utf-16-be") for c in text]


def _chunks(text: str, coding: int, ref16: bool) -> list[bytes]:
    atoms = _units(text, coding)
    width = 1 if coding == GSM7 else 2   # bytes per septet / code unit
    single, per8, per16 = _LIMITS[coding]
    whole = b"".join(atoms)
    if len(whole) <= single * width:
        return [whole]
    budget = (per16 if ref16 else per8) * width
    chunks: list[bytes] = []
    cur = bytearray()
    for a in atoms:
        if len(cur) + len(a) > budget:
            chunks.append(bytes(cur))
            cur.clear()
        cur += a
    chunks.append(bytes(cur))
    return chunks


def sms_count(text: str) -> tuple[int, int]:
    """(number of SMS, data_coding) for display; may exceed 255."""
    coding = choose_coding(text)
    return len(_chunks(text, coding, False)), coding


def encode(text: str, *, ref: int, ref16: bool = False,
           sar: bool = False) -> list[SmsPart]:
    """Encode text as one SMS or a concatenated series.

    ``ref`` is 0-255 (0-65535 with ``ref16`` or ``sar``); ignored for a single
    part.  ``sar=True``: no UDH, the parts carry ``concat`` for SAR TLVs
    (16-bit ref, same per-part budget as an 8-bit-ref UDH).
    """
    coding = choose_coding(text)
    chunks = _chunks(text, coding, ref16 and not sar)
    if len(chunks) == 1:
        return [SmsPart(coding, b"", chunks[0], False)]
    total = len(chunks)
    if total > MAX_PARTS:
        raise ValueError(f"text needs {total} SMS parts; at most {MAX_PARTS} "
                         f"can be concatenated")
    wide = ref16 or sar
    if not 0 <= ref <= (0xFFFF if wide else 0xFF):
        raise ValueError(f"ref {ref} out of range for a "
                         f"{'16' if wide else '8'}-bit reference")
    parts = []
    for seq, chunk in enumerate(chunks, 1):
        c = Concat(ref, total, seq, wide)
        if sar:
            udh = b""
        elif ref16:
            udh = bytes([6, 0x08, 4, ref >> 8, ref & 0xFF, total, seq])
        else:
            udh = bytes([5, 0x00, 3, ref, total, seq])
        parts.append(SmsPart(coding, udh, chunk, not sar, c))
    return parts


# --------------------------------------------------------------- decoding

def _decode_gsm(payload: bytes) -> str:
    out = []
    i, n = 0, len(payload)
    while i < n:
        b = payload[i]
        if b == ESC:
            if i + 1 >= n:
                out.append("\ufffd")   # lone escape at the end
                break
            nxt = payload[i + 1]
            if nxt in _EXT:
                out.append(_EXT[nxt])
            elif nxt < 0x80 and nxt != ESC:
                out.append(_BASIC[nxt])   # 03.38: unknown escape -> basic char
            else:
                out.append("\ufffd")
            i += 2
            continue
        out.append(_BASIC[b] if b < 0x80 else "\ufffd")
        i += 1
    return "".join(out)


def _alphabet(dc: int) -> str:
    """'gsm', 'ascii', 'latin-1', 'ucs2' or other codec names for data_coding."""
    fixed = {0x00: "gsm", 0x01: "ascii", 0x03: "latin-1", 0x06: "iso8859-5",
             0x07: "iso8859-8", 0x08: "ucs2"}
    if dc in fixed:
        return fixed[dc]
    if 0x10 <= dc <= 0x1F:                 # GSM DCS general group, with class
        return ("gsm", "binary", "ucs2", "gsm")[(dc >> 2) & 3]
    if 0xC0 <= dc <= 0xDF or 0xF0 <= dc <= 0xF3:
        return "gsm"
    if 0xE0 <= dc <= 0xEF:
        return "ucs2"
    return "binary"


def decode_payload(data_coding: int, payload: bytes) -> str:
    """Decode a payload (no UDH).  Never raises: bad bytes become U+FFFD.

    0x00 GSM 03.38 unpacked septets; 0x01 ASCII; 0x03 Latin-1; 0x08 UTF-16BE
    (UCS-2 plus surrogate pairs); binary/unknown codings show printable ASCII
    and U+FFFD for the rest.
    """
    payload = bytes(payload)
    alpha = _alphabet(data_coding)
    if alpha == "gsm":
        return _decode_gsm(payload)
    if alpha == "ucs2":
        return payload.decode("utf-16-be", "replace")
    if alpha == "binary":
        return payload.decode("ascii", "replace")
    return payload.decode(alpha, "replace")


def _ies(udh: bytes) -> list[tuple[int, bytes]]:
    """Information elements of a full UDH (with its length byte)."""
    if not udh:
        raise SmsDecodeError("empty UDH")
    if udh[0] != len(udh) - 1:
        raise SmsDecodeError(f"UDH length byte {udh[0]} but {len(udh) - 1} "
                             f"bytes follow")
    ies, i = [], 1
    while i < len(udh):
        if i + 2 > len(udh):
            raise SmsDecodeError(f"truncated IE header at UDH offset {i}")
        iei, iel = udh[i], udh[i + 1]
        if i + 2 + iel > len(udh):
            raise SmsDecodeError(f"IE 0x{iei:02X} length {iel} overruns the UDH")
        ies.append((iei, udh[i + 2:i + 2 + iel]))
        i += 2 + iel
    return ies


def split_udh(short_message: bytes, esm_class: int) -> tuple[bytes, bytes]:
    """(udh, payload); udh is b"" unless esm_class has UDHI (0x40).

    Raises SmsDecodeError when the UDH length byte exceeds the message or the
    IEs do not tile the UDH exactly.
    """
    sm = bytes(short_message)
    if not esm_class & UDHI:
        return b"", sm
    if not sm:
        raise SmsDecodeError("UDHI set but short_message is empty")
    end = 1 + sm[0]
    if end > len(sm):
        raise SmsDecodeError(f"UDH length {sm[0]} exceeds short_message "
                             f"({len(sm) - 1} bytes after the length byte)")
    _ies(sm[:end])
    return sm[:end], sm[end:]


def concat_info(udh: bytes) -> Concat | None:
    """The concatenation IE (0x00 or 0x08) among any others; None if absent
    or invalid (bad lengths, total 0, seq 0 or seq > total)."""
    try:
        ies = _ies(bytes(udh))
    except SmsDecodeError:
        return None
    for iei, data in ies:
        if iei == 0x00 and len(data) == 3:
            ref, total, seq, wide = data[0], data[1], data[2], False
        elif iei == 0x08 and len(data) == 4:
            ref, total, seq, wide = (data[0] << 8) | data[1], data[2], data[3], True
        else:
            continue
        if total == 0 or not 1 <= seq <= total:
            return None
        return Concat(ref, total, seq, wide)
    return None


# ------------------------------------------------------------- reassembly

def _tlv_int(v: object) -> int | None:
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray)):
        return int.from_bytes(v, "big") if v else None
    try:
        return int(v)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _sar(tlvs: dict[str, object]) -> Concat | None:
    ref = _tlv_int(tlvs.get("sar_msg_ref_num"))
    total = _tlv_int(tlvs.get("sar_total_segments"))
    seq = _tlv_int(tlvs.get("sar_segment_seqnum"))
    if ref is None or total is None or seq is None:
        return None
    # SMPP's SAR TLVs are one octet (total, seq) and two (ref): a larger value is no SAR at all
    # (and a huge total would have _flush mark millions of missing parts).
    if not (0 <= ref <= 0xFFFF and 1 <= total <= MAX_PARTS and 1 <= seq <= total):
        return None
    return Concat(ref, total, seq, True)


def concatenation(*, esm_class: int, short_message: bytes, tlvs: dict[str, object]) -> Concat | None:
    """How a PDU says it is one part of several (UDH first, then SAR TLVs); None for a whole SMS
    (or one whose UDH cannot be read: it is shown as it is)."""
    payload_tlv = tlvs.get("message_payload")
    body = bytes(payload_tlv) if isinstance(payload_tlv, (bytes, bytearray)) and payload_tlv else \
        bytes(short_message or b"")
    try:
        udh, _ = split_udh(body, esm_class)
    except SmsDecodeError:
        return None
    concat = (concat_info(udh) if udh else None) or _sar(tlvs)
    return concat if concat is not None and concat.total > 1 else None


def _join(parts: list[tuple[int, bytes]]) -> str:
    """Decode consecutive parts together when they share a coding, so an
    escape or surrogate pair cut by a careless sender still decodes (an odd
    UCS-2 part would shift the rest, so then each part is decoded alone)."""
    dc0 = parts[0][0] if parts else 0
    if (all(dc == dc0 for dc, _ in parts) and not
            (_alphabet(dc0) == "ucs2" and any(len(p) % 2 for _, p in parts))):
        return decode_payload(parts[0][0], b"".join(p for _, p in parts))
    return "".join(decode_payload(dc, p) for dc, p in parts)


@dataclass
class _Group:
    created: float
    total: int
    ref: int
    parts: dict[int, tuple[int, bytes]] = field(default_factory=dict)


class Reassembler:
    """Turns incoming SMS parts into whole messages, in any arrival order.

    Parts are keyed by (source, dest, kind, ref, total) where kind is
    "udh8", "udh16" or "sar".  A repeat of a part with the same bytes is a
    duplicate (ignored, counted in ``duplicates``).  A repeat with other bytes
    means the reference was reused: the old group is returned incomplete and
    a new one started (``conflicts``).  A UDH that cannot be parsed does not
    raise: the whole short_message is returned as a single message with
    ``error`` set (``malformed``).  The timeout runs from a group's first part.
    A resend of a part of a message completed less than ``timeout`` ago is a
    duplicate too (resends after a lost submit_sm_resp are common).
    """

    def __init__(self, timeout: float = 60.0, clock=time.monotonic):
        self.timeout = timeout
        self.clock = clock
        self._groups: dict[tuple, _Group] = {}
        self._done: dict[tuple, _Group] = {}   # completed, kept for dedup
        self.duplicates = 0
        self.conflicts = 0
        self.malformed = 0

    def add(self, *, source: str, dest: str, data_coding: int, esm_class: int,
            short_message: bytes, tlvs: dict[str, object]) -> list[IncomingSms]:
        payload_tlv = tlvs.get("message_payload")
        body = bytes(payload_tlv) if isinstance(payload_tlv, (bytes, bytearray)) and payload_tlv else \
            bytes(short_message or b"")
        try:
            udh, payload = split_udh(body, esm_class)
        except SmsDecodeError as e:
            self.malformed += 1
            return [IncomingSms(source, dest, decode_payload(data_coding, body),
                                1, 1, True, data_coding, None, error=str(e))]
        c = concat_info(udh) if udh else None
        kind = ("udh16" if c.ref16 else "udh8") if c else "sar"
        if c is None:
            c = _sar(tlvs)
        if c is None or c.total == 1:
            return [IncomingSms(source, dest, decode_payload(data_coding, payload),
                                1, 1, True, data_coding,
                                c.ref if c else None)]
        key = (source, dest, kind, c.ref, c.total)
        out: list[IncomingSms] = []
        g = self._groups.get(key)
        done = self._done.get(key)
        if (g is None and done is not None
                and self.clock() - done.created < self.timeout
                and done.parts.get(c.seq) == (data_coding, payload)):
            self.duplicates += 1
            return []
        if g is not None and c.seq in g.parts:
            if g.parts[c.seq] == (data_coding, payload):
                self.duplicates += 1
                return []
            self.conflicts += 1
            out.append(self._flush(key, g))
            g = None
        if g is None:
            g = self._groups[key] = _Group(self.clock(), c.total, c.ref)
        g.parts[c.seq] = (data_coding, payload)
        if len(g.parts) == g.total:
            out.append(self._flush(key, g))
        return out

    def _flush(self, key: tuple, g: _Group) -> IncomingSms:
        del self._groups[key]
        pieces: list[str] = []
        run: list[tuple[int, bytes]] = []
        for seq in range(1, g.total + 1):
            if seq in g.parts:
                run.append(g.parts[seq])
                continue
            if run:
                pieces.append(_join(run))
                run = []
            pieces.append(MISSING.format(seq=seq, total=g.total))
        if run:
            pieces.append(_join(run))
        complete = len(g.parts) == g.total
        if complete:
            self._done[key] = _Group(self.clock(), g.total, g.ref, g.parts)
        return IncomingSms(key[0], key[1], "".join(pieces), len(g.parts),
                           g.total, complete, g.parts[min(g.parts)][0], g.ref)

    def expire(self) -> list[IncomingSms]:
        """Groups whose first part is at least ``timeout`` old, as incomplete
        messages with each gap marked (never dropped silently)."""
        now = self.clock()
        self._done = {k: d for k, d in self._done.items()
                      if now - d.created < self.timeout}
        old = [k for k, g in self._groups.items() if now - g.created >= self.timeout]
        return [self._flush(k, self._groups[k]) for k in old]

    def pending(self) -> int:
        """Number of messages waiting for parts."""
        return len(self._groups)
