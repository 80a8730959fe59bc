"""RFC 6455 §4: the opening handshake, as bytes in and bytes out: the client's side, and what
both sides share.

Client: `client_request()` builds the upgrade request with a fresh key, and
`check_response()` accepts the server's answer only if it is a 101 whose
Sec-WebSocket-Accept proves the server read that key. The server's side (check_request,
accept_response, reject_response) is in `firmware.proto.server`, which a unit never
imports. Extensions and subprotocols are neither offered nor accepted.
"""

import binascii
import hashlib
import os

from firmware.proto.errors import HandshakeError
from firmware.proto.http11 import has_token, request_head

# §1.3: appended to the client's key before hashing.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def new_key():
    """Sec-WebSocket-Key: 16 random bytes, base64 (§4.1)."""
    return _b64(os.urandom(16))


def accept_key(key):
    """Sec-WebSocket-Accept for `key`: base64 of SHA-1 over key + GUID (§4.2.2)."""
    return _b64(hashlib.sha1(key.encode() + _GUID).digest())


def client_request(host, path, key, extra_headers=()):
    """Bytes of the upgrade request; `extra_headers` is a sequence of (name, value)."""
    fields = [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]
    fields.extend(extra_headers)
    return request_head("GET", path, fields)


def check_response(response, key):
    """Raise HandshakeError unless `response` (an http11.Response) accepts the upgrade of `key`."""
    if response.status != 101:
        raise HandshakeError(
            "server answered %d %s instead of 101 Switching Protocols; check the URL path"
            % (response.status, response.reason)
        )
    headers = response.headers
    check_upgrade(headers, "server")
    accept = headers.get("sec-websocket-accept")
    if accept != accept_key(key):
        raise HandshakeError(
            "server sent Sec-WebSocket-Accept %r, expected %r: it is not a WebSocket server "
            "or something between rewrote the handshake" % (accept, accept_key(key))
        )
    for name in ("sec-websocket-extensions", "sec-websocket-protocol"):
        if name in headers:
            raise HandshakeError(
                "server chose %s %r, which the client did not offer" % (name, headers[name])
            )


def check_upgrade(headers, peer, status=None):
    """HandshakeError (with `status`) unless `headers` ask for the WebSocket upgrade."""
    if not has_token(headers, "upgrade", "websocket"):
        raise HandshakeError("%s did not send 'Upgrade: websocket'" % peer, status)
    if not has_token(headers, "connection", "upgrade"):
        raise HandshakeError("%s did not send 'Connection: Upgrade'" % peer, status)


def _b64(data):
    return binascii.b2a_base64(data)[:-1].decode()
