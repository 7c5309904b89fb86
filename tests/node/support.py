"""What the node tests share besides fixtures: the session's node, the installed chart, workloads
whose pods print the Secret's value, and reading pods, ReplicaSets and revisions back.

Test modules import from here (and from :mod:`tests.integration.helpers` for Connect items and
waiting), never from each other or from a conftest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from kubernetes import client

from bench.kube import Kube
from opsync.tooling import binaries
from opsync.tooling.harness import ConnectServerProcess
from opsync.tooling.images import Image
from opsync.tooling.node import NodeCluster
from opsync.tooling.nodedemo import write_chart_values
from tests.conftest import REPO

CHART = REPO / "helm" / "opsync"
AUTO_RESTART = "operator.1password.io/auto-restart"
RESTARTED_FOR = "opsync.io/restarted-for"
POLL_SECONDS = 2
"""The chart's pollingInterval here: an item change reaches its Secret within about this."""
SETTLE_SECONDS = 3 * POLL_SECONDS
"""How long nothing more may happen after a change for it to count as done once."""
MEASURED: dict[str, float] = {}
"""Seconds measured by the tests (start-up, rollouts, take-overs), printed at the session's end."""


@dataclass(frozen=True, kw_only=True)
class NodeEnv:
    """The session's node: the cluster, a client, the built image, a Connect server pods reach."""

    cluster: NodeCluster
    api: client.ApiClient
    kube: Kube
    image: Image
    connect: ConnectServerProcess
    home: Path
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)


def wait_for(check: Callable[[], Any], *, within: float = 60.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; AssertionError after ``within`` s."""
    deadline = time.monotonic() + within
    last: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except (AssertionError, client.ApiException) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:.0f}s") from last
        time.sleep(0.25)


# -- helm ------------------------------------------------------------------------------------------


def helm(node: NodeEnv, *args: str) -> str:
    found = binaries.ensure(["helm"])["helm"]
    env = {
        **os.environ,
        "KUBECONFIG": str(node.cluster.kubeconfig),
        "HELM_CACHE_HOME": str(node.home / "cache"),
        "HELM_CONFIG_HOME": str(node.home / "config"),
        "HELM_DATA_HOME": str(node.home / "data"),
    }
    result = subprocess.run(
        [str(found), *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, f"helm {' '.join(args[:2])} failed:\n{result.stderr}"
    return result.stdout


@dataclass(kw_only=True)
class Chart:
    """A release of helm/opsync running the built image on the node."""

    node: NodeEnv
    release: str
    namespace: str

    @classmethod
    def install(cls, node: NodeEnv, *, release: str, namespace: str, replicas: int = 1) -> Self:
        path = write_chart_values(
            node.home / f"values-{release}.json",
            image_ref=node.image.ref,
            connect_url=node.connect.url,
            token=node.connect.token,
            replicas=replicas,
            pollingInterval=POLL_SECONDS,
            logLevel="debug",
            customEnvVars=[{"name": "OPSYNC_LEASE_DURATION", "value": "6"}],
        )
        helm(
            node,
            "install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--create-namespace",
            "--values",
            str(path),
        )
        chart = cls(node=node, release=release, namespace=namespace)
        chart.wait_ready(replicas)
        return chart

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/instance={self.release}"

    def pods(self) -> list[client.V1Pod]:
        listed = self.node.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items
        return [pod for pod in listed if pod.metadata.deletion_timestamp is None]

    def ready_pods(self) -> list[client.V1Pod]:
        return [pod for pod in self.pods() if pod_ready(pod)]

    def wait_ready(self, replicas: int, within: float = 120.0) -> list[client.V1Pod]:
        def ready() -> list[client.V1Pod] | None:
            pods = self.ready_pods()
            return pods if len(pods) == replicas and len(self.pods()) == replicas else None

        try:
            found: list[client.V1Pod] = wait_for(
                ready, within=within, what=f"{replicas} Ready operator pod(s)"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe()}") from exc
        return found

    def describe(self) -> str:
        lines = []
        for pod in self.node.core.list_namespaced_pod(self.namespace).items:
            lines.append(f"{pod.metadata.name}: {pod.status.phase} {pod.status.container_statuses}")
            for container in pod.spec.containers:
                try:
                    log = self.node.core.read_namespaced_pod_log(
                        pod.metadata.name, self.namespace, container=container.name, tail_lines=30
                    )
                except client.ApiException as exc:
                    log = f"(no log: {exc.reason})"
                lines.append(f"--- {container.name}\n{log}")
        return "\n".join(lines)

    def scale(self, replicas: int) -> None:
        helm(
            self.node,
            "upgrade",
            self.release,
            str(CHART),
            "--namespace",
            self.namespace,
            "--reuse-values",
            "--set",
            f"operator.replicas={replicas}",
        )
        self.wait_ready(replicas)

    def lease_holder(self) -> str:
        """The Lease's holder identity: ``<pod name>_<random>`` (a restarted process has a new one)."""
        lease = client.CoordinationV1Api(self.node.api).read_namespaced_lease(
            f"{self.release}-leader", self.namespace
        )
        return str(lease.spec.holder_identity or "")

    def leader_pod(self) -> str:
        return self.lease_holder().rsplit("_", 1)[0]

    def uninstall(self) -> None:
        helm(self.node, "uninstall", self.release, "--namespace", self.namespace, "--wait")


# -- pods and workloads ----------------------------------------------------------------------------


def pod_ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def printing_pod_spec(image: str, secret: str) -> dict[str, Any]:
    """A pod that reads ``secret``'s ``password`` through an env var and a volume and prints both."""
    return {
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "app",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", 'echo "env=$P"; echo "file=$(cat /s/password)"; exec sleep infinity'],
                "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}],
                "volumeMounts": [{"name": "s", "mountPath": "/s", "readOnly": True}],
            }
        ],
        "volumes": [{"name": "s", "secret": {"secretName": secret}}],
    }


def workload_body(
    kind: str, name: str, image: str, secret: str, *, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": printing_pod_spec(image, secret)},
    }
    if kind != "DaemonSet":
        spec["replicas"] = 1
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": spec,
    }


def create_workload(node: NodeEnv, namespace: str, body: dict[str, Any]) -> None:
    create = {
        "Deployment": node.apps.create_namespaced_deployment,
        "StatefulSet": node.apps.create_namespaced_stateful_set,
        "DaemonSet": node.apps.create_namespaced_daemon_set,
    }[body["kind"]]
    create(namespace, body)


def running_pods(node: NodeEnv, namespace: str, app: str) -> list[client.V1Pod]:
    pods = node.core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [p for p in pods if p.metadata.deletion_timestamp is None and pod_ready(p)]


def printed(node: NodeEnv, namespace: str, pod: str) -> dict[str, str]:
    """What the printing pod wrote: {'env': ..., 'file': ...}."""
    log = node.core.read_namespaced_pod_log(pod, namespace)
    return dict(line.split("=", 1) for line in log.splitlines() if "=" in line)


def settled_pod(node: NodeEnv, namespace: str, app: str, within: float = 90.0) -> client.V1Pod:
    """The one Ready pod of ``app`` once it is the only pod left (a rollout finished)."""

    def one() -> client.V1Pod | None:
        pods = node.core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
        if len(pods) == 1 and pod_ready(pods[0]) and pods[0].metadata.deletion_timestamp is None:
            return pods[0]
        return None

    found: client.V1Pod = wait_for(one, within=within, what=f"one Ready pod of {app}")
    return found


def replica_sets(node: NodeEnv, namespace: str, app: str) -> list[client.V1ReplicaSet]:
    return list(node.apps.list_namespaced_replica_set(namespace, label_selector=f"app={app}").items)


def revisions(node: NodeEnv, namespace: str, app: str) -> list[client.V1ControllerRevision]:
    """The ControllerRevisions of a StatefulSet or DaemonSet: one per template it has had."""
    return list(node.apps.list_namespaced_controller_revision(namespace, label_selector=f"app={app}").items)


def container_pid(node: NodeEnv, pod: client.V1Pod, container: str = "operator") -> int:
    """The host PID of a pod's container's main process (from the node's containerd)."""
    status = next(s for s in pod.status.container_statuses if s.name == container)
    container_id = status.container_id.split("://", 1)[1]
    result = subprocess.run(
        ["ctr", "--address", str(node.cluster.containerd_socket), "--namespace", "k8s.io", "tasks", "ls"],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in result.stdout.splitlines():
        words = line.split()
        if words and words[0] == container_id:
            return int(words[1])
    raise AssertionError(f"container {container_id} is not running in containerd:\n{result.stdout}")


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


@dataclass
class SecretHistory:
    """Every distinct ``data`` a set of Secrets has had, seen by polling (a cheap watch)."""

    node: NodeEnv
    namespace: str
    seen: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def sample(self) -> None:
        for secret in self.node.core.list_namespaced_secret(self.namespace).items:
            data = dict(secret.data or {})
            history = self.seen.setdefault(secret.metadata.name, [])
            if not history or history[-1] != data:
                history.append(data)

    def changes(self, name: str) -> int:
        """How many times ``name``'s data changed after it was first seen."""
        return max(0, len(self.seen.get(name, [])) - 1)


def sampling(history: SecretHistory, seconds: float, step: float = 0.1) -> Iterator[float]:
    """Sample ``history`` every ``step`` s for ``seconds`` s, yielding the elapsed time."""
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        history.sample()
        yield elapsed
        time.sleep(step)
