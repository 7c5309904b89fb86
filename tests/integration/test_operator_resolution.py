"""Item paths end to end: 26-character titles, duplicate titles, forbidden vaults, malformed paths."""

from __future__ import annotations

import json
import uuid

import pytest
from kubernetes import client

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.tooling.harness import OperatorProcess
from tests.integration.helpers import LOCKED_VAULT_ID, VAULT, eventually, new_item, secret_ready, vault


async def test_a_26_character_title_is_tried_as_an_id_then_as_a_title(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    title = "".join(c for c in uuid.uuid4().hex if c.isalpha()).ljust(26, "z")[:26]
    assert len(title) == 26 and title.islower()
    item = await new_item(connect, title=title, key="long-title")
    assert item.id != title
    kube.create_item(op_namespace, "long", f"vaults/{VAULT}/items/{title}")

    await eventually(lambda: secret_ready(kube, op_namespace, "long"))
    assert kube.secret_data(op_namespace, "long") == {"key": b"long-title"}
    assert kube.item(op_namespace, "long")["status"]["itemPath"] == f"vaults/{item.vault.id}/items/{item.id}"


async def test_an_id_wins_over_a_title_that_looks_like_another_items_id(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    target = await new_item(connect, key="by-id")
    await new_item(connect, title=str(target.id), key="by-title")
    kube.create_item(op_namespace, "byid", f"vaults/{VAULT}/items/{target.id}")
    await eventually(lambda: secret_ready(kube, op_namespace, "byid"))
    assert kube.secret_data(op_namespace, "byid") == {"key": b"by-id"}


async def test_among_duplicate_titles_the_oldest_item_wins(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    title = f"twin-{uuid.uuid4().hex[:8]}"
    first = await new_item(connect, title=title, which="first")
    second = await new_item(connect, title=title, which="second")
    third = await new_item(connect, title=title, which="third")
    assert first.created_at and second.created_at and third.created_at
    assert first.created_at < second.created_at < third.created_at

    kube.create_item(op_namespace, "twins", f"vaults/{VAULT}/items/{title}")
    await eventually(lambda: secret_ready(kube, op_namespace, "twins"))
    assert kube.secret_data(op_namespace, "twins") == {"which": b"first"}
    assert kube.item(op_namespace, "twins")["status"]["itemPath"].endswith(f"/items/{first.id}")

    # Once the oldest is gone, the next oldest is the one (picked up on the next reconcile).
    await connect.delete_item(first.vault.id, str(first.id))
    kube.patch_item(op_namespace, "twins", {"metadata": {"labels": {"poke": "1"}}})
    await eventually(lambda: kube.secret_data(op_namespace, "twins") == {"which": b"second"})


async def test_a_vault_by_title_is_matched_ignoring_case(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, key="any-case")
    kube.create_item(op_namespace, "anycase", f"vaults/{VAULT.upper()}/items/{item.title}")
    await eventually(lambda: secret_ready(kube, op_namespace, "anycase"))
    assert (await vault(connect)).id in kube.item(op_namespace, "anycase")["status"]["itemPath"]


async def test_a_vault_outside_the_tokens_scope_is_reported_with_what_to_fix(
    operator: OperatorProcess, op_namespace: str, kube: Kube
) -> None:
    kube.create_item(op_namespace, "locked", f"vaults/{LOCKED_VAULT_ID}/items/sealed")

    condition = await eventually(lambda: kube.ready(op_namespace, "locked"))
    assert (condition["status"], condition["reason"]) == ("False", "Forbidden"), condition
    assert LOCKED_VAULT_ID in condition["message"]
    # A 403 may pass (Connect answers one for a moment now and then): first it is retried (the
    # first Warning says so), and only a 403 that lasts past the retry gets the grant advice.

    def advised() -> dict[str, str] | None:
        found = kube.ready(op_namespace, "locked")
        return found if found and "grant" in found["message"] else None

    lasting = await eventually(advised, within=30)
    assert lasting["reason"] == "Forbidden" and "access" in lasting["message"], lasting
    assert kube.secret(op_namespace, "locked") is None
    events = await eventually(
        lambda: [e for e in kube.events(op_namespace, "locked") if e.reason == "Forbidden"]
    )
    assert events[0].type == "Warning"
    first = min(events, key=lambda e: e.first_timestamp or e.event_time or e.metadata.creation_timestamp)
    assert "retrying" in (first.message or "") and "grant" not in (first.message or ""), first.message


MALFORMED = (
    f"vaults/{VAULT}/items",
    f"{VAULT}/some-item",
    f"vaults/{VAULT}/items/a/b",
    f"vaults/{VAULT}/items/",
    f"vault/{VAULT}/item/x",
)


async def test_malformed_paths_are_refused_with_the_expected_form_and_leave_the_secret_alone(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    # The CRD validates itemPath, so the API server refuses a malformed path outright, with a
    # message saying the expected form (the operator's own check covers CRDs without it).
    for path in MALFORMED:
        with pytest.raises(client.ApiException) as refused:
            kube.create_item(op_namespace, "malformed", path)
        assert refused.value.status == 422
        assert (
            "vaults/<vault id or title>/items/<item id or title>" in json.loads(refused.value.body)["message"]
        )
    assert kube.secret(op_namespace, "malformed") is None

    item = await new_item(connect, key="kept")
    kube.create_item(op_namespace, "good", f"vaults/{VAULT}/items/{item.title}")
    await eventually(lambda: secret_ready(kube, op_namespace, "good"))
    before = kube.secret(op_namespace, "good")
    assert before is not None
    for path in MALFORMED:
        with pytest.raises(client.ApiException) as refused:
            kube.patch_item(op_namespace, "good", {"spec": {"itemPath": path}})
        assert refused.value.status == 422
    after = kube.secret(op_namespace, "good")
    assert after is not None
    assert after.metadata.resource_version == before.metadata.resource_version
    assert kube.secret_data(op_namespace, "good") == {"key": b"kept"}


async def test_fixing_a_bad_path_makes_the_item_ready(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, key="fixed")
    kube.create_item(op_namespace, "fixme", f"vaults/{VAULT}/items/not-{item.title}")
    condition = await eventually(lambda: kube.ready(op_namespace, "fixme"))
    assert (condition["status"], condition["reason"]) == ("False", "ItemNotFound")

    kube.patch_item(op_namespace, "fixme", {"spec": {"itemPath": f"vaults/{VAULT}/items/{item.title}"}})
    condition = await eventually(lambda: secret_ready(kube, op_namespace, "fixme"))
    assert condition["message"].startswith("Secret fixme created")
    assert kube.secret_data(op_namespace, "fixme") == {"key": b"fixed"}
    await eventually(lambda: [e for e in kube.events(op_namespace, "fixme") if e.reason == "Synced"])


async def test_updating_the_item_metadata_updates_the_secret(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, key="value")
    kube.create_item(
        op_namespace, "relabel", f"vaults/{VAULT}/items/{item.title}", labels={"a": "1", "b": "2"}
    )
    await eventually(lambda: secret_ready(kube, op_namespace, "relabel"))

    kube.patch_item(op_namespace, "relabel", {"metadata": {"labels": {"a": "changed", "b": None, "c": "3"}}})

    def relabelled() -> bool:
        secret = kube.secret(op_namespace, "relabel")
        assert secret is not None
        return secret.metadata.labels == {"a": "changed", "c": "3", "opsync.io/managed": "true"}

    await eventually(relabelled)
    assert kube.secret_data(op_namespace, "relabel") == {"key": b"value"}
