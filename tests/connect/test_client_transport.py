"""Client policy that a healthy server cannot show: odd statuses and bodies, Retry-After, connection
failures before sending, headers, URL encoding, concurrency limits. Uses httpx.MockTransport."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from opsync import __version__
from opsync.connect.client import ConnectClient, scim_eq
from opsync.connect.config import ConnectConfig
from opsync.connect.models import Field, FullItem
from opsync.core.errors import (
    BadRequest,
    ConnectError,
    ConnectRequestError,
    ConnectUnavailable,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Unauthorized,
)
from opsync.run import configure_logging

VAULT = "v" * 26
ITEM = "i" * 26
Handler = Callable[[httpx.Request], Awaitable[httpx.Response] | httpx.Response]


def make_client(handler: Any, **settings: Any) -> ConnectClient:
    options = {
        "backoff_initial": 0.001,
        "backoff_max": 0.002,
        "max_retries": 2,
        "forbidden_retries": 1,
    } | settings
    config = ConnectConfig(host="http://connect.test:8080", token="secret-token", **options)
    return ConnectClient(config, transport=httpx.MockTransport(handler))


class Recorder:
    """A handler answering from a script (one entry per request; the last one repeats)."""

    def __init__(self, *script: httpx.Response | Exception) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.script[min(len(self.requests), len(self.script)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer


def error(status: int, message: str = "nope", **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"status": status, "message": message}, headers=headers)


# -- statuses --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, BadRequest),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (413, PayloadTooLarge),
        (429, RateLimited),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
        (405, ConnectRequestError),
        (409, ConnectRequestError),
        (418, ConnectRequestError),
        (302, ConnectRequestError),
    ],
)
async def test_each_status_maps_to_its_error(status: int, expected: type[ConnectError]) -> None:
    recorder = Recorder(error(status, f"server says {status}"))
    async with make_client(recorder, max_retries=0) as client:
        with pytest.raises(expected) as caught:
            await client.get_item(VAULT, ITEM)
    assert type(caught.value) is expected
    assert caught.value.status == status
    assert caught.value.endpoint == "GET /v1/vaults/{vault}/items/{item}"
    assert f"server says {status}" in str(caught.value)
    assert VAULT in str(caught.value) and ITEM in str(caught.value)


@pytest.mark.parametrize("status", [400, 401, 404, 405, 409, 413])
async def test_request_errors_are_never_retried(status: int) -> None:
    recorder = Recorder(error(status), httpx.Response(200, json=[]))
    async with make_client(recorder, max_retries=5, forbidden_retries=5) as client:
        with pytest.raises(ConnectRequestError):
            await client.list_vaults()
    assert len(recorder.requests) == 1


@pytest.mark.parametrize("status", [403, 429, 500, 503])
async def test_transient_statuses_are_retried(status: int) -> None:
    recorder = Recorder(error(status), httpx.Response(200, json=[]))
    async with make_client(recorder) as client:
        assert await client.list_vaults() == []
    assert len(recorder.requests) == 2


async def test_message_falls_back_to_the_reason_phrase_and_is_cut_short() -> None:
    recorder = Recorder(httpx.Response(404, text="404 page not found"))
    async with make_client(recorder) as client:
        with pytest.raises(NotFound, match=r"Not Found$"):
            await client.get_vault(VAULT)
    huge = "x " * 10_000
    recorder = Recorder(error(400, huge))
    async with make_client(recorder) as client:
        with pytest.raises(BadRequest) as caught:
            await client.get_vault(VAULT)
    assert len(str(caught.value)) <= 260
    recorder = Recorder(httpx.Response(400, json=["not", "an", "object"]))
    async with make_client(recorder) as client:
        with pytest.raises(BadRequest, match=r"Bad Request$"):
            await client.get_vault(VAULT)


async def test_write_access_401_is_forbidden_and_not_retried() -> None:
    recorder = Recorder(error(401, "Unauthorized Request, token does not have write access to the Vault"))
    async with make_client(recorder, forbidden_retries=3) as client:
        with pytest.raises(Forbidden) as caught:
            await client.delete_item(VAULT, ITEM)
    assert caught.value.status == 401
    assert len(recorder.requests) == 1


# -- Retry-After -----------------------------------------------------------------------------------


async def test_retry_after_is_waited(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="opsync.connect.client")
    recorder = Recorder(error(429, **{"Retry-After": "0.2"}), httpx.Response(200, json=[]))
    async with make_client(recorder) as client:
        await client.list_vaults()
    delays = [float(m) for m in re.findall(r"retry 1 of 2 in ([\d.]+)s", caplog.text)]
    assert delays == [0.2]


async def test_retry_after_beyond_the_limit_ends_retries_at_once() -> None:
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    for header in ("120", later):
        recorder = Recorder(error(429, **{"Retry-After": header}), httpx.Response(200, json=[]))
        async with make_client(recorder, retry_after_max=30) as client:
            with pytest.raises(RateLimited) as caught:
                await client.list_vaults()
        assert caught.value.retry_after is not None and caught.value.retry_after > 100
        assert len(recorder.requests) == 1


@pytest.mark.parametrize("header", ["soon", "", "-5"])
async def test_odd_retry_after_values(header: str) -> None:
    recorder = Recorder(error(429, **{"Retry-After": header}))
    async with make_client(recorder, max_retries=0) as client:
        with pytest.raises(RateLimited) as caught:
            await client.list_vaults()
    assert caught.value.retry_after in (None, 0.0)


# -- connection failures ---------------------------------------------------------------------------


async def test_create_is_retried_when_the_connection_was_never_made() -> None:
    created = {"id": ITEM, "vault": {"id": VAULT}, "category": "LOGIN", "version": 1}
    recorder = Recorder(
        httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.Response(200, json=created)
    )
    async with make_client(recorder) as client:
        item = await client.create_item(VAULT, FullItem(category="LOGIN"))
    assert item.id == ITEM
    assert [r.method for r in recorder.requests] == ["POST"] * 3


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("slow"),
        httpx.ReadError("reset"),
        httpx.RemoteProtocolError("closed"),
        httpx.WriteError("x"),
    ],
)
async def test_create_is_not_retried_once_the_request_may_have_arrived(failure: Exception) -> None:
    recorder = Recorder(failure, httpx.Response(200, json={}))
    async with make_client(recorder, max_retries=5) as client:
        with pytest.raises(ConnectUnavailable) as caught:
            await client.create_item(VAULT, FullItem(category="LOGIN"))
    assert len(recorder.requests) == 1
    assert type(failure).__name__ in str(caught.value)
    assert caught.value.__cause__ is failure


@pytest.mark.parametrize(
    "failure", [httpx.ReadTimeout("slow"), httpx.ReadError("reset"), httpx.ConnectError("refused")]
)
async def test_idempotent_requests_are_retried_after_network_errors(failure: Exception) -> None:
    recorder = Recorder(failure, failure, httpx.Response(204))
    async with make_client(recorder) as client:
        await client.delete_item(VAULT, ITEM)
    assert len(recorder.requests) == 3


async def test_create_is_not_retried_after_a_5xx() -> None:
    recorder = Recorder(error(503), httpx.Response(200, json={}))
    async with make_client(recorder, max_retries=5) as client:
        with pytest.raises(ServerError):
            await client.create_item(VAULT, FullItem(category="LOGIN"))
    assert len(recorder.requests) == 1


# -- what goes on the wire -------------------------------------------------------------------------


async def test_headers() -> None:
    item = {"id": ITEM, "vault": {"id": VAULT}, "category": "LOGIN"}
    recorder = Recorder(httpx.Response(200, json=[]), httpx.Response(200, json=item))
    async with make_client(recorder) as client:
        await client.list_vaults()
        await client.create_item(VAULT, FullItem(title="t", category="LOGIN"))
    for request in recorder.requests:
        assert request.headers["Authorization"] == "Bearer secret-token"
        assert request.headers["User-Agent"] == f"opsync/{__version__}"
        assert request.headers["Accept"] == "application/json"
    assert recorder.requests[1].headers["Content-Type"] == "application/json"
    assert "secret-token" not in repr(recorder.requests[0].headers)


async def test_urls_and_query_encoding() -> None:
    recorder = Recorder(httpx.Response(200, json=[]))
    async with make_client(recorder) as client:
        await client.find_items(VAULT, 'a "quoted" \\ title ü')
        await client.find_vaults("Ops")
        await client.list_files(VAULT, ITEM, inline_files=True)
        await client.list_activity(limit=5, offset=10)
        await client.list_items("../../evil?x=1", filter="")
    urls = [urlsplit(str(r.url)) for r in recorder.requests]
    assert urls[0].path == f"/v1/vaults/{VAULT}/items"
    assert parse_qs(urls[0].query) == {"filter": [scim_eq("title", 'a "quoted" \\ title ü')]}
    assert scim_eq("title", 'a "quoted" \\ title ü') == 'title eq "a \\"quoted\\" \\\\ title ü"'
    assert parse_qs(urls[1].query) == {"filter": ['name eq "Ops"']}
    assert parse_qs(urls[2].query) == {"inline_files": ["true"]}
    assert parse_qs(urls[3].query) == {"limit": ["5"], "offset": ["10"]}
    assert recorder.requests[4].url.raw_path == b"/v1/vaults/..%2F..%2Fevil%3Fx%3D1/items"


async def test_health_endpoints_live_at_the_root() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path.endswith("/heartbeat"):
            return httpx.Response(200, text=".")
        if request.url.path.endswith("/metrics"):
            return httpx.Response(200, text="# TYPE x counter\nx 1\n")
        if request.url.path.endswith("/health"):
            return httpx.Response(200, json={"name": "n", "version": "1.2.3", "future": True})
        return httpx.Response(200, json=[])

    config = ConnectConfig(host="https://proxy.test/connect/v1", token="t")
    async with ConnectClient(config, transport=httpx.MockTransport(handler)) as client:
        await client.heartbeat()
        assert (await client.health()).version == "1.2.3"
        assert await client.metrics() == "# TYPE x counter\nx 1\n"
        await client.list_vaults()
    assert paths == ["/connect/heartbeat", "/connect/health", "/connect/metrics", "/connect/v1/vaults"]


async def test_activity_without_content_range() -> None:
    recorder = Recorder(httpx.Response(200, json=[{"requestId": "r", "action": "READ", "newKey": 1}]))
    async with make_client(recorder) as client:
        page = await client.list_activity()
    assert page.range is None
    assert page.requests[0].action == "READ"


async def test_replace_sends_path_ids_in_the_body() -> None:
    item = {"id": ITEM, "vault": {"id": VAULT}, "category": "LOGIN"}
    recorder = Recorder(httpx.Response(200, json=item))
    async with make_client(recorder) as client:
        await client.replace_item(
            VAULT, ITEM, FullItem(id="x" * 26, category="LOGIN", fields=[Field(id="f", value=SecretStr("s"))])
        )
        await client.create_item(VAULT, FullItem(category="LOGIN"))
    put = json.loads(recorder.requests[0].content)
    assert put["id"] == ITEM and put["vault"] == {"id": VAULT}
    assert put["fields"] == [{"id": "f", "type": "STRING", "value": "s"}]
    post = json.loads(recorder.requests[1].content)
    assert post["vault"] == {"id": VAULT} and "id" not in post


# -- limits ----------------------------------------------------------------------------------------


class Gauge:
    """Counts requests in flight; each one waits a little so they overlap."""

    def __init__(self, respond: Callable[[httpx.Request], httpx.Response]) -> None:
        self.respond = respond
        self.current = 0
        self.peak = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.current += 1
        self.peak = max(self.peak, self.current)
        try:
            await asyncio.sleep(0.01)
            return self.respond(request)
        finally:
            self.current -= 1


async def test_requests_in_flight_are_limited() -> None:
    gauge = Gauge(lambda _r: httpx.Response(200, json=[]))
    async with make_client(gauge, max_concurrency=3, max_connections=3) as client:
        await asyncio.gather(*(client.list_vaults() for _ in range(12)))
    assert 1 <= gauge.peak <= 3


def item_with_files(count: int) -> dict[str, Any]:
    files = [{"id": f"file{n}".ljust(26, "0"), "name": f"f{n}"} for n in range(count)]
    return {"id": ITEM, "vault": {"id": VAULT}, "category": "LOGIN", "files": files}


async def test_file_downloads_are_limited_and_keyed_by_id() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/content"):
            return httpx.Response(200, content=request.url.path.split("/")[-2].encode())
        return httpx.Response(200, json=item_with_files(7))

    gauge = Gauge(respond)
    async with make_client(gauge, file_concurrency=2) as client:
        item, contents = await client.get_item_with_files(VAULT, ITEM)
    assert gauge.peak <= 2
    assert item.files is not None
    assert {k: v.get_secret_value() for k, v in contents.items()} == {
        f.id: f.id.encode() for f in item.files if f.id
    }


async def test_file_download_failure_is_raised_as_itself() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(f"/files/{'file3'.ljust(26, '0')}/content"):
            return error(404, "file not found")
        if request.url.path.endswith("/content"):
            return httpx.Response(200, content=b"x")
        return httpx.Response(200, json=item_with_files(5))

    async with make_client(Gauge(respond)) as client:
        with pytest.raises(NotFound, match="file not found") as caught:
            await client.get_item_with_files(VAULT, ITEM)
    assert caught.value.endpoint == "GET /v1/vaults/{vault}/items/{item}/files/{file}/content"


async def test_a_file_without_id_is_an_error() -> None:
    recorder = Recorder(httpx.Response(200, json={"id": ITEM, "category": "LOGIN", "files": [{"name": "x"}]}))
    async with make_client(recorder) as client:
        with pytest.raises(ConnectError, match="file without an id"):
            await client.get_item_with_files(VAULT, ITEM)


@pytest.mark.parametrize("body", [b"not json", b'{"id": 5}', b"[1, 2]", b""])
async def test_unexpected_bodies_are_connect_errors(body: bytes) -> None:
    recorder = Recorder(httpx.Response(200, content=body))
    async with make_client(recorder) as client:
        with pytest.raises(ConnectError, match="unexpected response body") as caught:
            await client.get_vault(VAULT)
    assert not caught.value.retryable
    assert len(recorder.requests) == 1


# -- logging ---------------------------------------------------------------------------------------


@pytest.fixture
def http_loggers() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in ("httpx", "httpcore")]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.mark.usefixtures("http_loggers")
def test_a_client_leaves_logger_levels_alone() -> None:
    """Logging is the process's to configure (``opsync run`` quiets the HTTP libraries)."""
    logging.getLogger("httpx").setLevel(logging.NOTSET)
    logging.getLogger("httpcore").setLevel(logging.DEBUG)
    make_client(Recorder(httpx.Response(200)))
    assert logging.getLogger("httpx").level == logging.NOTSET
    assert logging.getLogger("httpcore").level == logging.DEBUG


@pytest.mark.usefixtures("http_loggers")
@pytest.mark.parametrize(("level", "expected"), [("info", logging.WARNING), ("debug", logging.NOTSET)])
def test_opsync_run_quiets_the_http_loggers_unless_at_debug(level: str, expected: int) -> None:
    root = logging.getLogger()
    handlers, root_level = list(root.handlers), root.level
    logging.getLogger("httpx").setLevel(logging.NOTSET)
    try:
        configure_logging(level)
        assert logging.getLogger("httpx").level == expected
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = handlers
        root.setLevel(root_level)


def test_tls_settings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="opsync.connect.client")
    make_client(Recorder(httpx.Response(200)), tls_verify=False)
    assert "verification of 1Password Connect is turned off" in caplog.text
