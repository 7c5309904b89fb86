"""TLS: verification is on by default, a custom CA bundle makes a private CA trusted, and it can be off."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from pydantic import SecretStr

from opsync.connect.client import ConnectClient
from opsync.connect.config import ConnectConfig
from opsync.core.errors import ConfigError, ConnectUnavailable
from opsync.tooling.controlplane import write_pki


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A private CA and a serving certificate for 127.0.0.1 it signed (the control plane's PKI)."""
    write_pki(tmp_path)
    return tmp_path / "ca.crt", tmp_path / "apiserver.crt", tmp_path / "apiserver.key"


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


async def test_custom_ca_as_pem_text_is_trusted(tls_url: str, pki: tuple[Path, Path, Path]) -> None:
    """A OnePasswordConnection's caSecretRef gives the CA certificates as text, not as a file."""
    config = ConnectConfig(host=tls_url, token="t", ca_pem=pki[0].read_text())
    async with ConnectClient(config) as client:
        await client.heartbeat()
    assert "ca_pem" not in config.model_dump()  # never dumped with the settings


def test_ca_pem_that_is_not_pem_is_refused() -> None:
    with pytest.raises(ConfigError, match="not valid PEM"):
        ConnectConfig(host="https://connect.example", token="t", ca_pem="not a certificate")


async def test_a_rotated_token_is_sent_from_the_next_request() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json=[])

    config = ConnectConfig(host="http://connect.example", token="first", max_retries=0)
    async with ConnectClient(config, transport=httpx.MockTransport(answer)) as client:
        await client.list_vaults()
        client.set_token(SecretStr("second"))
        await client.list_vaults()
        with pytest.raises(ConfigError, match="whitespace"):
            client.set_token(SecretStr("not a token"))
        await client.list_vaults()
        assert "second" not in repr(client) and "second" not in repr(client.config)
    assert seen == ["Bearer first", "Bearer second", "Bearer second"]
