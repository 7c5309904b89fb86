"""The canary: a unique secret value synced through the operator appears nowhere but in the Secret's data.

Not in the operator's log (at debug level), not in any Event, not in the OnePasswordItem (status,
annotations, kopf's progress and last-handled-configuration records) and not in the Secret's or
the Deployment's metadata; checked after a normal sync, a value change, drift repair, annotation
mode and error paths (a Secret conflict, a refused type change).
"""

from __future__ import annotations

import base64
import json
import uuid

from kubernetes import client

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.connect.models import PatchOperation
from opsync.tooling.harness import OperatorProcess
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
