"""``opsync run``: start the operator against the configured cluster and Connect server.

Why this module exists: it is the composition root. Configuration comes from the
official operator's environment variables and flags (see :mod:`opsync.settings`
and :mod:`opsync.connect.config`); it is read and validated here, once, so a bad
value stops start-up with one message, and logging is configured here, once.
:func:`run_operator` then serves the health and metrics endpoints, waits for the
leader Lease and runs kopf (:mod:`opsync.handlers`) for as long as it leads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from opsync.connect.config import ConnectConfig
from opsync.core.errors import ConfigError
from opsync.logfilter import OutageFilter, Reachability
from opsync.settings import OperatorSettings


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
    parser.add_argument(
        "--default-connection",
        dest="default_connection",
        default=None,
        help="true (default): items without spec.connectionRef use OP_CONNECT_*; false: they are "
        "refused with NoConnection (multi-tenant clusters)",
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


QUIET_LOGGERS = ("httpx", "httpcore", "urllib3", "kopf.objects")
"""Loggers with a line per request or per handled object (kopf's "Handler … succeeded"): their
warnings and errors only, unless at debug. opsync logs one line per Secret it writes."""


def configure_logging(level: str) -> Reachability:
    """The process's logging, set once at start-up (nothing else changes logger levels).

    An API server outage shows as one WARNING and one INFO (the returned tracker, for the
    Kubernetes layer): the handler's :class:`~opsync.logfilter.OutageFilter` turns the
    libraries' per-retry network failures into DEBUG records without tracebacks."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.captureWarnings(True)  # a deprecation in a dependency shows in the log
    if level != "debug":
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    reachability = Reachability()
    outages = OutageFilter(getattr(logging, level.upper()), reachability)
    for handler in logging.getLogger().handlers:
        handler.addFilter(outages)
    return reachability


def _run(args: argparse.Namespace) -> int:
    try:
        settings = OperatorSettings.from_env(
            enable_annotations=args.enable_annotations,
            allow_empty_values=args.allow_empty_values,
            log_level=args.log_level,
            leader_election=args.leader_election,
            metrics_bind_address=(
                f":{args.metrics_port}" if args.metrics_port is not None else args.metrics_bind_address
            ),
            health_probe_bind_address=args.health_probe_bind_address,
            default_connection=args.default_connection,
        )
        connect_config: ConnectConfig | None = None
        if settings.default_connection or ConnectConfig.environment().get("host"):
            connect_config = ConnectConfig.from_env()
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    reachability = configure_logging(settings.log_level)
    logging.getLogger(__name__).info(
        "opsync starting: Connect %s, namespaces %s, polling every %ss",
        connect_config.host if connect_config is not None else "(no default connection)",
        ",".join(settings.watch_namespaces) or "(all)",
        settings.polling_interval,
    )
    with contextlib.suppress(KeyboardInterrupt):
        try:
            if not asyncio.run(run_operator(settings, connect_config, reachability=reachability)):
                return 1  # leadership lost: exit so that Kubernetes restarts this replica as a standby
        except OSError as exc:  # a metrics or probe port in use
            sys.stderr.write(
                f"error: {exc}; choose another --metrics-bind-address / --health-probe-bind-address "
                "(0 turns one off)\n"
            )
            return 2
    return 0


async def run_operator(
    settings: OperatorSettings,
    connect_config: ConnectConfig | None,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
    reachability: Reachability | None = None,
) -> bool:
    """Run opsync until stopped: the body of ``opsync run``. False when leadership was lost.

    The health and metrics endpoints serve at once; kopf (and with it every
    handler and the poller) starts only once this replica holds the leader
    Lease, unless leader election is off. A leader that cannot renew its Lease
    stops acting and returns False, so that the process exits and restarts as
    a standby, as controller-runtime does. ``reachability`` (from :func:`configure_logging`)
    hears of every Kubernetes request's result and logs the API server's outages.
    """
    from opsync.handlers.operator import build_runtime, run_kopf
    from opsync.kube import KubeApi, load_api_client
    from opsync.ops.metrics import Metrics
    from opsync.ops.server import OpsServer
    from opsync.sync.leader import LeaderElector, default_identity, default_lease_namespace

    stop = stop_flag or asyncio.Event()
    if stop_flag is None:  # the command line's own loop: a standby stops cleanly too
        _stop_on_signals(stop)
        # A template renders for up to its whole budget on a thread of its own, holding the GIL
        # but for the switch interval: at Python's 5 ms, a probe answered beside it waited for
        # many such turns (up to 160 ms). 1 ms keeps the event loop's turns short.
        sys.setswitchinterval(SWITCH_INTERVAL)
    metrics = Metrics()
    kube = KubeApi(load_api_client(), instance=settings.pod_name or "opsync", reachability=reachability)
    ready = asyncio.Event()
    server = OpsServer(
        metrics=metrics,
        metrics_address=settings.metrics_bind_address,
        health_address=settings.health_probe_bind_address,
        ready=ready.is_set,
    )
    await server.start()
    elector: LeaderElector | None = None
    if settings.leader_election:
        elector = LeaderElector(
            kube,
            namespace=settings.lease_namespace or default_lease_namespace(settings.pod_namespace),
            name=settings.lease_name,
            identity=default_identity(settings.pod_name),
            duration=settings.lease_duration,
            renew_deadline=settings.lease_duration * 2 / 3,
            retry_period=settings.lease_duration * 2 / 15,
        )
    kopf_stop = asyncio.Event()
    kopf_ready = asyncio.Event()
    kept: asyncio.Task[bool] | None = None
    try:
        if elector is not None:
            ready.set()  # a standby is healthy and ready; it just waits
            if not await elector.acquire(stop):
                return True
            kept = asyncio.create_task(elector.keep(stop), name="opsync lease")
            kept.add_done_callback(lambda _: kopf_stop.set())
        metrics.set_leader(True)
        relay = asyncio.create_task(_relay(stop, kopf_stop), name="opsync stop relay")
        readiness = asyncio.create_task(_relay(kopf_ready, ready), name="opsync readiness")
        if ready_flag is not None:
            readiness.add_done_callback(lambda _: ready_flag.set())
        if stop_flag is None:  # kopf has installed its own signal handlers by the time it is ready

            def take_signals_back(done: asyncio.Task[None]) -> None:
                if not done.cancelled():
                    _stop_on_signals(stop)

            readiness.add_done_callback(take_signals_back)
        try:
            runtime = build_runtime(settings, connect_config, kube=kube, metrics=metrics)
            await run_kopf(runtime, stop_flag=kopf_stop, ready_flag=kopf_ready)
        finally:
            relay.cancel()
            readiness.cancel()
            metrics.set_leader(False)
        return kept is None or not kept.done() or kept.result()
    finally:
        if kept is not None and not kept.done():
            kept.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await kept
        if elector is not None:
            await elector.release()
        await server.stop()
        kube.close()


SWITCH_INTERVAL = 0.001
"""Seconds a thread may hold the GIL while another waits (Python's default: 0.005)."""


def _stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: the operator stops its handlers and the poller, then hands
    its Lease over, whether it leads or stands by.

    kopf installs signal handlers of its own when it starts, which stop it without setting the
    stop flag it was given: it then waits 5 s for the task that watches that flag before it exits,
    and a clean handover took 6 s. These replace them and set the flag kopf watches.
    """
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()
