"""HTTP/1.1 message heads (RFC 9112 §2-5): start line and header fields.

What the client of the WebSocket opening handshake needs (a unit's, and the host's side too):
the request head it sends and the response head it reads. The server's side, request heads
and responses, is in `firmware.proto.server`, which a unit never imports. Only what those
need, strictly: a head is ASCII, every line ends in CRLF, no line folding, and the whole head
fits in `MAX_HEAD` bytes, so a peer cannot make the reader buffer without bound.

Header names are lowercased; a field sent more than once is joined with ", "
(RFC 9110 §5.3), which also makes conflicting Content-Length values fail to parse.
"""

from firmware.proto.errors import HeadError

MAX_HEAD = 8192

# RFC 9110 §5.6.2: characters of a token (method, header name).
_TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


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


def parse_response_head(head):
    """Status line and headers of `head` (bytes ending in CRLF CRLF) as a `Response`."""
    lines = head_lines(head)
    parts = lines[0].split(" ", 2)
    if (
        len(parts) < 2
        or not parts[0].startswith("HTTP/1.")
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        raise HeadError("status line must read 'HTTP/1.1 CODE REASON', got %r" % lines[0])
    return Response(int(parts[1]), parts[2] if len(parts) == 3 else "", header_fields(lines))


def request_head(method, path, fields):
    """Bytes of a request head; `fields` is a sequence of (name, value) pairs."""
    return build_head("%s %s HTTP/1.1" % (method, path), fields)


def has_token(headers, name, token):
    """True if the comma-separated header `name` lists `token` (case-insensitive)."""
    for item in headers.get(name, "").split(","):
        if item.strip(" \t").lower() == token:
            return True
    return False


def build_head(start_line, fields):
    """Bytes of a head: `start_line`, then `fields` ((name, value) pairs), then the blank line."""
    out = [start_line]
    for name, value in fields:
        value = str(value)
        if not is_token(name) or "\r" in value or "\n" in value:
            raise HeadError(
                "header %r: %r cannot be sent; names are tokens and values one line" % (name, value)
            )
        out.append("%s: %s" % (name, value))
    out.append("\r\n")
    return "\r\n".join(out).encode()


def head_lines(head):
    """The lines of `head` (bytes ending in CRLF CRLF) as str, start line first; HeadError
    unless it is ASCII with every line ending in CRLF."""
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


def header_fields(lines):
    """{lower-cased name: value} of the header lines after the start line."""
    headers = {}
    for i in range(1, len(lines)):
        line = lines[i]
        colon = line.find(":")
        name = line[:colon]
        if colon < 1 or not is_token(name):
            raise HeadError("header line must read 'Name: value', got %r" % line)
        name = name.lower()
        value = line[colon + 1 :].strip(" \t")
        headers[name] = headers[name] + ", " + value if name in headers else value
    return headers


def is_token(text):
    """True if `text` is an RFC 9110 token (a method, a header name)."""
    if not text:
        return False
    for c in text:
        if c not in _TCHAR:
            return False
    return True
