"""``opsync render``: the command against the project's Connect server over HTTP, as a subprocess
(no cluster needed)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from opsync.connect.client import ConnectClient
from opsync.tooling.harness import ConnectServerProcess, clean_env
from tests.integration.helpers import VAULT, new_item

CANARY = "render-canary-9f3c1e"


def render(
    connect_server: ConnectServerProcess, tmp_path: Path, documents: list[dict[str, Any]], *args: str
) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "cr.yaml"
    manifest.write_text(yaml.safe_dump_all(documents))
    env = {**os.environ, "OP_CONNECT_HOST": connect_server.url, "OP_CONNECT_TOKEN": connect_server.token}
    return subprocess.run(
        [sys.executable, "-m", "opsync", "render", "-f", str(manifest), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def render_offline(
    tmp_path: Path, documents: list[dict[str, Any]], *args: str
) -> subprocess.CompletedProcess[str]:
    """``opsync render`` with no ``OP_CONNECT_*`` at all: only the file's connections."""
    manifest = tmp_path / "cr.yaml"
    manifest.write_text(yaml.safe_dump_all(documents))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OP_CONNECT_")}
    return subprocess.run(
        [sys.executable, "-m", "opsync", "render", "-f", str(manifest), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def cr(name: str, spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "onepassword.com/v1",
        "kind": "OnePasswordItem",
        "metadata": {"name": name},
        "spec": spec,
        **extra,
    }


async def test_render_prints_keys_and_sizes_but_values_only_when_asked(
    connect_server: ConnectServerProcess, connect: ConnectClient, tmp_path: Path
) -> None:
    item = await new_item(connect, username="app", password=CANARY)
    documents = [
        cr(
            "app",
            {
                "itemPath": f"vaults/{VAULT}/items/{item.title}",
                "fields": [{"field": "password", "key": "DB_PASSWORD"}, {"field": "username"}],
                "secretName": "app-env",
                "secretLabels": {"team": "a"},
            },
        )
    ]
    shown = render(connect_server, tmp_path, documents)
    assert shown.returncode == 0, shown.stderr
    assert CANARY not in shown.stdout + shown.stderr
    (secret,) = [d for d in yaml.safe_load_all(shown.stdout) if d]
    assert secret["metadata"]["name"] == "app-env"
    assert secret["metadata"]["labels"] == {"team": "a", "opsync.io/managed": "true"}
    assert (
        secret["metadata"]["annotations"]["operator.1password.io/item-path"]
        == f"vaults/{item.vault.id}/items/{item.id}"
    )
    assert secret["data"] == {"DB_PASSWORD": f"({len(CANARY)} bytes)", "username": "(3 bytes)"}

    valued = render(connect_server, tmp_path, documents, "--show-values")
    assert valued.returncode == 0, valued.stderr
    (secret,) = [d for d in yaml.safe_load_all(valued.stdout) if d]
    assert base64.b64decode(secret["data"]["DB_PASSWORD"]).decode() == CANARY


async def test_render_exits_1_with_the_status_message(
    connect_server: ConnectServerProcess, connect: ConnectClient, tmp_path: Path
) -> None:
    item = await new_item(connect, password=CANARY)
    good = cr("good", {"itemPath": f"vaults/{VAULT}/items/{item.title}"})
    missing = cr(
        "missing", {"itemPath": f"vaults/{VAULT}/items/{item.title}", "fields": [{"field": "pasword"}]}
    )
    leaking = cr(
        "leaking",
        {
            "itemPath": f"vaults/{VAULT}/items/{item.title}",
            "template": {"stringData": {"x": "{{ item.fields[item.fields.password] }}"}},
        },
    )
    result = render(connect_server, tmp_path, [good, missing, leaking])
    assert result.returncode == 1
    assert "error: OnePasswordItem default/missing: FieldNotFound: " in result.stderr
    assert "'pasword'" in result.stderr
    assert "error: OnePasswordItem default/leaking: TemplateError: template.stringData.x" in result.stderr
    assert CANARY not in result.stdout + result.stderr
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(result.stdout) if d]
    assert names == ["good"]  # the others print nothing


def test_render_without_connect_settings_or_items_exits_2(
    tmp_path: Path, connect_server: ConnectServerProcess
) -> None:
    empty = render(
        connect_server, tmp_path, [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}]
    )
    assert empty.returncode == 2 and "holds no OnePasswordItem" in empty.stderr
    manifest = tmp_path / "cr.yaml"
    env = clean_env()  # no OP_CONNECT_HOST, no token
    result = subprocess.run(
        [sys.executable, "-m", "opsync", "render", "-f", str(manifest)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "OP_CONNECT_HOST" in result.stderr


async def test_render_reads_through_the_connections_of_the_file(
    connect_server: ConnectServerProcess, connect: ConnectClient, tmp_path: Path
) -> None:
    item = await new_item(connect, password="through-a-connection")
    path = f"vaults/{VAULT}/items/{item.title}"
    token_file = tmp_path / "token"
    token_file.write_text(connect_server.token)

    def connection(namespace: str, name: str) -> dict[str, Any]:
        return {
            "apiVersion": "opsync.io/v1alpha1",
            "kind": "OnePasswordConnection",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"host": connect_server.url, "tokenSecretRef": {"name": "connect-token"}},
        }

    documents = [
        connection("team-a", "team"),
        connection("team-b", "team"),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "connect-token", "namespace": "team-a"},
            "stringData": {"token": connect_server.token},
        },
        {
            **cr("a", {"itemPath": path, "connectionRef": {"name": "team"}}),
            "metadata": {"name": "a", "namespace": "team-a"},
        },
        {
            **cr("b", {"itemPath": path, "connectionRef": {"name": "team"}}),
            "metadata": {"name": "b", "namespace": "team-b"},
        },
        {
            **cr("stolen", {"itemPath": path, "connectionRef": {"name": "team", "namespace": "team-a"}}),
            "metadata": {"name": "stolen", "namespace": "team-c"},
        },
        {
            **cr("nameless", {"itemPath": path}),
            "metadata": {"name": "nameless", "namespace": "team-a"},
        },
    ]
    result = render_offline(
        tmp_path,
        documents,
        "--show-values",
        "--default-connection=false",
        "--token",
        f"team-b/team={token_file}",
    )
    assert result.returncode == 1, result.stderr
    rendered = {doc["metadata"]["namespace"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}
    assert set(rendered) == {"team-a", "team-b"}
    for doc in rendered.values():
        assert base64.b64decode(doc["data"]["password"]) == b"through-a-connection"
    assert "team-c/stolen: ConnectionNotAllowed" in result.stderr
    assert "team-a/nameless: NoConnection" in result.stderr
    assert connect_server.token not in result.stdout + result.stderr
