"""Properties of multipart.py, resource_lists.py and recipient_list.py: what the lab builds parses back to
the same thing; arbitrary and mutated octets raise nothing but each codec's own error (with a SIP status)."""
from hypothesis import given, settings
from hypothesis import strategies as st

from iwlab.backends.protocols.multipart import MultipartError, Part, build_multipart, parse_multipart
from iwlab.backends.protocols.recipient_list import RecipientListError, build_body, parse_body
from iwlab.backends.protocols.resource_lists import (
    COPY_CONTROLS,
    Entry,
    ResourceListError,
    build_resource_list,
    parse_resource_list,
)
from tests.helpers.mutation import mutations
from tests.unit.protocols.test_recipient_list import BODY, CT, LIST, SDP

SIP_STATUSES = {400, 403, 413, 415}
uri_chars = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789+-._@;=%"), min_size=1, max_size=30)
uris = st.builds(lambda scheme, rest: f"{scheme}:{rest}", st.sampled_from(["sip", "sips", "tel"]), uri_chars)
# What a display name may hold: any printable text, single spaces (whitespace is folded on reading).
names = st.text(st.characters(exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), max_size=20) | st.just("")
entry_lists = st.lists(st.builds(Entry, uris, names, st.sampled_from(COPY_CONTROLS)), min_size=1, max_size=6,
                       unique_by=lambda e: e.uri.lower())
header_value = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789<>@.-/=;"), min_size=1, max_size=20)
parts = st.lists(st.builds(Part, st.sampled_from(["application/sdp", "text/plain;charset=utf-8",
                                                  "application/resource-lists+xml"]),
                           st.binary(max_size=200), st.sampled_from(["", "recipient-list", "render;handling=optional"]),
                           st.lists(st.tuples(st.sampled_from(["Content-ID", "X-Lab"]), header_value),
                                    max_size=2).map(tuple)), min_size=1, max_size=4)


@settings(max_examples=60)
@given(entries=entry_lists)
def test_resource_lists_round_trip(entries):
    assert parse_resource_list(build_resource_list(entries)) == entries


@settings(max_examples=60)
@given(built=parts)
def test_multipart_round_trips(built):
    content_type, body = build_multipart(built)
    assert parse_multipart(content_type, body) == built


@settings(max_examples=40)
@given(entries=entry_lists, sdp=st.binary(min_size=1, max_size=100))
def test_recipient_list_bodies_round_trip(entries, sdp):
    parsed = parse_body(*build_body(sdp, entries))
    assert parsed.sdp == sdp and parsed.recipients == entries


@settings(max_examples=200)
@given(data=mutations([LIST], [b"<!DOCTYPE", b"<entry uri='sip:a@b'/>", b"&amp;", b"\xff", b"<list>", b">"]))
def test_mutated_resource_lists_raise_only_their_own_error(data):
    try:
        entries = parse_resource_list(data)
    except ResourceListError as exc:
        assert exc.status in SIP_STATUSES
        return
    assert entries and all(e.uri for e in entries)


@settings(max_examples=200)
@given(data=mutations([BODY], [b"--boundary1\r\n", b"--boundary1--", b"\r\n\r\n", b"Content-Type: ",
                               b"Content-Disposition: recipient-list\r\n", b"\x00"]))
def test_mutated_invite_bodies_raise_only_their_own_error(data):
    try:
        parsed = parse_body(CT, data)
    except RecipientListError as exc:
        assert exc.status in SIP_STATUSES
        return
    assert parsed.recipients


@settings(max_examples=100)
@given(data=st.binary(max_size=300), content_type=st.sampled_from([CT, "multipart/mixed; boundary=\"b\"",
                                                                     "multipart/mixed", "text/plain"]))
def test_arbitrary_octets_raise_only_multipart_error(data, content_type):
    try:
        parse_multipart(content_type, data)
    except MultipartError as exc:
        assert exc.status in SIP_STATUSES


def test_the_seeds_are_valid():
    assert parse_body(CT, BODY).sdp == SDP
