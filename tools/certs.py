"""Certificates for TLS on loopback: a shop's own CA and the server certificates it issues,
as the tests and benchmarks need them (`cryptography`, from the dev extra).

    shop = CertificateAuthority(directory, "shop")
    cert, key = shop.issue()                         # for 127.0.0.1, valid now
    cert, key = shop.issue(hosts=["elsewhere.example"])
    cert, key = shop.issue(valid_days=(-2, -1))      # expired yesterday
    shop.pem, shop.der                               # what clients and units trust
    cert, key = self_signed(directory, "server")     # a server's own, to pin
"""

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(text):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _san(host):
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _certificate(subject, key, issuer, issuer_key, ca, valid_days=None, extensions=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    if valid_days is None:
        start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    else:
        start, end = (now + datetime.timedelta(days=d) for d in valid_days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_key(path, key):
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _server_extensions(hosts):
    return [
        x509.SubjectAlternativeName([_san(h) for h in hosts]),
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
    ]


def self_signed(directory, name, hosts=("127.0.0.1",)):
    """A server certificate for `hosts` signed by its own key (what a unit may pin) ->
    (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(name, key, name, key, ca=False, extensions=_server_extensions(hosts))
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path


class CertificateAuthority:
    """A CA whose certificate is `<directory>/<name>-ca.pem`."""

    def __init__(self, directory, name):
        self.directory = directory
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._cert = _certificate(name, self._key, name, self._key, ca=True)
        self.pem = directory / f"{name}-ca.pem"
        self.pem.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self.der = self._cert.public_bytes(serialization.Encoding.DER)
        self._issued = 0

    def issue(self, hosts=("127.0.0.1",), valid_days=None):
        """A server certificate for `hosts` (addresses or names) -> (cert.pem, key.pem);
        `valid_days` (start, end) in days from now, default a few minutes ago to tomorrow."""
        self._issued += 1
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(
            "qrfleet server",
            key,
            self.name,
            self._key,
            ca=False,
            valid_days=valid_days,
            extensions=_server_extensions(hosts),
        )
        stem = self.directory / f"{self.name}-server-{self._issued}"
        cert_path, key_path = stem.with_suffix(".pem"), stem.with_suffix(".key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return cert_path, key_path
