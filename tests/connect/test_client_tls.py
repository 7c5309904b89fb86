"""TLS: verification is on by default, a custom CA bundle makes a private CA trusted, and it can be off."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from opsync.connect import ConnectClient, ConnectConfig
from opsync.errors import ConnectUnavailable


@pytest.fixture(autouse=True)
def _no_connect_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("OP_CONNECT_", "OPSYNC_CONNECT_")):
            monkeypatch.delenv(name)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A private CA (ca.pem) and a server certificate for 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("opsync test CA"))
        .issuer_name(_name("opsync test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_path, cert_path, key_path


@pytest.fixture
async def tls_url(pki: tuple[Path, Path, Path]) -> AsyncIterator[str]:
    """An HTTPS server on loopback answering ``GET /heartbeat`` like Connect."""
    _, cert_path, key_path = pki
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)

    async def heartbeat(_request: web.Request) -> web.Response:
        return web.Response(text=".")

    app = web.Application()
    app.router.add_get("/heartbeat", heartbeat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_unknown_ca_is_refused_by_default(tls_url: str) -> None:
    async with ConnectClient(ConnectConfig(host=tls_url, token="t", max_retries=0)) as client:
        with pytest.raises(ConnectUnavailable, match="could not be reached") as caught:
            await client.heartbeat()
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value.__cause__)


async def test_custom_ca_bundle_is_trusted(tls_url: str, pki: tuple[Path, Path, Path]) -> None:
    config = ConnectConfig(host=tls_url, token="t", ca_bundle=pki[0])
    async with ConnectClient(config) as client:
        await client.heartbeat()


async def test_verification_can_be_turned_off(tls_url: str) -> None:
    async with ConnectClient(ConnectConfig(host=tls_url, token="t", tls_verify=False)) as client:
        await client.heartbeat()
