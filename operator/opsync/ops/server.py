"""The operator's own HTTP endpoints: Prometheus ``/metrics`` and the ``/healthz`` and ``/readyz`` probes.

Why this module exists: kopf serves the operator's watches and handlers, not
its observability. Kubernetes needs probes and Prometheus needs a scrape
target, and a drop-in for the official operator (a controller-runtime binary)
should answer where that one does: metrics on ``:8080`` (``/metrics``) and
health probes on ``:8081`` (``/healthz``, ``/readyz``), each address set
controller-runtime style (``--metrics-bind-address``,
``--health-probe-bind-address``; see :func:`parse_bind_address`), either one
can be turned off with ``"0"``. :class:`OpsServer` runs both listeners with
aiohttp (already there through kopf) on the operator's event loop, next to
kopf.

* ``/healthz`` (liveness) answers 200 ``ok`` whenever it is answered at all:
  the handler runs on the operator's event loop, so an answer proves the loop
  still serves. It never depends on Connect or Kubernetes.
* ``/readyz`` (readiness) answers 200 ``ok`` when the ``ready`` callable says
  so, else 503 ``not ready: <short reason>``.
* ``/metrics`` renders :class:`opsync.ops.metrics.Metrics`.

Access logging is off (a probe every few seconds would drown the log); the
listeners bind on :meth:`OpsServer.start`, and with port 0 the bound ports
are readable afterwards (``metrics_port``, ``health_port``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Final, NamedTuple, Self

from aiohttp import web
from aiohttp.typedefs import Handler

from opsync.core.errors import shorten
from opsync.ops.metrics import Metrics

__all__ = [
    "BindAddress",
    "OpsServer",
    "ReadyCheck",
    "parse_bind_address",
]

logger = logging.getLogger(__name__)


METRICS_PATH: Final = "/metrics"
LIVENESS_PATH: Final = "/healthz"
READINESS_PATH: Final = "/readyz"

SHUTDOWN_TIMEOUT: Final = 2.0
"""Seconds :meth:`OpsServer.stop` lets a request in progress finish."""
_REASON_LIMIT: Final = 200

BindAddress = tuple[str, int]
"""``(host, port)``; host ``""`` means every interface, port 0 a free port."""

ReadyCheck = Callable[[], bool | tuple[bool, str]]
"""Readiness: ``True``/``False``, or ``(ready, reason)`` to say why not."""


def parse_bind_address(value: str) -> BindAddress | None:
    """A controller-runtime bind address as ``(host, port)``, or ``None`` when it turns the listener off.

    ``":8080"`` (every interface), ``"0.0.0.0:8080"``, ``"127.0.0.1:0"`` (a
    free port), ``"[::1]:8080"``, ``"localhost:8080"``; ``"0"`` or ``""`` mean
    off. Anything else raises ``ValueError`` with a message fit for the user.
    """
    text = value.strip()
    if text in ("", "0"):
        return None
    hint = "expected [host]:port such as ':8080' or '127.0.0.1:8080', or '0' to turn it off"
    if text.startswith("["):
        host, closing, rest = text[1:].partition("]")
        if not closing or not rest.startswith(":") or not host:
            raise ValueError(f"invalid bind address {value!r}: {hint}")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise ValueError(f"invalid bind address {value!r}: {hint}")
        if ":" in host:
            raise ValueError(f"invalid bind address {value!r}: write an IPv6 address in brackets, [::1]:8080")
    if any(char.isspace() or char in "/[]@?#" for char in host):
        raise ValueError(f"invalid bind address {value!r}: {hint}")
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise ValueError(f"invalid bind address {value!r}: the port must be a number from 0 to 65535")
    return host, int(port_text)


class OpsServer:
    """The metrics listener and the health-probe listener, either of which may be off.

    Addresses are controller-runtime strings (``":8080"``, ``"0"`` for off;
    see :func:`parse_bind_address`, whose ``ValueError`` an invalid one
    raises) or parsed ``(host, port)`` tuples, ``None`` for off.
    ``metrics_address`` serves ``/metrics`` from ``metrics``; it is off when
    either is ``None``. ``health_address`` serves ``/healthz`` and ``/readyz``;
    ``ready`` decides readiness (``None``: ready whenever the server answers;
    a check that raises counts as not ready). When both addresses are the same
    (and not port 0), one listener serves all three paths.

    After :meth:`start`, ``metrics_port`` and ``health_port`` are the bound
    ports (``None`` for a listener that is off). With host ``""`` and port 0
    the system may bind IPv4 and IPv6 on different ports; the first is shown.
    """

    def __init__(
        self,
        *,
        metrics: Metrics | None,
        metrics_address: str | BindAddress | None,
        health_address: str | BindAddress | None,
        ready: ReadyCheck | None = None,
    ) -> None:
        self.metrics = metrics
        parsed = _address(metrics_address)  # parsed even when off, so that a bad value still shows
        self.metrics_address = parsed if metrics is not None else None
        self.health_address = _address(health_address)
        self._ready = ready
        self._runners: list[web.AppRunner] = []
        self.metrics_port: int | None = None
        self.health_port: int | None = None

    def __repr__(self) -> str:
        return f"<OpsServer metrics={self.metrics_address!r} health={self.health_address!r}>"

    @property
    def running(self) -> bool:
        return bool(self._runners)

    async def start(self) -> None:
        """Bind the enabled listeners; raises ``OSError`` naming the address if one cannot be bound."""
        if self._runners:
            raise RuntimeError("the server is already running")
        metrics_routes: list[tuple[str, Handler]] = [(METRICS_PATH, self._serve_metrics)]
        health_routes: list[tuple[str, Handler]] = [
            (LIVENESS_PATH, self._serve_liveness),
            (READINESS_PATH, self._serve_readiness),
        ]
        metrics_address, health_address = self.metrics_address, self.health_address
        listeners: list[_Listener] = []
        if metrics_address is not None and metrics_address == health_address and metrics_address[1] != 0:
            listeners.append(
                _Listener("metrics and health probes", metrics_address, metrics_routes + health_routes)
            )
        else:
            if metrics_address is not None:
                listeners.append(_Listener("metrics", metrics_address, metrics_routes))
            if health_address is not None:
                listeners.append(_Listener("health probes", health_address, health_routes))
        try:
            for listener in listeners:
                runner, port = await self._listen(listener)
                self._runners.append(runner)
                paths = {path for path, _ in listener.routes}
                if METRICS_PATH in paths:
                    self.metrics_port = port
                if LIVENESS_PATH in paths:
                    self.health_port = port
                logger.info("serving %s on %s", listener.role, _describe(listener.address[0], port))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close every listener (requests in progress get ``SHUTDOWN_TIMEOUT`` seconds)."""
        runners, self._runners = self._runners, []
        self.metrics_port = self.health_port = None
        for runner in reversed(runners):
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _listen(self, listener: _Listener) -> tuple[web.AppRunner, int]:
        app = web.Application()
        for path, handler in listener.routes:
            app.router.add_get(path, handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        role, (host, port) = listener.role, listener.address
        try:
            site = web.TCPSite(runner, host or None, port)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            reason = exc.strerror or type(exc).__name__
            raise OSError(
                exc.errno, f"cannot listen for {role} on {_describe(host, port)}: {reason}"
            ) from exc
        except BaseException:
            await runner.cleanup()
            raise
        return runner, int(runner.addresses[0][1])

    # -- handlers ---------------------------------------------------------------------------------

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        if self.metrics is None:  # not reached: the listener is off without metrics
            raise web.HTTPNotFound()
        body, content_type = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _serve_liveness(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _serve_readiness(self, request: web.Request) -> web.Response:
        ready, reason = self._check_ready()
        if ready:
            return web.Response(text="ok")
        return web.Response(status=503, text=f"not ready: {reason}" if reason else "not ready")

    def _check_ready(self) -> tuple[bool, str]:
        if self._ready is None:
            return True, ""
        try:
            answer = self._ready()
        except Exception as exc:
            logger.debug("readiness check raised %s", type(exc).__name__, exc_info=True)
            return False, f"readiness check failed ({type(exc).__name__})"
        if isinstance(answer, tuple):
            ready, reason = answer
            return bool(ready), shorten(str(reason), _REASON_LIMIT)
        return bool(answer), ""


class _Listener(NamedTuple):
    role: str
    address: BindAddress
    routes: list[tuple[str, Handler]]


def _address(value: str | BindAddress | None) -> BindAddress | None:
    return parse_bind_address(value) if isinstance(value, str) else value


def _describe(host: str, port: int) -> str:
    if not host:
        return f"*:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
