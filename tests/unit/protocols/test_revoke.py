"""The RCC.07 revoke codec (backends.protocols.revoke), bytes only; properties: what is built parses back
the same, and arbitrary or mutated octets raise nothing but RevokeError."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iwlab.backends.protocols.cpim import parse_cpim
from iwlab.backends.protocols.revoke import (
    CONTENT_TYPE,
    RESULTS,
    RevokeError,
    RevokeRequest,
    RevokeResponse,
    build_revoke,
    is_revoke,
    parse_revoke,
    revoke_message,
)
from tests.helpers.mutation import mutations

REQUEST = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
           b'<revoke xmlns="urn:gsma:params:xml:ns:rcs:rcs:rcsrevoke"><Message-ID>k3l1</Message-ID></revoke>')
RESPONSE = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
            b'<revoke-response xmlns="urn:gsma:params:xml:ns:rcs:rcs:rcsrevoke">\n'
            b'  <Message-ID> k3l1 </Message-ID>\n  <result>failed</result>\n</revoke-response>')


def test_the_request_on_the_wire():
    assert build_revoke(RevokeRequest("k3l1")) == REQUEST
    assert parse_revoke(REQUEST) == RevokeRequest("k3l1")


def test_a_response_as_a_client_writes_it():
    response = parse_revoke(RESPONSE)
    assert response == RevokeResponse("k3l1", "failed") and not response.revoked
    assert parse_revoke(build_revoke(RevokeResponse("k3l1", "success"))).revoked


def test_it_travels_in_cpim_and_asks_for_no_notification():
    envelope = parse_cpim(revoke_message(RevokeRequest("k3l1"), sender="<sip:mary@cpm-a.lab>",
                                         recipient="<tel:+15550201>").to_bytes())
    assert is_revoke(envelope.content_type) and envelope.content_type == CONTENT_TYPE
    assert envelope.disposition == () and parse_revoke(envelope.body) == RevokeRequest("k3l1")
    assert is_revoke("Application/Vnd.GSMA.rcsrevoke+xml; charset=utf-8") and not is_revoke("message/imdn+xml")


@pytest.mark.parametrize("body, why", [
    (b"<revoke><Message-ID>a</Message-ID></revoke>", "root element"),                   # no namespace
    (REQUEST.replace(b"<Message-ID>k3l1</Message-ID>", b""), "exactly one <Message-ID>"),
    (REQUEST.replace(b"k3l1</Message-ID>", b"a</Message-ID><Message-ID>b</Message-ID>"), "exactly one"),
    (REQUEST.replace(b"k3l1", b""), "unusable"),
    (RESPONSE.replace(b"failed", b"maybe"), "not one of"),
    (RESPONSE.replace(b"<result>failed</result>", b""), "exactly one <result>"),
    (b"<imdn xmlns='urn:ietf:params:xml:ns:imdn'/>", "root element"),
    (b"not xml", "not XML"),
    (b'<?xml version="1.0" encoding="TTF-8"?><revoke/>', "not XML"),
])
def test_what_is_no_revoke_is_refused_with_a_reason(body, why):
    with pytest.raises(RevokeError, match=why):
        parse_revoke(body)


@pytest.mark.parametrize("revoke", [RevokeRequest(""), RevokeRequest("a\x00b"), RevokeRequest("x" * 300),
                                    RevokeResponse("a", "ok")])
def test_what_cannot_be_carried_is_not_built(revoke):
    with pytest.raises(ValueError):
        build_revoke(revoke)


ids = st.text(st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="\ufffe\uffff"),
              min_size=1, max_size=40).map(str.strip).filter(bool)
revokes = st.builds(RevokeRequest, ids) | st.builds(RevokeResponse, ids, st.sampled_from(RESULTS))


@settings(max_examples=60)
@given(revoke=revokes)
def test_revokes_round_trip(revoke):
    assert parse_revoke(build_revoke(revoke)) == revoke


SPECIALS = [b"<", b">", b"&", b"<!--", b"<!DOCTYPE x [<!ENTITY a 'aaaa'>]>", b"&a;", b"\0", b"\xff",
            b"</Message-ID>", b"<result>success</result>", b'xmlns="urn:x"']


@settings(max_examples=150)
@given(st.binary(max_size=200) | mutations([REQUEST, RESPONSE], SPECIALS))
def test_parsing_raises_only_revoke_error(raw):
    try:
        revoke = parse_revoke(raw)
    except RevokeError:
        return
    assert revoke.message_id and parse_revoke(build_revoke(revoke)) == revoke
