"""Canary: a unique field value and file content never show in reprs, client errors or DEBUG logs."""

from __future__ import annotations

import base64
import logging
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from opsync.connect.client import ConnectClient
from opsync.connect.config import ConnectConfig
from opsync.connect.models import Field, FieldType, FullItem, ItemCategory, PatchOperation
from opsync.core.errors import BadRequest, ConnectError, ConnectUnavailable, NotFound, ServerError
from opsync.tooling.connectserver import ConnectServer
from tests.connect.ids import oid

CANARY = f"canary-value-{uuid.uuid4().hex}"
NEW_CANARY = f"canary-new-{uuid.uuid4().hex}"
FILE_CANARY = (
    f"-----BEGIN PRIVATE KEY-----\ncanary-file-{uuid.uuid4().hex}\n-----END PRIVATE KEY-----\n".encode()
)
FORBIDDEN = (
    CANARY,
    NEW_CANARY,
    FILE_CANARY.decode(),
    FILE_CANARY.decode().split("\n")[1],
    base64.b64encode(FILE_CANARY).decode(),
)


VAULT = oid("canaryvault")
ITEM = oid("canaryitem")
FILE = oid("canaryfile")
MISSING = oid("missing")

DATA = {
    "vaults": [
        {
            "id": VAULT,
            "name": "Canary",
            "items": [
                {
                    "id": ITEM,
                    "title": "canary item",
                    "category": "LOGIN",
                    "fields": [
                        {"id": "username", "purpose": "USERNAME", "value": "someone"},
                        {"id": "password", "purpose": "PASSWORD", "type": "CONCEALED", "value": CANARY},
                    ],
                    "files": [{"id": FILE, "name": "key.pem", "content": FILE_CANARY}],
                }
            ],
        }
    ]
}


def assert_clean(text: str) -> None:
    for secret in FORBIDDEN:
        assert secret not in text


def assert_clean_error(error: BaseException) -> None:
    assert_clean(str(error))
    assert_clean(repr(error))
    assert_clean("".join(traceback.format_exception(error)))
    assert_clean(repr(error.__dict__))


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything at DEBUG, httpx and httpcore included."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "opsync", "opsync.connect", "opsync.tooling.connectserver"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog
    assert_clean(caplog.text)
    for record in caplog.records:
        assert_clean(record.getMessage())
        assert_clean(repr(record.args))


@pytest.fixture
async def server(connect_server_factory: Callable[..., Any]) -> ConnectServer:
    result: ConnectServer = await connect_server_factory(DATA)
    return result


@pytest.fixture
async def client(server: ConnectServer, debug_logs: pytest.LogCaptureFixture) -> AsyncIterator[ConnectClient]:
    config = ConnectConfig(
        host=server.url, token=server.issue_token([VAULT]), backoff_initial=0.001, backoff_max=0.002
    )
    async with ConnectClient(config) as connect:
        yield connect


async def test_reads_keep_values_out_of_reprs_and_logs(
    client: ConnectClient, debug_logs: pytest.LogCaptureFixture
) -> None:
    item = await client.get_item(VAULT, ITEM)
    full, contents = await client.get_item_with_files(VAULT, ITEM)
    inline = await client.list_files(VAULT, ITEM, inline_files=True)
    one = await client.get_file(VAULT, ITEM, FILE, inline_files=True)
    content = await client.get_file_content(VAULT, ITEM, FILE)
    # The values are there...
    assert item.fields is not None
    assert {f.id: f.value for f in item.fields}["password"] == SecretStr(CANARY)
    assert contents[FILE].get_secret_value() == FILE_CANARY
    assert inline[0].content is not None and inline[0].content.get_secret_value() == FILE_CANARY
    assert content.get_secret_value() == FILE_CANARY
    # ...and never shown.
    for shown in (item, full, contents, inline, one, content, client):
        assert_clean(repr(shown))
        assert_clean(str(shown))
    assert_clean(item.model_dump_json())
    assert_clean(repr(item.model_dump()))
    # Logging was really on: the client's own DEBUG lines and httpx's request lines were captured.
    assert any(r.name == "opsync.connect.client" and r.levelno == logging.DEBUG for r in debug_logs.records)
    assert any(r.name == "httpx" for r in debug_logs.records)


async def test_writes_keep_values_out_of_reprs_and_logs(client: ConnectClient) -> None:
    created = await client.create_item(
        VAULT,
        FullItem(
            title="made with a canary",
            category=ItemCategory.PASSWORD,
            fields=[Field(id="password", type=FieldType.CONCEALED, value=SecretStr(NEW_CANARY))],
        ),
    )
    assert created.id is not None
    assert_clean(repr(created))
    item = await client.get_item(VAULT, ITEM)
    replaced = await client.replace_item(VAULT, ITEM, item)
    patched = await client.patch_item(
        VAULT, ITEM, [PatchOperation.replace("/fields/password/value", NEW_CANARY)]
    )
    for shown in (replaced, patched):
        assert_clean(repr(shown))
    stored = await client.get_item(VAULT, ITEM)
    assert stored.fields is not None
    assert {f.id: f.value for f in stored.fields}["password"] == SecretStr(NEW_CANARY)


async def test_errors_with_values_in_play_never_carry_them(
    client: ConnectClient, server: ConnectServer
) -> None:
    errors: list[ConnectError] = []
    secret_field = Field(id="password", type=FieldType.CONCEALED, value=SecretStr(CANARY))
    bad_date = Field(id="expiry", type=FieldType.DATE, value=SecretStr(CANARY))
    attempts: list[tuple[type[ConnectError], Callable[[], Any]]] = [
        (
            BadRequest,
            lambda: client.create_item(
                VAULT, FullItem(title="x", category="DOCUMENT", fields=[secret_field])
            ),
        ),
        (
            BadRequest,
            lambda: client.create_item(VAULT, FullItem(title="x", category="LOGIN", fields=[bad_date])),
        ),
        (
            BadRequest,
            lambda: client.replace_item(
                VAULT, ITEM, FullItem(title="x", category="LOGIN", fields=[bad_date])
            ),
        ),
        (
            BadRequest,
            lambda: client.patch_item(
                VAULT,
                ITEM,
                [PatchOperation.add("/fields", bad_date), PatchOperation.replace("/title", CANARY)],
            ),
        ),
        (
            NotFound,
            lambda: client.patch_item(
                VAULT, MISSING, [PatchOperation.replace("/fields/password/value", CANARY)]
            ),
        ),
        (
            NotFound,
            lambda: client.replace_item(VAULT, MISSING, FullItem(category="LOGIN", fields=[secret_field])),
        ),
    ]
    for expected, attempt in attempts:
        with pytest.raises(expected) as caught:
            await attempt()
        errors.append(caught.value)
    server.faults.error_rate = 1.0
    with pytest.raises(ServerError) as server_error:
        await client.replace_item(VAULT, ITEM, FullItem(category="LOGIN", fields=[secret_field]))
    errors.append(server_error.value)
    server.faults.error_rate = 0.0
    server.faults.drop_rate = 1.0
    with pytest.raises(ConnectUnavailable) as unavailable:
        await client.create_item(VAULT, FullItem(category="LOGIN", fields=[secret_field]))
    errors.append(unavailable.value)
    server.faults.drop_rate = 0.0
    for error in errors:
        assert_clean_error(error)
        assert error.endpoint is not None and "{vault}" in error.endpoint


async def test_server_messages_echoing_a_value_are_scrubbed(debug_logs: pytest.LogCaptureFixture) -> None:
    """A server (or proxy) that echoes the request body in its error message: the value is redacted."""

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400, json={"status": 400, "message": f"cannot accept {request.content.decode()}"}
        )

    config = ConnectConfig(host="http://connect.invalid", token="t")
    async with ConnectClient(config, transport=httpx.MockTransport(echo)) as client:
        secret_field = Field(id="password", value=SecretStr(CANARY))
        file_like = Field(id="key", value=SecretStr(FILE_CANARY.decode()))
        calls: list[Callable[[], Any]] = [
            lambda: client.create_item(VAULT, FullItem(category="LOGIN", fields=[secret_field, file_like])),
            lambda: client.replace_item(VAULT, ITEM, FullItem(category="LOGIN", fields=[secret_field])),
            lambda: client.patch_item(
                VAULT, ITEM, [PatchOperation.replace("/fields/password/value", CANARY)]
            ),
            lambda: client.patch_item(VAULT, ITEM, [PatchOperation.add("/fields", secret_field)]),
        ]
        for call in calls:
            with pytest.raises(BadRequest) as caught:
                await call()
            assert "[redacted]" in str(caught.value)
            assert_clean_error(caught.value)


async def test_unparseable_response_with_a_value_in_it(debug_logs: pytest.LogCaptureFixture) -> None:
    body = {
        "id": ITEM,
        "vault": {"id": VAULT},
        "fields": [{"id": "password", "value": CANARY, "entropy": CANARY}],
    }

    def broken(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body)

    config = ConnectConfig(host="http://connect.invalid", token="t")
    async with ConnectClient(config, transport=httpx.MockTransport(broken)) as client:
        with pytest.raises(ConnectError) as caught:
            await client.get_item(VAULT, ITEM)
    assert type(caught.value) is ConnectError
    assert "fields.0.entropy" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert_clean_error(caught.value)
