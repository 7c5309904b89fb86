"""``opsync render -f cr.yaml``: the Secret a OnePasswordItem would produce, without a cluster.

For reviewing a GitOps change before it merges: it reads the items from the
configured Connect (``OP_CONNECT_HOST`` and ``OP_CONNECT_TOKEN``, as the
operator does), composes the Secret with the operator's own code, and prints
it as YAML. Values are shown as sizes unless ``--show-values`` is given (then
``data`` is base64, a manifest ``kubectl apply`` would take). A CR that the
operator would refuse exits 1 with the message its status would show.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import yaml

from opsync.connect.client import ConnectClient
from opsync.connect.config import ConnectConfig
from opsync.core import crd
from opsync.core.compose import compose
from opsync.core.desired import DesiredSecret
from opsync.core.errors import ConfigError
from opsync.sync.reconcile import checked_paths, describe_failure, desired_secret, item_target
from opsync.sync.resolve import fetch


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "render",
        help="print the Secret a OnePasswordItem would produce (keys and sizes; no cluster needed)",
    )
    parser.add_argument(
        "-f", "--filename", required=True, help="a YAML file of OnePasswordItems ('-' reads standard input)"
    )
    parser.add_argument("--show-values", action="store_true", help="print the values too (base64 in data)")
    parser.add_argument(
        "--allow-empty-values", action="store_true", help="keep empty fields, as the operator flag does"
    )
    parser.add_argument(
        "--enable-annotations",
        action="store_true",
        help="copy the CR's annotations, as the operator flag does",
    )
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        bodies = _load(sys.stdin if args.filename == "-" else None, args.filename)
        config = ConnectConfig.from_env()
    except (OSError, yaml.YAMLError, ConfigError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if not bodies:
        sys.stderr.write(f"error: {args.filename} holds no {crd.KIND}\n")
        return 2
    return asyncio.run(
        render_all(
            config,
            bodies,
            out=sys.stdout,
            err=sys.stderr,
            show_values=args.show_values,
            allow_empty_values=args.allow_empty_values,
            copy_annotations=args.enable_annotations,
        )
    )


def _load(stream: TextIO | None, filename: str) -> list[dict[str, Any]]:
    if stream is None:
        with open(filename, encoding="utf-8") as handle:
            documents = list(yaml.safe_load_all(handle))
    else:
        documents = list(yaml.safe_load_all(stream))
    found: list[dict[str, Any]] = []
    for document in documents:
        if not isinstance(document, dict):
            continue
        if document.get("kind") == f"{crd.KIND}List" or document.get("kind") == "List":
            found += [
                d for d in document.get("items") or [] if isinstance(d, dict) and d.get("kind") == crd.KIND
            ]
        elif document.get("kind") == crd.KIND:
            found.append(document)
    return found


async def render_all(
    config: ConnectConfig,
    bodies: list[dict[str, Any]],
    *,
    out: TextIO,
    err: TextIO,
    show_values: bool = False,
    allow_empty_values: bool = False,
    copy_annotations: bool = False,
) -> int:
    """Print each CR's Secret to ``out``, each failure to ``err``; 1 if any failed."""
    failed = False
    async with ConnectClient(config) as client:
        for body in bodies:
            meta = body.setdefault("metadata", {})
            meta.setdefault("uid", "")
            target = item_target(body)
            where = f"{crd.KIND} {target.namespace}/{meta.get('name')}"
            try:
                paths = checked_paths(target)
                fetched = [await fetch(client, path) for path in paths]
                composed = compose(
                    target.spec,
                    target.sources,
                    fetched,
                    type_=target.secret_type,
                    allow_empty_values=allow_empty_values,
                )
            except Exception as exc:
                failure = describe_failure(exc, target)
                err.write(f"error: {where}: {failure.reason}: {failure.message}\n")
                failed = True
                continue
            items = [(str(got.resolved), got.item.version or 0) for got in fetched]
            wanted = desired_secret(target, composed, items, copy_annotations=copy_annotations)
            for skipped in composed.skipped:
                verdict = "synced" if skipped.kept else "not synced"
                err.write(f"note: {where}: {skipped.source} {skipped.name!r} {verdict}: {skipped.reason}\n")
            if composed.content_problem is not None:  # typeCheck: Warn writes it all the same
                err.write(f"note: {where}: written, but {composed.content_problem}\n")
            out.write("---\n")
            out.write(yaml.safe_dump(_manifest(wanted, show_values), sort_keys=False, width=120))
    return 1 if failed else 0


def _manifest(wanted: DesiredSecret, show_values: bool) -> dict[str, Any]:
    data: Mapping[str, bytes] = wanted.data
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": wanted.name,
            "namespace": wanted.namespace,
            "labels": dict(wanted.labels),
            "annotations": dict(wanted.annotations),
        },
        "type": wanted.type,
        "data": {
            key: base64.b64encode(value).decode() if show_values else f"({len(value)} bytes)"
            for key, value in sorted(data.items())
        },
    }
