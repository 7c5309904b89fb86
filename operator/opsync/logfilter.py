"""What an outage of the Kubernetes API server looks like in the log: one WARNING, one INFO.

Why this module exists: when kube-apiserver goes away, every layer that talks to it notices
and retries — urllib3 under the kubernetes client ("Retrying ..."), kopf's API client
("Request attempt #N failed; will retry", an ERROR per watch stream per attempt), opsync's
own requests (the poller's syncs, Events, the leader Lease) — and each used to log a WARNING
or an ERROR, some with a traceback: a 19 s outage wrote 192 tracebacks and 138 ERROR lines,
although the operator recovered by itself. Here:

* :class:`Reachability` tracks whether the API server answers and logs one WARNING when it
  stops answering and one INFO when it answers again (fed by :class:`opsync.kube.KubeApi`
  with every request's result, and by :class:`OutageFilter` with kopf's failed attempts);
* :class:`OutageFilter`, on the process's log handler, turns the records of an expected
  network failure (a connection refused, reset or timed out, by any of those libraries)
  into DEBUG records without a traceback. A 503 answer (an API server that is up but not
  ready yet, as while it starts) keeps its level but not its traceback: the line names the
  error, and kopf, which logs it, retries. Errors that are not network failures (a 403, a
  422, a bug) keep their level and traceback.

Nothing here exists at import time: :func:`opsync.run.configure_logging` creates both and
the composition root hands the tracker to the Kubernetes layer. No kopf, aiohttp or
kubernetes import either: exceptions are recognised by their class names.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

from opsync.core.errors import KubeError

REACHABILITY_LOGGER = "opsync.kube"
"""The logger of the two lines (the Kubernetes layer's name: it is about the API server)."""

NETWORK_ERROR_CLASSES = frozenset(
    {
        # aiohttp (kopf's client): the base of refused, reset and disconnected connections
        "aiohttp.client_exceptions.ClientConnectionError",
        # urllib3 (the kubernetes client): connection failures and retries exhausted on them
        "urllib3.exceptions.NewConnectionError",
        "urllib3.exceptions.ProtocolError",
        "urllib3.exceptions.MaxRetryError",
        "urllib3.exceptions.TimeoutError",
    }
)
"""Exception classes (module.name, matched anywhere in an exception's MRO) of network failures."""

KOPF_RETRY = "Request attempt "
"""How kopf's API client starts its per-attempt lines (``kopf._cogs.clients.api``)."""

KOPF_CONNECTION_FAILURES = (
    "ClientConnectorError",
    "ClientOSError",
    "ServerDisconnectedError",
    "ServerTimeoutError",
    "ConnectionRefusedError",
    "ConnectionResetError",
    "TimeoutError",
)
"""The ``repr`` of an aiohttp connection failure as kopf puts it at the end of its line."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_network_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the API server not answering at all: a
    connection refused, reset or timed out, or the Kubernetes layer's error for one (a
    retryable :class:`KubeError` without an HTTP status). An HTTP error status is an answer."""
    for error in _chain(exc):
        if isinstance(error, KubeError):
            return error.status is None and error.retryable
        if isinstance(error, ConnectionError | TimeoutError | socket.gaierror):
            return True
        if any(
            f"{cls.__module__}.{cls.__qualname__}" in NETWORK_ERROR_CLASSES for cls in type(error).__mro__
        ):
            return True
    return False


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a 503 answer of the API server (kopf's and the
    kubernetes client's errors carry the HTTP status as ``status``)."""
    return any(getattr(error, "status", None) == 503 for error in _chain(exc))


class Reachability:
    """Whether the Kubernetes API server answers; logs each change once.

    :meth:`failed` on a network failure, :meth:`succeeded` on any HTTP answer (an error status
    is an answer too). Thread-safe: urllib3 and the logging filter call it from any thread.
    """

    def __init__(
        self, logger: logging.Logger | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger or logging.getLogger(REACHABILITY_LOGGER)
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None

    @property
    def unreachable(self) -> bool:
        return self._down_since is not None

    def failed(self, detail: str) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = self._clock()
        self._logger.warning(
            "the Kubernetes API server is unreachable (%s); retrying with backoff, "
            "one line follows when it answers again",
            detail,
        )

    def succeeded(self) -> None:
        if self._down_since is None:  # the common case, without the lock
            return
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            self._logger.info(
                "the Kubernetes API server is reachable again after %.0fs", self._clock() - since
            )


class OutageFilter(logging.Filter):
    """On the log handler: an expected network failure's record becomes DEBUG without a traceback.

    A record is one when its exception, or an exception among its arguments, is a network
    failure (:func:`is_network_failure`), when it is urllib3's "Retrying ..." warning, or when
    it is kopf's "Request attempt ... failed; will retry" (a retry; kopf's "escalating" line,
    when it gives up, keeps its level). kopf's connection failures also tell ``reachability``.
    Demoted records are dropped unless the handler's ``level`` is DEBUG.
    """

    def __init__(self, level: int, reachability: Reachability | None = None) -> None:
        super().__init__()
        self.level = level
        self.reachability = reachability

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG or not self._expected(record):
            if record.exc_info and record.exc_info[1] is not None and is_unavailable(record.exc_info[1]):
                record.exc_info, record.exc_text = None, None
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return self.level <= logging.DEBUG

    def _expected(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and is_network_failure(record.exc_info[1]):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        if any(isinstance(arg, BaseException) and is_network_failure(arg) for arg in args):
            return True
        if record.name.startswith("urllib3.") and str(record.msg).startswith("Retrying "):
            return True
        if record.name.startswith("kopf.") and str(record.msg).startswith(KOPF_RETRY):
            message = record.getMessage()
            if "; will retry" not in message and "; will re-authenticate" not in message:
                return False
            failure = next((name for name in KOPF_CONNECTION_FAILURES if name in message), None)
            if failure is not None and self.reachability is not None:
                self.reachability.failed(failure)
            return True
        return False
