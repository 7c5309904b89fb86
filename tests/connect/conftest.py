"""Fixtures for everything that talks to 1Password Connect: a real local Connect server on loopback.

* ``connect_server_factory``: ``await connect_server_factory(data, faults=..., options=...)`` starts
  a :class:`ConnectServer` for a data-file dict (or ``path=`` an existing data file) and stops it at
  teardown.
* ``connect_server``: one started with :func:`standard_data` (two vaults, duplicate titles across
  and within vaults, sections, URLs, files, duplicate labels, an empty value, a title with spaces,
  quotes and Unicode, a 26-character title, an OTP field).
* ``connect_token``: read+write on every vault of ``connect_server``.
* ``raw_http``: ``raw_http(server, token)`` → a small aiohttp helper sending requests exactly as
  written (``+`` and ``%20`` untouched); ``server_api`` is one for ``connect_server`` + ``connect_token``.

The ids of the standard data are fixed (constants below) so tests can address items directly.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy
from yarl import URL

from opsync.tooling.connectserver import ConnectServer, FaultConfig, ServerOptions

KUBERNETES_VAULT_ID = "kubernetesvault00000000001"
PLATFORM_VAULT_ID = "platformvault0000000000001"
DB_ITEM_ID = "dbcredentials0000000000001"
UNICODE_ITEM_ID = "unicodetitle00000000000001"
SHARED_K8S_ITEM_ID = "sharedtitlek8s000000000001"
SHARED_PLATFORM_ITEM_ID = "sharedtitleplatform0000001"
LONG_TITLE_ITEM_ID = "longtitle00000000000000001"
API_TOKEN_ITEM_ID = "apitoken000000000000000001"
TWIN_ONE_ITEM_ID = "twinone0000000000000000001"
TWIN_TWO_ITEM_ID = "twintwo0000000000000000001"
CA_FILE_ID = "cacrtfile00000000000000001"
BLOB_FILE_ID = "blobbinfile000000000000001"

UNICODE_TITLE = 'Say "hi" to Zoë — 東京 🔑'
LONG_TITLE = "test26charlongitemtitle123"
DB_PASSWORD = "canary-db-password-7f3a"
CA_CERT = b"-----BEGIN CERTIFICATE-----\nMIIBfakefakefake\n-----END CERTIFICATE-----\n"
BLOB = bytes(range(256))


def standard_data() -> dict[str, Any]:
    """The standard data set (a fresh dict each call)."""
    return {
        "vaults": [
            {
                "id": KUBERNETES_VAULT_ID,
                "name": "Kubernetes",
                "description": "Secrets synced into the cluster",
                "createdAt": "2024-01-02T03:04:05Z",
                "items": [
                    {
                        "id": DB_ITEM_ID,
                        "title": "db-credentials",
                        "category": "LOGIN",
                        "tags": ["k8s", "prod"],
                        "urls": [
                            {"href": "https://db.example.internal", "label": "website", "primary": True},
                            {"href": "https://admin.example.internal", "label": "admin console"},
                        ],
                        "sections": [
                            {"id": "Section_connection", "label": "Connection"},
                            {"id": "Section_replica", "label": "Replica"},
                        ],
                        "fields": [
                            {
                                "id": "username",
                                "type": "STRING",
                                "purpose": "USERNAME",
                                "label": "username",
                                "value": "app",
                            },
                            {
                                "id": "password",
                                "type": "CONCEALED",
                                "purpose": "PASSWORD",
                                "label": "password",
                                "value": DB_PASSWORD,
                            },
                            {"id": "notesPlain", "type": "STRING", "purpose": "NOTES", "label": "notesPlain"},
                            {
                                "id": "host",
                                "type": "STRING",
                                "label": "host",
                                "value": "db.example.internal",
                                "section": {"id": "Section_connection"},
                            },
                            {
                                "id": "port",
                                "type": "STRING",
                                "label": "port",
                                "value": "5432",
                                "section": {"id": "Section_connection"},
                            },
                            {
                                "id": "replicapassword",
                                "type": "CONCEALED",
                                "label": "password",
                                "value": "canary-replica-password-91c2",
                                "section": {"id": "Section_replica"},
                            },
                            {
                                "id": "comment",
                                "type": "STRING",
                                "label": "comment",
                                "value": "",
                                "section": {"id": "Section_replica"},
                            },
                        ],
                        "files": [
                            {
                                "id": CA_FILE_ID,
                                "name": "ca.crt",
                                "content": CA_CERT,
                                "section": {"id": "Section_connection"},
                            },
                            {"id": BLOB_FILE_ID, "name": "blob.bin", "content": BLOB},
                        ],
                        "createdAt": "2024-02-03T04:05:06Z",
                    },
                    {
                        "id": UNICODE_ITEM_ID,
                        "title": UNICODE_TITLE,
                        "category": "API_CREDENTIAL",
                        "fields": [
                            {
                                "id": "credential",
                                "type": "CONCEALED",
                                "label": "credential",
                                "value": "canary-unicode",
                            }
                        ],
                    },
                    {
                        "id": SHARED_K8S_ITEM_ID,
                        "title": "shared-title",
                        "category": "PASSWORD",
                        "fields": [
                            {
                                "id": "password",
                                "type": "CONCEALED",
                                "purpose": "PASSWORD",
                                "label": "password",
                                "value": "k8s-copy",
                            }
                        ],
                    },
                    {
                        "id": LONG_TITLE_ITEM_ID,
                        "title": LONG_TITLE,
                        "category": "SECURE_NOTE",
                        "fields": [
                            {
                                "id": "notesPlain",
                                "type": "STRING",
                                "purpose": "NOTES",
                                "value": "26 characters",
                            }
                        ],
                    },
                ],
            },
            {
                "id": PLATFORM_VAULT_ID,
                "name": "Platform",
                "createdAt": "2024-01-03T03:04:05Z",
                "items": [
                    {
                        "id": SHARED_PLATFORM_ITEM_ID,
                        "title": "shared-title",
                        "category": "PASSWORD",
                        "fields": [
                            {
                                "id": "password",
                                "type": "CONCEALED",
                                "purpose": "PASSWORD",
                                "label": "password",
                                "value": "platform-copy",
                            }
                        ],
                    },
                    {
                        "id": API_TOKEN_ITEM_ID,
                        "title": "api-token",
                        "category": "API_CREDENTIAL",
                        "tags": ["ci"],
                        "fields": [
                            {
                                "id": "credential",
                                "type": "CONCEALED",
                                "label": "credential",
                                "value": "canary-api-token",
                            },
                            {
                                "id": "otp",
                                "type": "OTP",
                                "label": "one-time password",
                                "value": "otpauth://totp/demo?secret=JBSWY3DPEHPK3PXP&issuer=opsync",
                            },
                        ],
                    },
                    {
                        "id": TWIN_ONE_ITEM_ID,
                        "title": "twin",
                        "category": "SECURE_NOTE",
                        "createdAt": "2024-03-01T00:00:00Z",
                    },
                    {
                        "id": TWIN_TWO_ITEM_ID,
                        "title": "twin",
                        "category": "SECURE_NOTE",
                        "createdAt": "2024-03-02T00:00:00Z",
                    },
                ],
            },
        ]
    }


ConnectServerFactory = Callable[..., Awaitable[ConnectServer]]


@pytest.fixture
async def connect_server_factory(tmp_path: Path) -> AsyncIterator[ConnectServerFactory]:
    servers: list[ConnectServer] = []

    async def start(
        data: Mapping[str, Any] | None = None,
        *,
        path: Path | None = None,
        faults: FaultConfig | None = None,
        options: ServerOptions | None = None,
    ) -> ConnectServer:
        if path is not None:
            server = ConnectServer(path, faults=faults, options=options)
        else:
            folder = tmp_path / f"connect-{len(servers)}"
            server = ConnectServer.from_data(data or {"vaults": []}, folder, faults=faults, options=options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.stop()


@pytest.fixture
async def connect_server(connect_server_factory: ConnectServerFactory) -> ConnectServer:
    return await connect_server_factory(standard_data())


@pytest.fixture
def connect_token(connect_server: ConnectServer) -> str:
    return connect_server.issue_token([vault.id for vault in connect_server.store.vaults()])


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawHttp:
    """Requests to one server with one token; paths and queries are sent exactly as written."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None) -> None:
        self.session = session
        self.base = base
        self.token = token

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        token: str | None = "default",
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        sent = {"Content-Type": "application/json"}
        bearer = self.token if token == "default" else token
        if bearer is not None:
            sent["Authorization"] = f"Bearer {bearer}"
        sent.update(headers or {})
        payload = json.dumps(json_body).encode() if json_body is not None else data
        url = URL(self.base + path, encoded=True)
        async with self.session.request(method, url, data=payload, headers=sent) as response:
            return Reply(response.status, response.headers, await response.read())

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, body: Any, **kwargs: Any) -> Reply:
        return await self.request("POST", path, json_body=body, **kwargs)

    async def put(self, path: str, body: Any, **kwargs: Any) -> Reply:
        return await self.request("PUT", path, json_body=body, **kwargs)

    async def patch(self, path: str, body: Any, **kwargs: Any) -> Reply:
        return await self.request("PATCH", path, json_body=body, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("DELETE", path, **kwargs)


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def raw_http(http_session: aiohttp.ClientSession) -> Callable[[ConnectServer, str | None], RawHttp]:
    def make(server: ConnectServer, token: str | None) -> RawHttp:
        return RawHttp(http_session, server.url, token)

    return make


@pytest.fixture
def server_api(
    raw_http: Callable[[ConnectServer, str | None], RawHttp],
    connect_server: ConnectServer,
    connect_token: str,
) -> RawHttp:
    return raw_http(connect_server, connect_token)
