"""Rollout restarts of the workloads that use a changed Secret.

Why a module of its own: the sync use case (``reconcile``) knows which Secrets
it just changed, and the kopf layer knows when; neither should know how every
workload kind is listed, which of them opted in, or how a restart is recorded.
:class:`Restarter` takes the changed Secrets of one pass and, per namespace,
lists the workloads once, decides with the official precedence (Secret →
workload → Namespace → ``AUTO_RESTART``), and sends at most one patch per
workload, covering every changed Secret it uses. The restart record on the pod
template (see :mod:`opsync.core.workloads`) makes a second report of the same data
change a no-op, so callers may report a change again when unsure.

Failures stay local: a workload that cannot be patched is logged and the others
are still restarted; a failed Event never fails a restart. No Secret value is
read here: a change carries a fingerprint, names and annotations only.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opsync.core import desired, workloads
from opsync.core.desired import ObjectRef
from opsync.core.errors import KubeError, Reason
from opsync.sync.ports import EventSink, RestartApi, WorkloadStore
from opsync.sync.reconcile import Outcome, Target

logger = logging.getLogger(__name__)

REASON = Reason.RolloutRestarted


@dataclass(frozen=True)
class SecretChange:
    """A Secret whose data just changed, as the Restarter needs it."""

    namespace: str
    secret_name: str
    fingerprint: str
    """:func:`opsync.core.workloads.data_fingerprint` of the new data."""
    secret_annotations: Mapping[str, str] = field(default_factory=dict)
    owner: ObjectRef | None = None
    """The OnePasswordItem or annotated Deployment that owns the Secret: it gets an Event too."""

    @classmethod
    def of(cls, target: Target, outcome: Outcome) -> SecretChange | None:
        """The change a sync made, if it changed the Secret's data; else None."""
        if not outcome.data_changed or outcome.data is None:
            return None
        return cls(
            namespace=target.namespace,
            secret_name=target.secret_name,
            fingerprint=workloads.data_fingerprint(outcome.data, salt=outcome.secret_uid or ""),
            secret_annotations=outcome.secret_annotations,
            owner=target.owner_ref,
        )

    @classmethod
    def pending(cls, body: Mapping[str, Any]) -> SecretChange | None:
        """The rollout a managed Secret says is still owed (:data:`~opsync.core.desired.ROLLOUT_PENDING`):
        its data changed, and the operator that changed it stopped before rolling out (or is
        doing it now). None when nothing is owed."""
        metadata = body.get("metadata") or {}
        annotations = dict(metadata.get("annotations") or {})
        fingerprint = annotations.get(desired.ROLLOUT_PENDING)
        if not fingerprint or not metadata.get("namespace"):
            return None
        owners = metadata.get("ownerReferences") or []
        owner = (
            ObjectRef(
                owners[0]["apiVersion"],
                owners[0]["kind"],
                metadata["namespace"],
                owners[0]["name"],
                owners[0]["uid"],
            )
            if owners
            else None
        )
        return cls(
            namespace=metadata["namespace"],
            secret_name=str(metadata.get("name", "")),
            fingerprint=fingerprint,
            secret_annotations=annotations,
            owner=owner,
        )


@dataclass(frozen=True)
class Restart:
    """One workload restarted, and the Secrets it was restarted for."""

    kind: str
    namespace: str
    name: str
    secrets: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _secrets_phrase(names: Sequence[str]) -> str:
    return ("Secret " if len(names) == 1 else "Secrets ") + ", ".join(names)


class Restarter:
    """Restarts the opted-in workloads that use changed Secrets; see the module docstring."""

    def __init__(
        self,
        kube: RestartApi,
        *,
        default: bool,
        on_restart: Callable[[Restart], None] | None = None,
        clock: Callable[[], str] = _now,
    ) -> None:
        self._kube = kube
        self._default = default
        self._on_restart = on_restart
        self._clock = clock

    async def restart(self, changes: Sequence[SecretChange]) -> list[Restart]:
        """Restart what ``changes`` call for; the restarts actually made, in order."""
        by_namespace: dict[str, list[SecretChange]] = {}
        for change in changes:
            by_namespace.setdefault(change.namespace, []).append(change)
        done: list[Restart] = []
        for namespace, namespace_changes in by_namespace.items():
            done.extend(await self._restart_namespace(namespace, namespace_changes))
        return done

    async def _restart_namespace(self, namespace: str, changes: list[SecretChange]) -> list[Restart]:
        try:
            bodies = await self._kube.list_workloads(namespace)
        except KubeError as exc:
            logger.warning("cannot restart workloads in namespace %s: %s", namespace, exc)
            return []
        decider = _Decider(self._kube, namespace, self._default)
        done: list[Restart] = []
        for body in bodies:
            restart = await self._restart_workload(body, changes, decider)
            if restart is not None:
                done.append(restart)
        await self._tell_owners(changes, done)
        return done

    async def _restart_workload(
        self, body: Mapping[str, Any], changes: list[SecretChange], decider: _Decider
    ) -> Restart | None:
        kind = workloads.workload_kind(body)
        if kind is None:
            return None
        metadata = body.get("metadata") or {}
        namespace, name = decider.namespace, str(metadata.get("name", ""))
        fingerprints: dict[str, str] = {}
        for change in changes:
            if change.secret_name in fingerprints or not workloads.uses_secret(body, change.secret_name):
                continue
            if await decider.wanted(change, kind.kind, name, metadata.get("annotations") or {}):
                fingerprints[change.secret_name] = change.fingerprint
        if not fingerprints:
            return None
        patch = workloads.restart_patch(body, fingerprints, self._clock())
        if patch is None:
            logger.debug("%s %s/%s was already restarted for this data", kind.kind, namespace, name)
            return None
        try:
            await self._kube.patch_workload(kind, namespace, name, patch)
        except KubeError as exc:
            if exc.status == 404:
                logger.debug("%s %s/%s is gone; not restarted", kind.kind, namespace, name)
            else:
                logger.warning("could not restart %s %s/%s: %s", kind.kind, namespace, name, exc)
            return None
        restart = Restart(kind.kind, namespace, name, tuple(sorted(fingerprints)))
        phrase = _secrets_phrase(restart.secrets)
        logger.info("restarted %s %s/%s: %s changed", kind.kind, namespace, name, phrase)
        if self._on_restart is not None:
            try:
                self._on_restart(restart)
            except Exception:
                logger.exception("the restart callback failed for %s %s/%s", kind.kind, namespace, name)
        ref = ObjectRef(kind.api_version, kind.kind, namespace, name, str(metadata.get("uid", "")))
        await _post(self._kube, ref, f"restarted: {phrase} changed")
        return restart

    async def _tell_owners(self, changes: list[SecretChange], done: list[Restart]) -> None:
        """One Event per owner, naming the workloads restarted for its Secrets (the owner itself,
        an annotated Deployment restarted for its own Secret, already has the workload Event)."""
        owners: dict[ObjectRef, tuple[list[str], list[str]]] = {}
        for change in changes:
            if change.owner is None:
                continue
            restarted, secrets = owners.setdefault(change.owner, ([], []))
            for restart in done:
                if change.secret_name not in restart.secrets:
                    continue
                if (restart.kind, restart.name) == (change.owner.kind, change.owner.name):
                    continue
                if restart.label not in restarted:
                    restarted.append(restart.label)
                if change.secret_name not in secrets:
                    secrets.append(change.secret_name)
        for owner, (restarted, secrets) in owners.items():
            if restarted:
                message = f"restarted {', '.join(restarted)}: {_secrets_phrase(secrets)} changed"
                await _post(self._kube, owner, message)


class _Decider:
    """The auto-restart decision within one namespace: reads the Namespace at most once, and
    only when a Secret and a workload both leave the decision to it; logs an invalid value once
    per object."""

    def __init__(self, kube: WorkloadStore, namespace: str, default: bool) -> None:
        self._kube = kube
        self.namespace = namespace
        self._default = default
        self._namespace_annotations: dict[str, str] | None = None
        self._logged: set[tuple[str, str]] = set()

    async def _namespace(self) -> dict[str, str]:
        if self._namespace_annotations is None:
            try:
                self._namespace_annotations = await self._kube.namespace_annotations(self.namespace)
            except KubeError as exc:
                logger.warning(
                    "cannot read Namespace %s, its auto-restart annotation is ignored: %s",
                    self.namespace,
                    exc,
                )
                self._namespace_annotations = {}
        return self._namespace_annotations

    async def wanted(
        self, change: SecretChange, kind: str, name: str, workload_annotations: Mapping[str, str]
    ) -> bool:
        namespace_annotations = (
            await self._namespace()
            if workloads.needs_namespace(change.secret_annotations, workload_annotations)
            else {}
        )
        decision = workloads.auto_restart_wanted(
            change.secret_annotations, workload_annotations, namespace_annotations, self._default
        )
        if decision.invalid is not None:
            where = {
                "Secret": f"Secret {self.namespace}/{change.secret_name}",
                "workload": f"{kind} {self.namespace}/{name}",
                "Namespace": f"Namespace {self.namespace}",
            }[decision.source]
            if (decision.source, where) not in self._logged:
                self._logged.add((decision.source, where))
                logger.warning(
                    "annotation %s on %s is %r; it must be true or false: no restart",
                    desired.AUTO_RESTART,
                    where,
                    decision.invalid,
                )
        return decision.wanted


async def _post(kube: EventSink, ref: ObjectRef, message: str) -> None:
    """A Normal RolloutRestarted Event; a failure is logged, never raised (an Event is not worth
    failing a restart for)."""
    try:
        await kube.post_event(ref, type_="Normal", reason=REASON, message=message)
    except Exception as exc:
        logger.warning(
            "could not post Event %s on %s %s/%s: %s", REASON, ref.kind, ref.namespace, ref.name, exc
        )
