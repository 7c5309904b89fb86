"""The ``opsync`` command line: one entry point, one subcommand per job.

Each subsystem owns its subcommand in its own module (``register(subparsers)``),
so this module only assembles them. Nothing is configured at import time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from opsync import __version__

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _registrars() -> list[Registrar]:
    from opsync import dryrun, run
    from opsync.tooling import cli as tooling_cli
    from opsync.tooling import demo
    from opsync.tooling.connectserver import cli as connectserver_cli

    return [
        run.register,
        dryrun.register,
        _register_crd,
        connectserver_cli.register,
        tooling_cli.register,
        demo.register,
    ]


def _register_crd(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("crd", help="print the OnePasswordItem CustomResourceDefinition (YAML)")
    parser.set_defaults(handler=_print_crd)


def _print_crd(args: argparse.Namespace) -> int:
    from opsync.core import crd

    sys.stdout.write(crd.definition_yaml())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opsync",
        description="Sync 1Password Connect items into Kubernetes Secrets.",
    )
    parser.add_argument("--version", action="version", version=f"opsync {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _registrars():
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the chosen subcommand; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
