"""The API server outage log: one WARNING and one INFO from Reachability, the rest at DEBUG (OutageFilter)."""

from __future__ import annotations

import logging
import sys

import aiohttp
import pytest
import urllib3
from kubernetes import client

from opsync.core.errors import KubeError
from opsync.kube import KubeApi
from opsync.logfilter import OutageFilter, Reachability, is_network_failure

UNREACHABLE = KubeError(
    "reading Lease default/x failed: the API server could not be reached (...)", retryable=True
)


def record(
    name: str, level: int, msg: str, *args: object, exc: BaseException | None = None
) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


def caught(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as raised:
        return raised


@pytest.mark.parametrize(
    "exc",
    [
        UNREACHABLE,
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        urllib3.exceptions.MaxRetryError(None, "/", reason=None),  # type: ignore[arg-type]
        aiohttp.ClientConnectionError("Connection reset"),
        aiohttp.ServerDisconnectedError(),
    ],
)
def test_network_failures_are_recognised(exc: BaseException) -> None:
    assert is_network_failure(exc)


@pytest.mark.parametrize(
    "exc",
    [
        KubeError("writing Secret a/b failed: 422 Unprocessable Entity", status=422),
        KubeError("writing Secret a/b failed: 503 Service Unavailable", status=503, retryable=True),
        KubeError("forbidden", status=403),
        ValueError("a bug"),
        FileNotFoundError("no kubeconfig"),
    ],
)
def test_other_errors_are_not(exc: BaseException) -> None:
    assert not is_network_failure(exc)


def test_the_cause_counts() -> None:
    try:
        try:
            raise ConnectionResetError(104, "reset")
        except ConnectionResetError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert is_network_failure(outer)


def test_a_network_failure_with_a_traceback_becomes_debug_without_it() -> None:
    outages = OutageFilter(logging.DEBUG)
    entry = record(
        "opsync.sync.poller", logging.ERROR, "poll: syncing %s failed", "a/b", exc=caught(UNREACHABLE)
    )
    assert outages.filter(entry)
    assert (entry.levelno, entry.levelname, entry.exc_info, entry.exc_text) == (
        logging.DEBUG,
        "DEBUG",
        None,
        None,
    )


def test_demoted_records_are_dropped_above_debug() -> None:
    outages = OutageFilter(logging.INFO)
    assert not outages.filter(
        record("opsync.handlers.reporting", logging.WARNING, "could not post: %s", UNREACHABLE)
    )
    assert not outages.filter(
        record(
            "urllib3.connectionpool",
            logging.WARNING,
            "Retrying (%r) after connection broken by '%r': %s",
            "Retry(total=2)",
            "NewConnectionError",
            "/api",
        )
    )


def test_other_errors_keep_their_level_and_traceback() -> None:
    outages = OutageFilter(logging.INFO)
    forbidden = caught(KubeError("patching failed: 403 Forbidden", status=403))
    entry = record("opsync.sync.poller", logging.ERROR, "poll: syncing %s failed", "a/b", exc=forbidden)
    assert outages.filter(entry)
    assert entry.levelno == logging.ERROR and entry.exc_info is not None
    assert outages.filter(
        record("opsync.kube", logging.WARNING, "the Kubernetes API server is unreachable (%s)", "x")
    )


def test_kopf_retries_become_debug_and_report_the_outage(caplog: pytest.LogCaptureFixture) -> None:
    reachability = Reachability()
    outages = OutageFilter(logging.INFO, reachability)
    retry = (
        "Request attempt #2/9 failed; will retry: GET https://k/api/v1/secrets?watch=true -> "
        "ClientConnectorError(ConnectionKey(host='127.0.0.1', port=6443), "
        "ConnectionRefusedError(111, 'Connect call failed'))"
    )
    with caplog.at_level(logging.DEBUG, logger="opsync.kube"):
        assert not outages.filter(record("kopf._cogs.clients.watching", logging.ERROR, retry))
        assert not outages.filter(
            record("kopf._cogs.clients.watching", logging.ERROR, retry.replace("#2", "#3"))
        )
    assert reachability.unreachable
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [
        "the Kubernetes API server is unreachable (ClientConnectorError)"
    ]


def test_kopf_giving_up_keeps_its_error() -> None:
    outages = OutageFilter(logging.INFO, Reachability())
    escalating = "Request attempt #9/9 failed; escalating: GET https://k/api -> ClientConnectorError(...)"
    entry = record("kopf._cogs.clients.watching", logging.ERROR, escalating)
    assert outages.filter(entry) and entry.levelno == logging.ERROR


def test_kopf_retrying_a_server_error_is_debug_but_no_outage() -> None:
    reachability = Reachability()
    outages = OutageFilter(logging.INFO, reachability)
    retry = "Request attempt #1/9 failed; will retry: GET https://k/api -> APIServerError('503')"
    assert not outages.filter(record("kopf._cogs.clients.watching", logging.ERROR, retry))
    assert not reachability.unreachable


def test_one_warning_per_outage_and_one_info_after_it(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    reachability = Reachability(clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, logger="opsync.kube"):
        reachability.succeeded()  # nothing to say while it is up
        for _ in range(5):
            reachability.failed("ConnectionRefusedError: refused")
            now[0] += 4
        reachability.succeeded()
        reachability.succeeded()
        reachability.failed("TimeoutError")  # a second outage is a second warning
    assert [(r.levelname, r.getMessage().split(";")[0]) for r in caplog.records] == [
        ("WARNING", "the Kubernetes API server is unreachable (ConnectionRefusedError: refused)"),
        ("INFO", "the Kubernetes API server is reachable again after 20s"),
        ("WARNING", "the Kubernetes API server is unreachable (TimeoutError)"),
    ]


async def test_the_kubernetes_layer_reports_a_refused_connection(caplog: pytest.LogCaptureFixture) -> None:
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:1"  # nothing listens on port 1
    configuration.retries = 0
    reachability = Reachability()
    api = KubeApi(client.ApiClient(configuration), concurrency=1, reachability=reachability)
    try:
        with caplog.at_level(logging.WARNING, logger="opsync.kube"), pytest.raises(KubeError):
            await api.read_lease("default", "x")
    finally:
        api.close()
    assert reachability.unreachable
    (line,) = [r.getMessage() for r in caplog.records if r.name == "opsync.kube"]
    assert (
        line.startswith("the Kubernetes API server is unreachable (") and "could not be reached" not in line
    )


def test_configure_logging_installs_the_filter() -> None:
    from opsync.run import configure_logging

    root = logging.getLogger()
    saved = (
        root.handlers[:],
        root.level,
        {n: logging.getLogger(n).level for n in ("httpx", "httpcore", "urllib3", "kopf.objects")},
    )
    try:
        reachability = configure_logging("info")
        assert isinstance(reachability, Reachability)
        assert any(isinstance(f, OutageFilter) for h in root.handlers for f in h.filters)
        assert all(getattr(h, "stream", None) is sys.stderr for h in root.handlers)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)
        logging.captureWarnings(False)


def test_a_503_answer_keeps_its_level_without_a_traceback() -> None:
    """kopf's throttling line after an API server restart: the server answered 503 while it started."""

    class APIServerError(Exception):  # kopf's, as far as the filter looks: an HTTP status
        status = 503

    outages = OutageFilter(logging.INFO, Reachability())
    unavailable = caught(APIServerError("the server is currently unable to handle the request"))
    throttling = "Throttling for %s seconds due to an unexpected error: %r"
    entry = record("kopf.objects", logging.ERROR, throttling, 1, unavailable, exc=unavailable)
    assert outages.filter(entry)
    assert entry.levelno == logging.ERROR and entry.exc_info is None
    failed = caught(client.ApiException(status=503, reason="Service Unavailable"))
    entry = record("opsync.handlers.syncing", logging.ERROR, "failed", exc=failed)
    assert outages.filter(entry) and entry.exc_info is None
