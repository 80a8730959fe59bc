"""RFC 6455 §5 and §7.4: the frame format, masking, close payloads and UTF-8 checks.

Base framing protocol (§5.2)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-------+-+-------------+-------------------------------+
    |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
    |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
    |N|V|V|V|       |S|             |   (if payload len==126/127)   |
    | |1|2|3|       |K|             |                               |
    +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
    |     Extended payload length continued, if payload len == 127  |
    + - - - - - - - - - - - - - - - +-------------------------------+
    |                               |Masking-key, if MASK set to 1  |
    +-------------------------------+-------------------------------+
    | Masking-key (continued)       |          Payload Data         |
    +-------------------------------- - - - - - - - - - - - - - - - +

The state machine that uses these lives in `firmware.proto.websocket`.
"""

from firmware.compat import const, micropython, ptr8
from firmware.proto.errors import FrameError

OP_CONTINUATION = const(0x0)
OP_TEXT = const(0x1)
OP_BINARY = const(0x2)
OP_CLOSE = const(0x8)
OP_PING = const(0x9)
OP_PONG = const(0xA)

# §7.4.1 close codes used here (1001, 1006 and 1008 are in close.py); 1005 and 1006 are never
# sent, only reported.
CLOSE_NORMAL = const(1000)
CLOSE_PROTOCOL_ERROR = const(1002)
CLOSE_NO_STATUS = const(1005)
CLOSE_INVALID_DATA = const(1007)
CLOSE_TOO_BIG = const(1009)
CLOSE_INTERNAL_ERROR = const(1011)
# §7.4.2 leaves 4000-4999 to applications. A session replaced by a newer one of the same unit
# (a takeover) did nothing wrong, so it is told apart from 1008, a failed check.
CLOSE_REPLACED = const(4001)

# §5.5: control frames carry at most 125 bytes, so a close reason at most 123.
MAX_CONTROL_PAYLOAD = const(125)
MAX_CLOSE_REASON = const(123)


def header(opcode, length, fin=True, mask_key=None):
    """Bytes of a frame header for a payload of `length` bytes."""
    b0 = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if mask_key else 0
    if length < 126:
        out = bytearray((b0, mask_bit | length))
    elif length < 0x10000:
        out = bytearray((b0, mask_bit | 126, length >> 8, length & 0xFF))
    else:
        out = bytearray((b0, mask_bit | 127))
        for shift in (56, 48, 40, 32, 24, 16, 8, 0):
            out.append((length >> shift) & 0xFF)
    if mask_key:
        out.extend(mask_key)
    return out


# §5.3 masking: XOR buf[start:end] in place with the 4-byte key, the same both ways. Every
# frame a unit sends is masked, so on MicroPython this is viper machine code.
@micropython.viper
def apply_mask(buf, start: int, end: int, mask_key):
    data = ptr8(buf)
    key = ptr8(mask_key)
    i = start
    while i < end:
        data[i] ^= key[(i - start) & 3]
        i += 1


def close_payload(code, reason=""):
    """Payload of a close frame: 2-byte code then UTF-8 reason; no code means an empty payload."""
    if code == CLOSE_NO_STATUS:
        return b""
    reason = reason.encode()
    if len(reason) > MAX_CLOSE_REASON:
        raise ValueError(
            "close reason is %d bytes; the limit is %d" % (len(reason), MAX_CLOSE_REASON)
        )
    return bytes((code >> 8, code & 0xFF)) + reason


def parse_close(payload):
    """(code, reason) of a received close payload; FrameError 1002/1007 if it is malformed."""
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "close frame payload of 1 byte; a code takes 2")
    code = payload[0] << 8 | payload[1]
    if not _close_code_valid(code):
        raise FrameError(CLOSE_PROTOCOL_ERROR, "close code %d may not be sent on the wire" % code)
    return code, decode_utf8(memoryview(payload)[2:])


def _close_code_valid(code):
    # §7.4.2: 1000-2999 are registered (1004-1006, 1015 reserved), 3000-4999 are for
    # libraries and applications.
    if 3000 <= code < 5000:
        return True
    return 1000 <= code <= 1014 and code not in (1004, 1005, 1006)


def decode_utf8(data):
    """str of `data` (a bytes-like object); FrameError 1007 if it is not valid UTF-8."""
    if not _decoder_is_strict and not _utf8_valid(data):
        raise FrameError(CLOSE_INVALID_DATA, "text is not valid UTF-8")
    try:
        return str(data, "utf-8")
    except UnicodeError:
        raise FrameError(CLOSE_INVALID_DATA, "text is not valid UTF-8") from None


def _utf8_valid(data):
    """RFC 3629 §4: shortest forms only, no surrogates, nothing above U+10FFFF."""
    i = 0
    n = len(data)
    while i < n:
        b = data[i]
        if b < 0x80:
            i += 1
            continue
        if 0xC2 <= b <= 0xDF:
            lo, hi, more = 0x80, 0xBF, 1
        elif 0xE0 <= b <= 0xEF:
            # E0 needs A0.. (no overlong), ED needs ..9F (no surrogates).
            lo = 0xA0 if b == 0xE0 else 0x80
            hi = 0x9F if b == 0xED else 0xBF
            more = 2
        elif 0xF0 <= b <= 0xF4:
            # F0 needs 90.. (no overlong), F4 needs ..8F (nothing above U+10FFFF).
            lo = 0x90 if b == 0xF0 else 0x80
            hi = 0x8F if b == 0xF4 else 0xBF
            more = 3
        else:
            return False
        if i + more >= n:
            return False
        c = data[i + 1]
        if c < lo or c > hi:
            return False
        for j in range(i + 2, i + 1 + more):
            if data[j] & 0xC0 != 0x80:
                return False
        i += 1 + more
    return True


def _strict_decoder():
    # CPython's codec rejects surrogates and overlong forms; MicroPython's accepts them.
    try:
        str(b"\xed\xa0\x80", "utf-8")
    except UnicodeError:
        return True
    return False


_decoder_is_strict = _strict_decoder()
