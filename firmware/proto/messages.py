"""The qrfleet app protocol: JSON objects in WebSocket text frames (docs/protocol.md).

Every message is one object with a "type"; the tables below list each type's
fields, what they must hold and their defaults. Commands from the server carry
an "id" that the unit's reply (ack or error) repeats.

    text = encode("show_qr", id=7, payload="upi://pay?...", ecc="Q")
    msg = from_server(text)   # on the unit: a dict, defaults filled in
    msg = from_device(text)   # on the host

Decoding raises MessageError (`.code` is an error code below, `.id` the command
id when there is one) with a sentence saying what is wrong, so the receiver can
answer `encode("error", id=e.id, code=e.code, message=str(e))` and carry on.
Fields a type does not list are kept, so an ack can carry command results
and a newer peer can add fields without breaking an older one.
"""

import hashlib
import json
from binascii import hexlify

from firmware.compat import CPYTHON, const
from firmware.proto.errors import MessageError

if CPYTHON:

    def _json(value):
        # UTF-8 as MicroPython writes it, not \u escapes: "é" is 2 bytes on the wire, not 6.
        return json.dumps(value, ensure_ascii=False)

else:
    _json = json.dumps

PROTOCOL_VERSION = const(2)

# Either side takes a peer that sent nothing for this many heartbeat periods as gone.
SILENT_HEARTBEATS = const(3)

# What a unit takes at the least as its largest message: room for every command but a
# show_qr's payload. A show_qr's bytes besides its payload, at the most: type, the widest id,
# a caption of 64 ASCII characters, ECC, punctuation, and the MAC.
MIN_MESSAGE = const(512)
SHOW_QR_OVERHEAD = const(192)

# Longest show_qr payload and caption, in characters, and longest error message.
MAX_QR_PAYLOAD = const(4096)
MAX_CAPTION = const(64)
MAX_ERROR_MESSAGE = const(200)

# Error codes, in "error" messages and MessageError.code.
BAD_MESSAGE = "bad_message"
UNKNOWN_COMMAND = "unknown_command"
PAYLOAD_TOO_LARGE = "payload_too_large"
RENDER_FAILED = "render_failed"
BUSY = "busy"
UPDATE_REFUSED = "update_refused"
UPDATE_FAILED = "update_failed"
AUTH_FAILED = "auth_failed"
UNSUPPORTED_VERSION = "unsupported_version"


class CommandError(Exception):
    """A command the unit cannot run: answered with an error message of `code` (one of the
    codes above) and `message`."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


ECC_LEVELS = ("L", "M", "Q", "H")
RESULTS = ("paid", "cancelled", "expired")
# The largest message a unit in update mode takes (no QR to show, chunks to receive).
UPDATE_MESSAGE = const(1024)

_MAX_ID = 0x7FFFFFFF
_REQUIRED = object()


# Field checks are small tuples (kind, a, b), tested by _valid and put into words by
# _describe only when a message is refused: a unit keeps no closures or sentences in RAM.
_TEXT, _INT, _HEX, _ONE_OF, _OR_NULL, _OBJECT = 0, 1, 2, 3, 4, 5


def _text(lo, hi):
    return (_TEXT, lo, hi)


def _count(lo, hi):
    return (_INT, lo, hi)


def _hex(digits):
    return (_HEX, digits, digits)


def _one_of(values):
    return (_ONE_OF, values, None)


_ID = _count(1, _MAX_ID)
_ANY_INT = _count(-0x80000000, 0x7FFFFFFF)
_OPTIONAL_ID = (_OR_NULL, _ID, "a command id")
_OPTIONAL_INT = (_OR_NULL, _ANY_INT, "an integer")


def _valid(check, v):
    kind, a, b = check
    if kind == _TEXT:
        return isinstance(v, str) and a <= len(v) <= b
    if kind == _INT:
        return isinstance(v, int) and not isinstance(v, bool) and a <= v <= b
    if kind == _HEX:
        return isinstance(v, str) and len(v) == a and not v.strip("0123456789abcdef")
    if kind == _ONE_OF:
        return v in a
    if kind == _OBJECT:
        return isinstance(v, dict)
    return v is None or _valid(a, v)


def _describe(check):
    kind, a, b = check
    if kind == _TEXT:
        return "a string of %d to %d characters" % (a, b)
    if kind == _INT:
        return "an integer from %d to %d" % (a, b)
    if kind == _HEX:
        return "%d lower-case hex digits" % a
    if kind == _ONE_OF:
        return "one of " + ", ".join(a)
    if kind == _OBJECT:
        return "a JSON object"
    return b + " or null"


# type -> ((field, check, default), ...); _REQUIRED marks fields without a default.
SERVER_MESSAGES = {
    "challenge": (("nonce", _hex(32), _REQUIRED), ("proof", _hex(64), _REQUIRED)),
    "welcome": (
        ("heartbeat_s", _count(1, 3600), _REQUIRED),
        ("server_id", _text(1, 64), _REQUIRED),
    ),
    "heartbeat_ack": (),
    "show_qr": (
        ("id", _ID, _REQUIRED),
        ("payload", _text(1, MAX_QR_PAYLOAD), _REQUIRED),
        ("caption", _text(0, MAX_CAPTION), ""),
        ("ecc", _one_of(ECC_LEVELS), "M"),
    ),
    "show_result": (("id", _ID, _REQUIRED), ("result", _one_of(RESULTS), _REQUIRED)),
    "clear": (("id", _ID, _REQUIRED),),
    "show_pairing": (("id", _ID, _REQUIRED), ("code", _text(1, 32), _REQUIRED)),
    "info": (("id", _ID, _REQUIRED),),
    "reboot": (("id", _ID, _REQUIRED),),
    "error": (
        ("id", _OPTIONAL_ID, None),
        ("code", _text(1, 32), _REQUIRED),
        ("message", _text(0, MAX_ERROR_MESSAGE), ""),
    ),
}

DEVICE_MESSAGES = {
    "hello": (
        ("device_id", _text(1, 64), _REQUIRED),
        ("fw", _text(1, 32), _REQUIRED),
        ("proto", _count(1, 0xFFFF), _REQUIRED),
        # Required from version 2 on; optional here so that an older unit's hello decodes and
        # can be answered with unsupported_version.
        ("nonce", (_OR_NULL, _hex(32), "32 lower-case hex digits"), None),
        # The largest message the unit takes, MAC included (null: DEFAULT_MAX_SIZE, 4096).
        ("max_message", (_OR_NULL, _count(MIN_MESSAGE, 0xFFFF), "an integer"), None),
        # Why the unit last started (hal.reset_cause()), shown to operators.
        ("reset", (_OR_NULL, _text(1, 16), "a string of 1 to 16 characters"), None),
        # The last update's outcome, or the version on trial (loader.status(): version, state
        # and reason; the server checks them as it records them).
        ("update", (_OR_NULL, (_OBJECT, None, None), "a JSON object"), None),
    ),
    "auth": (("mac", _hex(64), _REQUIRED),),
    "heartbeat": (
        ("uptime_s", _count(0, _MAX_ID), _REQUIRED),
        ("free_heap", _count(0, _MAX_ID), _REQUIRED),
        ("rssi", _OPTIONAL_INT, None),
        ("fw", _text(1, 32), _REQUIRED),
        ("screen", _text(1, 32), _REQUIRED),
    ),
    "ack": (("id", _ID, _REQUIRED),),
    "error": SERVER_MESSAGES["error"],
}


def encode(kind, **fields):
    """JSON text of a message, fields in table order then any extra ones sorted by name.

    Raises MessageError if a field is missing or holds the wrong kind of value.
    """
    spec = _spec(SERVER_MESSAGES, kind)
    if spec is None:
        spec = DEVICE_MESSAGES.get(kind)
    if spec is None:
        raise MessageError(BAD_MESSAGE, "cannot encode unknown message type %r" % kind)
    _check(kind, fields, spec, fields.get("id"))
    parts = ['"type":' + _json(kind)]
    listed = []
    for name, _, _ in spec:
        listed.append(name)
        if name in fields:
            parts.append(_json(name) + ":" + _json(fields[name]))
    for name in sorted(fields):
        if name not in listed:
            parts.append(_json(name) + ":" + _json(fields[name]))
    return "{" + ",".join(parts) + "}"


def from_server(text):
    """A message the server sent, as a dict with defaults filled in (decoded on the unit)."""
    return _decode(text, SERVER_MESSAGES)


def from_device(text):
    """A message a unit sent, as a dict with defaults filled in (decoded on the host)."""
    return _decode(text, DEVICE_MESSAGES)


def pairing_uri(device_id, code):
    """What an unlinked unit's pairing QR encodes; a cashier's phone scans it to link the unit.

    Device ids and codes are letters, digits and "-", so nothing needs escaping.
    """
    return "qrfleet://pair?device=%s&code=%s" % (device_id, code)


def matrix_digest(qr):
    """SHA-256 (hex) of a QR symbol's modules, as a show_qr ack reports what was drawn.

    Rows top to bottom; each row packed left to right, most significant bit first,
    dark = 1, into ceil(size / 8) bytes with the unused low bits of its last byte 0.
    `qr` has `size` and `module(x, y)` (the firmware.qr encoder's result).
    """
    size = qr.size
    row = bytearray((size + 7) >> 3)
    digest = hashlib.sha256()
    for y in range(size):
        for i in range(len(row)):
            row[i] = 0
        for x in range(size):
            if qr.module(x, y):
                row[x >> 3] |= 0x80 >> (x & 7)
        digest.update(row)
    return hexlify(digest.digest()).decode()


def _decode(text, table):
    try:
        msg = json.loads(text)
    except ValueError:
        raise MessageError(
            BAD_MESSAGE, "message is not JSON; send one JSON object per text frame"
        ) from None
    except RuntimeError:
        # Thousands of nested brackets: CPython hits its recursion limit.
        raise MessageError(BAD_MESSAGE, "message is nested too deeply to decode") from None
    except MemoryError:
        # A heap too fragmented for the payload's copy (or, on MicroPython, thousands of
        # nested brackets): what was built is garbage once this returns. Answered with the
        # command's id, found without decoding, so the server need not wait for a timeout.
        raise MessageError(
            BUSY, "unit is out of memory for a message of %d bytes" % len(text), _find_id(text)
        ) from None
    if not isinstance(msg, dict):
        raise MessageError(BAD_MESSAGE, 'message must be a JSON object with a "type"')
    command_id = msg.get("id")
    if not _valid(_ID, command_id):
        command_id = None
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise MessageError(
            BAD_MESSAGE, 'message needs a "type" string, got %s' % _short(kind), command_id
        )
    spec = _spec(table, kind)
    if spec is None:
        # A command this side does not know gets unknown_command, so the server can tell
        # an older firmware from a broken message.
        code = UNKNOWN_COMMAND if command_id is not None else BAD_MESSAGE
        raise MessageError(code, "unknown message type %s" % _short(kind), command_id)
    _check(kind, msg, spec, command_id)
    for name, _, default in spec:
        if name not in msg:
            msg[name] = default
    return msg


def _spec(table, kind):
    """A message type's fields. The update commands' are firmware/ota/protocol.py's, added
    the first time one comes: a unit that is not updating keeps their heap."""
    spec = table.get(kind)
    if spec is None and table is SERVER_MESSAGES and kind.startswith("update_"):
        from firmware.ota import protocol

        protocol.add_to(SERVER_MESSAGES)
        spec = table.get(kind)
    return spec


def _find_id(text):
    """The command id of a JSON text that could not be decoded, or None. encode() writes "id"
    right after "type", so only the text's head is read: 64 bytes allocated, not its size."""
    head = text[:64].encode() if isinstance(text, str) else bytes(text[:64])
    at = head.find(b'"id":')
    if at < 0:
        return None
    value = 0
    for digit in head[at + 5 : at + 15]:
        if not 0x30 <= digit <= 0x39:
            break
        value = value * 10 + digit - 0x30
    return value if _valid(_ID, value) else None


def _check(kind, msg, spec, command_id):
    for name, check, default in spec:
        if name in msg:
            if not _valid(check, msg[name]):
                raise MessageError(
                    BAD_MESSAGE,
                    "%s field %r must be %s, got %s"
                    % (kind, name, _describe(check), _short(msg[name])),
                    command_id,
                )
        elif default is _REQUIRED:
            raise MessageError(
                BAD_MESSAGE, "%s needs field %r (%s)" % (kind, name, _describe(check)), command_id
            )


def _short(value):
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
