"""The process harness: real child processes, started, counted, checked and stopped, and nothing leaks.

A real ``opsync connect-server`` on a small data file: the request counter it
serves is read back over HTTP and probes are left out; a restart keeps the
token; a stopped or crashed child is gone and its error shows its log. The
watchdog kills a child whose owner died by SIGKILL. No control plane needed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from opsync.tooling.harness import (
    ChildProcess,
    Children,
    ConnectServerProcess,
    HarnessError,
    OperatorProcess,
    clean_env,
    is_operator_setting,
    request_delta,
    tail,
    terminate,
    write_private,
)

DATA = {
    "vaults": [
        {
            "name": "Harness",
            "items": [{"title": "db", "category": "LOGIN", "fields": [{"label": "user", "value": "u"}]}],
        },
        {"name": "Elsewhere", "items": []},
    ]
}


def gone(pid: int) -> bool:
    """Whether process ``pid`` no longer runs (it is gone, or a zombie not reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture
def children() -> Iterator[Children]:
    with Children() as owned:
        yield owned


def test_a_connect_server_counts_api_requests_and_leaves_probes_out(
    children: Children, tmp_path: Path
) -> None:
    server = ConnectServerProcess.start(
        children, data_path=tmp_path / "connect-data.yaml", data=DATA, vaults=["Harness,r"]
    )
    assert server.running() and server.token and server.url.startswith("http://127.0.0.1:")
    assert (tmp_path / "connect-data.yaml").stat().st_mode & 0o077 == 0  # the data file is private
    assert server.log == tmp_path / "connect-server.log"
    headers = {"Authorization": f"Bearer {server.token}"}

    before = server.requests()
    for _ in range(2):
        assert httpx.get(f"{server.url}/v1/vaults", headers=headers).status_code == 200
    assert httpx.get(f"{server.url}/heartbeat").status_code == 200
    after = server.requests()

    assert request_delta(before, after) == {("GET", "/v1/vaults"): 2}
    assert all(endpoint not in ("/metrics", "/heartbeat", "/health") for _, endpoint in after)
    vaults = httpx.get(f"{server.url}/v1/vaults", headers=headers).json()
    assert [vault["name"] for vault in vaults] == ["Harness"]  # the token's scope

    pid = server.pid
    server.stop()
    assert not server.running() and gone(pid)
    assert list(children) == []


def test_a_restarted_connect_server_keeps_its_port_data_and_token(children: Children, tmp_path: Path) -> None:
    server = ConnectServerProcess.start(children, data_path=tmp_path / "data.yaml", data=DATA)
    server.stop()
    restarted = server.restart()
    assert (restarted.url, restarted.token) == (server.url, server.token)
    assert restarted.log == tmp_path / "connect-server-restarted.log"
    response = httpx.get(f"{restarted.url}/v1/vaults", headers={"Authorization": f"Bearer {server.token}"})
    assert sorted(vault["name"] for vault in response.json()) == ["Elsewhere", "Harness"]
    assert list(children) == [restarted]


def test_a_connect_server_that_cannot_start_says_why(children: Children, tmp_path: Path) -> None:
    data = tmp_path / "connect-data.yaml"
    data.write_text("vaults: [oops\n")
    with pytest.raises(HarnessError, match=r"the Connect server exited \(1\):\n(.|\n)*invalid data file"):
        ConnectServerProcess.start(children, data_path=data)
    assert list(children) == []


def test_an_operator_gets_none_of_the_callers_settings(
    children: Children, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OP_CONNECT_HOST", "http://leaked.invalid:8080")
    monkeypatch.setenv("OP_CONNECT_TOKEN", "leaked")
    operator = OperatorProcess.start(
        children, log=tmp_path / "operator.log", settings={"POLLING_INTERVAL": "5"}
    )
    assert operator.metrics_url.startswith("http://127.0.0.1:") and operator.health_url == ""
    operator.process.wait(30)
    with pytest.raises(HarnessError) as caught:
        children.check()
    message = str(caught.value)
    assert message.startswith(f"the operator exited with code 2; last lines of {operator.log}:\n")
    assert "OP_CONNECT_HOST: Field required" in message  # the caller's value never reached it
    with pytest.raises(HarnessError, match="exited with code 2"):
        operator.wait_log("never logged")
    operator.stop()
    assert list(children) == []


def test_the_watchdog_kills_the_children_of_an_owner_killed_by_sigkill(tmp_path: Path) -> None:
    owner_code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from opsync.tooling.harness import ChildProcess, Children

        children = Children()
        log = Path({str(tmp_path / "child.log")!r})
        process = children.popen([sys.executable, "-c", "import time; time.sleep(60)"], log=log, env={{}})
        print(process.pid, flush=True)
        time.sleep(60)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", owner_code], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        child = int(owner.stdout.readline())
        assert not gone(child)
    finally:
        owner.kill()
        owner.wait()
        assert owner.stdout is not None
        owner.stdout.close()
    deadline = time.monotonic() + 10
    while not gone(child):
        assert time.monotonic() < deadline, "the watchdog did not kill the orphan"
        time.sleep(0.05)


def test_terminate_kills_what_ignores_sigterm(children: Children, tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    process = children.popen([sys.executable, "-c", code], log=tmp_path / "stubborn.log", env=clean_env())
    child = ChildProcess(
        name="the stubborn child", process=process, log=tmp_path / "stubborn.log", children=children
    )
    children.adopt(child)
    assert child.wait_log("ready", timeout=10)
    started = time.monotonic()
    child.stop(timeout=0.5)
    assert time.monotonic() - started < 5
    assert process.returncode == -signal.SIGKILL and gone(process.pid)
    terminate(process)  # stopping what is gone already is a no-op


def test_clean_env_drops_the_callers_operator_connect_and_cluster_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "OP_CONNECT_HOST": "http://connect:8080",
        "OP_CONNECT_TOKEN_FILE": "/token",
        "OPSYNC_CONNECT_TIMEOUT": "3",
        "OPSYNC_LEASE_NAME": "theirs",
        "WATCH_NAMESPACE": "prod",
        "POLLING_INTERVAL": "1",
        "AUTO_RESTART": "true",
        "KUBECONFIG": "/their/kubeconfig",
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "OPSYNC_CACHE_DIR": "/cache",
        "OPSYNC_BIN_DIR": "/bin-dir",
    }.items():
        monkeypatch.setenv(name, value)
    env = clean_env({"POLLING_INTERVAL": "30"}, KUBECONFIG="/mine")
    assert env["POLLING_INTERVAL"] == "30" and env["KUBECONFIG"] == "/mine"
    assert env["PATH"] == os.environ["PATH"]
    assert (env["OPSYNC_CACHE_DIR"], env["OPSYNC_BIN_DIR"]) == ("/cache", "/bin-dir")  # the tooling's own
    dropped = {"OP_CONNECT_HOST", "OP_CONNECT_TOKEN_FILE", "OPSYNC_CONNECT_TIMEOUT", "OPSYNC_LEASE_NAME"}
    dropped |= {"WATCH_NAMESPACE", "AUTO_RESTART", "KUBERNETES_SERVICE_HOST"}
    assert not dropped & set(env)
    assert is_operator_setting("OP_MAX_INLINE_FILE_SIZE_KB") and not is_operator_setting("KUBECONFIG")


def test_every_test_starts_without_the_callers_operator_settings() -> None:
    """The suite's autouse ``clean_env`` fixture (tests/conftest.py)."""
    assert not [name for name in os.environ if is_operator_setting(name)]


def test_request_delta_keeps_what_changed_only() -> None:
    before = {("GET", "/v1/vaults"): 3, ("GET", "/v1/vaults/{vaultUuid}/items"): 1}
    after = {("GET", "/v1/vaults"): 5, ("GET", "/v1/vaults/{vaultUuid}/items"): 1, ("PATCH", "/x"): 1}
    assert request_delta(before, after) == {("GET", "/v1/vaults"): 2, ("PATCH", "/x"): 1}
    assert request_delta(after, after) == {}


def test_tail_shows_the_last_lines_indented(tmp_path: Path) -> None:
    log = tmp_path / "some.log"
    log.write_text("".join(f"line {n}\n" for n in range(50)))
    assert tail(log, 2) == "    line 48\n    line 49"
    assert tail(log, 1, indent="") == "line 49"
    log.write_text("")
    assert tail(log) == "    (empty log)"
    assert tail(tmp_path / "missing.log") == "    (no log)"


def test_a_private_file_is_for_this_user_only_and_replaces_any(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "new")
    assert path.read_text() == "new"
    assert path.stat().st_mode & 0o777 == 0o600
