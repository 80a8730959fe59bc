"""`qrfleet serve --tls-cert --tls-key`: https:// and wss:// on one port, checked by the unit
and the API client against the shop's own CA."""

import datetime
import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firmware.net import ws
from tests.host.conftest import Shop
from tools.serverproc import running_server


def _name(text):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _certificate(subject, key, issuer, issuer_key, ca, extensions=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_ca(directory, name):
    """A CA and a certificate it issued for 127.0.0.1 -> (ca.pem, server.pem, server.key)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(name, ca_key, name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(
        "qrfleet server",
        key,
        name,
        ca_key,
        ca=False,
        extensions=[
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
        ],
    )
    paths = [directory / f"{name}-ca.pem", directory / f"{name}-server.pem"]
    paths.append(directory / f"{name}-server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def trusting(ca_file):
    """A unit's opener whose TLS trusts only `ca_file` (the firmware's own check: CERT_REQUIRED
    and the host name)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca_file)

    def opener(host, port, _default_context):
        return ws.open_tcp(host, port, ssl=context)

    return opener


@pytest.fixture
def tls_server(tmp_path):
    ca, cert, key = make_ca(tmp_path, "shop")
    with running_server(tmp_path, heartbeat_s=1, tls=(cert, key), ca_file=ca) as server:
        yield server


def test_a_unit_over_wss_shows_a_cashiers_qr_requested_over_https(tls_server, background):
    assert tls_server.url.startswith("https://127.0.0.1:")
    assert tls_server.device_url.startswith("wss://127.0.0.1:")
    shop = Shop(tls_server, background)
    agent = shop.agent("till-1")
    unit = shop.unit(1, online=False)
    unit.session.opener = trusting(tls_server.ca_file)
    shop.start(unit)
    shop.link(agent, "till-1", unit)

    doc = agent.post("/api/agents/till-1/qr", {"payload": "upi://pay?pa=shop@bank&am=2.50"})

    assert doc["verified"] and doc["device_id"] == unit.device_id
    assert unit.shown[-1] == ("payment", "upi://pay?pa=shop@bank&am=2.50")
    shop.stop(unit)


def test_a_unit_that_does_not_trust_the_servers_certificate_does_not_connect(
    tls_server, background, tmp_path
):
    stranger_ca = make_ca(tmp_path, "elsewhere")[0]

    with pytest.raises(ssl.SSLCertVerificationError):
        background.run(ws.connect(tls_server.device_url, opener=trusting(stranger_ca)))
    with pytest.raises(ssl.SSLCertVerificationError):
        background.run(ws.connect(tls_server.device_url))  # the system's CAs do not know it
