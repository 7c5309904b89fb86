"""``opsync demo --node``: the demo with pods: the operator runs from the Helm chart on a real node.

Why this module exists: ``opsync demo`` (``make run``) stays light: a control plane without a
node and the operator as a local process. With ``--node`` (root) the same demo runs the way a
cluster runs opsync: the operator image is built (:mod:`opsync.tooling.images`), a node starts
(:mod:`opsync.tooling.node`), the chart is installed with that image, and a Deployment whose pod
prints its Secret is rolled out when the item changes. The Connect server listens on the node's
address, where pods reach the host. Ctrl-C, SIGTERM or SIGKILL of the demo leave nothing
running: the node's watchdog tears it down.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsync.tooling import binaries, hostpkgs, images, node
from opsync.tooling.controlplane import ControlPlane
from opsync.tooling.demo import (
    DEMO_ERRORS,
    NAMESPACE,
    POLLING_INTERVAL,
    UPDATE_FIELD,
    UPDATE_ITEM_NAME,
    Demo,
    DemoError,
    default_examples,
    format_pending,
    instructions,
    run_until_stopped,
)
from opsync.tooling.harness import ConnectServerProcess, OperatorProcess, write_private

NODE_DEMO_ERRORS: tuple[type[BaseException], ...] = (
    *DEMO_ERRORS,
    hostpkgs.HostPackagesError,
    images.ImageError,
    node.NodeError,
)
"""What stops ``demo --node`` with one message: the demo's errors and the node's."""

RELEASE = "opsync"
RELEASE_NAMESPACE = "opsync-system"
PRINTER = "secret-printer"
"""A Deployment whose pod prints a key of the demo Secret it reads through an env var (opted in to
restarts): the item and field the demo's update instructions change (a host name, not a secret)."""


def write_chart_values(path: Path, *, image_ref: str, connect_url: str, token: str, **operator: Any) -> Path:
    """Write, readable by its owner only (it holds the Connect token), the chart's values that run
    ``image_ref`` from the node's containerd against ``connect_url``; ``operator`` adds to the
    ``operator`` values (``pollingInterval``, ``replicas``, ...)."""
    repository, tag = image_ref.rsplit(":", 1)
    values = {
        "connect": {"host": connect_url},
        "operator": {
            "imageRepository": repository,
            "version": tag,
            "imagePullPolicy": "Never",
            "token": {"value": token},
            **operator,
        },
    }
    write_private(path, json.dumps(values))
    return path


@dataclass(kw_only=True)
class NodeDemo(Demo):
    """The demo on a node: the chart's operator pod instead of a local ``opsync run``."""

    cluster: node.NodeCluster | None = field(default=None, init=False)
    image: images.Image | None = field(default=None, init=False)

    def start_cluster(self, timeout: float) -> str:
        hostpkgs.ensure(hostpkgs.NODE, hostpkgs.IMAGE, purpose="opsync demo --node")
        started = time.monotonic()
        self.image = images.operator_image()
        built = time.monotonic() - started
        self.cluster = node.NodeCluster(images=[self.image.archive], start_timeout=max(timeout, 180.0))
        self.cluster.start()
        self.plane = self.cluster.plane
        return f"{self.image.ref} ({built:.0f} s); node {node.NODE_NAME} Ready at {node.NODE_IP}"

    def start_control_plane(self, timeout: float) -> ControlPlane:
        raise DemoError("NodeDemo starts its control plane with start_cluster")

    def start_node_connect_server(self) -> str:
        self.connect = ConnectServerProcess.spawn(
            self.children,
            data_path=self.run_dir / "connect-data.yaml",
            log=self.run_dir / "connect-server.log",
            quiet=False,
            host=node.NODE_IP,
        )
        self.connect.wait_ready()
        self.issue_token()
        return f"{self.connect.url} (reachable from pods), token for all vaults"

    def start_operator(self) -> OperatorProcess:
        raise DemoError("NodeDemo runs the operator from the chart: install_chart")

    def install_chart(self) -> str:
        assert self.connect is not None and self.image is not None and self.cluster is not None
        values_file = write_chart_values(
            self.run_dir / "node-values.json",
            image_ref=self.image.ref,
            connect_url=self.connect.url,
            token=self.connect.token,
            pollingInterval=POLLING_INTERVAL,
        )
        helm = binaries.ensure(["helm"])["helm"]
        chart = binaries.hack_dir().parent / "helm" / "opsync"
        result = subprocess.run(
            [
                str(helm),
                "install",
                RELEASE,
                str(chart),
                "--namespace",
                RELEASE_NAMESPACE,
                "--create-namespace",
                "--values",
                str(values_file),
                "--wait",
                "--timeout",
                "180s",
            ],
            env={
                **os.environ,
                "KUBECONFIG": str(self.cluster.kubeconfig),
                "HELM_CACHE_HOME": str(self.run_dir / "helm"),
                "HELM_CONFIG_HOME": str(self.run_dir / "helm"),
                "HELM_DATA_HOME": str(self.run_dir / "helm"),
            },
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        if result.returncode != 0:
            raise DemoError(f"helm install failed: {result.stderr.strip()}")
        pods = self.kubectl("get", "pods", "-n", RELEASE_NAMESPACE, "-o", "name").split()
        return (
            f"release {RELEASE} in {RELEASE_NAMESPACE}, pod {' '.join(p.split('/')[-1] for p in pods)} Ready"
        )

    def deploy_printer(self) -> str:
        """A Deployment that prints the demo Secret's password from its env (opted in to restarts)."""
        body: dict[str, Any] = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": PRINTER,
                "namespace": NAMESPACE,
                "annotations": {"operator.1password.io/auto-restart": "true"},
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": PRINTER}},
                "template": {
                    "metadata": {"labels": {"app": PRINTER}},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {
                                "name": "printer",
                                "image": self.image.ref if self.image else "",
                                "imagePullPolicy": "Never",
                                "command": ["sh", "-c", f'echo "{UPDATE_FIELD}=$V"; exec sleep infinity'],
                                "env": [
                                    {
                                        "name": "V",
                                        "valueFrom": {
                                            "secretKeyRef": {"name": UPDATE_ITEM_NAME, "key": UPDATE_FIELD}
                                        },
                                    }
                                ],
                            }
                        ],
                    },
                },
            },
        }
        self.kubectl("apply", "-f", "-", stdin=json.dumps(body))
        self.kubectl(
            "rollout", "status", f"deployment/{PRINTER}", "-n", NAMESPACE, "--timeout=120s", timeout=150
        )
        printed = self.kubectl("logs", f"deployment/{PRINTER}", "-n", NAMESPACE).strip()
        return f"deployment/{PRINTER} in {NAMESPACE}, its pod printed from its env: {printed}"

    def stop(self) -> None:
        self.children.close()
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None
        self.plane = None


def run(args: argparse.Namespace, demo_factory: type[NodeDemo] = NodeDemo) -> int:
    """``opsync demo --node``; Ctrl-C or SIGTERM stops it cleanly (:func:`run_until_stopped`)."""
    started = time.monotonic()

    def timed(label: str, detail: str) -> None:
        demo.say(f"  {label:<16} {detail}  [{time.monotonic() - started:.1f} s]\n")

    demo = demo_factory(
        run_dir=args.run_dir.resolve(),
        examples=(args.examples or default_examples()).resolve(),
        out=sys.stdout,
        ready_timeout=args.ready_timeout,
    )

    def steps() -> int:
        status = 0
        node.check_host()
        demo.say("opsync demo --node: control plane + node + the operator from the Helm chart, in a pod\n")
        demo.prepare()
        timed("image + node", demo.start_cluster(args.start_timeout))
        timed("Connect server", demo.start_node_connect_server())
        timed("chart", demo.install_chart())
        timed("examples", f"applied {len(demo.apply_examples())} objects from {demo.examples / 'items'}")
        waiting = demo.wait_ready()
        if waiting:
            status = 1
            demo.say(f"\nNOT READY:\n{format_pending(waiting)}")
        else:
            timed("all synced", "")
        timed("printer", demo.deploy_printer())
        demo.say(f"\nSecrets in namespace {NAMESPACE}:\n{demo.secrets_table()}\n")
        assert demo.cluster is not None and demo.connect is not None
        assert demo.token_file is not None
        operator_log = f"kubectl logs -n {RELEASE_NAMESPACE} deployment/{RELEASE}"
        demo.say(
            "\n"
            + instructions(
                kubeconfig=demo.cluster.kubeconfig,
                connect_url=demo.connect.url,
                token_file=demo.token_file,
                kubectl=demo.kubectl_path,
                run_dir=demo.run_dir,
                stays_up=not args.exit_when_ready,
            ).replace(str(demo.run_dir / "operator.log"), operator_log)
            + f"With pods: after that change deployment/{PRINTER} rolls out (a new ReplicaSet) and its new "
            f"pod prints the new {UPDATE_FIELD}:\n"
            f"  kubectl get rs,pods -n {NAMESPACE} -l app={PRINTER}\n"
            f"  kubectl logs -n {NAMESPACE} deployment/{PRINTER}\n"
            "  kubectl get nodes,pods -A\n"
        )
        return status

    return run_until_stopped(
        demo,
        steps,
        stays_up=not args.exit_when_ready,
        errors=NODE_DEMO_ERRORS,
        stopped="pods, node, control plane and Connect server",
        started=started,
    )
