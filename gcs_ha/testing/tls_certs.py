"""Certificates for TLS tests: a CA and one certificate it signs, as PEM files.

`write_certs(dir, hosts)` makes a fresh CA and a certificate for `hosts` (IP addresses
become IP subject alternative names, anything else DNS names) usable as both server and
client certificate, and returns the environment Ray (and gcs-ha) read them from:
RAY_USE_TLS=1, RAY_TLS_SERVER_CERT, RAY_TLS_SERVER_KEY, RAY_TLS_CA_CERT.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gcs_ha.ray_tls import CA_ENV, CERT_ENV, KEY_ENV, USE_TLS_ENV

VALID = datetime.timedelta(days=2)


def write_certs(directory: Path, hosts: Sequence[str]) -> dict[str, str]:
    """Write ca.crt, server.crt and server.key under `directory`; Ray's TLS environment."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gcs-ha test CA")])
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ray-internal")])
    usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        _builder(name, ca_name, key.public_key(), now)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {CA_ENV: directory / "ca.crt", CERT_ENV: directory / "server.crt"}
    paths[KEY_ENV] = directory / "server.key"
    paths[CA_ENV].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[CERT_ENV].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[KEY_ENV].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[KEY_ENV].chmod(0o600)
    return {USE_TLS_ENV: "1", **{name: str(path) for name, path in paths.items()}}


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID)
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)
