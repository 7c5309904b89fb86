"""opsync.ops.server: /metrics, /healthz and /readyz over real loopback HTTP; bind-address parsing."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from opsync.ops.metrics import CONTENT_TYPE, Metrics
from opsync.ops.server import (
    BindAddress,
    OpsServer,
    parse_bind_address,
)
from opsync.settings import OperatorSettings

LOOPBACK: BindAddress = ("127.0.0.1", 0)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def servers() -> AsyncIterator[list[OpsServer]]:
    started: list[OpsServer] = []
    yield started
    for server in started:
        await server.stop()


@pytest.fixture
def serve(servers: list[OpsServer]) -> Callable[..., OpsServer]:
    def make(**kwargs: Any) -> OpsServer:
        server = OpsServer(**kwargs)
        servers.append(server)
        return server

    return make


async def get(http: aiohttp.ClientSession, port: int | None, path: str) -> tuple[int, str, str]:
    assert port is not None
    async with http.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


# -- parse_bind_address -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (":8080", ("", 8080)),
        ("0.0.0.0:8080", ("0.0.0.0", 8080)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        (":0", ("", 0)),
        ("localhost:9090", ("localhost", 9090)),
        ("[::1]:8081", ("::1", 8081)),
        ("[::]:8081", ("::", 8081)),
        ("  :8081 ", ("", 8081)),
        ("127.0.0.1:65535", ("127.0.0.1", 65535)),
        ("0", None),
        ("", None),
        ("  ", None),
    ],
)
def test_parse_bind_address(value: str, expected: BindAddress | None) -> None:
    assert parse_bind_address(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "8080",
        "abc",
        "127.0.0.1",
        "127.0.0.1:",
        ":http",
        ":-1",
        ":65536",
        ":\uff18\uff10",  # fullwidth digits
        "::1:8080",
        "[::1]",
        "[::1]8080",
        "[]:8080",
        "http://0.0.0.0:8080",
        "a b:8080",
    ],
)
def test_parse_bind_address_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="invalid bind address"):
        parse_bind_address(value)


def test_defaults_are_the_official_operators() -> None:
    defaults = OperatorSettings.model_fields
    assert parse_bind_address(defaults["metrics_bind_address"].default) == ("", 8080)
    assert parse_bind_address(defaults["health_probe_bind_address"].default) == ("", 8081)


# -- serving ------------------------------------------------------------------------------------------


async def test_serves_metrics_and_probes_on_two_ports(
    serve: Callable[..., OpsServer], http: aiohttp.ClientSession
) -> None:
    metrics = Metrics(process_metrics=False)
    metrics.sync_error("ItemNotFound")
    state = {"ready": False}
    server = serve(
        metrics=metrics,
        metrics_address=LOOPBACK,
        health_address=LOOPBACK,
        ready=lambda: (state["ready"], "not leader yet"),
    )
    assert server.metrics_port is None and server.health_port is None
    await server.start()
    assert server.running
    assert server.metrics_port and server.health_port
    assert server.metrics_port != server.health_port

    status, content_type, text = await get(http, server.metrics_port, "/metrics")
    assert status == 200
    assert content_type == CONTENT_TYPE
    assert 'opsync_sync_errors_total{reason="ItemNotFound"} 1.0' in text

    assert await get(http, server.health_port, "/healthz") == (200, "text/plain; charset=utf-8", "ok")
    status, _, text = await get(http, server.health_port, "/readyz")
    assert (status, text) == (503, "not ready: not leader yet")
    state["ready"] = True
    status, _, text = await get(http, server.health_port, "/readyz")
    assert (status, text) == (200, "ok")

    # Each path only on its own listener.
    assert (await get(http, server.health_port, "/metrics"))[0] == 404
    assert (await get(http, server.metrics_port, "/healthz"))[0] == 404
    assert (await get(http, server.metrics_port, "/readyz"))[0] == 404


async def test_metrics_follow_later_changes(
    serve: Callable[..., OpsServer], http: aiohttp.ClientSession
) -> None:
    metrics = Metrics(process_metrics=False)
    server = serve(metrics=metrics, metrics_address=LOOPBACK, health_address=None)
    await server.start()
    _, _, before = await get(http, server.metrics_port, "/metrics")
    metrics.set_tracked(4)
    _, _, after = await get(http, server.metrics_port, "/metrics")
    assert "opsync_tracked_items 0.0" in before
    assert "opsync_tracked_items 4.0" in after


async def test_addresses_as_strings(serve: Callable[..., OpsServer], http: aiohttp.ClientSession) -> None:
    server = serve(metrics=Metrics(process_metrics=False), metrics_address="127.0.0.1:0", health_address="0")
    assert server.metrics_address == ("127.0.0.1", 0)
    assert server.health_address is None
    await server.start()
    assert server.health_port is None
    assert (await get(http, server.metrics_port, "/metrics"))[0] == 200


def test_an_invalid_address_string_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid bind address"):
        OpsServer(metrics=None, metrics_address="8080", health_address=None)
    with pytest.raises(ValueError, match="invalid bind address"):
        OpsServer(metrics=None, metrics_address=None, health_address="localhost")


async def test_head_probe(serve: Callable[..., OpsServer], http: aiohttp.ClientSession) -> None:
    server = serve(metrics=None, metrics_address=None, health_address=LOOPBACK)
    await server.start()
    async with http.head(f"http://127.0.0.1:{server.health_port}/healthz") as response:
        assert response.status == 200


async def test_readiness_variants(serve: Callable[..., OpsServer], http: aiohttp.ClientSession) -> None:
    answers: list[object] = []

    def ready() -> bool | tuple[bool, str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, bool | tuple)
        return answer

    server = serve(metrics=None, metrics_address=None, health_address=LOOPBACK, ready=ready)
    await server.start()
    answers.extend([True, False, (True, "ignored"), RuntimeError("boom"), (False, "x" * 1000)])

    assert (await get(http, server.health_port, "/readyz"))[::2] == (200, "ok")
    assert (await get(http, server.health_port, "/readyz"))[::2] == (503, "not ready")
    assert (await get(http, server.health_port, "/readyz"))[::2] == (200, "ok")
    status, _, text = await get(http, server.health_port, "/readyz")
    assert (status, text) == (503, "not ready: readiness check failed (RuntimeError)")
    assert "boom" not in text
    status, _, text = await get(http, server.health_port, "/readyz")
    assert status == 503
    assert len(text) < 250
    # Liveness never asks the readiness check.
    assert (await get(http, server.health_port, "/healthz"))[0] == 200
    assert answers == []


async def test_without_a_check_it_is_ready(
    serve: Callable[..., OpsServer], http: aiohttp.ClientSession
) -> None:
    server = serve(metrics=None, metrics_address=None, health_address=LOOPBACK)
    await server.start()
    assert (await get(http, server.health_port, "/readyz"))[::2] == (200, "ok")


async def test_disabled_metrics_listener_is_not_bound(
    serve: Callable[..., OpsServer], http: aiohttp.ClientSession
) -> None:
    port = free_port()
    server = serve(
        metrics=Metrics(process_metrics=False),
        metrics_address=parse_bind_address("0"),
        health_address=LOOPBACK,
    )
    await server.start()
    assert server.metrics_port is None
    assert (await get(http, server.health_port, "/healthz"))[0] == 200

    # Without a Metrics the metrics listener stays off, even with an address.
    other = serve(metrics=None, metrics_address=("127.0.0.1", port), health_address=None)
    await other.start()
    assert other.metrics_port is None
    assert not listening(port)


async def test_disabled_health_listener_is_not_bound(
    serve: Callable[..., OpsServer], http: aiohttp.ClientSession
) -> None:
    port = free_port()
    server = serve(
        metrics=Metrics(process_metrics=False),
        metrics_address=LOOPBACK,
        health_address=parse_bind_address(""),
    )
    await server.start()
    assert server.health_port is None
    assert (await get(http, server.metrics_port, "/metrics"))[0] == 200
    assert not listening(port)


async def test_same_address_shares_one_listener(
    serve: Callable[..., OpsServer], http: aiohttp.ClientSession
) -> None:
    port = free_port()
    server = serve(
        metrics=Metrics(process_metrics=False),
        metrics_address=("127.0.0.1", port),
        health_address=("127.0.0.1", port),
    )
    await server.start()
    assert server.metrics_port == server.health_port == port
    for path in ("/metrics", "/healthz", "/readyz"):
        assert (await get(http, port, path))[0] == 200


async def test_stop_releases_the_ports(serve: Callable[..., OpsServer]) -> None:
    server = serve(metrics=Metrics(process_metrics=False), metrics_address=LOOPBACK, health_address=LOOPBACK)
    await server.start()
    ports = (server.metrics_port, server.health_port)
    assert all(port is not None and listening(port) for port in ports)
    await server.stop()
    assert not server.running
    assert server.metrics_port is None and server.health_port is None
    assert not any(port is not None and listening(port) for port in ports)
    await server.stop()  # twice is harmless


async def test_start_twice_is_refused(serve: Callable[..., OpsServer]) -> None:
    server = serve(metrics=None, metrics_address=None, health_address=LOOPBACK)
    await server.start()
    with pytest.raises(RuntimeError, match="already running"):
        await server.start()


async def test_context_manager(http: aiohttp.ClientSession) -> None:
    async with OpsServer(metrics=None, metrics_address=None, health_address=LOOPBACK) as server:
        port = server.health_port
        assert (await get(http, port, "/healthz"))[0] == 200
    assert port is not None and not listening(port)


async def test_a_taken_port_names_the_address_and_binds_nothing(serve: Callable[..., OpsServer]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = serve(
            metrics=Metrics(process_metrics=False),
            metrics_address=LOOPBACK,
            health_address=("127.0.0.1", port),
        )
        with pytest.raises(OSError, match=rf"cannot listen for health probes on 127\.0\.0\.1:{port}"):
            await server.start()
        assert not server.running
        assert server.metrics_port is None and server.health_port is None
