"""``opsync connect-server``: run the local Connect server, or issue a token for it.

Why this module exists: the server is a product feature (offline development and
CI of GitOps manifests, ``make run``), so it has a command of its own::

    opsync connect-server --data PATH [--host 127.0.0.1] [--port 8080] [fault flags]
    opsync connect-server issue-token --data PATH --vault NAME_OR_ID[,r|,w] [--vault ...]

``issue-token`` prints only the token (stdout), so ``$(opsync connect-server
issue-token ...)`` works in scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from opsync.tooling.connectserver.app import ServerOptions
from opsync.tooling.connectserver.datafile import DataFileError
from opsync.tooling.connectserver.faults import FaultConfig
from opsync.tooling.connectserver.server import ConnectServer, issue_token
from opsync.tooling.connectserver.store import Store, StoreLookupError

logger = logging.getLogger("opsync.tooling.connectserver")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "connect-server",
        help="local, wire-compatible 1Password Connect server backed by a YAML file",
        description="Serve the 1Password Connect API from a YAML data file, persisting every write to it.",
    )
    parser.add_argument("--data", type=Path, help="the YAML data file (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port to listen on; 0 picks a free one (default: 8080)"
    )
    parser.add_argument("--connect-version", default="1.8.1", help="1Password-Connect-Version to report")
    parser.add_argument(
        "--max-inline-file-size-kb", type=int, default=100, help="inline file limit (413 above)"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, metavar="SECONDS", help="add latency to /v1 requests"
    )
    parser.add_argument("--error-rate", type=float, default=0.0, metavar="P", help="share of 500 answers")
    parser.add_argument(
        "--rate-limit-rate", type=float, default=0.0, metavar="P", help="share of 429 answers"
    )
    parser.add_argument("--retry-after", type=int, default=1, metavar="SECONDS", help="Retry-After of 429s")
    parser.add_argument(
        "--drop-rate", type=float, default=0.0, metavar="P", help="share of dropped connections"
    )
    parser.add_argument(
        "--transient-403-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="share of spurious 403s on vault requests",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log every request")
    parser.set_defaults(handler=_serve)

    actions = parser.add_subparsers(dest="connect_server_action", metavar="ACTION")
    issue = actions.add_parser(
        "issue-token",
        help="print a bearer token for some vaults",
        description=(
            "Print a signed bearer token for this server's data file. Each --vault is a vault name or id; "
            "no suffix grants read and write, ',r' read only, ',w' write only."
        ),
    )
    issue.add_argument("--data", type=Path, required=True, help="the server's YAML data file")
    issue.add_argument(
        "--vault",
        action="append",
        default=[],
        metavar="NAME_OR_ID[,r|,w]",
        help="a vault to grant (repeatable)",
    )
    issue.add_argument(
        "--all-vaults", action="store_true", help="grant read and write on every vault now in the file"
    )
    issue.add_argument(
        "--expires-in", type=float, default=None, metavar="SECONDS", help="token lifetime (default: none)"
    )
    issue.set_defaults(handler=_issue_token)


def _configure_logging(quiet: bool = False) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if quiet:
        logging.getLogger("opsync.tooling.connectserver.access").setLevel(logging.WARNING)


def _serve(args: argparse.Namespace) -> int:
    if args.data is None:
        sys.stderr.write("error: connect-server needs --data PATH\n")
        return 2
    _configure_logging(args.quiet)
    try:
        faults = faults_from_args(args)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    options = ServerOptions(
        connect_version=args.connect_version, max_inline_file_size_kb=args.max_inline_file_size_kb
    )
    server = ConnectServer(args.data, host=args.host, port=args.port, faults=faults, options=options)
    try:
        asyncio.run(_run(server))
    except DataFileError as exc:
        logger.error("invalid data file:\n%s", exc)
        return 1
    except OSError as exc:
        where = exc.filename or f"{args.host}:{args.port}"
        logger.error("cannot start: %s: %s", where, exc.strerror or type(exc).__name__)
        return 1
    return 0


def faults_from_args(args: argparse.Namespace) -> FaultConfig:
    """The fault switches given on the command line (raises ValueError for impossible ones)."""
    faults = FaultConfig(
        latency_seconds=args.latency,
        error_rate=args.error_rate,
        rate_limit_rate=args.rate_limit_rate,
        drop_rate=args.drop_rate,
        transient_403_rate=args.transient_403_rate,
        retry_after_seconds=args.retry_after,
    )
    faults.validate()
    return faults


async def _run(server: ConnectServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        logger.info("1Password Connect API listening on %s (data file %s)", server.url, server.data_path)
        await stop.wait()
        logger.info("stopping")


def _issue_token(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        store = Store.open(args.data)
    except DataFileError as exc:
        sys.stderr.write(f"error: invalid data file:\n{exc}\n")
        return 1
    scopes = list(args.vault)
    if args.all_vaults:
        scopes += [vault.id for vault in store.vaults()]
    if not scopes:
        sys.stderr.write("error: name at least one --vault (or --all-vaults)\n")
        return 2
    try:
        token = issue_token(store, scopes, expires_in=args.expires_in)
    except (StoreLookupError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(token + "\n")
    return 0
