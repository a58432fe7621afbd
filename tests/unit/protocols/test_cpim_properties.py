"""Properties of backends.protocols.cpim: CpimMessage.to_bytes -> parse_cpim and build_imdn_xml ->
parse_imdn_xml give back what was built; arbitrary and mutated octets raise nothing but CpimError,
and whatever parses can be shown (``text``) without raising."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iwlab.backends.protocols.cpim import (
    DELIVERY_STATUSES,
    DISPLAY_STATUSES,
    CpimError,
    CpimMessage,
    Imdn,
    build_imdn_xml,
    imdn_message,
    parse_cpim,
    parse_imdn_xml,
    uri_of,
)
from tests.helpers.mutation import mutations

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
token = st.text(st.sampled_from(TOKEN_CHARS), min_size=1, max_size=12)
# A header value: one line of any text (CR and LF end lines; nothing else does), no surrounding blanks.
line = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"), max_size=40) \
    .map(lambda v: v.strip(" \t"))
address = st.builds(lambda display, u: f'"{display}" <{u}>' if display else f"<{u}>",
                    st.text(st.characters(exclude_categories=("Cs",), exclude_characters='\r\n"\\'), max_size=15),
                    st.sampled_from(["sip:mary@cpm-a.lab", "tel:+15550101", "sip:+15550201@cpm-b.lab;user=phone"]))
special = {"from", "to", "datetime", "ns", "imdn.message-id", "imdn.disposition-notification"}
extra = st.lists(st.tuples(token.filter(lambda n: n.lower() not in special), line), max_size=3)
content_extra = st.lists(st.tuples(token.filter(lambda n: n.lower() not in ("content-type", "content-length")),
                                   line), max_size=2)
messages = st.builds(
    CpimMessage, sender=address, recipient=address, body=st.binary(max_size=300),
    content_type=st.sampled_from(["text/plain; charset=utf-8", "text/plain", "message/imdn+xml",
                                  'text/plain; charset="iso-8859-1"', "application/octet-stream"]) | line,
    message_id=line, datetime=line,
    disposition=st.lists(token, max_size=3).map(tuple), extra_headers=extra, content_headers=content_extra)


@settings(max_examples=60)
@given(msg=messages)
def test_cpim_round_trips(msg):
    parsed = parse_cpim(msg.to_bytes())
    assert parsed == msg
    assert isinstance(parsed.text, str) and uri_of(parsed.sender)
    assert parsed.to_bytes() == msg.to_bytes()


@settings(max_examples=25)
@given(msg=messages, where=st.sampled_from(["sender", "recipient", "message_id", "datetime", "content_type",
                                            "extra", "content"]),
       breaker=st.sampled_from(["\r\n", "\n", "\r", "\r\nX-Injected: 1"]))
def test_a_line_break_inside_a_header_value_is_refused(msg, where, breaker):
    if where in ("extra", "content"):
        headers = msg.extra_headers if where == "extra" else msg.content_headers
        headers.append(("X-Note", "a" + breaker + "b"))
    else:
        setattr(msg, where, getattr(msg, where) + breaker + "b")
    with pytest.raises(ValueError):
        msg.to_bytes()


statuses = st.one_of(st.tuples(st.just("delivery"), st.sampled_from(DELIVERY_STATUSES)),
                     st.tuples(st.just("display"), st.sampled_from(DISPLAY_STATUSES)))
# XML 1.0 characters only (no C0 controls but tab/LF/CR, no U+FFFE/FFFF); no surrounding blanks (parse strips).
xml_text = st.text(st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="\ufffe\uffff"),
                   min_size=1, max_size=30).map(str.strip).filter(bool)


@settings(max_examples=40)
@given(kind_status=statuses, message_id=xml_text, datetime=st.just("") | xml_text, recipient=st.none() | xml_text)
def test_imdn_round_trips_inside_cpim(kind_status, message_id, datetime, recipient):
    imdn = Imdn(message_id, *kind_status, datetime, recipient)
    assert parse_imdn_xml(build_imdn_xml(imdn)) == imdn
    carried = parse_cpim(imdn_message(imdn, sender="<sip:a@a.lab>", recipient="<sip:b@b.lab>").to_bytes())
    assert carried.is_imdn and parse_imdn_xml(carried.body) == imdn


@settings(max_examples=40)
@given(kind_status=statuses, message_id=st.text(st.characters(exclude_characters="\r"), min_size=1, max_size=20),
       datetime=st.text(max_size=10))
def test_imdn_of_any_text_round_trips_or_is_refused(kind_status, message_id, datetime):
    """Message ids come from peers' CPIM headers: whatever XML cannot carry is refused, not sent broken."""
    imdn = Imdn(message_id, *kind_status, datetime)
    try:
        body = build_imdn_xml(imdn)
    except ValueError:
        return
    if message_id.strip():
        parsed = parse_imdn_xml(body)
        assert (parsed.message_id, parsed.datetime) == (message_id.strip(), datetime.replace("\r", "\n").strip())


# -- hostile input -------------------------------------------------------------------------

def check_cpim(raw: bytes) -> None:
    try:
        msg = parse_cpim(raw)
    except CpimError:
        return
    assert isinstance(msg.text, str) and msg.sender and msg.recipient
    uri_of(msg.sender)
    if msg.is_imdn:
        check_imdn(msg.body)


def check_imdn(raw: bytes) -> None:
    try:
        imdn = parse_imdn_xml(raw)
    except CpimError:
        return
    assert imdn.message_id and imdn.kind in ("delivery", "display")


VALID = [
    CpimMessage('"Mary" <sip:mary@cpm-a.lab>', "<tel:+15550201>", "Grüße €".encode(), message_id="m1",
                datetime="2026-01-01T12:00:00.000Z", extra_headers=[("Subject", "hi")]).to_bytes(),
    imdn_message(Imdn("m1", "delivery", "delivered", "2026-01-01T12:00:00.000Z", "tel:+15550201"),
                 sender="<tel:+15550201>", recipient="<sip:mary@cpm-a.lab>").to_bytes(),
]


SPECIALS = [b"\r\n", b"\n", b"\r\n\r\n", b":", b" ", b"<", b"&", b"\xe2\x80\xa8",
    b"\xc2\x85", b"\0", b"Content-Length: 99999\r\n", b"<!--",
    b"<!DOCTYPE x [<!ENTITY a 'aaaa'>]>", b"&a;", b"charset=idna;",
    b'<?xml version="1.0" encoding="TTF-8"?>']   # octets the grammar cares about


def mutated():
    return mutations(VALID, SPECIALS, max_rounds=5)


@settings(max_examples=120)
@given(st.binary(max_size=200) | mutated())
def test_cpim_parsing_raises_only_cpim_error(raw):
    check_cpim(raw)


@settings(max_examples=120)
@given(st.binary(max_size=200) | mutated() | st.text(max_size=80).map(lambda t: f"<imdn>{t}</imdn>".encode()))
def test_imdn_parsing_raises_only_cpim_error(raw):
    check_imdn(raw)


@settings(max_examples=40)
@given(charset=st.sampled_from(["idna", "punycode", "undefined", "utf-16", "rot13", "base64", "x-unknown",
                                "utf-8-sig", "utf_32"]) | token, body=st.binary(max_size=20))
def test_text_never_raises_whatever_the_charset(charset, body):
    assert isinstance(CpimMessage("a", "b", body, content_type=f"text/plain; charset={charset}").text, str)


# -- regressions found by the properties above ---------------------------------------------

def test_a_unicode_line_separator_in_a_value_is_no_line_break():
    """Found by test_cpim_round_trips: str.splitlines() cut the header block at U+2028 (and U+0085, FF, ...),
    so a display name holding one made the message unparseable ("bad CPIM header line")."""
    for odd in ("\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c"):
        msg = CpimMessage(f'"Al{odd}ice" <sip:alice@cpm-a.lab>', "<sip:bob@cpm-b.lab>", b"Hi",
                          message_id="m1", datetime="now")
        assert parse_cpim(msg.to_bytes()).sender == f'"Al{odd}ice" <sip:alice@cpm-a.lab>'


def test_a_charset_whose_codec_refuses_replacement_falls_back_to_utf8():
    """Found by test_text_never_raises_whatever_the_charset: charset=idna raised UnicodeError from .text
    ("Unsupported error handling replace"), and so did SIP describe() on such a MESSAGE."""
    assert CpimMessage("a", "b", "é".encode(), content_type="text/plain; charset=idna").text == "é"
    assert CpimMessage("a", "b", b"\xff", content_type="text/plain; charset=punycode").text == "\ufffd"


def test_to_bytes_refuses_a_header_value_with_a_line_break():
    """Found by test_a_line_break_inside_a_header_value_is_refused: a CR/LF in a value wrote extra header
    lines (or ended the block early); SIP, SDP and MSRP builders already refuse them."""
    with pytest.raises(ValueError, match="CR/LF"):
        CpimMessage("<sip:a@a.lab>\r\nimdn.Message-ID: forged", "<sip:b@b.lab>", b"x").to_bytes()


def test_only_blanks_around_a_value_are_dropped():
    """Found by test_cpim_round_trips: value.strip() also ate a value's own leading or trailing NBSP."""
    msg = CpimMessage("<sip:a@a.lab>", "<sip:b@b.lab>", b"x", message_id="m1", datetime="\xa0now\u3000",
                      extra_headers=[("Subject", "\x0chi\xa0")])
    parsed = parse_cpim(msg.to_bytes().replace(b"DateTime: ", b"DateTime: \t "))
    assert (parsed.datetime, parsed.extra_headers) == ("\xa0now\u3000", [("Subject", "\x0chi\xa0")])


def test_an_imdn_xml_cannot_carry_is_refused():
    """Found by test_imdn_of_any_text_round_trips_or_is_refused: a Message-ID with a control character
    (any octet but CR/LF may stand in a CPIM header) gave an IMDN body that was not XML."""
    for message_id in ("a\x01b", "a\x00", "\ufffe", "\ud800"):
        with pytest.raises(ValueError, match="XML"):
            build_imdn_xml(Imdn(message_id, "delivery", "delivered", "now"))
    with pytest.raises(ValueError, match="XML name"):
        build_imdn_xml(Imdn("m1", "delivery", "not delivered", "now"))
    assert parse_imdn_xml(build_imdn_xml(Imdn("m\t1", "display", "displayed", "now"))).message_id == "m\t1"


def test_an_imdn_with_an_unknown_xml_encoding_is_a_cpim_error():
    """Found by a wider randomized run of test_cpim_parsing_raises_only_cpim_error: an XML declaration naming
    an unknown encoding (one flipped bit: "UTF-8" -> "TTF-8") raised LookupError from ElementTree."""
    body = build_imdn_xml(Imdn("m1", "delivery", "delivered", "now")).replace(b"UTF-8", b"TTF-8")
    with pytest.raises(CpimError, match="not XML"):
        parse_imdn_xml(body)
