"""Properties of backends.protocols.smstext: any text survives encode -> parts -> Reassembler in any
order; parts never cut an escape or a surrogate pair and stay within one SMS; decoding never raises
anything but SmsDecodeError."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iwlab.backends.protocols.smstext import (
    GSM7,
    UCS2,
    UDHI,
    Reassembler,
    SmsDecodeError,
    concat_info,
    decode_payload,
    encode,
    sms_count,
    split_udh,
)

GSM_BASIC = ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
             "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM_ESCAPES = "€[]{}\\^~|\f"
EMOJI = "😀🎉👍🏽🇫🇷𝄞"

# Unicode text without lone surrogates (a Python str may hold them; no SMS can).
any_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=400)
# Texts near the part boundaries, where cutting goes wrong: GSM with many escapes, UCS-2 with many pairs.
gsm_text = st.text(st.sampled_from(GSM_BASIC + GSM_ESCAPES * 8), min_size=140, max_size=700)
ucs2_text = st.text(st.sampled_from("aé€[" + EMOJI * 3 + "中"), min_size=60, max_size=400)
texts = st.one_of(any_text, gsm_text, ucs2_text)
# What a part's concatenation mode is: 8-bit ref UDH, 16-bit ref UDH, SAR TLVs.
modes = st.sampled_from(["udh8", "udh16", "sar"])


def _encode(text: str, mode: str, ref: int):
    if mode == "udh8":
        return encode(text, ref=ref & 0xFF)
    return encode(text, ref=ref, ref16=mode == "udh16", sar=mode == "sar")


def _deliver(reassembler: Reassembler, part) -> list:
    return reassembler.add(source="15550101", dest="15550201", data_coding=part.data_coding,
                           esm_class=UDHI if part.esm_class_udhi else 0, short_message=part.short_message(),
                           tlvs=part.sar_tlvs())


@settings(max_examples=60)
@given(text=texts, mode=modes, ref=st.integers(0, 0xFFFF), data=st.data())
def test_any_text_survives_the_parts_in_any_order(text, mode, ref, data):
    parts = _encode(text, mode, ref)
    order = data.draw(st.permutations(parts))
    # resends, interleaved (a single SMS has no reference: a resend of it is a new message)
    again = data.draw(st.lists(st.sampled_from(order), max_size=3)) if len(parts) > 1 else []
    reassembler, out = Reassembler(), []
    for i, part in enumerate(order):
        out += _deliver(reassembler, part)
        if i < len(again):
            out += _deliver(reassembler, again[i])
    assert len(out) == 1
    sms = out[0]
    assert sms.text == text
    assert sms.complete and sms.error is None and sms.parts == sms.total == len(parts)
    assert reassembler.pending() == 0


@settings(max_examples=60)
@given(text=texts, mode=modes)
def test_every_part_stands_alone_and_fits_one_sms(text, mode):
    """No escape and no surrogate pair is cut: each part decodes by itself to a piece of the text."""
    parts = _encode(text, mode, 7)
    assert "".join(decode_payload(p.data_coding, p.payload) for p in parts) == text
    if mode != "udh16":   # sms_count counts parts with an 8-bit reference (SAR cuts to the same budget)
        assert len(parts) == sms_count(text)[0]
    for part in parts:
        if part.data_coding == GSM7:
            assert not part.payload.endswith(b"\x1b")
            septets = math.ceil(len(part.udh) * 8 / 7) + len(part.payload)
            assert septets <= 160
        else:
            assert part.data_coding == UCS2
            assert len(part.payload) % 2 == 0
            assert not 0xD800 <= int.from_bytes(part.payload[-2:], "big") <= 0xDBFF
            assert len(part.udh) + len(part.payload) <= 140
        if len(parts) > 1:
            c = concat_info(part.udh) if part.udh else None
            assert (c or part.concat) is not None


@settings(max_examples=25)
@given(st.text(st.sampled_from(GSM_BASIC), max_size=160) | st.text(st.sampled_from("aé中😀"), max_size=35))
def test_a_text_that_fits_is_one_part_without_udh(text):
    coding_limit = 160 if all(c in GSM_BASIC for c in text) else 70
    if len(text.encode("utf-16-be")) // 2 <= coding_limit:
        parts = encode(text, ref=1)
        assert len(parts) == 1 and parts[0].udh == b"" and not parts[0].esm_class_udhi


def test_a_lone_surrogate_is_refused_with_a_value_error():
    with pytest.raises(ValueError):
        encode("a\ud83d", ref=1)


# -- hostile input -----------------------------------------------------------------------

@settings(max_examples=120)
@given(dc=st.integers(0, 255), payload=st.binary(max_size=300))
def test_decode_payload_never_raises(dc, payload):
    assert isinstance(decode_payload(dc, payload), str)


@settings(max_examples=120)
@given(sm=st.binary(max_size=200), esm=st.integers(0, 255))
def test_split_udh_raises_only_sms_decode_error(sm, esm):
    try:
        udh, payload = split_udh(sm, esm)
    except SmsDecodeError:
        return
    assert udh + payload == sm
    concat_info(udh)   # never raises


udh_like = st.builds(
    lambda ies, tail: bytes([sum(len(i) for i in ies)]) + b"".join(ies) + tail,
    st.lists(st.one_of(
        st.builds(lambda r, t, s: bytes([0, 3, r, t, s]), st.integers(0, 255), st.integers(0, 4), st.integers(0, 4)),
        st.builds(lambda r, t, s: bytes([8, 4, r >> 8, r & 255, t, s]), st.integers(0, 0xFFFF), st.integers(0, 4),
                  st.integers(0, 4)),
        st.binary(max_size=6)), max_size=3),
    st.binary(max_size=20))
tlv_values = st.one_of(st.none(), st.integers(-1, 300), st.binary(max_size=3), st.text(max_size=3))


@settings(max_examples=50)
@given(st.lists(st.tuples(st.sampled_from(["1", "2"]), st.integers(0, 255), st.sampled_from([0, UDHI, 0xFF]),
                          udh_like | st.binary(max_size=40),
                          st.fixed_dictionaries({}, optional={
                              "sar_msg_ref_num": tlv_values, "sar_total_segments": tlv_values,
                              "sar_segment_seqnum": tlv_values, "message_payload": st.binary(max_size=20)})),
                max_size=12))
def test_reassembler_never_raises_on_hostile_parts(deliveries):
    clock = [0.0]
    reassembler = Reassembler(timeout=10, clock=lambda: clock[0])
    for source, dc, esm, sm, tlvs in deliveries:
        for sms in reassembler.add(source=source, dest="x", data_coding=dc, esm_class=esm, short_message=sm,
                                   tlvs=tlvs):
            assert isinstance(sms.text, str) and sms.parts <= sms.total
        clock[0] += 3
    for sms in reassembler.expire():
        assert not sms.complete
    assert reassembler.pending() <= len(deliveries)


# -- regressions found by the properties above ---------------------------------------------

def test_a_sar_total_beyond_one_octet_is_no_sar():
    """Found by test_reassembler_never_raises_on_hostile_parts: sar_total_segments b"\\xff\\xff\\xff" made a
    16-million-part group whose expiry formatted a "missing part" marker for each (a minute of CPU)."""
    clock = [0.0]
    reassembler = Reassembler(timeout=10, clock=lambda: clock[0])
    tlvs = {"sar_msg_ref_num": 1, "sar_total_segments": b"\xff\xff\xff", "sar_segment_seqnum": 1}
    out = reassembler.add(source="1", dest="2", data_coding=0, esm_class=0, short_message=b"Hi", tlvs=tlvs)
    assert [(s.text, s.complete, s.ref) for s in out] == [("Hi", True, None)]
    for bad in ({"sar_total_segments": 256, "sar_segment_seqnum": 1}, {"sar_msg_ref_num": 0x10000},
                {"sar_msg_ref_num": -1}):
        out = reassembler.add(source="1", dest="2", data_coding=0, esm_class=0, short_message=b"Hi",
                              tlvs={"sar_msg_ref_num": 1, "sar_total_segments": 2, "sar_segment_seqnum": 1, **bad})
        assert [s.text for s in out] == ["Hi"], bad
    clock[0] = 11
    assert reassembler.expire() == [] and reassembler.pending() == 0
