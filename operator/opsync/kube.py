"""The Kubernetes layer: the one module that imports the ``kubernetes`` client.

kopf watches and dispatches; every read and write opsync makes itself
(Secrets, CR status, Events, workloads) goes through :class:`KubeApi`. The
client is synchronous, so each call runs in a worker thread of its own pool.
API errors become :class:`~opsync.core.errors.KubeError` with only the status and
the server's reason, never a request body (which may hold Secret data).

Requests go through the client's :class:`~kubernetes.client.ApiClient` (its
configuration, credentials, TLS and connection pool) with JSON bodies in and
out, not through its generated API classes and models: in the pinned client
those validate every call and every answer with pydantic, and importing
``CoreV1Api`` alone takes half a second and 20 MB. opsync needs a dozen
endpoints, named here by path.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import datetime as dt
import json
import os
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from opsync.core import connection, crd
from opsync.core.desired import (
    FIELD_MANAGER_NAME,
    DesiredSecret,
    ObjectRef,
    Owner,
    SecretState,
    owner_references,
    owners_patch,
    retain_patch,
    rollout_done_patch,
)
from opsync.core.errors import KubeError, shorten
from opsync.core.mapping import SecretData
from opsync.core.workloads import DAEMON_SET, DEPLOYMENT, ROLLOUT, STATEFUL_SET, WorkloadKind
from opsync.logfilter import Reachability

JSON = "application/json"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


AS_OPSYNC: Mapping[str, str] = MappingProxyType({"fieldManager": FIELD_MANAGER_NAME})
"""The query of every Secret write: its managedFields then name opsync, so that a rival writer
can be told apart (see :mod:`opsync.sync.rivalry`)."""

EVENT_AGGREGATION_SECONDS = 600.0
"""The same Event again within this many seconds raises the first one's count."""
MAX_AGGREGATED_EVENTS = 4096
"""Events remembered for aggregation (the oldest forgotten first)."""

CONCURRENCY = 16
"""API requests in flight at once: worker threads of the blocking client, and its connection
pool (a pool smaller than the threads would discard a connection, and its TLS session, after
nearly every request at a cold start)."""


def load_api_client(*, connections: int = CONCURRENCY) -> client.ApiClient:
    """In-cluster credentials inside a pod, else ``$KUBECONFIG`` / ``~/.kube/config``."""
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)


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


def _network_error(exc: BaseException) -> str:
    """What went wrong on the way, without urllib3's long retry preamble."""
    reason = getattr(exc, "reason", None)  # MaxRetryError: the last underlying error
    if isinstance(reason, BaseException):
        exc = reason
    return f"the API server could not be reached ({type(exc).__name__}: {shorten(str(exc), 200)})"


def _state(secret: Mapping[str, Any]) -> SecretState:
    """A Secret as the API server sent it (JSON), without the client's models: parsing the JSON
    costs a fraction of building and validating them, and a sync reads a Secret every time."""
    meta = secret.get("metadata") or {}
    references = meta.get("ownerReferences") or []
    data = {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}
    return SecretState(
        namespace=meta.get("namespace") or "",
        name=meta.get("name") or "",
        type=secret.get("type") or "Opaque",
        data=SecretData(data),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        owner_uids=frozenset(ref["uid"] for ref in references),
        resource_version=meta.get("resourceVersion"),
        uid=meta.get("uid"),
        owner_references=tuple(
            Owner(ref["apiVersion"], ref["kind"], ref["name"], ref["uid"]) for ref in references
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

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        instance: str = "opsync",
        concurrency: int = CONCURRENCY,
        reachability: Reachability | None = None,
    ) -> None:
        self._api = api_client
        # Told of every request's result: one WARNING when the API server stops answering,
        # one INFO when it answers again (the failures themselves are KubeErrors, retried).
        self._reachability = reachability or Reachability()
        self._instance = instance  # Events' reportingInstance: the pod's name in a cluster
        # The client blocks: each request runs in a thread of this pool (not the event loop's
        # default one, which has only cores + 4 threads and is shared with everything else).
        self._threads = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="opsync-kube")
        self._events: dict[tuple[str, str, str, str, str], _Posted] = {}

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._api.close()  # type: ignore[no-untyped-call]

    async def _request(
        self,
        action: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = JSON,
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One API request (in a worker thread) and its JSON answer; a KubeError when it fails."""

        def send() -> dict[str, Any]:
            headers = {"Accept": JSON} | ({"Content-Type": content_type} if body is not None else {})
            request = self._api.param_serialize(
                method=method,
                resource_path=path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._api.call_api(*request)
            data = response.read()  # type: ignore[no-untyped-call]
            if not 200 <= response.status <= 299:
                raise ApiException.from_response(http_resp=response, body=None, data=None)
            answer: dict[str, Any] = json.loads(data or b"{}")
            return answer

        try:
            answer = await asyncio.get_running_loop().run_in_executor(self._threads, send)
        except ApiException as exc:
            self._reachability.succeeded()  # an HTTP answer, if an error one
            raise _error(exc, action) from None
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            # The API server unreachable, a connection dropped or refused, a TLS failure, an
            # answer that is not JSON: transient, and never to escape this layer unconverted
            # (a leader election that met one used to crash the process).
            problem = _network_error(exc)
            if isinstance(exc, ValueError):  # an answer, if not JSON
                self._reachability.succeeded()
            else:
                self._reachability.failed(problem.removeprefix("the API server could not be reached "))
            raise KubeError(f"{action} failed: {problem}", retryable=True) from None
        self._reachability.succeeded()
        return answer

    async def _read(self, action: str, path: str) -> dict[str, Any] | None:
        """GET ``path``; None when it does not exist."""
        try:
            return await self._request(action, "GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    # -- Secrets ---------------------------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> SecretState | None:
        secret = await self._read(f"reading Secret {namespace}/{name}", _secret(namespace, name))
        return _state(secret) if secret is not None else None

    async def create_secret(self, desired: DesiredSecret) -> str | None:
        """Create the Secret; its uid."""
        created = await self._request(
            f"creating Secret {desired.namespace}/{desired.name}",
            "POST",
            _secret(desired.namespace),
            body=_body(desired, None),
            query=AS_OPSYNC,
        )
        uid = (created.get("metadata") or {}).get("uid")
        return uid if isinstance(uid, str) else None

    async def replace_secret(self, desired: DesiredSecret, existing: SecretState) -> None:
        """Replace, guarded by the resourceVersion read: a concurrent change gives a retryable 409."""
        await self._request(
            f"updating Secret {desired.namespace}/{desired.name}",
            "PUT",
            _secret(desired.namespace, desired.name),
            body=_body(desired, existing),
            query=AS_OPSYNC,
        )

    async def set_owner_references(self, existing: SecretState, references: list[Owner]) -> None:
        """Replace the Secret's ownerReferences, guarded by the resourceVersion read."""
        await self._request(
            f"updating the owners of Secret {existing.namespace}/{existing.name}",
            "PATCH",
            _secret(existing.namespace, existing.name),
            body=owners_patch(existing, references),
            content_type=JSON_PATCH,
            query=AS_OPSYNC,
        )

    async def clear_rollout_pending(self, namespace: str, name: str, fingerprint: str) -> None:
        """The rollouts for ``fingerprint`` are done: clear the Secret's marker, unless it is gone
        or marks a newer data change (the patch's ``test`` fails: 422)."""
        try:
            await self._request(
                f"clearing the rollout marker of Secret {namespace}/{name}",
                "PATCH",
                _secret(namespace, name),
                body=rollout_done_patch(fingerprint),
                content_type=JSON_PATCH,
                query=AS_OPSYNC,
            )
        except KubeError as exc:
            if exc.status not in (404, 422):
                raise

    async def retain_secret(self, existing: SecretState, references: list[Owner], retained_from: str) -> None:
        """Leave a Secret behind (see :func:`~opsync.core.desired.retain_patch`)."""
        await self._request(
            f"retaining Secret {existing.namespace}/{existing.name}",
            "PATCH",
            _secret(existing.namespace, existing.name),
            body=retain_patch(existing, references, retained_from),
            content_type=JSON_PATCH,
            query=AS_OPSYNC,
        )

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> None:
        options: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            await self._request(
                f"deleting Secret {namespace}/{name}", "DELETE", _secret(namespace, name), body=options
            )
        except KubeError as exc:
            if exc.status not in (404, 409):
                raise

    # -- Leases (leader election) ----------------------------------------------------------------

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Lease as a plain dict (its MicroTime fields as the server wrote them), or None."""
        return await self._read(f"reading Lease {namespace}/{name}", _lease(namespace, name))

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> None:
        await self._request(
            f"creating Lease {namespace}/{body['metadata']['name']}",
            "POST",
            _lease(namespace),
            body=dict(body),
        )

    async def replace_lease(self, namespace: str, body: Mapping[str, Any]) -> None:
        """Replace, guarded by the body's resourceVersion: a lost race is a 409 KubeError."""
        name = body["metadata"]["name"]
        await self._request(
            f"updating Lease {namespace}/{name}", "PUT", _lease(namespace, name), body=dict(body)
        )

    # -- OnePasswordItems ------------------------------------------------------------------------

    async def read_item(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._read(f"reading OnePasswordItem {namespace}/{name}", _item(namespace, name))

    async def patch_item_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        try:
            await self._request(
                f"updating the status of OnePasswordItem {namespace}/{name}",
                "PATCH",
                _item(namespace, name) + "/status",
                body={"status": dict(status)},
                content_type=MERGE_PATCH,
            )
        except KubeError as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise

    # -- Deployments -----------------------------------------------------------------------------

    async def list_deployments(self, namespace: str) -> list[dict[str, Any]]:
        return await self._list(DEPLOYMENT, namespace)

    # -- Workloads (rollout restarts) ------------------------------------------------------------

    ROLLOUTS_RECHECK_SECONDS = 60.0
    """How long "Argo Rollouts are not served here" is believed before asking again."""

    _rollouts_absent_until: float = 0.0  # event-loop time; set per instance once Rollouts are absent

    async def list_workloads(self, namespace: str) -> list[dict[str, Any]]:
        """Every Deployment, StatefulSet, DaemonSet and Argo Rollout in ``namespace``, as dicts
        that carry ``kind`` and ``apiVersion`` (items of a list come without them)."""
        listings = await asyncio.gather(
            self._list(DEPLOYMENT, namespace),
            self._list(STATEFUL_SET, namespace),
            self._list(DAEMON_SET, namespace),
            self._list_rollouts(namespace),
        )
        return [item for listing in listings for item in listing]

    async def _list(self, kind: WorkloadKind, namespace: str) -> list[dict[str, Any]]:
        action = f"listing {kind.plural}.{kind.group} in {namespace}"
        result = await self._request(action, "GET", _workloads(kind, namespace))
        items: list[dict[str, Any]] = result.get("items") or []
        for item in items:
            item["apiVersion"] = kind.api_version
            item["kind"] = kind.kind
        return items

    async def _list_rollouts(self, namespace: str) -> list[dict[str, Any]]:
        """Argo Rollouts, when the API serves them. 404 (no ``rollouts.argoproj.io`` CRD) and
        403 (opsync's RBAC leaves Rollouts out) both mean "none"; that answer is kept for
        ROLLOUTS_RECHECK_SECONDS, so installing Argo later is noticed without a list per call."""
        clock = asyncio.get_running_loop().time
        if clock() < self._rollouts_absent_until:
            return []
        try:
            return await self._list(ROLLOUT, namespace)
        except KubeError as exc:
            if exc.status not in (403, 404):
                raise
            self._rollouts_absent_until = clock() + self.ROLLOUTS_RECHECK_SECONDS
            return []

    async def patch_workload(
        self, kind: WorkloadKind, namespace: str, name: str, patch: dict[str, Any]
    ) -> None:
        """Patch a workload with an object body: a strategic merge patch for the apps kinds (the
        same as a merge patch for annotations), a JSON merge patch for Argo Rollouts (a custom
        resource has no strategic merge). A 404 comes back as a KubeError with status 404."""
        await self._request(
            f"restarting {kind.kind} {namespace}/{name}",
            "PATCH",
            f"{_workloads(kind, namespace)}/{name}",
            body=patch,
            content_type=STRATEGIC_MERGE_PATCH if kind.group == DEPLOYMENT.group else MERGE_PATCH,
        )

    async def namespace_annotations(self, name: str) -> dict[str, str]:
        """A Namespace's annotations; ``{}`` when it is gone or opsync may not read it (the
        official operator also goes on without the Namespace's opinion)."""
        try:
            found = await self._read(f"reading Namespace {name}", f"/api/v1/namespaces/{name}")
        except KubeError as exc:
            if exc.status == 403:
                return {}
            raise
        return dict(((found or {}).get("metadata") or {}).get("annotations") or {})

    async def namespace_labels(self, name: str) -> dict[str, str] | None:
        """A Namespace's labels (for a ClusterOnePasswordConnection's namespaceSelector); None when
        it is gone or opsync may not read it."""
        try:
            found = await self._read(f"reading Namespace {name}", f"/api/v1/namespaces/{name}")
        except KubeError as exc:
            if exc.status == 403:
                return None
            raise
        return None if found is None else dict((found.get("metadata") or {}).get("labels") or {})

    # -- connections -----------------------------------------------------------------------------

    async def read_connection(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A OnePasswordConnection; None when there is none (or its CRD is not installed)."""
        return await self._read(f"reading {connection.KIND} {namespace}/{name}", _connection(namespace, name))

    async def read_cluster_connection(self, name: str) -> dict[str, Any] | None:
        """A ClusterOnePasswordConnection; None when there is none (or its CRD is not installed)."""
        return await self._read(f"reading {connection.CLUSTER_KIND} {name}", _cluster_connection(name))

    async def patch_connection_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await self._patch_status(
            f"updating the status of {connection.KIND} {namespace}/{name}",
            _connection(namespace, name),
            status,
        )

    async def patch_cluster_connection_status(self, name: str, status: Mapping[str, Any]) -> None:
        await self._patch_status(
            f"updating the status of {connection.CLUSTER_KIND} {name}", _cluster_connection(name), status
        )

    async def _patch_status(self, action: str, path: str, status: Mapping[str, Any]) -> None:
        try:
            await self._request(
                action, "PATCH", path + "/status", body={"status": dict(status)}, content_type=MERGE_PATCH
            )
        except KubeError as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise

    # -- Events ----------------------------------------------------------------------------------

    async def post_event(self, ref: ObjectRef, *, type_: str, reason: str, message: str) -> None:
        """Post an Event; the same Event again (object, type, reason and message) within
        :data:`EVENT_AGGREGATION_SECONDS` raises the ``count`` and ``lastTimestamp`` of the one
        already posted, as kubectl shows it (``x12 over 3m``), instead of adding another."""
        now = dt.datetime.now(dt.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        key = (ref.namespace, ref.uid, type_, str(reason), message[:1024])
        seen = self._events.pop(key, None)
        if seen is not None and (now - seen.first).total_seconds() < EVENT_AGGREGATION_SECONDS:
            try:
                await self._request(
                    f"updating an Event on {ref.kind} {ref.namespace}/{ref.name}",
                    "PATCH",
                    f"/api/v1/namespaces/{ref.namespace}/events/{seen.name}",
                    body={"count": seen.count + 1, "lastTimestamp": stamp},
                    content_type=MERGE_PATCH,
                )
            except KubeError as exc:
                if exc.status != 404:  # gone (events expire after an hour): post a new one
                    raise
            else:
                self._events[key] = _Posted(seen.name, seen.count + 1, seen.first)
                return
        name = f"{ref.name}.{uuid.uuid4().hex[:16]}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
            },
            "reason": str(reason),
            "message": message[:1024],
            "type": type_,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "source": {"component": "opsync"},
            "reportingComponent": "opsync",
            "reportingInstance": self._instance,
        }
        await self._request(
            f"posting an Event on {ref.kind} {ref.namespace}/{ref.name}",
            "POST",
            f"/api/v1/namespaces/{ref.namespace}/events",
            body=event,
        )
        self._events[key] = _Posted(name, 1, now)
        if len(self._events) > MAX_AGGREGATED_EVENTS:
            del self._events[next(iter(self._events))]


@dataclasses.dataclass(frozen=True)
class _Posted:
    """An Event this process posted, so that the same one again only raises its count."""

    name: str
    count: int
    first: dt.datetime


def _secret(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/secrets" + (f"/{name}" if name else "")


def _lease(namespace: str, name: str = "") -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases" + (f"/{name}" if name else "")


def _item(namespace: str, name: str) -> str:
    return f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{namespace}/{crd.PLURAL}/{name}"


def _connection(namespace: str, name: str) -> str:
    return f"/apis/{connection.GROUP}/{connection.VERSION}/namespaces/{namespace}/{connection.PLURAL}/{name}"


def _cluster_connection(name: str) -> str:
    return f"/apis/{connection.GROUP}/{connection.VERSION}/{connection.CLUSTER_PLURAL}/{name}"


def _workloads(kind: WorkloadKind, namespace: str) -> str:
    return f"/apis/{kind.group}/{kind.version}/namespaces/{namespace}/{kind.plural}"
