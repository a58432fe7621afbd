"""Byte-level tests of the SDP codec for MSRP sessions (backends/sdp.py): RFC 4566, RFC 4975 8, RFC 3264."""
from __future__ import annotations

import pytest

from iwlab.backends.protocols.sdp import (
    MsrpSdp,
    SdpError,
    answer,
    msrp_path,
    offer,
    parse_sdp,
)

OFFER = (b"v=0\r\n"
         b"o=- 2890844526 1 IN IP4 127.0.0.1\r\n"
         b"s=-\r\n"
         b"c=IN IP4 127.0.0.1\r\n"
         b"t=0 0\r\n"
         b"m=message 7394 TCP/MSRP *\r\n"
         b"a=accept-types:message/cpim text/plain\r\n"
         b"a=accept-wrapped-types:text/plain message/imdn+xml\r\n"
         b"a=path:msrp://127.0.0.1:7394/mary7394;tcp\r\n"
         b"a=setup:active\r\n")
ANSWER = (b"v=0\r\n"
          b"o=- 1122334455 1 IN IP4 127.0.0.1\r\n"
          b"s=-\r\n"
          b"c=IN IP4 127.0.0.1\r\n"
          b"t=0 0\r\n"
          b"m=message 8493 TCP/MSRP *\r\n"
          b"a=accept-types:message/cpim\r\n"
          b"a=accept-wrapped-types:text/plain message/imdn+xml\r\n"
          b"a=path:msrp://127.0.0.1:8493/iwf8493;tcp\r\n"
          b"a=setup:passive\r\n")

# RFC 4975-style, LF-only, with lines and attributes an MSRP endpoint does not use, audio first.
FOREIGN = (b"v=0\n"
           b"o=alice 2890844526 2890844527 IN IP4 alicepc.example.com\n"
           b"s=Chat with Bob\n"
           b"i=session information\n"
           b"c=IN IP4 192.0.2.10\n"
           b"b=AS:64\n"
           b"t=0 0\n"
           b"a=tool:someclient 1.0\n"
           b"m=audio 49170 RTP/AVP 0\n"
           b"a=rtpmap:0 PCMU/8000\n"
           b"a=path:msrp://wrong.example.com:1/audio;tcp\n"
           b"m=message 7777 TCP/MSRP *\n"
           b"c=IN IP4 192.0.2.20\n"
           b"a=accept-types:message/cpim text/plain text/html\n"
           b"a=path:msrp://relay.example.com:2855/r1;tcp msrp://alicepc.example.com:7777/iau39soe2843z;tcp\n"
           b"a=sendrecv\n"
           b"a=connection:new\n"
           b"a=setup:actpass\n"
           b"m=message 9999 TCP/MSRP *\n"
           b"a=accept-types:text/plain\n"
           b"a=path:msrp://second.example.com:9999/s2;tcp\n")


def make_offer() -> MsrpSdp:
    sdp = offer(host="127.0.0.1", port=7394, session_id_path="mary7394")
    sdp.session_id = 2890844526
    return sdp


def test_offer_is_byte_exact_with_crlf():
    sdp = make_offer()
    assert sdp.setup == "active" and sdp.path == ["msrp://127.0.0.1:7394/mary7394;tcp"]
    assert sdp.to_bytes() == OFFER
    assert b"\n" not in OFFER.replace(b"\r\n", b"")


def test_offer_parses_back_to_itself():
    assert parse_sdp(OFFER) == make_offer()
    assert parse_sdp(OFFER).to_bytes() == OFFER


def test_offer_answer_round_trip_byte_exact():
    received = parse_sdp(make_offer().to_bytes())
    ans = answer(received, host="127.0.0.1", port=8493, path="msrp://127.0.0.1:8493/iwf8493;tcp",
                 accept_types=("message/cpim",))
    ans.session_id = 1122334455
    assert ans.to_bytes() == ANSWER
    back = parse_sdp(ANSWER)
    assert back == ans
    assert back.setup == "passive" and back.connect_address() == ("127.0.0.1", 8493)


def test_default_answer_keeps_both_types_and_the_imdn_wrapper():
    ans = answer(parse_sdp(OFFER), host="127.0.0.1", port=1, path="msrp://127.0.0.1:1/x;tcp")
    assert ans.accept_types == ["message/cpim", "text/plain"]
    assert ans.accept_wrapped_types == ["text/plain", "message/imdn+xml"]


def test_lf_only_extra_lines_and_first_message_stream():
    sdp = parse_sdp(FOREIGN)
    assert sdp.host == "192.0.2.20"   # media-level c= wins over the session-level one
    assert sdp.port == 7777
    assert sdp.path == ["msrp://relay.example.com:2855/r1;tcp", "msrp://alicepc.example.com:7777/iau39soe2843z;tcp"]
    assert sdp.accept_types == ["message/cpim", "text/plain", "text/html"]
    assert sdp.accept_wrapped_types == []
    assert sdp.setup == "actpass"
    assert (sdp.origin_user, sdp.session_id, sdp.version, sdp.session_name) == \
        ("alice", 2890844526, 2890844527, "Chat with Bob")
    assert sdp.extra == ["sendrecv", "connection:new"]
    assert sdp.connect_address() == ("relay.example.com", 2855)   # the first hop
    wire = sdp.to_bytes()
    assert b"a=sendrecv\r\na=connection:new\r\n" in wire and parse_sdp(wire) == sdp


def test_session_level_c_and_setup_apply_to_the_stream():
    wire = OFFER.replace(b"a=setup:active\r\n", b"").replace(b"t=0 0\r\n", b"t=0 0\r\na=setup:passive\r\n")
    sdp = parse_sdp(wire)
    assert sdp.host == "127.0.0.1" and sdp.setup == "passive"


def test_sdp_in_the_sip_codec_tests_parses():
    sdp = parse_sdp(b"v=0\r\no=bob 2890844527 2890844527 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                    b"m=message 7394 TCP/MSRP *\r\na=accept-types:message/cpim\r\n"
                    b"a=path:msrp://127.0.0.1:7394/abc;tcp\r\n")
    assert (sdp.port, sdp.setup, sdp.accept_types) == (7394, None, ["message/cpim"])


@pytest.mark.parametrize("old, new, reason", [
    (b"a=path:msrp://127.0.0.1:7394/mary7394;tcp\r\n", b"", "no a=path"),
    (b"a=path:msrp://127.0.0.1:7394/mary7394;tcp", b"a=path:", "no a=path"),
    (b"a=path:msrp://127.0.0.1:7394/mary7394;tcp", b"a=path:sip:mary@cpm-a.lab", "a=path: malformed MSRP URI"),
    (b"m=message 7394 TCP/MSRP *", b"m=audio 7394 RTP/AVP 0", "no m=message"),
    (b"m=message 7394 TCP/MSRP *", b"m=message 7394 UDP/MSRP *", "m=message transport 'UDP/MSRP'"),
    (b"m=message 7394 TCP/MSRP *", b"m=message 0 TCP/MSRP *", "bad m=message port"),
    (b"m=message 7394 TCP/MSRP *", b"m=message 70000 TCP/MSRP *", "bad m=message port"),
    (b"m=message 7394 TCP/MSRP *", b"m=message x TCP/MSRP *", "bad m=message port"),
    (b"m=message 7394 TCP/MSRP *", b"m=message 7394", "malformed m= line"),
    (b"a=accept-types:message/cpim text/plain\r\n", b"", "no a=accept-types"),
    (b"c=IN IP4 127.0.0.1\r\n", b"", "no usable c= line"),
    (b"c=IN IP4 127.0.0.1", b"c=IN ATM 127.0.0.1", "no usable c= line"),
])
def test_what_an_msrp_endpoint_cannot_use(old, new, reason):
    assert old in OFFER
    with pytest.raises(SdpError) as info:
        parse_sdp(OFFER.replace(old, new))
    assert info.value.reason.startswith(reason) and info.value.status == 488


def test_audio_only_sdp_is_refused():
    audio = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    with pytest.raises(SdpError, match="no m=message"):
        parse_sdp(audio)
    with pytest.raises(SdpError, match="no m=message"):
        parse_sdp(b"")


def test_tls_transport_and_ipv6():
    sdp = MsrpSdp(host="2001:db8::7", port=2855, path=[msrp_path("2001:db8::7", 2855, "s1", tls=True)],
                  accept_types=["text/plain"], session_id=5, version=6, transport="TCP/TLS/MSRP")
    wire = sdp.to_bytes()
    assert b"o=- 5 6 IN IP6 2001:db8::7\r\ns=-\r\nc=IN IP6 2001:db8::7\r\n" in wire
    assert b"m=message 2855 TCP/TLS/MSRP *\r\n" in wire and b"a=path:msrps://[2001:db8::7]:2855/s1;tcp\r\n" in wire
    assert parse_sdp(wire) == sdp
    assert sdp.connect_address() == ("2001:db8::7", 2855)
    ans = answer(sdp, host="::1", port=9, path=msrp_path("::1", 9, "a", tls=True))
    assert ans.transport == "TCP/TLS/MSRP" and ans.setup is None   # no setup offered: RFC 4975 rule


@pytest.mark.parametrize("offered, expected", [("active", "passive"), ("actpass", "passive"), ("passive", "active"),
                                               (None, None)])
def test_setup_in_the_answer(offered, expected):
    o = make_offer()
    o.setup = offered
    assert answer(o, host="h", port=1, path="msrp://h:1/a;tcp").setup == expected


def test_unsupported_setup_is_refused():
    o = make_offer()
    o.setup = "holdconn"
    with pytest.raises(SdpError, match="setup"):
        answer(o, host="h", port=1, path="msrp://h:1/a;tcp")


@pytest.mark.parametrize("offered, ours, common", [
    (["message/cpim", "text/plain"], ["text/plain"], ["text/plain"]),
    (["message/cpim", "text/plain"], ["text/plain", "message/cpim"], ["text/plain", "message/cpim"]),
    (["MESSAGE/CPIM"], ["message/cpim"], ["message/cpim"]),
    (["*"], ["message/cpim", "text/plain"], ["message/cpim", "text/plain"]),
    (["text/plain", "message/cpim"], ["*"], ["text/plain", "message/cpim"]),
    (["text/*"], ["message/cpim", "text/plain"], ["text/plain"]),
    (["text/plain;charset=utf-8"], ["text/plain"], ["text/plain"]),
])
def test_accept_types_intersection(offered, ours, common):
    o = make_offer()
    o.accept_types = offered
    assert answer(o, host="h", port=1, path="msrp://h:1/a;tcp", accept_types=ours).accept_types == common


def test_nothing_in_common_is_a_488():
    o = make_offer()
    o.accept_types = ["application/vnd.gsma.rcs-ft-http+xml"]
    with pytest.raises(SdpError) as info:
        answer(o, host="h", port=1, path="msrp://h:1/a;tcp")
    assert info.value.status == 488 and "in common" in info.value.reason


def test_wrapped_types_intersection():
    o = make_offer()
    o.accept_wrapped_types = ["message/imdn+xml"]
    assert answer(o, host="h", port=1, path="msrp://h:1/a;tcp").accept_wrapped_types == ["message/imdn+xml"]
    o.accept_wrapped_types = []
    assert answer(o, host="h", port=1, path="msrp://h:1/a;tcp").accept_wrapped_types == []


def test_to_bytes_refuses_line_injection():
    sdp = make_offer()
    sdp.session_name = "x\r\nm=audio 1 RTP/AVP 0"
    with pytest.raises(ValueError):
        sdp.to_bytes()
