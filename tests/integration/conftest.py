"""Fixtures for operator tests: a real Connect server process and real operator processes.

The operator runs as ``opsync run`` in a subprocess against the session's
control plane and a ``opsync connect-server`` subprocess, exactly as a user
runs them; its log goes to a file the tests can read (the canary test does).
Each operator watches a namespace glob, so several can run side by side with
different flags without acting on each other's objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client, config
from prometheus_client.parser import text_string_to_metric_families

from opsync.connect.client import ConnectClient
from opsync.connect.config import ConnectConfig
from opsync.core import crd
from opsync.tooling.controlplane import free_port
from tests.conftest import Cluster

T = TypeVar("T")

VAULT = "Integration"
OTHER_VAULT = "Other"
LOCKED_VAULT_ID = "lockedvault000000000000001"

DATA: dict[str, Any] = {
    "vaults": [
        {"name": VAULT, "description": "items the integration tests sync", "items": []},
        {"name": OTHER_VAULT, "items": []},
        {"id": LOCKED_VAULT_ID, "name": "Locked", "items": [{"title": "sealed", "category": "LOGIN"}]},
    ]
}


@dataclass
class ConnectProcess:
    url: str
    token: str
    data_path: Path
    process: subprocess.Popen[bytes]

    def config(self, **overrides: Any) -> ConnectConfig:
        return ConnectConfig(
            host=self.url, token=self.token, backoff_initial=0.05, backoff_max=0.2, **overrides
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def requests(self) -> dict[tuple[str, str], int]:
        """The server's own request counter, by (method, endpoint template); its probes left out."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            text = response.read().decode()
        counts: dict[tuple[str, str], int] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name != "opsync_connect_server_requests_total":
                    continue
                key = (sample.labels["method"], sample.labels["endpoint"])
                if key[1] not in ("/metrics", "/heartbeat", "/health"):
                    counts[key] = counts.get(key, 0) + int(sample.value)
        return counts


def request_delta(
    before: dict[tuple[str, str], int], after: dict[tuple[str, str], int]
) -> dict[tuple[str, str], int]:
    """Requests made between two readings of ConnectProcess.requests(), without zeros."""
    return {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"process exited with {process.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def start_connect(
    directory: Path, *, vaults: list[str] | None = None, data: dict[str, Any] | None = None
) -> ConnectProcess:
    """A Connect server on ``data`` (default: :data:`DATA`), with a token for ``vaults``."""
    directory.mkdir(parents=True, exist_ok=True)
    data_path = directory / "connect-data.yaml"
    data_path.write_text(yaml.safe_dump(DATA if data is None else data))
    opsync = [sys.executable, "-m", "opsync", "connect-server"]
    port = free_port()
    with (directory / "connect.log").open("wb") as log:
        process = subprocess.Popen(
            [*opsync, "--data", str(data_path), "--port", str(port), "--quiet"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/heartbeat", process)
    scope = [arg for vault in (vaults or [VAULT, OTHER_VAULT]) for arg in ("--vault", vault)]
    token = subprocess.run(
        [*opsync, "issue-token", "--data", str(data_path), *scope], check=True, capture_output=True, text=True
    ).stdout.strip()
    return ConnectProcess(url, token, data_path, process)


@pytest.fixture(scope="session")
def connect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectProcess]:
    server = start_connect(tmp_path_factory.mktemp("connect"))
    yield server
    server.stop()


@dataclass
class OperatorProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    namespace_prefix: str
    extra_env: dict[str, str] = field(default_factory=dict)
    metrics_url: str = ""
    health_url: str = ""

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample on the operator's /metrics (0 when absent)."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def polls(self) -> float:
        return self.metric("opsync_polls_total")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_operator(
    cluster: Cluster,
    connect: ConnectProcess,
    directory: Path,
    *,
    namespace_prefix: str,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    standby: bool = False,
) -> OperatorProcess:
    """``opsync run`` watching ``<namespace_prefix>*``; returns once it watches new namespaces,
    or with ``standby`` once it waits for another replica's Lease."""
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / f"operator-{namespace_prefix}.log"
    metrics_port, health_port = free_port(), free_port()
    full_env = {
        # Leader election on, as in production; a Lease of its own per operator process
        # unless the test gives one (env) to make replicas compete.
        "OPSYNC_LEASE_NAME": f"opsync-test-{uuid.uuid4().hex[:10]}",
        "OPSYNC_LEASE_DURATION": "6",
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "OP_CONNECT_HOST": connect.url,
        "OP_CONNECT_TOKEN": connect.token,
        "WATCH_NAMESPACE": f"{namespace_prefix}*",
        "POLLING_INTERVAL": "3600",
        "OPSYNC_CONNECT_BACKOFF_INITIAL": "0.05",
        "OPSYNC_CONNECT_BACKOFF_MAX": "0.2",
        "OPSYNC_DRIFT_RESYNC_SECONDS": "0.2",
        **(env or {}),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "opsync",
                "run",
                "--metrics-bind-address",
                f"127.0.0.1:{metrics_port}",
                "--health-probe-bind-address",
                f"127.0.0.1:{health_port}",
                "--log-level",
                "debug",
                *args,
            ],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    operator = OperatorProcess(
        process,
        log_path,
        namespace_prefix,
        env or {},
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        health_url=f"http://127.0.0.1:{health_port}",
    )
    try:
        if standby:
            assert wait_log(operator, "standing by: another replica holds Lease"), operator.logs()[-3000:]
            return operator
        assert wait_log(operator, "Starting the watch-stream for namespaces.v1 cluster-wide"), (
            operator.logs()[-3000:]
        )
        _wait_watching_new_namespaces(cluster, operator)
    except BaseException:
        operator.stop()
        raise
    return operator


def wait_log(operator: OperatorProcess, line: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while line not in operator.logs():
        assert operator.process.poll() is None, f"operator exited:\n{operator.logs()[-3000:]}"
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _wait_watching_new_namespaces(cluster: Cluster, operator: OperatorProcess) -> None:
    """Return once a namespace created now is noticed by the operator.

    kopf lists namespaces once, then starts a watch that lists them again and ignores that
    second listing, so a namespace created between the two is not watched until it changes.
    A probe namespace created after the first listing shows when the watch is live: its
    resources get watched; a probe lost in that window is replaced by another.
    """
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core = client.CoreV1Api(api)
    try:
        for _attempt in range(10):
            probe = make_namespace(api, f"{operator.namespace_prefix}probe-")
            try:
                if wait_log(operator, f"onepassworditems.v1.onepassword.com in {probe!r}", timeout=3):
                    return
            finally:
                core.delete_namespace(probe)
        raise AssertionError(f"operator never noticed a new namespace:\n{operator.logs()[-3000:]}")
    finally:
        api.close()


@contextlib.contextmanager
def running_operator(
    cluster: Cluster, connect: ConnectProcess, directory: Path, **options: Any
) -> Iterator[OperatorProcess]:
    """An operator process (see start_operator) that is stopped however the block ends."""
    process = start_operator(cluster, connect, directory, **options)
    try:
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def watched_namespace(api_client: client.ApiClient, operator: OperatorProcess) -> Iterator[str]:
    """A new namespace that ``operator`` watches, deleted at the end."""
    name = make_namespace(api_client, operator.namespace_prefix)
    try:
        yield name
    finally:
        client.CoreV1Api(api_client).delete_namespace(name)


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster,
    crds_installed: None,
    connect_server: ConnectProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    process = start_operator(
        cluster, connect_server, tmp_path_factory.mktemp("operator"), namespace_prefix="op-"
    )
    yield process
    process.stop()


def make_namespace(api_client: client.ApiClient, prefix: str) -> str:
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    client.CoreV1Api(api_client).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


@pytest.fixture
def op_namespace(api_client: client.ApiClient, operator: OperatorProcess) -> Iterator[str]:
    """A namespace watched by the session's operator."""
    with watched_namespace(api_client, operator) as name:
        yield name


@pytest.fixture
async def connect(connect_server: ConnectProcess) -> AsyncIterator[ConnectClient]:
    async with ConnectClient(connect_server.config()) as api:
        yield api


async def eventually(
    check: Callable[[], T | None] | Callable[[], Awaitable[T | None]], within: float = 30.0
) -> T:
    """Poll ``check`` until it returns something truthy; fail with the last error after ``within`` s."""
    deadline = time.monotonic() + within
    last: BaseException | None = None
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result  # type: ignore[return-value]
        except (AssertionError, client.ApiException) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s") from last
        await asyncio.sleep(0.2)


class Kube:
    """Small helpers over the kubernetes client for the tests."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)

    def create_item(self, namespace: str, name: str, item_path: str | None, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"apiVersion": crd.API_VERSION, "kind": crd.KIND, "metadata": {"name": name}}
        if item_path is not None:
            body["spec"] = {"itemPath": item_path}
        for key, value in extra.items():
            if key in ("labels", "annotations"):
                body["metadata"][key] = value
            else:
                body[key] = value
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            crd.GROUP, crd.VERSION, namespace, crd.PLURAL, body
        )
        return result

    def item(self, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(
            crd.GROUP, crd.VERSION, namespace, crd.PLURAL, name
        )
        return result

    def patch_item(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(crd.GROUP, crd.VERSION, namespace, crd.PLURAL, name, patch)

    def delete_item(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(crd.GROUP, crd.VERSION, namespace, crd.PLURAL, name)

    def ready(self, namespace: str, name: str) -> dict[str, Any] | None:
        for condition in (self.item(namespace, name).get("status") or {}).get("conditions") or []:
            if condition["type"] == "Ready":
                return dict(condition)
        return None

    def secret(self, namespace: str, name: str) -> client.V1Secret | None:
        try:
            return self.core.read_namespaced_secret(name, namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        import base64

        secret = self.secret(namespace, name)
        if secret is None:
            return None
        return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}

    def events(self, namespace: str, name: str) -> list[client.CoreV1Event]:
        events = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        ).items
        return list(events)


@pytest.fixture
def kube(api_client: client.ApiClient) -> Kube:
    return Kube(api_client)
