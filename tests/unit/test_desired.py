"""The desired Secret: what is built, what counts as a difference, whose it is, which annotations go on it."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from opsync.core import desired
from opsync.core.desired import DesiredSecret, Owner, SecretState
from opsync.core.mapping import SecretData

CR = Owner("onepassword.com/v1", "OnePasswordItem", "db", "uid-cr")
APP = Owner("apps/v1", "Deployment", "app", "uid-app")
WORKER = Owner("apps/v1", "Deployment", "worker", "uid-worker")
PATH = "vaults/v0000000000000000000000001/items/i0000000000000000000000001"
DATA = SecretData({"password": b"pw"})


def build(
    *,
    owner: Owner = CR,
    type_: str | None = None,
    data: SecretData = DATA,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    copy_annotations: bool = False,
    version: int = 3,
) -> DesiredSecret:
    return desired.build(
        owner=owner,
        namespace="ns",
        name="db",
        type_=type_,
        data=data,
        resolved_path=PATH,
        item_version=version,
        owner_labels=labels,
        owner_annotations=annotations,
        copy_annotations=copy_annotations,
    )


def state(wanted: DesiredSecret, **changes: object) -> SecretState:
    """The Secret as the cluster holds it after ``wanted`` was written, with ``changes``."""
    fields: dict[str, object] = {
        "namespace": wanted.namespace,
        "name": wanted.name,
        "type": wanted.type,
        "data": wanted.data,
        "labels": dict(wanted.labels),
        "annotations": wanted.merged_annotations(None),
        "owner_uids": frozenset({wanted.owner.uid}),
        "owner_references": (wanted.owner,),
        "resource_version": "7",
        "uid": "uid-secret",
    }
    fields.update(changes)
    return SecretState(**fields)  # type: ignore[arg-type]


# -- build ---------------------------------------------------------------------------------------


def test_build_sets_the_official_annotations_labels_and_type() -> None:
    wanted = build(labels={"team": "payments"}, type_="kubernetes.io/basic-auth")
    assert wanted.annotations == {
        "operator.1password.io/item-path": PATH,
        "operator.1password.io/item-version": "3",
    }
    assert wanted.labels == {"team": "payments", "opsync.io/managed": "true"}
    assert wanted.type == "kubernetes.io/basic-auth"
    assert wanted.data == DATA
    assert wanted.owner == CR


@pytest.mark.parametrize("value", [None, ""])
def test_an_absent_or_empty_type_is_opaque(value: str | None) -> None:
    assert build(type_=value).type == "Opaque"
    assert desired.secret_type(value) == "Opaque"


def test_the_owner_reference_has_no_controller_or_block_owner_deletion_flags() -> None:
    assert CR.reference() == {
        "apiVersion": "onepassword.com/v1",
        "kind": "OnePasswordItem",
        "name": "db",
        "uid": "uid-cr",
    }


OWNER_ANNOTATIONS = {
    "team.example.com/owner": "payments",
    "operator.1password.io/auto-restart": "true",
    "operator.1password.io/item-path": "vaults/x/items/y",
    "opsync.io/last-handled-configuration": "{}",
    "kopf.zalando.org/last-handled-configuration": "{}",
    "kubectl.kubernetes.io/last-applied-configuration": "{}",
}


def test_without_copying_only_auto_restart_comes_from_the_owner() -> None:
    wanted = build(annotations=OWNER_ANNOTATIONS)
    assert wanted.annotations == {
        "operator.1password.io/auto-restart": "true",
        "operator.1password.io/item-path": PATH,
        "operator.1password.io/item-version": "3",
    }


def test_an_annotation_mode_secret_names_itself_as_the_deployment_did() -> None:
    given = {desired.ITEM_NAME: "Web Creds_v2"}
    assert build(owner=APP, annotations=given).annotations[desired.ITEM_NAME] == "Web Creds_v2"
    # The official operator sets it in annotation mode only; a OnePasswordItem's is not copied.
    assert desired.ITEM_NAME not in build(owner=CR, annotations=given).annotations


def test_copying_skips_bookkeeping_and_1password_annotations_and_records_what_it_copied() -> None:
    wanted = build(annotations=OWNER_ANNOTATIONS, copy_annotations=True)
    assert wanted.annotations == {
        "team.example.com/owner": "payments",
        "opsync.io/copied-annotations": "team.example.com/owner",
        "operator.1password.io/auto-restart": "true",
        "operator.1password.io/item-path": PATH,
        "operator.1password.io/item-version": "3",
    }


def test_copying_with_nothing_to_copy_records_nothing() -> None:
    wanted = build(annotations={"opsync.io/x": "1"}, copy_annotations=True)
    assert "opsync.io/copied-annotations" not in wanted.annotations


# -- merged annotations --------------------------------------------------------------------------


def test_merging_keeps_foreign_annotations_and_drops_stale_1password_ones() -> None:
    wanted = build()
    existing = state(
        wanted,
        annotations={
            "other-tool/seen": "yes",
            "operator.1password.io/item-version": "1",
            "operator.1password.io/auto-restart": "true",
        },
    )
    assert wanted.merged_annotations(existing) == {"other-tool/seen": "yes", **wanted.annotations}


def test_merging_drops_annotations_copied_before_that_the_owner_no_longer_has() -> None:
    before = build(annotations={"a": "1", "b": "2"}, copy_annotations=True)
    existing = state(before, annotations={**before.merged_annotations(None), "foreign": "f"})
    after = build(annotations={"a": "changed"}, copy_annotations=True)
    assert after.merged_annotations(existing) == {
        "foreign": "f",
        "a": "changed",
        "opsync.io/copied-annotations": "a",
        "operator.1password.io/item-path": PATH,
        "operator.1password.io/item-version": "3",
    }
    # Turning copying off removes what was copied.
    assert build().merged_annotations(existing) == {"foreign": "f", **build().annotations}


# -- differences ---------------------------------------------------------------------------------


def test_an_identical_secret_has_no_differences() -> None:
    wanted = build(labels={"team": "a"}, annotations={"note": "n"}, copy_annotations=True)
    assert desired.differences(state(wanted), wanted) == []


def test_foreign_annotations_are_not_a_difference() -> None:
    wanted = build()
    existing = state(wanted, annotations={**wanted.annotations, "other-tool/seen": "yes"})
    assert desired.differences(existing, wanted) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"data": SecretData({"password": b"other"})}, ["data"]),
        ({"data": SecretData({"password": b"pw", "extra": b""})}, ["data"]),
        ({"data": SecretData({})}, ["data"]),
        ({"labels": {"opsync.io/managed": "true"}}, ["labels"]),
        ({"labels": {"team": "a", "opsync.io/managed": "true", "added": "x"}}, ["labels"]),
        ({"annotations": {"operator.1password.io/item-path": PATH}}, ["annotations"]),
        ({"owner_uids": frozenset(), "owner_references": ()}, ["ownerReferences"]),
        (
            {"data": SecretData({}), "labels": {}, "owner_uids": frozenset({"someone"})},
            ["data", "labels", "ownerReferences"],
        ),
    ],
)
def test_differences_name_what_must_be_written(changes: dict[str, object], expected: list[str]) -> None:
    wanted = build(labels={"team": "a"})
    assert desired.differences(state(wanted, **changes), wanted) == expected


def test_a_new_item_version_is_an_annotation_difference() -> None:
    old = build(version=3)
    assert desired.differences(state(old), build(version=4)) == ["annotations"]


# -- ownership -----------------------------------------------------------------------------------


def test_ownership_is_an_owner_reference_to_the_owners_uid() -> None:
    wanted = build()
    assert desired.is_owned_by(state(wanted), CR)
    assert not desired.is_owned_by(state(wanted, owner_uids=frozenset({"uid-other"})), CR)
    assert not desired.is_owned_by(state(wanted, owner_uids=frozenset()), CR)


def test_a_1password_secret_of_another_deployment_is_shared_with_a_deployment() -> None:
    secret = state(build(owner=APP))
    assert desired.is_shared_with(secret, WORKER)


def test_a_onepassworditem_never_shares_and_foreign_secrets_are_never_shared() -> None:
    of_app = state(build(owner=APP))
    assert not desired.is_shared_with(of_app, CR)
    hand_made = state(build(owner=APP), annotations={})
    assert not desired.is_shared_with(hand_made, WORKER)
    of_item = state(build(owner=CR))
    assert not desired.is_shared_with(of_item, WORKER)
    unowned = state(build(owner=APP), owner_uids=frozenset(), owner_references=())
    assert not desired.is_shared_with(unowned, WORKER)


def test_owner_references_keep_other_owners_and_add_ours_once() -> None:
    assert desired.owner_references(APP, None) == [APP.reference()]
    shared = state(build(owner=APP))
    assert desired.owner_references(WORKER, shared) == [APP.reference(), WORKER.reference()]
    both = state(build(owner=APP), owner_references=(APP, WORKER))
    assert desired.owner_references(WORKER, both) == [APP.reference(), WORKER.reference()]
