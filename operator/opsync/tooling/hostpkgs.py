"""The Debian packages a node and ``make image`` need: installed when missing, or named.

Why this module exists: the node runs Debian's containerd, runc, CNI plugins, iptables and
conntrack, and the image is built with buildah and mmdebstrap; none of them is a Go module or
a PyPI package, so ``binaries`` cannot build them. A fresh machine (and CI, which runs as root)
gets them from ``apt-get``; anyone else gets one message naming what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path


class HostPackagesError(RuntimeError):
    """A needed package is missing and cannot be installed here; the message names it."""


NODE = {
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "iptables-save": "iptables",
    "conntrack": "conntrack",
    "ip": "iproute2",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "/usr/lib/cni/host-local": "containernetworking-plugins",
    "/usr/lib/cni/loopback": "containernetworking-plugins",
}
"""What a node runs: a command on PATH (or an absolute path) and the Debian package shipping it."""
IMAGE = {"buildah": "buildah", "mmdebstrap": "mmdebstrap", "runc": "runc"}
"""What ``make image`` runs."""
CNI_BIN_DIR = Path("/usr/lib/cni")


def _present(command: str) -> bool:
    if command.startswith("/"):
        return os.access(command, os.X_OK)
    return shutil.which(command) is not None or any(
        os.access(Path(d) / command, os.X_OK) for d in ("/usr/sbin", "/sbin")
    )


def missing(needs: dict[str, str]) -> list[str]:
    """The Debian packages of ``needs`` whose command is absent, sorted, once each."""
    return sorted({package for command, package in needs.items() if not _present(command)})


def ensure(*needs: dict[str, str], purpose: str) -> None:
    """Install the missing packages with apt-get when root; else raise one message naming them."""
    packages: set[str] = set()
    for need in needs:
        packages.update(missing(need))
    if not packages:
        return
    names = " ".join(sorted(packages))
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise HostPackagesError(
            f"{purpose} needs the Debian packages {names}, and must run as root: "
            f"`sudo apt-get install -y {names}`, then run it again as root."
        )
    _install(sorted(packages))
    left = set()
    for need in needs:
        left.update(missing(need))
    if left:
        raise HostPackagesError(
            f"apt-get installed {names} but these are still missing: {' '.join(sorted(left))}"
        )


def _install(packages: Iterable[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    argv = ["apt-get", "install", "-y", *packages]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise HostPackagesError(f"`{' '.join(argv)}` failed (exit {result.returncode}):\n{tail}")
