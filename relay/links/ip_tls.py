"""TLS material for ``tls+tcp://`` IP links: load PEM files or make a self-signed pair per node dir.

TLS here hides metadata (record sizes aside) and headers from the path; it is not what proves who a
peer is. The enrolment handshake inside the connection does that, so a dialler may skip verifying
the listener's TLS certificate (``trusted_pem=None``) without letting a stranger in. Give
``trusted_pem`` (the listener's certificate or its CA) to also refuse a TLS man in the middle.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import pynng
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from relay.errors import ConfigError

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
_VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """This node's TLS certificate and key (PEM), and optionally what it trusts when dialling."""

    cert_pem: str
    key_pem: str
    trusted_pem: str | None = None
    server_name: str = "localhost"


def self_signed(host: str = "localhost") -> TlsMaterial:
    """A fresh EC P-256 certificate for ``host`` (DNS name, plus 127.0.0.1 and ::1)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [
        x509.DNSName(host),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return TlsMaterial(certificate.public_bytes(serialization.Encoding.PEM).decode(), key_pem, None, host)


def ensure_self_signed(directory: Path, host: str = "localhost") -> TlsMaterial:
    """Load ``tls.crt``/``tls.key`` from a node dir, creating them (key mode 0600) on first use."""
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    if not cert_path.exists() and not key_path.exists():
        material = self_signed(host)
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as key_file:
            key_file.write(material.key_pem)
        cert_path.write_text(material.cert_pem)
        return material
    return load(cert_path, key_path, server_name=host)


def load(
    cert_path: Path, key_path: Path, trusted_path: Path | None = None, server_name: str = "localhost"
) -> TlsMaterial:
    """Read PEM files; a missing or unreadable file is a ConfigError naming it."""
    try:
        if key_path.stat().st_mode & 0o077:
            raise ConfigError(f"TLS key {key_path} is readable by other users; run chmod 600 {key_path}")
        trusted = trusted_path.read_text() if trusted_path is not None else None
        return TlsMaterial(cert_path.read_text(), key_path.read_text(), trusted, server_name)
    except OSError as exc:
        raise ConfigError(f"cannot read TLS material: {exc}") from exc


def server_config(material: TlsMaterial) -> pynng.TLSConfig:
    """A new config for one listening socket (pynng configs are not shared between sockets)."""
    return pynng.TLSConfig(
        pynng.TLSConfig.MODE_SERVER, own_key_string=material.key_pem, own_cert_string=material.cert_pem
    )


def client_config(material: TlsMaterial) -> pynng.TLSConfig:
    if material.trusted_pem is None:  # pynng's AUTH_MODE_NONE refuses every server; OPTIONAL does not check
        return pynng.TLSConfig(
            pynng.TLSConfig.MODE_CLIENT,
            server_name=material.server_name,
            auth_mode=pynng.TLSConfig.AUTH_MODE_OPTIONAL,
        )
    return pynng.TLSConfig(
        pynng.TLSConfig.MODE_CLIENT,
        ca_string=material.trusted_pem,
        server_name=material.server_name,
        auth_mode=pynng.TLSConfig.AUTH_MODE_REQUIRED,
    )
