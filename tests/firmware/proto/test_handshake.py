"""The opening handshake (RFC 6455 §4), both roles, on CPython and the Unix port."""

import base64

import pytest

from firmware.proto import handshake, websocket
from firmware.proto.errors import HandshakeError, HeadError
from firmware.proto.server import ServerProtocol, parse_request_head
from tests.firmware.both import run_both
from tests.firmware.proto.driver import REQUEST

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def answer(proto, status="101 Switching Protocols", accept=None, extra=b""):
    accept = handshake.accept_key(proto.key) if accept is None else accept
    return (
        (
            f"HTTP/1.1 {status}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n"
        ).encode()
        + extra
        + b"\r\n"
    )


def test_accept_key_matches_the_rfc_example():
    assert handshake.accept_key(RFC_KEY) == RFC_ACCEPT


def test_client_request_is_byte_for_byte_the_upgrade_request():
    assert handshake.client_request("10.0.0.5:8080", "/ws/device", RFC_KEY, [("X-Fw", "1.2")]) == (
        b"GET /ws/device HTTP/1.1\r\nHost: 10.0.0.5:8080\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nX-Fw: 1.2\r\n\r\n"
    )


def test_each_client_uses_a_fresh_16_byte_key():
    keys = {websocket.ClientProtocol("h").key for _ in range(8)}
    assert len(keys) == 8
    assert all(len(base64.b64decode(key, validate=True)) == 16 for key in keys)


def test_client_opens_on_a_valid_101_and_reads_frames_sent_with_it():
    client = websocket.ClientProtocol("h", "/ws")
    assert client.data_to_send()[0].startswith(b"GET /ws HTTP/1.1\r\n")
    client.receive_data(answer(client) + bytes.fromhex("810548656c6c6f"))
    response, text = client.events_received()
    assert (response.status, text, client.state) == (101, "Hello", websocket.OPEN)


def test_server_answering_a_wrong_accept_fails_the_handshake():
    client = websocket.ClientProtocol("h", "/ws")
    client.data_to_send()
    with pytest.raises(
        HandshakeError, match="Sec-WebSocket-Accept 's3pPLMBiTxaQ9kYGzzhZRbK\\+xOo='"
    ):
        client.receive_data(answer(client, accept=RFC_ACCEPT))
    assert client.state == websocket.CLOSED
    assert client.data_to_send() == []


def test_server_answering_403_fails_the_handshake_with_the_status():
    client = websocket.ClientProtocol("h", "/ws")
    with pytest.raises(HandshakeError, match="answered 403 Forbidden instead of 101"):
        client.receive_data(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")


def test_server_without_upgrade_header_fails_the_handshake():
    client = websocket.ClientProtocol("h", "/ws")
    with pytest.raises(HandshakeError, match="did not send 'Upgrade: websocket'"):
        client.receive_data(
            f"HTTP/1.1 101 OK\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {handshake.accept_key(client.key)}\r\n\r\n".encode()
        )


def test_server_choosing_an_extension_fails_the_handshake():
    client = websocket.ClientProtocol("h", "/ws")
    with pytest.raises(HandshakeError, match="did not offer"):
        client.receive_data(
            answer(client, extra=b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
        )


def test_non_http_answer_fails_the_handshake():
    client = websocket.ClientProtocol("h", "/ws")
    with pytest.raises(HandshakeError, match="did not answer in HTTP"):
        client.receive_data(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")


def test_connection_closed_during_the_handshake_fails_it():
    client = websocket.ClientProtocol("h", "/ws")
    client.receive_data(b"HTTP/1.1 101 Switching")
    with pytest.raises(HandshakeError, match="closed during the opening handshake"):
        client.receive_eof()


def test_server_reports_the_request_then_accepts_it_with_the_rfc_accept():
    server = ServerProtocol()
    server.receive_data(REQUEST)
    (request,) = server.events_received()
    assert (request.method, request.path) == ("GET", "/ws")
    server.accept(request)
    assert server.data_to_send() == [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + RFC_ACCEPT.encode() + b"\r\n\r\n"
    ]
    assert server.state == websocket.OPEN


def test_server_accepts_a_request_whose_head_it_did_not_read_itself():
    # The host reads the head to route by path, then hands the connection over.
    server = ServerProtocol()
    server.accept(parse_request_head(REQUEST))
    server.data_to_send()
    server.receive_data(bytes.fromhex("818537fa213d7f9f4d5158"))
    assert server.events_received() == ["Hello"]


@pytest.mark.parametrize(
    "change, status, message",
    [
        (
            (b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"),
            426,
            "Sec-WebSocket-Version must be 13",
        ),
        (
            (b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Sec-WebSocket-Key: short"),
            400,
            "16 bytes in base64",
        ),
        ((b"Upgrade: websocket", b"Upgrade: h2c"), 400, "did not send 'Upgrade: websocket'"),
        ((b"Connection: Upgrade", b"Connection: close"), 400, "did not send 'Connection: Upgrade'"),
        ((b"GET", b"PUT"), 405, "must use GET"),
    ],
)
def test_invalid_upgrade_is_answered_with_an_http_error(change, status, message):
    server = ServerProtocol()
    server.receive_data(REQUEST.replace(*change))
    (request,) = server.events_received()
    with pytest.raises(HandshakeError, match=message):
        server.accept(request)
    (sent,) = server.data_to_send()
    assert sent.startswith(b"HTTP/1.1 %d " % status)
    assert message.encode() in sent
    assert (b"Sec-WebSocket-Version: 13\r\n" in sent) == (status == 426)
    assert server.state == websocket.CLOSED


def test_malformed_request_head_is_answered_with_400():
    server = ServerProtocol()
    with pytest.raises(HeadError):
        server.receive_data(b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n")
    (sent,) = server.data_to_send()
    assert sent.startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_server_can_refuse_a_path_it_does_not_serve():
    server = ServerProtocol()
    server.receive_data(REQUEST)
    server.reject(404, "no WebSocket endpoint at /ws; devices connect to /ws/device")
    (sent,) = server.data_to_send()
    assert sent.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert sent.endswith(b"devices connect to /ws/device\n")
    assert server.state == websocket.CLOSED


def test_handshake_is_the_same_on_micropython(unix_port):
    code = """
from firmware.proto import handshake, websocket
from firmware.proto.errors import ProtocolError
from firmware.proto.server import ServerProtocol
from tests.firmware.proto.driver import REQUEST
print(handshake.accept_key("dGhlIHNhbXBsZSBub25jZQ=="))
print(handshake.client_request("h:1", "/ws/device", "dGhlIHNhbXBsZSBub25jZQ==", [("X-Fw", "1")]))
server = ServerProtocol()
server.receive_data(REQUEST)
server.accept(server.events_received()[0])
print(server.data_to_send())
for accept in (None, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="):
    client = websocket.ClientProtocol("h", "/ws")
    good = handshake.accept_key(client.key)
    head = "HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
    head += "Sec-WebSocket-Accept: " + (accept or good) + "\\r\\n\\r\\n"
    try:
        client.receive_data(head.encode())
        print("open", client.state, client.events_received()[0].status)
    except ProtocolError as exc:
        print(type(exc).__name__, str(exc).replace(good, "GOOD"))
"""
    on_cpython, on_micropython = run_both(unix_port, code)
    assert on_micropython == on_cpython
    assert RFC_ACCEPT in on_cpython
    assert "open 1 101" in on_cpython
    assert "HandshakeError server sent Sec-WebSocket-Accept" in on_cpython
