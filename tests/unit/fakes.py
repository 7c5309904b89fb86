"""In-memory stand-ins for the Kubernetes ports of :mod:`opsync.sync.ports`, and a local Connect.

Why this module exists: the use cases (:class:`~opsync.sync.reconcile.Reconciler`,
:class:`~opsync.sync.poller.Poller`, :class:`~opsync.sync.leader.LeaderElector`) are
tested here in milliseconds, without a control plane. A fake only proves something if
it refuses what the API server refuses, so :class:`FakeKube` enforces what the real one
does and what opsync relies on:

* a ``resourceVersion`` (one counter for the whole store, as etcd's revision) that moves on
  every write that changes an object; a write that changes nothing is not stored and keeps
  it, as the API server skips no-op updates;
* create of a name that exists → 409 AlreadyExists; a uid is assigned at create and kept;
* replace guarded by the body's ``resourceVersion``: a stale one → 409 Conflict (retryable,
  as :mod:`opsync.kube` maps it); replace of a missing object → 404;
* a Secret's ``type`` is immutable → 422 Invalid; data keys must be valid keys → 422;
* JSON patch (``test``/``add``/``replace``/``remove``): a failed ``test`` (e.g. on
  ``/metadata/resourceVersion``), or a ``replace``/``remove`` of a path that is not there,
  → 422, as the API server answers a patch that does not apply; empty labels, annotations,
  ownerReferences and data are left out of stored objects, as the API server does;
* delete with a uid precondition that does not match → 409 (which, like 404, ``KubeApi``
  swallows, and so does this fake's ``delete_secret``).

Every write the code under test makes through a port is logged in :attr:`FakeKube.writes`,
refused ones included, so a test can assert that no write was even attempted. Changes made
"by hand" (:meth:`FakeKube.put_secret`, :meth:`FakeKube.edit_secret`,
:meth:`FakeKube.remove_secret`) are not in that log. :attr:`FakeKube.before_write` lets a
test change the store between the code's read and its write (a concurrent edit).

:class:`LocalConnect` starts the in-process local Connect server over loopback HTTP with the
real :class:`~opsync.connect.client.ConnectClient`.
"""

from __future__ import annotations

import copy
import itertools
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsync.connect.client import ConnectClient
from opsync.connect.config import ConnectConfig
from opsync.core.desired import (
    DesiredSecret,
    Owner,
    SecretState,
    owner_references,
    owners_patch,
    retain_patch,
)
from opsync.core.errors import KubeError
from opsync.core.mapping import SecretData
from opsync.tooling.connectserver import ConnectServer

_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

Key = tuple[str, str]


@dataclass(frozen=True)
class Write:
    """One write the code under test asked for, and how it ended (an HTTP-like status)."""

    verb: str  # create, replace, patch, delete
    kind: str  # Secret, Lease
    namespace: str
    name: str
    status: int

    @property
    def ok(self) -> bool:
        return self.status < 300


def _error(status: int, reason: str, message: str) -> KubeError:
    # As opsync.kube._error maps an ApiException: 409, 429 and 5xx are retryable.
    retryable = status in (409, 429) or status >= 500
    return KubeError(f"{message} failed: {status} {reason}", status=status, retryable=retryable)


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise _Refused(422, "Invalid")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _apply_json_patch(document: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 on objects (no list indexes: opsync never patches into a list); all or nothing."""
    result = copy.deepcopy(document)
    for operation in operations:
        *parents, last = _pointer(operation["path"])
        node: Any = result
        for part in parents:
            if not isinstance(node, dict) or part not in node:
                raise _Refused(422, "Invalid")  # the API server: "doc is missing path"
            node = node[part]
        if not isinstance(node, dict):
            raise _Refused(422, "Invalid")
        op = operation["op"]
        if op == "test":
            if node.get(last) != operation["value"]:
                raise _Refused(422, "Invalid")  # "testing value ... failed"
        elif op == "add":
            node[last] = copy.deepcopy(operation["value"])
        elif op == "replace":
            if last not in node:
                raise _Refused(422, "Invalid")
            node[last] = copy.deepcopy(operation["value"])
        elif op == "remove":
            if last not in node:
                raise _Refused(422, "Invalid")
            del node[last]
        else:
            raise _Refused(400, "BadRequest")
    return result


class FakeKube:
    """Secrets and Leases in memory, behind :class:`~opsync.sync.ports.SecretStore` and
    :class:`~opsync.sync.ports.LeaseStore`; see the module docstring for its rules."""

    def __init__(self) -> None:
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._revision = itertools.count(1)
        self.writes: list[Write] = []
        self.reads = 0
        self.before_write: Callable[[str, str, str, str], object] | None = None
        """Called as ``(verb, kind, namespace, name)`` before a write is checked and applied."""

    # -- the store -------------------------------------------------------------------------------

    def _get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self._objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def _stamp(self, kind: str, body: dict[str, Any], *, uid: str | None = None) -> dict[str, Any]:
        meta = body["metadata"]
        meta["uid"] = uid or str(uuid.uuid4())
        meta["resourceVersion"] = str(next(self._revision))
        self._objects[(kind, meta["namespace"], meta["name"])] = copy.deepcopy(body)
        return body

    def _create(self, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        if (kind, meta["namespace"], meta["name"]) in self._objects:
            raise _Refused(409, "AlreadyExists")
        if meta.get("resourceVersion"):
            raise _Refused(422, "Invalid")  # "resourceVersion should not be set on objects to be created"
        created = _omit_empty(copy.deepcopy(dict(body)))
        self._validate(kind, created, None)
        return self._stamp(kind, created)

    def _update(self, kind: str, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        current = self._objects.get((kind, meta["namespace"], meta["name"]))
        if current is None:
            raise _Refused(404, "NotFound")
        version = meta.get("resourceVersion")
        if version and version != current["metadata"]["resourceVersion"]:
            raise _Refused(409, "Conflict")  # "the object has been modified"
        updated = _omit_empty(copy.deepcopy(dict(body)))
        # System fields come from the stored object, whatever the body says.
        updated["metadata"]["uid"] = current["metadata"]["uid"]
        updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        self._validate(kind, updated, current)
        if updated == current:
            return  # a no-op update is not stored: the resourceVersion stays
        self._stamp(kind, updated, uid=current["metadata"]["uid"])

    def _validate(self, kind: str, body: dict[str, Any], current: dict[str, Any] | None) -> None:
        if kind != "Secret":
            return
        body.setdefault("type", "Opaque")
        if current is not None and body["type"] != current["type"]:
            raise _Refused(422, "Invalid")  # "type: Invalid value: field is immutable"
        if not all(_KEY.match(key) for key in body.get("data") or {}):
            raise _Refused(422, "Invalid")

    def _write(self, verb: str, kind: str, namespace: str, name: str, action: Callable[[], Any]) -> Any:
        if self.before_write is not None:
            self.before_write(verb, kind, namespace, name)
        try:
            result = action()
        except _Refused as refused:
            self.writes.append(Write(verb, kind, namespace, name, refused.status))
            raise _error(refused.status, refused.reason, f"{verb} {kind} {namespace}/{name}") from None
        self.writes.append(Write(verb, kind, namespace, name, 200))
        return result

    # -- SecretStore -----------------------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> SecretState | None:
        self.reads += 1
        body = self._get("Secret", namespace, name)
        return _state(body) if body is not None else None

    async def create_secret(self, desired: DesiredSecret) -> str | None:
        body = _secret_body(desired, None)
        created = self._write(
            "create", "Secret", desired.namespace, desired.name, lambda: self._create("Secret", body)
        )
        uid: str = created["metadata"]["uid"]
        return uid

    async def replace_secret(self, desired: DesiredSecret, existing: SecretState) -> None:
        body = _secret_body(desired, existing)
        self._write(
            "replace", "Secret", desired.namespace, desired.name, lambda: self._update("Secret", body)
        )

    async def set_owner_references(self, existing: SecretState, references: list[Owner]) -> None:
        await self._patch_secret(existing, owners_patch(existing, references))

    async def retain_secret(self, existing: SecretState, references: list[Owner], retained_from: str) -> None:
        await self._patch_secret(existing, retain_patch(existing, references, retained_from))

    async def _patch_secret(self, existing: SecretState, operations: list[dict[str, Any]]) -> None:
        namespace, name = existing.namespace, existing.name

        def patch() -> None:
            current = self._get("Secret", namespace, name)
            if current is None:
                raise _Refused(404, "NotFound")
            patched = _apply_json_patch(current, operations)
            patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            self._update("Secret", patched)

        self._write("patch", "Secret", namespace, name, patch)

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> None:
        def delete() -> None:
            current = self._objects.get(("Secret", namespace, name))
            if current is None:
                raise _Refused(404, "NotFound")
            if uid is not None and current["metadata"]["uid"] != uid:
                raise _Refused(409, "Conflict")  # "Precondition failed: UID in precondition"
            del self._objects[("Secret", namespace, name)]

        try:
            self._write("delete", "Secret", namespace, name, delete)
        except KubeError as exc:
            if exc.status not in (404, 409):  # as KubeApi.delete_secret
                raise

    # -- LeaseStore ------------------------------------------------------------------------------

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads += 1
        return self._get("Lease", namespace, name)

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> None:
        body = _in_namespace(body, namespace)
        self._write(
            "create", "Lease", namespace, body["metadata"]["name"], lambda: self._create("Lease", body)
        )

    async def replace_lease(self, namespace: str, body: Mapping[str, Any]) -> None:
        body = _in_namespace(body, namespace)
        self._write(
            "replace", "Lease", namespace, body["metadata"]["name"], lambda: self._update("Lease", body)
        )

    # -- changes by hand (not in ``writes``) -----------------------------------------------------

    def put_secret(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, bytes],
        *,
        type_: str = "Opaque",
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        owners: list[Owner] | None = None,
    ) -> str:
        """A Secret created by someone else; its uid."""
        body = {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(labels or {}),
                "annotations": dict(annotations or {}),
                "ownerReferences": [owner.reference() for owner in owners or []],
            },
            "type": type_,
            "data": dict(data),
        }
        uid: str = self._create("Secret", body)["metadata"]["uid"]
        return uid

    def edit_secret(self, namespace: str, name: str, edit: Callable[[dict[str, Any]], None]) -> None:
        """``kubectl edit``: ``edit`` changes the Secret's body in place."""
        body = self._get("Secret", namespace, name)
        assert body is not None, f"no Secret {namespace}/{name}"
        edit(body)
        self._update("Secret", body)

    def remove_secret(self, namespace: str, name: str) -> None:
        """``kubectl delete secret``."""
        del self._objects[("Secret", namespace, name)]

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored Secret body (a copy), data as bytes."""
        return self._get("Secret", namespace, name)

    def put_lease(self, namespace: str, body: Mapping[str, Any]) -> None:
        self._create("Lease", _in_namespace(body, namespace))

    def edit_lease(self, namespace: str, name: str, edit: Callable[[dict[str, Any]], None]) -> None:
        """Another replica's write: ``edit`` changes the Lease's body in place."""
        body = self._get("Lease", namespace, name)
        assert body is not None, f"no Lease {namespace}/{name}"
        edit(body)
        self._update("Lease", body)

    def lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get("Lease", namespace, name)


def _omit_empty(body: dict[str, Any]) -> dict[str, Any]:
    """As the API server stores and returns objects: empty maps and lists are left out, so a
    JSON patch must ``add`` (not ``replace``) a field an object does not have."""
    meta = body.setdefault("metadata", {})
    for name in ("labels", "annotations", "ownerReferences"):
        if name in meta and not meta[name]:
            del meta[name]
    if "data" in body and not body["data"]:
        del body["data"]
    return body


def _in_namespace(body: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    copied = copy.deepcopy(dict(body))
    meta = copied.setdefault("metadata", {})
    if meta.setdefault("namespace", namespace) != namespace:
        raise _error(400, "BadRequest", "the namespace of the object does not match the request")
    return copied


def _secret_body(desired: DesiredSecret, existing: SecretState | None) -> dict[str, Any]:
    """What :func:`opsync.kube._body` sends, with data left as bytes."""
    meta: dict[str, Any] = {
        "name": desired.name,
        "namespace": desired.namespace,
        "labels": dict(desired.labels),
        "annotations": desired.merged_annotations(existing),
        "ownerReferences": owner_references(desired.owner, existing),
    }
    if existing is not None and existing.resource_version:
        meta["resourceVersion"] = existing.resource_version
    return {"metadata": meta, "type": desired.type, "data": dict(desired.data)}


def _state(body: Mapping[str, Any]) -> SecretState:
    """As :func:`opsync.kube._state` reads a V1Secret."""
    meta = body["metadata"]
    references = meta.get("ownerReferences") or []
    return SecretState(
        namespace=meta["namespace"],
        name=meta["name"],
        type=body.get("type") or "Opaque",
        data=SecretData(body.get("data") or {}),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        owner_uids=frozenset(ref["uid"] for ref in references),
        resource_version=meta["resourceVersion"],
        uid=meta["uid"],
        owner_references=tuple(
            Owner(ref["apiVersion"], ref["kind"], ref["name"], ref["uid"]) for ref in references
        ),
    )


class LocalConnect:
    """The local Connect server in process, on loopback, and a real client for it.

    ``requests()`` counts what the server served (optionally one ``"GET /v1/..."`` route
    template), from the counter its ``/metrics`` exposes.
    """

    def __init__(self, data: Mapping[str, Any], folder: Path, *, vaults: list[str] | None = None) -> None:
        self.server = ConnectServer.from_data(data, folder)
        self._vaults = vaults
        self._client: ConnectClient | None = None

    async def __aenter__(self) -> LocalConnect:
        await self.server.start()
        scopes = self._vaults or [vault.id for vault in self.server.store.vaults()]
        self.token = self.server.issue_token(scopes)
        config = ConnectConfig(
            host=self.server.url,
            token=self.token,
            max_retries=0,
            forbidden_retries=0,
            backoff_initial=0.0,
            backoff_max=0.0,
            timeout=5.0,
            connect_timeout=1.0,
        )
        self._client = ConnectClient(config)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()
        await self.server.stop()

    @property
    def client(self) -> ConnectClient:
        assert self._client is not None, "not started"
        return self._client

    def requests(self, endpoint: str | None = None) -> int:
        return self.server.request_count(endpoint)
