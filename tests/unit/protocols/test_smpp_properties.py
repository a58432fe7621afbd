"""Properties of backends.protocols.smpp: submit_sm / deliver_sm built with make/encode parse back to the
same fields; the Framer cuts any stream the same way whatever its chunking, with a bounded buffer;
parsing arbitrary or mutated PDUs raises nothing but ParseError."""
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smpplib import consts as C

from iwlab.backends.protocols import smpp as codec
from tests.helpers.mutation import mutations


def cstring(max_octets: int):
    """A C-octet string value as make() takes it: Latin-1 without NUL, its NUL within ``max_octets``."""
    return st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=max_octets - 1)


octet = st.integers(0, 255)
timestamp = st.sampled_from(["", "260101120000000+", "000002000000000R", "261231235959904-"])
message_fields = st.fixed_dictionaries(
    {"service_type": cstring(6), "source_addr_ton": octet, "source_addr_npi": octet, "source_addr": cstring(21),
     "dest_addr_ton": octet, "dest_addr_npi": octet, "destination_addr": cstring(21), "esm_class": octet,
     "protocol_id": octet, "priority_flag": octet, "schedule_delivery_time": timestamp,
     "validity_period": timestamp, "registered_delivery": octet, "replace_if_present_flag": octet,
     "data_coding": octet, "sm_default_msg_id": octet},
    optional={"sar_msg_ref_num": st.integers(0, 0xFFFF), "sar_total_segments": octet,
              "sar_segment_seqnum": octet, "user_message_reference": st.integers(0, 0xFFFF),
              "source_port": st.integers(0, 0xFFFF), "payload_type": octet})
deliver_extra = st.fixed_dictionaries({}, optional={
    "receipted_message_id": st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=64),
    "message_state": octet})
content = st.one_of(st.fixed_dictionaries({"short_message": st.binary(max_size=254)}),
                    st.fixed_dictionaries({"message_payload": st.binary(min_size=1, max_size=2000)}))


def as_sent(key, value):
    """What a field reads back as: strings as Latin-1 bytes; an empty string TLV is not sent at all."""
    if isinstance(value, str):
        return None if key == "receipted_message_id" and not value else value.encode("latin-1")
    return value


@settings(max_examples=50)
@given(command=st.sampled_from(["submit_sm", "deliver_sm"]), sequence=st.integers(1, 0x7FFFFFFF),
       fields=message_fields, extra=deliver_extra, body=content)
def test_submit_and_deliver_sm_round_trip(command, sequence, fields, extra, body):
    fields = {**fields, **body, **(extra if command == "deliver_sm" else {})}
    raw = codec.encode(codec.make(command, sequence, **fields))
    assert struct.unpack(">L", raw[:4])[0] == len(raw)
    frames = codec.Framer().feed(raw)
    assert frames == [raw]
    pdu = codec.parse(raw)
    assert (pdu.command, pdu.sequence, pdu.status) == (command, sequence, 0)
    for key, value in fields.items():
        got = getattr(pdu, key)
        if key == "short_message" and not value:
            assert not got
        else:
            assert got == as_sent(key, value), key
    assert pdu.sm_length == len(fields.get("short_message", b""))
    assert codec.describe(pdu)[0].startswith(f"{command} seq={sequence} ")


@settings(max_examples=25)
@given(command=st.sampled_from(["submit_sm", "deliver_sm"]), key=st.sampled_from(
    ["source_addr", "destination_addr", "service_type", "receipted_message_id", "esm_class", "sar_msg_ref_num",
     "short_message"]), data=st.data())
def test_make_refuses_what_smpplib_would_garble(command, key, data):
    """Over-long strings (smpplib cuts them), NULs (they end the field early), non-ASCII string TLVs
    (written as UTF-8 with the length in characters), integers too big for their octets: ValueError."""
    if key == "receipted_message_id" and command == "submit_sm":
        key = "source_addr"
    bad = {
        "source_addr": st.sampled_from(["1" * 21, "12\x0034", "€"]),
        "destination_addr": st.sampled_from(["9" * 30, "\x00"]),
        "service_type": st.sampled_from(["CMT123", "a\x00"]),
        "receipted_message_id": st.sampled_from(["é1A", "x" * 65, "1\x002"]),
        "esm_class": st.sampled_from([256, -1]),
        "sar_msg_ref_num": st.sampled_from([0x10000, -5]),
        "short_message": st.just(b"x" * 255),
    }[key]
    with pytest.raises(ValueError):
        codec.encode(codec.make(command, 1, **{"source_addr": "1", "destination_addr": "2", key: data.draw(bad)}))


@settings(max_examples=80)
@given(command=st.sampled_from(["submit_sm", "deliver_sm"]), esm=st.sampled_from([0x40, 0x44, 0x00, 0x04]),
       dc=st.sampled_from([0, 3, 4, 8, 0xF4, 0x15]),
       sm=st.builds(lambda udhl, ies, rest: bytes([udhl]) + ies + rest, octet,
                    st.lists(st.sampled_from([b"\x00\x03", b"\x08\x04", b"\x05\x04", b"\x00", b"\x08"])
                             .flatmap(lambda h: st.binary(max_size=5).map(lambda v: h + v)), max_size=3).map(b"".join),
                    st.binary(max_size=20)) | st.binary(max_size=40))
def test_any_user_data_can_be_described(command, esm, dc, sm):
    """The trace describes every PDU a handset sends: any UDH, however cut, is shown, never raised."""
    pdu = codec.parse(codec.encode(codec.make(command, 1, source_addr="1", destination_addr="2", esm_class=esm,
                                              data_coding=dc, short_message=sm)))
    summary, fields = codec.describe(pdu)
    assert summary.startswith(f"{command} seq=1 1->2")
    codec.content(pdu)


# -- framing and hostile input -------------------------------------------------------------

def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@st.composite
def pdu_stream(draw):
    """Several PDUs back to back, some valid, some with a garbage body, maybe garbage at the end."""
    pdus = []
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.booleans()):
            pdus.append(codec.encode(codec.make("submit_sm", draw(st.integers(1, 99)), source_addr="1",
                                                destination_addr="2", short_message=draw(st.binary(max_size=40)))))
        else:
            body = draw(st.binary(max_size=60))
            pdus.append(struct.pack(">LLLL", 16 + len(body), draw(st.sampled_from([4, 5, 0x15, 0x80000004, 77])),
                                    0, 1) + body)
    return b"".join(pdus) + draw(st.binary(max_size=24))


@settings(max_examples=60)
@given(stream=pdu_stream(), cuts=st.lists(st.integers(0, 10_000), max_size=12),
       max_length=st.sampled_from([codec.MAX_LENGTH, 64]))
def test_the_framer_cuts_any_chunking_the_same_way(stream, cuts, max_length):
    whole = codec.Framer(max_length)
    expected = whole.feed(stream)
    framer, frames = codec.Framer(max_length), []
    for piece in split(stream, cuts):
        frames += framer.feed(piece)
        assert framer.buffered <= max(max_length, 3)
    assert frames == expected
    assert (framer.error and framer.error.length) == (whole.error and whole.error.length)
    if framer.error:   # the sequence is read only if the 16 header octets had arrived
        assert framer.error.sequence in (0, whole.error.sequence)
    assert b"".join(frames) == stream[:sum(map(len, frames))]
    for frame in frames:
        assert struct.unpack(">L", frame[:4])[0] == len(frame)
        try:
            codec.parse(frame)
        except codec.ParseError:
            pass
    if framer.error:
        assert framer.buffered == 0 and framer.feed(b"\0\0\0\x10" + bytes(12)) == []
        rest = stream[sum(map(len, frames)):]
        assert rest.startswith(framer.error.data) and framer.error.data[:4] == rest[:4]


@settings(max_examples=120)
@given(st.binary(max_size=80) | st.builds(lambda cid, body: struct.pack(">LLLL", 16 + len(body), cid, 0, 3) + body,
                                          st.sampled_from(sorted(codec.COMMAND_NAMES)) | st.integers(0, 2**32 - 1),
                                          st.binary(max_size=80)))
def test_parse_raises_only_parse_error(raw):
    check_parse(raw)


def check_parse(raw: bytes) -> None:
    try:
        pdu = codec.parse(raw)
    except codec.ParseError as exc:
        assert isinstance(exc.status, int) and exc.reason
        return
    codec.describe(pdu)   # whatever parsed can be shown
    if pdu.command in ("submit_sm", "deliver_sm", "data_sm"):
        codec.content(pdu)


VALID = [
    codec.encode(codec.make("submit_sm", 4, source_addr="15550101", destination_addr="15550201", esm_class=0x40,
                            data_coding=8, registered_delivery=1,
                            short_message=b"\x05\x00\x03\x2a\x02\x01" + "Hé€".encode("utf-16-be"),
                            sar_msg_ref_num=7, user_message_reference=3)),
    codec.encode(codec.make("deliver_sm", 9, source_addr="15550201", destination_addr="15550101", esm_class=4,
                            short_message=b"id:1A sub:001 dlvrd:001 submit date:2601011200 done date:2601011201 "
                                          b"stat:DELIVRD err:000 text:Hi", receipted_message_id="1A", message_state=2)),
    codec.encode(codec.make("bind_transceiver", 1, system_id="15550101", password="secret", system_type="",
                            interface_version=0x34, addr_ton=1, addr_npi=1, address_range="")),
    codec.encode(codec.make("submit_sm_resp", 4, message_id="0001A2B")),
]


def _fix_length(draw, data: bytearray) -> bytearray:
    """Keep command_length honest, so the body is what gets judged."""
    if len(data) >= 4:
        data[:4] = struct.pack(">L", len(data))
    return data


def mutated():
    return mutations(VALID, max_rounds=4, max_delete=4, own={"fix_length": _fix_length})


@settings(max_examples=120)
@given(mutated())
def test_mutated_pdus_raise_only_parse_error(raw):
    check_parse(raw)
    text = codec.delivered_text(raw)
    assert text is None or isinstance(text, str)


def test_short_or_mislabelled_pdus_are_parse_errors():
    """Found by test_parse_raises_only_parse_error: parse(b"") raised struct.error, and a command_length
    that disagreed with the octets handed over went unnoticed (smpplib reads data[16:] whatever it says)."""
    for raw in (b"", b"\0\0\0\x10", VALID[0][:15]):
        with pytest.raises(codec.ParseError) as exc:
            codec.parse(raw)
        assert exc.value.status == C.SMPP_ESME_RINVCMDLEN
    longer = VALID[0] + b"\x02\x04\x00\x02\x00\x09"   # a user_message_reference beyond command_length
    with pytest.raises(codec.ParseError, match="command_length"):
        codec.parse(longer)


def test_a_non_ascii_string_tlv_is_refused_not_garbled():
    """Found by test_submit_and_deliver_sm_round_trip: receipted_message_id="é1" went out as UTF-8
    (3 octets + NUL) under a TLV length of 3, a PDU our own parser then refused."""
    with pytest.raises(ValueError, match="ASCII"):
        codec.make("deliver_sm", 5, source_addr="1", destination_addr="2", receipted_message_id="é1")
    with pytest.raises(ValueError, match="at most 21"):
        codec.make("submit_sm", 5, source_addr="1" * 25, destination_addr="2")   # smpplib cut it to 20
    with pytest.raises(ValueError, match="NUL"):
        codec.make("submit_sm", 5, source_addr="a\0b", destination_addr="2")


def test_an_empty_short_message_may_end_the_pdu():
    """Found by test_submit_and_deliver_sm_round_trip: a submit_sm with sm_length 0 and no TLVs (an empty
    text) was refused as "the body stops after sm_length: short_message is missing"."""
    raw = codec.encode(codec.make("submit_sm", 3, source_addr="1", destination_addr="2", short_message=b""))
    assert raw.endswith(b"\x00\x00\x00\x00")   # ... data_coding, sm_default_msg_id, sm_length 0: the end
    pdu = codec.parse(raw)
    assert pdu.sm_length == 0 and not pdu.short_message
    with pytest.raises(codec.ParseError, match="short_message"):   # a positive sm_length still needs its octets
        codec.parse(raw[:-1] + b"\x02")


def test_a_cut_or_odd_concatenation_ie_is_shown_not_raised():
    """Found by test_submit_and_deliver_sm_round_trip / test_any_user_data_can_be_described: describe() of a
    message whose UDH held a concatenation IE cut short (b"\\x02\\x08\\x04": IndexError) or of another length
    (b"\\x02\\x00\\x00": KeyError 'seq') raised, in the trace of every PDU a handset sends."""
    for sm in (b"\x02\x08\x04", b"\x02\x00\x00Hi", b"\x04\x00\x03\x01\x02", b"\x05\x00\x03\x01\x02\x01Hi"):
        pdu = codec.parse(codec.encode(codec.make("deliver_sm", 1, source_addr="1", destination_addr="2",
                                                  esm_class=0x40, short_message=sm)))
        summary, fields = codec.describe(pdu)
        assert ("part 1/2 ref=1" in summary) == (sm[0] == 5), summary
    assert codec.parse_udh(b"\x02\x08\x04")[0] == [{"iei": 8, "name": "IE 0x08 (cut short: 0 of 4 octets)",
                                                     "data": ""}]
