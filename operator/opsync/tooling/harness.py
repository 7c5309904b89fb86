"""Start, wait for, measure and stop the processes the demo, the benchmark and the tests share.

Why this module exists: ``opsync demo`` (``make run``), ``python -m bench.run``
(``make bench``) and the integration tests all run the local Connect server
(``opsync connect-server``) and the operator (``opsync run``) as child
processes, exactly as a user runs them. Starting them right takes more than a
``Popen``: a free loopback port, a log file, a clean environment (nothing of
the caller's ``OP_CONNECT_*``, ``WATCH_NAMESPACE``, ``OPSYNC_*`` ... may leak into
a child), a wait until the server answers, a token, the server's own request
counter, a stop that escalates from SIGTERM to SIGKILL, and, should the owner
die without stopping them (even by SIGKILL), a watchdog that kills them. This
is the one place that knows how; the three callers only say what they want.

Every child runs in a session (and so a process group) of its own, so Ctrl-C
reaches only the owner, which stops its children in order; the
:class:`~opsync.tooling.watchdog.GroupWatchdog` of a :class:`Children` kills the
groups left when the owner dies. Nothing here imports ``kubernetes`` or ``pytest``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from opsync.tooling.connectserver.datafile import write_atomically
from opsync.tooling.controlplane import free_port
from opsync.tooling.watchdog import GroupWatchdog

START_TIMEOUT = 60.0
"""Seconds a child may take to answer after its start."""
STOP_TIMEOUT = 20.0
"""Seconds a child may take to exit after SIGTERM before it gets SIGKILL."""
LOG_TAIL_LINES = 30
"""Log lines an error message shows."""

REQUESTS_METRIC = "opsync_connect_server_requests_total"
PROBE_ENDPOINTS = frozenset({"/metrics", "/heartbeat", "/health"})
"""Endpoints left out of the Connect server's request counts: probes, not API calls."""

OFFICIAL_SETTINGS = frozenset({"WATCH_NAMESPACE", "POLLING_INTERVAL", "AUTO_RESTART"})
SETTING_PREFIXES = ("OP_", "OPSYNC_")
TOOLING_SETTINGS = frozenset({"OPSYNC_CACHE_DIR", "OPSYNC_BIN_DIR"})
"""``OPSYNC_*`` names that say where the tooling finds its binaries: kept, they configure no operator."""

Counts = dict[tuple[str, str], int]
"""Connect requests by (method, endpoint template)."""


class HarnessError(RuntimeError):
    """A child did not start, exited, or did not answer; the message says which, with its log's tail."""


# -- small helpers ---------------------------------------------------------------------------------


def opsync_argv(*args: str, python: str | None = None) -> list[str]:
    """``opsync ARGS`` run by ``python``; by default this interpreter (so the child runs the same
    code as its owner)."""
    return [python or sys.executable, "-m", "opsync", *args]


def is_operator_setting(name: str) -> bool:
    """Whether the environment variable ``name`` configures the operator or its Connect client:
    the official operator's names and every ``OP_*`` / ``OPSYNC_*`` but the tooling's own."""
    return name in OFFICIAL_SETTINGS or (name.startswith(SETTING_PREFIXES) and name not in TOOLING_SETTINGS)


def is_cluster_setting(name: str) -> bool:
    """Whether ``name`` points a Kubernetes client at a cluster (``KUBECONFIG``, in-cluster ``KUBERNETES_*``)."""
    return name == "KUBECONFIG" or name.startswith("KUBERNETES_")


def clean_env(settings: Mapping[str, str] | None = None, /, **more: str) -> dict[str, str]:
    """This process's environment without the caller's operator, Connect and cluster settings,
    plus ``settings`` and ``more``: a child sees only what its owner gives it."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not is_operator_setting(name) and not is_cluster_setting(name)
    }
    env.update(settings or {})
    env.update(more)
    return env


def tail(path: Path, lines: int = LOG_TAIL_LINES, *, indent: str = "    ") -> str:
    """The last ``lines`` lines of a log file, each indented, for an error message."""
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"{indent}(no log)"
    return "\n".join(indent + line for line in content[-lines:]) or f"{indent}(empty log)"


def terminate(
    process: subprocess.Popen[bytes], *, gently: bool = True, timeout: float = STOP_TIMEOUT
) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` (``gently``), or SIGKILL at once; reaped either way."""
    if process.poll() is None:
        if gently:
            process.terminate()
            try:
                process.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                pass
        process.kill()
    process.wait()


def write_private(path: Path, text: str) -> None:
    """Write a file only this user can read (it may hold a token or secret values), replacing any
    (the Connect server's atomic writer, which gives a new file mode 0600)."""
    path.unlink(missing_ok=True)
    write_atomically(path, text)


def write_data_file(path: Path, data: Mapping[str, Any]) -> Path:
    """A Connect server data file (format: docs/connect-server.md) holding ``data``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, yaml.safe_dump(dict(data), sort_keys=False))
    return path


@dataclass(frozen=True, kw_only=True)
class Sample:
    """One sample of a Prometheus text endpoint."""

    name: str
    labels: dict[str, str]
    value: float


def scrape(url: str, *, timeout: float = 10.0) -> list[Sample]:
    """Every sample a Prometheus text endpoint serves (raises ``httpx.HTTPError`` if it does not)."""
    response = httpx.get(url, timeout=timeout)
    response.raise_for_status()
    return [
        Sample(name=str(sample.name), labels=dict(sample.labels), value=float(sample.value))
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def request_delta(before: Counts, after: Counts) -> Counts:
    """Requests made between two readings of :meth:`ConnectServerProcess.requests`, without zeros."""
    return {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}


# -- children --------------------------------------------------------------------------------------


class Children:
    """The child processes of one owner: each in a session of its own, watched by a
    :class:`GroupWatchdog` that kills them should the owner die without stopping them.

    ``close()`` (or leaving the ``with`` block) stops those still running, newest first, and
    ends the watchdog.
    """

    def __init__(self) -> None:
        self._watchdog = GroupWatchdog()
        self._running: list[ChildProcess] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[ChildProcess]:
        return iter(list(self._running))

    def popen(self, argv: Sequence[str], *, log: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a session of its own, stdout and stderr to ``log``, and watch its group."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as handle:
            process = subprocess.Popen(
                list(argv),
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env),
                start_new_session=True,
            )
        self._watchdog.watch(process.pid)
        return process

    def adopt(self, child: ChildProcess) -> None:
        self._running.append(child)

    def release(self, child: ChildProcess) -> None:
        """``child`` has been stopped: the watchdog forgets its group."""
        if child in self._running:
            self._running.remove(child)
        self._watchdog.forget(child.process.pid)

    def check(self) -> None:
        """Raise :class:`HarnessError` for the first child that has exited."""
        for child in self:
            child.check()

    def stop_all(self) -> None:
        """Stop every child still running, the newest first (the operator before its Connect server)."""
        for child in reversed(list(self._running)):
            child.stop()

    def close(self) -> None:
        try:
            self.stop_all()
        finally:
            self._watchdog.close()


@dataclass(kw_only=True, eq=False)
class ChildProcess:
    """A child started through :class:`Children`, with its log file."""

    name: str
    """For messages: "the Connect server", "the operator"."""
    process: subprocess.Popen[bytes]
    log: Path
    children: Children = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def logs(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log, lines)

    def exit_error(self) -> HarnessError:
        """The error that says it exited, with its code and the tail of its log."""
        code = self.process.returncode
        hint = " (0: it was asked to stop, by a signal from outside its owner)" if code == 0 else ""
        return HarnessError(
            f"{self.name} exited with code {code}{hint}; last lines of {self.log}:\n{self.tail()}"
        )

    def check(self) -> None:
        """Raise :class:`HarnessError` with the log's tail if the process has exited."""
        if self.process.poll() is not None:
            raise self.exit_error()

    def wait_log(self, text: str, *, timeout: float = 30.0) -> bool:
        """Whether ``text`` shows up in the log within ``timeout`` s (:class:`HarnessError` if it exits)."""
        deadline = time.monotonic() + timeout
        while text not in self.logs():
            self.check()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def stop(self, *, gently: bool = True, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (``gently``; SIGKILL after ``timeout``) or SIGKILL; returns once it is gone."""
        terminate(self.process, gently=gently, timeout=timeout)
        self.children.release(self)  # only once it is gone: until then the watchdog still covers it


# -- the local Connect server ----------------------------------------------------------------------


@dataclass(kw_only=True, eq=False)
class ConnectServerProcess(ChildProcess):
    """``opsync connect-server`` on a data file, on a loopback port, and a token for it.

    :meth:`start` returns it answering, with a token; :meth:`spawn` only starts it, so the owner
    can do something else meanwhile, then :meth:`wait_ready` and :meth:`issue_token`.
    """

    port: int
    data_path: Path
    token: str = field(default="", repr=False)
    host: str = "127.0.0.1"
    """Where it listens: loopback, or a node's address (``opsync.tooling.node.NODE_IP``) for pods."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @classmethod
    def spawn(
        cls,
        children: Children,
        *,
        data_path: Path,
        log: Path | None = None,
        port: int | None = None,
        quiet: bool = True,
        args: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> Self:
        """Start the server on ``data_path`` (logging every request unless ``quiet``); no wait.

        The log defaults to ``connect-server.log`` next to the data file; the port, to a free one.
        """
        port = free_port() if port is None else port
        log = data_path.parent / "connect-server.log" if log is None else log
        argv = opsync_argv(
            "connect-server", "--data", str(data_path), "--host", host, "--port", str(port), *args
        )
        if quiet:
            argv.append("--quiet")
        process = children.popen(argv, log=log, env=clean_env())
        server = cls(
            name="the Connect server",
            process=process,
            log=log,
            children=children,
            port=port,
            data_path=data_path,
            host=host,
        )
        children.adopt(server)
        return server

    @classmethod
    def start(
        cls,
        children: Children,
        *,
        data_path: Path,
        data: Mapping[str, Any] | None = None,
        vaults: Sequence[str] | None = None,
        log: Path | None = None,
        port: int | None = None,
        quiet: bool = True,
        timeout: float = START_TIMEOUT,
        host: str = "127.0.0.1",
    ) -> Self:
        """:meth:`spawn` (on ``data`` written to ``data_path`` first, if given), :meth:`wait_ready`
        and :meth:`issue_token` for ``vaults`` (default: every vault); stopped again if any fails."""
        if data is not None:
            write_data_file(data_path, data)
        server = cls.spawn(children, data_path=data_path, log=log, port=port, quiet=quiet, host=host)
        try:
            server.wait_ready(timeout=timeout)
            server.issue_token(vaults)
        except BaseException:
            server.stop()
            raise
        return server

    def wait_ready(self, *, timeout: float = START_TIMEOUT) -> str:
        """Return the URL once ``/heartbeat`` answers 200; :class:`HarnessError` if it exits or is late."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise HarnessError(f"{self.name} exited ({self.process.returncode}):\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/heartbeat", timeout=1).status_code == 200:
                    return self.url
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise HarnessError(f"{self.name} did not start within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.1)

    def issue_token(self, vaults: Sequence[str] | None = None) -> str:
        """A token for ``vaults`` (names or ids, ``,r``/``,w`` suffixes allowed; default: every vault
        now in the data file), kept as :attr:`token` and returned."""
        scope = (
            ["--all-vaults"] if vaults is None else [arg for vault in vaults for arg in ("--vault", vault)]
        )
        result = subprocess.run(
            opsync_argv("connect-server", "issue-token", "--data", str(self.data_path), *scope),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=clean_env(),
        )
        if result.returncode != 0:
            raise HarnessError(f"issue-token failed: {result.stderr.strip()[-2000:]}")
        self.token = result.stdout.strip()
        return self.token

    def restart(self, *, log: Path | None = None, timeout: float = START_TIMEOUT) -> Self:
        """The server again, stopped first if it runs, on the same port and data file; its token stays
        valid (the signing key is in the data file). The log defaults to ``<log>-restarted.log``."""
        if self.running():
            self.stop()
        log = self.log.with_name(f"{self.log.stem}-restarted.log") if log is None else log
        server = self.spawn(self.children, data_path=self.data_path, log=log, port=self.port, host=self.host)
        server.token = self.token
        try:
            server.wait_ready(timeout=timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def requests(self) -> Counts:
        """The server's own request counter by (method, endpoint template), its probes left out."""
        counts: Counts = {}
        for sample in scrape(f"{self.url}/metrics"):
            endpoint = sample.labels.get("endpoint", "")
            if sample.name != REQUESTS_METRIC or endpoint in PROBE_ENDPOINTS:
                continue
            key = (sample.labels["method"], endpoint)
            counts[key] = counts.get(key, 0) + int(sample.value)
        return counts

    def stop(self, *, gently: bool = False, timeout: float = STOP_TIMEOUT) -> None:
        """SIGKILL by default: every write is on disk already, so there is nothing to wait for."""
        super().stop(gently=gently, timeout=timeout)


# -- the operator ----------------------------------------------------------------------------------


@dataclass(kw_only=True, eq=False)
class OperatorProcess(ChildProcess):
    """``opsync run`` with the settings its owner gives, and its HTTP endpoints."""

    metrics_url: str = ""
    """``http://127.0.0.1:PORT/metrics``, or "" when the harness did not bind it."""
    health_url: str = ""
    """``http://127.0.0.1:PORT`` (``/healthz``, ``/readyz``), or "" when off."""
    watch_namespace: str = ""
    """The ``WATCH_NAMESPACE`` it was given ("" for every namespace)."""

    @classmethod
    def start(
        cls,
        children: Children,
        *,
        log: Path,
        settings: Mapping[str, str],
        args: Sequence[str] = (),
        log_level: str | None = "info",
        metrics: bool = True,
        health: bool = False,
        python: str | None = None,
    ) -> Self:
        """Start the operator with ``settings`` (its environment: ``KUBECONFIG``, ``OP_CONNECT_HOST``,
        ...) over a :func:`clean_env`, and ``args`` after the harness's flags: ``--log-level`` (unless
        None), /metrics on a free loopback port (``metrics``) and the health probes on one
        (``health``), else off; by ``python`` (an interpreter with opsync installed), else this
        one. Returns at once: wait with :meth:`wait_log` or :meth:`metric`."""
        metrics_port = free_port() if metrics else None
        health_port = free_port() if health else None
        flags = [] if log_level is None else ["--log-level", log_level]
        flags += ["--metrics-bind-address", f"127.0.0.1:{metrics_port}" if metrics_port else "0"]
        flags += ["--health-probe-bind-address", f"127.0.0.1:{health_port}" if health_port else "0"]
        env = clean_env(settings, PYTHONUNBUFFERED="1")
        process = children.popen(opsync_argv("run", *flags, *args, python=python), log=log, env=env)
        operator = cls(
            name="the operator",
            process=process,
            log=log,
            children=children,
            metrics_url=f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else "",
            health_url=f"http://127.0.0.1:{health_port}" if health_port else "",
            watch_namespace=settings.get("WATCH_NAMESPACE", ""),
        )
        children.adopt(operator)
        return operator

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` (with ``labels``) on /metrics; 0 when there are none."""
        if not self.metrics_url:
            raise HarnessError(f"{self.name} was started without /metrics")
        return sum(
            sample.value
            for sample in scrape(self.metrics_url)
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def polls(self) -> int:
        """Polls ended so far (``opsync_polls_total``)."""
        return int(self.metric("opsync_polls_total"))

    def problems(self) -> list[str]:
        """The log's WARNING, ERROR and traceback lines."""
        return [
            line
            for line in self.logs().splitlines()
            if " WARNING " in line or " ERROR " in line or "Traceback" in line
        ]
