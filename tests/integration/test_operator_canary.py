"""The canary: a unique secret value synced through the operator appears nowhere but in the Secret's data.

Not in the operator's log (at debug level), not in any Event, not in the OnePasswordItem (status,
annotations, kopf's progress and last-handled-configuration records) and not in the Secret's or
the Deployment's metadata; checked after a normal sync, a value change, drift repair, annotation
mode and error paths (a Secret conflict, a refused type change). A OnePasswordConnection's token
likewise: nowhere but in its Secret's data (not in the connection's status either, nor in /metrics),
through a sync, polls, a missing token key and a rotation.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
from kubernetes import client

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.connect.models import PatchOperation
from opsync.core import connection as conn
from opsync.tooling.harness import ConnectServerProcess, OperatorProcess
from tests.integration.helpers import (
    ITEM_NAME,
    ITEM_PATH,
    LOCKED_VAULT_ID,
    VAULT,
    deployment,
    eventually,
    new_item,
    secret_ready,
)


def needles(value: str) -> list[str]:
    """The value, its distinctive part, and the forms it takes in Secret data and JSON."""
    distinctive = value.rsplit("-", 1)[-1]
    return [value, distinctive, base64.b64encode(value.encode()).decode(), json.dumps(value)[1:-1]]


def haystacks(
    kube: Kube, api_client: client.ApiClient, operator: OperatorProcess, namespace: str
) -> dict[str, str]:
    """Everything the value must not reach, as text, by where it comes from."""
    found: dict[str, str] = {"operator log": operator.logs()}
    for event in kube.core.list_namespaced_event(namespace).items:
        found[f"Event {event.metadata.name}"] = json.dumps(api_client.sanitize_for_serialization(event))
    for item in kube.custom.list_namespaced_custom_object(
        "onepassword.com", "v1", namespace, "onepassworditems"
    )["items"]:
        found[f"OnePasswordItem {item['metadata']['name']}"] = json.dumps(item)
    for secret in kube.core.list_namespaced_secret(namespace).items:
        meta = api_client.sanitize_for_serialization(secret.metadata)
        found[f"Secret {secret.metadata.name} metadata"] = json.dumps(meta)
    for workload in kube.apps.list_namespaced_deployment(namespace).items:
        found[f"Deployment {workload.metadata.name}"] = json.dumps(
            api_client.sanitize_for_serialization(workload)
        )
    return found


def assert_nowhere(values: list[str], places: dict[str, str]) -> None:
    leaks = [
        (where, needle)
        for value in values
        for needle in needles(value)
        for where, text in places.items()
        if needle in text
    ]
    assert not leaks, f"secret value leaked into: {sorted({where for where, _ in leaks})}"


async def test_a_synced_value_appears_in_no_log_event_status_or_annotation(
    operator: OperatorProcess,
    op_namespace: str,
    kube: Kube,
    connect: ConnectClient,
    api_client: client.ApiClient,
) -> None:
    first = f"canary-{uuid.uuid4().hex}"
    second = f"canary-{uuid.uuid4().hex}"
    item = await new_item(connect, username="canary-user", password=first)
    path = f"vaults/{VAULT}/items/{item.title}"

    # A normal sync, by title, with the CR's labels and annotations.
    kube.create_item(op_namespace, "canary", path, labels={"team": "a"}, annotations={"note": "n"})
    await eventually(lambda: secret_ready(kube, op_namespace, "canary"))
    assert (kube.secret_data(op_namespace, "canary") or {}).get("password") == first.encode()

    # Annotation mode on the same item.
    kube.apps.create_namespaced_deployment(
        op_namespace, deployment("canary-app", annotations={ITEM_PATH: path, ITEM_NAME: "canary-app"})
    )
    await eventually(
        lambda: (kube.secret_data(op_namespace, "canary-app") or {}).get("password") == first.encode()
    )

    # Drift repair of an edited value.
    kube.core.patch_namespaced_secret(
        "canary", op_namespace, {"data": {"password": base64.b64encode(b"tampered").decode()}}
    )
    await eventually(
        lambda: (kube.secret_data(op_namespace, "canary") or {}).get("password") == first.encode()
    )
    await eventually(lambda: [e for e in kube.events(op_namespace, "canary") if e.reason == "DriftRepaired"])
    assert_nowhere([first], haystacks(kube, api_client, operator, op_namespace))

    # The value changes in 1Password; a change of the CR makes the operator re-read it.
    await connect.patch_item(
        str(item.vault.id),
        str(item.id),
        [PatchOperation(op="replace", path="/fields/password/value", value=second)],
    )
    kube.patch_item(op_namespace, "canary", {"metadata": {"labels": {"team": "b"}}})
    await eventually(
        lambda: (kube.secret_data(op_namespace, "canary") or {}).get("password") == second.encode()
    )

    # Error paths while the value is in play: the Secret becomes foreign (SecretConflict) ...
    kube.core.patch_namespaced_secret(
        "canary",
        op_namespace,
        [{"op": "remove", "path": "/metadata/ownerReferences"}],
    )
    kube.patch_item(op_namespace, "canary", {"metadata": {"labels": {"team": "c"}}})
    await eventually(lambda: (kube.ready(op_namespace, "canary") or {}).get("reason") == "SecretConflict")
    # ... and a refused type change on a second item of the same value.
    kube.create_item(op_namespace, "canary-typed", path)
    await eventually(lambda: secret_ready(kube, op_namespace, "canary-typed"))
    kube.patch_item(op_namespace, "canary-typed", {"type": "kubernetes.io/basic-auth"})
    await eventually(
        lambda: (kube.ready(op_namespace, "canary-typed") or {}).get("reason") == "TypeChangeRefused"
    )
    await eventually(lambda: [e for e in kube.events(op_namespace, "canary") if e.reason == "SecretConflict"])
    # ... and a retryable failure, so that kopf keeps a progress record (retries, message).
    kube.create_item(op_namespace, "canary-retry", f"vaults/{LOCKED_VAULT_ID}/items/sealed")

    def progress_recorded() -> list[str]:
        annotations = kube.item(op_namespace, "canary-retry")["metadata"].get("annotations") or {}
        return [key for key in annotations if key.startswith("opsync.io/")]

    await eventually(progress_recorded)

    places = haystacks(kube, api_client, operator, op_namespace)
    # The checks look where the value would be if it leaked: kopf's records are there, and the
    # needles do find the value where it belongs (the Secret's data).
    full_secret = json.dumps(api_client.sanitize_for_serialization(kube.secret(op_namespace, "canary")))
    assert any(needle in full_secret for needle in needles(second))
    assert '"opsync.io/sync_item"' in places["OnePasswordItem canary-retry"]  # kopf's retry record
    assert any(where.startswith("Event ") for where in places)
    assert_nowhere([first, second], places)


def token_needles(token: str) -> list[str]:
    """A Connect token (a JWT) and the forms it could leak in: whole, its signature, base64 (Secret
    data, as a Kubernetes object would show it) and a bearer header."""
    return [token, token.rsplit(".", 1)[-1], base64.b64encode(token.encode()).decode(), f"Bearer {token}"]


async def test_a_connection_token_appears_in_no_log_event_status_metric_or_annotation(
    operator: OperatorProcess,
    op_namespace: str,
    kube: Kube,
    connect_server: ConnectServerProcess,
    connect: ConnectClient,
    api_client: client.ApiClient,
) -> None:
    own = connect_server.token
    tokens = [connect_server.issue_token([VAULT]), connect_server.issue_token([VAULT])]
    connect_server.token = own  # the other tests keep the session's token
    item = await new_item(connect, username="conn-user", password=f"canary-{uuid.uuid4().hex}")

    def token_secret(value: str) -> None:
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name="canary-token"), string_data={"token": value}
        )
        try:
            kube.core.create_namespaced_secret(op_namespace, body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            kube.core.replace_namespaced_secret("canary-token", op_namespace, body)

    def connection_object(name: str, key: str) -> dict[str, Any]:
        return {
            "apiVersion": conn.API_VERSION,
            "kind": conn.KIND,
            "metadata": {"name": name, "annotations": {"note": "n"}},
            "spec": {
                "host": connect_server.url,
                "tokenSecretRef": {"name": "canary-token", "key": key},
                "pollingInterval": 1,
            },
        }

    def connection_ready(name: str) -> dict[str, Any] | None:
        body = kube.custom.get_namespaced_custom_object(
            conn.GROUP, conn.VERSION, op_namespace, conn.PLURAL, name
        )
        return next(
            (c for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None
        )

    token_secret(tokens[0])
    objects = kube.custom
    objects.create_namespaced_custom_object(
        conn.GROUP, conn.VERSION, op_namespace, conn.PLURAL, connection_object("canary-conn", "token")
    )
    objects.create_namespaced_custom_object(
        conn.GROUP, conn.VERSION, op_namespace, conn.PLURAL, connection_object("canary-broken", "nope")
    )
    path = f"vaults/{VAULT}/items/{item.title}"
    for name, ref in (("canary-conn-item", "canary-conn"), ("canary-broken-item", "canary-broken")):
        objects.create_namespaced_custom_object(
            "onepassword.com",
            "v1",
            op_namespace,
            "onepassworditems",
            {
                "apiVersion": "onepassword.com/v1",
                "kind": "OnePasswordItem",
                "metadata": {"name": name},
                "spec": {"itemPath": path, "connectionRef": {"name": ref}},
            },
        )
    await eventually(lambda: secret_ready(kube, op_namespace, "canary-conn-item"))
    await eventually(lambda: (connection_ready("canary-conn") or {}).get("reason") == "Connected")
    await eventually(
        lambda: (kube.ready(op_namespace, "canary-broken-item") or {}).get("reason") == "TokenNotFound"
    )
    await eventually(lambda: (connection_ready("canary-broken") or {}).get("reason") == "TokenNotFound")

    # Rotation: the second token replaces the first; polls (every second) go on with it.
    token_secret(tokens[1])
    await eventually(lambda: "the token in its Secret changed" in operator.logs())
    await eventually(lambda: (connection_ready("canary-conn") or {}).get("reason") == "Connected")

    places = haystacks(kube, api_client, operator, op_namespace)
    for body in objects.list_namespaced_custom_object(conn.GROUP, conn.VERSION, op_namespace, conn.PLURAL)[
        "items"
    ]:
        places[f"{conn.KIND} {body['metadata']['name']}"] = json.dumps(body)
    async with httpx.AsyncClient() as http:
        places["metrics"] = (await http.get(operator.metrics_url, timeout=10)).text
    assert 'connection="' + op_namespace + '/canary-conn"' in places["metrics"]
    # The needles find a token where it belongs (its Secret's data) ...
    full_secret = json.dumps(api_client.sanitize_for_serialization(kube.secret(op_namespace, "canary-token")))
    assert any(needle in full_secret for needle in token_needles(tokens[1]))
    # ... and nowhere else: not in the log, Events, items, connections, Secrets' metadata, metrics.
    leaks = [
        where
        for token in (*tokens, own)
        for needle in token_needles(token)
        for where, text in places.items()
        if needle in text
    ]
    assert not leaks, f"a Connect token leaked into: {sorted(set(leaks))}"
