"""``opsync controlplane``: build the control-plane binaries or run a local control plane.

``bins`` is what ``make`` calls to ensure the binaries; ``up`` starts etcd +
kube-apiserver, prints the kubeconfig path and keeps them running until
interrupted: the embedded cluster for trying opsync without one. ``up --node``
adds a node (as root: containerd, a kubelet, kube-proxy, the controllers), so
that pods run. ``image`` (``make image``) builds the operator image with buildah
and loads it into the running node, if any.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Any

from opsync.tooling import binaries
from opsync.tooling.controlplane import ControlPlane, ControlPlaneError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("controlplane", help="local kube-apiserver + etcd (tests and demos)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    bins = actions.add_parser("bins", help="find or build the binaries; print where they are")
    bins.add_argument(
        "names",
        nargs="*",
        default=list(binaries.ALL),
        help="binaries (default: all but the node's; see --node)",
    )
    bins.set_defaults(handler=_bins)
    up = actions.add_parser("up", help="start a control plane and keep it running until Ctrl-C")
    up.add_argument("--timeout", type=float, default=120.0, help="start-up timeout in seconds")
    up.add_argument(
        "--node",
        action="store_true",
        help="add a node (root; containerd, kubelet, kube-proxy, controllers) and load the operator image",
    )
    up.set_defaults(handler=_up)
    image = actions.add_parser(
        "image", help="build the operator image (buildah) and load it into a running node"
    )
    image.set_defaults(handler=_image)


def _bins(args: argparse.Namespace) -> int:
    try:
        paths = binaries.ensure(args.names)
    except binaries.BinariesError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    for name, path in paths.items():
        sys.stdout.write(f"{name}\t{path}\n")
    return 0


def _image(args: argparse.Namespace) -> int:
    del args
    from opsync.tooling import hostpkgs, images, node

    try:
        hostpkgs.ensure(hostpkgs.IMAGE, purpose="make image")
        started = time.monotonic()
        image = images.operator_image()
        sys.stdout.write(f"{image.ref}\t{image.archive}\t({time.monotonic() - started:.0f}s)\n")
        for socket in node.running_sockets():
            node.import_into(socket, image.archive)
            sys.stdout.write(f"loaded into the node's containerd ({socket}, namespace k8s.io)\n")
    except (hostpkgs.HostPackagesError, images.ImageError, node.NodeError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


def _up(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if args.node:
        return _up_node(args, stop)
    try:
        with ControlPlane(start_timeout=args.timeout) as plane:
            sys.stdout.write(
                f"control plane ready at {plane.url}\n"
                f"  export KUBECONFIG={plane.kubeconfig}\n"
                "  kubectl get namespaces\n"
                "Ctrl-C stops it and removes its files.\n"
            )
            sys.stdout.flush()
            stop.wait()
    except (ControlPlaneError, binaries.BinariesError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


def _up_node(args: argparse.Namespace, stop: threading.Event) -> int:
    from opsync.tooling import hostpkgs, images, node

    try:
        node.check_host()
        hostpkgs.ensure(hostpkgs.NODE, hostpkgs.IMAGE, purpose="a node (--node)")
        image = images.operator_image()
        with node.NodeCluster(images=[image.archive], start_timeout=max(args.timeout, 180.0)) as cluster:
            timings = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in cluster.timings.items())
            sys.stdout.write(
                f"control plane and node {node.NODE_NAME} ready ({timings})\n"
                f"  export KUBECONFIG={cluster.kubeconfig}\n"
                "  kubectl get nodes,pods -A\n"
                f"  operator image: {image.ref} (helm: --set operator.imageRepository="
                f"{image.ref.rsplit(':', 1)[0]} --set operator.version={image.ref.rsplit(':', 1)[1]})\n"
                f"  the node's address (pods reach host services there): {cluster.node_ip}\n"
                "Ctrl-C stops it and removes its files, interfaces, rules and cgroups.\n"
            )
            sys.stdout.flush()
            stop.wait()
    except (
        ControlPlaneError,
        binaries.BinariesError,
        hostpkgs.HostPackagesError,
        images.ImageError,
        node.NodeError,
    ) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0
