"""The layer contracts: each one holds on the tree, and each is seen to fail on a forbidden import.

``make lint`` runs import-linter with the contracts in pyproject.toml. A contract
that cannot fail checks nothing, so each is broken here on purpose, in a scratch
copy of the package, and import-linter must say so. The last tests check at run
time what the contracts promise statically: importing the core loads no HTTP,
Kubernetes or kopf library, and the use cases load neither kopf nor kubernetes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# contract id -> (module file to change, the forbidden import added to it)
BREAKS = {
    "pure-core": ("core/mapping.py", "import opsync.kube"),
    "use-cases-without-frameworks": ("sync/poller.py", "import opsync.kube"),
    "kopf-layer": ("run.py", "import kopf"),
    "kubernetes-layer": ("handlers/items.py", "import kubernetes"),
    "connect-client": ("kube.py", "import httpx"),
    "connect-models": ("connect/models.py", "from opsync.connect import client"),
    "runtime-without-tooling": ("handlers/runtime.py", "import opsync.tooling.harness"),
}


def contract_ids() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [contract["id"] for contract in config["tool"]["importlinter"]["contracts"]]


def lint_imports(tree: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    arguments = [arg for contract in contracts for arg in ("--contract", contract)]
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *arguments],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree / "operator")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("scratch")
    shutil.copy(ROOT / "pyproject.toml", tree)
    shutil.copytree(
        ROOT / "operator" / "opsync",
        tree / "operator" / "opsync",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tree


def test_every_contract_has_a_break() -> None:
    assert sorted(BREAKS) == sorted(contract_ids())


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(BREAKS)} kept, 0 broken." in result.stdout


@pytest.mark.parametrize("contract", sorted(BREAKS))
def test_a_forbidden_import_breaks_the_contract(scratch: Path, contract: str) -> None:
    relative, line = BREAKS[contract]
    module = scratch / "operator" / "opsync" / relative
    original = module.read_text()
    assert lint_imports(scratch, contract).returncode == 0  # the copy keeps it, before the change
    module.write_text(original + f"\n{line}  # a forbidden import\n")
    try:
        result = lint_imports(scratch, contract)
    finally:
        module.write_text(original)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
    assert "1 broken" in result.stdout


CORE = [
    "crd",
    "itempath",
    "mapping",
    "selection",
    "templating",
    "secrettypes",
    "compose",
    "desired",
    "workloads",
]
SYNC = ["resolve", "reconcile", "poller", "restarts", "leader", "debounce", "ports"]


def loaded_after(modules: list[str], probes: tuple[str, ...]) -> list[str]:
    code = (
        "import sys\n"
        + "".join(f"import {module}\n" for module in modules)
        + f"print(','.join(p for p in {probes!r} if p in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return [name for name in result.stdout.strip().split(",") if name]


def test_importing_the_core_loads_no_framework() -> None:
    modules = [f"opsync.core.{name}" for name in CORE] + ["opsync.connect.models", "opsync.connect.config"]
    assert loaded_after(modules, ("httpx", "kubernetes", "kopf", "aiohttp")) == []


def test_importing_the_use_cases_loads_neither_kopf_nor_kubernetes() -> None:
    assert loaded_after([f"opsync.sync.{name}" for name in SYNC], ("kubernetes", "kopf")) == []


def test_every_module_imports_first() -> None:
    """Each module imports in a fresh state of opsync (no import cycle that only a lucky order hides)."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import opsync\n"
        "names = [m.name for m in pkgutil.walk_packages(opsync.__path__, 'opsync.') if m.name != 'opsync.__main__']\n"
        "print(len(names))\n"
        "for name in names:\n"
        "    for loaded in [m for m in sys.modules if m == 'opsync' or m.startswith('opsync.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        print(f'{name}: {exc!r}')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    count, *failed = result.stdout.splitlines()
    assert int(count) > 50
    assert failed == []
