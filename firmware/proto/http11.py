"""HTTP/1.1 message heads (RFC 9112 §2-5): start line and header fields, both directions.

Shared by the WebSocket opening handshake (device and host) and the host's HTTP API.
Only what those need, strictly: a head is ASCII, every line ends in CRLF, no line
folding, and the whole head fits in `MAX_HEAD` bytes, so a peer cannot make the
reader buffer without bound. Bodies are the caller's business: `Request.content_length`
says how many bytes follow the head.

Header names are lowercased; a field sent more than once is joined with ", "
(RFC 9110 §5.3), which also makes conflicting Content-Length values fail to parse.
"""

from firmware.proto.errors import HeadError

MAX_HEAD = 8192

# RFC 9110 §5.6.2: characters of a token (method, header name).
_TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

REASONS = {
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
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


class Response:
    def __init__(self, status, reason, headers):
        self.status = status
        self.reason = reason
        self.headers = headers


def head_length(buf, limit=MAX_HEAD):
    """Length of the head at the start of `buf`, blank line included; 0 while it is incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > limit:
            raise HeadError(
                "HTTP head is longer than %d bytes; send fewer or shorter headers" % limit, 431
            )
        return 0
    if end + 4 > limit:
        raise HeadError(
            "HTTP head is longer than %d bytes; send fewer or shorter headers" % limit, 431
        )
    return end + 4


def read_head(buf, limit=MAX_HEAD):
    """Parser coroutine: yields until `buf` holds a whole head, then removes and returns it."""
    n = head_length(buf, limit)
    while not n:
        yield
        n = head_length(buf, limit)
    head = bytes(buf[:n])
    buf[:n] = b""
    return head


def parse_request_head(head):
    """Request line and headers of `head` (bytes ending in CRLF CRLF) as a `Request`."""
    lines = _lines(head)
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HeadError("request line must read 'METHOD /path HTTP/1.1', got %r" % lines[0])
    method, path, version = parts
    if not _is_token(method):
        raise HeadError("request method %r is not a valid token" % method)
    if not path.startswith("/"):
        raise HeadError("request target must be a path starting with '/', got %r" % path)
    if version != "HTTP/1.1":
        raise HeadError("only HTTP/1.1 is supported, got %r" % version, 505)
    headers = _fields(lines)
    return Request(method, path, headers, _content_length(headers))


def parse_response_head(head):
    """Status line and headers of `head` (bytes ending in CRLF CRLF) as a `Response`."""
    lines = _lines(head)
    parts = lines[0].split(" ", 2)
    if (
        len(parts) < 2
        or not parts[0].startswith("HTTP/1.")
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        raise HeadError("status line must read 'HTTP/1.1 CODE REASON', got %r" % lines[0])
    return Response(int(parts[1]), parts[2] if len(parts) == 3 else "", _fields(lines))


def request_head(method, path, fields):
    """Bytes of a request head; `fields` is a sequence of (name, value) pairs."""
    return _head("%s %s HTTP/1.1" % (method, path), fields)


def response_head(status, fields, reason=None):
    """Bytes of a response head; the reason phrase defaults to the standard one."""
    if reason is None:
        reason = REASONS.get(status, "")
    return _head("HTTP/1.1 %d %s" % (status, reason), fields)


def has_token(headers, name, token):
    """True if the comma-separated header `name` lists `token` (case-insensitive)."""
    for item in headers.get(name, "").split(","):
        if item.strip(" \t").lower() == token:
            return True
    return False


def _head(start_line, fields):
    out = [start_line]
    for name, value in fields:
        value = str(value)
        if not _is_token(name) or "\r" in value or "\n" in value:
            raise HeadError(
                "header %r: %r cannot be sent; names are tokens and values one line" % (name, value)
            )
        out.append("%s: %s" % (name, value))
    out.append("\r\n")
    return "\r\n".join(out).encode()


def _lines(head):
    for b in head:
        # Visible ASCII, space and tab; CR and LF are checked per line below.
        if b > 126 or (b < 32 and b != 9 and b != 10 and b != 13):
            raise HeadError("HTTP head must be ASCII text; found byte 0x%02x" % b)
    if not head.endswith(b"\r\n\r\n"):
        raise HeadError("HTTP head must end with an empty line (CRLF CRLF)")
    lines = str(head, "utf-8")[:-4].split("\r\n")
    for line in lines:
        if "\r" in line or "\n" in line:
            raise HeadError("HTTP head lines must end in CRLF; found a bare CR or LF")
    return lines


def _fields(lines):
    headers = {}
    for i in range(1, len(lines)):
        line = lines[i]
        colon = line.find(":")
        name = line[:colon]
        if colon < 1 or not _is_token(name):
            raise HeadError("header line must read 'Name: value', got %r" % line)
        name = name.lower()
        value = line[colon + 1 :].strip(" \t")
        headers[name] = headers[name] + ", " + value if name in headers else value
    return headers


def _content_length(headers):
    if "transfer-encoding" in headers:
        raise HeadError(
            "Transfer-Encoding is not supported; send the body with Content-Length", 501
        )
    value = headers.get("content-length", "0")
    if not value.isdigit() or len(value) > 15:
        raise HeadError("Content-Length must be one decimal number of bytes, got %r" % value)
    return int(value)


def _is_token(text):
    if not text:
        return False
    for c in text:
        if c not in _TCHAR:
            return False
    return True
