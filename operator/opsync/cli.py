"""The ``opsync`` command line: one entry point, one subcommand per job.

Each subsystem owns its subcommand in its own module (``register(subparsers)``),
so this module only assembles them. Only the module of the command being run
is imported (``opsync run`` loads none of the tooling: the local Connect
server, the control plane and the demo); ``--help`` imports them all. Nothing
is configured at import time.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from opsync import __version__

COMMANDS: dict[str, str] = {
    "run": "opsync.run",
    "render": "opsync.dryrun",
    "crd": "opsync.cli",
    "connect-server": "opsync.tooling.connectserver.cli",
    "controlplane": "opsync.tooling.cli",
    "demo": "opsync.tooling.demo",
}
"""Each subcommand, and the module whose ``register`` adds it."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("crd", help="print the OnePasswordItem CustomResourceDefinition (YAML)")
    parser.add_argument(
        "--connections",
        action="store_true",
        help="print the OnePasswordConnection and ClusterOnePasswordConnection CRDs instead",
    )
    parser.set_defaults(handler=_print_crd)


def _print_crd(args: argparse.Namespace) -> int:
    if args.connections:
        from opsync.core import connection

        sys.stdout.write(connection.definitions_yaml())
        return 0
    from opsync.core import crd

    sys.stdout.write(crd.definition_yaml())
    return 0


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand, or, when ``argv`` names one, with that one alone."""
    parser = argparse.ArgumentParser(
        prog="opsync",
        description="Sync 1Password Connect items into Kubernetes Secrets.",
    )
    parser.add_argument("--version", action="version", version=f"opsync {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    named = [arg for arg in argv or () if not arg.startswith("-")][:1]
    for module in (
        {COMMANDS[named[0]]} if named and named[0] in COMMANDS else dict.fromkeys(COMMANDS.values())
    ):
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the chosen subcommand; returns the process exit code."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(arguments).parse_args(arguments)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
