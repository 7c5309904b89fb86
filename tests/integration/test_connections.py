"""Several Connect servers and tokens in one cluster: OnePasswordConnection and ClusterOnePasswordConnection.

This module runs two Connect servers of its own (``alpha`` and ``bravo``, each with a vault
``Integration`` holding an item ``db`` whose password differs) and an operator watching ``ocn-*``
polling every two seconds, whose own default connection is ``alpha``. Each test that stops or
re-keys a server runs one more server of its own, so the module's servers' request counters only
count what their tests did.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from bench.kube import Kube
from opsync.core import connection as conn
from opsync.tooling.connectserver.tokens import generate_signing_key
from opsync.tooling.harness import ConnectServerProcess, OperatorProcess, request_delta
from tests.conftest import REPO, Cluster
from tests.integration.helpers import (
    ITEM_NAME,
    ITEM_PATH,
    VAULT,
    deployment,
    eventually,
    running_operator,
    secret_ready,
    start_connect,
    watched_namespace,
)

PREFIX = "ocn-"
INTERVAL = 2.0
ITEM = "db"


def data(password: str) -> dict[str, Any]:
    """Connect data: a vault ``Integration`` (the same name on every server) with ``db``."""
    return {
        "vaults": [
            {
                "name": VAULT,
                "items": [
                    {
                        "title": ITEM,
                        "category": "LOGIN",
                        "fields": [{"label": "password", "value": password, "type": "CONCEALED"}],
                    }
                ],
            }
        ]
    }


@pytest.fixture(scope="module")
def alpha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectServerProcess]:
    server = start_connect(tmp_path_factory.mktemp("alpha"), data=data("alpha-value"), vaults=[VAULT])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bravo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectServerProcess]:
    server = start_connect(tmp_path_factory.mktemp("bravo"), data=data("bravo-value"), vaults=[VAULT])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster,
    crds_installed: None,
    alpha: ConnectServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    with running_operator(
        cluster,
        alpha,
        tmp_path_factory.mktemp("operator"),
        namespace_prefix=PREFIX,
        env={"POLLING_INTERVAL": str(int(INTERVAL)), "OPSYNC_CONNECT_MAX_RETRIES": "1"},
    ) as process:
        yield process


@pytest.fixture
def kube(api_client: client.ApiClient) -> Kube:
    return Kube(api_client)


@pytest.fixture
def ns_a(api_client: client.ApiClient, operator: OperatorProcess) -> Iterator[str]:
    with watched_namespace(api_client, operator) as name:
        yield name


@pytest.fixture
def ns_b(api_client: client.ApiClient, operator: OperatorProcess) -> Iterator[str]:
    with watched_namespace(api_client, operator) as name:
        yield name


# -- builders --------------------------------------------------------------------------------------


def token_secret(
    api_client: client.ApiClient, namespace: str, token: str, name: str = "connect-token"
) -> None:
    core = client.CoreV1Api(api_client)
    body = client.V1Secret(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace), string_data={"token": token}
    )
    try:
        core.create_namespaced_secret(namespace, body)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
        core.replace_namespaced_secret(name, namespace, body)


def connection(api_client: client.ApiClient, namespace: str, name: str, server: ConnectServerProcess) -> None:
    token_secret(api_client, namespace, server.token)
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        conn.GROUP,
        conn.VERSION,
        namespace,
        conn.PLURAL,
        {
            "apiVersion": conn.API_VERSION,
            "kind": conn.KIND,
            "metadata": {"name": name},
            "spec": {"host": server.url, "tokenSecretRef": {"name": "connect-token"}},
        },
    )


def item(api_client: client.ApiClient, namespace: str, name: str, ref: dict[str, str] | None) -> None:
    spec: dict[str, Any] = {"itemPath": f"vaults/{VAULT}/items/{ITEM}"}
    if ref is not None:
        spec["connectionRef"] = ref
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "onepassword.com",
        "v1",
        namespace,
        "onepassworditems",
        {
            "apiVersion": "onepassword.com/v1",
            "kind": "OnePasswordItem",
            "metadata": {"name": name},
            "spec": spec,
        },
    )


def connection_status(api_client: client.ApiClient, namespace: str | None, name: str) -> dict[str, Any]:
    api = client.CustomObjectsApi(api_client)
    if namespace is None:
        body = api.get_cluster_custom_object(conn.GROUP, conn.VERSION, conn.CLUSTER_PLURAL, name)
    else:
        body = api.get_namespaced_custom_object(conn.GROUP, conn.VERSION, namespace, conn.PLURAL, name)
    return dict(body.get("status") or {})


def ready_of(status: dict[str, Any], kind: str = "Ready") -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def password(kube: Kube, namespace: str, name: str) -> bytes | None:
    found = kube.secret_data(namespace, name)
    return found.get("password") if found else None


def refused(kube: Kube, namespace: str, name: str, reason: str) -> dict[str, Any] | None:
    condition = kube.ready(namespace, name)
    return (
        condition
        if condition and condition["status"] == "False" and condition.get("reason") == reason
        else None
    )


def rekey(server: ConnectServerProcess) -> ConnectServerProcess:
    """Revoke every token ``server`` issued: restart it with a new signing key, then issue a new token."""
    server.stop()
    document = yaml.safe_load(server.data_path.read_text())
    document["server"]["signingKey"] = generate_signing_key()
    server.data_path.write_text(yaml.safe_dump(document))
    restarted = server.restart()
    restarted.issue_token([VAULT])
    return restarted


# -- the tests -------------------------------------------------------------------------------------


async def test_each_namespace_reads_with_its_own_connection(
    api_client: client.ApiClient,
    kube: Kube,
    alpha: ConnectServerProcess,
    bravo: ConnectServerProcess,
    ns_a: str,
    ns_b: str,
) -> None:
    connection(api_client, ns_a, "team", alpha)
    connection(api_client, ns_b, "team", bravo)
    item(api_client, ns_a, "db", {"name": "team"})
    item(api_client, ns_b, "db", {"name": "team"})
    await eventually(lambda: secret_ready(kube, ns_a, "db"))
    await eventually(lambda: secret_ready(kube, ns_b, "db"))
    assert password(kube, ns_a, "db") == b"alpha-value"
    assert password(kube, ns_b, "db") == b"bravo-value"

    status = await eventually(
        lambda: (
            (s := connection_status(api_client, ns_b, "team"))
            and (ready_of(s) or {}).get("status") == "True"
            and s
        )
    )
    assert ready_of(status)["reason"] == "Connected"
    assert [v["name"] for v in status["vaults"]] == [VAULT]
    assert set(status["vaults"][0]) == {"id", "name"}
    assert status["lastPollTime"]

    # Idle: one GET /v1/vaults per interval on bravo, nothing else.
    before = bravo.requests()
    await asyncio.sleep(5 * INTERVAL)
    delta = request_delta(before, bravo.requests())
    print(f"idle, {5 * INTERVAL:.0f} s at a {INTERVAL:.0f} s interval: {delta}")
    assert set(delta) <= {("GET", "/v1/vaults")}, delta
    assert 3 <= delta.get(("GET", "/v1/vaults"), 0) <= 6, delta


async def test_another_namespaces_connection_is_refused_without_a_request(
    api_client: client.ApiClient, kube: Kube, ns_a: str, ns_b: str, tmp_path: Path
) -> None:
    theirs = start_connect(tmp_path / "theirs", data=data("their-value"), vaults=[VAULT])
    try:
        connection(api_client, ns_b, "theirs", theirs)
        before = theirs.requests()
        item(api_client, ns_a, "stolen", {"name": "theirs", "namespace": ns_b})
        condition = await eventually(lambda: refused(kube, ns_a, "stolen", "ConnectionNotAllowed"))
        assert f"serves namespace {ns_b} only" in condition["message"]
        await asyncio.sleep(2 * INTERVAL)  # a retry round, too
        assert kube.secret(ns_a, "stolen") is None
        delta = request_delta(before, theirs.requests())
        assert not delta, f"requests made to the other namespace's server: {delta}"
    finally:
        theirs.stop()


async def test_a_missing_connection_says_so_and_is_picked_up_once_created(
    api_client: client.ApiClient, kube: Kube, bravo: ConnectServerProcess, ns_a: str
) -> None:
    item(api_client, ns_a, "later", {"name": "later"})
    await eventually(lambda: refused(kube, ns_a, "later", "ConnectionNotFound"))
    connection(api_client, ns_a, "later", bravo)
    await eventually(lambda: secret_ready(kube, ns_a, "later"), within=4 * INTERVAL + 10)
    assert password(kube, ns_a, "later") == b"bravo-value"


async def test_a_cluster_connection_serves_the_labelled_namespaces_only(
    api_client: client.ApiClient,
    kube: Kube,
    bravo: ConnectServerProcess,
    ns_a: str,
    ns_b: str,
) -> None:
    name = f"shared-{uuid.uuid4().hex[:6]}"
    label = {"opsync.io/test-connect": name}
    token_secret(api_client, ns_a, bravo.token, name="shared-token")
    api = client.CustomObjectsApi(api_client)
    api.create_cluster_custom_object(
        conn.GROUP,
        conn.VERSION,
        conn.CLUSTER_PLURAL,
        {
            "apiVersion": conn.API_VERSION,
            "kind": conn.CLUSTER_KIND,
            "metadata": {"name": name},
            "spec": {
                "host": bravo.url,
                "tokenSecretRef": {"namespace": ns_a, "name": "shared-token"},
                "namespaceSelector": {"matchLabels": label},
            },
        },
    )
    core = client.CoreV1Api(api_client)
    try:
        core.patch_namespace(ns_a, {"metadata": {"labels": label}})
        ref = {"kind": conn.CLUSTER_KIND, "name": name}
        item(api_client, ns_a, "shared", ref)
        item(api_client, ns_b, "shared", ref)
        await eventually(lambda: secret_ready(kube, ns_a, "shared"))
        assert password(kube, ns_a, "shared") == b"bravo-value"
        condition = await eventually(lambda: refused(kube, ns_b, "shared", "ConnectionNotAllowed"))
        assert f"does not allow namespace {ns_b}" in condition["message"]
        assert kube.secret(ns_b, "shared") is None

        # Relabelling takes effect: ns_b allowed now, ns_a no longer (its Secret kept as it is).
        kept = kube.secret(ns_a, "shared")
        assert kept is not None
        core.patch_namespace(ns_b, {"metadata": {"labels": label}})
        core.patch_namespace(ns_a, {"metadata": {"labels": {"opsync.io/test-connect": None}}})
        await eventually(lambda: secret_ready(kube, ns_b, "shared"), within=4 * INTERVAL + 10)
        assert password(kube, ns_b, "shared") == b"bravo-value"
        await eventually(
            lambda: refused(kube, ns_a, "shared", "ConnectionNotAllowed"), within=4 * INTERVAL + 10
        )
        after = kube.secret(ns_a, "shared")
        assert after is not None and after.metadata.resource_version == kept.metadata.resource_version
    finally:
        api.delete_cluster_custom_object(conn.GROUP, conn.VERSION, conn.CLUSTER_PLURAL, name)


async def test_token_rotation_and_an_outage_of_one_connections_server(
    api_client: client.ApiClient,
    kube: Kube,
    operator: OperatorProcess,
    ns_a: str,
    tmp_path: Path,
) -> None:
    server = start_connect(tmp_path / "rotating", data=data("rotating-value"), vaults=[VAULT])
    try:
        connection(api_client, ns_a, "rotating", server)
        item(api_client, ns_a, "rot", {"name": "rotating"})
        await eventually(lambda: secret_ready(kube, ns_a, "rot"))
        version = kube.secret(ns_a, "rot").metadata.resource_version  # type: ignore[union-attr]
        pid = operator.pid

        # Rotation: the old token revoked on the server (every one it signed), the new one in the Secret.
        server = rekey(server)
        token_secret(api_client, ns_a, server.token)
        await eventually(
            lambda: (
                (ready_of(connection_status(api_client, ns_a, "rotating")) or {}).get("reason") == "Connected"
                and not ready_of(kube.item(ns_a, "rot").get("status") or {}, "Fresh")
                and request_delta({}, server.requests()).get(("GET", "/v1/vaults"), 0) >= 2
            ),
            within=6 * INTERVAL + 10,
        )
        assert operator.pid == pid and operator.running()
        assert kube.secret(ns_a, "rot").metadata.resource_version == version  # type: ignore[union-attr]
        assert server.token not in operator.logs()

        # An outage of several polls: nothing written; the connection and the item say why.
        server.stop()
        fresh = await eventually(
            lambda: ready_of(kube.item(ns_a, "rot").get("status") or {}, "Fresh"), within=4 * INTERVAL + 30
        )
        assert fresh["status"] == "False" and fresh["reason"] == "ConnectUnavailable"
        assert f"{conn.KIND} {ns_a}/rotating failing since" in fresh["message"]
        down = ready_of(connection_status(api_client, ns_a, "rotating"))
        assert down is not None and down["status"] == "False" and down["reason"] == "ConnectUnavailable"
        await asyncio.sleep(3 * INTERVAL)
        assert kube.ready(ns_a, "rot")["status"] == "True"  # type: ignore[index]
        assert kube.secret(ns_a, "rot").metadata.resource_version == version  # type: ignore[union-attr]

        server = server.restart()
        returned = time.monotonic()
        await eventually(
            lambda: ready_of(kube.item(ns_a, "rot").get("status") or {}, "Fresh") is None or None,
            within=INTERVAL * 1.1 + 8,
        )
        recovered = time.monotonic() - returned
        print(f"recovered {recovered:.1f} s after the server returned (interval {INTERVAL} s)")
        assert kube.secret(ns_a, "rot").metadata.resource_version == version  # type: ignore[union-attr]
    finally:
        server.stop()


async def test_without_the_default_connection_an_item_naming_none_is_refused(
    cluster: Cluster,
    crds_installed: None,
    api_client: client.ApiClient,
    kube: Kube,
    alpha: ConnectServerProcess,
    tmp_path: Path,
) -> None:
    with (
        running_operator(
            cluster,
            alpha,
            tmp_path / "no-default",
            namespace_prefix="ocz-",
            args=("--default-connection", "false"),
            env={"POLLING_INTERVAL": str(int(INTERVAL))},
        ) as strict,
        watched_namespace(api_client, strict) as namespace,
    ):
        item(api_client, namespace, "plain", None)
        condition = await eventually(lambda: refused(kube, namespace, "plain", "NoConnection"))
        assert "spec.connectionRef" in condition["message"]
        # With a connection it syncs as usual.
        connection(api_client, namespace, "team", alpha)
        item(api_client, namespace, "named", {"name": "team"})
        await eventually(lambda: secret_ready(kube, namespace, "named"))
        assert password(kube, namespace, "named") == b"alpha-value"
        assert kube.secret(namespace, "plain") is None
        assert "(no default connection)" not in strict.logs()  # OP_CONNECT_HOST is set here


async def test_an_annotated_deployment_reads_through_its_connection(
    api_client: client.ApiClient, kube: Kube, bravo: ConnectServerProcess, ns_a: str
) -> None:
    connection(api_client, ns_a, "team", bravo)
    annotations = {
        ITEM_PATH: f"vaults/{VAULT}/items/{ITEM}",
        ITEM_NAME: "app-db",
        conn.CONNECTION_ANNOTATION: "team",
    }
    kube.apps.create_namespaced_deployment(ns_a, deployment("app", annotations=annotations))
    await eventually(lambda: password(kube, ns_a, "app-db") == b"bravo-value")


async def test_a_connection_is_polled_while_used_and_its_deletion_keeps_the_secrets(
    api_client: client.ApiClient, kube: Kube, operator: OperatorProcess, ns_a: str, tmp_path: Path
) -> None:
    server = start_connect(tmp_path / "lifecycle", data=data("lifecycle-value"), vaults=[VAULT])
    try:
        connection(api_client, ns_a, "life", server)
        for name in ("one", "two"):
            item(api_client, ns_a, name, {"name": "life"})
        for name in ("one", "two"):
            await eventually(lambda name=name: secret_ready(kube, ns_a, name))  # type: ignore[misc]
        label = f"{ns_a}/life"
        await eventually(lambda: operator.metric("opsync_connection_tracked_items", connection=label) == 2)
        kept = kube.secret(ns_a, "two").metadata.resource_version  # type: ignore[union-attr]
        await eventually(lambda: operator.metric("opsync_connection_polls_total", connection=label) > 0)

        # Deleted while in use: its items keep their Secrets and say why (Fresh=False).
        client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
            conn.GROUP, conn.VERSION, ns_a, conn.PLURAL, "life"
        )
        fresh = await eventually(
            lambda: ready_of(kube.item(ns_a, "two").get("status") or {}, "Fresh"), within=4 * INTERVAL + 10
        )
        assert fresh["reason"] == "ConnectionNotFound", fresh
        assert kube.ready(ns_a, "two")["status"] == "True"  # type: ignore[index]
        assert kube.secret(ns_a, "two").metadata.resource_version == kept  # type: ignore[union-attr]

        # Back again: polls resume; then the last item goes and polling stops.
        connection(api_client, ns_a, "life", server)
        await eventually(
            lambda: ready_of(kube.item(ns_a, "two").get("status") or {}, "Fresh") is None or None,
            within=4 * INTERVAL + 10,
        )
        for name in ("one", "two"):
            kube.delete_item(ns_a, name)
        await eventually(lambda: not kube.items(ns_a))
        await asyncio.sleep(INTERVAL * 1.5)
        before = server.requests()
        await asyncio.sleep(3 * INTERVAL)
        assert not request_delta(before, server.requests()), "a connection no item uses is still polled"
        assert "no longer polled: no item uses it any more" in operator.logs()
        # Its series went with it (the polls counter had counted several).
        assert operator.metric("opsync_connection_polls_total", connection=label) == 0
    finally:
        server.stop()


async def test_a_token_rotated_between_polls_is_used_by_the_next_sync(
    api_client: client.ApiClient, kube: Kube, ns_a: str, tmp_path: Path
) -> None:
    server = start_connect(tmp_path / "between", data=data("between-value"), vaults=[VAULT])
    try:
        connection(api_client, ns_a, "slow", server)
        client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
            conn.GROUP, conn.VERSION, ns_a, conn.PLURAL, "slow", {"spec": {"pollingInterval": 3600}}
        )
        item(api_client, ns_a, "first", {"name": "slow"})
        await eventually(lambda: secret_ready(kube, ns_a, "first"))
        # Its first poll (3 s after it opened) is done: the next one is an hour away.
        await eventually(
            lambda: (ready_of(connection_status(api_client, ns_a, "slow")) or {}).get("reason") == "Connected"
        )
        server = rekey(server)  # the old token revoked
        token_secret(api_client, ns_a, server.token)
        item(api_client, ns_a, "second", {"name": "slow"})
        # The first attempt meets 401, re-reads the Secret; kopf's retry (5 s later) succeeds.
        await eventually(lambda: secret_ready(kube, ns_a, "second"), within=30)
        assert password(kube, ns_a, "second") == b"between-value"
    finally:
        server.stop()


async def test_a_connection_moved_to_another_server_is_reopened(
    api_client: client.ApiClient, kube: Kube, ns_a: str, tmp_path: Path
) -> None:
    old = start_connect(tmp_path / "old", data=data("old-value"), vaults=[VAULT])
    new = start_connect(tmp_path / "new", data=data("new-value"), vaults=[VAULT])
    try:
        connection(api_client, ns_a, "moving", old)
        item(api_client, ns_a, "moved", {"name": "moving"})
        await eventually(lambda: password(kube, ns_a, "moved") == b"old-value")
        token_secret(api_client, ns_a, new.token)
        client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
            conn.GROUP, conn.VERSION, ns_a, conn.PLURAL, "moving", {"spec": {"host": new.url}}
        )
        await eventually(lambda: password(kube, ns_a, "moved") == b"new-value", within=6 * INTERVAL + 10)
        await eventually(
            lambda: (
                (ready_of(connection_status(api_client, ns_a, "moving")) or {}).get("reason") == "Connected"
            )
        )
        assert secret_ready(kube, ns_a, "moved")
    finally:
        old.stop()
        new.stop()


async def test_without_the_connection_crds_only_the_items_naming_one_are_refused(
    api_client: client.ApiClient, kube: Kube, operator: OperatorProcess, ns_a: str
) -> None:
    """An older install (the chart's new CRDs not applied): opsync runs on; an item naming no
    connection syncs as ever, one naming a connection says why it cannot. Last in this module: it
    deletes the CRDs (and with them every connection), and installs them again at the end."""
    extensions = client.ApiextensionsV1Api(api_client)
    names = [f"{plural}.{conn.GROUP}" for plural in (conn.PLURAL, conn.CLUSTER_PLURAL)]
    logged = len(operator.logs())

    def gone() -> bool:
        found = {crd.metadata.name for crd in extensions.list_custom_resource_definition().items}
        return not found & set(names)

    try:
        for name in names:
            extensions.delete_custom_resource_definition(name)
        await eventually(gone)
        item(api_client, ns_a, "plain", None)
        item(api_client, ns_a, "named", {"name": "team"})
        await eventually(lambda: secret_ready(kube, ns_a, "plain"))
        assert password(kube, ns_a, "plain") == b"alpha-value"
        condition = await eventually(lambda: refused(kube, ns_a, "named", "ConnectionNotFound"))
        assert "CRDs are installed" in condition["message"]
        assert kube.secret(ns_a, "named") is None
        assert operator.running()
        assert "Traceback" not in operator.logs()[logged:]
    finally:
        kube.install_crds([REPO / "crds" / "connections.yaml"])
