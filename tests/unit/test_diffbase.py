"""What kopf keeps of each object: the handled essence in memory, progress only while retrying."""

from __future__ import annotations

import kopf

from opsync.handlers.diffbase import MemoryDiffBaseStorage, ProgressStorage


def body(annotations: dict[str, str], spec: dict[str, str] | None = None) -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": "onepassword.com/v1",
            "kind": "OnePasswordItem",
            "metadata": {"name": "db", "namespace": "ns", "uid": "u1", "annotations": annotations},
            "spec": spec or {"itemPath": "vaults/v/items/i"},
            "status": {"conditions": []},
        }
    )


def test_the_essence_is_kept_in_memory_and_writes_nothing_to_the_object() -> None:
    storage = MemoryDiffBaseStorage()
    handled = body({"team": "a"})
    assert storage.fetch(body=handled) is None  # never handled: a create
    patch = kopf.Patch()
    storage.store(body=handled, patch=patch, essence=storage.build(body=handled))
    assert not patch
    assert storage.fetch(body=handled) == {
        "metadata": {"annotations": {"team": "a"}},
        "spec": {"itemPath": "vaults/v/items/i"},
    }
    storage.forget("u1")
    assert storage.fetch(body=handled) is None and len(storage) == 0


def test_opsync_annotations_are_not_part_of_the_essence() -> None:
    storage = MemoryDiffBaseStorage()
    plain = storage.build(body=body({"team": "a"}))
    forced = storage.build(body=body({"team": "a", "opsync.io/force-sync": "2", "opsync.io/sync_item": "{}"}))
    assert plain == forced
    assert storage.build(body=body({"team": "b"})) != plain  # a user's annotation still counts


def test_progress_of_a_handler_that_succeeded_first_time_writes_nothing() -> None:
    storage = ProgressStorage()
    handled, patch = body({}), kopf.Patch()
    storage.store(key=kopf.HandlerId("sync_item"), record={"success": True}, body=handled, patch=patch)
    storage.purge(key=kopf.HandlerId("sync_item"), body=handled, patch=patch)
    assert not patch  # no record, and no kopf-managed marker either


def test_the_essence_is_kopfs_own_without_copying_what_it_drops() -> None:
    """The build skips copying the status and system metadata; the essence stays kopf's."""

    class Stock(kopf.DiffBaseStorage):
        def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
            return None

        def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
            return None

    full = kopf.Body(
        {
            "apiVersion": "onepassword.com/v1",
            "kind": "OnePasswordItem",
            "metadata": {
                "name": "db",
                "namespace": "ns",
                "uid": "u1",
                "resourceVersion": "7",
                "finalizers": ["onepassword.com/finalizer.secret"],
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
                "labels": {"app": "db"},
                "annotations": {
                    "team": "a",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}",
                },
            },
            "spec": {"itemPath": "vaults/v/items/i", "template": {"data": {"k": "v"}}},
            "type": "Opaque",
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
    )
    ours = MemoryDiffBaseStorage().build(body=full)
    assert ours == Stock().build(body=full)
    assert ours == {
        "metadata": {"labels": {"app": "db"}, "annotations": {"team": "a"}},
        "spec": {"itemPath": "vaults/v/items/i", "template": {"data": {"k": "v"}}},
        "type": "Opaque",
    }
    ours["spec"]["template"]["data"]["k"] = "changed"  # a copy: the body is untouched
    assert full["spec"]["template"]["data"]["k"] == "v"


def test_the_status_and_system_metadata_are_never_copied() -> None:
    """Only what the essence keeps is deep-copied at each watch event: copying the managed
    fields and the status too cost more than the rest of the build."""

    class Uncopyable(dict[str, str]):
        def __deepcopy__(self, memo: object) -> Uncopyable:
            raise AssertionError("deep-copied a part no essence keeps")

    full = body({"team": "a"})
    full["metadata"]["managedFields"] = [Uncopyable(manager="kubectl")]
    full["status"]["conditions"] = [Uncopyable(type="Ready")]
    assert MemoryDiffBaseStorage().build(body=full) == {
        "metadata": {"annotations": {"team": "a"}},
        "spec": {"itemPath": "vaults/v/items/i"},
    }
