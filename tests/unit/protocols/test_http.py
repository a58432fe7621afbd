"""The content server's HTTP/1.1 codec, with byte strings alone."""
import pytest

from iwlab.backends.protocols import http
from iwlab.backends.protocols.http import HttpError, parse_request_head


def test_a_get_with_host_parses():
    request = parse_request_head(b"GET /c/abc?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert (request.method, request.path, request.version) == ("GET", "/c/abc", "HTTP/1.1")
    assert request.header("host") == "127.0.0.1" and not request.keep_alive


@pytest.mark.parametrize("head, status", [
    (b"GET /c/a HTTP/1.1\r\n\r\n", 400),                                  # no Host
    (b"GET /c/a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET http://x/c/a HTTP/1.1\r\nHost: a\r\n\r\n", 400),               # only origin-form
    (b"GET /c/a HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"GET  /c/a HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET /c/a HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
    (b"GET /c/\xff HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"POST /c/a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", 413),
    (b"POST /c/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 431),
])
def test_what_is_not_served_says_why(head, status):
    with pytest.raises(HttpError) as refused:
        parse_request_head(head)
    assert refused.value.status == status


def test_a_response_carries_its_length_and_a_head_leaves_the_body_out():
    data = http.response(200, body=b"\x89PNG", content_type="image/png")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 4\r\n" in data and data.endswith(b"\x89PNG")
    head = http.response(200, body=b"\x89PNG", content_type="image/png", head_only=True)
    assert b"Content-Length: 4\r\n" in head and head.endswith(b"\r\n\r\n")
    summary, fields = http.describe_response(data)
    assert summary == "200 OK image/png (4 B)" and fields["body_size"] == 4
