"""``opsync demo``: the whole product on one machine, with nothing configured (what ``make run`` runs).

Why this module exists: a newcomer (or a reviewer) should see opsync sync real
1Password-shaped items into real Secrets without a cluster or a 1Password
account. The demo starts the local control plane (:mod:`opsync.tooling`), the
local Connect server with the demo data (``examples/connect-data.yaml``), the
CRD and ``opsync run``, applies the manifests in ``examples/items/``, waits
until everything is synced, and prints the Secrets (key names and value sizes,
never values) and how to try an update. Ctrl-C or SIGTERM stops everything.
With ``--teams`` it also runs two more Connect servers, one per team namespace
(``team-a``, ``team-b``, data in ``examples/teams/``) with tokens of their own,
and syncs each team's item through its own ``OnePasswordConnection``
(docs/connections.md): the same vault and item names, each namespace its own values.

The Kubernetes calls it makes go through the ``kubectl`` the project builds, so
the rule that only :mod:`opsync.kube` imports the ``kubernetes`` client holds.
The operator and the Connect server are started and stopped by
:mod:`opsync.tooling.harness`, as the benchmark and the tests start them: in
sessions of their own, with a watchdog that kills them should the demo itself
die without stopping them (the control plane has its own watchdog).
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from opsync.core import connection, crd
from opsync.core.desired import ITEM_NAME, ITEM_PATH, ITEM_VERSION, MANAGED_LABEL
from opsync.core.mapping import sanitize_secret_name
from opsync.tooling import binaries
from opsync.tooling.controlplane import ControlPlane, ControlPlaneError
from opsync.tooling.harness import (
    Children,
    ConnectServerProcess,
    HarnessError,
    OperatorProcess,
    write_private,
)

NAMESPACE = "demo"
POLLING_INTERVAL = 10
# The item the update instructions change, and the field (not a secret: a host name).
UPDATE_VAULT_ID = "k8sdemovault0000000000001a"
UPDATE_ITEM_ID = "dbcredentialsdemo00000001a"
UPDATE_ITEM_NAME = "db-credentials"
UPDATE_FIELD = "host"
UPDATE_VALUE = "db-replica.demo.example"


class DemoError(RuntimeError):
    """Something the demo needs did not start or did not work; the message says what."""


# -- pure helpers (unit-tested) ------------------------------------------------------------------


@dataclass(frozen=True)
class SecretRow:
    """One synced Secret as the demo shows it: names and sizes, never values."""

    name: str
    type: str
    owner: str
    item_version: str
    key_sizes: tuple[tuple[str, int], ...]


def secret_rows(secret_list: Mapping[str, Any]) -> list[SecretRow]:
    """The opsync-managed Secrets of a ``kubectl get secrets -o json`` answer, sorted by name."""
    rows = []
    for secret in secret_list.get("items") or []:
        meta = secret.get("metadata") or {}
        if (meta.get("labels") or {}).get(MANAGED_LABEL) != "true":
            continue
        owners = meta.get("ownerReferences") or []
        owner = f"{owners[0].get('kind')}/{owners[0].get('name')}" if owners else "-"
        sizes = tuple(
            sorted((key, len(base64.b64decode(value))) for key, value in (secret.get("data") or {}).items())
        )
        rows.append(
            SecretRow(
                name=str(meta.get("name", "")),
                type=str(secret.get("type") or "Opaque"),
                owner=owner,
                item_version=str((meta.get("annotations") or {}).get(ITEM_VERSION, "-")),
                key_sizes=sizes,
            )
        )
    return sorted(rows, key=lambda row: row.name)


def format_keys(key_sizes: Iterable[tuple[str, int]]) -> list[str]:
    """``key (N B)`` for each key: Secret keys never contain spaces or parentheses."""
    return [f"{key} ({size} B)" for key, size in key_sizes]


def wrap_tokens(tokens: Sequence[str], *, width: int, indent: str) -> list[str]:
    """Greedy wrap that never splits a token (``host (15 B)`` stays on one line)."""
    lines: list[str] = []
    current = ""
    for token in tokens:
        candidate = f"{current}, {token}" if current else token
        if current and len(indent) + len(candidate) > width:
            lines.append(indent + current + ",")
            current = token
        else:
            current = candidate
    if current:
        lines.append(indent + current)
    return lines


def format_table(rows: Sequence[SecretRow], *, width: int = 100) -> str:
    """A plain-text table of Secrets, each followed by its keys with value sizes (never values)."""
    headers = ("SECRET", "TYPE", "ITEM VERSION", "OWNER")
    cells = [(row.name, row.type, row.item_version, row.owner) for row in rows]
    widths = [max([len(headers[i])] + [len(cell[i]) for cell in cells]) for i in range(len(headers))]

    def line(columns: Sequence[str]) -> str:
        return "  ".join(text.ljust(size) for text, size in zip(columns, widths, strict=True)).rstrip()

    out = [line(headers)]
    for row, columns in zip(rows, cells, strict=True):
        out.append(line(columns))
        out.extend(wrap_tokens(format_keys(row.key_sizes) or ["(no keys)"], width=width, indent="    "))
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Pending:
    """Something that is not synced yet, and why (status reason and message, or the latest Event)."""

    kind: str
    name: str
    reason: str
    message: str


def ready_condition(item: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for condition in (item.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            result: Mapping[str, Any] = condition
            return result
    return None


def annotated_secret_name(deployment: Mapping[str, Any]) -> str | None:
    """The Secret an annotated Deployment asks for (metadata first, then the pod template)."""
    template = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    for found in (
        (deployment.get("metadata") or {}).get("annotations") or {},
        template.get("annotations") or {},
    ):
        if ITEM_PATH in found:  # as the operator: the first place with an item-path decides
            return sanitize_secret_name(str(found[ITEM_NAME])) if found.get(ITEM_NAME) else None
    return None


def pending(
    items: Mapping[str, Any],
    deployments: Mapping[str, Any],
    secret_names: Iterable[str],
    warnings: Mapping[str, tuple[str, str]] | None = None,
) -> list[Pending]:
    """What is not synced yet: items not Ready, annotated Deployments whose Secret is missing.

    ``warnings`` maps an object name to the reason and message of its latest Warning Event.
    """
    existing = set(secret_names)
    warnings = warnings or {}
    found = []
    for item in items.get("items") or []:
        name = str(item["metadata"]["name"])
        condition = ready_condition(item)
        if condition is None:
            found.append(Pending(crd.KIND, name, "Pending", "not reconciled yet"))
        elif condition.get("status") != "True":
            found.append(
                Pending(crd.KIND, name, str(condition.get("reason", "")), str(condition.get("message", "")))
            )
    for deployment in deployments.get("items") or []:
        secret = annotated_secret_name(deployment)
        name = str(deployment["metadata"]["name"])
        if secret is not None and secret not in existing:
            reason, message = warnings.get(name, ("Pending", f"Secret {secret} not created yet"))
            found.append(Pending("Deployment", name, reason, message))
    return found


def format_pending(items: Sequence[Pending]) -> str:
    return "".join(f"  {p.kind}/{p.name}: {p.reason}: {p.message}\n" for p in items)


def latest_warnings(events: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """The latest Warning Event (reason, message) per involved object name."""
    latest: dict[str, tuple[str, str, str]] = {}
    for event in events.get("items") or []:
        if event.get("type") != "Warning":
            continue
        name = str((event.get("involvedObject") or {}).get("name", ""))
        when = str(event.get("lastTimestamp") or event.get("eventTime") or "")
        if name not in latest or when >= latest[name][0]:
            latest[name] = (when, str(event.get("reason", "")), str(event.get("message", "")))
    return {name: (reason, message) for name, (_, reason, message) in latest.items()}


def shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def instructions(
    *,
    kubeconfig: Path,
    connect_url: str,
    token_file: Path,
    kubectl: Path | None,
    run_dir: Path,
    stays_up: bool,
) -> str:
    """The copy-paste block: environment, what to look at, and how to see an update sync."""
    patch = json.dumps([{"op": "replace", "path": f"/fields/{UPDATE_FIELD}/value", "value": UPDATE_VALUE}])
    item_url = f'"$OP_CONNECT_HOST/v1/vaults/{UPDATE_VAULT_ID}/items/{UPDATE_ITEM_ID}"'
    lines = [
        "Try it (in another terminal):" if stays_up else "While it runs (make run), in another terminal:",
        f"  export KUBECONFIG={shell_quote(str(kubeconfig))}",
        f"  export OP_CONNECT_HOST={connect_url}",
        f'  export OP_CONNECT_TOKEN="$(cat {shell_quote(str(token_file))})"',
    ]
    if kubectl is not None:
        lines.append(f'  export PATH={shell_quote(str(kubectl.parent))}:"$PATH"   # the kubectl opsync built')
    lines += [
        f"  kubectl get opi -n {NAMESPACE}",
        f"  kubectl describe opi {UPDATE_ITEM_NAME} -n {NAMESPACE}",
        "",
        f"Change a field of the item in the local Connect server; the Secret follows within "
        f"~{POLLING_INTERVAL} s (POLLING_INTERVAL={POLLING_INTERVAL}):",
        f"  curl -sS -o /dev/null -w '%{{http_code}}\\n' -X PATCH {item_url} \\",
        '    -H "Authorization: Bearer $OP_CONNECT_TOKEN" -H "Content-Type: application/json" \\',
        f"    -d {shell_quote(patch)}",
        f"  kubectl get opi {UPDATE_ITEM_NAME} -n {NAMESPACE} -w        # ITEM VERSION goes up by one",
        f"  kubectl get secret {UPDATE_ITEM_NAME} -n {NAMESPACE} -o jsonpath='{{.data.{UPDATE_FIELD}}}' | base64 -d; echo",
        "",
        f"Logs: {run_dir / 'operator.log'}, {run_dir / 'connect-server.log'}",
    ]
    if stays_up:
        lines.append("Ctrl-C stops the operator, the Connect server and the control plane.")
    return "\n".join(lines) + "\n"


# -- processes -----------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Demo:
    """The running demo: the control plane, the Connect server, the operator, and the kubectl calls."""

    run_dir: Path
    examples: Path
    out: IO[str]
    ready_timeout: float = 120.0
    plane: ControlPlane | None = field(default=None, init=False)
    kubectl_path: Path | None = field(default=None, init=False)
    token_file: Path | None = field(default=None, init=False)
    children: Children = field(default_factory=Children, init=False)
    connect: ConnectServerProcess | None = field(default=None, init=False)
    operator: OperatorProcess | None = field(default=None, init=False)
    teams: tuple[str, ...] = ()
    """Team namespaces with a Connect server and a OnePasswordConnection each (``--teams``)."""
    team_servers: dict[str, ConnectServerProcess] = field(default_factory=dict, init=False)

    @property
    def connect_url(self) -> str:
        return self.connect.url if self.connect is not None else ""

    def say(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    # -- start-up --------------------------------------------------------------------------------

    def prepare(self) -> None:
        data = self.examples / "connect-data.yaml"
        if not data.is_file() or not (self.examples / "items").is_dir():
            raise DemoError(f"no demo data in {self.examples} (expected connect-data.yaml and items/)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_private(self.run_dir / "connect-data.yaml", data.read_text(encoding="utf-8"))
        self.kubectl_path = binaries.ensure(["kubectl"])["kubectl"]

    def start_connect_server(self) -> ConnectServerProcess:
        """Start the Connect server on the data copy, logging every request; :meth:`wait_connect_server`."""
        self.connect = ConnectServerProcess.spawn(
            self.children,
            data_path=self.run_dir / "connect-data.yaml",
            log=self.run_dir / "connect-server.log",
            quiet=False,
        )
        return self.connect

    def wait_connect_server(self, timeout: float = 30.0) -> str:
        assert self.connect is not None
        return self.connect.wait_ready(timeout=timeout)

    def issue_token(self) -> Path:
        """A token for every vault, in a file only this user can read."""
        assert self.connect is not None
        self.token_file = self.run_dir / "connect-token"
        write_private(self.token_file, self.connect.issue_token() + "\n")
        return self.token_file

    def start_control_plane(self, timeout: float) -> ControlPlane:
        self.plane = ControlPlane(start_timeout=timeout)
        self.plane.start()
        return self.plane

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 60.0) -> str:
        assert self.plane is not None and self.kubectl_path is not None
        result = subprocess.run(
            [
                str(self.kubectl_path),
                f"--kubeconfig={self.plane.kubeconfig}",
                f"--cache-dir={self.run_dir / 'kube-cache'}",
                *args,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args[:3])} failed: {result.stderr.strip()}")
        return result.stdout

    def kubectl_json(self, *args: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.kubectl(*args, "-o", "json"))
        return result

    def install_crd(self, timeout: float = 60.0) -> str:
        self.kubectl("apply", "-f", "-", stdin=crd.definition_yaml())
        names = [crd.CRD_NAME]
        if self.teams:
            self.kubectl("apply", "-f", "-", stdin=connection.definitions_yaml())
            names += [
                f"{plural}.{connection.GROUP}" for plural in (connection.PLURAL, connection.CLUSTER_PLURAL)
            ]
        # Polled rather than `kubectl wait`, which fails outright while the API server has not
        # written the CRD's first status yet (it compiles the CEL rules first).
        deadline = time.monotonic() + timeout
        for name in names:
            while True:
                status = self.kubectl_json("get", f"crd/{name}").get("status") or {}
                if any(
                    c.get("type") == "Established" and c.get("status") == "True"
                    for c in status.get("conditions") or []
                ):
                    break
                if time.monotonic() > deadline:
                    raise DemoError(f"the CRD {name} was not Established within {timeout:.0f} s")
                time.sleep(0.2)
        return ", ".join(names) + " Established"

    def start_team_servers(self, timeout: float = 30.0) -> str:
        """One Connect server per team, on that team's data, and a token for it."""
        for team in self.teams:
            source = self.examples / "teams" / f"connect-data-{team}.yaml"
            folder = self.run_dir / team
            folder.mkdir(parents=True, exist_ok=True)
            write_private(folder / "connect-data.yaml", source.read_text(encoding="utf-8"))
            server = ConnectServerProcess.spawn(
                self.children, data_path=folder / "connect-data.yaml", log=folder / "connect-server.log"
            )
            self.team_servers[team] = server
        for server in self.team_servers.values():
            server.wait_ready(timeout=timeout)
            server.issue_token()
        return ", ".join(f"{team} {server.url}" for team, server in self.team_servers.items())

    def apply_teams(self) -> str:
        """Each team's namespace, its token Secret, its OnePasswordConnection and its item."""
        import yaml  # the demo's own dependency (PyYAML), only for --teams

        template = list(
            yaml.safe_load_all((self.examples / "teams" / "items.yaml").read_text(encoding="utf-8"))
        )
        for team, server in self.team_servers.items():
            documents: list[dict[str, Any]] = [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": team}},
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "connect-token", "namespace": team},
                    "stringData": {"token": server.token},
                },
            ]
            for document in template:
                document = json.loads(json.dumps(document))
                document["metadata"]["namespace"] = team
                if document["kind"] == connection.KIND:
                    document["spec"]["host"] = server.url
                documents.append(document)
            self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(documents))
        return (
            f"namespaces {', '.join(self.team_servers)}: a token Secret, a {connection.KIND} and an item each"
        )

    def team_pending(self) -> list[str]:
        waiting = []
        for team in self.team_servers:
            items = self.kubectl_json("get", crd.PLURAL, "-n", team).get("items") or []
            if not items:
                waiting.append(f"{team}/(no item yet)")
            status = (self.kubectl_json("get", connection.PLURAL, "-n", team).get("items") or [{}])[0].get(
                "status"
            )
            if ready_condition({"status": status or {}}) is None:
                waiting.append(f"{team}: its {connection.KIND} (first poll)")
            for item in items:
                condition = ready_condition(item)
                if condition is None or condition.get("status") != "True":
                    waiting.append(f"{team}/{item['metadata']['name']}")
        return waiting

    def teams_table(self) -> str:
        lines = []
        for team, server in self.team_servers.items():
            status = self.kubectl_json("get", connection.PLURAL, "team", "-n", team).get("status") or {}
            ready: Mapping[str, Any] = next(
                (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
            )
            lines.append(
                f"  {team}: {connection.KIND} team -> {server.url}: Ready={ready.get('status', '?')} "
                f"{ready.get('reason', '')}, vaults {[v.get('name') for v in status.get('vaults') or []]}"
            )
            lines += [
                "    " + line
                for line in format_table(
                    secret_rows(self.kubectl_json("get", "secrets", "-n", team))
                ).splitlines()
            ]
        return "\n".join(lines)

    def start_operator(self) -> OperatorProcess:
        assert self.plane is not None and self.token_file is not None
        self.operator = OperatorProcess.start(
            self.children,
            log=self.run_dir / "operator.log",
            settings={
                "KUBECONFIG": str(self.plane.kubeconfig),
                "OP_CONNECT_HOST": self.connect_url,
                "OP_CONNECT_TOKEN_FILE": str(self.token_file),
                "POLLING_INTERVAL": str(POLLING_INTERVAL),
            },
            log_level="info",
        )
        return self.operator

    def apply_examples(self, timeout: float = 30.0) -> list[str]:
        # Right after the CRD is Established, discovery may not list it yet: retry briefly.
        deadline = time.monotonic() + timeout
        while True:
            try:
                output = self.kubectl("apply", "-n", NAMESPACE, "-f", str(self.examples / "items"))
            except DemoError as exc:
                if "ensure CRDs are installed first" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                continue
            return [line for line in output.splitlines() if line.strip()]

    def pending(self) -> list[Pending]:
        items = self.kubectl_json("get", crd.PLURAL, "-n", NAMESPACE)
        deployments = self.kubectl_json("get", "deployments", "-n", NAMESPACE)
        names = self.kubectl("get", "secrets", "-n", NAMESPACE, "-o", "name").split()
        secret_names = [name.split("/", 1)[-1] for name in names]
        waiting = pending(items, deployments, secret_names)
        if any(p.kind == "Deployment" for p in waiting):
            warnings = latest_warnings(self.kubectl_json("get", "events", "-n", NAMESPACE))
            waiting = pending(items, deployments, secret_names, warnings)
        return waiting

    def wait_ready(self) -> list[Pending]:
        """Poll until everything is synced or the time is up; returns what is still pending."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            self.check_children()
            waiting = self.pending()
            teams = self.team_pending() if self.team_servers else []
            waiting += [
                Pending(crd.KIND, name, "", "not Ready yet (it reads through its team's connection)")
                for name in teams
            ]
            if not waiting or time.monotonic() > deadline:
                return waiting
            time.sleep(1.0)

    def check_children(self) -> None:
        self.children.check()

    def secrets_table(self) -> str:
        return format_table(secret_rows(self.kubectl_json("get", "secrets", "-n", NAMESPACE)))

    # -- shut-down -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Operator first, then the Connect server, then the control plane; nothing left running."""
        self.children.close()
        if self.plane is not None:
            self.plane.stop()
            self.plane = None


# -- the command ---------------------------------------------------------------------------------


def default_examples() -> Path:
    """``examples/`` of the working directory if it has the demo data, else the source checkout's."""
    here = Path("examples")
    if (here / "connect-data.yaml").is_file():
        return here.resolve()
    return Path(__file__).resolve().parents[2] / "examples"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="local control plane + local Connect server + the operator, with example items (make run)",
        description=(
            "Start a local control plane, a local Connect server with demo data and the operator; apply "
            "examples/items/, wait until every Secret is synced, print them (key names and sizes, never "
            "values) and how to try an update; then run until Ctrl-C."
        ),
    )
    parser.add_argument(
        "--exit-when-ready",
        action="store_true",
        help="stop everything once the Secrets are shown; exit 0 only if everything became Ready",
    )
    parser.add_argument(
        "--run-dir", type=Path, default=Path(".run"), help="for the data copy, token and logs (default: .run)"
    )
    parser.add_argument(
        "--examples",
        type=Path,
        default=None,
        help="folder with connect-data.yaml and items/ (default: examples)",
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=120.0, help="seconds to wait for every item to be synced"
    )
    parser.add_argument(
        "--start-timeout", type=float, default=120.0, help="control-plane start-up timeout in seconds"
    )
    parser.add_argument(
        "--teams",
        action="store_true",
        help="also run a Connect server per team namespace (team-a, team-b), each read through the "
        "namespace's own OnePasswordConnection and token (docs/connections.md)",
    )
    parser.add_argument(
        "--node",
        action="store_true",
        help="with pods (root): build the image, start a node, run the operator from the Helm chart "
        "and roll out a Deployment that reads a Secret (opsync.tooling.nodedemo)",
    )
    parser.set_defaults(handler=_demo)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


DEMO_ERRORS: tuple[type[BaseException], ...] = (
    DemoError,
    HarnessError,
    ControlPlaneError,
    binaries.BinariesError,
    subprocess.TimeoutExpired,
)
"""What stops a demo with one message (exit code 2) rather than a traceback."""


def stay_up(demo: Demo) -> None:
    """Until Ctrl-C (KeyboardInterrupt); a child that exits raises."""
    while True:
        demo.check_children()
        time.sleep(1.0)


def stop_cleanly(stop: Callable[[], None], previous: Mapping[signal.Signals, Any]) -> None:
    """``stop()`` with SIGINT and SIGTERM ignored (a second Ctrl-C must not cut the clean-up
    short), then the handlers of ``previous`` (signal → handler) back."""
    for sig in previous:
        signal.signal(sig, signal.SIG_IGN)
    try:
        stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def run_until_stopped(
    demo: Demo,
    steps: Callable[[], int],
    *,
    stays_up: bool,
    errors: tuple[type[BaseException], ...],
    stopped: str,
    started: float,
) -> int:
    """The frame of every demo: ``steps()`` (its exit status), then, if ``stays_up``, until
    Ctrl-C or SIGTERM; one message (exit 2) for ``errors``; always a clean stop, and one line
    naming what ``stopped``."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        status = steps()
        if stays_up:
            stay_up(demo)
    except KeyboardInterrupt:
        demo.say("\nstopping ...\n")
        if not stays_up:
            status = 130
    except errors as exc:
        sys.stderr.write(f"error: {exc}\n")
        status = 2
    finally:
        stop_cleanly(demo.stop, previous)
    demo.say(f"stopped: {stopped}  [{time.monotonic() - started:.1f} s]\n")
    return status


def _timed(demo: Demo, label: str, action: Callable[[], str], started: float) -> None:
    demo.say(f"  {label:<16} ")
    detail = action()
    demo.say(f"{detail}  [{time.monotonic() - started:.1f} s]\n")


def _demo(args: argparse.Namespace) -> int:
    if args.node:
        from opsync.tooling import nodedemo

        return nodedemo.run(args)
    started = time.monotonic()
    run_dir = args.run_dir.resolve()
    demo = Demo(
        run_dir=run_dir,
        examples=(args.examples or default_examples()).resolve(),
        out=sys.stdout,
        ready_timeout=args.ready_timeout,
        teams=("team-a", "team-b") if args.teams else (),
    )

    def steps() -> int:
        status = 0
        demo.say("opsync demo: local control plane + local 1Password Connect server + opsync\n")
        demo.prepare()
        demo.start_connect_server()
        _timed(demo, "control plane", lambda: demo.start_control_plane(args.start_timeout).url, started)
        _timed(
            demo,
            "Connect server",
            lambda: f"{demo.wait_connect_server()} (demo data: {run_dir / 'connect-data.yaml'})",
            started,
        )
        _timed(demo, "token", lambda: f"all vaults, in {demo.issue_token()}", started)
        _timed(demo, "CRD", demo.install_crd, started)
        if demo.teams:
            _timed(demo, "team Connect servers", demo.start_team_servers, started)
        _timed(
            demo,
            "operator",
            lambda: (
                f"opsync run, POLLING_INTERVAL={POLLING_INTERVAL} "
                f"(log: {(operator := demo.start_operator()).log}; metrics: {operator.metrics_url})"
            ),
            started,
        )
        _timed(
            demo,
            "examples",
            lambda: f"applied {len(demo.apply_examples())} objects from {demo.examples / 'items'}",
            started,
        )
        if demo.teams:
            _timed(demo, "teams", demo.apply_teams, started)
        demo.say(f"  waiting until every item is synced (at most {args.ready_timeout:.0f} s) ...\n")
        waiting = demo.wait_ready()
        elapsed = time.monotonic() - started
        if waiting:
            status = 1
            demo.say(f"\nNOT READY after {elapsed:.1f} s:\n{format_pending(waiting)}")
        else:
            demo.say(f"  all synced  [{elapsed:.1f} s]\n")
        demo.say(f"\nSecrets in namespace {NAMESPACE}:\n{demo.secrets_table()}\n")
        if demo.teams:
            demo.say(f"\nTeams, each through its own Connect server and token:\n{demo.teams_table()}\n\n")
        assert demo.plane is not None and demo.token_file is not None
        demo.say(
            instructions(
                kubeconfig=demo.plane.kubeconfig,
                connect_url=demo.connect_url,
                token_file=demo.token_file,
                kubectl=demo.kubectl_path,
                run_dir=run_dir,
                stays_up=not args.exit_when_ready,
            )
        )
        return status

    return run_until_stopped(
        demo,
        steps,
        stays_up=not args.exit_when_ready,
        errors=DEMO_ERRORS,
        stopped="operator, Connect server and control plane",
        started=started,
    )
