"""Mutual authentication of a unit and its server by the unit's secret, and the session's
message MACs (docs/protocol.md, "Authentication").

Both sides send a fresh random nonce: the unit in `hello`, the server in `challenge`. The
server proves first that it knows the secret (`proof`), the unit answers with its own MAC
(`auth`), and from then on every message each way carries a MAC under a session key that
only the secret and both nonces give:

    proof    = HMAC(secret, "qrfleet/2 server"   || unit nonce   || server nonce || device id)
    answer   = HMAC(secret, "qrfleet/2 unit"     || server nonce || unit nonce   || device id)
    key u->s = HMAC(secret, "qrfleet/2 to-server" || unit nonce   || server nonce || device id)
    key s->u = HMAC(secret, "qrfleet/2 to-unit"   || unit nonce   || server nonce || device id)

HMAC is HMAC-SHA256 with the secret as UTF-8 bytes, nonces as their 16 raw bytes, the device
id as ASCII. The labels keep each value useless in any other role: a proof is not an answer,
and neither is a key. The secret never crosses the wire and, with both nonces fresh, nothing
captured from one session is worth anything in another.

A sealed message is the MAC then the JSON text: 32 hex digits of
HMAC(key of its direction, sequence number as 8 bytes big-endian || UTF-8 text) cut to 16
bytes. Sequence numbers count each direction's messages from 0 (the server's `welcome`, the
unit's first heartbeat) and are not sent: a message dropped, repeated, reordered or taken
from another session fails its MAC as surely as a rewritten one.

MicroPython has `hashlib.sha256` but no `hmac` module, hence `hmac_sha256` and `Mac`.
"""

import binascii
import hashlib
import os

from firmware.compat import const, utf8

NONCE_BYTES = const(16)
MAC_DIGITS = const(32)  # hex digits of a message MAC, before the JSON text
SEAL_OVERHEAD = MAC_DIGITS
_BLOCK = const(64)  # SHA-256 block size in bytes (RFC 2104 "B")

_PROOF = b"qrfleet/2 server"
_ANSWER = b"qrfleet/2 unit"
_TO_SERVER = b"qrfleet/2 to-server"
_TO_UNIT = b"qrfleet/2 to-unit"


class Untrusted(Exception):
    """The peer failed to prove itself, or a message's MAC is wrong: nothing it sent counts."""


def _pads(key):
    """(key ^ ipad, key ^ opad), each one SHA-256 block."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    inner = bytearray(_BLOCK)
    inner[: len(key)] = key
    outer = bytearray(inner)
    for i in range(_BLOCK):
        inner[i] ^= 0x36
        outer[i] ^= 0x5C
    return bytes(inner), bytes(outer)


class Mac:
    """HMAC-SHA256 under one key, its pads worked out once: a message costs two hashes."""

    def __init__(self, key):
        self._inner, self._outer = _pads(key)

    def digest(self, *parts):
        inner = hashlib.sha256(self._inner)
        for part in parts:
            inner.update(part)
        outer = hashlib.sha256(self._outer)
        outer.update(inner.digest())
        return outer.digest()


def hmac_sha256(key, message):
    """RFC 2104 HMAC with SHA-256: H((K ^ opad) || H((K ^ ipad) || message))."""
    return Mac(key).digest(message)


def new_nonce():
    """A nonce as sent on the wire: 16 random bytes, 32 lower-case hex digits."""
    return binascii.hexlify(os.urandom(NONCE_BYTES)).decode()


def _derive(secret, label, first_nonce, second_nonce, device_id):
    return Mac(secret.encode()).digest(
        label,
        binascii.unhexlify(first_nonce),
        binascii.unhexlify(second_nonce),
        device_id.encode(),
    )


def _hex(mac):
    return binascii.hexlify(mac).decode()


def proof(secret, unit_nonce, server_nonce, device_id):
    """The server's proof that it knows the unit's secret, as 64 lower-case hex digits."""
    return _hex(_derive(secret, _PROOF, unit_nonce, server_nonce, device_id))


def answer(secret, server_nonce, unit_nonce, device_id):
    """The unit's answer to the server's challenge, as 64 lower-case hex digits."""
    return _hex(_derive(secret, _ANSWER, server_nonce, unit_nonce, device_id))


def check_proof(secret, unit_nonce, server_nonce, device_id, mac):
    return equal(proof(secret, unit_nonce, server_nonce, device_id).encode(), mac.encode())


def check_answer(secret, server_nonce, unit_nonce, device_id, mac):
    """True if `mac` is the right answer; takes the same time wherever the answers differ."""
    return equal(answer(secret, server_nonce, unit_nonce, device_id).encode(), mac.encode())


def equal(a, b):
    """Constant-time comparison of two byte strings; only their lengths can leak."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


class Channel:
    """Seals what one side sends and opens what it receives, for one session.

    `side` is "unit" or "server". seal(text) -> the text as sent; open(text) -> the JSON text,
    or Untrusted. Each call moves that direction's sequence number on, so seal in the order
    messages go out and open in the order they arrive.
    """

    def __init__(self, secret, unit_nonce, server_nonce, device_id, side):
        to_server = Mac(_derive(secret, _TO_SERVER, unit_nonce, server_nonce, device_id))
        to_unit = Mac(_derive(secret, _TO_UNIT, unit_nonce, server_nonce, device_id))
        self._out, self._in = (to_server, to_unit) if side == "unit" else (to_unit, to_server)
        self._sent = 0
        self._received = 0
        self._seq = bytearray(8)

    def _mac(self, mac, seq, data):
        for i in range(8):
            self._seq[7 - i] = (seq >> (8 * i)) & 0xFF
        return binascii.hexlify(mac.digest(self._seq, data)[: MAC_DIGITS // 2])

    def seal(self, text):
        mac = self._mac(self._out, self._sent, utf8(text))
        self._sent += 1
        return mac.decode() + text

    def open(self, text):
        """The JSON text of a sealed message as UTF-8 bytes, for json.loads: on MicroPython a
        view into `text`, so a large show_qr is not copied on a unit's small heap."""
        if not isinstance(text, str) or len(text) <= MAC_DIGITS:
            raise Untrusted("a message without its MAC")
        data = utf8(text)
        body = data[MAC_DIGITS:]  # the MAC's digits are ASCII: bytes and characters agree
        if not equal(self._mac(self._in, self._received, body), data[:MAC_DIGITS]):
            raise Untrusted("message %d has a wrong MAC" % self._received)
        self._received += 1
        return body
