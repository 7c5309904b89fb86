"""The sync use case: item path → Connect → desired Secret → hash-gated write. No kopf here.

One :class:`Reconciler` lives for the whole operator (in the runtime the kopf
layer carries). It is called by the handlers for a OnePasswordItem or an
annotated Deployment (:class:`Target`), and guarantees the safety rules:

* nothing is written before everything was read: a Connect failure raises
  before any write, so a Secret is never blanked, shrunk or deleted for it;
* a Secret that exists without an ownerReference to the target is never
  touched (``SecretConflict``), except that annotated Deployments naming the
  same Secret share it, as with the official operator;
* a write happens only when data, type, labels or managed annotations differ;
* a Secret's type is never changed (Kubernetes forbids it; ``TypeChangeRefused``).

It keeps the last desired Secret of every target in memory, so a Secret that
drifts (edited or deleted by hand) is restored at once without asking Connect.
A Secret it has neither written nor seen in the watch of managed Secrets is
created without a read first; "already exists" falls back to the read and the
rules above, so the guess costs one refused request at worst.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from opsync.core import connection as connection_mod
from opsync.core import crd, workloads
from opsync.core import desired as desired_mod
from opsync.core.compose import Composed, Source, compose, sources_of
from opsync.core.connection import ConnectionRef
from opsync.core.desired import DesiredSecret, ObjectRef, Owner, SecretState
from opsync.core.errors import (
    BadRequest,
    ConnectError,
    ConnectionUnusable,
    ConnectTransientError,
    Forbidden,
    KubeError,
    NotFound,
    OpsyncError,
    RateLimited,
    Reason,
    SpecError,
    Unauthorized,
)
from opsync.core.gobool import parse_bool
from opsync.core.itempath import Fetched, ItemPath
from opsync.core.mapping import SecretData, Skipped, sanitize_secret_name
from opsync.sync.ports import ItemSource, SecretStore
from opsync.sync.resolve import Channel, fetch
from opsync.sync.turns import Turns

logger = logging.getLogger(__name__)

Action = Literal["created", "updated", "unchanged", "frozen", "abandoned"]


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
    spec: crd.OnePasswordItemSpec | None = None
    """A OnePasswordItem's spec, with the shaping fields; None for an annotated Deployment."""
    spec_error: str | None = None
    """Why the spec did not parse (reported as InvalidSpec); then ``spec`` is None."""
    retain: bool = False
    """Whether the Secret outlives its owner (``deletionPolicy: Retain``)."""
    connection: ConnectionRef | None = None
    """The connection to read with (``spec.connectionRef`` or the Deployment's annotation); None:
    the operator's own."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.secret_name)

    @property
    def sources(self) -> tuple[Source, ...]:
        return sources_of(self.spec, self.item_path)

    @property
    def item_paths(self) -> tuple[str, ...]:
        return tuple(source.item_path for source in self.sources)

    @property
    def owner_ref(self) -> ObjectRef:
        """The owner, as Events name it."""
        owner = self.owner
        return ObjectRef(owner.api_version, owner.kind, self.namespace, owner.name, owner.uid)


def item_target(body: Mapping[str, Any]) -> Target:
    """The target of a OnePasswordItem object. A spec that does not parse (the API server checks
    the same schema, unless an older CRD is installed) still gives a target, which reports it."""
    meta = body.get("metadata", {})
    found = body.get("spec")
    raw = dict(found) if isinstance(found, Mapping) else {}  # kopf gives a view, not a dict
    spec, error = crd.parse_spec(raw)
    # Where the Secret is and whether it outlives the owner hold even when the rest of the spec
    # does not parse: deleting the owner must not then delete a Secret meant to be retained.
    placement = spec or crd.parse_placement(raw)
    item_path = raw.get("itemPath")
    namespace = meta.get("namespace") or "default"
    ref = spec.connectionRef if spec is not None else None
    return Target(
        owner=Owner(crd.API_VERSION, crd.KIND, meta["name"], meta.get("uid", "")),
        namespace=namespace,
        secret_name=placement.secretName or meta["name"],
        item_path=item_path if isinstance(item_path, str) else None,
        secret_type=body.get("type"),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        spec=spec,
        spec_error=error,
        retain=placement.deletionPolicy == "Retain",
        connection=connection_mod.ref_of(ref, namespace) if ref is not None else None,
    )


def deployment_owner(body: Mapping[str, Any]) -> Owner:
    """A Deployment as the owner of its Secret."""
    meta = body["metadata"]
    return Owner("apps/v1", desired_mod.DEPLOYMENT_KIND, meta["name"], meta["uid"])


def deployment_target(body: Mapping[str, Any]) -> Target | None:
    """The target of a Deployment in the official operator's annotation mode; None without
    ``operator.1password.io/item-name`` (the Secret's name)."""
    annotations = workloads.deployment_annotations(body)
    name = annotations.get(desired_mod.ITEM_NAME)
    if not name:
        return None
    namespace = body["metadata"]["namespace"]
    ref, error = None, None
    named = (body["metadata"].get("annotations") or {}).get(connection_mod.CONNECTION_ANNOTATION)
    if named:
        try:
            ref = connection_mod.parse_annotation(named, namespace)
        except ValueError as exc:
            error = str(exc)
    return Target(
        owner=deployment_owner(body),
        namespace=namespace,
        secret_name=sanitize_secret_name(name),
        item_path=annotations.get(desired_mod.ITEM_PATH),
        annotations={
            k: v for k, v in annotations.items() if k in (desired_mod.AUTO_RESTART, desired_mod.ITEM_NAME)
        },
        spec_error=error,
        connection=ref,
    )


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
    items: tuple[tuple[str, int], ...] = ()
    """Every item composed, as (resolved path, version), in the target's order."""
    fetched: tuple[Fetched, ...] = field(default=(), compare=False, repr=False)
    """The items as read, so that a poll can re-compose when only one of several changed."""
    content_checked: bool = False
    """Whether the Secret's type has content rules (its status gets a ContentValid condition)."""
    content_problem: str | None = None
    """What is wrong with the content, written anyway (``typeCheck: Warn``); None when valid."""

    @property
    def data_changed(self) -> bool:
        return self.action == "updated" and "data" in self.changed


@dataclass(frozen=True)
class Failure:
    """Why a sync failed, as status and Events show it."""

    reason: Reason
    message: str
    retryable: bool
    persistent_message: str | None = None
    """What to say instead when the same failure is met again (the advice for a lasting cause)."""


def describe_failure(exc: BaseException, target: Target) -> Failure:
    """A reason and a message that says what to fix; never a secret value."""
    paths = target.item_paths
    where = f"item path {paths[0]!r}" if len(paths) == 1 else f"item paths {', '.join(map(repr, paths))}"
    if isinstance(exc, SpecError):
        return Failure(exc.reason, str(exc), retryable=False)
    if isinstance(exc, ConnectionUnusable):
        return Failure(exc.reason, str(exc), retryable=False)
    if isinstance(exc, Unauthorized):
        token = (
            f"the token Secret of {target.connection}"
            if target.connection is not None
            else "OP_CONNECT_TOKEN"
        )
        return Failure(
            Reason.Unauthorized,
            f"Connect refused the token ({exc}); check {token} and that it belongs to this Connect server",
            retryable=True,
        )
    if isinstance(exc, Forbidden):
        # Connect answers 403 for a moment now and then; the grant advice is for a lasting one.
        return Failure(
            Reason.Forbidden,
            f"Connect answered 403 Forbidden for {where}; retrying (a 403 that passes needs nothing)",
            True,
            persistent_message=f"the Connect token has no read access to the vault of {where} "
            "(still 403 after retrying): grant it, or use another vault",
        )
    if isinstance(exc, NotFound):
        return Failure(
            Reason.ItemNotFound, f"Connect has no such vault or item for {where} ({exc})", retryable=False
        )
    if isinstance(exc, RateLimited):
        return Failure(
            Reason.RateLimited, f"Connect is rate limiting requests; will retry ({exc})", retryable=True
        )
    if isinstance(exc, ConnectTransientError):
        return Failure(
            Reason.ConnectUnavailable, f"cannot reach 1Password Connect; will retry ({exc})", retryable=True
        )
    if isinstance(exc, BadRequest):
        return Failure(
            Reason.ConnectError, f"Connect refused the request for {where} ({exc})", retryable=False
        )
    if isinstance(exc, ConnectError):
        return Failure(Reason.ConnectError, f"Connect failed for {where} ({exc})", retryable=True)
    if isinstance(exc, KubeError):
        return Failure(Reason.KubernetesError, str(exc), retryable=exc.retryable or exc.status is None)
    if isinstance(exc, OpsyncError):
        return Failure(Reason.Error, str(exc), retryable=exc.retryable)
    return Failure(
        Reason.InternalError, f"unexpected {type(exc).__name__}; see the operator log", retryable=True
    )


def _listed(heading: str, entries: Sequence[Skipped]) -> str:
    if not entries:
        return ""
    names = ", ".join(f"{s.source} {s.name!r} ({s.reason})" for s in entries[:5])
    more = f" and {len(entries) - 5} more" if len(entries) > 5 else ""
    return f"; {heading}: {names}{more}"


def _summarise_skipped(skipped: tuple[Skipped, ...]) -> str:
    """What the mapping left out, then what it wrote with a note (a key cut to 253 characters)."""
    return _listed("not synced", [s for s in skipped if not s.kept]) + _listed(
        "synced with a note", [s for s in skipped if s.kept]
    )


def success_message(target: Target, outcome: Outcome) -> str:
    verb = {
        "created": "created",
        "updated": f"updated ({', '.join(outcome.changed)})",
        "unchanged": "in sync",
        "frozen": "left unchanged: the item is tagged operator.1password.io:ignore-secret",
        "abandoned": "not written: its owner was deleted",
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
            reason=Reason.InvalidAnnotation,
        ) from None


def checked_paths(target: Target) -> list[ItemPath]:
    """The target's item paths, parsed; a SpecError when the target cannot be synced as it is."""
    sources = target.sources
    if not sources and target.spec_error is None:
        raise SpecError(
            "spec.itemPath is missing: set it to vaults/<vault>/items/<item> (or list spec.items)",
            reason=Reason.InvalidItemPath,
        )
    paths = [ItemPath.parse(source.item_path) for source in sources]
    if target.spec_error is not None:
        raise SpecError(target.spec_error, reason=Reason.InvalidSpec)
    _check_auto_restart(target)
    return paths


def desired_secret(
    target: Target, composed: Composed, items: Sequence[tuple[str, int]], *, copy_annotations: bool
) -> DesiredSecret:
    """The Secret for ``target`` with the ``composed`` content of its ``items`` (resolved path,
    version)."""
    resolved, version = items[0]
    return desired_mod.build(
        owner=target.owner,
        namespace=target.namespace,
        name=target.secret_name,
        type_=composed.type,
        data=composed.data,
        resolved_path=resolved,
        item_version=version,
        owner_labels=target.labels,
        owner_annotations=target.annotations,
        copy_annotations=copy_annotations,
        extra_labels=composed.labels,
        extra_annotations=composed.annotations,
        items=items,
    )


MAX_GONE = 100_000
"""Deleted owners remembered (a uid each, some 100 bytes): far more than deletions in flight."""


class Reconciler:
    """Syncs targets; holds the Connect client, the Kubernetes API and the drift cache."""

    def __init__(
        self,
        *,
        connect: ItemSource,
        kube: SecretStore,
        allow_empty_values: bool = False,
        copy_annotations: bool = False,
    ) -> None:
        self.channel = Channel.of(connect)
        """The operator's own connection: the client, and the listings shared by the syncs that run
        together (title look-ups)."""
        self.connect = connect
        self.listings = self.channel.listings
        self.kube = kube
        self.allow_empty_values = allow_empty_values
        self.copy_annotations = copy_annotations
        self._desired: dict[tuple[str, str], DesiredSecret] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._present: set[tuple[str, str]] = set()
        """Managed Secrets the watch has shown: known to exist, so read before writing."""
        self._templates = Turns(thread_name="opsync-template")
        """Templates render on a thread of their own, namespaces taking turns; a target without a
        template never waits for them."""
        self._gone: dict[str, None] = {}
        """Owners (uids) deleted while this process ran, oldest first: nothing is written for them."""

    def close(self) -> None:
        """Stop the template thread (a render in progress ends within its time budget)."""
        self._templates.close()

    def owner_deleted(self, owner: Owner) -> None:
        """``owner`` is being deleted or is gone: from now on no sync writes for it and drift
        repair never restores its Secret (uids are never reused, so this is final)."""
        self._gone[owner.uid] = None
        if len(self._gone) > MAX_GONE:
            del self._gone[next(iter(self._gone))]

    def is_gone(self, owner: Owner) -> bool:
        return owner.uid in self._gone

    def note_present(self, namespace: str, secret_name: str, present: bool = True) -> None:
        """The watch of managed Secrets saw this one (or saw it deleted)."""
        if present:
            self._present.add((namespace, secret_name))
        else:
            self._present.discard((namespace, secret_name))

    def _believed_absent(self, key: tuple[str, str]) -> bool:
        """Neither written by this process nor seen by the watch: most likely absent, so a
        create is tried without a read first (an "already exists" answer falls back to the read).
        At a cold start this saves one request per Secret."""
        return key not in self._desired and key not in self._present

    def lock(self, key: tuple[str, str]) -> asyncio.Lock:
        """One sync at a time per Secret (a handler, the poller and drift repair may race)."""
        return self._locks.setdefault(key, asyncio.Lock())

    async def sync(
        self, target: Target, *, fetched: Sequence[Fetched] | None = None, channel: Channel | None = None
    ) -> Outcome:
        """Sync one target; ``fetched`` holds its items already read, in the order of
        ``target.sources`` (the poller reads an item once for every target using it), else they
        are resolved and read here, through ``channel`` (default: the operator's own connection).
        Everything is read and composed before anything is written."""
        via = channel or self.channel
        paths = checked_paths(target)
        if self.is_gone(target.owner):
            return Outcome("abandoned", str(paths[0]), 0)
        async with self.lock(target.key):
            if fetched is None:
                fetched = [await fetch(via.connect, path, via.listings) for path in paths]
            if self.is_gone(target.owner):  # deleted meanwhile: deletion wins over this sync
                return Outcome("abandoned", str(paths[0]), 0)
            existing = None
            if not self._believed_absent(target.key):
                existing = await self.kube.read_secret(target.namespace, target.secret_name)
            try:
                return await self._write(target, existing, fetched)
            except KubeError as exc:
                if existing is not None or exc.status != 409:
                    raise
            # A create met a Secret of that name after all: read it, then decide as for any other.
            existing = await self.kube.read_secret(target.namespace, target.secret_name)
            return await self._write(target, existing, fetched)

    async def _write(
        self, target: Target, existing: SecretState | None, fetched: Sequence[Fetched]
    ) -> Outcome:
        """Check, compose and write what ``target`` wants over ``existing`` (None: create it)."""
        self._check_ownership(target, existing)
        items = tuple((str(got.resolved), got.item.version or 0) for got in fetched)
        resolved, version = items[0]
        if existing is not None and any(
            desired_mod.IGNORE_SECRET_TAG in (got.item.tags or []) for got in fetched
        ):
            return Outcome("frozen", resolved, version, secret_uid=existing.uid, items=items)
        shape = functools.partial(
            compose,
            target.spec,
            target.sources,
            fetched,
            type_=target.secret_type,
            allow_empty_values=self.allow_empty_values,
        )
        if target.spec is not None and target.spec.template is not None:
            # A template may take its whole budget (seconds of CPU): off the event loop, on a
            # thread of its own, so the other syncs and the health probes keep their pace, and
            # namespaces take turns there, so one namespace's heavy templates hold no other long.
            composed = await self._templates.run(target.namespace, shape)
        else:
            composed = shape()
        wanted = desired_secret(target, composed, items, copy_annotations=self.copy_annotations)
        outcome = await self._apply(wanted, existing, resolved, version, composed.skipped)
        return dataclasses.replace(
            outcome,
            items=items,
            fetched=tuple(fetched),
            content_checked=composed.content_checked,
            content_problem=composed.content_problem,
        )

    def _check_ownership(self, target: Target, existing: SecretState | None) -> None:
        if (
            existing is not None
            and not desired_mod.is_owned_by(existing, target.owner)
            and not desired_mod.is_shared_with(existing, target.owner)
            and not desired_mod.is_retained_for(existing, target.owner)
            and not desired_mod.is_left_by_predecessor(existing, target.owner)
        ):
            raise SpecError(
                f"a Secret named {target.secret_name} already exists and is not managed by this "
                f"{target.owner.kind}; opsync will not overwrite it. Delete or rename that Secret, "
                "or sync into another name",
                reason=Reason.SecretConflict,
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
                reason=Reason.TypeChangeRefused,
            )
        changed = desired_mod.differences(existing, wanted)
        if changed:
            written = wanted
            if "data" in changed:  # a rollout is owed from now on, whatever happens next
                pending = workloads.data_fingerprint(wanted.data, salt=existing.uid or "")
                written = dataclasses.replace(
                    wanted, annotations={**wanted.annotations, desired_mod.ROLLOUT_PENDING: pending}
                )
            await self.kube.replace_secret(written, existing)
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
            if self.is_gone(wanted.owner):  # never bring back the Secret of a deleted owner
                self._desired.pop(key)
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

        async def drop_owner(existing: SecretState) -> None:
            await self.kube.set_owner_references(existing, _other_owners(existing, target.owner))

        return await self._let_go(target, target.secret_name, drop_owner)

    async def delete(self, target: Target, secret_name: str | None = None) -> bool:
        """Delete the target's Secret (or its earlier one, ``secret_name``) if it is ours; True
        when something was deleted."""

        async def delete(existing: SecretState) -> None:
            await self.kube.delete_secret(existing.namespace, existing.name, uid=existing.uid)

        return await self._let_go(target, secret_name or target.secret_name, delete)

    async def retain(self, target: Target, secret_name: str | None = None) -> bool:
        """Leave the target's Secret (or its earlier one) behind as ``deletionPolicy: Retain``
        asks: without the target's ownerReference, so the garbage collector keeps it, and without
        the managed label, so drift repair lets it be; True when it was ours."""

        async def retain(existing: SecretState) -> None:
            owners = _other_owners(existing, target.owner)
            await self.kube.retain_secret(existing, owners, desired_mod.retained_from(target.owner))

        return await self._let_go(target, secret_name or target.secret_name, retain)

    async def _let_go(
        self, target: Target, secret_name: str, act: Callable[[SecretState], Awaitable[None]]
    ) -> bool:
        """Forget the Secret for drift repair and, if the target owns it, ``act`` on it."""
        key = (target.namespace, secret_name)
        async with self.lock(key):
            cached = self._desired.get(key)
            if cached is not None and cached.owner == target.owner:
                self._desired.pop(key)
            existing = await self.kube.read_secret(*key)
            if existing is None or not desired_mod.is_owned_by(existing, target.owner):
                return False
            await act(existing)
            return True

    async def retire(self, target: Target, secret_name: str) -> bool:
        """Let go of a Secret the target wrote under an earlier ``spec.secretName``: deleted,
        or retained as its deletion policy says."""
        if secret_name == target.secret_name:
            return False
        if target.retain:
            return await self.retain(target, secret_name)
        return await self.delete(target, secret_name)


def _other_owners(existing: SecretState, owner: Owner) -> list[Owner]:
    return [ref for ref in existing.owner_references if ref.uid != owner.uid]
