"""Byte-level tests for backends.smstext (GSM 03.38 / UCS-2 / UDH / reassembly)."""
import pytest

from iwlab.backends.protocols.smstext import (
    GSM7,
    UCS2,
    Concat,
    IncomingSms,
    Reassembler,
    SmsDecodeError,
    SmsPart,
    choose_coding,
    concat_info,
    decode_payload,
    encode,
    sms_count,
    split_udh,
)

# GSM 03.38 default alphabet written out independently of the module, by row.
BASIC = {
    0x00: "@£$¥èéùìòÇ\nØø\rÅå",
    0x10: "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ",
    0x20: " !\"#¤%&'()*+,-./",
    0x30: "0123456789:;<=>?",
    0x40: "¡ABCDEFGHIJKLMNO",
    0x50: "PQRSTUVWXYZÄÖÑÜ§",
    0x60: "¿abcdefghijklmno",
    0x70: "pqrstuvwxyzäöñüà",
}
BASIC_MAP = {c: row + i for row, s in BASIC.items() for i, c in enumerate(s)
             if row + i != 0x1B}
ESCAPES = {"€": 0x65, "[": 0x3C, "]": 0x3E, "{": 0x28, "}": 0x29, "\\": 0x2F,
           "^": 0x14, "~": 0x3D, "|": 0x40, "\f": 0x0A}


def one(text, **kw):
    parts = encode(text, ref=kw.pop("ref", 7), **kw)
    assert len(parts) == 1
    return parts[0]


# ------------------------------------------------------------ GSM alphabet

def test_basic_alphabet_every_septet():
    assert len(BASIC_MAP) == 127
    for ch, septet in BASIC_MAP.items():
        p = one(ch)
        assert p.data_coding == GSM7 and p.payload == bytes([septet]), ch
        assert decode_payload(GSM7, bytes([septet])) == ch


def test_basic_alphabet_round_trip_whole_string():
    text = "".join(BASIC_MAP)            # 127 chars, one septet each
    p = one(text)
    assert p.payload == bytes(BASIC_MAP.values())
    assert p.udh == b"" and p.esm_class_udhi is False
    assert p.short_message() == p.payload
    assert decode_payload(GSM7, p.payload) == text
    assert max(p.payload) < 0x80


def test_escape_table_exact_septets():
    for ch, code in ESCAPES.items():
        p = one(ch)
        assert p.payload == bytes([0x1B, code]), repr(ch)
        assert decode_payload(GSM7, p.payload) == ch
    assert one("€").payload == b"\x1b\x65"
    text = "€[]{}\\^~|\f"
    assert decode_payload(GSM7, one(text).payload) == text
    assert len(one(text).payload) == 20


def test_choose_coding():
    assert choose_coding("") == GSM7
    assert choose_coding("".join(BASIC_MAP) + "".join(ESCAPES)) == GSM7
    # not in GSM 03.38: lower-case c-cedilla, backtick (smpplib maps it to §),
    # a bare ESC control, Cyrillic, emoji
    for ch in ["ç", "`", "\x1b", "ж", "👋", "á", "\t"]:
        assert choose_coding(ch) == UCS2, repr(ch)
    assert choose_coding("§") == GSM7


def test_empty_text_is_one_empty_part():
    assert encode("", ref=1) == [SmsPart(GSM7, b"", b"", False)]


# --------------------------------------------------------- GSM boundaries

def test_160_septets_single_161_two_parts():
    p = one("a" * 160)
    assert len(p.payload) == 160 and p.udh == b""
    parts = encode("a" * 161, ref=0x42)
    assert [len(x.payload) for x in parts] == [153, 8]
    assert [x.udh for x in parts] == [bytes([5, 0, 3, 0x42, 2, 1]),
                                      bytes([5, 0, 3, 0x42, 2, 2])]
    assert all(x.esm_class_udhi for x in parts)
    assert parts[0].short_message() == b"\x05\x00\x03\x42\x02\x01" + b"a" * 153
    assert parts[1].concat == Concat(0x42, 2, 2, False)
    assert sms_count("a" * 160) == (1, GSM7)
    assert sms_count("a" * 161) == (2, GSM7)


def test_escapes_count_two_septets_at_single_limit():
    assert len(one("€" * 80).payload) == 160
    assert len(encode("€" * 81, ref=1)) == 2
    assert len(one("a" * 159 + "b").payload) == 160
    assert len(encode("a" * 159 + "€", ref=1)) == 2    # 161 septets


def test_escape_at_position_153_moves_whole():
    text = "a" * 152 + "€" + "b" * 10
    p1, p2 = encode(text, ref=9)
    assert p1.payload == b"a" * 152                   # 152 septets, not 153
    assert p2.payload == b"\x1b\x65" + b"b" * 10
    assert p1.udh[-2:] == b"\x02\x01" and p2.udh[-2:] == b"\x02\x02"
    assert decode_payload(GSM7, p1.payload + p2.payload) == text


def test_escape_ending_exactly_at_153_stays():
    text = "a" * 151 + "€" + "b" * 10
    p1, p2 = encode(text, ref=9)
    assert p1.payload == b"a" * 151 + b"\x1b\x65"
    assert p2.payload == b"b" * 10


def test_no_part_ever_ends_in_a_lone_escape():
    for n in range(140, 170):
        text = "x" * n + "{" * 200
        for p in encode(text, ref=1):
            assert p.payload[-1:] != b"\x1b"
            assert len(p.payload) <= 153
            assert decode_payload(GSM7, p.payload).count("\ufffd") == 0


def test_gsm_16bit_ref_152_per_part():
    parts = encode("a" * 161, ref=0x1234, ref16=True)
    assert [len(x.payload) for x in parts] == [152, 9]
    assert parts[0].udh == bytes([6, 8, 4, 0x12, 0x34, 2, 1])
    assert parts[1].udh == bytes([6, 8, 4, 0x12, 0x34, 2, 2])
    assert parts[0].concat == Concat(0x1234, 2, 1, True)
    # a single part never carries a UDH, whatever ref16 says
    assert one("a" * 160, ref16=True).udh == b""


# ------------------------------------------------------------------ UCS-2

def test_ucs2_70_single_71_two():
    p = one("ж" * 70)
    assert p.data_coding == UCS2 and p.payload == b"\x04\x36" * 70
    parts = encode("ж" * 71, ref=3)
    assert [len(x.payload) for x in parts] == [134, 8]   # 67 + 4 units
    assert parts[0].udh == bytes([5, 0, 3, 3, 2, 1])
    assert sms_count("ж" * 71) == (2, UCS2)


def test_ucs2_16bit_ref_66_per_part():
    parts = encode("ж" * 71, ref=0xBEEF, ref16=True)
    assert [len(x.payload) // 2 for x in parts] == [66, 5]
    assert parts[1].udh == bytes([6, 8, 4, 0xBE, 0xEF, 2, 2])


def test_non_bmp_counts_two_units():
    assert len(one("👋" * 35).payload) == 140
    assert len(encode("👋" * 36, ref=1)) == 2


def test_emoji_straddling_67_moves_whole():
    text = "ж" * 66 + "👋" + "ж" * 5
    p1, p2 = encode(text, ref=1)
    assert len(p1.payload) == 132                      # 66 units, not 67
    assert p2.payload[:4] == b"\xd8\x3d\xdc\x4b"
    assert decode_payload(UCS2, p1.payload) == "ж" * 66
    assert decode_payload(UCS2, p2.payload) == "👋" + "ж" * 5
    # fits exactly at 67
    q1, q2 = encode("ж" * 65 + "👋" + "ж" * 5, ref=1)
    assert len(q1.payload) == 134 and q1.payload.endswith(b"\xd8\x3d\xdc\x4b")


def test_no_ucs2_part_ends_in_a_high_surrogate():
    for n in range(60, 75):
        for p in encode("ж" * n + "😀" * 100, ref=1):
            assert not 0xD800 <= int.from_bytes(p.payload[-2:], "big") <= 0xDBFF
            assert "\ufffd" not in decode_payload(UCS2, p.payload)


def test_ucs2_emoji_round_trip_bytes():
    text = "Hi 👋 Peter 🇫🇷"
    p = one(text)
    assert p.data_coding == UCS2
    assert p.payload == (b"\x00H\x00i\x00 \xd8\x3d\xdc\x4b\x00 \x00P\x00e\x00t"
                         b"\x00e\x00r\x00 \xd8\x3c\xdd\xeb\xd8\x3c\xdd\xf7")
    assert decode_payload(UCS2, p.payload) == text
    # a GSM-only char mixed in forces UCS-2 for the whole text
    assert one("€ 👋").payload == "€ 👋".encode("utf-16-be")


# ------------------------------------------------------------- limits

def test_255_parts_ok_256_raises():
    assert len(encode("a" * 153 * 255, ref=1)) == 255
    with pytest.raises(ValueError, match="256 SMS parts"):
        encode("a" * (153 * 255 + 1), ref=1)
    assert sms_count("a" * (153 * 255 + 1)) == (256, GSM7)


def test_ref_range_checked():
    with pytest.raises(ValueError, match="ref 256"):
        encode("a" * 200, ref=256)
    with pytest.raises(ValueError):
        encode("a" * 200, ref=-1)
    assert encode("a" * 200, ref=0xFFFF, ref16=True)[0].udh[3:5] == b"\xff\xff"
    assert len(encode("short", ref=99999)) == 1    # ignored for a single part


def test_sar_mode_parts():
    parts = encode("a" * 161, ref=0x1234, sar=True)
    assert [len(x.payload) for x in parts] == [153, 8]
    assert all(x.udh == b"" and not x.esm_class_udhi for x in parts)
    assert parts[1].sar_tlvs() == {"sar_msg_ref_num": 0x1234,
                                   "sar_total_segments": 2,
                                   "sar_segment_seqnum": 2}
    assert one("hi").sar_tlvs() == {}


# ------------------------------------------------------------- decoding

@pytest.mark.parametrize("dc,data,text", [
    (0x01, b"Hello {x}", "Hello {x}"),
    (0x01, b"caf\xe9", "caf\ufffd"),
    (0x03, b"caf\xe9 \xa7", "café §"),
    (0x00, b"\x80A", "\ufffdA"),                 # not a septet
    (0x00, b"A\x1b", "A\ufffd"),                 # lone trailing escape
    (0x00, b"\x1b\x41", "A"),                    # unknown escape -> basic char
    (0x00, b"\x1b\x1b", "\ufffd"),
    (0x00, b"\x1b\x0a\x0a", "\f\n"),
    (0xF0, b"\x00\x02", "@$"),                   # GSM DCS, 7-bit class 0
    (0x08, b"\x00A\x00", "A\ufffd"),             # odd length
    (0x08, b"\xd8\x3d\x00A", "\ufffdA"),         # lone high surrogate
    (0x08, b"\xdc\x4b", "\ufffd"),               # lone low surrogate
    (0x18, b"\x04\x36", "ж"),                    # GSM DCS UCS2 class 0
    (0x04, b"AB\xff", "AB\ufffd"),               # binary: printable ASCII only
    (0x77, b"ok", "ok"),
])
def test_decode_payload_never_raises(dc, data, text):
    assert decode_payload(dc, data) == text


def test_split_udh():
    sm = bytes([5, 0, 3, 1, 2, 1]) + b"abc"
    assert split_udh(sm, 0x00) == (b"", sm)
    assert split_udh(sm, 0x40) == (sm[:6], b"abc")
    assert split_udh(sm, 0x43) == (sm[:6], b"abc")    # other esm bits ignored
    assert split_udh(b"\x00abc", 0x40) == (b"\x00", b"abc")


@pytest.mark.parametrize("sm,reason", [
    (b"", "empty"),
    (b"\x09\x00\x03\x01\x02", "UDH length 9 exceeds"),
    (b"\x05\x00\x05\x01\x02\x01abc", "overruns"),     # IE longer than UDH
    (b"\x01\x00abc", "truncated IE"),
])
def test_split_udh_bad_lengths(sm, reason):
    with pytest.raises(SmsDecodeError, match=reason):
        split_udh(sm, 0x40)
    assert issubclass(SmsDecodeError, ValueError)


def test_concat_info_8_and_16_bit():
    assert concat_info(bytes([5, 0, 3, 0xAB, 3, 2])) == Concat(0xAB, 3, 2, False)
    assert concat_info(bytes([6, 8, 4, 0x12, 0x34, 3, 3])) == Concat(0x1234, 3, 3, True)
    for p in encode("ж" * 300, ref=0x77, ref16=True):
        assert concat_info(p.udh) == p.concat


def test_concat_info_among_other_ies():
    port = bytes([0x05, 4, 0x0B, 0x84, 0x23, 0xF0])          # WAP push ports
    udh = bytes([11]) + port + bytes([0, 3, 9, 4, 2])
    assert concat_info(udh) == Concat(9, 4, 2, False)
    udh = bytes([12]) + bytes([8, 4, 1, 2, 4, 3]) + port
    assert concat_info(udh) == Concat(0x0102, 4, 3, True)
    assert concat_info(bytes([6]) + port) is None             # ports only
    # IE data containing 0x00 0x03 must not be taken for an IEI
    udh = bytes([10, 0x24, 3, 0, 3, 7]) + bytes([0, 3, 5, 2, 1])
    assert concat_info(udh) == Concat(5, 2, 1, False)


@pytest.mark.parametrize("udh", [
    b"", bytes([5, 0, 3, 1, 0, 1]),          # total 0
    bytes([5, 0, 3, 1, 2, 0]),               # seq 0
    bytes([5, 0, 3, 1, 2, 3]),               # seq > total
    bytes([4, 0, 2, 1, 2]),                  # 0x00 with wrong IE length
    bytes([9, 0, 3, 1, 2, 1]),               # UDHL wrong
    bytes([5, 0, 9, 1, 2, 1]),               # IE overruns
])
def test_concat_info_invalid_is_none(udh):
    assert concat_info(udh) is None


# ------------------------------------------------------------ reassembly

class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def feed(r, part, source="111", dest="222", tlvs=None):
    return r.add(source=source, dest=dest, data_coding=part.data_coding,
                 esm_class=0x40 if part.esm_class_udhi else 0,
                 short_message=part.short_message(), tlvs=tlvs or {})


def test_single_sms_returns_immediately():
    r = Reassembler()
    out = feed(r, one("hello €"))
    assert out == [IncomingSms("111", "222", "hello €", 1, 1, True, GSM7, None)]
    assert r.pending() == 0


def test_three_parts_out_of_order():
    text = "".join(chr(0x430 + i % 32) for i in range(150))   # 3 UCS-2 parts
    parts = encode(text, ref=200)
    assert len(parts) == 3
    r = Reassembler()
    assert feed(r, parts[2]) == [] and feed(r, parts[0]) == []
    assert r.pending() == 1
    (msg,) = feed(r, parts[1])
    assert msg == IncomingSms("111", "222", text, 3, 3, True, UCS2, 200)
    assert r.pending() == 0


def test_16bit_refs_and_8bit_same_number_kept_apart():
    a = encode("A" * 300, ref=0x0105, ref16=True)
    b = encode("B" * 300, ref=0x05)
    r = Reassembler()
    out = []
    for x, y in zip(a, b):
        out += feed(r, x) + feed(r, y)
    assert sorted(m.text for m in out) == ["A" * 300, "B" * 300]
    assert {m.ref for m in out} == {0x0105, 0x05}


def test_sar_tlvs():
    parts = encode("x{" * 100, ref=0x3039, sar=True)
    r = Reassembler()
    out = []
    for p in reversed(parts):
        tlvs = dict(p.sar_tlvs(), message_payload=None)   # smpplib leaves None
        out += r.add(source="1", dest="2", data_coding=p.data_coding,
                     esm_class=0, short_message=p.payload, tlvs=tlvs)
    assert [(m.text, m.ref, m.total) for m in out] == [("x{" * 100, 0x3039, 2)]


def test_sar_tlvs_as_bytes_and_invalid():
    r = Reassembler()
    t = {"sar_msg_ref_num": b"\x00\x07", "sar_total_segments": b"\x02",
         "sar_segment_seqnum": b"\x01"}
    assert r.add(source="1", dest="2", data_coding=0, esm_class=0,
                 short_message=b"ab", tlvs=t) == []
    (m,) = r.add(source="1", dest="2", data_coding=0, esm_class=0,
                 short_message=b"cd", tlvs=dict(t, sar_segment_seqnum=2))
    assert m.text == "abcd" and m.ref == 7
    # seq 0 -> not a valid series: delivered as a single message
    (m,) = r.add(source="1", dest="2", data_coding=0, esm_class=0,
                 short_message=b"x", tlvs=dict(t, sar_segment_seqnum=0))
    assert m.text == "x" and m.total == 1


def test_message_payload_whole_text():
    text = "€" * 200 + " long"
    payload = b"\x1b\x65" * 200 + b" long"
    r = Reassembler()
    (m,) = r.add(source="1", dest="2", data_coding=0, esm_class=0,
                 short_message=b"", tlvs={"message_payload": payload})
    assert m.text == text and m.complete and m.parts == 1


def test_message_payload_with_udh():
    r = Reassembler()
    tl = {"message_payload": bytes([5, 0, 3, 1, 2, 2]) + b"\x00W\x00o"}
    assert r.add(source="1", dest="2", data_coding=8, esm_class=0x40,
                 short_message=b"", tlvs=tl) == []
    tl = {"message_payload": bytes([5, 0, 3, 1, 2, 1]) + b"\x00H\x00i"}
    (m,) = r.add(source="1", dest="2", data_coding=8, esm_class=0x40,
                 short_message=b"", tlvs=tl)
    assert m.text == "HiWo"


def test_duplicate_part_ignored_and_counted():
    parts = encode("d" * 400, ref=11)
    r = Reassembler()
    assert feed(r, parts[0]) == [] and feed(r, parts[0]) == []
    assert feed(r, parts[1]) == []
    (m,) = feed(r, parts[2])
    assert m.text == "d" * 400 and m.parts == 3
    assert r.duplicates == 1
    # a resend after completion (lost submit_sm_resp) is a duplicate too
    assert feed(r, parts[1]) == [] and r.pending() == 0
    assert r.duplicates == 2


def test_resend_after_completion_window_and_reused_ref():
    clock = Clock()
    r = Reassembler(timeout=10, clock=clock)
    first = encode("F" * 200, ref=4)
    feed(r, first[0])
    clock.t += 5
    assert len(feed(r, first[1])) == 1
    clock.t += 9.9                 # dedup window runs from completion
    assert feed(r, first[0]) == [] and r.pending() == 0
    clock.t += 0.1
    assert r.expire() == []
    assert feed(r, first[0]) == [] and r.pending() == 1   # treated as new
    clock.t += 10
    (m,) = r.expire()
    assert m.text == "F" * 153 + "[…missing part 2/2…]"
    # the same ref with other text right after completion is a new message
    again = encode("G" * 200, ref=4)
    feed(r, again[0])
    (m,) = feed(r, again[1])
    assert m.text == "G" * 200 and r.duplicates == 1


def test_interleaved_messages_same_source_different_refs():
    a, b = encode("A" * 200, ref=1), encode("B" * 200, ref=2)
    r = Reassembler()
    out = feed(r, a[0]) + feed(r, b[1]) + feed(r, b[0]) + feed(r, a[1])
    assert [(m.text, m.ref) for m in out] == [("B" * 200, 2), ("A" * 200, 1)]


def test_same_ref_from_two_sources_kept_apart():
    a, b = encode("A" * 200, ref=5), encode("B" * 200, ref=5)
    r = Reassembler()
    out = feed(r, a[0], source="alice") + feed(r, b[0], source="bob")
    assert out == [] and r.pending() == 2
    out = feed(r, b[1], source="bob") + feed(r, a[1], source="alice")
    assert [(m.source, m.text) for m in out] == [("bob", "B" * 200),
                                                 ("alice", "A" * 200)]
    # and two destinations too
    out = feed(r, a[0], dest="x") + feed(r, b[1], dest="y")
    assert out == [] and r.pending() == 2


def test_missing_part_expires_with_gap_marker():
    clock = Clock()
    r = Reassembler(timeout=30, clock=clock)
    text = "".join("abcdefghij"[i % 10] for i in range(153 * 2 + 20))
    p1, p2, p3 = encode(text, ref=8)
    feed(r, p3)
    feed(r, p1)
    clock.t += 29.9
    assert r.expire() == [] and r.pending() == 1
    clock.t += 0.1
    (m,) = r.expire()
    assert m.text == text[:153] + "[…missing part 2/3…]" + text[306:]
    assert (m.complete, m.parts, m.total, m.ref) == (False, 2, 3, 8)
    assert r.pending() == 0 and r.expire() == []


def test_expiry_marks_each_gap_and_timeout_runs_from_first_part():
    clock = Clock()
    r = Reassembler(timeout=10, clock=clock)
    parts = encode("q" * 153 * 4, ref=1)
    feed(r, parts[1])
    clock.t += 9
    feed(r, parts[2])              # a later part does not restart the timer
    clock.t += 1
    (m,) = r.expire()
    assert m.text == ("[…missing part 1/4…]" + "q" * 306 + "[…missing part 4/4…]")


def test_ref_reuse_with_other_content_flushes_old_group():
    r = Reassembler()
    old, new = encode("O" * 200, ref=3), encode("N" * 200, ref=3)
    assert feed(r, old[0]) == []
    (m,) = feed(r, new[0])
    assert not m.complete and m.text == "O" * 153 + "[…missing part 2/2…]"
    assert r.conflicts == 1
    (m,) = feed(r, new[1])
    assert m.text == "N" * 200 and m.complete


def test_bad_udh_length_delivered_as_single_with_error():
    r = Reassembler()
    (m,) = r.add(source="1", dest="2", data_coding=0, esm_class=0x40,
                 short_message=b"\x09\x00\x03AB", tlvs={})
    assert m.error and "UDH length 9" in m.error
    assert m.complete and m.parts == 1 and m.ref is None
    assert m.text == decode_payload(0, b"\x09\x00\x03AB")
    assert r.malformed == 1 and r.pending() == 0


def test_udh_without_concat_is_single_with_udh_stripped():
    r = Reassembler()
    sm = bytes([6, 5, 4, 0x0B, 0x84, 0x23, 0xF0]) + b"hi"
    (m,) = r.add(source="1", dest="2", data_coding=0, esm_class=0x40,
                 short_message=sm, tlvs={})
    assert m.text == "hi" and m.error is None
    # a concat IE announcing 1 part is a single message too
    (m,) = r.add(source="1", dest="2", data_coding=0, esm_class=0x40,
                 short_message=bytes([5, 0, 3, 4, 1, 1]) + b"yo", tlvs={})
    assert (m.text, m.ref, m.total) == ("yo", 4, 1)


def test_reassembles_smpplib_parts_with_a_cut_escape():
    """smpplib.gsm.make_parts cuts 1B|65 across parts; decoding the joined
    payload still yields the euro sign."""
    from smpplib import gsm
    text = "a" * 152 + "€" + "b" * 20
    raw, coding, esm = gsm.make_parts(text)
    assert raw[0].endswith(b"\x1b")            # the cut this module avoids
    r = Reassembler()
    out = []
    for sm in reversed(raw):
        out += r.add(source="1", dest="2", data_coding=coding, esm_class=esm,
                     short_message=sm, tlvs={})
    assert [m.text for m in out] == [text]


def test_round_trip_many_texts():
    r = Reassembler()
    for i, text in enumerate(["", "x", "€" * 77 + "é", "ж👋" * 90,
                              "a{b}" * 120, "Hi 👋 Peter 🇫🇷" * 20]):
        for ref16 in (False, True):
            parts = encode(text, ref=i, ref16=ref16)
            out = []
            for p in parts[::-1]:
                out += feed(r, p)
            assert [m.text for m in out] == [text]
            assert all(air_bits(p) <= 140 * 8 for p in parts)
    assert r.pending() == 0 and r.duplicates == 0


def air_bits(p):
    """Bits on the air interface: UDH octets, fill to a septet boundary, text."""
    if p.data_coding != GSM7:
        return 8 * len(p.short_message())
    udh_bits = 8 * len(p.udh)
    return -(-udh_bits // 7) * 7 + 7 * len(p.payload)


@pytest.mark.parametrize("ref16", [False, True])
@pytest.mark.parametrize("text", ["a" * 1000, "ж" * 500, "€" * 400])
def test_full_parts_fill_exactly_140_octets_on_air(text, ref16):
    parts = encode(text, ref=1, ref16=ref16)
    # full, except UCS-2 with a 7-octet UDH (133 octets = 66 units + 1 spare)
    # and euros with an 8-bit ref (153 septets: the last one stays free)
    spare = 8 if (ref16 and text[0] == "ж") else 0
    if text[0] == "€" and not ref16:
        spare = 7
    assert air_bits(parts[0]) == 140 * 8 - spare
    assert all(air_bits(p) <= 140 * 8 for p in parts)


def test_reassembly_joins_cut_surrogates_but_not_odd_ucs2_parts():
    r = Reassembler()
    sm = lambda seq, data: bytes([5, 0, 3, 1, 2, seq]) + data   # noqa: E731
    r.add(source="1", dest="2", data_coding=8, esm_class=0x40,
          short_message=sm(2, b"\xdc\x4b\x00!"), tlvs={})
    (m,) = r.add(source="1", dest="2", data_coding=8, esm_class=0x40,
                 short_message=sm(1, b"\x00A\xd8\x3d"), tlvs={})
    assert m.text == "A👋!"
    r.add(source="1", dest="2", data_coding=8, esm_class=0x40,
          short_message=sm(1, b"\x00A\x00"), tlvs={})        # odd length
    (m,) = r.add(source="1", dest="2", data_coding=8, esm_class=0x40,
                 short_message=sm(2, b"\x00B"), tlvs={})
    assert m.text == "A\ufffdB"
    # mixed codings: each part decoded with its own
    r.add(source="1", dest="2", data_coding=0, esm_class=0x40,
          short_message=sm(1, b"\x1b\x65"), tlvs={})
    (m,) = r.add(source="1", dest="2", data_coding=8, esm_class=0x40,
                 short_message=sm(2, b"\x04\x36"), tlvs={})
    assert m.text == "€ж" and m.data_coding == 0
