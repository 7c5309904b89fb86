"""Find, or build from the Go module proxy, the control-plane binaries.

No registry this project can reach ships kube-apiserver, etcd, kubectl or helm,
so they are compiled from Go modules: the wrapper modules in ``hack/`` pin the
versions (their ``go.mod`` files are the one place a version is written) and
this module builds them into a cache outside the repository, keyed by version
(``~/.cache/opsync/bin/<module>-<version>/``), so only the first run compiles.

Look-up order for each binary: ``$OPSYNC_BIN_DIR``, ``$KUBEBUILDER_ASSETS``
(as envtest does), the versioned cache; then it is built if Go and ``hack/``
are here (a pinned build beats whatever version happens to be on ``$PATH``);
then ``$PATH``; otherwise one error says what to install.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


class BinariesError(RuntimeError):
    """A binary is missing and cannot be built here; the message says what to do."""


@dataclass(frozen=True)
class Tool:
    """One binary and the wrapper module in ``hack/`` that builds it."""

    name: str
    cache_name: str
    """Names the cache folder, with the module version: ``<cache_name>-<version>``."""
    module_dir: str
    module_path: str
    """The Go module whose version names the cache folder."""
    package: str
    """The main package to build; ``.`` is the wrapper module itself."""
    ldflags: tuple[str, ...] = ()
    """Extra ``-X`` flags; ``{version}``, ``{major}``, ``{minor}`` are filled in."""


_K8S_VERSION_FLAGS = tuple(
    f"-X k8s.io/component-base/version.{key}={value}"
    for key, value in (
        ("gitVersion", "{version}"),
        ("gitMajor", "{major}"),
        ("gitMinor", "{minor}"),
        ("gitTreeState", "clean"),
        ("gitCommit", "go-module-proxy-build"),
        ("buildDate", "{build_date}"),
    )
)

# What a node adds to the control plane (``opsync controlplane up --node``): same module set and version
# as kube-apiserver, built only when a node is asked for.
NODE_K8S = ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")

TOOLS: tuple[Tool, ...] = (
    Tool(
        "kube-apiserver",
        "kubernetes",
        "k8sbins",
        "k8s.io/kubernetes",
        "k8s.io/kubernetes/cmd/kube-apiserver",
        _K8S_VERSION_FLAGS,
    ),
    Tool(
        "kubectl",
        "kubernetes",
        "k8sbins",
        "k8s.io/kubernetes",
        "k8s.io/kubernetes/cmd/kubectl",
        _K8S_VERSION_FLAGS,
    ),
    *(
        Tool(
            name,
            "kubernetes",
            "k8sbins",
            "k8s.io/kubernetes",
            f"k8s.io/kubernetes/cmd/{name}",
            _K8S_VERSION_FLAGS,
        )
        for name in NODE_K8S
    ),
    Tool("etcd", "etcd", "etcdbin", "go.etcd.io/etcd/server/v3", "."),
    Tool(
        "helm",
        "helm",
        "helmbin",
        "helm.sh/helm/v3",
        "helm.sh/helm/v3/cmd/helm",
        (
            "-X helm.sh/helm/v3/internal/version.version={version}",
            "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1",
            "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=34",
            "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1",
            "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=34",
        ),
    ),
)

CONTROL_PLANE = ("etcd", "kube-apiserver")
NODE = (*CONTROL_PLANE, *NODE_K8S)
# `make bins` (what every test run needs); the node binaries are built on first use of a node.
ALL = tuple(tool.name for tool in TOOLS if tool.name not in NODE_K8S)
EVERY = tuple(tool.name for tool in TOOLS)


def hack_dir() -> Path:
    """The ``hack/`` folder of the source checkout this package runs from."""
    return Path(__file__).resolve().parents[3] / "hack"


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("OPSYNC_CACHE_DIR"):
        return Path(env["OPSYNC_CACHE_DIR"]) / "bin"
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "opsync" / "bin"


def _tool(name: str) -> Tool:
    for tool in TOOLS:
        if tool.name == name:
            return tool
    raise KeyError(f"unknown tool {name!r}; known: {', '.join(EVERY)}")


def module_version(tool: Tool, hack: Path | None = None) -> str:
    """The version of ``tool.module_path`` required by its wrapper's go.mod."""
    gomod = (hack or hack_dir()) / tool.module_dir / "go.mod"
    text = gomod.read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(tool.module_path)}\s+(v\S+)", text, re.MULTILINE)
    if not match:
        raise BinariesError(f"{gomod} does not require {tool.module_path}")
    return match.group(1)


def cache_dir(tool: Tool, *, env: Mapping[str, str] | None = None, hack: Path | None = None) -> Path:
    return cache_root(env) / f"{tool.cache_name}-{module_version(tool, hack)}"


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find(name: str, *, env: Mapping[str, str] | None = None, use_path: bool = True) -> Path | None:
    """The binary to use for ``name`` without building, or None."""
    env = os.environ if env is None else env
    for var in ("OPSYNC_BIN_DIR", "KUBEBUILDER_ASSETS"):
        if env.get(var) and _is_executable(candidate := Path(env[var]) / name):
            return candidate
    tool = _tool(name)
    with contextlib.suppress(OSError, BinariesError):
        if _is_executable(candidate := cache_dir(tool, env=env) / name):
            return candidate
    found = shutil.which(name, path=env.get("PATH")) if use_path else None
    return Path(found) if found else None


def can_build(name: str) -> bool:
    return shutil.which("go") is not None and (hack_dir() / _tool(name).module_dir / "go.mod").is_file()


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-mod=mod")
    return env


@contextlib.contextmanager
def build_lock(root: Path) -> Iterator[None]:
    """One build at a time per cache, so parallel test runs do not compile twice."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".build.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(name: str) -> Path:
    """Compile ``name`` from its wrapper module into the versioned cache."""
    tool = _tool(name)
    go = shutil.which("go")
    hack = hack_dir()
    if go is None or not (hack / tool.module_dir / "go.mod").is_file():
        raise BinariesError(missing_message([name], have_go=go is not None))
    version = module_version(tool, hack)
    target_dir = cache_dir(tool, hack=hack)
    target = target_dir / name
    with build_lock(cache_root()):
        if _is_executable(target):
            return target
        major, minor = [*version.lstrip("v").split("."), "0"][:2]
        fields = {
            "version": version,
            "major": major,
            "minor": minor,
            "build_date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        ldflags = " ".join(["-s", "-w", *(flag.format(**fields) for flag in tool.ldflags)])
        target_dir.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=f".{name}.", dir=target_dir)
        os.close(fd)
        logger.info("building %s %s (first run only; cached in %s)", name, version, target_dir)
        try:
            subprocess.run(
                [
                    go,
                    "build",
                    "-trimpath",
                    "-buildvcs=false",
                    "-ldflags",
                    ldflags,
                    "-o",
                    partial,
                    tool.package,
                ],
                cwd=hack / tool.module_dir,
                env=_go_env(),
                check=True,
            )
            os.chmod(partial, 0o755)  # noqa: S103 - an executable for this user and CI
            os.replace(partial, target)
        except subprocess.CalledProcessError as exc:
            raise BinariesError(f"building {name} {version} failed (go build exit {exc.returncode})") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
    return target


def missing_message(names: Iterable[str], *, have_go: bool) -> str:
    names = list(names)
    if not have_go:
        how = (
            "Install Go >= 1.24 (https://go.dev/dl; Debian 12's golang package is too old) so they can be built "
            "from the Go module proxy on first use,"
        )
    else:
        how = "This installed copy of opsync has no hack/ folder to build from; run from a source checkout,"
    return (
        f"missing control-plane binaries: {', '.join(names)}. {how} or point KUBEBUILDER_ASSETS "
        "(or OPSYNC_BIN_DIR) at a folder holding them, or put them on PATH."
    )


def ensure(names: Iterable[str] = CONTROL_PLANE) -> dict[str, Path]:
    """Every binary in ``names``, building what is missing; raises BinariesError if it cannot."""
    found: dict[str, Path] = {}
    missing = []
    for name in names:
        path = find(name, use_path=False)
        if path is None and not can_build(name):
            path = find(name)
        if path is None and not can_build(name):
            missing.append(name)
        elif path is not None:
            found[name] = path
    if missing:
        raise BinariesError(missing_message(missing, have_go=shutil.which("go") is not None))
    return {name: found[name] if name in found else build(name) for name in names}
