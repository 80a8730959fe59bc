"""The unit's TLS (firmware.net.tls.tls_context): a wss:// server is checked against the unit's
one trust anchor and the URL's host name, and each way a certificate can fail is named."""

import asyncio
import ssl

import pytest
from websockets.asyncio.server import serve

from firmware.net import tls, ws
from firmware.proto.auth import Untrusted
from tools.certs import CertificateAuthority, self_signed


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def connect_to(cert, key, anchor, host="127.0.0.1"):
    """Connect the unit's client to a WebSocket server presenting `cert`, trusting `anchor`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def echo(conn):
        await conn.wait_closed()

    async with serve(echo, "127.0.0.1", 0, ssl=context, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        conn = await ws.connect(
            f"wss://{host}:{port}/ws/device", ssl_context=tls.tls_context(anchor)
        )
        await conn.close()


@pytest.fixture
def shop(tmp_path):
    return CertificateAuthority(tmp_path, "shop")


def test_a_server_whose_certificate_the_shops_ca_issued_is_trusted(shop):
    run(connect_to(*shop.issue(), shop.der))


def test_a_servers_self_signed_certificate_can_be_the_anchor(tmp_path):
    """The pinned-certificate choice: the server's own certificate is the unit's only anchor."""
    cert, key = self_signed(tmp_path, "server")
    run(connect_to(cert, key, ssl.PEM_cert_to_DER_cert(cert.read_text())))


@pytest.mark.parametrize(
    "issue, host, reason",
    [
        ({}, "localhost", "issued for another host name"),
        ({"valid_days": (-2, -1)}, "127.0.0.1", "has expired"),
        ({"valid_days": (1, 2)}, "127.0.0.1", "not valid yet: is the unit's clock set?"),
    ],
    ids=["host name", "expired", "not yet valid"],
)
def test_each_way_a_certificate_fails_is_named(shop, issue, host, reason):
    with pytest.raises(Untrusted, match=reason):
        run(connect_to(*shop.issue(**issue), shop.der, host))


def test_a_certificate_from_another_ca_is_refused(shop, tmp_path):
    stranger = CertificateAuthority(tmp_path, "stranger")
    with pytest.raises(Untrusted, match="signed by a CA this unit does not trust"):
        run(connect_to(*stranger.issue(), shop.der))


@pytest.mark.parametrize(
    "mbedtls_text, reason",
    [
        ("\nThe certificate is not correctly signed by the trusted CA\n", "does not trust"),
        ("\nThe certificate Common Name (CN) does not match with the expected CN\n", "host"),
        ("\nThe certificate validity has expired\n", "has expired"),
        ("\nThe certificate validity starts in the future\n", "clock set"),
        ("\nThe certificate is missing\n", "failed verification: The certificate is missing"),
    ],
)
def test_mbedtls_verify_texts_as_micropython_raises_them_are_named(mbedtls_text, reason):
    assert reason in str(tls.tls_refusal(ValueError(mbedtls_text)))


def test_wss_without_a_trust_anchor_is_refused_before_connecting():
    with pytest.raises(ValueError, match="needs a TLS trust anchor"):
        run(ws.connect("wss://127.0.0.1:1/ws/device"))
