"""Challenge-response authentication of a unit by its provisioned secret.

The server sends a fresh random nonce; the unit answers with
HMAC-SHA256(key=secret, message=nonce || device_id), hex-encoded, where the
secret is taken as UTF-8 bytes, the nonce as its 16 raw bytes and the device id
as ASCII. The secret never crosses the wire, and an answer is worth nothing
for any other nonce, so a captured exchange cannot be replayed.

MicroPython has `hashlib.sha256` but no `hmac` module, hence `hmac_sha256`.
"""

import binascii
import hashlib
import os

NONCE_BYTES = 16
_BLOCK = 64  # SHA-256 block size in bytes (RFC 2104 "B")


def hmac_sha256(key, message):
    """RFC 2104 HMAC with SHA-256: H((K ^ opad) || H((K ^ ipad) || message))."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    pad = bytearray(_BLOCK)
    pad[: len(key)] = key
    for i in range(_BLOCK):
        pad[i] ^= 0x36
    inner = hashlib.sha256(pad)
    inner.update(message)
    for i in range(_BLOCK):
        pad[i] ^= 0x36 ^ 0x5C
    outer = hashlib.sha256(pad)
    outer.update(inner.digest())
    return outer.digest()


def new_nonce():
    """A challenge nonce as sent on the wire: 16 random bytes, 32 lower-case hex digits."""
    return binascii.hexlify(os.urandom(NONCE_BYTES)).decode()


def answer(secret, nonce, device_id):
    """The unit's answer to the challenge `nonce` (hex), as 64 lower-case hex digits."""
    mac = hmac_sha256(secret.encode(), binascii.unhexlify(nonce) + device_id.encode())
    return binascii.hexlify(mac).decode()


def check_answer(secret, nonce, device_id, mac):
    """True if `mac` is the right answer; takes the same time wherever the answers differ."""
    return equal(answer(secret, nonce, device_id).encode(), mac.encode())


def equal(a, b):
    """Constant-time comparison of two byte strings; only their lengths can leak."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0
