"""HTTP/1.1 heads as the handshake and the host's API read them."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.proto import http11, server
from firmware.proto.errors import HeadError
from tests.firmware.both import run_both

API_REQUEST = (
    b"POST /api/agents/a1/qr HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"Authorization: Bearer t0k\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n"
)


def test_request_head_gives_method_path_headers_and_content_length():
    request = server.parse_request_head(API_REQUEST)
    assert (request.method, request.path, request.content_length) == (
        "POST",
        "/api/agents/a1/qr",
        27,
    )
    assert request.headers["authorization"] == "Bearer t0k"
    assert request.headers["content-type"] == "application/json"


def test_request_without_body_has_content_length_0():
    assert (
        server.parse_request_head(b"GET /api/devices HTTP/1.1\r\nHost: h\r\n\r\n").content_length
        == 0
    )


def test_repeated_header_is_joined_with_commas():
    head = b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nconnection: Upgrade\r\n\r\n"
    request = server.parse_request_head(head)
    assert request.headers["connection"] == "keep-alive, Upgrade"
    assert http11.has_token(request.headers, "connection", "upgrade")
    assert not http11.has_token(request.headers, "connection", "close")


def test_conflicting_content_lengths_are_refused():
    head = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 500\r\n\r\n"
    with pytest.raises(HeadError, match="Content-Length must be one decimal number"):
        server.parse_request_head(head)


def test_chunked_body_is_refused_with_501():
    with pytest.raises(HeadError, match="send the body with Content-Length") as caught:
        server.parse_request_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert caught.value.status == 501


@pytest.mark.parametrize(
    "head, message, status",
    [
        (b"GET / HTTP/1.0\r\n\r\n", "only HTTP/1.1 is supported", 505),
        (b"GET /\r\n\r\n", "request line must read", 400),
        (b"GET http://h/ HTTP/1.1\r\n\r\n", "must be a path starting with '/'", 400),
        (b"G(T / HTTP/1.1\r\n\r\n", "not a valid token", 400),
        (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", "must read 'Name: value'", 400),
        (b"GET / HTTP/1.1\r\n folded: x\r\n\r\n", "must read 'Name: value'", 400),
        (
            b"GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n",
            "must be ASCII text; found byte 0xc3",
            400,
        ),
        (b"GET / HTTP/1.1\nHost: h\r\n\r\n", "bare CR or LF", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\n", "must end with an empty line", 400),
    ],
)
def test_malformed_request_head_says_what_to_fix(head, message, status):
    with pytest.raises(HeadError, match=message) as caught:
        server.parse_request_head(head)
    assert caught.value.status == status


def test_incomplete_head_waits_for_more_bytes():
    assert http11.head_length(bytearray(API_REQUEST[:-1])) == 0
    assert http11.head_length(bytearray(API_REQUEST + b"{body")) == len(API_REQUEST)


def test_head_over_the_limit_is_refused_with_431_before_it_ends():
    with pytest.raises(HeadError, match="longer than 64 bytes") as caught:
        http11.head_length(bytearray(b"GET / HTTP/1.1\r\nX: " + b"a" * 60), limit=64)
    assert caught.value.status == 431


def test_status_line_with_and_without_reason():
    response = http11.parse_response_head(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    )
    assert (response.status, response.reason, response.headers) == (
        101,
        "Switching Protocols",
        {"upgrade": "websocket"},
    )
    assert http11.parse_response_head(b"HTTP/1.1 404\r\n\r\n").status == 404


def test_malformed_status_line_is_refused():
    with pytest.raises(HeadError, match="status line must read"):
        http11.parse_response_head(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_building_a_head_refuses_header_injection():
    with pytest.raises(HeadError, match="cannot be sent"):
        http11.request_head("GET", "/", [("X-Note", "a\r\nEvil: 1")])


def test_response_head_uses_the_standard_reason_phrase():
    assert server.response_head(413, [("Content-Length", 0)]) == (
        b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n"
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_heads_raise_nothing_but_head_errors(data):
    for parse in (server.parse_request_head, http11.parse_response_head):
        try:
            parse(data + b"\r\n\r\n")
        except HeadError:
            pass


def test_heads_parse_the_same_on_micropython(unix_port):
    code = f"""
from firmware.proto import server
from firmware.proto.errors import HeadError
heads = [
    {API_REQUEST!r},
    b"GET /ws HTTP/1.1\\r\\nUpgrade: websocket\\r\\nConnection: keep-alive, Upgrade\\r\\n\\r\\n",
    b"GET / HTTP/1.1\\r\\nHost: caf\\xc3\\xa9\\r\\n\\r\\n",
    b"GET / HTTP/1.0\\r\\n\\r\\n",
    b"POST / HTTP/1.1\\r\\nContent-Length: 5\\r\\nContent-Length: 6\\r\\n\\r\\n",
]
for head in heads:
    try:
        r = server.parse_request_head(head)
        print(r.method, r.path, r.content_length, sorted(r.headers.items()))
    except HeadError as exc:
        print("HeadError", exc.status, exc)
print(server.response_head(426, [("Sec-WebSocket-Version", 13)]))
"""
    on_cpython, on_micropython = run_both(unix_port, code)
    assert on_micropython == on_cpython
    assert "POST /api/agents/a1/qr 27" in on_cpython
