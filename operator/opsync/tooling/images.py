"""Build the operator image and the node's pause image without a Docker daemon or registry.

Why this module exists: the node (:mod:`opsync.tooling.node`) runs the operator from the
chart, so the image must be built where Docker Hub is unreachable and no Docker engine runs.
``buildah bud`` builds the repository's Dockerfile unchanged, with its ``BASE`` build argument
pointed at a python3.11 image made here from Debian bookworm packages by ``mmdebstrap``; the
pause program (``hack/pause``, the pods' sandbox) is built with Go and wrapped into an image
with buildah too. Each image is saved as a docker-archive that ``ctr images import`` loads
into the node's containerd.

What is expensive is cached outside the repository, in ``~/.cache/opsync/images`` (or
``$OPSYNC_CACHE_DIR/images``): the base root filesystem (keyed by its recipe), the pause image
(keyed by its source) and the operator image (keyed by a hash of everything the Dockerfile
reads, so a change of the source rebuilds it and nothing else does).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from opsync.tooling import binaries

logger = logging.getLogger(__name__)

BASE_PACKAGES = ("python3", "python3-pip", "python-is-python3", "ca-certificates", "passwd")
"""Debian packages of the local base image: what the Dockerfile's stages use of python:3.11-slim."""
BASE_RECIPE = (
    "mmdebstrap",
    "--variant=minbase",
    f"--include={','.join(BASE_PACKAGES)}",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    # pip installs into the system interpreter, as in the official image (PEP 668 marker off).
    '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
    '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
    "bookworm",
)
BASE_REPOSITORY = "localhost/opsync-base"
OPERATOR_REPOSITORY = "localhost/opsync"
PAUSE_REPOSITORY = "localhost/opsync-pause"
BUILD_CONTEXT = ("Dockerfile", "pyproject.toml", "README.md", "operator")
"""What the operator image is built from (the .dockerignore lets in no more)."""
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
"""Mounted into ``buildah bud``'s RUN steps: pip there trusts what the host trusts (a proxy's CA)."""
KEEP_OPERATOR_ARCHIVES = 2


class ImageError(RuntimeError):
    """An image could not be built; the message says which step and how it failed."""


@dataclass(frozen=True, kw_only=True)
class Image:
    """A built image: its reference and the docker-archive holding it."""

    ref: str
    archive: Path


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    return binaries.cache_root(env).parent / "images"


def repo_root() -> Path:
    return binaries.hack_dir().parent


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:16]


def context_digest(root: Path | None = None) -> str:
    """A hash of every file the Dockerfile's build reads (what .dockerignore lets through)."""
    root = root or repo_root()
    parts: list[bytes] = []
    for name in BUILD_CONTEXT:
        path = root / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            relative = file.relative_to(root).as_posix()
            if "__pycache__" in relative or relative.endswith(".pyc") or ".egg-info" in relative:
                continue
            parts += [relative.encode(), file.read_bytes()]
    return _digest(*parts)


def _run(step: str, argv: list[str], **kwargs: object) -> str:
    logger.info("%s: %s", step, " ".join(argv))
    try:
        result = subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    except subprocess.CalledProcessError as exc:
        output = (exc.stdout or "") + (exc.stderr or "")
        tail = "\n".join(output.splitlines()[-30:])
        raise ImageError(f"{step} failed (exit {exc.returncode}):\n{tail}") from exc
    stdout: str = result.stdout
    return stdout


def _lock() -> contextlib.AbstractContextManager[None]:
    """One image build at a time per cache (the binaries' lock, on the images' folder)."""
    return binaries.build_lock(cache_dir())


def _buildah_has(ref: str) -> bool:
    return (
        subprocess.run(
            ["buildah", "inspect", "--type", "image", ref],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )


def _save(ref: str, archive: Path) -> None:
    partial = archive.with_name(f".partial-{archive.name}")
    partial.unlink(missing_ok=True)
    _run("buildah push", ["buildah", "push", ref, f"docker-archive:{partial}:{ref}"])
    os.replace(partial, archive)


def _runc() -> str:
    # Debian's buildah defaults to crun, which refuses this VM's hybrid cgroup v1/v2 layout.
    return shutil.which("runc") or "runc"


def base_image() -> Image:
    """The local python3.11 (Debian bookworm) base image, built once by mmdebstrap."""
    tag = _digest(*(part.encode() for part in BASE_RECIPE))
    ref = f"{BASE_REPOSITORY}:{tag}"
    rootfs = cache_dir() / f"base-{tag}.rootfs.tar"
    with _lock():
        if not rootfs.is_file():
            partial = rootfs.with_name(f".partial-{rootfs.name}")
            _run(
                "mmdebstrap (the base image's root filesystem)", [*BASE_RECIPE, "--format=tar", str(partial)]
            )
            os.replace(partial, rootfs)
        if not _buildah_has(ref):
            container = _run("buildah from", ["buildah", "from", "scratch"]).strip()
            try:
                _run("buildah add", ["buildah", "add", "--quiet", container, str(rootfs), "/"])
                _run(
                    "buildah config",
                    [
                        "buildah",
                        "config",
                        "--env",
                        "LANG=C.UTF-8",
                        "--env",
                        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        "--cmd",
                        "python3",
                        container,
                    ],
                )
                _run("buildah commit", ["buildah", "commit", "--quiet", container, ref])
            finally:
                subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
    return Image(ref=ref, archive=rootfs)


def pause_image() -> Image:
    """The pods' sandbox image: ``hack/pause`` built with Go, alone in an image."""
    source = binaries.hack_dir() / "pause"
    tag = _digest(*(f.read_bytes() for f in sorted(source.iterdir()) if f.is_file()))
    ref = f"{PAUSE_REPOSITORY}:{tag}"
    archive = cache_dir() / f"pause-{tag}.tar"
    go = shutil.which("go")
    if go is None:
        raise ImageError("the pause image is built with Go: install Go >= 1.24 (https://go.dev/dl)")
    with _lock():
        if archive.is_file():
            return Image(ref=ref, archive=archive)
        with tempfile.TemporaryDirectory(prefix="opsync-pause-") as scratch:
            program = Path(scratch) / "pause"
            env = dict(os.environ, CGO_ENABLED="0", GOTOOLCHAIN="local")
            _run(
                "go build (pause)",
                [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(program), "."],
                cwd=source,
                env=env,
            )
            container = _run("buildah from", ["buildah", "from", "scratch"]).strip()
            try:
                _run("buildah copy", ["buildah", "copy", "--quiet", container, str(program), "/pause"])
                _run("buildah config", ["buildah", "config", "--entrypoint", '["/pause"]', container])
                _run("buildah commit", ["buildah", "commit", "--quiet", container, ref])
            finally:
                subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
        _save(ref, archive)
    return Image(ref=ref, archive=archive)


def operator_image() -> Image:
    """The operator image from the repository's Dockerfile, rebuilt only when its inputs changed."""
    base = base_image()
    root = repo_root()
    tag = f"dev-{_digest(context_digest(root).encode(), base.ref.encode())}"
    ref = f"{OPERATOR_REPOSITORY}:{tag}"
    archive = cache_dir() / f"opsync-{tag}.tar"
    with _lock():
        if archive.is_file():
            return Image(ref=ref, archive=archive)
        _run(
            "buildah bud (the operator image)",
            [
                "buildah",
                "bud",
                "--runtime",
                _runc(),
                "--layers",
                # The host's network: buildah sets up no bridge, no iptables rules and no
                # net.ipv4.ip_forward of its own (which would outlive the build).
                "--network",
                "host",
                "--build-arg",
                f"BASE={base.ref}",
                "--volume",
                f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro",
                "--tag",
                ref,
                str(root),
            ],
        )
        _save(ref, archive)
        old = sorted(cache_dir().glob("opsync-dev-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in old[KEEP_OPERATOR_ARCHIVES:]:
            stale.unlink(missing_ok=True)
        _prune_buildah(keep=ref)
    return Image(ref=ref, archive=archive)


def _prune_buildah(*, keep: str) -> None:
    """Remove the earlier operator images and the untagged build steps from buildah's storage
    (each source change would otherwise add about 200 MB there); the base image stays."""
    listed = subprocess.run(
        ["buildah", "images", "--format", "{{.Name}}:{{.Tag}}"], capture_output=True, text=True, check=False
    ).stdout.split()
    stale = [ref for ref in listed if ref.startswith(f"{OPERATOR_REPOSITORY}:dev-") and ref != keep]
    if stale:
        subprocess.run(["buildah", "rmi", *stale], capture_output=True, check=False)
    subprocess.run(["buildah", "rmi", "--prune"], capture_output=True, check=False)  # untagged build steps
