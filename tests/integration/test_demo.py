"""``opsync demo`` (what ``make run`` runs) syncs every example into a Secret and never shows a value.

The demo starts its own control plane, Connect server and operator, so this
test needs no fixture: it runs the command exactly as a user would and reads
its output, its logs and the data file it left in the run folder.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

EXAMPLES = REPO / "examples"
TIMEOUT = 240

# Every Secret the examples produce, with the keys the official mapping rules give.
EXPECTED: dict[str, set[str]] = {
    # URLs, fields of both sections, the file; "sslmode" is empty and skipped.
    "db-credentials": {
        "website",
        "admin-console",
        "username",
        "password",
        "host",
        "port",
        "database",
        "ca.crt",
    },
    # Labels sanitised; the empty "optional comment" skipped.
    "slack-webhook": {"Webhook-URL-prod", "channel-name"},
    "long-title": {"password"},
    "registry-login": {"website", "username", "password", ".dockerconfigjson"},
    "gateway-tls": {"notesPlain", "tls.crt", "tls.key"},
    "platform-config": {"environment"},
    "ci-otp": {"username", "one-time-password"},
    "app-config": {"environment"},
    # Shaped (docs/shaping.md): selected and renamed fields of two items, and a template.
    "app-env": {"DB_USER", "DB_PASSWORD", "DB_HOST", "APP_ENV", "DATABASE_URL"},
    "registry-pull": {".dockerconfigjson"},
}

_ROW = re.compile(r"^(?P<name>\S+)\s+(?P<type>\S+)\s+(?P<version>\d+|-)\s+(?P<owner>\S+)$")
_KEY = re.compile(r"([-._a-zA-Z0-9]+) \((\d+) B\)")


def _example_secret_names() -> set[str]:
    names = set()
    for path in sorted((EXAMPLES / "items").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "OnePasswordItem":
                names.add(doc["metadata"]["name"])
            elif doc["kind"] == "OnePasswordItemList":
                names.update(item["metadata"]["name"] for item in doc["items"])
            elif doc["kind"] == "Deployment":
                names.add(doc["metadata"]["annotations"]["operator.1password.io/item-name"])
    return names


def _secret_values(data_file: Path) -> list[str]:
    """Concealed and OTP field values and file contents: what must never be shown."""
    values: list[str] = []
    data: dict[str, Any] = yaml.safe_load(data_file.read_text())
    for vault in data["vaults"]:
        for item in vault.get("items", []):
            values += [
                f["value"]
                for f in item.get("fields", [])
                if f.get("type") in ("CONCEALED", "OTP") and f.get("value")
            ]
            for item_file in item.get("files", []):
                content = item_file.get("content", "")
                values += [line for line in content.splitlines() if line and not line.startswith("-----")]
    return [value for value in values if len(value) >= 8]


def _parse_table(output: str) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    lines = output.split("Secrets in namespace demo:\n", 1)[1].splitlines()
    assert lines[0].split() == ["SECRET", "TYPE", "ITEM", "VERSION", "OWNER"]
    current: dict[str, Any] | None = None
    for line in lines[1:]:
        if not line.strip():
            break
        if line.startswith("    ") and current is not None:
            current["keys"].update({key: int(size) for key, size in _KEY.findall(line)})
            continue
        match = _ROW.match(line)
        assert match, f"unexpected table line: {line!r}"
        current = {**match.groupdict(), "keys": {}}
        rows[match["name"]] = current
    return rows


def test_demo_syncs_every_example_and_shows_no_value(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "opsync", "demo", "--exit-when-ready", "--run-dir", str(run_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    assert set(EXPECTED) == _example_secret_names(), "EXPECTED is out of date with examples/items/"
    rows = _parse_table(result.stdout)
    assert set(rows) == set(EXPECTED), output
    for name, keys in EXPECTED.items():
        assert set(rows[name]["keys"]) == keys, f"{name}: {rows[name]['keys']}"
        assert rows[name]["version"] == "1"
    assert rows["registry-login"]["type"] == "kubernetes.io/basic-auth"
    assert rows["app-config"]["owner"] == "Deployment/demo-app"
    assert rows["long-title"]["owner"] == "OnePasswordItem/long-title"
    # Sizes, not values: "password" (used twice in the item: one key) and a file.
    assert rows["db-credentials"]["keys"]["password"] == len("not-a-real-password-2")
    data = yaml.safe_load((EXAMPLES / "connect-data.yaml").read_text())
    (tls,) = [i for v in data["vaults"] for i in v["items"] if i["title"] == "gateway-tls"]
    assert rows["gateway-tls"]["keys"]["tls.key"] == len(tls["files"][1]["content"].encode())
    assert rows["registry-login"]["keys"]["password"] == 24  # generated by the recipe

    assert "export KUBECONFIG=" in result.stdout
    assert "export OP_CONNECT_HOST=http://127.0.0.1:" in result.stdout
    assert "kubectl get opi -n demo" in result.stdout
    assert "curl " in result.stdout and "-X PATCH" in result.stdout

    # Canary: no secret value of the demo data (including the generated password, written back
    # to the run folder's copy) in the output or in the operator's and Connect server's logs.
    token = (run_dir / "connect-token").read_text().strip()
    values = _secret_values(EXAMPLES / "connect-data.yaml") + _secret_values(run_dir / "connect-data.yaml")
    assert len(values) >= 8
    for text, where in (
        (output, "demo output"),
        ((run_dir / "operator.log").read_text(), "operator log"),
        ((run_dir / "connect-server.log").read_text(), "Connect server log"),
    ):
        leaked = [value for value in [*values, token] if value in text]
        assert not leaked, f"{len(leaked)} secret value(s) in the {where}"


def test_demo_teams_reads_each_namespace_through_its_own_connect_server(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "opsync", "demo", "--teams", "--exit-when-ready", "--run-dir", str(run_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    section = result.stdout[result.stdout.index("Teams, each through its own Connect server") :]
    urls = []
    for team in ("team-a", "team-b"):
        match = re.search(
            rf"{team}: OnePasswordConnection team -> (http://127\.0\.0\.1:\d+): Ready=True Connected, "
            r"vaults \['Kubernetes'\]",
            section,
        )
        assert match, section
        urls.append(match[1])
    assert urls[0] != urls[1]  # two servers
    assert section.count("OnePasswordItem/db") == 2
    # Each team's server has its own data file and token; neither token nor value is shown.
    for team in ("team-a", "team-b"):
        data = yaml.safe_load((run_dir / team / "connect-data.yaml").read_text())
        (item,) = data["vaults"][0]["items"]
        value = next(f["value"] for f in item["fields"] if f["label"] == "password")
        assert value == f"{team}-demo-password" and value not in output
    assert "eyJ" not in output  # no token (a JWT) printed
