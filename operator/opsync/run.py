"""``opsync run``: start the operator against the configured cluster and Connect server.

Configuration comes from the official operator's environment variables and
flags (see :mod:`opsync.settings` and :mod:`opsync.connect.config`); it is read
and validated here, once, so a bad value stops start-up with one message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from opsync.errors import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("run", help="run the operator")
    parser.add_argument(
        "--enable-annotations",
        action="store_true",
        default=None,
        help="copy OnePasswordItem annotations to Secrets",
    )
    parser.add_argument(
        "--allow-empty-values",
        action="store_true",
        default=None,
        help="keep fields with empty values as keys",
    )
    parser.add_argument("--log-level", default=None, help="debug, info, warning or error (default: info)")
    parser.add_argument("--standalone", action="store_true", default=None, help="no peering: single replica")
    parser.add_argument(
        "--liveness", default=None, help="liveness endpoint URL, e.g. http://0.0.0.0:8081/healthz"
    )
    parser.set_defaults(handler=_run)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _run(args: argparse.Namespace) -> int:
    from opsync.connect import ConnectConfig
    from opsync.handlers import run_operator
    from opsync.settings import OperatorSettings

    try:
        settings = OperatorSettings.load(
            enable_annotations=args.enable_annotations,
            allow_empty_values=args.allow_empty_values,
            log_level=args.log_level,
            standalone=args.standalone,
            liveness_endpoint=args.liveness,
        )
        connect_config = ConnectConfig()
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    configure_logging(settings.log_level)
    logging.getLogger(__name__).info(
        "opsync starting: Connect %s, namespaces %s, polling every %ss",
        connect_config.host,
        ",".join(settings.watch_namespaces) or "(all)",
        settings.polling_interval,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_operator(settings, connect_config))
    return 0
