"""Finding the control-plane binaries, and the one clear error when they cannot be had."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opsync.tooling import binaries
from opsync.tooling.controlplane import DIR_PREFIX, sweep_stale_dirs


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_versions_come_from_the_wrapper_modules() -> None:
    versions = {tool.name: binaries.module_version(tool) for tool in binaries.TOOLS}
    assert versions["kube-apiserver"].startswith("v1.34.")
    assert versions["kubectl"] == versions["kube-apiserver"]
    assert versions["etcd"].startswith("v3.6.")
    assert versions["helm"].startswith("v3.")


def test_cache_is_keyed_by_version(tmp_path: Path) -> None:
    env = {"OPSYNC_CACHE_DIR": str(tmp_path)}
    (apiserver,) = [tool for tool in binaries.TOOLS if tool.name == "kube-apiserver"]
    assert (
        binaries.cache_dir(apiserver, env=env)
        == tmp_path / "bin" / f"kubernetes-{binaries.module_version(apiserver)}"
    )


def test_look_up_order(tmp_path: Path) -> None:
    env = {"OPSYNC_CACHE_DIR": str(tmp_path / "cache"), "PATH": str(tmp_path / "path")}
    assert binaries.find("etcd", env=env) is None
    on_path = _executable(tmp_path / "path" / "etcd")
    assert binaries.find("etcd", env=env) == on_path
    (etcd,) = [tool for tool in binaries.TOOLS if tool.name == "etcd"]
    cached = _executable(binaries.cache_dir(etcd, env=env) / "etcd")
    assert binaries.find("etcd", env=env) == cached
    assets = _executable(tmp_path / "assets" / "etcd")
    assert binaries.find("etcd", env={**env, "KUBEBUILDER_ASSETS": str(tmp_path / "assets")}) == assets


def test_without_binaries_or_go_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no go, no binaries
    monkeypatch.setenv("OPSYNC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.delenv("OPSYNC_BIN_DIR", raising=False)
    with pytest.raises(binaries.BinariesError) as missing:
        binaries.ensure(["etcd", "kube-apiserver"])
    message = str(missing.value)
    assert "missing control-plane binaries: etcd, kube-apiserver" in message
    assert "Install Go" in message and "KUBEBUILDER_ASSETS" in message


def test_sweep_removes_only_folders_of_dead_owners(tmp_path: Path) -> None:
    dead = tmp_path / f"{DIR_PREFIX}dead"
    live = tmp_path / f"{DIR_PREFIX}live"
    for folder, pid in ((dead, 2**22 + 1), (live, os.getpid())):
        folder.mkdir()
        (folder / "owner.pid").write_text(str(pid))
    assert sweep_stale_dirs(tmp_path) == [dead]
    assert live.exists() and not dead.exists()
