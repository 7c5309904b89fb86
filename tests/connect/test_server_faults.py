"""Fault injection on the local Connect server: off by default, switchable at runtime and from the CLI."""

from __future__ import annotations

import random

import aiohttp
import pytest

from opsync.cli import build_parser
from opsync.tooling.connectserver import FaultConfig
from opsync.tooling.connectserver.cli import faults_from_args
from opsync.tooling.connectserver.faults import FaultInjector

K8S = "kubernetesvault00000000001"
DB = "dbcredentials0000000000001"
ITEM = f"/v1/vaults/{K8S}/items/{DB}"


async def test_faults_are_off_by_default(connect_server, server_api):
    assert connect_server.faults == FaultConfig()
    for _ in range(20):
        assert (await server_api.get(ITEM)).status == 200
    assert connect_server.metrics.fault_count() == 0


async def test_server_errors(connect_server, server_api, raw_http):
    connect_server.faults.error_rate = 1.0
    reply = await server_api.get(ITEM)
    assert (reply.status, reply.json()) == (500, {"status": 500, "message": "Something went wrong"})
    assert reply.headers["1Password-Connect-Version"] == "1.8.1"
    unauthenticated = await raw_http(connect_server, None).get("/v1/vaults")
    assert unauthenticated.status == 500
    assert (await raw_http(connect_server, None).get("/heartbeat")).status == 200
    assert (await raw_http(connect_server, None).get("/health")).status == 200
    assert connect_server.request_count("/v1/vaults/{vaultUuid}/items/{itemUuid}", 500) == 1
    assert connect_server.metrics.fault_count("error") == 2
    connect_server.faults.error_rate = 0.0
    assert (await server_api.get(ITEM)).status == 200


async def test_rate_limits_carry_retry_after(connect_server, server_api):
    connect_server.faults.rate_limit_rate = 1.0
    connect_server.faults.retry_after_seconds = 3
    reply = await server_api.get(ITEM)
    assert reply.status == 429
    assert reply.json()["status"] == 429
    assert reply.headers["Retry-After"] == "3"


async def test_dropped_connections(connect_server, server_api):
    connect_server.faults.drop_rate = 1.0
    with pytest.raises(aiohttp.ClientError):
        await server_api.get(ITEM)
    with pytest.raises(aiohttp.ClientError):
        await server_api.post(f"/v1/vaults/{K8S}/items", {"category": "LOGIN"})
    connect_server.faults.reset()
    assert (await server_api.get(ITEM)).status == 200
    assert connect_server.request_count("/v1/vaults/{vaultUuid}/items/{itemUuid}", "dropped") >= 1
    assert connect_server.metrics.fault_count("drop") >= 2
    assert connect_server.store.get_vault("Kubernetes").content_version == 1


async def test_transient_403_hits_vault_requests_only(connect_server, server_api):
    connect_server.faults.transient_403_rate = 1.0
    reply = await server_api.get(ITEM)
    assert (reply.status, reply.json()) == (
        403,
        {"status": 403, "message": "Authorization: token does not have access to vault"},
    )
    assert (await server_api.get("/v1/vaults")).status == 200
    assert connect_server.activity.records()[1].result == "DENY"


async def test_budget_limits_how_many_faults_are_injected(connect_server, server_api):
    connect_server.faults = FaultConfig(error_rate=1.0, budget=2)
    statuses = [(await server_api.get(ITEM)).status for _ in range(4)]
    assert statuses == [500, 500, 200, 200]
    assert connect_server.faults.budget == 0


async def test_latency_is_added_and_counted(connect_server, server_api):
    connect_server.faults.latency_seconds = 0.01
    assert (await server_api.get(ITEM)).status == 200
    assert connect_server.metrics.fault_count("latency") == 1


async def test_faults_given_at_start(connect_server_factory, raw_http):
    server = await connect_server_factory({"vaults": [{"name": "V"}]}, faults=FaultConfig(error_rate=1.0))
    assert (await raw_http(server, server.issue_token(["V"])).get("/v1/vaults")).status == 500


def test_invalid_fault_configs_are_refused():
    for config in (
        FaultConfig(error_rate=1.5),
        FaultConfig(drop_rate=-0.1),
        FaultConfig(latency_seconds=-1),
        FaultConfig(budget=-1),
    ):
        with pytest.raises(ValueError):
            config.validate()


def test_rates_between_0_and_1_are_probabilities():
    injector = FaultInjector(FaultConfig(error_rate=0.25), random.Random(7))
    hits = sum(injector.roll("error") for _ in range(2000))
    assert 400 < hits < 600
    assert not any(injector.roll("drop") for _ in range(100))


def test_fault_flags_on_the_command_line():
    args = build_parser().parse_args(
        [
            "connect-server",
            "--data",
            "x.yaml",
            "--latency",
            "0.2",
            "--error-rate",
            "0.1",
            "--rate-limit-rate",
            "0.2",
            "--retry-after",
            "5",
            "--drop-rate",
            "0.3",
            "--transient-403-rate",
            "0.4",
        ]
    )
    assert faults_from_args(args) == FaultConfig(
        latency_seconds=0.2,
        error_rate=0.1,
        rate_limit_rate=0.2,
        retry_after_seconds=5,
        drop_rate=0.3,
        transient_403_rate=0.4,
    )
