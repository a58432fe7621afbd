"""smpp_codec with byte strings alone: framing, parsing, describing."""
import struct

import pytest
from smpplib import consts as C

from iwlab.backends.protocols import smpp as codec


def pdu(command_id: int, seq: int, body: bytes = b"", status: int = 0) -> bytes:
    return struct.pack(">LLLL", 16 + len(body), command_id, status, seq) + body


def cstr(value: str) -> bytes:
    return value.encode("latin-1") + b"\0"


def tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


def submit_body(src="15550101", dst="15550201", esm=0, dc=0, sm=b"Hi Peter", rd=0, tlvs=b"",
                validity="") -> bytes:
    return (cstr("") + bytes([1, 1]) + cstr(src) + bytes([1, 1]) + cstr(dst)
            + bytes([esm, 0, 0]) + cstr("") + cstr(validity) + bytes([rd, 0, dc, 0, len(sm)]) + sm + tlvs)


ENQUIRE = pdu(0x15, 7)
SUBMIT = pdu(0x04, 4, submit_body())


# -- framing -----------------------------------------------------------------------------

def test_frames_split_across_chunks_byte_by_byte():
    framer = codec.Framer()
    frames = []
    for i in range(len(SUBMIT)):
        frames += framer.feed(SUBMIT[i:i + 1])
        if i < len(SUBMIT) - 1:
            assert frames == []
    assert frames == [SUBMIT]
    assert framer.buffered == 0 and framer.error is None


def test_two_pdus_in_one_chunk_and_a_half_one():
    framer = codec.Framer()
    data = SUBMIT + ENQUIRE + SUBMIT
    assert framer.feed(data[:-10]) == [SUBMIT, ENQUIRE]
    assert framer.feed(data[-10:]) == [SUBMIT]


@pytest.mark.parametrize("length", [0, 8, 15, codec.MAX_LENGTH + 1, 0x47455420])
def test_impossible_length_is_an_error_with_the_sequence_when_readable(length):
    framer = codec.Framer()
    data = struct.pack(">LLLL", length, 0x04, 0, 99)
    assert framer.feed(ENQUIRE + data) == [ENQUIRE]
    assert framer.error == codec.BadLength(length, 99, data)
    assert framer.feed(ENQUIRE) == []          # the stream is unusable from here


def test_impossible_length_in_a_short_chunk_has_no_sequence():
    framer = codec.Framer()
    framer.feed(b"\x00\x00\x00\x05\x00")
    assert framer.error.sequence == 0 and framer.error.length == 5


# -- parse / encode ------------------------------------------------------------------------

def test_parse_submit_sm_gives_bytes_fields_and_the_header_sequence():
    parsed = codec.parse(SUBMIT)
    assert parsed.command == "submit_sm" and parsed.sequence == 4
    assert parsed.source_addr == b"15550101" and parsed.short_message == b"Hi Peter"
    assert codec.text(parsed.source_addr) == "15550101"


def test_unknown_command_id_is_rinvcmdid_with_sequence():
    with pytest.raises(codec.ParseError) as err:
        codec.parse(pdu(0x99, 12))
    assert (err.value.status, err.value.sequence, err.value.command_id) == (C.SMPP_ESME_RINVCMDID, 12, 0x99)


def test_known_command_without_smpplib_class_is_rinvcmdid():
    with pytest.raises(codec.ParseError) as err:
        codec.parse(pdu(0x08, 3, b"\0" * 20))   # cancel_sm
    assert err.value.status == C.SMPP_ESME_RINVCMDID and "cancel_sm" in err.value.reason


@pytest.mark.parametrize("raw, status", [
    (pdu(0x04, 5), C.SMPP_ESME_RINVCMDLEN),                                      # submit_sm without a body
    (pdu(0x04, 5, submit_body(tlvs=b"\x04\x24")), C.SMPP_ESME_RINVOPTPARSTREAM),  # truncated TLV header
    (pdu(0x04, 5, submit_body(tlvs=tlv(0x001E, b"12\0"))), C.SMPP_ESME_ROPTPARNOTALLWD),   # deliver_sm-only TLV
], ids=["no-body", "truncated-tlv", "foreign-tlv"])
def test_unreadable_body_gets_the_status_that_says_why(raw, status):
    with pytest.raises(codec.ParseError) as err:
        codec.parse(raw)
    assert err.value.status == status and err.value.sequence == 5


def test_unknown_tlv_is_skipped():
    parsed = codec.parse(pdu(0x04, 5, submit_body(tlvs=tlv(0x1400, b"vendor"))))
    assert parsed.short_message == b"Hi Peter"


def test_make_sets_sequence_and_error_response_is_header_only():
    resp = codec.make("submit_sm_resp", 4, C.SMPP_ESME_RTHROTTLED, message_id="")
    assert codec.encode(resp) == pdu(0x80000004, 4, status=0x58)
    ok = codec.make("submit_sm_resp", 4, message_id="1A2B")
    assert codec.encode(ok) == pdu(0x80000004, 4, b"1A2B\0")
    assert codec.describe(ok)[0] == "submit_sm_resp seq=4 id=1A2B ok"
    assert codec.describe(resp)[0] == "submit_sm_resp seq=4 ESME_RTHROTTLED"


def test_generic_nack_bytes_and_summary():
    nack = codec.make("generic_nack", 0, C.SMPP_ESME_RINVCMDLEN)
    assert codec.encode(nack) == pdu(0x80000000, 0, status=2)
    assert codec.describe(nack)[0] == "generic_nack seq=0 ESME_RINVCMDLEN"


def test_deliver_sm_round_trips_built_from_parsed_fields():
    built = codec.make("deliver_sm", 9, source_addr="15550101", destination_addr="15550201",
                       source_addr_ton=1, esm_class=0x40, data_coding=8,
                       short_message=b"\x05\x00\x03\x2a\x02\x01" + "Hé".encode("utf-16-be"),
                       sar_msg_ref_num=7)
    again = codec.parse(codec.encode(built))
    assert again.sequence == 9 and again.esm_class == 0x40 and again.sar_msg_ref_num == 7
    assert codec.describe(again) == codec.describe(built)


# -- describe --------------------------------------------------------------------------------

def test_describe_submit_sm_summary_and_fields():
    summary, fields = codec.describe(codec.parse(SUBMIT))
    assert summary == 'submit_sm seq=4 15550101->15550201 "Hi Peter"'
    assert fields["command"] == "submit_sm" and fields["status"] == "ESME_ROK" and fields["sequence"] == 4
    assert fields["source_addr_ton"] == 1 and fields["dest_addr_npi"] == 1
    assert fields["short_message"] == b"Hi Peter".hex() and fields["text"] == "Hi Peter"
    assert fields["esm_class"]["type"] == "normal message"


def test_describe_udh_concatenation():
    sm = b"\x05\x00\x03\x2a\x03\x02" + b"part two"
    summary, fields = codec.describe(codec.parse(pdu(0x04, 6, submit_body(esm=0x40, sm=sm))))
    assert summary == 'submit_sm seq=6 15550101->15550201 part 2/3 ref=42 "part two"'
    assert fields["esm_class"] == {"value": 0x40, "mode": "default (store and forward)",
                                   "type": "normal message", "udhi": True, "reply_path": False}
    assert fields["udh"] == [{"iei": 0, "name": "concatenation, 8-bit ref", "ref": 42, "total": 3, "seq": 2}]
    assert fields["text"] == "part two"


def test_describe_udh_16_bit_reference():
    sm = b"\x06\x08\x04\x12\x34\x02\x01" + b"one"
    summary, fields = codec.describe(codec.parse(pdu(0x04, 6, submit_body(esm=0x40, sm=sm))))
    assert "part 1/2 ref=4660" in summary and fields["udh"][0]["name"] == "concatenation, 16-bit ref"


def test_describe_sar_tlvs_and_message_payload():
    tlvs = (tlv(0x020C, b"\x01\x02") + tlv(0x020E, b"\x03") + tlv(0x020F, b"\x01")
            + tlv(0x0424, b"A long text in the payload"))
    summary, fields = codec.describe(codec.parse(pdu(0x04, 8, submit_body(sm=b"", tlvs=tlvs))))
    assert summary == 'submit_sm seq=8 15550101->15550201 part 1/3 ref=258 (SAR) "A long text in the payload"'
    assert (fields["sar_msg_ref_num"], fields["sar_total_segments"], fields["sar_segment_seqnum"]) == (258, 3, 1)
    assert fields["message_payload"] == b"A long text in the payload".hex()
    assert fields["sm_length"] == 0 and "user_message_reference" not in fields   # absent TLVs stay out


def test_describe_ucs2_explains_data_coding_and_decodes_surrogates():
    text = "Привет 👋"
    summary, fields = codec.describe(codec.parse(pdu(0x04, 3, submit_body(dc=8, sm=text.encode("utf-16-be")))))
    assert fields["data_coding"] == {"value": 8, "meaning": "UCS-2 (ISO/IEC-10646)"}
    assert fields["text"] == text and summary.endswith(f'"{text}"')


def test_gsm_default_alphabet_with_escapes():
    # '@' is 0x00, '€' is ESC 0x65, '_' is 0x11 in GSM 03.38
    assert codec.decode_text(b"\x00 5\x1b\x65 a\x11b", 0) == "@ 5€ a_b"
    assert codec.decode_text(b"x", 0x04) is None     # binary


def test_describe_binary_message_has_no_text():
    summary, fields = codec.describe(codec.parse(pdu(0x04, 3, submit_body(dc=4, sm=b"\x01\x02"))))
    assert "text" not in fields and summary.endswith("(8-bit binary)")


def test_describe_receipt_and_delivered_text():
    text = "id:1A2B3C01 sub:001 dlvrd:001 submit date:2501011200 done date:2501011201 stat:DELIVRD err:000 text:Hi"
    body = (cstr("") + bytes([1, 1]) + cstr("15550201") + bytes([1, 1]) + cstr("15550101")
            + bytes([0x04, 0, 0]) + cstr("") + cstr("") + bytes([0, 0, 0, 0, len(text)]) + text.encode()
            + tlv(0x001E, b"1A2B3C01\0") + tlv(0x0427, b"\x02"))
    raw = pdu(0x05, 11, body)
    summary, fields = codec.describe(codec.parse(raw))
    assert summary == "deliver_sm seq=11 15550201->15550101 receipt id=1A2B3C01 DELIVRD"
    assert fields["esm_class"]["type"] == "SMSC delivery receipt"
    assert fields["receipted_message_id"] == "1A2B3C01" and fields["message_state"] == 2
    assert fields["receipt"]["stat"] == "DELIVRD" and fields["receipt"]["submit_date"] == "2501011200"
    assert codec.delivered_text(raw) is None
    assert codec.delivered_text(pdu(0x05, 12, submit_body(sm=b"Hello"))) == "Hello"
    assert codec.delivered_text(SUBMIT) is None


def test_describe_bind_and_unreadable():
    bind = pdu(0x09, 1, cstr("15550201") + cstr("iwlab") + cstr("") + bytes([0x34, 1, 1]) + cstr(""))
    summary, fields = codec.describe(codec.parse(bind))
    assert summary == "bind_transceiver seq=1 system_id=15550201" and fields["password"] == "iwlab"
    assert codec.describe_raw(pdu(0x99, 5))[0] == "0x00000099 seq=5 (unreadable, 16 bytes)"
    assert codec.describe_raw(b"GET")[0] == "unreadable bytes (3)"


def test_receipt_text_and_parse():
    value = codec.receipt_text("1A2B", "EXPIRED", 0, 0, "a" * 30, err=0, delivered=False)
    parsed = codec.parse_receipt_text(value)
    assert parsed["id"] == "1A2B" and parsed["dlvrd"] == "000" and parsed["stat"] == "EXPIRED"
    assert parsed["text"] == "a" * 20


def test_validity_period():
    assert codec.validity_seconds("") is None
    assert codec.validity_seconds("000000000130000R") == 90
    # absolute, 2030-01-01 00:00:00 at UTC+1 (4 quarter hours)
    assert codec.validity_seconds("300101000000004+", now=1893452400 - 100) == pytest.approx(100)
    with pytest.raises(ValueError):
        codec.validity_seconds("tomorrow")


def test_make_gives_the_same_bytes_as_smpplibs_make_pdu():
    import smpplib.smpp

    class Seq:
        sequence = 0

        def next_sequence(self):
            return 0
    fields = dict(source_addr="15550101", destination_addr="15550201", source_addr_ton=1, esm_class=0x04,
                  short_message=b"id:1 stat:DELIVRD", receipted_message_id="1A2B", message_state=2,
                  sar_msg_ref_num=9, sar_total_segments=2, sar_segment_seqnum=1)
    theirs = smpplib.smpp.make_pdu("deliver_sm", client=Seq(), allow_unknown_opt_params=True, **fields)
    theirs.sequence = 77
    assert codec.encode(codec.make("deliver_sm", 77, **fields)) == theirs.generate()
    assert codec.encode(codec.make("bind_receiver_resp", 3, system_id="SMSC", sc_interface_version=0x34)) == \
        pdu(0x80000001, 3, b"SMSC\0" + tlv(0x0210, b"\x34"))


# -- strict decoding: what smpplib would half-parse is refused with SMPP's own status --------------

def refused(raw: bytes) -> tuple[int, str]:
    with pytest.raises(codec.ParseError) as info:
        codec.parse(raw)
    return info.value.status, info.value.reason


def test_sm_length_longer_than_what_follows_is_invalid_message_length():
    body = submit_body(sm=b"Hi Peter")
    body = body[:-9] + bytes([40]) + b"Hi Peter"       # sm_length 40, 8 octets
    status, reason = refused(pdu(0x04, 4, body))
    assert status == C.SMPP_ESME_RINVMSGLEN and "sm_length 40 but only 8 octets follow" in reason


def test_sm_length_shorter_than_what_follows_is_refused():
    body = submit_body(sm=b"Hi Peter")
    body = body[:-9] + bytes([3]) + b"Hi Peter"        # 3 declared, 8 follow: 5 stray octets
    status, reason = refused(pdu(0x04, 4, body))
    assert status == C.SMPP_ESME_RINVOPTPARSTREAM and "sm_length does not match short_message" in reason


def test_a_body_that_stops_after_priority_flag_is_refused():
    body = submit_body()
    cut = body[: body.index(cstr("15550201")) + len(cstr("15550201")) + 3]   # ... esm_class, protocol_id, priority
    status, reason = refused(pdu(0x04, 4, cut))
    assert status == C.SMPP_ESME_RINVCMDLEN and "stops after priority_flag" in reason


def test_a_tlv_running_past_the_pdu_is_refused():
    status, reason = refused(pdu(0x04, 4, submit_body(tlvs=b"\x04\x24\x00\x10abc")))
    assert status == C.SMPP_ESME_RINVOPTPARSTREAM and "message_payload says 16 octets, only 3 are left" in reason


def test_a_fixed_size_tlv_of_the_wrong_size_is_invalid_parameter_length():
    status, reason = refused(pdu(0x04, 4, submit_body(tlvs=tlv(0x020C, b"\x01"))))   # sar_msg_ref_num is 2
    assert status == C.SMPP_ESME_RINVPARLEN and "sar_msg_ref_num is 1 octets, must be 2" in reason


def test_an_over_long_address_names_the_field_that_is_wrong():
    status, _ = refused(pdu(0x04, 4, submit_body(src="1" * 30)))
    assert status == C.SMPP_ESME_RINVSRCADR
    status, _ = refused(pdu(0x04, 4, submit_body(dst="2" * 30)))
    assert status == C.SMPP_ESME_RINVDSTADR


def test_an_unterminated_string_is_invalid_command_length():
    status, reason = refused(pdu(0x09, 1, b"15550201"))   # bind_transceiver, system_id without NUL
    assert status == C.SMPP_ESME_RINVCMDLEN and "no terminating NUL" in reason


def test_unknown_tlvs_and_header_only_responses_are_accepted():
    assert codec.parse(pdu(0x04, 4, submit_body(tlvs=tlv(0x1400, b"vendor")))).command == "submit_sm"
    assert codec.parse(pdu(0x80000005, 9)).command == "deliver_sm_resp"


def test_error_response_is_the_requests_own_resp_or_none_for_a_nack():
    resp = codec.error_response(0x00000004, 9, C.SMPP_ESME_RINVMSGLEN)
    assert (resp.command, resp.sequence, resp.status) == ("submit_sm_resp", 9, C.SMPP_ESME_RINVMSGLEN)
    assert codec.encode(resp) == struct.pack(">LLLL", 16, 0x80000004, C.SMPP_ESME_RINVMSGLEN, 9)
    assert codec.error_response(0x99, 9, C.SMPP_ESME_RINVCMDLEN) is None          # unknown: generic_nack
    assert codec.error_response(0x80000004, 9, C.SMPP_ESME_RINVCMDLEN) is None    # a response
    assert codec.error_response(0x00000102, 9, C.SMPP_ESME_RINVCMDLEN) is None    # alert_notification


@pytest.mark.parametrize("address, ton, ok", [
    ("15550201", 1, True), ("+15550201", 1, True), ("", 0, True), ("IWLAB", 5, True), ("shortcode", 0, True),
    ("15550201\r\n", 1, False), ("1555\n0201", 0, False), ("peter", 1, False), ("1" * 16, 1, False),
    ("ALPHANUMERIC12", 5, False), ("grüße", 0, False), ("a\x7f", 0, False)])
def test_address_problem(address, ton, ok):
    assert (codec.address_problem(address, ton) is None) == ok


def test_a_receipts_decoded_fields_hold_plain_values_the_trace_can_marshal():
    import marshal
    pdu = codec.make("deliver_sm", 3, source_addr="15550201", destination_addr="15550101", esm_class=0x04,
                     short_message=b"id:1A stat:DELIVRD", receipted_message_id="1A",
                     message_state=codec.MessageState.DELIVERED)
    for each in (pdu, codec.parse(pdu.generate())):
        _, fields = codec.describe(each)
        assert type(fields["message_state"]) is int and fields["message_state"] == 2
        marshal.dumps(fields)   # an IntEnum in them would not go (the trace keeps fields marshalled)
