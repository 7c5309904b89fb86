"""The Kubernetes layer: the one module that imports the ``kubernetes`` client.

kopf watches and dispatches; every read and write opsync makes itself
(Secrets, CR status, Events, workloads) goes through :class:`KubeApi`. The
client is synchronous, so each call runs in a worker thread. API errors become
:class:`~opsync.core.errors.KubeError` with only the status and the server's reason,
never a request body (which may hold Secret data).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from opsync.core import crd
from opsync.core.desired import (
    MANAGED_LABEL,
    RETAINED_FROM,
    DesiredSecret,
    ObjectRef,
    Owner,
    SecretState,
    owner_references,
)
from opsync.core.errors import KubeError, shorten
from opsync.core.mapping import SecretData
from opsync.core.workloads import DAEMON_SET, DEPLOYMENT, ROLLOUT, STATEFUL_SET, WorkloadKind

_T = TypeVar("_T")


def load_api_client() -> client.ApiClient:
    """In-cluster credentials inside a pod, else ``$KUBECONFIG`` / ``~/.kube/config``."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    api_client: client.ApiClient = config.new_client_from_config()  # type: ignore[no-untyped-call]
    return api_client


def _error(exc: ApiException, action: str) -> KubeError:
    """The error with the API server's own explanation (a Status names fields and keys, never a
    Secret's values), so that e.g. a 422 says which field is invalid."""
    reason = exc.reason or "error"
    retryable = exc.status in (409, 429) or (exc.status or 0) >= 500
    detail = ""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    if isinstance(message, str) and message:
        detail = f": {shorten(message, 300)}"
    return KubeError(
        f"{action} failed: {exc.status} {reason}{detail}", status=exc.status, retryable=retryable
    )


def _state(secret: client.V1Secret) -> SecretState:
    meta = secret.metadata
    assert meta is not None
    data = {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}
    return SecretState(
        namespace=meta.namespace or "",
        name=meta.name or "",
        type=secret.type or "Opaque",
        data=SecretData(data),
        labels=dict(meta.labels or {}),
        annotations=dict(meta.annotations or {}),
        owner_uids=frozenset(ref.uid for ref in meta.owner_references or []),
        resource_version=meta.resource_version,
        uid=meta.uid,
        owner_references=tuple(
            Owner(ref.api_version, ref.kind, ref.name, ref.uid) for ref in meta.owner_references or []
        ),
    )


def _body(desired: DesiredSecret, existing: SecretState | None) -> dict[str, Any]:
    references = owner_references(desired.owner, existing)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": desired.name,
            "namespace": desired.namespace,
            "labels": dict(desired.labels),
            "annotations": desired.merged_annotations(existing),
            "ownerReferences": references,
            **(
                {"resourceVersion": existing.resource_version}
                if existing and existing.resource_version
                else {}
            ),
        },
        "type": desired.type,
        "data": {key: base64.b64encode(value).decode() for key, value in desired.data.items()},
    }


class KubeApi:
    """Async facade over the kubernetes client for what opsync reads and writes."""

    def __init__(self, api_client: client.ApiClient, *, instance: str = "opsync") -> None:
        self._api = api_client
        self._instance = instance  # Events' reportingInstance: the pod's name in a cluster
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._apps = client.AppsV1Api(api_client)
        self._coordination = client.CoordinationV1Api(api_client)

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    async def _call(self, action: str, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except ApiException as exc:
            raise _error(exc, action) from None

    # -- Secrets ---------------------------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> SecretState | None:
        try:
            secret = await self._call(
                f"reading Secret {namespace}/{name}", self._core.read_namespaced_secret, name, namespace
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return _state(secret)

    async def create_secret(self, desired: DesiredSecret) -> str | None:
        """Create the Secret; its uid."""
        created = await self._call(
            f"creating Secret {desired.namespace}/{desired.name}",
            self._core.create_namespaced_secret,
            desired.namespace,
            _body(desired, None),
        )
        return created.metadata.uid if created.metadata else None

    async def replace_secret(self, desired: DesiredSecret, existing: SecretState) -> None:
        """Replace, guarded by the resourceVersion read: a concurrent change gives a retryable 409."""
        await self._call(
            f"updating Secret {desired.namespace}/{desired.name}",
            self._core.replace_namespaced_secret,
            desired.name,
            desired.namespace,
            _body(desired, existing),
        )

    async def set_owner_references(self, existing: SecretState, references: list[Owner]) -> None:
        """Replace the Secret's ownerReferences, guarded by the resourceVersion read.

        A JSON patch (a list body): a strategic merge patch would merge the list by uid and
        keep the references meant to go."""
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": existing.resource_version},
            {
                "op": "replace",
                "path": "/metadata/ownerReferences",
                "value": [r.reference() for r in references],
            },
        ]
        await self._call(
            f"updating the owners of Secret {existing.namespace}/{existing.name}",
            self._core.patch_namespaced_secret,
            existing.name,
            existing.namespace,
            patch,
        )

    async def retain_secret(self, existing: SecretState, references: list[Owner], retained_from: str) -> None:
        """Leave a Secret behind: these ownerReferences, no managed label (so that nothing of
        opsync acts on it any more) and a note of whose it was; guarded by the resourceVersion."""
        patch: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": existing.resource_version},
            {
                "op": "replace",
                "path": "/metadata/ownerReferences",
                "value": [r.reference() for r in references],
            },
            {
                "op": "add",
                "path": "/metadata/annotations",
                "value": {**existing.annotations, RETAINED_FROM: retained_from},
            },
        ]
        if MANAGED_LABEL in existing.labels:
            patch.append({"op": "remove", "path": "/metadata/labels/" + MANAGED_LABEL.replace("/", "~1")})
        await self._call(
            f"retaining Secret {existing.namespace}/{existing.name}",
            self._core.patch_namespaced_secret,
            existing.name,
            existing.namespace,
            patch,
        )

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> None:
        options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid) if uid else None)
        try:
            await self._call(
                f"deleting Secret {namespace}/{name}",
                self._core.delete_namespaced_secret,
                name,
                namespace,
                body=options,
            )
        except KubeError as exc:
            if exc.status not in (404, 409):
                raise

    # -- Leases (leader election) ----------------------------------------------------------------

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Lease as a plain dict (its MicroTime fields as the server wrote them), or None."""
        try:
            response: Any = await self._call(
                f"reading Lease {namespace}/{name}",
                self._coordination.read_namespaced_lease,
                name,
                namespace,
                _preload_content=False,
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        body: dict[str, Any] = json.loads(response.data)
        return body

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> None:
        await self._call(
            f"creating Lease {namespace}/{body['metadata']['name']}",
            self._coordination.create_namespaced_lease,
            namespace,
            dict(body),
            _preload_content=False,
        )

    async def replace_lease(self, namespace: str, body: Mapping[str, Any]) -> None:
        """Replace, guarded by the body's resourceVersion: a lost race is a 409 KubeError."""
        await self._call(
            f"updating Lease {namespace}/{body['metadata']['name']}",
            self._coordination.replace_namespaced_lease,
            body["metadata"]["name"],
            namespace,
            dict(body),
            _preload_content=False,
        )

    # -- OnePasswordItems ------------------------------------------------------------------------

    async def read_item(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body: Any = await self._call(
                f"reading OnePasswordItem {namespace}/{name}",
                self._custom.get_namespaced_custom_object,
                crd.GROUP,
                crd.VERSION,
                namespace,
                crd.PLURAL,
                name,
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return dict(body)

    async def patch_item_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        try:
            await self._call(
                f"updating the status of OnePasswordItem {namespace}/{name}",
                self._custom.patch_namespaced_custom_object_status,
                crd.GROUP,
                crd.VERSION,
                namespace,
                crd.PLURAL,
                name,
                {"status": dict(status)},
            )
        except KubeError as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise

    # -- Deployments -----------------------------------------------------------------------------

    async def list_deployments(self, namespace: str) -> list[dict[str, Any]]:
        return await self._list_apps(DEPLOYMENT, namespace, self._apps.list_namespaced_deployment)

    # -- Workloads (rollout restarts) ------------------------------------------------------------

    ROLLOUTS_RECHECK_SECONDS = 60.0
    """How long "Argo Rollouts are not served here" is believed before asking again."""

    _rollouts_absent_until: float = 0.0  # event-loop time; set per instance once Rollouts are absent

    async def list_workloads(self, namespace: str) -> list[dict[str, Any]]:
        """Every Deployment, StatefulSet, DaemonSet and Argo Rollout in ``namespace``, as dicts
        that carry ``kind`` and ``apiVersion`` (items of a typed list come without them)."""
        listings = await asyncio.gather(
            self._list_apps(DEPLOYMENT, namespace, self._apps.list_namespaced_deployment),
            self._list_apps(STATEFUL_SET, namespace, self._apps.list_namespaced_stateful_set),
            self._list_apps(DAEMON_SET, namespace, self._apps.list_namespaced_daemon_set),
            self._list_rollouts(namespace),
        )
        return [item for listing in listings for item in listing]

    async def _list_apps(
        self, kind: WorkloadKind, namespace: str, function: Callable[..., Any]
    ) -> list[dict[str, Any]]:
        result = await self._call(f"listing {kind.plural} in {namespace}", function, namespace)
        serialised = self._api.sanitize_for_serialization(result)  # type: ignore[no-untyped-call]
        items: list[dict[str, Any]] = serialised.get("items") or []
        for item in items:
            item["apiVersion"] = kind.api_version
            item["kind"] = kind.kind
        return items

    async def _list_rollouts(self, namespace: str) -> list[dict[str, Any]]:
        """Argo Rollouts, when the API serves them. 404 (no ``rollouts.argoproj.io`` CRD) and
        403 (opsync's RBAC leaves Rollouts out) both mean "none"; that answer is kept for
        ROLLOUTS_RECHECK_SECONDS, so installing Argo later is noticed without a list per call."""
        kind = ROLLOUT
        clock = asyncio.get_running_loop().time
        if clock() < self._rollouts_absent_until:
            return []
        try:
            result: Any = await self._call(
                f"listing {kind.plural}.{kind.group} in {namespace}",
                self._custom.list_namespaced_custom_object,
                kind.group,
                kind.version,
                namespace,
                kind.plural,
            )
        except KubeError as exc:
            if exc.status not in (403, 404):
                raise
            self._rollouts_absent_until = clock() + self.ROLLOUTS_RECHECK_SECONDS
            return []
        items: list[dict[str, Any]] = [dict(item) for item in result.get("items") or []]
        for item in items:
            item["apiVersion"] = kind.api_version
            item["kind"] = kind.kind
        return items

    async def patch_workload(
        self, kind: WorkloadKind, namespace: str, name: str, patch: dict[str, Any]
    ) -> None:
        """Patch a workload with an object body: a strategic merge patch for the apps kinds (the
        client's choice for a dict; the same as a merge patch for annotations), a JSON merge
        patch for Argo Rollouts. A 404 comes back as a KubeError with status 404."""
        action = f"restarting {kind.kind} {namespace}/{name}"
        apps: dict[str, Callable[..., Any]] = {
            DEPLOYMENT.kind: self._apps.patch_namespaced_deployment,
            STATEFUL_SET.kind: self._apps.patch_namespaced_stateful_set,
            DAEMON_SET.kind: self._apps.patch_namespaced_daemon_set,
        }
        if kind.group == DEPLOYMENT.group and kind.kind in apps:
            await self._call(action, apps[kind.kind], name, namespace, patch)
            return
        await self._call(
            action,
            self._custom.patch_namespaced_custom_object,
            kind.group,
            kind.version,
            namespace,
            kind.plural,
            name,
            patch,
        )

    async def namespace_annotations(self, name: str) -> dict[str, str]:
        """A Namespace's annotations; ``{}`` when it is gone or opsync may not read it (the
        official operator also goes on without the Namespace's opinion)."""
        try:
            found = await self._call(f"reading Namespace {name}", self._core.read_namespace, name)
        except KubeError as exc:
            if exc.status in (403, 404):
                return {}
            raise
        return dict((found.metadata.annotations if found.metadata else None) or {})

    # -- Events ----------------------------------------------------------------------------------

    async def post_event(self, ref: ObjectRef, *, type_: str, reason: str, message: str) -> None:
        now = dt.datetime.now(dt.UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=f"{ref.name}.{uuid.uuid4().hex[:16]}", namespace=ref.namespace),
            involved_object=client.V1ObjectReference(
                api_version=ref.api_version,
                kind=ref.kind,
                name=ref.name,
                namespace=ref.namespace,
                uid=ref.uid,
            ),
            reason=reason,
            message=message[:1024],
            type=type_,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component="opsync"),
            reporting_component="opsync",
            reporting_instance=self._instance,
        )
        await self._call(
            f"posting an Event on {ref.kind} {ref.namespace}/{ref.name}",
            self._core.create_namespaced_event,
            ref.namespace,
            event,
        )
