"""The demo's pure helpers: the Secrets table shows key names and sizes only, and pending items say why."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from opsync import cli
from opsync.tooling import demo

VALUE = "s3cr3t-value-that-must-not-show"


def _secret(name: str, data: dict[str, str], **meta: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {"opsync.io/managed": "true"},
        "annotations": {"operator.1password.io/item-version": "3"},
        "ownerReferences": [{"kind": "OnePasswordItem", "name": name}],
    }
    metadata.update(meta)
    return {
        "metadata": metadata,
        "type": "Opaque",
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


def test_secret_rows_keep_sizes_not_values_and_skip_unmanaged_secrets() -> None:
    listing = {
        "items": [
            _secret("b", {"password": VALUE, "user": "u"}),
            _secret("a", {}),
            _secret("other", {"token": VALUE}, labels={}),
        ]
    }
    rows = demo.secret_rows(listing)
    assert [row.name for row in rows] == ["a", "b"]
    assert rows[1].key_sizes == (("password", len(VALUE)), ("user", 1))
    assert rows[1].item_version == "3"
    assert rows[1].owner == "OnePasswordItem/b"
    assert VALUE not in repr(rows)


def test_table_wraps_keys_without_splitting_one() -> None:
    keys = tuple((f"key-number-{i}", i) for i in range(12))
    row = demo.SecretRow("db", "kubernetes.io/basic-auth", "OnePasswordItem/db", "7", keys)
    empty = demo.SecretRow("empty", "Opaque", "Deployment/app", "1", ())
    table = demo.format_table([row, empty], width=60)
    lines = table.splitlines()
    assert lines[0].split() == ["SECRET", "TYPE", "ITEM", "VERSION", "OWNER"]
    assert lines[1].split() == ["db", "kubernetes.io/basic-auth", "7", "OnePasswordItem/db"]
    key_lines = [line for line in lines if line.startswith("    ")]
    assert len(key_lines) > 2
    assert all(len(line) <= 60 for line in key_lines)
    assert "key-number-11 (11 B)" in table
    assert all(f"key-number-{i} ({i} B)" in table for i in range(12))
    assert "    (no keys)" in lines


def test_wrap_tokens_keeps_an_overlong_token_whole() -> None:
    assert demo.wrap_tokens(["x" * 30, "y"], width=10, indent="  ") == ["  " + "x" * 30 + ",", "  y"]
    assert demo.wrap_tokens([], width=10, indent="  ") == []


def test_pending_reports_reasons_and_missing_annotation_secrets() -> None:
    items = {
        "items": [
            {"metadata": {"name": "ok"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "new"}},
            {
                "metadata": {"name": "bad"},
                "status": {
                    "conditions": [
                        {"type": "Ready", "status": "False", "reason": "ItemNotFound", "message": "no item"}
                    ]
                },
            },
        ]
    }
    deployment = {
        "metadata": {
            "name": "app",
            "annotations": {
                "operator.1password.io/item-path": "vaults/v/items/i",
                "operator.1password.io/item-name": "App_Config",
            },
        }
    }
    plain = {"metadata": {"name": "plain"}}
    deployments = {"items": [deployment, plain]}
    waiting = demo.pending(items, deployments, ["ok"], {"app": ("VaultNotFound", "no vault v")})
    assert [(p.kind, p.name, p.reason) for p in waiting] == [
        ("OnePasswordItem", "new", "Pending"),
        ("OnePasswordItem", "bad", "ItemNotFound"),
        ("Deployment", "app", "VaultNotFound"),
    ]
    assert "  OnePasswordItem/bad: ItemNotFound: no item\n" in demo.format_pending(waiting)
    # The Secret name is sanitised as the operator does it.
    assert demo.pending({}, deployments, ["app-config"]) == []


def test_annotations_on_the_pod_template_count_too() -> None:
    deployment = {
        "metadata": {"name": "app"},
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {
                        "operator.1password.io/item-path": "vaults/v/items/i",
                        "operator.1password.io/item-name": "creds",
                    }
                }
            }
        },
    }
    assert demo.annotated_secret_name(deployment) == "creds"
    deployment["metadata"]["annotations"] = {"operator.1password.io/item-path": "vaults/v/items/i"}
    assert demo.annotated_secret_name(deployment) is None  # as the operator: metadata decides


def test_latest_warning_per_object() -> None:
    events = {
        "items": [
            {
                "type": "Warning",
                "involvedObject": {"name": "a"},
                "lastTimestamp": "2025-01-01T00:00:02Z",
                "reason": "New",
                "message": "newer",
            },
            {
                "type": "Warning",
                "involvedObject": {"name": "a"},
                "lastTimestamp": "2025-01-01T00:00:01Z",
                "reason": "Old",
                "message": "older",
            },
            {"type": "Normal", "involvedObject": {"name": "b"}, "reason": "Synced", "message": "fine"},
        ]
    }
    assert demo.latest_warnings(events) == {"a": ("New", "newer")}


def test_instructions_point_at_the_token_file_not_the_token(tmp_path: Path) -> None:
    text = demo.instructions(
        kubeconfig=tmp_path / "it's" / "kubeconfig",
        connect_url="http://127.0.0.1:1234",
        token_file=tmp_path / "connect-token",
        kubectl=Path("/opt/bin/kubectl"),
        run_dir=tmp_path,
        stays_up=True,
    )
    assert f"export KUBECONFIG='{tmp_path}/it'\\''s/kubeconfig'" in text
    assert "export OP_CONNECT_HOST=http://127.0.0.1:1234" in text
    assert f"export OP_CONNECT_TOKEN=\"$(cat '{tmp_path}/connect-token')\"" in text
    assert "export PATH='/opt/bin':\"$PATH\"" in text
    assert "kubectl get opi -n demo" in text
    assert '-X PATCH "$OP_CONNECT_HOST/v1/vaults/k8sdemovault0000000000001a/items/' in text
    assert "Ctrl-C" in text


def test_demo_is_an_opsync_subcommand() -> None:
    args = cli.build_parser().parse_args(["demo", "--exit-when-ready", "--run-dir", "/tmp/x"])
    assert args.handler is demo._demo
    assert args.exit_when_ready is True
    assert args.run_dir == Path("/tmp/x")
