"""The Kubernetes calls the benchmark and the integration tests make, through the ``kubernetes`` client.

Why this module exists, and here: both need the same few calls (install the
CRDs and wait until they are served, create and read OnePasswordItems, read
Secrets and their conditions), so there is one :class:`Kube` for both. It
cannot live in :mod:`opsync.tooling.harness`, which the operator's wheel ships
and where only :mod:`opsync.kube` may import the client, nor under ``tests/``,
which the benchmark must not import; the tests import it from here.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self, cast

import yaml
from kubernetes import client, config

from opsync.core import crd
from opsync.tooling.demo import ready_condition


class Kube:
    """Small helpers over the kubernetes client; ``core``, ``custom`` and ``apps`` for the rest."""

    def __init__(self, api_client: client.ApiClient, *, owned: bool = False) -> None:
        self.api = api_client
        self._owned = owned
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path, *, connections: int = 16) -> Self:
        """A client of its own (closed by :meth:`close`) with up to ``connections`` pooled connections."""
        configuration = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=configuration
        )
        configuration.connection_pool_maxsize = connections
        return cls(client.ApiClient(configuration), owned=True)

    def close(self) -> None:
        """Close the client if it is this helper's own (a shared one stays open)."""
        if self._owned:
            self.api.close()  # type: ignore[no-untyped-call]

    # -- cluster set-up ----------------------------------------------------------------------------

    def install_crds(self, paths: Iterable[Path], *, timeout: float = 60.0) -> None:
        """Create (or replace) every CRD in the YAML files ``paths``; return once each is Established."""
        ext = client.ApiextensionsV1Api(self.api)
        for path in paths:
            for body in yaml.safe_load_all(path.read_text()):
                if not body:
                    continue
                name = body["metadata"]["name"]
                try:
                    existing = ext.read_custom_resource_definition(name).metadata
                    body["metadata"]["resourceVersion"] = existing.resource_version if existing else None
                    ext.replace_custom_resource_definition(name, body)
                except client.ApiException as exc:
                    if exc.status != 404:
                        raise
                    ext.create_custom_resource_definition(body)
                deadline = time.monotonic() + timeout
                while True:
                    status = ext.read_custom_resource_definition(name).status
                    conditions = {c.type: c.status for c in (status.conditions if status else None) or []}
                    if conditions.get("Established") == "True":
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"CRD {name} not Established after {timeout:.0f} s: {conditions}")
                    time.sleep(0.1)

    def create_namespace(self, name: str) -> str:
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        return name

    # -- OnePasswordItems --------------------------------------------------------------------------

    def create_item(
        self, namespace: str, name: str, item_path: str | None, *, within: float = 0.0, **extra: Any
    ) -> dict[str, Any]:
        """A OnePasswordItem for ``item_path``; ``labels`` and ``annotations`` go to its metadata, any
        other keyword to the body. A 404 is retried for ``within`` s (a CRD just Established may not
        be served yet)."""
        body: dict[str, Any] = {"apiVersion": crd.API_VERSION, "kind": crd.KIND, "metadata": {"name": name}}
        if item_path is not None:
            body["spec"] = {"itemPath": item_path}
        for key, value in extra.items():
            if key in ("labels", "annotations"):
                body["metadata"][key] = value
            else:
                body[key] = value
        deadline = time.monotonic() + within
        while True:
            try:
                result = self.custom.create_namespaced_custom_object(
                    crd.GROUP, crd.VERSION, namespace, crd.PLURAL, body
                )
                return cast(dict[str, Any], result)
            except client.ApiException as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def create_items(
        self, namespace: str, paths: Mapping[str, str], *, threads: int = 8, within: float = 30.0
    ) -> None:
        """A OnePasswordItem per name → item path, ``threads`` at a time."""
        with ThreadPoolExecutor(threads) as pool:
            futures = [
                pool.submit(self.create_item, namespace, name, path, within=within)
                for name, path in paths.items()
            ]
            for future in futures:
                future.result()

    def item(self, namespace: str, name: str) -> dict[str, Any]:
        result = self.custom.get_namespaced_custom_object(crd.GROUP, crd.VERSION, namespace, crd.PLURAL, name)
        return cast(dict[str, Any], result)

    def items(self, namespace: str) -> list[dict[str, Any]]:
        listing = self.custom.list_namespaced_custom_object(crd.GROUP, crd.VERSION, namespace, crd.PLURAL)
        return list(cast(dict[str, Any], listing).get("items") or [])

    def patch_item(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(crd.GROUP, crd.VERSION, namespace, crd.PLURAL, name, patch)

    def delete_item(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(crd.GROUP, crd.VERSION, namespace, crd.PLURAL, name)

    def ready(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The item's Ready condition, or None before it has one."""
        condition = ready_condition(self.item(namespace, name))
        return None if condition is None else dict(condition)

    def readiness(self, namespace: str) -> tuple[int, dict[str, int]]:
        """How many OnePasswordItems are Ready=True, and the others counted by condition reason.

        Read as a Table of the CRD's printer columns without the objects (``includeObject=None``):
        9 ms against 23 ms for a full listing of 1,000 items here, so that it can be asked often
        without taking the CPU the operator being measured needs."""
        path = f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{namespace}/{crd.PLURAL}"
        request = self.api.param_serialize(
            method="GET",
            resource_path=path,
            query_params=[("includeObject", "None")],
            header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request)
        table = json.loads(response.read())  # type: ignore[no-untyped-call]
        names = [column["name"] for column in table.get("columnDefinitions") or []]
        ready_at, reason_at = names.index("Ready"), names.index("Reason")
        ready = 0
        waiting: dict[str, int] = {}
        for row in table.get("rows") or []:
            cells = row["cells"]
            if cells[ready_at] == "True":
                ready += 1
            else:
                reason = "no condition" if cells[ready_at] is None else str(cells[reason_at] or "-")
                waiting[reason] = waiting.get(reason, 0) + 1
        return ready, waiting

    # -- Secrets and Events ------------------------------------------------------------------------

    def secret(self, namespace: str, name: str) -> client.V1Secret | None:
        try:
            return self.core.read_namespaced_secret(name, namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete_secret(self, namespace: str, name: str) -> None:
        self.core.delete_namespaced_secret(name, namespace)

    def secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """The Secret's data, decoded; None when there is no such Secret."""
        secret = self.secret(namespace, name)
        if secret is None:
            return None
        return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}

    def resource_versions(self, namespace: str) -> dict[str, str]:
        """``kind/name`` → resourceVersion of every Secret and OnePasswordItem in ``namespace``."""
        versions = {
            f"Secret/{secret.metadata.name}": str(secret.metadata.resource_version)
            for secret in self.core.list_namespaced_secret(namespace).items
            if secret.metadata is not None
        }
        for obj in self.items(namespace):
            versions[f"{crd.KIND}/{obj['metadata']['name']}"] = str(obj["metadata"]["resourceVersion"])
        return versions

    def events(self, namespace: str, name: str) -> list[client.CoreV1Event]:
        """The Events about the object called ``name``."""
        listing = self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        return list(listing.items)
