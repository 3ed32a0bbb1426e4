"""The pieces of the secured set-up that need no servers: certificates, MINIO_CA_FILE, StackInfo.env()."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path

import pytest

from common.settings import ConfigError, Settings
from local.stack import StackInfo
from local.stack.servers import read_state
from local.stack.tls import generate_certificates
from tests.secure.harness import clean_environment

PLAIN = StackInfo(
    workdir="/w", kafka_bootstrap="127.0.0.1:1", kafka_pid=1, kafka_controller_port=2,
    minio_endpoint="127.0.0.1:3", minio_pid=3, minio_console_port=4,
    minio_access_key="ak", minio_secret_key="minio-s3cr3t",
)  # fmt: skip


def _handshake(certs, server_name: str, cafile: Path | None) -> None:
    """One TLS handshake on loopback: a server presenting the generated chain, a verifying client."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(certs.cert_file, certs.key_file)
    client_context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass  # the client refused us: its side raises

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                client_context.wrap_socket(raw, server_hostname=server_name),
            ):
                pass
        finally:
            thread.join(5)


def test_the_generated_certificate_is_trusted_through_the_ca_only_and_for_loopback_only(tmp_path):
    certs = generate_certificates(tmp_path / "tls")
    _handshake(certs, "127.0.0.1", certs.ca_file)
    _handshake(certs, "localhost", certs.ca_file)
    with pytest.raises(ssl.SSLCertVerificationError, match="self-signed certificate in certificate chain"):
        _handshake(certs, "127.0.0.1", None)
    with pytest.raises(ssl.SSLCertVerificationError, match=r"Hostname mismatch|IP address mismatch"):
        _handshake(certs, "example.com", certs.ca_file)
    for private in (certs.key_file, certs.keystore_file):
        assert private.stat().st_mode & 0o077 == 0, f"{private} is readable by others"
    keystore = certs.keystore_file.read_text()
    assert keystore.startswith("-----BEGIN PRIVATE KEY-----") and keystore.count("BEGIN CERTIFICATE") == 2


def test_minio_ca_file_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIO_CA_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match=r"^invalid configuration: MINIO_CA_FILE: Value error, no such"):
        Settings.load()
    monkeypatch.setenv("MINIO_CA_FILE", "")
    assert Settings.load().minio_ca_file is None  # empty means the system's trust store
    certs = generate_certificates(tmp_path / "tls")
    monkeypatch.setenv("MINIO_CA_FILE", str(certs.ca_file))
    assert Settings.load().minio_ca_file == str(certs.ca_file)


def test_a_missing_minio_ca_file_ends_the_cli_with_one_line_and_exit_2(tmp_path):
    env = clean_environment() | {"MINIO_CA_FILE": str(tmp_path / "missing.pem")}
    result = subprocess.run(
        [sys.executable, "-m", "recommender", "init"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    missing = tmp_path / "missing.pem"
    assert result.stderr.strip().splitlines() == [
        f"error: invalid configuration: MINIO_CA_FILE: Value error, no such file (got '{missing}')"
    ]


def test_stack_env_gives_the_documented_variables_in_both_modes(tmp_path):
    assert PLAIN.env() == {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "MINIO_ENDPOINT": "127.0.0.1:3",
        "MINIO_ACCESS_KEY": "ak",
        "MINIO_SECRET_KEY": "minio-s3cr3t",
        "MINIO_SECURE": "false",
    }
    secure = StackInfo(**asdict(PLAIN) | {"ca_file": "/w/tls/ca.pem", "kafka_sasl_username": "app",
                                          "kafka_sasl_password": "kafka-s3cr3t"})  # fmt: skip
    assert secure.env() == PLAIN.env() | {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "app",
        "KAFKA_SASL_PASSWORD": "kafka-s3cr3t",
        "KAFKA_SSL_CA_LOCATION": "/w/tls/ca.pem",
        "MINIO_SECURE": "true",
        "MINIO_CA_FILE": "/w/tls/ca.pem",
    }
    assert "s3cr3t" not in repr(secure)
    # A state file written before the secure fields existed still reads, as a plain stack.
    state = tmp_path / "stack.json"
    new_fields = ("ca_file", "kafka_sasl_username", "kafka_sasl_password")
    state.write_text(json.dumps({k: v for k, v in asdict(PLAIN).items() if k not in new_fields}))
    assert read_state(state) == PLAIN and not read_state(state).secure
