"""A throwaway certificate authority and one server certificate for the secured local stack.

Generated per run with `cryptography`: the CA signs a certificate for the loopback names,
which both Kafka (PEM keystore) and MinIO (`--certs-dir`) present; clients trust the CA file.
Local tooling only: production code never imports this module.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=2)
# A CA that signs certificates and nothing else.
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
)  # fmt: skip


@dataclass(frozen=True)
class Certificates:
    """PEM files of one run: the CA clients trust, the server's chain and its private key."""

    ca_file: Path  # the CA certificate (KAFKA_SSL_CA_LOCATION, MINIO_CA_FILE)
    cert_file: Path  # the server certificate followed by the CA
    key_file: Path  # the server's unencrypted PKCS#8 private key
    keystore_file: Path  # key + chain in one file: Kafka's PEM keystore

    @classmethod
    def in_directory(cls, directory: Path) -> Certificates:
        """Where `generate_certificates(directory)` writes (or wrote) the files."""
        return cls(
            directory / "ca.pem", directory / "server.pem", directory / "server.key",
            directory / "server-keystore.pem",
        )  # fmt: skip


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, data: bytes, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def alternative_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    """IP addresses as IP entries, everything else as DNS names."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def generate_certificates(directory: Path, hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> Certificates:
    """Write a new CA and a server certificate valid for `hosts` (IPs or DNS names) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("streaming-recommender local CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(alternative_names(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # clientAuth too: the broker presents this certificate to its own mTLS controller listener.
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    chain_pem = cert.public_bytes(serialization.Encoding.PEM) + ca_pem
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    files = Certificates.in_directory(directory)
    _write(files.ca_file, ca_pem)
    _write(files.cert_file, chain_pem)
    _write(files.key_file, key_pem, private=True)
    _write(files.keystore_file, key_pem + chain_pem, private=True)
    return files
