"""What a synced Secret must look like, whether it is ours, and what differs: pure functions.

The reconcile reads the live Secret, builds the desired one here and writes
only when :func:`differences` finds something, so an unchanged item costs no
Kubernetes write. Ownership is an ownerReference to the owning object's uid,
the same reference the official operator sets, so Secrets it created are
adopted after an image swap, and any other Secret of the same name is left
alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opsync.core.mapping import SecretData

ANNOTATION_PREFIX = "operator.1password.io/"
ITEM_PATH = "operator.1password.io/item-path"
ITEM_VERSION = "operator.1password.io/item-version"
ITEM_NAME = "operator.1password.io/item-name"
AUTO_RESTART = "operator.1password.io/auto-restart"
LAST_RESTARTED = "operator.1password.io/last-restarted"
IGNORE_SECRET_TAG = "operator.1password.io:ignore-secret"  # noqa: S105 - a tag name, not a secret
FINALIZER = "onepassword.com/finalizer.secret"
MANAGED_LABEL = "opsync.io/managed"
COPIED_ANNOTATIONS = "opsync.io/copied-annotations"
"""Lists the annotations opsync set from the owner or the spec, so that one removed there goes."""
ITEMS = "opsync.io/items"
"""On a Secret composed from several items: each resolved path and version."""
RETAINED_FROM = "opsync.io/retained-from"
"""On a Secret that ``deletionPolicy: Retain`` left behind: ``<kind>/<name>`` of its owner."""
ROLLOUT_PENDING = "opsync.io/rollout-pending"
"""On a Secret whose data changed and whose workloads are not all rolled out yet: the data's
fingerprint. Written with the data, in the same write; cleared once the rollouts are done, so a
rollout an operator was killed before making is made at its next start."""
OPSYNC_PREFIX = "opsync.io/"
FIELD_MANAGER_NAME = "opsync"
"""The field manager opsync writes Secrets as (their ``managedFields`` name each writer)."""
DEPLOYMENT_KIND = "Deployment"

# Annotations of the CR that are never copied to the Secret, even with --enable-annotations.
_NOT_COPIED_PREFIXES = (
    OPSYNC_PREFIX,
    "kopf.zalando.org/",
    "kubectl.kubernetes.io/last-applied-configuration",
)


@dataclass(frozen=True)
class Owner:
    """The object a Secret belongs to: a OnePasswordItem, or an annotated Deployment."""

    api_version: str
    kind: str
    name: str
    uid: str

    def reference(self) -> dict[str, str]:
        # As the official operator: no controller and no blockOwnerDeletion flags.
        return {"apiVersion": self.api_version, "kind": self.kind, "name": self.name, "uid": self.uid}


@dataclass(frozen=True)
class ObjectRef:
    """Enough of an object to post an Event about it."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class SecretState:
    """A Secret as it is in the cluster (values inside SecretData, never printed)."""

    namespace: str
    name: str
    type: str
    data: SecretData
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    owner_uids: frozenset[str] = frozenset()
    resource_version: str | None = None
    uid: str | None = None
    owner_references: tuple[Owner, ...] = ()


@dataclass(frozen=True)
class DesiredSecret:
    """The Secret opsync wants for one owner."""

    namespace: str
    name: str
    type: str
    data: SecretData
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    owner: Owner

    def merged_annotations(self, existing: SecretState | None) -> dict[str, str]:
        """Ours on top of the existing ones; stale 1Password annotations, and annotations copied
        from the owner earlier (listed in ``opsync.io/copied-annotations``), are dropped."""
        previous = existing.annotations if existing else {}
        copied_before = set(previous.get(COPIED_ANNOTATIONS, "").split(","))
        kept = {
            key: value
            for key, value in previous.items()
            if not key.startswith(ANNOTATION_PREFIX)
            and key not in copied_before
            and key not in (COPIED_ANNOTATIONS, ITEMS, RETAINED_FROM)
        }
        return {**kept, **self.annotations}


def secret_type(value: str | None) -> str:
    """The Secret type a CR asks for; ``""`` and absent mean ``Opaque`` as in the official operator."""
    return value or "Opaque"


def build(
    *,
    owner: Owner,
    namespace: str,
    name: str,
    type_: str | None,
    data: SecretData,
    resolved_path: str,
    item_version: int,
    owner_labels: Mapping[str, str] | None = None,
    owner_annotations: Mapping[str, str] | None = None,
    copy_annotations: bool = False,
    extra_labels: Mapping[str, str] | None = None,
    extra_annotations: Mapping[str, str] | None = None,
    items: Sequence[tuple[str, int]] = (),
) -> DesiredSecret:
    """``extra_labels``/``extra_annotations`` are the spec's own (they win over copied ones);
    ``items`` lists every (resolved path, version) when the Secret composes several items."""
    owner_annotations = owner_annotations or {}
    annotations: dict[str, str] = {}
    if copy_annotations:
        annotations.update(
            (key, value)
            for key, value in owner_annotations.items()
            if not key.startswith(_NOT_COPIED_PREFIXES) and not key.startswith(ANNOTATION_PREFIX)
        )
    annotations.update(extra_annotations or {})
    if annotations:
        # Remembered on the Secret, so an annotation removed from the owner is removed too.
        annotations[COPIED_ANNOTATIONS] = ",".join(sorted(annotations))
    if AUTO_RESTART in owner_annotations:
        annotations[AUTO_RESTART] = owner_annotations[AUTO_RESTART]
    if owner.kind == DEPLOYMENT_KIND and ITEM_NAME in owner_annotations:
        # As the official operator: the annotation-mode Secret names itself as the Deployment did.
        annotations[ITEM_NAME] = owner_annotations[ITEM_NAME]
    annotations[ITEM_PATH] = resolved_path
    annotations[ITEM_VERSION] = str(item_version)
    if len(items) > 1:
        annotations[ITEMS] = ",".join(f"{path}@{version}" for path, version in items)
    labels = {**(owner_labels or {}), **(extra_labels or {}), MANAGED_LABEL: "true"}
    return DesiredSecret(namespace, name, secret_type(type_), data, labels, annotations, owner)


def last_writer(metadata: Mapping[str, Any]) -> str | None:
    """Who last updated the object other than opsync, from its ``managedFields`` (the field
    manager of the newest entry that is not opsync's); None when it cannot be told."""
    entries = [
        entry
        for entry in metadata.get("managedFields") or []
        if isinstance(entry, Mapping) and entry.get("manager") and entry.get("manager") != FIELD_MANAGER_NAME
    ]
    if not entries:
        return None
    newest = max(entries, key=lambda entry: str(entry.get("time") or ""))
    return str(newest["manager"])


def is_owned_by(existing: SecretState, owner: Owner) -> bool:
    return owner.uid in existing.owner_uids


def is_shared_with(existing: SecretState, owner: Owner) -> bool:
    """Whether ``owner`` may join the owners of ``existing``: several annotated Deployments may
    name the same Secret (as with the official operator), so a 1Password Secret that another
    Deployment owns is shared; a OnePasswordItem never shares."""
    return (
        owner.kind == DEPLOYMENT_KIND
        and ITEM_PATH in existing.annotations
        and any(ref.kind == DEPLOYMENT_KIND for ref in existing.owner_references)
    )


def is_retained_for(existing: SecretState, owner: Owner) -> bool:
    """Whether ``existing`` was retained by an owner of the same kind and name and nothing owns
    it now: a OnePasswordItem deleted with ``deletionPolicy: Retain`` and created again adopts
    its Secret (a GitOps tool re-creating objects must not end in SecretConflict)."""
    return not existing.owner_references and existing.annotations.get(RETAINED_FROM) == retained_from(owner)


def is_left_by_predecessor(existing: SecretState, owner: Owner) -> bool:
    """Whether every owner of ``existing`` is an earlier object of ``owner``'s kind and name: that
    object is gone (names are unique while an object lives), and its Secret is adopted instead
    of being a conflict. The Secret of an item deleted and created again, before the garbage
    collector got to it, is one."""
    return bool(existing.owner_references) and all(
        _same_name(ref, owner) and ref.uid != owner.uid for ref in existing.owner_references
    )


def _same_name(ref: Owner, owner: Owner) -> bool:
    return (ref.kind, ref.name) == (owner.kind, owner.name)


def retained_from(owner: Owner) -> str:
    return f"{owner.kind}/{owner.name}"


def owner_references(owner: Owner, existing: SecretState | None) -> list[dict[str, str]]:
    """The Secret's ownerReferences: any others it already has, then ``owner``'s. A reference to
    an earlier object of ``owner``'s kind and name is dropped: that object is gone."""
    kept = [
        ref.reference()
        for ref in (existing.owner_references if existing else ())
        if ref.uid != owner.uid and not _same_name(ref, owner)
    ]
    return [*kept, owner.reference()]


def differences(existing: SecretState, desired: DesiredSecret) -> list[str]:
    """What must be written for ``existing`` to become ``desired``: names only, e.g. ``["data"]``."""
    found = []
    if existing.data.digest() != desired.data.digest():
        found.append("data")
    if dict(existing.labels) != dict(desired.labels):
        found.append("labels")
    if existing.annotations != desired.merged_annotations(existing):
        found.append("annotations")
    if desired.owner.uid not in existing.owner_uids:
        found.append("ownerReferences")
    return found


def owners_patch(existing: SecretState, references: Sequence[Owner]) -> list[dict[str, Any]]:
    """The JSON patch that replaces a Secret's ownerReferences, guarded by the resourceVersion
    read (a concurrent change fails the ``test``). A JSON patch, because a strategic merge patch
    would merge the list by uid and keep the references meant to go."""
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": existing.resource_version},
        {"op": "replace", "path": "/metadata/ownerReferences", "value": [r.reference() for r in references]},
    ]


def rollout_done_patch(fingerprint: str) -> list[dict[str, Any]]:
    """The JSON patch that clears :data:`ROLLOUT_PENDING` if it still holds ``fingerprint`` (a
    newer data change, with its own rollout owed, fails the ``test`` and keeps its marker)."""
    path = "/metadata/annotations/" + ROLLOUT_PENDING.replace("~", "~0").replace("/", "~1")
    return [{"op": "test", "path": path, "value": fingerprint}, {"op": "remove", "path": path}]


def retain_patch(
    existing: SecretState, references: Sequence[Owner], retained_from: str
) -> list[dict[str, Any]]:
    """The JSON patch that leaves a Secret behind: these ownerReferences, no managed label (so
    nothing of opsync acts on it any more) and a note of whose it was; guarded like
    :func:`owners_patch`."""
    patch = [
        *owners_patch(existing, references),
        {
            "op": "add",
            "path": "/metadata/annotations",
            "value": {**existing.annotations, RETAINED_FROM: retained_from},
        },
    ]
    if MANAGED_LABEL in existing.labels:
        patch.append({"op": "remove", "path": "/metadata/labels/" + MANAGED_LABEL.replace("/", "~1")})
    return patch
