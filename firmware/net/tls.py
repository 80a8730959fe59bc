"""TLS for a unit on Wi-Fi whose server is wss://: the context that checks the server against
the unit's one trust anchor, and the reason a certificate was refused in words. Imported only
for such a unit (and by the WebSocket client when a wss:// handshake fails): a unit on ws://,
or tethered, keeps the heap.
"""

from firmware.proto.auth import Untrusted


def tls_context(ca):
    """TLS that checks the server's certificate against `ca` (DER), the unit's one trust anchor,
    and its host name against the URL's (asyncio passes it as server_hostname)."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=ca)
    return context


# What failed in a certificate check, from the text of mbedTLS's verify flags (MicroPython
# raises ValueError with it) or of OpenSSL's verify result (CPython's SSLCertVerificationError,
# a ValueError too). The first match names the reason.
_TLS_REFUSALS = (
    (
        (
            "not correctly signed by the trusted CA",
            "unable to get local issuer certificate",
            "self-signed certificate",
            "self signed certificate",
        ),
        "its TLS certificate is signed by a CA this unit does not trust",
    ),
    (
        ("does not match with the expected CN", "Hostname mismatch", "IP address mismatch"),
        "its TLS certificate is issued for another host name",
    ),
    (("validity has expired", "certificate has expired"), "its TLS certificate has expired"),
    (
        ("validity starts in the future", "certificate is not yet valid"),
        "its TLS certificate is not valid yet: is the unit's clock set?",
    ),
)


def tls_refusal(error):
    """Untrusted, with the reason a server's certificate was refused."""
    text = str(error)
    for needles, reason in _TLS_REFUSALS:
        for needle in needles:
            if needle in text:
                return Untrusted(reason)
    return Untrusted("its TLS certificate failed verification: %s" % text.strip())
