"""The Reconciler's safety rules, through its ports: the in-memory SecretStore (tests/unit/fakes.py)
and the local Connect server in process, over loopback HTTP, with the real ConnectClient.

Each rule of sync/reconcile.py's docstring has a test here: nothing written before everything
was read; a Secret not owned by the target is never touched; a write only on a difference; a
Secret's type never changed; drift restored from the cache without Connect; release, delete and
retain touch only what the target owns, guarded by resourceVersion or uid.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from opsync.core import desired
from opsync.core.desired import Owner
from opsync.core.errors import ConnectError, ConnectUnavailable, KubeError, ServerError, SpecError
from opsync.sync.reconcile import Reconciler, Target, describe_failure, item_target
from tests.unit.fakes import FakeKube, LocalConnect, Write

NS = "apps"
K8S_VAULT = "kubernetesvault00000000001"
DB_ID = "dbcredentials0000000000001"
DB = "vaults/Kubernetes/items/db"
API = "vaults/Kubernetes/items/api"
CUSTOM_TYPE = "opsync.test/custom"


def data() -> dict[str, Any]:
    return {
        "vaults": [
            {
                "id": K8S_VAULT,
                "name": "Kubernetes",
                "items": [
                    {
                        "id": DB_ID,
                        "title": "db",
                        "category": "LOGIN",
                        "fields": [
                            {"id": "username", "type": "STRING", "label": "username", "value": "app"},
                            {"id": "password", "type": "CONCEALED", "label": "password", "value": "first"},
                        ],
                    },
                    {
                        "title": "api",
                        "category": "API_CREDENTIAL",
                        "fields": [
                            {"id": "credential", "type": "CONCEALED", "label": "credential", "value": "tok"}
                        ],
                    },
                ],
            },
            {"name": "Sealed", "items": [{"title": "hidden", "category": "LOGIN"}]},
        ]
    }


@pytest.fixture
async def connect(tmp_path: Path) -> AsyncIterator[LocalConnect]:
    async with LocalConnect(data(), tmp_path, vaults=["Kubernetes"]) as local:
        yield local


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def reconciler(connect: LocalConnect, kube: FakeKube) -> Reconciler:
    return Reconciler(connect=connect.client, kube=kube)


def item(name: str = "db", *, uid: str = "uid-db", **spec: Any) -> Target:
    body: dict[str, Any] = {"metadata": {"name": name, "namespace": NS, "uid": uid}}
    type_ = spec.pop("type", None)
    if type_ is not None:
        body["type"] = type_
    annotations = spec.pop("annotations", None)
    if annotations is not None:
        body["metadata"]["annotations"] = annotations
    body["spec"] = {"itemPath": DB, **spec}
    return item_target(body)


def deployment(name: str, secret: str = "shared", path: str = DB) -> Target:
    return Target(Owner("apps/v1", "Deployment", name, f"uid-{name}"), NS, secret, path)


def writes(kube: FakeKube, since: int = 0) -> list[tuple[str, str]]:
    return [(w.verb, w.name) for w in kube.writes[since:]]


async def rotate(connect: LocalConnect, value: str = "second") -> None:
    await connect.server.store.update_item("Kubernetes", "db", fields={"password": value})


# -- sync --------------------------------------------------------------------------------------------


async def test_a_new_target_creates_its_secret(reconciler: Reconciler, kube: FakeKube) -> None:
    outcome = await reconciler.sync(item())

    assert outcome.action == "created"
    assert outcome.resolved_path == f"vaults/{K8S_VAULT}/items/{DB_ID}"
    assert kube.writes == [Write("create", "Secret", NS, "db", 200)]
    secret = kube.secret(NS, "db")
    assert secret is not None
    assert secret["data"] == {"username": b"app", "password": b"first"}
    assert secret["type"] == "Opaque"
    assert secret["metadata"]["uid"] == outcome.secret_uid
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "onepassword.com/v1", "kind": "OnePasswordItem", "name": "db", "uid": "uid-db"}
    ]
    assert secret["metadata"]["labels"] == {desired.MANAGED_LABEL: "true"}
    assert secret["metadata"]["annotations"][desired.ITEM_VERSION] == "1"


async def test_an_unchanged_item_writes_nothing(reconciler: Reconciler, kube: FakeKube) -> None:
    await reconciler.sync(item())
    before = kube.secret(NS, "db")

    outcome = await reconciler.sync(item())

    assert outcome.action == "unchanged"
    assert writes(kube) == [("create", "db")]
    assert kube.secret(NS, "db") == before


async def test_a_changed_item_is_one_replace(
    reconciler: Reconciler, kube: FakeKube, connect: LocalConnect
) -> None:
    created = await reconciler.sync(item())
    await rotate(connect)

    outcome = await reconciler.sync(item())

    assert outcome.action == "updated" and outcome.data_changed
    assert outcome.changed == ("data", "annotations")  # the item version moved too
    assert writes(kube) == [("create", "db"), ("replace", "db")]
    secret = kube.secret(NS, "db")
    assert secret is not None
    assert secret["data"]["password"] == b"second"
    assert secret["metadata"]["uid"] == created.secret_uid
    assert secret["metadata"]["annotations"][desired.ITEM_VERSION] == "2"


async def test_a_secret_the_target_does_not_own_is_never_touched(
    reconciler: Reconciler, kube: FakeKube
) -> None:
    kube.put_secret(NS, "db", {"password": b"theirs"})
    kube.put_secret(
        NS, "other", {"password": b"theirs"}, owners=[Owner("v1", "OnePasswordItem", "x", "uid-x")]
    )
    foreign, other = kube.secret(NS, "db"), kube.secret(NS, "other")

    for target in (item(), item(secretName="other")):
        with pytest.raises(SpecError) as raised:
            await reconciler.sync(target)
        assert raised.value.reason == "SecretConflict"
        assert describe_failure(raised.value, target).retryable is False

    # Never seen by the watch, so a create was tried first; it was refused, and nothing else sent.
    assert [(w.verb, w.name, w.status) for w in kube.writes] == [
        ("create", "db", 409),
        ("create", "other", 409),
    ]
    assert (kube.secret(NS, "db"), kube.secret(NS, "other")) == (foreign, other)
    assert await reconciler.restore(NS, "db") is None  # nothing cached for drift repair either


async def test_annotated_deployments_naming_one_secret_share_it(
    reconciler: Reconciler, kube: FakeKube
) -> None:
    await reconciler.sync(deployment("web"))
    outcome = await reconciler.sync(deployment("worker"))

    assert outcome.changed == ("ownerReferences",)
    secret = kube.secret(NS, "shared")
    assert secret is not None
    assert [ref["name"] for ref in secret["metadata"]["ownerReferences"]] == ["web", "worker"]
    with pytest.raises(SpecError, match="not managed by this OnePasswordItem"):
        await reconciler.sync(item(secretName="shared"))  # a OnePasswordItem never shares


async def test_a_secret_type_is_never_changed(reconciler: Reconciler, kube: FakeKube) -> None:
    await reconciler.sync(item())
    before = kube.secret(NS, "db")

    with pytest.raises(SpecError) as raised:
        await reconciler.sync(item(type=CUSTOM_TYPE))

    assert raised.value.reason == "TypeChangeRefused"
    assert writes(kube) == [("create", "db")]
    assert kube.secret(NS, "db") == before


@pytest.mark.parametrize("failure", ["server error", "server stopped"])
async def test_a_connect_failure_raises_before_any_write(
    reconciler: Reconciler, kube: FakeKube, connect: LocalConnect, failure: str
) -> None:
    await reconciler.sync(item())
    await rotate(connect)  # a write would be due, if the item could be read
    before = kube.secret(NS, "db")
    if failure == "server error":
        connect.server.faults.error_rate = 1.0
    else:
        await connect.server.stop()

    with pytest.raises(ConnectError) as raised:
        await reconciler.sync(item())

    assert isinstance(raised.value, ServerError if failure == "server error" else ConnectUnavailable)
    assert describe_failure(raised.value, item()).retryable is True
    assert writes(kube) == [("create", "db")]
    assert kube.secret(NS, "db") == before


async def test_a_vault_the_token_cannot_read_writes_nothing(reconciler: Reconciler, kube: FakeKube) -> None:
    with pytest.raises(SpecError) as raised:
        await reconciler.sync(item(itemPath="vaults/Sealed/items/hidden"))

    assert raised.value.reason == "VaultNotFound"
    assert kube.writes == [] and kube.secret(NS, "db") is None


async def test_nothing_is_written_until_every_item_of_a_target_was_read(
    reconciler: Reconciler, kube: FakeKube, connect: LocalConnect
) -> None:
    target = item(items=[{"itemPath": API, "prefix": "api_"}])
    await reconciler.sync(target)
    await rotate(connect)  # the first item changed ...
    await connect.server.store.delete_item("Kubernetes", "api")  # ... and the second is gone
    before = kube.secret(NS, "db")

    with pytest.raises(SpecError) as raised:
        await reconciler.sync(target)

    assert raised.value.reason == "ItemNotFound"
    assert writes(kube) == [("create", "db")]
    assert kube.secret(NS, "db") == before


@pytest.mark.parametrize(
    ("spec", "annotations", "reason"),
    [
        ({"itemPath": "not/a/path"}, None, "InvalidItemPath"),
        ({"itemPath": None}, None, "InvalidItemPath"),
        ({"secretLabels": "not a map"}, None, "InvalidSpec"),
        ({}, {desired.AUTO_RESTART: "maybe"}, "InvalidAnnotation"),
    ],
)
async def test_a_spec_error_reads_and_writes_nothing(
    reconciler: Reconciler,
    kube: FakeKube,
    connect: LocalConnect,
    spec: dict[str, Any],
    annotations: dict[str, str] | None,
    reason: str,
) -> None:
    target = item(annotations=annotations, **spec)
    with pytest.raises(SpecError) as raised:
        await reconciler.sync(target)

    assert raised.value.reason == reason
    assert describe_failure(raised.value, target).retryable is False
    assert (connect.requests(), kube.reads, kube.writes) == (0, 0, [])


# -- the write path ----------------------------------------------------------------------------------


async def test_a_concurrent_change_fails_the_replace_and_is_not_overwritten(
    reconciler: Reconciler, kube: FakeKube, connect: LocalConnect
) -> None:
    await reconciler.sync(item())
    await rotate(connect)

    def meanwhile(verb: str, kind: str, namespace: str, name: str) -> None:
        kube.before_write = None
        kube.edit_secret(namespace, name, lambda body: body["metadata"]["labels"].update(team="payments"))

    kube.before_write = meanwhile
    with pytest.raises(KubeError) as raised:
        await reconciler.sync(item())

    assert raised.value.status == 409
    assert describe_failure(raised.value, item()).retryable is True
    secret = kube.secret(NS, "db")
    assert secret is not None
    assert secret["data"]["password"] == b"first" and secret["metadata"]["labels"]["team"] == "payments"

    outcome = await reconciler.sync(item())  # the retry reads afresh
    assert outcome.action == "updated"
    assert writes(kube) == [("create", "db"), ("replace", "db"), ("replace", "db")]
    assert [w.ok for w in kube.writes] == [True, False, True]


async def test_a_secret_created_meanwhile_is_not_overwritten(reconciler: Reconciler, kube: FakeKube) -> None:
    kube.before_write = lambda *_: kube.put_secret(NS, "db", {"password": b"theirs"})

    with pytest.raises(SpecError) as raised:
        await reconciler.sync(item())

    # The create met the other Secret (409); read, it is not the target's: a conflict, untouched.
    assert raised.value.reason == "SecretConflict"
    assert [(w.verb, w.status) for w in kube.writes] == [("create", 409)]
    secret = kube.secret(NS, "db")
    assert secret is not None and secret["data"] == {"password": b"theirs"}


async def test_a_secret_read_before_a_write_unless_believed_absent(
    reconciler: Reconciler, kube: FakeKube
) -> None:
    """A Secret neither written by this process nor shown by the watch is most likely absent:
    created without a read first (one request less per Secret at a cold start)."""
    await reconciler.sync(item())
    assert (kube.reads, writes(kube)) == (0, [("create", "db")])

    await reconciler.sync(item())  # written by this process: read, compared, nothing written
    assert (kube.reads, writes(kube)) == (1, [("create", "db")])

    kube.put_secret(NS, "seen", {"password": b"old"}, owners=[item(secretName="seen").owner])
    reconciler.note_present(NS, "seen")  # the watch of managed Secrets showed it
    outcome = await reconciler.sync(item(secretName="seen"))
    assert outcome.action == "updated"
    assert (kube.reads, writes(kube, 1)) == (2, [("replace", "seen")])


async def test_a_secret_that_exists_after_all_is_adopted_after_one_refused_create(
    reconciler: Reconciler, kube: FakeKube
) -> None:
    target = item()
    kube.put_secret(NS, "db", {"password": b"old"}, owners=[target.owner])  # e.g. before a restart

    outcome = await reconciler.sync(target)

    assert outcome.action == "updated" and outcome.data_changed
    assert [(w.verb, w.status) for w in kube.writes] == [("create", 409), ("replace", 200)]


async def test_an_update_keeps_what_others_added_and_drops_what_the_owner_dropped(
    reconciler: Reconciler, kube: FakeKube
) -> None:
    await reconciler.sync(item(secretLabels={"tier": "db"}, secretAnnotations={"note": "a"}))
    kube.edit_secret(NS, "db", lambda body: body["metadata"]["annotations"].update({"kubectl.io/by": "me"}))

    outcome = await reconciler.sync(item())

    assert outcome.changed == ("labels", "annotations")
    secret = kube.secret(NS, "db")
    assert secret is not None
    assert secret["metadata"]["labels"] == {desired.MANAGED_LABEL: "true"}
    annotations = secret["metadata"]["annotations"]
    assert annotations["kubectl.io/by"] == "me" and "note" not in annotations


# -- drift repair ------------------------------------------------------------------------------------


async def test_a_hand_edited_secret_is_restored_from_the_cache(
    reconciler: Reconciler, kube: FakeKube, connect: LocalConnect
) -> None:
    await reconciler.sync(item())
    kube.edit_secret(NS, "db", lambda body: body["data"].update(password=b"hacked"))
    asked = connect.requests()

    outcome = await reconciler.restore(NS, "db")

    assert outcome is not None and outcome.action == "updated" and outcome.changed == ("data",)
    assert connect.requests() == asked
    secret = kube.secret(NS, "db")
    assert secret is not None and secret["data"]["password"] == b"first"
    assert writes(kube) == [("create", "db"), ("replace", "db")]
    again = await reconciler.restore(NS, "db")
    assert again is not None and again.action == "unchanged"
    assert len(kube.writes) == 2


async def test_a_deleted_secret_is_recreated_from_the_cache(
    reconciler: Reconciler, kube: FakeKube, connect: LocalConnect
) -> None:
    first = await reconciler.sync(item())
    kube.remove_secret(NS, "db")
    asked = connect.requests()

    outcome = await reconciler.restore(NS, "db")

    assert outcome is not None and outcome.action == "created"
    assert connect.requests() == asked
    assert outcome.secret_uid != first.secret_uid
    secret = kube.secret(NS, "db")
    assert secret is not None and secret["data"] == {"username": b"app", "password": b"first"}


async def test_restore_leaves_unknown_and_foreign_secrets_alone(
    reconciler: Reconciler, kube: FakeKube
) -> None:
    kube.put_secret(NS, "stranger", {"a": b"1"})
    assert await reconciler.restore(NS, "stranger") is None

    await reconciler.sync(item())
    kube.remove_secret(NS, "db")
    kube.put_secret(NS, "db", {"a": b"1"})  # someone else's now
    before = kube.secret(NS, "db")

    assert await reconciler.restore(NS, "db") is None
    assert writes(kube) == [("create", "db")]
    assert kube.secret(NS, "db") == before


async def test_after_a_refused_type_change_the_deleted_secret_comes_back_with_the_new_type(
    reconciler: Reconciler, kube: FakeKube
) -> None:
    await reconciler.sync(item())
    with pytest.raises(SpecError):
        await reconciler.sync(item(type=CUSTOM_TYPE))
    kube.remove_secret(NS, "db")  # as the TypeChangeRefused message says

    outcome = await reconciler.restore(NS, "db")

    assert outcome is not None and outcome.action == "created"
    secret = kube.secret(NS, "db")
    assert secret is not None and secret["type"] == CUSTOM_TYPE


# -- letting go --------------------------------------------------------------------------------------


async def test_release_drops_only_the_target_from_the_owners(reconciler: Reconciler, kube: FakeKube) -> None:
    await reconciler.sync(deployment("web"))
    await reconciler.sync(deployment("worker"))
    writes_before = len(kube.writes)

    assert await reconciler.release(deployment("web")) is True

    assert writes(kube, writes_before) == [("patch", "shared")]
    secret = kube.secret(NS, "shared")
    assert secret is not None
    assert [ref["name"] for ref in secret["metadata"]["ownerReferences"]] == ["worker"]
    assert secret["data"] == {"username": b"app", "password": b"first"}
    assert await reconciler.release(deployment("web")) is False  # not an owner any more
    assert len(kube.writes) == writes_before + 1


async def test_release_is_guarded_by_the_resource_version(reconciler: Reconciler, kube: FakeKube) -> None:
    await reconciler.sync(deployment("web"))
    await reconciler.sync(deployment("worker"))
    kube.before_write = lambda *_: kube.edit_secret(
        NS, "shared", lambda body: body["metadata"]["labels"].update(edited="yes")
    )

    with pytest.raises(KubeError):
        await reconciler.release(deployment("web"))

    kube.before_write = None
    secret = kube.secret(NS, "shared")
    assert secret is not None and len(secret["metadata"]["ownerReferences"]) == 2


async def test_delete_removes_only_a_secret_the_target_owns(reconciler: Reconciler, kube: FakeKube) -> None:
    await reconciler.sync(item())
    kube.put_secret(NS, "foreign", {"a": b"1"})

    assert await reconciler.delete(item(), "foreign") is False
    assert await reconciler.delete(item(uid="uid-someone-else")) is False
    assert writes(kube) == [("create", "db")]

    assert await reconciler.delete(item()) is True
    assert kube.secret(NS, "db") is None
    assert writes(kube) == [("create", "db"), ("delete", "db")]
    assert await reconciler.restore(NS, "db") is None  # forgotten: drift repair does not bring it back
    assert kube.secret(NS, "foreign") is not None


async def test_delete_is_guarded_by_the_uid(reconciler: Reconciler, kube: FakeKube) -> None:
    await reconciler.sync(item())

    def replaced_meanwhile(*_: str) -> None:
        kube.remove_secret(NS, "db")
        kube.put_secret(NS, "db", {"a": b"new"})

    kube.before_write = replaced_meanwhile
    await reconciler.delete(item())

    assert kube.writes[-1] == Write("delete", "Secret", NS, "db", 409)
    secret = kube.secret(NS, "db")
    assert secret is not None and secret["data"] == {"a": b"new"}


async def test_retain_leaves_the_secret_behind_and_a_new_owner_adopts_it(
    reconciler: Reconciler, kube: FakeKube
) -> None:
    created = await reconciler.sync(item(deletionPolicy="Retain"))

    assert await reconciler.retain(item(deletionPolicy="Retain")) is True

    secret = kube.secret(NS, "db")
    assert secret is not None
    assert "ownerReferences" not in secret["metadata"]
    assert desired.MANAGED_LABEL not in secret["metadata"].get("labels", {})
    assert secret["metadata"]["annotations"][desired.RETAINED_FROM] == "OnePasswordItem/db"
    assert secret["data"] == {"username": b"app", "password": b"first"}
    assert await reconciler.restore(NS, "db") is None  # let go of
    assert writes(kube) == [("create", "db"), ("patch", "db")]

    recreated = item(uid="uid-db-again")  # e.g. a GitOps tool re-creating the OnePasswordItem
    outcome = await reconciler.sync(recreated)
    assert outcome.action == "updated" and outcome.secret_uid == created.secret_uid
    secret = kube.secret(NS, "db")
    assert secret is not None
    assert [ref["uid"] for ref in secret["metadata"]["ownerReferences"]] == ["uid-db-again"]
    assert desired.RETAINED_FROM not in secret["metadata"]["annotations"]

    with pytest.raises(SpecError, match="not managed"):  # only the same kind and name adopts it
        await reconciler.sync(item("other", uid="uid-other", secretName="db"))


async def test_retire_lets_go_of_the_secret_of_an_earlier_name(
    reconciler: Reconciler, kube: FakeKube
) -> None:
    await reconciler.sync(item())
    renamed = item(secretName="db-v2")
    await reconciler.sync(renamed)

    assert await reconciler.retire(renamed, "db-v2") is False  # its current name: kept
    assert await reconciler.retire(renamed, "db") is True

    assert kube.secret(NS, "db") is None and kube.secret(NS, "db-v2") is not None
    assert writes(kube) == [("create", "db"), ("create", "db-v2"), ("delete", "db")]


# -- deleted owners --------------------------------------------------------------------------------


async def test_a_sync_for_a_deleted_owner_writes_nothing(
    reconciler: Reconciler, kube: FakeKube, connect: LocalConnect
) -> None:
    target = item()
    reconciler.owner_deleted(target.owner)
    asked = connect.requests()

    outcome = await reconciler.sync(target)

    assert outcome.action == "abandoned"
    assert kube.writes == [] and connect.requests() == asked  # not even Connect is asked


async def test_deletion_wins_over_a_sync_that_read_before_it(
    reconciler: Reconciler, kube: FakeKube, connect: LocalConnect
) -> None:
    """The owner deleted while its sync was reading Connect: the sync writes nothing."""
    target = item()
    original = connect.client.get_item_with_files
    calls: list[str] = []

    async def deleted_meanwhile(*args: Any, **kwargs: Any) -> Any:
        calls.append("read")
        reconciler.owner_deleted(target.owner)
        return await original(*args, **kwargs)

    connect.client.get_item_with_files = deleted_meanwhile  # type: ignore[method-assign]
    outcome = await reconciler.sync(target)

    assert calls == ["read"]
    assert outcome.action == "abandoned" and kube.writes == []


async def test_drift_repair_never_restores_the_secret_of_a_deleted_owner(
    reconciler: Reconciler, kube: FakeKube
) -> None:
    target = item()
    await reconciler.sync(target)
    reconciler.owner_deleted(target.owner)
    kube.remove_secret(NS, "db")  # e.g. the garbage collector

    assert await reconciler.restore(NS, "db") is None
    assert kube.secret(NS, "db") is None and writes(kube) == [("create", "db")]
    assert reconciler.owner_of(NS, "db") is None  # forgotten


async def test_the_secret_of_a_deleted_item_of_the_same_name_is_adopted(
    reconciler: Reconciler, kube: FakeKube
) -> None:
    dead = Owner("onepassword.com/v1", "OnePasswordItem", "db", "uid-dead")
    kube.put_secret(NS, "db", {"password": b"old"}, labels={desired.MANAGED_LABEL: "true"}, owners=[dead])

    outcome = await reconciler.sync(item(uid="uid-new"))

    assert outcome.action == "updated" and "ownerReferences" in outcome.changed
    secret = kube.secret(NS, "db")
    assert secret is not None
    assert [ref["uid"] for ref in secret["metadata"]["ownerReferences"]] == ["uid-new"]


async def test_a_secret_another_kind_or_name_owns_is_still_a_conflict(
    reconciler: Reconciler, kube: FakeKube
) -> None:
    other = Owner("onepassword.com/v1", "OnePasswordItem", "other", "uid-other")
    kube.put_secret(NS, "db", {"password": b"old"}, owners=[other])
    with pytest.raises(SpecError) as raised:
        await reconciler.sync(item(uid="uid-new"))
    assert raised.value.reason == "SecretConflict"


# -- the rollout owed by a data change -------------------------------------------------------------


async def test_a_data_change_marks_the_rollout_owed_in_the_same_write(
    reconciler: Reconciler, kube: FakeKube, connect: LocalConnect
) -> None:
    from opsync.core import workloads
    from opsync.core.mapping import SecretData

    first = await reconciler.sync(item())
    secret = kube.secret(NS, "db")
    assert secret is not None and desired.ROLLOUT_PENDING not in secret["metadata"]["annotations"]  # created

    await rotate(connect)
    changed = await reconciler.sync(item())
    secret = kube.secret(NS, "db")
    assert secret is not None and changed.action == "updated"
    expected = workloads.data_fingerprint(SecretData(secret["data"]), salt=first.secret_uid or "")
    assert secret["metadata"]["annotations"][desired.ROLLOUT_PENDING] == expected

    # The marker is not what the item wants: a sync or a drift repair neither rewrites nor drops it.
    since = len(kube.writes)
    assert (await reconciler.sync(item())).action == "unchanged"
    assert (await reconciler.restore(NS, "db")) is not None and len(kube.writes) == since


def test_a_pending_rollout_is_read_back_from_the_secret() -> None:
    from opsync.sync.restarts import SecretChange

    body = {
        "metadata": {
            "name": "db",
            "namespace": NS,
            "annotations": {desired.ROLLOUT_PENDING: "abc", desired.AUTO_RESTART: "true"},
            "ownerReferences": [
                {"apiVersion": "onepassword.com/v1", "kind": "OnePasswordItem", "name": "db", "uid": "u"}
            ],
        }
    }
    change = SecretChange.pending(body)
    assert change is not None
    assert (change.namespace, change.secret_name, change.fingerprint) == (NS, "db", "abc")
    assert change.owner is not None and change.owner.name == "db"
    assert SecretChange.pending({"metadata": {"name": "db", "namespace": NS}}) is None
