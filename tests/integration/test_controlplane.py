"""The local control plane is a real Kubernetes API server, and it cleans up after itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client, watch

from opsync.core import crd
from opsync.tooling.controlplane import ControlPlane, ControlPlaneError
from tests.conftest import Cluster


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes: it runs nothing and holds no port.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (alive := [pid for pid in pids if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def test_version_is_kubernetes_1_34(api_client: client.ApiClient) -> None:
    info = client.VersionApi(api_client).get_code()
    assert info.git_version.startswith("v1.34."), info.git_version
    assert (info.major, info.minor) == ("1", "34")


def test_crd_is_established_with_the_official_names(
    api_client: client.ApiClient, crds_installed: None
) -> None:
    served = client.ApiextensionsV1Api(api_client).read_custom_resource_definition(crd.CRD_NAME)
    assert served.spec.group == "onepassword.com"
    assert served.spec.scope == "Namespaced"
    assert served.spec.names.kind == "OnePasswordItem"
    assert served.spec.names.short_names == ["opi"]
    (version,) = served.spec.versions
    assert (version.name, version.served, version.storage) == ("v1", True, True)
    assert version.subresources.status == {}
    properties = version.schema.open_apiv3_schema.properties
    assert "itemPath" in properties["spec"].properties
    assert properties["type"].type == "string"


def test_item_can_be_created_watched_and_deleted(
    api_client: client.ApiClient, crds_installed: None, namespace: str
) -> None:
    objects = client.CustomObjectsApi(api_client)
    args = (crd.GROUP, crd.VERSION, namespace, crd.PLURAL)
    start = objects.list_namespaced_custom_object(*args)["metadata"]["resourceVersion"]
    body = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": "db"},
        "type": "Opaque",
        "spec": {"itemPath": "vaults/Kubernetes/items/db-credentials"},
    }
    objects.create_namespaced_custom_object(*args, body)
    objects.patch_namespaced_custom_object_status(
        *args, "db", {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Synced"}]}}
    )
    objects.delete_namespaced_custom_object(*args, "db")

    seen = []
    stream = watch.Watch().stream(
        objects.list_namespaced_custom_object, *args, resource_version=start, timeout_seconds=10
    )
    for event in stream:
        seen.append(event["type"])
        if event["type"] == "MODIFIED":
            assert event["object"]["status"]["conditions"][0]["reason"] == "Synced"
            assert event["object"]["type"] == "Opaque"
        if event["type"] == "DELETED":
            break
    assert seen == ["ADDED", "MODIFIED", "DELETED"]


def test_malformed_item_path_is_refused_at_admission(
    api_client: client.ApiClient, crds_installed: None, namespace: str
) -> None:
    objects = client.CustomObjectsApi(api_client)
    body = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": "bad"},
        "spec": {"itemPath": "Kubernetes/db-credentials"},
    }
    with pytest.raises(client.ApiException) as refused:
        objects.create_namespaced_custom_object(crd.GROUP, crd.VERSION, namespace, crd.PLURAL, body)
    assert refused.value.status == 422
    status = json.loads(refused.value.body)
    assert status["details"]["causes"][0]["field"] == "spec.itemPath"
    assert crd.ITEM_PATH_HELP in status["message"]


def test_two_planes_run_side_by_side_and_stop_leaves_nothing() -> None:
    planes = [ControlPlane(), ControlPlane()]
    errors: list[BaseException] = []

    def start(plane: ControlPlane) -> None:
        try:
            plane.start()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(plane,)) for plane in planes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert not errors, errors
        assert planes[0].url != planes[1].url
        for plane in planes:
            with urllib.request.urlopen(f"{plane.url}/version", context=plane.ssl_context()) as response:
                assert json.load(response)["gitVersion"].startswith("v1.34.")
        pids = [pid for plane in planes for pid in plane.pids]
        dirs = [plane.dir for plane in planes]
        assert len(pids) == 4
    finally:
        for plane in planes:
            plane.stop()
    assert _wait_gone(pids, timeout=1) == []
    assert all(d is not None and not d.exists() for d in dirs)


def test_children_die_with_a_killed_parent_and_its_files_are_swept(tmp_path: Path) -> None:
    parent_dir = tmp_path / "planes"
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from pathlib import Path
        from opsync.tooling.controlplane import ControlPlane
        plane = ControlPlane(parent_dir=Path({str(parent_dir)!r}))
        plane.start()
        print(json.dumps({{"pids": plane.pids, "dir": str(plane.dir)}}), flush=True)
        time.sleep(600)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        state = json.loads(child.stdout.readline())
    finally:
        child.kill()  # SIGKILL: no cleanup code of the child runs
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert _wait_gone(state["pids"]) == []
    assert Path(state["dir"]).exists()  # nobody could remove it ...
    with ControlPlane(parent_dir=parent_dir):
        assert not Path(state["dir"]).exists()  # ... until the next start swept it
    assert list(parent_dir.iterdir()) == []


def test_start_up_failure_shows_the_end_of_the_log() -> None:
    plane = ControlPlane(extra_apiserver_args=("--no-such-flag=1",), start_timeout=60)
    with pytest.raises(ControlPlaneError) as failed:
        plane.start()
    message = str(failed.value)
    assert "kube-apiserver exited with code" in message
    assert "unknown flag: --no-such-flag" in message
    assert plane.dir is None


def test_existing_cluster_option_uses_kubeconfig_instead_of_starting_a_plane(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Without Go or cached binaries a new control plane cannot start, so passing proves the
    # suite used the cluster named by $KUBECONFIG.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "OPSYNC_CACHE_DIR": str(tmp_path / "cache"),
        "KUBECONFIG": str(cluster.kubeconfig),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--existing-cluster",
            "-p",
            "no:cacheprovider",
            "-q",
            f"{Path(__file__)}::test_version_is_kubernetes_1_34",
        ],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
    assert not list((tmp_path / "cache").glob("*"))
