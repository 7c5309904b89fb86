"""``python -m bench.run`` (``make bench``): what opsync costs, measured on the project's own local parts.

Why this exists: opsync's main promise over the official 1Password operator is
to be cheap on the Connect API (one request per idle poll, a handful per
changed item) while staying quick and small. This command measures those
claims end to end, with the operator run exactly as a user runs it, and prints
them as one table next to the official operator's modelled cost. It is a
measurement, not a test: it asserts nothing and prints what it saw, with the
targets beside it.

For each N it starts a fresh local control plane
(:class:`opsync.tooling.controlplane.ControlPlane`) and a local Connect server
(``opsync connect-server``) on generated data (N LOGIN items in V vaults),
creates N OnePasswordItems (half by title, half by id), then starts
``opsync run`` and measures:

* cold start: seconds from the operator's start until all N are Ready, and the
  Connect requests made meanwhile;
* idle: Connect requests per poll over 3 polls, once every vault's version is
  known, and how many Secrets and OnePasswordItems were written meanwhile;
* one change: a field PATCHed through the Connect API right after a poll; the
  seconds until the Secret holds the new value and the requests made for it
  (until the next poll ends, the PATCH itself left out);
* the operator's peak RSS (VmHWM) and CPU seconds.

Connect requests are counted by the server (``opsync_connect_server_requests_total``),
not by the operator, so nothing escapes the count. Values are never printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx
from kubernetes import client

from bench.kube import Kube
from opsync.tooling.controlplane import ControlPlane
from opsync.tooling.harness import (
    Children,
    ConnectServerProcess,
    Counts,
    HarnessError,
    OperatorProcess,
    request_delta,
)

REPO = Path(__file__).resolve().parents[1]
CRD_FILE = REPO / "crds" / "onepassworditem.yaml"

CHANGED_FIELD = "host"  # the field the change step rewrites (a host name, not a secret)
WARM_POLLS = 2  # polls after cold start before the idle count: every vault's version is then known
IDLE_POLLS = 3
CREATE_THREADS = 8


def ready_every(n: int) -> float:
    """How often the cold start's readiness is read: every 0.1 s up to 200 items, N/2000 s up to
    1,000, then every 0.5 s (each read is a Table of N rows: more rows, fewer reads)."""
    return min(0.5, max(0.1, n / 2000))


SECRET_EVERY = 0.1
DRIFT_WAIT_S = 30.0

# Targets, printed for reference (see the issue "Faster and lighter than the official operator").
TARGET_IDLE = 1
TARGET_CHANGE = 3
TARGET_CHANGE_SLACK_S = 2.0
TARGET_DRIFT_S = 2.0
TARGET_COLD_S = {100: 2.0, 1000: 15.0}
TARGET_RSS_MB = {1000: 100.0, 10000: 250.0}

# The official operator (v1.12, Go) as reported in the issue that set the targets, measured on a
# machine of this kind on 2026-11 beside opsync (POLLING_INTERVAL=10, each operator alone, half
# the items by title): cold start s, peak RSS MiB, CPU s, Connect requests at cold start, INFO lines.
OFFICIAL_REPORTED: dict[int, tuple[str, str, str, str, str]] = {
    100: ("3.19", "57", "-", "-", "-"),
    1000: ("26.7-30.8", "69", "23-27", "6200-7000", "2031"),
}


class BenchError(RuntimeError):
    """A part did not start or did not reach the state the bench waits for; the message says which."""


# -- generated data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchItem:
    """One LOGIN item in the Connect data and the OnePasswordItem that refers to it."""

    index: int
    vault_index: int
    by_title: bool

    @property
    def vault_id(self) -> str:
        return f"benchvault{self.vault_index:016d}"

    @property
    def vault_title(self) -> str:
        return f"bench-vault-{self.vault_index:03d}"

    @property
    def item_id(self) -> str:
        return f"benchitem{self.index:017d}"

    @property
    def title(self) -> str:
        return f"bench-item-{self.index:05d}"

    @property
    def name(self) -> str:
        """The OnePasswordItem's name, and so its Secret's."""
        return f"item-{self.index:05d}"

    @property
    def item_path(self) -> str:
        if self.by_title:
            return f"vaults/{self.vault_title}/items/{self.title}"
        return f"vaults/{self.vault_id}/items/{self.item_id}"


def make_items(n: int, vaults: int) -> list[BenchItem]:
    """``n`` items in ``vaults`` contiguous blocks of (nearly) equal size; every other one by title."""
    return [BenchItem(index=i, vault_index=i * vaults // n, by_title=i % 2 == 0) for i in range(n)]


def connect_data(items: Sequence[BenchItem], vaults: int) -> dict[str, Any]:
    """The Connect server's data file: every item a LOGIN with a username, a password and a host."""
    by_vault: dict[int, list[dict[str, Any]]] = {v: [] for v in range(vaults)}
    for item in items:
        by_vault[item.vault_index].append(
            {
                "id": item.item_id,
                "title": item.title,
                "category": "LOGIN",
                "fields": [
                    {
                        "id": "username",
                        "purpose": "USERNAME",
                        "label": "username",
                        "value": f"user{item.index}",
                    },
                    {
                        "id": "password",
                        "type": "CONCEALED",
                        "purpose": "PASSWORD",
                        "label": "password",
                        "value": f"not-a-real-password-{item.index:05d}",
                    },
                    {"id": CHANGED_FIELD, "label": CHANGED_FIELD, "value": f"db-{item.index}.bench.example"},
                ],
            }
        )
    return {
        "vaults": [
            {"id": BenchItem(0, v, False).vault_id, "name": BenchItem(0, v, False).vault_title, "items": its}
            for v, its in by_vault.items()
        ]
    }


def official_requests_per_poll(items: Sequence[BenchItem], files: int = 0) -> int:
    """The official operator's Connect requests per poll: 2+F per item by id, 4+F by title."""
    return sum((4 if item.by_title else 2) + files for item in items)


def total(counts: Mapping[tuple[str, str], int]) -> int:
    return sum(counts.values())


# -- the bench's own requests and measurements ---------------------------------------------------


def patch_field(connect: ConnectServerProcess, item: BenchItem, field_id: str, value: str) -> None:
    """Replace one field's value through the Connect API (one PATCH)."""
    response = httpx.patch(
        f"{connect.url}/v1/vaults/{item.vault_id}/items/{item.item_id}",
        json=[{"op": "replace", "path": f"/fields/{field_id}/value", "value": value}],
        headers={"Authorization": f"Bearer {connect.token}"},
        timeout=30,
    )
    if response.status_code != 200:
        raise BenchError(f"PATCH of {item.title} answered {response.status_code}")


def wait_polls(operator: OperatorProcess, count: int, timeout: float) -> int:
    """Return as soon as ``count`` polls have ended (within 0.1 s of the last one's end)."""
    deadline = time.monotonic() + timeout
    while True:
        operator.check()
        try:
            polls = operator.polls()
        except httpx.TransportError:
            polls = -1
        if polls >= count:
            return polls
        if time.monotonic() > deadline:
            raise BenchError(f"{count} polls had not ended after {timeout:.0f} s (now {polls})")
        time.sleep(0.1)


def info_lines(operator: OperatorProcess) -> int:
    """INFO lines the operator has logged so far."""
    return sum(1 for line in operator.logs().splitlines() if " INFO " in line)


def memory_mb(operator: OperatorProcess, field: str) -> float:
    """A memory line of /proc/<pid>/status in MiB: VmHWM (peak resident) or VmRSS (resident now)."""
    for line in Path(f"/proc/{operator.pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no {field} in /proc/<pid>/status")


def cpu_seconds(operator: OperatorProcess) -> float:
    """User + system CPU time so far (utime + stime of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{operator.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- one scenario --------------------------------------------------------------------------------


@dataclass
class Result:
    """What one run with N items measured."""

    n: int
    vaults: int
    interval: int
    cold_start_s: float
    cold_requests: Counts
    polls_in_cold_start: int
    idle_polls: int
    idle_requests: Counts
    idle_writes: int
    change_by_title: bool
    change_requests: Counts
    change_s: float | None
    drift_s: float | None
    info_cold: int
    info_idle: int
    rss_mb: float
    rss_end_mb: float
    cpu_s: float
    problems: list[str]
    by_title: int
    official_per_poll: int

    @property
    def per_idle_poll(self) -> float:
        return total(self.idle_requests) / self.idle_polls


def say(out: IO[str], text: str) -> None:
    out.write(text + "\n")
    out.flush()


def run_scenario(n: int, args: argparse.Namespace, directory: Path, out: IO[str]) -> Result:
    """Everything for one N, on fresh parts that are stopped however this ends."""
    started = time.monotonic()

    def step(text: str) -> None:
        load = os.getloadavg()[0]
        say(out, f"  [N={n} {time.monotonic() - started:6.1f} s, load {load:.2f}] {text}")

    directory.mkdir(parents=True, exist_ok=True)
    items = make_items(n, args.vaults)
    namespace = f"bench-{n}"
    with ExitStack() as stack:
        children = stack.enter_context(Children())  # its watchdog ends last
        plane = ControlPlane(start_timeout=120)
        plane.start()
        stack.callback(plane.stop)
        stack.callback(children.stop_all)  # the operator, then the Connect server, then the plane
        step(f"control plane up at {plane.url}")
        kube = Kube.from_kubeconfig(plane.kubeconfig, connections=CREATE_THREADS * 2)
        stack.callback(kube.close)
        connect = ConnectServerProcess.start(
            children, data_path=directory / "connect-data.yaml", data=connect_data(items, args.vaults)
        )
        step(f"Connect server up at {connect.url} ({n} items in {args.vaults} vaults)")
        kube.install_crds([CRD_FILE])
        kube.create_namespace(namespace)
        kube.create_items(namespace, {item.name: item.item_path for item in items}, threads=CREATE_THREADS)
        step(f"{n} OnePasswordItems created in namespace {namespace}")

        # 1. cold start
        before = connect.requests()
        t0 = time.monotonic()
        operator = OperatorProcess.start(
            children,
            log=directory / "operator.log",
            settings={
                "KUBECONFIG": str(plane.kubeconfig),
                "OP_CONNECT_HOST": connect.url,
                "OP_CONNECT_TOKEN": connect.token,
                "WATCH_NAMESPACE": namespace,
                "POLLING_INTERVAL": str(args.interval),
                "OPSYNC_LEASE_NAME": f"opsync-bench-{uuid.uuid4().hex[:10]}",
            },
            log_level=args.operator_log_level,
            python=args.python,
        )
        while True:
            operator.check()
            ready, waiting = kube.readiness(namespace)
            now = time.monotonic()
            if ready == n:
                break
            if now - t0 > args.timeout:
                raise BenchError(f"only {ready}/{n} Ready after {args.timeout:.0f} s; the others: {waiting}")
            time.sleep(max(0.0, ready_every(n) - (time.monotonic() - now)))
        cold_start_s = time.monotonic() - t0
        cold_requests = request_delta(before, connect.requests())
        info_cold = info_lines(operator)
        polls_at_ready = wait_polls(operator, 0, timeout=30)  # the polls ended so far
        step(f"all {n} Ready after {cold_start_s:.1f} s, {total(cold_requests)} Connect requests")

        # 2. idle: start counting right after a poll ends, once every vault's version is known
        poll_wait = args.interval * 3 + 60
        polls = wait_polls(operator, polls_at_ready + WARM_POLLS, timeout=poll_wait * WARM_POLLS)
        before = connect.requests()
        versions_before = kube.resource_versions(namespace)
        info_before = info_lines(operator)
        polls = wait_polls(operator, polls + IDLE_POLLS, timeout=poll_wait * IDLE_POLLS)
        idle_requests = request_delta(before, connect.requests())
        info_idle = info_lines(operator) - info_before
        versions_after = kube.resource_versions(namespace)
        idle_writes = sum(1 for key, rv in versions_after.items() if versions_before.get(key) != rv)
        step(f"idle: {total(idle_requests)} Connect requests in {IDLE_POLLS} polls, {idle_writes} writes")

        # 3. one change, right after a poll ended (the idle count ends with one)
        changed = items[0]
        new_value = f"db-{changed.index}-{uuid.uuid4().hex[:8]}.bench.example"
        before = connect.requests()
        patch_field(connect, changed, CHANGED_FIELD, new_value)
        patched = time.monotonic()
        change_s: float | None = None
        change_requests: Counts | None = None
        deadline = patched + poll_wait
        while change_s is None or change_requests is None:
            operator.check()
            if (
                change_s is None
                and (kube.secret_data(namespace, changed.name) or {}).get(CHANGED_FIELD) == new_value.encode()
            ):
                change_s = time.monotonic() - patched
            if change_requests is None and operator.polls() > polls:
                change_requests = request_delta(before, connect.requests())
            if time.monotonic() > deadline:
                break
            time.sleep(SECRET_EVERY)
        if change_requests is None:
            change_requests = request_delta(before, connect.requests())
        patch_key = next((key for key in change_requests if key[0] == "PATCH"), None)
        if patch_key is not None:  # the bench's own PATCH
            change_requests[patch_key] -= 1
            change_requests = {key: count for key, count in change_requests.items() if count}
        shown = f"{change_s:.1f} s" if change_s is not None else f"not within {poll_wait} s"
        step(f"one change: Secret updated after {shown}, {total(change_requests)} Connect requests")

        # 4. drift: a managed Secret deleted by hand comes back
        drifted = items[-1].name
        kube.delete_secret(namespace, drifted)
        deleted = time.monotonic()
        drift_s: float | None = None
        while time.monotonic() - deleted < DRIFT_WAIT_S:
            operator.check()
            if kube.secret_data(namespace, drifted):
                drift_s = time.monotonic() - deleted
                break
            time.sleep(SECRET_EVERY / 2)
        step(f"drift: deleted Secret restored after {drift_s:.2f} s" if drift_s else "drift: not restored")

        return Result(
            n=n,
            vaults=args.vaults,
            interval=args.interval,
            cold_start_s=cold_start_s,
            cold_requests=cold_requests,
            polls_in_cold_start=polls_at_ready,
            idle_polls=IDLE_POLLS,
            idle_requests=idle_requests,
            idle_writes=idle_writes,
            change_by_title=changed.by_title,
            change_requests=change_requests,
            change_s=change_s,
            drift_s=drift_s,
            info_cold=info_cold,
            info_idle=info_idle,
            rss_mb=memory_mb(operator, "VmHWM"),
            rss_end_mb=memory_mb(operator, "VmRSS"),
            cpu_s=cpu_seconds(operator),
            problems=operator.problems(),
            by_title=sum(1 for item in items if item.by_title),
            official_per_poll=official_requests_per_poll(items),
        )
    raise AssertionError("unreachable")  # pragma: no cover  (ExitStack does not swallow exceptions)


# -- report --------------------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Plain text, every column right-aligned to its widest cell."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    return "\n".join(
        indent + "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    )


def format_counts(counts: Mapping[tuple[str, str], int]) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{method} {endpoint} x{count}" for (method, endpoint), count in sorted(counts.items()))


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report(results: Sequence[Result], interval: int) -> str:
    per_hour = 3600 / interval
    lines = [
        "opsync, measured (Connect requests counted by the Connect server):",
        format_table(
            [
                "N",
                "V",
                "cold start s",
                "cold reqs",
                "reqs/idle poll",
                "reqs/change",
                "change->Secret s",
                "drift->restored s",
                "peak RSS MiB",
                "CPU s",
                "INFO lines cold/idle",
                "idle k8s writes",
            ],
            [
                [
                    str(r.n),
                    str(r.vaults),
                    f"{r.cold_start_s:.1f}",
                    str(total(r.cold_requests)),
                    f"{r.per_idle_poll:.2f}",
                    str(total(r.change_requests)),
                    f"{r.change_s:.1f}" if r.change_s is not None else "timeout",
                    f"{r.drift_s:.2f}" if r.drift_s is not None else "timeout",
                    f"{r.rss_mb:.0f}",
                    f"{r.cpu_s:.1f}",
                    f"{r.info_cold}/{r.info_idle}",
                    str(r.idle_writes),
                ]
                for r in results
            ],
            "  ",
        ),
        "",
        f"Official 1Password operator, modelled (2+F requests per item by id, 4+F by title, every poll; "
        f"F=0 here), POLLING_INTERVAL={interval}:",
        format_table(
            ["N", "by id", "by title", "reqs/poll", "reqs/hour", "opsync idle reqs/hour"],
            [
                [
                    str(r.n),
                    str(r.n - r.by_title),
                    str(r.by_title),
                    str(r.official_per_poll),
                    f"{r.official_per_poll * per_hour:.0f}",
                    f"{r.per_idle_poll * per_hour:.0f}",
                ]
                for r in results
            ],
            "  ",
        ),
        "",
        "Official 1Password operator, measured (as reported in the issue that set the targets; not by "
        "this run):",
        format_table(
            ["N", "cold start s", "peak RSS MiB", "CPU s", "Connect reqs at cold start", "INFO lines"],
            [[str(n), *figures] for n, figures in OFFICIAL_REPORTED.items()],
            "  ",
        ),
        "",
        "Targets:",
    ]
    target_rows: list[list[str]] = []
    for r in results:
        change_limit = interval + TARGET_CHANGE_SLACK_S
        cold_limit = TARGET_COLD_S.get(r.n)
        rss_limit = TARGET_RSS_MB.get(r.n)
        request_limit = 1 + r.vaults + r.n + r.n // 10  # one vault list, a listing per vault, a read per item
        target_rows.append(
            [
                str(r.n),
                f"{verdict(r.cold_start_s <= cold_limit)} ({r.cold_start_s:.1f} s <= {cold_limit:.0f})"
                if cold_limit
                else f"- ({r.cold_start_s:.1f} s)",
                f"{verdict(total(r.cold_requests) <= request_limit)} ({total(r.cold_requests)} <= {request_limit})",
                f"{verdict(r.per_idle_poll <= TARGET_IDLE)} ({r.per_idle_poll:.2f})",
                f"{verdict(total(r.change_requests) <= TARGET_CHANGE)} ({total(r.change_requests)})",
                f"{verdict(r.change_s is not None and r.change_s <= change_limit)} "
                f"({'timeout' if r.change_s is None else f'{r.change_s:.1f} s'})",
                f"{verdict(r.drift_s is not None and r.drift_s <= TARGET_DRIFT_S)} "
                f"({'timeout' if r.drift_s is None else f'{r.drift_s:.2f} s'})",
                f"{verdict(r.rss_mb <= rss_limit)} ({r.rss_mb:.0f} <= {rss_limit:.0f} MiB)"
                if rss_limit
                else f"- ({r.rss_mb:.0f} MiB)",
                f"{verdict(r.info_cold <= r.n + 20 and r.info_idle == 0)} ({r.info_cold}/{r.info_idle})",
            ]
        )
    lines.append(
        format_table(
            [
                "N",
                "cold start",
                "cold reqs <= 1+V+1.1N",
                f"idle <= {TARGET_IDLE} req/poll",
                f"change <= {TARGET_CHANGE} (+files) reqs",
                f"Secret <= {interval + TARGET_CHANGE_SLACK_S:.0f} s",
                f"restored <= {TARGET_DRIFT_S:.0f} s",
                "peak RSS",
                "INFO <= 1/Secret, 0 idle",
            ],
            target_rows,
            "  ",
        )
    )
    lines += ["", "Details:"]
    for r in results:
        ref = "by title" if r.change_by_title else "by id"
        lines += [
            f"  N={r.n}: cold start {format_counts(r.cold_requests)} ({r.polls_in_cold_start} polls ended by then)",
            f"  N={r.n}: idle ({r.idle_polls} polls) {format_counts(r.idle_requests)}",
            f"  N={r.n}: one change (item {ref}) {format_counts(r.change_requests)}",
            f"  N={r.n}: operator memory: peak RSS (VmHWM) {r.rss_mb:.0f} MiB, RSS at the end {r.rss_end_mb:.0f} MiB",
            f"  N={r.n}: operator log: {len(r.problems)} warning/error lines",
            *(f"      {line[:200]}" for line in r.problems[:5]),
        ]
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------------------


def item_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of item counts, e.g. 100,1000") from None
    if not counts or any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError("item counts must be positive")
    return counts


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("a positive integer")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Measure opsync's Connect requests, latency and memory against a local control plane "
        "and a local Connect server, and print one table.",
    )
    parser.add_argument(
        "--items",
        type=item_counts,
        default=[100, 1000, 10000],
        help="item counts N (default 100,1000,10000; the last takes about ten minutes)",
    )
    parser.add_argument("--vaults", type=positive_int, default=10, help="vaults V (default 10)")
    parser.add_argument(
        "--interval", type=positive_int, default=10, help="POLLING_INTERVAL in s (default 10)"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="cold start limit in s (default 900)")
    parser.add_argument(
        "--operator-log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the operator's --log-level (default info, as users run it; its INFO lines are counted)",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter that runs the operator (default this one; `make bench` gives an install "
        "with the runtime dependencies only, as in the image, so that development tools imported "
        "on the way, such as httpx's command line with rich, do not count in its memory)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (data files and logs)")
    args = parser.parse_args(argv)
    if any(n < args.vaults for n in args.items):
        parser.error("every item count must be at least --vaults")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = sys.stdout
    signal.signal(signal.SIGTERM, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="opsync-bench-"))
    load_start = os.getloadavg()
    started = time.monotonic()
    say(
        out,
        f"opsync bench: N={','.join(map(str, args.items))} OnePasswordItems in {args.vaults} vaults, "
        f"POLLING_INTERVAL={args.interval} s; operator run by {args.python}; {os.cpu_count()} CPUs, "
        f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}",
    )
    results: list[Result] = []
    code = 0
    try:
        for n in args.items:
            result = run_scenario(n, args, work / f"n{n}", out)
            results.append(result)
    except KeyboardInterrupt:
        say(out, "interrupted; everything started was stopped")
        code = 130
    except (BenchError, HarnessError, client.ApiException, httpx.HTTPError, OSError) as exc:
        say(out, f"bench failed: {exc}")
        code = 1
    finally:
        if args.keep:
            say(out, f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()
    if results:
        say(out, "")
        say(out, report(results, args.interval))
    say(
        out,
        f"\nwall time {time.monotonic() - started:.0f} s; load average at the end "
        f"{load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} ({os.cpu_count()} CPUs"
        f"{'; timings may be inflated by other work' if max(load_start[0], load_end[0]) > 1.0 else ''})",
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
