# ssl, as the ESP32 port has it: micropython-lib's ssl over mbedTLS, whose certificate checks
# read the unit's RTC (a unit whose clock was never set refuses every server: its RTC reads
# 2000). The Unix port's mbedTLS reads the host's clock instead, so before a client handshake
# this module checks the trust anchor's dates against the board's clock (time.py) and refuses
# as mbedTLS does, with its words: "The certificate validity starts in the future" on a board
# whose clock is unset. mbedTLS checks the server's own certificate against the host's clock,
# which is the board's too once it is set from the bench's time server (tools/vboard/ntp.py).

import sys

_path, _me = sys.path, sys.modules.pop("ssl")
sys.path = (".frozen",)  # micropython-lib's ssl, frozen into the Unix port, not this module
try:
    from ssl import *  # noqa: F403
    from ssl import CERT_REQUIRED
    from ssl import SSLContext as _SSLContext
finally:
    sys.path = _path
    sys.modules["ssl"] = _me
del _path, _me

import time  # noqa: E402
from binascii import a2b_base64  # noqa: E402

# mbedtls_x509_crt_verify_info's lines for the date flags, as MicroPython raises them.
_FUTURE = "\nThe certificate validity starts in the future\n"
_EXPIRED = "\nThe certificate validity has expired\n"
_VERSION_TAG = 0xA0  # [0] EXPLICIT Version, in tbsCertificate before serialNumber
_UTC_TIME = 0x17


class SSLContext(_SSLContext):
    def load_verify_locations(self, cafile=None, cadata=None):
        super().load_verify_locations(cafile, cadata)
        if cafile:
            with open(cafile, "rb") as f:
                cadata = f.read()
        if b"-----BEGIN" in cadata:
            cadata = a2b_base64(b"".join(cadata.split(b"-----")[2].split()))
        self._validity = _validity(cadata)

    def wrap_socket(self, sock, *args, **kwargs):
        if self.verify_mode == CERT_REQUIRED and not kwargs.get("server_side"):
            refusal = self._refusal()
            if refusal:
                sock.close()
                raise ValueError(refusal)
        return super().wrap_socket(sock, *args, **kwargs)

    def _refusal(self):
        validity = getattr(self, "_validity", None)
        if validity is None:
            return None
        now = time.time()
        if now < validity[0]:
            return _FUTURE
        if now > validity[1]:
            return _EXPIRED
        return None


def _element(der, i):
    """(tag, start, end) of the DER element at offset i: its tag and where its value lies."""
    tag, size = der[i], der[i + 1]
    i += 2
    if size & 0x80:
        count, size = size & 0x7F, 0
        for _ in range(count):
            size = size << 8 | der[i]
            i += 1
    return tag, i, i + size


def _validity(der):
    """(notBefore, notAfter) of a DER certificate in seconds since 2000 (RFC 5280 §4.1)."""
    _, i, _ = _element(der, 0)  # Certificate
    _, i, _ = _element(der, i)  # tbsCertificate
    if der[i] == _VERSION_TAG:
        i = _element(der, i)[2]
    for _ in range(3):  # serialNumber, signature, issuer
        i = _element(der, i)[2]
    _, i, _ = _element(der, i)  # validity
    tag, start, end = _element(der, i)
    not_before = _seconds(der, tag, start, end)
    tag, start, end = _element(der, end)
    return not_before, _seconds(der, tag, start, end)


def _seconds(der, tag, start, end):
    """UTCTime YYMMDDHHMMSSZ (50-99: 19YY) or GeneralizedTime YYYYMMDDHHMMSSZ."""
    text = bytes(der[start:end]).decode()
    if tag == _UTC_TIME:
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text
    return time.mktime([int(text[:4])] + [int(text[k : k + 2]) for k in range(4, 14, 2)])
