"""Protocol edges of the local Connect server, over real HTTP and raw sockets.

* every answer is Connect's JSON error shape with ``1Password-Connect-Version``, whatever the
  request: a path with an encoded newline, a header with a NUL byte (sent by hand: httpx and
  aiohttp refuse to), a broken request line or body, an unknown ``Expect``;
* a malformed request is one log line, never a traceback, and never quotes the request;
* every 405 lists ``Allow``;
* boolean and integer query parameters are checked the same way everywhere.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from dataclasses import dataclass

import pytest
from yarl import URL

from opsync.tooling.connectserver import ConnectServer

K8S = "kubernetesvault00000000001"
DB = "dbcredentials0000000000001"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/v1/vaults", "GET"),
        ("DELETE", "/v1/vaults", "GET"),
        ("POST", "/v1/vaults/", "GET"),
        ("OPTIONS", f"/v1/vaults/{K8S}", "GET"),
        ("PUT", f"/v1/vaults/{K8S}/items", "GET, POST"),
        ("POST", f"/v1/vaults/{K8S}/items/{DB}", "GET, PUT, PATCH, DELETE"),
        ("DELETE", f"/v1/vaults/{K8S}/items/{DB}/files", "GET"),
        ("HEAD", "/heartbeat", "GET"),
        ("POST", "/metrics", "GET"),
        ("PATCH", "/v1/activity", "GET"),
    ],
)
async def test_every_405_lists_the_methods_the_path_accepts(server_api, method, path, allow):
    reply = await server_api.request(method, path)
    assert reply.status == 405
    assert reply.headers["Allow"] == allow
    assert reply.headers["1Password-Connect-Version"] == "1.8.1"
    if method != "HEAD":
        assert reply.json() == {"status": 405, "message": "Method Not Allowed"}


async def test_unknown_paths_are_404_without_allow(server_api):
    reply = await server_api.request("TRACE", "/v1/nowhere")
    assert (reply.status, reply.json()) == (404, {"status": 404, "message": "Not Found"})
    assert "Allow" not in reply.headers


FILES = f"/v1/vaults/{K8S}/items/{DB}/files"
CA = "cacrtfile00000000000000001"


@pytest.mark.parametrize("path", [FILES, f"{FILES}/{CA}"])
@pytest.mark.parametrize("name", ["inline_files", "inline_content"])
@pytest.mark.parametrize("value", ["", "11949999", "1", "yes", "on", "null", "tru", "true%20", "%EF%BC%91"])
async def test_boolean_query_parameters_accept_only_true_or_false(server_api, path, name, value):
    reply = await server_api.get(f"{path}?{name}={value}")
    assert reply.status == 400
    assert reply.json() == {"status": 400, "message": f"Invalid {name}: must be true or false"}


@pytest.mark.parametrize(
    ("query", "inline"),
    [
        ("inline_files=true", True),
        ("inline_files=TRUE", True),
        ("inline_content=True", True),
        ("inline_files=false&inline_content=true", True),
        ("inline_files=false", False),
        ("other=", False),
        ("", False),
    ],
)
async def test_boolean_query_parameters_true_false_and_empty(server_api, query, inline):
    reply = await server_api.get(f"{FILES}/{CA}?{query}")
    assert reply.status == 200
    assert ("content" in reply.json()) is inline


@pytest.mark.parametrize("name", ["limit", "offset"])
@pytest.mark.parametrize(
    "value",
    [
        "",
        "null",
        "-1",
        "+5",
        "1.5",
        "1e3",
        "0x10",
        "%205",
        "5%20",
        "1_000",
        "%EF%BC%95",
        "9223372036854775808",
        "9" * 5000,
    ],
)
async def test_integer_query_parameters_accept_only_digits(server_api, name, value):
    reply = await server_api.get(f"/v1/activity?{name}={value}")
    assert reply.status == 400
    assert reply.json() == {
        "status": 400,
        "message": f"Invalid {name}: must be an integer from 0 to 9223372036854775807",
    }


async def test_integer_query_parameters_in_range(server_api):
    for query in ("limit=0", "offset=9223372036854775807", "limit=007", "other="):
        reply = await server_api.get(f"/v1/activity?{query}")
        assert reply.status == 200, query


# -- JSON for everything ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


async def exchange(server: ConnectServer, request: bytes) -> RawAnswer:
    """Send ``request`` byte for byte; the answer up to the server closing the connection."""
    url = URL(server.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 100 "):
        head, _, body = body.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(status=int(status_line.split()[1]), headers=headers, body=body)


def assert_connect_error(answer: RawAnswer, status: int, message: str) -> None:
    assert answer.status == status
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["1password-connect-version"] == "1.8.1"
    assert answer.json() == {"status": status, "message": message}


def server_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.INFO]


async def test_an_encoded_newline_in_the_path_is_routed_like_any_path(server_api):
    # aiohttp's router answered these with a text/plain "404: Not Found".
    reply = await server_api.get("/v1/vaults/abc%0A")
    assert (reply.status, reply.json()) == (400, {"status": 400, "message": "Invalid Vault UUID"})
    assert reply.headers["1Password-Connect-Version"] == "1.8.1"
    items = await server_api.get(f"/v1/vaults/{K8S}/items/%0A{DB}")
    assert (items.status, items.json()["message"]) == (400, "Invalid Item UUID")
    unknown = await server_api.get("/v1/nowhere%0A/x%0D%0A")
    assert (unknown.status, unknown.json()) == (404, {"status": 404, "message": "Not Found"})
    assert unknown.headers["Content-Type"].startswith("application/json")
    unauthenticated = await server_api.get("/v1/vaults/abc%0A", token=None)
    assert (unauthenticated.status, unauthenticated.json()["status"]) == (401, 401)


async def test_a_nul_byte_in_a_header_is_a_json_400_and_one_log_line(connect_server, caplog):
    caplog.set_level(logging.DEBUG)
    canary = "canary-token-4d2b"
    request = (
        b"GET /v1/vaults HTTP/1.1\r\nHost: connect\r\n"
        + f"Authorization: Bearer {canary}".encode()
        + b"\x00tail\r\nConnection: close\r\n\r\n"
    )
    answer = await exchange(connect_server, request)
    assert_connect_error(answer, 400, "Bad Request: Invalid header value char")
    assert canary not in answer.body.decode()
    records = server_records(caplog)
    assert len(records) == 1, [record.getMessage() for record in records]
    assert records[0].levelno == logging.WARNING
    assert records[0].getMessage() == (
        "rejected a malformed request from 127.0.0.1: Bad Request: Invalid header value char"
    )
    assert not any(record.exc_info for record in caplog.records)
    assert canary not in caplog.text
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (b"GARBAGE\r\n\r\n", "Invalid method"),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),
            "Received HTTPS traffic on an HTTP port",
        ),
        (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", "Invalid request target"),
        (b"GET /v1/\x1bvaults HTTP/1.1\r\nHost: x\r\n\r\n", "Invalid request target"),
        (b"GET /v1/vaults HTTP/9.9\r\nHost: x\r\n\r\n", "Invalid request line"),
        (b"GET /heartbeat HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n", "Invalid header token"),
        (b"GET /heartbeat HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n", "Line too long"),
        (b"GET /heartbeat HTTP/1.1\r\n\r\n", "Missing 'Host' header in request."),
        (
            b"POST /v1/vaults HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            "Duplicate Content-Length",
        ),
        (
            b"POST /v1/vaults/kubernetesvault00000000001/items HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
            "Invalid character in chunk size",
        ),
    ],
    ids=[
        "garbage-request-line",
        "tls-handshake",
        "asterisk-target",
        "control-character-in-path",
        "http-9.9",
        "header-without-colon",
        "header-line-too-long",
        "no-host",
        "duplicate-content-length",
        "bad-chunk-size",
    ],
)
async def test_requests_the_http_parser_refuses_get_json_and_one_log_line(
    connect_server, caplog, request_bytes, reason
):
    caplog.set_level(logging.DEBUG)
    answer = await exchange(connect_server, request_bytes)
    assert_connect_error(answer, 400, f"Bad Request: {reason}")
    records = server_records(caplog)
    assert [record.getMessage() for record in records] == [
        f"rejected a malformed request from 127.0.0.1: Bad Request: {reason}"
    ]
    assert not any(record.exc_info for record in caplog.records)
    assert not any(record.name.startswith("aiohttp") for record in caplog.records)


async def test_a_body_the_parser_refuses_is_a_json_400_and_one_log_line(
    connect_server, connect_token, caplog
):
    caplog.set_level(logging.DEBUG)
    request = (
        f"POST /v1/vaults/{K8S}/items HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {connect_token}\r\n"
        "Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n"
        "Connection: close\r\n\r\nabcde"
    ).encode()
    answer = await exchange(connect_server, request)
    assert_connect_error(answer, 400, "Invalid request body: Invalid body encoding")
    await asyncio.sleep(0.1)  # aiohttp drains the rest of the body after the answer
    records = server_records(caplog)
    assert [record.getMessage().split(" (")[0] for record in records] == [
        f"POST /v1/vaults/{K8S}/items -> 400"
    ]
    assert not any(record.exc_info for record in caplog.records)
    good = gzip.compress(json.dumps({"title": "zipped", "category": "LOGIN"}).encode())
    request = (
        f"POST /v1/vaults/{K8S}/items HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {connect_token}\r\n"
        f"Content-Encoding: gzip\r\nContent-Length: {len(good)}\r\nConnection: close\r\n\r\n"
    ).encode()
    created = await exchange(connect_server, request + good)
    assert created.status == 200 and created.json()["title"] == "zipped"


async def test_a_client_leaving_in_the_middle_of_a_body_is_one_log_line(
    connect_server, connect_token, caplog
):
    caplog.set_level(logging.DEBUG)
    url = URL(connect_server.url)
    _reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        (
            f"POST /v1/vaults/{K8S}/items HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {connect_token}\r\n"
            'Content-Length: 100\r\n\r\n{"title":'
        ).encode()
    )
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.close()
    for _ in range(100):
        if server_records(caplog):
            break
        await asyncio.sleep(0.02)
    records = server_records(caplog)
    assert [record.getMessage().split(" (")[0] for record in records] == [
        f"POST /v1/vaults/{K8S}/items -> 400"
    ]
    assert not any(record.exc_info for record in caplog.records)


async def test_expect_100_continue_works_and_other_expectations_are_a_json_417(connect_server, connect_token):
    body = json.dumps({"title": "after continue", "category": "LOGIN"}).encode()
    head = (
        f"POST /v1/vaults/{K8S}/items HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {connect_token}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    ).encode()
    created = await exchange(connect_server, head + b"Expect: 100-continue\r\n\r\n" + body)
    assert created.status == 200 and created.json()["title"] == "after continue"
    refused = await exchange(connect_server, head + b"Expect: teapot\r\n\r\n" + body)
    assert_connect_error(refused, 417, "Expectation Failed: only 100-continue is supported")


async def test_a_body_over_the_size_limit_is_a_json_413(connect_server, connect_token):
    size = 8 * 1024 * 1024 + 1
    request = (
        f"POST /v1/vaults/{K8S}/items HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {connect_token}\r\n"
        f"Content-Length: {size}\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = await exchange(connect_server, request + b" " * size)
    assert_connect_error(answer, 413, "Request Entity Too Large")


async def test_an_absolute_form_target_is_served_like_its_path(connect_server):
    answer = await exchange(
        connect_server,
        b"GET http://connect.example/heartbeat HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert (answer.status, answer.body) == (200, b".")
