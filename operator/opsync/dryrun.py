"""``opsync render -f cr.yaml``: the Secret a OnePasswordItem would produce, without a cluster.

For reviewing a GitOps change before it merges: it reads the items from the
configured Connect (``OP_CONNECT_HOST`` and ``OP_CONNECT_TOKEN``, as the
operator does), composes the Secret with the operator's own code, and prints
it as YAML. Values are shown as sizes unless ``--show-values`` is given (then
``data`` is base64, a manifest ``kubectl apply`` would take). A CR that the
operator would refuse exits 1 with the message its status would show.

Connections: an item with ``spec.connectionRef`` is read through the connection it names, found
among the file's ``OnePasswordConnection`` / ``ClusterOnePasswordConnection`` documents, with the
same refusals as the operator (another namespace's connection, a namespace a cluster connection's
``spec.namespaces`` leaves out; a ``namespaceSelector`` cannot be checked without the cluster and
is noted). Its token comes from a ``Secret`` document of the file that ``tokenSecretRef`` names,
else from ``--token <namespace>/<name>=<file>`` (``cluster:<name>`` for a cluster connection).
``OP_CONNECT_*`` are then needed only for items that name no connection.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import yaml
from pydantic import SecretStr

from opsync.connect.client import ConnectClient
from opsync.connect.config import ConnectConfig
from opsync.core import connection, crd
from opsync.core.compose import compose
from opsync.core.desired import DesiredSecret
from opsync.core.errors import ConfigError, ConnectionUnusable, Reason, SpecError
from opsync.core.gobool import parse_bool
from opsync.sync.reconcile import Target, checked_paths, describe_failure, desired_secret, item_target
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
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="CONNECTION=FILE",
        help="the token of a connection of the file (<namespace>/<name> or cluster:<name>), from FILE",
    )
    parser.add_argument(
        "--default-connection",
        default="true",
        help="false: an item naming no connection is refused (NoConnection), as the operator flag does",
    )
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        documents = _documents(sys.stdin if args.filename == "-" else None, args.filename)
        bodies = _of_kind(documents, (crd.KIND,))
        default = parse_bool(args.default_connection)
        config: ConnectConfig | None = None
        if default and (not bodies or any(item_target(body).connection is None for body in bodies)):
            config = ConnectConfig.from_env()
        tokens = {}
        for given in args.token:
            label, _, path = given.partition("=")
            if not path:
                raise ConfigError(
                    f"--token {given!r}: use <namespace>/<name>=<file> or cluster:<name>=<file>"
                )
            with open(path, encoding="utf-8") as handle:
                tokens[label] = SecretStr(handle.read().strip())
    except (OSError, yaml.YAMLError, ConfigError, ValueError) as exc:
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
            connections=Offline(
                objects=_of_kind(documents, connection.KINDS),
                secrets=_of_kind(documents, ("Secret",)),
                tokens=tokens,
                base=config,
                default_enabled=default,
            ),
        )
    )


def _documents(stream: TextIO | None, filename: str) -> list[dict[str, Any]]:
    if stream is None:
        with open(filename, encoding="utf-8") as handle:
            documents = list(yaml.safe_load_all(handle))
    else:
        documents = list(yaml.safe_load_all(stream))
    found: list[dict[str, Any]] = []
    for document in documents:
        if not isinstance(document, dict):
            continue
        if str(document.get("kind", "")).endswith("List"):
            found += [d for d in document.get("items") or [] if isinstance(d, dict)]
        else:
            found.append(document)
    return found


def _of_kind(documents: list[dict[str, Any]], kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    return [d for d in documents if d.get("kind") in kinds]


@dataclass(frozen=True, kw_only=True)
class Offline:
    """The connections of a rendered file: which Connect and token each item reads with."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    secrets: list[dict[str, Any]] = field(default_factory=list)
    tokens: Mapping[str, SecretStr] = field(default_factory=dict)
    base: ConnectConfig | None = None
    default_enabled: bool = True

    def config_for(self, target: Target) -> tuple[str, ConnectConfig | None, str | None]:
        """The connection's label, its client settings (None: the default's) and a note; raises
        the error the operator would report."""
        ref = target.connection
        if ref is None:
            if not self.default_enabled:
                raise SpecError(
                    "this item names no connection (--default-connection=false)", reason=Reason.NoConnection
                )
            return connection.DEFAULT_LABEL, None, None
        refusal = connection.cross_namespace_refusal(ref, target.namespace)
        if refusal is not None:
            raise SpecError(refusal, reason=Reason.ConnectionNotAllowed)
        body = self._object(ref)
        spec, problem = connection.parse(ref.kind, body)
        if spec is None:
            raise ConnectionUnusable(f"{ref}: {problem}", reason=Reason.InvalidSpec)
        note = None
        if isinstance(spec, connection.ClusterConnectionSpec):
            if connection.needs_labels(spec, target.namespace):
                note = f"{ref}: its namespaceSelector is not checked without the cluster"
            elif not connection.namespace_allowed(spec, target.namespace, None):
                raise SpecError(
                    connection.not_allowed_message(ref, target.namespace), reason=Reason.ConnectionNotAllowed
                )
        token = self._token(ref, spec)
        try:
            config = ConnectConfig(
                host=spec.host, token=token, tls_verify=spec.tlsVerify is not False, **self._tuning()
            )
        except ConfigError as exc:
            raise ConnectionUnusable(f"{ref}: {exc}", reason=Reason.InvalidSpec) from None
        return ref.label, config, note

    def _object(self, ref: connection.ConnectionRef) -> dict[str, Any]:
        for body in self.objects:
            meta = body.get("metadata") or {}
            same = body.get("kind") == ref.kind and meta.get("name") == ref.name
            if same and (ref.cluster or (meta.get("namespace") or "default") == ref.namespace):
                return body
        raise SpecError(f"no {ref} in the file", reason=Reason.ConnectionNotFound)

    def _token(self, ref: connection.ConnectionRef, spec: connection.AnySpec) -> SecretStr:
        if ref.label in self.tokens:
            return self.tokens[ref.label]
        key_ref = spec.tokenSecretRef
        home = getattr(key_ref, "namespace", None) or ref.namespace or "default"
        for secret in self.secrets:
            meta = secret.get("metadata") or {}
            if meta.get("name") != key_ref.name or (meta.get("namespace") or "default") != home:
                continue
            if key_ref.key in (secret.get("stringData") or {}):
                return SecretStr(str(secret["stringData"][key_ref.key]).strip())
            if key_ref.key in (secret.get("data") or {}):
                return SecretStr(
                    base64.b64decode(secret["data"][key_ref.key]).decode("utf-8", "replace").strip()
                )
        raise ConnectionUnusable(
            f"{ref}: no token: the file has no Secret {home}/{key_ref.name} with key {key_ref.key!r}; "
            f"pass --token {ref.label}=<file>",
            reason=Reason.TokenNotFound,
        )

    def _tuning(self) -> dict[str, Any]:
        if self.base is None:
            return {}
        names = ("timeout", "connect_timeout", "max_retries", "backoff_initial", "backoff_max")
        return {name: getattr(self.base, name) for name in names}


async def render_all(
    config: ConnectConfig | None,
    bodies: list[dict[str, Any]],
    *,
    out: TextIO,
    err: TextIO,
    show_values: bool = False,
    allow_empty_values: bool = False,
    copy_annotations: bool = False,
    connections: Offline | None = None,
) -> int:
    """Print each CR's Secret to ``out``, each failure to ``err``; 1 if any failed. ``config``:
    the default connection (None when no item uses it)."""
    failed = False
    offline = connections or Offline(base=config)
    clients: dict[str, ConnectClient] = {}
    try:
        for body in bodies:
            meta = body.setdefault("metadata", {})
            meta.setdefault("uid", "")
            target = item_target(body)
            where = f"{crd.KIND} {target.namespace}/{meta.get('name')}"
            try:
                paths = checked_paths(target)
                label, settings, note = offline.config_for(target)
                if note is not None:
                    err.write(f"note: {where}: {note}\n")
                client = clients.get(label)
                if client is None:
                    chosen = settings or config
                    if chosen is None:
                        raise ConfigError(
                            "set OP_CONNECT_HOST and OP_CONNECT_TOKEN for the items naming no connection"
                        )
                    client = clients[label] = ConnectClient(chosen)
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
    finally:
        for client in clients.values():
            await client.aclose()
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
