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

from opsync.core.errors import ConfigError


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
    parser.add_argument(
        "--zap-log-level", dest="log_level", default=None, help="the official operator's name for --log-level"
    )
    parser.add_argument(
        "--leader-elect",
        dest="leader_election",
        action="store_const",
        const=True,
        default=None,
        help="only the replica holding the leader Lease acts (the default)",
    )
    parser.add_argument(
        "--standalone",
        dest="leader_election",
        action="store_const",
        const=False,
        help="no leader election: run one replica only",
    )
    parser.add_argument(
        "--metrics-bind-address", default=None, help="where /metrics is served (default :8080; 0 = off)"
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="shorthand for --metrics-bind-address :PORT"
    )
    parser.add_argument(
        "--health-probe-bind-address",
        default=None,
        help="where /healthz and /readyz are served (default :8081; 0 = off)",
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
    from opsync.connect.config import ConnectConfig
    from opsync.handlers import run_operator
    from opsync.settings import OperatorSettings

    try:
        settings = OperatorSettings.load(
            enable_annotations=args.enable_annotations,
            allow_empty_values=args.allow_empty_values,
            log_level=args.log_level,
            leader_election=args.leader_election,
            metrics_bind_address=(
                f":{args.metrics_port}" if args.metrics_port is not None else args.metrics_bind_address
            ),
            health_probe_bind_address=args.health_probe_bind_address,
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
        try:
            if not asyncio.run(run_operator(settings, connect_config)):
                return 1  # leadership lost: exit so that Kubernetes restarts this replica as a standby
        except OSError as exc:  # a metrics or probe port in use
            sys.stderr.write(
                f"error: {exc}; choose another --metrics-bind-address / --health-probe-bind-address "
                "(0 turns one off)\n"
            )
            return 2
    return 0
