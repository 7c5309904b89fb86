"""``opsync controlplane``: build the control-plane binaries or run a local control plane.

``bins`` is what ``make`` calls to ensure the binaries; ``up`` starts etcd +
kube-apiserver, prints the kubeconfig path and keeps them running until
interrupted: the embedded cluster for trying opsync without one.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from opsync.tooling import binaries
from opsync.tooling.controlplane import ControlPlane, ControlPlaneError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("controlplane", help="local kube-apiserver + etcd (tests and demos)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    bins = actions.add_parser("bins", help="find or build the binaries; print where they are")
    bins.add_argument("names", nargs="*", default=list(binaries.ALL), help="binaries (default: all)")
    bins.set_defaults(handler=_bins)
    up = actions.add_parser("up", help="start a control plane and keep it running until Ctrl-C")
    up.add_argument("--timeout", type=float, default=120.0, help="start-up timeout in seconds")
    up.set_defaults(handler=_up)


def _bins(args: argparse.Namespace) -> int:
    try:
        paths = binaries.ensure(args.names)
    except binaries.BinariesError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    for name, path in paths.items():
        sys.stdout.write(f"{name}\t{path}\n")
    return 0


def _up(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
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
