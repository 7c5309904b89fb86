"""``python -m bench.chaos`` (``make chaos``): what opsync does under kills, heavy tenants, a rival writer
and a leader's death, measured on the project's own local parts and printed as one table.

Why this exists: opsync promises that no rollout is lost or doubled whatever kills it, that a heavy
template never stalls other items or the health probes, that it does not fight another writer of a
Secret it manages, and that a standby takes over from a dead leader within a bounded time. The
integration tests prove each once, against fixed bounds; this command measures them over many
random trials, as a user evaluating opsync would, and asserts nothing. Like ``make bench`` it runs
``opsync run`` as a subprocess against a fresh local control plane (no node: a rollout is a change
of a Deployment's pod template, counted by its ``metadata.generation``) and ``opsync
connect-server``. Secret values are never printed.

The four parts, each in a namespace of its own:

* kills: W items with ``auto-restart``, each used by a Deployment; K times, an operator is started,
  items are changed in a burst through the Connect API, and the operator is killed (SIGKILL) at a
  random moment; then one more operator runs until everything has settled. Every change of a
  Secret's data (seen by a watch) owes exactly one rollout of its Deployment: lost = owed and not
  made, double = made and not owed; Secrets that do not end equal to their item are counted too.
* heavy templates: H items whose templates each use their whole time budget, then a light item:
  the light item's time to Ready and the latency of ``/healthz`` and ``/readyz`` meanwhile.
* rival writer: another field manager rewrites a managed Secret every R s for S s: the Secret
  writes opsync makes per minute against the rival's, and the Events it posts.
* failover: two replicas with leader election at the default Lease settings; the leader is
  killed with SIGKILL, then (with a new standby) stopped with SIGTERM: seconds until the standby
  leads, and until a change made then reaches its Secret.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, TypeVar, cast

import httpx
from kubernetes import client, watch

from bench.kube import Kube
from bench.run import (
    CHANGED_FIELD,
    CRD_FILE,
    BenchError,
    BenchItem,
    connect_data,
    format_table,
    make_items,
    patch_field,
    positive_int,
    say,
)
from opsync.core import desired
from opsync.tooling.controlplane import ControlPlane
from opsync.tooling.harness import Children, ConnectServerProcess, HarnessError, OperatorProcess

T = TypeVar("T")

# About 1.5 s of CPU each on these machines, then refused by the template budget (more than
# 100,000 calls): the heaviest template an item may have. tests/integration/test_heavy_templates.py
# uses it too.
HEAVY_TEMPLATE = (
    "{% for i in range(999) %}{% for j in range(999) %}"
    '{% set t = [i, j, i, j] | sort | join(",") %}'
    "{% endfor %}{% endfor %}"
)
HEAVY_REFUSED = "more than 100000 calls"
PROBE_EVERY_S = 0.1
PROBE_TARGET_MS = 100.0
SETTLE_S = 120.0
LEADING = "leading: holding Lease"
STANDING_BY = "standing by"


def wait_for(what: str, check: Callable[[], T | None], *, within: float, every: float = 0.1) -> T:
    """``check()``'s first truthy result, polled every ``every`` s; :class:`BenchError` after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {within:.0f} s")
        time.sleep(every)


def fingerprint(data: Mapping[str, str] | None) -> str:
    """A digest of a Secret's data (as the API returns it, base64), never the data itself."""
    digest = hashlib.sha256()
    for key, value in sorted((data or {}).items()):
        digest.update(f"{key}\0{value}\0".encode())
    return digest.hexdigest()


@dataclass(kw_only=True)
class Parts:
    """The local parts every scenario shares: one control plane, one Connect server, the operator's
    interpreter and a work folder."""

    children: Children
    plane: ControlPlane
    kube: Kube
    connect: ConnectServerProcess
    items: list[BenchItem]
    python: str
    work: Path
    out: IO[str]
    started: float = field(default_factory=time.monotonic)

    def step(self, text: str) -> None:
        load = os.getloadavg()[0]
        say(self.out, f"  [{time.monotonic() - self.started:6.1f} s, load {load:.2f}] {text}")

    def operator(
        self,
        namespace: str,
        log: str,
        *,
        leader_election: bool = False,
        lease: str = "",
        health: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> OperatorProcess:
        settings = {
            "KUBECONFIG": str(self.plane.kubeconfig),
            "OP_CONNECT_HOST": self.connect.url,
            "OP_CONNECT_TOKEN": self.connect.token,
            "WATCH_NAMESPACE": namespace,
            "POLLING_INTERVAL": "1",
            "OPSYNC_LEADER_ELECTION": "true" if leader_election else "false",
            "OPSYNC_LEASE_NAME": lease or f"opsync-chaos-{uuid.uuid4().hex[:10]}",
            **(env or {}),
        }
        return OperatorProcess.start(
            self.children,
            log=self.work / f"{log}.log",
            settings=settings,
            health=health,
            python=self.python,
        )

    def items_in(self, namespace: str, items: Sequence[BenchItem], **extra: Any) -> None:
        self.kube.create_namespace(namespace)
        for item in items:
            self.kube.create_item(namespace, item.name, item.item_path, within=30, **extra)

    def all_ready(self, namespace: str, count: int) -> None:
        wait_for(
            f"{count} items Ready in {namespace}",
            lambda: self.kube.readiness(namespace)[0] == count,
            within=SETTLE_S,
            every=0.3,
        )


# -- kills during a burst ------------------------------------------------------------------------


class SecretChanges:
    """Counts, per Secret, the changes of its data seen by a watch from a listing onwards."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self._kube = kube
        self._namespace = namespace
        listing: Any = kube.core.list_namespaced_secret(namespace)
        self.last: dict[str, str] = {s.metadata.name: fingerprint(s.data) for s in listing.items}
        self.changes = dict.fromkeys(self.last, 0)
        self._version = str(listing.metadata.resource_version)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="chaos secret watch", daemon=True)
        self.error: BaseException | None = None
        self._thread.start()

    def _watch(self) -> None:
        try:
            while not self._stop.is_set():
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    self._kube.core.list_namespaced_secret,
                    self._namespace,
                    resource_version=self._version,
                    timeout_seconds=2,
                )
                for event in stream:
                    secret: Any = event["object"]
                    self._version = str(secret.metadata.resource_version)
                    if event["type"] not in ("ADDED", "MODIFIED"):
                        continue
                    name = str(secret.metadata.name)
                    now = fingerprint(secret.data)
                    if self.last.get(name) not in (None, now):
                        self.changes[name] = self.changes.get(name, 0) + 1
                    self.last[name] = now
        except BaseException as exc:  # reported by stop(): a count with gaps must not pass for one
            self.error = exc

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(timeout=10)
        if self.error is not None:
            raise BenchError(f"the Secret watch failed: {self.error}")
        return dict(self.changes)


def chaos_deployment(name: str, secret: str) -> dict[str, Any]:
    """A Deployment (no node runs it) that reads ``secret`` through envFrom and opts in to restarts."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.invalid/app:1",
                            "envFrom": [{"secretRef": {"name": secret}}],
                        }
                    ]
                },
            },
        },
    }


def generation(kube: Kube, namespace: str, name: str) -> int:
    """A Deployment's ``metadata.generation``: raised by each change of its pod template (a rollout)."""
    live: Any = kube.apps.read_namespaced_deployment(name, namespace)
    return int(live.metadata.generation)


@dataclass(kw_only=True)
class KillResult:
    workloads: int
    kills: int
    changes_made: int
    owed: int
    rolled: int
    lost: int
    double: int
    unequal: int
    settle_s: float


def kills_during_bursts(parts: Parts, *, workloads: int, kills: int, rng: random.Random) -> KillResult:
    namespace = "chaos-kills"
    items = parts.items[:workloads]
    kube = parts.kube
    parts.items_in(namespace, items, annotations={desired.AUTO_RESTART: "true"})
    first = parts.operator(namespace, "kills-first")
    parts.all_ready(namespace, len(items))
    for item in items:
        kube.apps.create_namespaced_deployment(
            namespace, cast(Any, chaos_deployment(f"app-{item.index}", item.name))
        )
    first.stop()
    generations = {item.name: generation(kube, namespace, f"app-{item.index}") for item in items}
    expected = {item.name: f"db-{item.index}.bench.example" for item in items}
    changes = SecretChanges(kube, namespace)
    made = 0
    for kill in range(kills):
        operator = parts.operator(namespace, f"kills-{kill}")
        life = rng.uniform(0.5, 4.0)
        dies = time.monotonic() + life
        while time.monotonic() < dies:
            item = rng.choice(items)
            expected[item.name] = f"db-{item.index}-{uuid.uuid4().hex[:8]}.bench.example"
            patch_field(parts.connect, item, CHANGED_FIELD, expected[item.name])
            made += 1
            time.sleep(max(0.0, min(rng.uniform(0.05, 0.4), dies - time.monotonic())))
        operator.stop(gently=False)
    parts.step(f"kills: {kills} operators killed during bursts, {made} item changes made")

    last = parts.operator(namespace, "kills-last")
    began = time.monotonic()

    def settled() -> bool:
        for item in items:
            secret = kube.secret(namespace, item.name)
            if secret is None or desired.ROLLOUT_PENDING in (cast(Any, secret).metadata.annotations or {}):
                return False
            if (kube.secret_data(namespace, item.name) or {}).get(CHANGED_FIELD) != expected[
                item.name
            ].encode():
                return False
        return True

    try:
        wait_for("every Secret equal to its item, no rollout pending", settled, within=SETTLE_S, every=0.3)
        unequal = 0
    except BenchError:
        unequal = sum(
            (kube.secret_data(namespace, item.name) or {}).get(CHANGED_FIELD) != expected[item.name].encode()
            for item in items
        )
    settle_s = time.monotonic() - began
    time.sleep(3)  # a few more polls: a late double rollout would show
    last.stop()
    owed = changes.stop()
    rolled = {
        item.name: generation(kube, namespace, f"app-{item.index}") - generations[item.name] for item in items
    }
    return KillResult(
        workloads=len(items),
        kills=kills,
        changes_made=made,
        owed=sum(owed.get(item.name, 0) for item in items),
        rolled=sum(rolled.values()),
        lost=sum(max(0, owed.get(name, 0) - count) for name, count in rolled.items()),
        double=sum(max(0, count - owed.get(name, 0)) for name, count in rolled.items()),
        unequal=unequal,
        settle_s=settle_s,
    )


# -- heavy templates -----------------------------------------------------------------------------


def probe_ms(http: httpx.Client, url: str) -> float:
    """One probe's latency in ms, over a kept-alive connection (as the kubelet's are not, but a new
    connection's cost here would be the bench's own, not the operator's)."""
    started = time.monotonic()
    answer = http.get(url)
    if answer.status_code != 200:
        raise BenchError(f"{url} answered {answer.status_code}")
    return (time.monotonic() - started) * 1000


@contextmanager
def probing(base: str) -> Iterator[list[float]]:
    """``/healthz`` and ``/readyz`` in turn every 0.1 s while the block runs; their latencies in ms."""
    latencies: list[float] = []
    stop = threading.Event()

    def loop() -> None:
        paths = ("/healthz", "/readyz")
        turn = 0
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                latencies.append(probe_ms(http, base + paths[turn % 2]))
                turn += 1
                stop.wait(PROBE_EVERY_S)

    thread = threading.Thread(target=loop, name="chaos probes", daemon=True)
    thread.start()
    try:
        yield latencies
    finally:
        stop.set()
        thread.join(timeout=35)


@dataclass(kw_only=True)
class HeavyResult:
    heavy: int
    light_s: float
    probes: list[float]

    def quantile(self, q: float) -> float:
        return statistics.quantiles(self.probes, n=100, method="inclusive")[round(q * 100) - 1]


def heavy_templates(parts: Parts, *, heavy: int) -> HeavyResult:
    namespace = "chaos-heavy"
    kube = parts.kube
    item = parts.items[0]
    kube.create_namespace(namespace)
    operator = parts.operator(namespace, "heavy", health=True)
    wait_for("the operator's /readyz", lambda: _answers(operator.health_url + "/readyz"), within=60)

    def refused() -> int:
        return sum(
            HEAVY_REFUSED in str((kube.ready(namespace, f"heavy-{n}") or {}).get("message") or "")
            for n in range(heavy)
        )

    with probing(operator.health_url) as latencies:
        for n in range(heavy):
            spec = {"itemPath": item.item_path, "template": {"stringData": {"x": HEAVY_TEMPLATE}}}
            kube.create_item(namespace, f"heavy-{n}", item.item_path, spec=spec)
        # The first refused: the others are queued or rendering behind it.
        wait_for("a heavy template run to its budget", lambda: refused() >= 1, within=SETTLE_S, every=0.2)
        started = time.monotonic()
        kube.create_item(namespace, "light", item.item_path)
        wait_for(
            "the light item Ready",
            lambda: (kube.ready(namespace, "light") or {}).get("status") == "True",
            within=SETTLE_S,
        )
        light_s = time.monotonic() - started

        wait_for(
            "every heavy template run to its budget", lambda: refused() == heavy, within=SETTLE_S, every=0.5
        )
    operator.stop()
    return HeavyResult(heavy=heavy, light_s=light_s, probes=list(latencies))


def _answers(url: str) -> bool:
    try:
        with httpx.Client(timeout=5) as http:
            probe_ms(http, url)
    except (httpx.HTTPError, BenchError):
        return False
    return True


# -- a rival writer ------------------------------------------------------------------------------


@dataclass(kw_only=True)
class RivalResult:
    seconds: float
    rival_writes: int
    repairs: int
    repaired_events: int
    repaired_count: int
    rival_warnings: int

    def per_minute(self, count: int) -> float:
        return count * 60 / self.seconds


def rival_writer(parts: Parts, *, seconds: float, every: float) -> RivalResult:
    namespace = "chaos-rival"
    kube = parts.kube
    item = parts.items[0]
    parts.items_in(namespace, [item])
    operator = parts.operator(namespace, "rival")
    parts.all_ready(namespace, 1)
    repairs_before = operator.logs().count("restored Secret")
    ends = time.monotonic() + seconds
    writes = 0
    while time.monotonic() < ends:
        kube.core.patch_namespaced_secret(
            item.name,
            namespace,
            {"stringData": {CHANGED_FIELD: f"rival-{writes}.example"}},
            field_manager="rival-writer",
        )
        writes += 1
        time.sleep(every)
    repairs = operator.logs().count("restored Secret") - repairs_before
    operator.stop()
    events = kube.events(namespace, item.name)
    repaired = [e for e in events if e.reason == "DriftRepaired"]
    return RivalResult(
        seconds=seconds,
        rival_writes=writes,
        repairs=repairs,
        repaired_events=len(repaired),
        repaired_count=sum(e.count or 1 for e in repaired),
        rival_warnings=sum(e.reason == "RivalWriter" for e in events),
    )


# -- failover ------------------------------------------------------------------------------------


def logged(process: OperatorProcess, text: str) -> Callable[[], bool]:
    return lambda: text in process.logs()


def holds(kube: Kube, namespace: str, name: str, value: str) -> Callable[[], bool]:
    """Whether the Secret's changed field holds ``value`` now."""
    return lambda: (kube.secret_data(namespace, name) or {}).get(CHANGED_FIELD) == value.encode()


@dataclass(kw_only=True)
class Takeover:
    how: str
    leads_s: float
    change_s: float


def failover(parts: Parts, *, lease_duration: float | None) -> list[Takeover]:
    namespace = "chaos-failover"
    kube = parts.kube
    item = parts.items[1]
    parts.items_in(namespace, [item])
    lease = f"opsync-chaos-{uuid.uuid4().hex[:8]}"
    env = {} if lease_duration is None else {"OPSYNC_LEASE_DURATION": str(lease_duration)}

    def replica(log: str) -> OperatorProcess:
        return parts.operator(namespace, log, leader_election=True, lease=lease, env=env)

    leader = replica("failover-a")
    wait_for("a leader", lambda: LEADING in leader.logs(), within=60)
    parts.all_ready(namespace, 1)
    results: list[Takeover] = []
    for n, how in enumerate(("SIGKILL", "SIGTERM")):
        standby = replica(f"failover-{'bc'[n]}")
        wait_for("a standby", logged(standby, STANDING_BY), within=60)
        stopped = time.monotonic()
        leader.stop(gently=how == "SIGTERM")
        wait_for("the standby leading", logged(standby, LEADING), within=120, every=0.05)
        leads_s = time.monotonic() - stopped
        value = f"failover-{uuid.uuid4().hex[:8]}.example"
        patch_field(parts.connect, item, CHANGED_FIELD, value)
        wait_for(
            "the change in its Secret",
            holds(kube, namespace, item.name, value),
            within=60,
            every=0.05,
        )
        results.append(Takeover(how=how, leads_s=leads_s, change_s=time.monotonic() - stopped))
        leader = standby
    leader.stop()
    return results


# -- report and command line ---------------------------------------------------------------------


def report(
    kills: KillResult | None,
    heavy: HeavyResult | None,
    rival: RivalResult | None,
    takeovers: Sequence[Takeover],
    lease_duration: str,
) -> str:
    lines: list[str] = []
    if kills is not None:
        lines += [
            f"Kills during bursts ({kills.workloads} Deployments with auto-restart, each on its own item; "
            f"POLLING_INTERVAL=1):",
            format_table(
                [
                    "kills",
                    "item changes",
                    "Secret data changes",
                    "rollouts",
                    "lost",
                    "double",
                    "unequal Secrets",
                    "settled s",
                ],
                [
                    [
                        str(kills.kills),
                        str(kills.changes_made),
                        str(kills.owed),
                        str(kills.rolled),
                        str(kills.lost),
                        str(kills.double),
                        str(kills.unequal),
                        f"{kills.settle_s:.1f}",
                    ]
                ],
                "  ",
            ),
            "",
        ]
    if heavy is not None:
        over = sum(ms > PROBE_TARGET_MS for ms in heavy.probes)
        lines += [
            f"Heavy templates ({heavy.heavy} items, each at its whole template budget) beside a light item:",
            format_table(
                [
                    "light item Ready s",
                    "probes",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                    f"over {PROBE_TARGET_MS:.0f} ms",
                ],
                [
                    [
                        f"{heavy.light_s:.2f}",
                        str(len(heavy.probes)),
                        f"{heavy.quantile(0.5):.1f}",
                        f"{heavy.quantile(0.99):.1f}",
                        f"{max(heavy.probes):.1f}",
                        str(over),
                    ]
                ],
                "  ",
            ),
            "",
        ]
    if rival is not None:
        lines += [
            f"A rival writer of a managed Secret ({rival.rival_writes} writes in {rival.seconds:.0f} s):",
            format_table(
                [
                    "rival writes/min",
                    "opsync writes/min",
                    "DriftRepaired Events (count)",
                    "RivalWriter Events",
                ],
                [
                    [
                        f"{rival.per_minute(rival.rival_writes):.0f}",
                        f"{rival.per_minute(rival.repairs):.1f}",
                        f"{rival.repaired_events} ({rival.repaired_count})",
                        str(rival.rival_warnings),
                    ]
                ],
                "  ",
            ),
            "",
        ]
    if takeovers:
        lines += [
            f"Failover, two replicas (lease duration {lease_duration}):",
            format_table(
                ["leader stopped by", "standby leads s", "a change in its Secret s"],
                [[t.how, f"{t.leads_s:.1f}", f"{t.change_s:.1f}"] for t in takeovers],
                "  ",
            ),
        ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description="Kill, overload and rival opsync on local parts; print lost and double rollouts, probe "
        "latency, Secret writes against a rival, and failover times.",
    )
    parser.add_argument("--kills", type=positive_int, default=20, help="operators killed during bursts (20)")
    parser.add_argument("--workloads", type=positive_int, default=10, help="Deployments, one item each (10)")
    parser.add_argument("--heavy", type=positive_int, default=20, help="items with heavy templates (20)")
    parser.add_argument("--rival-seconds", type=float, default=60.0, help="how long the rival writes (60)")
    parser.add_argument("--rival-every", type=float, default=0.3, help="seconds between rival writes (0.3)")
    parser.add_argument(
        "--lease-duration",
        type=float,
        default=None,
        help="OPSYNC_LEASE_DURATION for failover (default: opsync's)",
    )
    parser.add_argument(
        "--only",
        choices=["kills", "heavy", "rival", "failover"],
        action="append",
        help="run only these parts (repeatable; default all)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="the random seed (default: a new one, printed)"
    )
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs the operator")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = sys.stdout
    signal.signal(signal.SIGTERM, _interrupt)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    only = set(args.only or ["kills", "heavy", "rival", "failover"])
    work = Path(tempfile.mkdtemp(prefix="opsync-chaos-"))
    say(
        out,
        f"opsync chaos: seed {seed}; operator run by {args.python}; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}",
    )
    kills: KillResult | None = None
    heavy: HeavyResult | None = None
    rival: RivalResult | None = None
    takeovers: list[Takeover] = []
    code = 0
    try:
        with ExitStack() as stack:
            children = stack.enter_context(Children())
            plane = ControlPlane(start_timeout=120)
            plane.start()
            stack.callback(plane.stop)
            stack.callback(children.stop_all)
            kube = Kube.from_kubeconfig(plane.kubeconfig)
            stack.callback(kube.close)
            items = make_items(max(args.workloads, 2), 1)
            connect = ConnectServerProcess.start(
                children, data_path=work / "connect-data.yaml", data=connect_data(items, 1)
            )
            kube.install_crds([CRD_FILE])
            parts = Parts(
                children=children,
                plane=plane,
                kube=kube,
                connect=connect,
                items=items,
                python=args.python,
                work=work,
                out=out,
            )
            parts.step(f"control plane at {plane.url}, Connect server at {connect.url}")
            if "kills" in only:
                kills = kills_during_bursts(parts, workloads=args.workloads, kills=args.kills, rng=rng)
                parts.step(f"kills: {kills.lost} lost, {kills.double} double rollouts")
            if "heavy" in only:
                heavy = heavy_templates(parts, heavy=args.heavy)
                parts.step(f"heavy: light item Ready after {heavy.light_s:.2f} s")
            if "rival" in only:
                rival = rival_writer(parts, seconds=args.rival_seconds, every=args.rival_every)
                parts.step(f"rival: {rival.repairs} repairs against {rival.rival_writes} writes")
            if "failover" in only:
                takeovers = failover(parts, lease_duration=args.lease_duration)
                parts.step("failover: " + ", ".join(f"{t.how} {t.leads_s:.1f} s" for t in takeovers))
    except KeyboardInterrupt:
        say(out, "interrupted; everything started was stopped")
        code = 130
    except (BenchError, HarnessError, client.ApiException, httpx.HTTPError, OSError) as exc:
        say(out, f"chaos failed: {exc}")
        code = 1
    finally:
        if args.keep:
            say(out, f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    lease = f"{args.lease_duration:g} s" if args.lease_duration else "opsync's default"
    say(out, "")
    say(out, report(kills, heavy, rival, takeovers, lease))
    say(out, f"\nseed {seed}; load average at the end {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    return code


if __name__ == "__main__":
    sys.exit(main())
