"""The sync use case: item path → Connect → desired Secret → hash-gated write. No kopf here.

One :class:`Reconciler` lives for the whole operator (in kopf's memo). It is
called by the handlers for a OnePasswordItem or an annotated Deployment
(:class:`Target`), and guarantees the safety rules:

* nothing is written before everything was read: a Connect failure raises
  before any write, so a Secret is never blanked, shrunk or deleted for it;
* a Secret that exists without an ownerReference to the target is never
  touched (``SecretConflict``), except that annotated Deployments naming the
  same Secret share it, as with the official operator;
* a write happens only when data, type, labels or managed annotations differ;
* a Secret's type is never changed (Kubernetes forbids it; ``TypeChangeRefused``).

It keeps the last desired Secret of every target in memory, so a Secret that
drifts (edited or deleted by hand) is restored at once without asking Connect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from opsync import desired as desired_mod
from opsync.connect import ConnectClient, FullItem
from opsync.desired import DesiredSecret, Owner, SecretState
from opsync.errors import (
    BadRequest,
    ConnectError,
    ConnectTransientError,
    Forbidden,
    KubeError,
    NotFound,
    OpsyncError,
    RateLimited,
    SpecError,
    Unauthorized,
)
from opsync.kube import KubeApi, ObjectRef
from opsync.mapping import MappedItem, SecretData, Skipped, item_to_data
from opsync.resolve import ItemPath, resolve
from opsync.settings import parse_bool

logger = logging.getLogger(__name__)

Action = Literal["created", "updated", "unchanged", "frozen"]


@dataclass(frozen=True)
class Target:
    """What to sync into which Secret, on behalf of which owner."""

    owner: Owner
    namespace: str
    secret_name: str
    item_path: str | None
    secret_type: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.secret_name)

    @property
    def owner_ref(self) -> ObjectRef:
        """The owner, as Events name it."""
        owner = self.owner
        return ObjectRef(owner.api_version, owner.kind, self.namespace, owner.name, owner.uid)


@dataclass(frozen=True)
class Outcome:
    """What a successful sync did.

    ``secret_uid`` and ``data`` let rollout restarts fingerprint the new data
    when it changed; ``data`` is the SecretData (its repr shows sizes only).
    """

    action: Action
    resolved_path: str
    item_version: int
    changed: tuple[str, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    secret_uid: str | None = None
    data: SecretData | None = field(default=None, compare=False)
    secret_annotations: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def data_changed(self) -> bool:
        return self.action == "updated" and "data" in self.changed


@dataclass(frozen=True)
class Fetched:
    """An item read from Connect with its files, under the ids it resolved to."""

    resolved: ItemPath
    item: FullItem
    files: Mapping[str, bytes]


@dataclass(frozen=True)
class Failure:
    """Why a sync failed, as status and Events show it."""

    reason: str
    message: str
    retryable: bool


def describe_failure(exc: BaseException, target: Target) -> Failure:
    """A reason and a message that says what to fix; never a secret value."""
    where = f"item path {target.item_path!r}"
    if isinstance(exc, SpecError):
        return Failure(exc.reason, str(exc), retryable=False)
    if isinstance(exc, Unauthorized):
        return Failure(
            "Unauthorized",
            f"Connect refused the token ({exc}); check OP_CONNECT_TOKEN and that it belongs to this Connect server",
            retryable=True,
        )
    if isinstance(exc, Forbidden):
        return Failure(
            "Forbidden",
            f"the Connect token has no read access to the vault of {where}: grant it, or use another vault",
            True,
        )
    if isinstance(exc, NotFound):
        return Failure(
            "ItemNotFound", f"Connect has no such vault or item for {where} ({exc})", retryable=False
        )
    if isinstance(exc, RateLimited):
        return Failure(
            "RateLimited", f"Connect is rate limiting requests; will retry ({exc})", retryable=True
        )
    if isinstance(exc, ConnectTransientError):
        return Failure(
            "ConnectUnavailable", f"cannot reach 1Password Connect; will retry ({exc})", retryable=True
        )
    if isinstance(exc, BadRequest):
        return Failure("ConnectError", f"Connect refused the request for {where} ({exc})", retryable=False)
    if isinstance(exc, ConnectError):
        return Failure("ConnectError", f"Connect failed for {where} ({exc})", retryable=True)
    if isinstance(exc, KubeError):
        return Failure("KubernetesError", str(exc), retryable=exc.retryable or exc.status is None)
    if isinstance(exc, OpsyncError):
        return Failure("Error", str(exc), retryable=exc.retryable)
    return Failure("InternalError", f"unexpected {type(exc).__name__}; see the operator log", retryable=True)


def _summarise_skipped(skipped: tuple[Skipped, ...]) -> str:
    if not skipped:
        return ""
    names = ", ".join(f"{s.source} {s.name!r} ({s.reason})" for s in skipped[:5])
    more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return f"; not synced: {names}{more}"


def success_message(target: Target, outcome: Outcome) -> str:
    verb = {
        "created": "created",
        "updated": f"updated ({', '.join(outcome.changed)})",
        "unchanged": "in sync",
        "frozen": "left unchanged: the item is tagged operator.1password.io:ignore-secret",
    }[outcome.action]
    return (
        f"Secret {target.secret_name} {verb} from item version {outcome.item_version}"
        + _summarise_skipped(outcome.skipped)
    )


def _check_auto_restart(target: Target) -> None:
    """The official operator refuses to sync when the owner's auto-restart value is not a bool."""
    value = target.annotations.get(desired_mod.AUTO_RESTART)
    if value is None:
        return
    try:
        parse_bool(value)
    except ValueError:
        raise SpecError(
            f"annotation {desired_mod.AUTO_RESTART} is {value!r}; it must be true or false "
            f"(or 1/0, t/f) on the {target.owner.kind}",
            reason="InvalidAnnotation",
        ) from None


class Reconciler:
    """Syncs targets; holds the Connect client, the Kubernetes API and the drift cache."""

    def __init__(
        self,
        *,
        connect: ConnectClient,
        kube: KubeApi,
        allow_empty_values: bool = False,
        copy_annotations: bool = False,
    ) -> None:
        self.connect = connect
        self.kube = kube
        self.allow_empty_values = allow_empty_values
        self.copy_annotations = copy_annotations
        self._desired: dict[tuple[str, str], DesiredSecret] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def lock(self, key: tuple[str, str]) -> asyncio.Lock:
        """One sync at a time per Secret (a handler, the poller and drift repair may race)."""
        return self._locks.setdefault(key, asyncio.Lock())

    async def fetch(self, path: ItemPath) -> Fetched:
        """Resolve ``path`` and read the item and its files (by id: no second GET of the item)."""
        resolved, item = await resolve(self.connect, path)
        return await self.fetch_resolved(resolved, item=item)

    async def fetch_resolved(self, resolved: ItemPath, *, item: FullItem | None = None) -> Fetched:
        full, files = await self.connect.get_item_with_files(resolved.vault, resolved.item, item=item)
        return Fetched(
            resolved, full, {file_id: content.get_secret_value() for file_id, content in files.items()}
        )

    async def sync(self, target: Target, *, fetched: Fetched | None = None) -> Outcome:
        """Sync one target; ``fetched`` is the item already read for it (the poller reads an item
        once for every target using it), else it is resolved and read here."""
        if not target.item_path:
            raise SpecError(
                "spec.itemPath is missing: set it to vaults/<vault>/items/<item>", reason="InvalidItemPath"
            )
        path = ItemPath.parse(target.item_path)
        _check_auto_restart(target)
        async with self.lock(target.key):
            if fetched is None:
                fetched = await self.fetch(path)
            existing = await self.kube.read_secret(target.namespace, target.secret_name)
            self._check_ownership(target, existing)
            resolved, item = str(fetched.resolved), fetched.item
            version = item.version or 0
            if desired_mod.IGNORE_SECRET_TAG in (item.tags or []) and existing is not None:
                return Outcome("frozen", resolved, version, secret_uid=existing.uid)
            mapped = item_to_data(item, fetched.files, allow_empty_values=self.allow_empty_values)
            wanted = self._desired_for(target, mapped, resolved, version)
            return await self._apply(wanted, existing, resolved, version, mapped.skipped)

    def _check_ownership(self, target: Target, existing: SecretState | None) -> None:
        if (
            existing is not None
            and not desired_mod.is_owned_by(existing, target.owner)
            and not desired_mod.is_shared_with(existing, target.owner)
        ):
            raise SpecError(
                f"a Secret named {target.secret_name} already exists and is not managed by this "
                f"{target.owner.kind}; opsync will not overwrite it. Delete or rename that Secret, "
                "or sync into another name",
                reason="SecretConflict",
            )

    def _desired_for(self, target: Target, mapped: MappedItem, resolved: str, version: int) -> DesiredSecret:
        return desired_mod.build(
            owner=target.owner,
            namespace=target.namespace,
            name=target.secret_name,
            type_=target.secret_type,
            data=mapped.data,
            resolved_path=resolved,
            item_version=version,
            owner_labels=target.labels,
            owner_annotations=target.annotations,
            copy_annotations=self.copy_annotations,
        )

    async def _apply(
        self,
        wanted: DesiredSecret,
        existing: SecretState | None,
        resolved: str,
        version: int,
        skipped: tuple[Skipped, ...] = (),
    ) -> Outcome:
        if existing is None:
            uid = await self.kube.create_secret(wanted)
            self._desired[(wanted.namespace, wanted.name)] = wanted
            return Outcome(
                "created",
                resolved,
                version,
                skipped=skipped,
                secret_uid=uid,
                data=wanted.data,
                secret_annotations=wanted.annotations,
            )
        if existing.type != wanted.type:
            # Remember what the spec wants: once the Secret is deleted, as the message says,
            # drift repair recreates it with the new type instead of the old one.
            self._desired[(wanted.namespace, wanted.name)] = wanted
            raise SpecError(
                f"Secret {wanted.name} has type {existing.type} but the OnePasswordItem asks for {wanted.type}; "
                "Kubernetes cannot change a Secret's type: delete the Secret and opsync recreates it",
                reason="TypeChangeRefused",
            )
        changed = desired_mod.differences(existing, wanted)
        if changed:
            await self.kube.replace_secret(wanted, existing)
        self._desired[(wanted.namespace, wanted.name)] = wanted
        return Outcome(
            "updated" if changed else "unchanged",
            resolved,
            version,
            tuple(changed),
            skipped,
            secret_uid=existing.uid,
            data=wanted.data,
            secret_annotations=wanted.annotations,
        )

    async def restore(self, namespace: str, secret_name: str) -> Outcome | None:
        """Put a drifted Secret back as last synced, without asking Connect; None if not known here."""
        key = (namespace, secret_name)
        async with self.lock(key):
            # Read under the lock: a sync that held it may have just replaced the desired Secret.
            wanted = self._desired.get(key)
            if wanted is None:
                return None
            existing = await self.kube.read_secret(namespace, secret_name)
            if existing is not None and not desired_mod.is_owned_by(existing, wanted.owner):
                return None
            version = int(wanted.annotations.get(desired_mod.ITEM_VERSION, "0"))
            return await self._apply(wanted, existing, wanted.annotations[desired_mod.ITEM_PATH], version)

    def owner_of(self, namespace: str, secret_name: str) -> Owner | None:
        wanted = self._desired.get((namespace, secret_name))
        return wanted.owner if wanted else None

    async def release(self, target: Target) -> bool:
        """Keep the target's Secret (others use it) but drop the target from its owners, so that
        Kubernetes' garbage collector does not delete it with the target; True when it did."""
        async with self.lock(target.key):
            cached = self._desired.get(target.key)
            if cached is not None and cached.owner == target.owner:
                self._desired.pop(target.key)
            existing = await self.kube.read_secret(target.namespace, target.secret_name)
            if existing is None or not desired_mod.is_owned_by(existing, target.owner):
                return False
            others = [ref for ref in existing.owner_references if ref.uid != target.owner.uid]
            await self.kube.set_owner_references(existing, others)
            return True

    async def delete(self, target: Target) -> bool:
        """Delete the target's Secret if it is ours; True when something was deleted."""
        async with self.lock(target.key):
            self._desired.pop(target.key, None)
            existing = await self.kube.read_secret(target.namespace, target.secret_name)
            if existing is None or not desired_mod.is_owned_by(existing, target.owner):
                return False
            await self.kube.delete_secret(target.namespace, target.secret_name, uid=existing.uid)
            return True
