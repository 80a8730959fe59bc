"""The server's side of what a unit's connection speaks: HTTP/1.1 request heads and responses,
the WebSocket opening handshake's checks and answers (RFC 6455 §4.2), and `ServerProtocol`.

The host imports this beside http11, handshake and websocket, whose shared and client-side code
it uses as it is; a unit imports only those, so no heap of a unit holds code it never runs (every
kilobyte counts on a 320x240 unit: docs/displays.md, Memory). The host's HTTP API reads its
requests with the same parser.

A request head's body is the caller's business: `Request.content_length` says how many bytes
follow the head.
"""

from firmware.proto.close import CLOSE_ABNORMAL
from firmware.proto.errors import FrameError, HandshakeError, HeadError, ProtocolError
from firmware.proto.handshake import accept_key, check_upgrade
from firmware.proto.http11 import (
    MAX_HEAD,
    build_head,
    head_lines,
    header_fields,
    is_token,
    read_head,
)
from firmware.proto.websocket import (
    CONNECTING,
    DEFAULT_MAX_SIZE,
    OPEN,
    STATE_NAMES,
    Protocol,
)

_BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

# ---- HTTP/1.1 (RFC 9112): request heads and responses

REASONS = {
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    426: "Upgrade Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


class Request:
    def __init__(self, method, path, headers, content_length=0):
        self.method = method
        self.path = path
        self.headers = headers
        self.content_length = content_length


def parse_request_head(head):
    """Request line and headers of `head` (bytes ending in CRLF CRLF) as a `Request`."""
    lines = head_lines(head)
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HeadError("request line must read 'METHOD /path HTTP/1.1', got %r" % lines[0])
    method, path, version = parts
    if not is_token(method):
        raise HeadError("request method %r is not a valid token" % method)
    if not path.startswith("/"):
        raise HeadError("request target must be a path starting with '/', got %r" % path)
    if version != "HTTP/1.1":
        raise HeadError("only HTTP/1.1 is supported, got %r" % version, 505)
    headers = header_fields(lines)
    return Request(method, path, headers, _content_length(headers))


def response_head(status, fields, reason=None):
    """Bytes of a response head; the reason phrase defaults to the standard one."""
    if reason is None:
        reason = REASONS.get(status, "")
    return build_head("HTTP/1.1 %d %s" % (status, reason), fields)


def _content_length(headers):
    if "transfer-encoding" in headers:
        raise HeadError(
            "Transfer-Encoding is not supported; send the body with Content-Length", 501
        )
    value = headers.get("content-length", "0")
    if not value.isdigit() or len(value) > 15:
        raise HeadError("Content-Length must be one decimal number of bytes, got %r" % value)
    return int(value)


# ---- the opening handshake, server side (RFC 6455 §4.2)


def check_request(request):
    """Key of a valid upgrade request (a `Request`); HandshakeError with `.status` if not."""
    if request.method != "GET":
        raise HandshakeError("WebSocket upgrade must use GET, got %s" % request.method, 405)
    headers = request.headers
    check_upgrade(headers, "client", 400)
    version = headers.get("sec-websocket-version")
    if version != "13":
        raise HandshakeError("Sec-WebSocket-Version must be 13, got %r" % version, 426)
    key = headers.get("sec-websocket-key", "")
    if not _is_key(key):
        raise HandshakeError(
            "Sec-WebSocket-Key must be 16 bytes in base64 (24 characters), got %r" % key, 400
        )
    return key


def accept_response(key):
    """Bytes of the 101 response that completes the handshake for `key`."""
    return response_head(
        101,
        (
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_key(key)),
        ),
    )


def reject_response(status, message):
    """Bytes of a plain-text refusal that closes the connection; 426 names the version spoken."""
    body = (message + "\n").encode()
    fields = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", len(body)),
        ("Connection", "close"),
    ]
    if status == 426:
        fields.append(("Sec-WebSocket-Version", "13"))
    return response_head(status, fields) + body


def _is_key(key):
    if len(key) != 24 or not key.endswith("=="):
        return False
    for c in key[:22]:
        if c not in _BASE64:
            return False
    return True


# ---- the connection, server role


class ServerProtocol(Protocol):
    """The server role: reads the upgrade request, then waits for accept() or reject().

    A server that already parsed the request head itself (to route by path) calls
    accept() before feeding any further bytes.
    """

    def __init__(self, max_size=DEFAULT_MAX_SIZE):
        super().__init__(False, max_size)

    def accept(self, request):
        """Answer 101 to a valid upgrade `request`; HandshakeError (400 queued) otherwise."""
        if self.state != CONNECTING:
            raise ProtocolError(
                "accept() answers a handshake, but the connection is %s" % STATE_NAMES[self.state]
            )
        try:
            key = check_request(request)
        except HandshakeError as exc:
            self._fail(exc)
            raise
        self._out.append(accept_response(key))
        self.state = OPEN
        self._parser = self._frames()
        self._step()

    def reject(self, status, message):
        """Refuse the upgrade with an HTTP error, e.g. reject(404, "no such endpoint")."""
        if self.state != CONNECTING:
            raise ProtocolError(
                "reject() answers a handshake, but the connection is %s" % STATE_NAMES[self.state]
            )
        self._out.append(reject_response(status, message))
        self._closed(CLOSE_ABNORMAL, message)

    def _fail(self, exc):
        if not isinstance(exc, FrameError) and self.state == CONNECTING:
            self._out.append(reject_response(exc.status or 400, str(exc)))
        super()._fail(exc)

    def _handshake(self):
        head = yield from read_head(self._buf, MAX_HEAD)
        self._events.append(parse_request_head(head))
        # §4.1: a client sends nothing more until it has the 101; bound what it may pile up.
        while True:
            yield
            if len(self._buf) > MAX_HEAD:
                raise HandshakeError("client sent data before the handshake completed", 400)
