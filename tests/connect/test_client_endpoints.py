"""Every Connect endpoint through ConnectClient, against the local Connect server over loopback HTTP."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import SecretStr

from opsync import __version__
from opsync.connect.client import ConnectClient
from opsync.connect.config import ConnectConfig
from opsync.connect.models import (
    Field,
    FieldPurpose,
    FieldType,
    FullItem,
    ItemCategory,
    PatchOperation,
    Section,
    SectionRef,
)
from opsync.core.errors import NotFound, PayloadTooLarge
from opsync.tooling.connectserver import ConnectServer, ServerOptions
from tests.connect.ids import oid

MAIN = oid("mainvault")
OTHER = oid("othervault")
SHARED_ONE = oid("sharedone")
SHARED_TWO = oid("sharedtwo")
DB = oid("dbitem")
TRICKY = oid("trickyitem")
PREFIX = oid("prefixitem")
TWIN_ONE = oid("twinone")
TWIN_TWO = oid("twintwo")
BIG = oid("bigitem")
BUNDLE = oid("bundleitem")
NOTE = oid("noteitem")
CA_FILE = oid("cafile")
BLOB_FILE = oid("blobfile")
BIG_FILE = oid("bigfile")

TRICKY_TITLE = 'Say "hi" \\ to Zoë — 東京 🔑 '
CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBclienttest\n-----END CERTIFICATE-----\n"
BLOB = bytes(range(256))
BIG_CONTENT = os.urandom(2048)
BUNDLE_FILES = {oid(f"bundlefile{n}"): f"file {n}\n".encode() * (n + 1) for n in range(6)}


def data() -> dict[str, Any]:
    return {
        "vaults": [
            {
                "id": MAIN,
                "name": "Main Vault",
                "description": "client tests",
                "items": [
                    {
                        "id": DB,
                        "title": "db-credentials",
                        "category": "LOGIN",
                        "tags": ["k8s", "prod"],
                        "urls": [
                            {"href": "https://db.example.internal", "label": "website", "primary": True},
                            {"href": "https://admin.example.internal", "label": "admin"},
                        ],
                        "sections": [{"id": "Section_conn", "label": "Connection"}],
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
                                "value": "pw-1",
                            },
                            {"id": "notesPlain", "type": "STRING", "purpose": "NOTES", "label": "notesPlain"},
                            {
                                "id": "host",
                                "label": "host",
                                "value": "db.internal",
                                "section": {"id": "Section_conn"},
                            },
                        ],
                        "files": [
                            {
                                "id": CA_FILE,
                                "name": "ca.crt",
                                "content": CA_PEM,
                                "section": {"id": "Section_conn"},
                            },
                            {"id": BLOB_FILE, "name": "blob.bin", "content": BLOB},
                        ],
                    },
                    {"id": TRICKY, "title": TRICKY_TITLE, "category": "PASSWORD"},
                    {"id": PREFIX, "title": 'Say "hi"', "category": "PASSWORD"},
                    {"id": TWIN_ONE, "title": "twin", "category": "SECURE_NOTE"},
                    {"id": TWIN_TWO, "title": "Twin", "category": "SECURE_NOTE"},
                    {
                        "id": BUNDLE,
                        "title": "bundle",
                        "category": "SECURE_NOTE",
                        "files": [
                            {"id": file_id, "name": f"f{n}.txt", "content": content}
                            for n, (file_id, content) in enumerate(BUNDLE_FILES.items())
                        ],
                    },
                ],
            },
            {
                "id": OTHER,
                "name": "Other",
                "items": [{"id": NOTE, "title": "note", "category": "SECURE_NOTE"}],
            },
            {"id": SHARED_ONE, "name": "Shared", "createdAt": "2024-01-01T00:00:00Z"},
            {"id": SHARED_TWO, "name": "shared", "createdAt": "2024-02-01T00:00:00Z"},
        ]
    }


ALL_VAULTS = [MAIN, OTHER, SHARED_ONE, SHARED_TWO]


@pytest.fixture
async def server(connect_server_factory: Callable[..., Any]) -> ConnectServer:
    result: ConnectServer = await connect_server_factory(data())
    return result


@pytest.fixture
async def client(server: ConnectServer) -> AsyncIterator[ConnectClient]:
    config = ConnectConfig(
        host=server.url + "/v1/",
        token=server.issue_token(ALL_VAULTS),
        backoff_initial=0.001,
        backoff_max=0.002,
    )
    async with ConnectClient(config) as connect:
        yield connect


# -- vaults ----------------------------------------------------------------------------------------


async def test_list_vaults(client: ConnectClient) -> None:
    vaults = await client.list_vaults()
    assert sorted(v.id for v in vaults) == sorted(ALL_VAULTS)
    main = next(v for v in vaults if v.id == MAIN)
    assert main.name == "Main Vault"
    assert main.description == "client tests"
    assert main.items == 6
    assert main.content_version is not None and main.attribute_version is not None
    assert main.created_at is not None and main.updated_at is not None


async def test_get_vault(client: ConnectClient) -> None:
    vault = await client.get_vault(OTHER)
    assert (vault.id, vault.name, vault.items) == (OTHER, "Other", 1)


async def test_find_vaults_returns_every_vault_with_that_name(client: ConnectClient) -> None:
    found = await client.find_vaults("Shared")
    assert sorted(v.id for v in found) == [SHARED_ONE, SHARED_TWO]
    assert sorted(v.id for v in await client.find_vaults("SHARED")) == [SHARED_ONE, SHARED_TWO]
    assert [v.id for v in await client.find_vaults("Main Vault")] == [MAIN]
    assert await client.find_vaults("Main") == []
    assert await client.find_vaults('no "such" \\ vault') == []


async def test_list_vaults_with_raw_filter(client: ConnectClient) -> None:
    vaults = await client.list_vaults(filter='name eq "Other" or name eq "Main Vault"')
    assert sorted(v.id for v in vaults) == sorted([MAIN, OTHER])


# -- items -----------------------------------------------------------------------------------------


async def test_list_items_returns_overviews(client: ConnectClient) -> None:
    items = await client.list_items(MAIN)
    assert len(items) == 6
    db = next(i for i in items if i.id == DB)
    assert db.title == "db-credentials"
    assert db.vault is not None and db.vault.id == MAIN
    assert db.category == ItemCategory.LOGIN
    assert db.version == 1
    assert db.tags == ["k8s", "prod"]
    assert db.urls is not None and db.urls[0].primary is True
    for item in items:
        assert not {"fields", "sections", "files"} & set(item.model_extra or {})


async def test_list_items_with_raw_filter(client: ConnectClient) -> None:
    items = await client.list_items(MAIN, filter='tag eq "prod"')
    assert [i.id for i in items] == [DB]


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        (TRICKY_TITLE, [TRICKY]),
        ('Say "hi"', [PREFIX]),
        ("db-credentials", [DB]),
        ("DB-Credentials", [DB]),
        ("twin", [TWIN_ONE, TWIN_TWO]),
        ("nothing like this", []),
        ('"', []),
        ("\\", []),
    ],
)
async def test_find_items_by_exact_title(client: ConnectClient, title: str, expected: list[str]) -> None:
    found = await client.find_items(MAIN, title)
    assert sorted(i.id for i in found) == sorted(expected)


async def test_get_item(client: ConnectClient) -> None:
    item = await client.get_item(MAIN, DB)
    assert item.id == DB and item.title == "db-credentials" and item.version == 1
    assert item.sections == [Section(id="Section_conn", label="Connection")]
    assert item.fields is not None
    fields = {f.id: f for f in item.fields}
    assert fields["password"].value == SecretStr("pw-1")
    assert fields["password"].type == FieldType.CONCEALED
    assert fields["password"].purpose == FieldPurpose.PASSWORD
    assert fields["host"].section == SectionRef(id="Section_conn")
    assert item.files is not None
    files = {f.id: f for f in item.files}
    assert files[CA_FILE].name == "ca.crt" and files[CA_FILE].size == len(CA_PEM)
    assert files[CA_FILE].content is None
    assert files[BLOB_FILE].content_path == f"/v1/vaults/{MAIN}/items/{DB}/files/{BLOB_FILE}/content"


async def test_create_item(client: ConnectClient) -> None:
    before = await client.get_vault(MAIN)
    new = FullItem(
        title="created by the client",
        category=ItemCategory.LOGIN,
        tags=["new"],
        sections=[Section(id="extra", label="Extra")],
        fields=[
            Field(purpose=FieldPurpose.USERNAME, label="username", value=SecretStr("someone")),
            Field(purpose=FieldPurpose.PASSWORD, label="password", generate=True),
            Field(
                id="api",
                label="api key",
                type=FieldType.CONCEALED,
                value=SecretStr("k-1"),
                section=SectionRef(id="extra"),
            ),
        ],
    )
    created = await client.create_item(MAIN, new)
    assert created.id and len(created.id) == 26
    assert created.version == 1
    assert created.vault is not None and created.vault.id == MAIN
    assert created.fields is not None
    by_label = {f.label: f for f in created.fields}
    generated = by_label["password"].value
    assert generated is not None and len(generated.get_secret_value()) == 32
    assert by_label["api key"].value == SecretStr("k-1")
    assert await client.get_item(MAIN, created.id) == created
    after = await client.get_vault(MAIN)
    assert after.items == (before.items or 0) + 1
    assert (after.content_version or 0) > (before.content_version or 0)
    assert [i.id for i in await client.find_items(MAIN, "created by the client")] == [created.id]


async def test_replace_item(client: ConnectClient) -> None:
    vault_before = await client.get_vault(MAIN)
    item = await client.get_item(MAIN, DB)
    assert item.fields is not None
    item.title = "db-credentials (replaced)"
    item.fields = [f for f in item.fields if f.id != "host"]
    for f in item.fields:
        if f.id == "password":
            f.value = SecretStr("pw-2")
    answer = await client.replace_item(MAIN, DB, item)
    assert answer.title == "db-credentials (replaced)"
    assert answer.version == 1  # Connect reports the version from before the change
    stored = await client.get_item(MAIN, DB)
    assert stored.version == 2
    assert stored.fields is not None
    assert "host" not in {f.id for f in stored.fields}
    assert {f.id: f.value for f in stored.fields}["password"] == SecretStr("pw-2")
    assert stored.files is not None and len(stored.files) == 2  # files survive a PUT
    vault_after = await client.get_vault(MAIN)
    assert (vault_after.content_version or 0) > (vault_before.content_version or 0)


async def test_patch_item_add_replace_remove(client: ConnectClient) -> None:
    vault_before = await client.get_vault(MAIN)
    patched = await client.patch_item(
        MAIN,
        DB,
        [
            PatchOperation.add(
                "/fields", Field(label="token", type=FieldType.CONCEALED, value=SecretStr("t-1"))
            ),
            PatchOperation.replace("/fields/password/value", SecretStr("pw-patched")),
            PatchOperation.replace("/title", "db (patched)"),
            PatchOperation.replace("/favorite", True),
            PatchOperation.remove("/fields/host"),
            PatchOperation.remove("/tags/0"),
        ],
    )
    assert patched.title == "db (patched)"
    assert patched.version == 1  # like PUT, the version from before the change
    stored = await client.get_item(MAIN, DB)
    assert stored.version == 2
    assert stored.favorite is True
    assert stored.tags == ["prod"]
    assert stored.fields is not None
    values = {f.label: f.value for f in stored.fields}
    assert values["token"] == SecretStr("t-1")
    assert values["password"] == SecretStr("pw-patched")
    assert "host" not in values
    vault_after = await client.get_vault(MAIN)
    assert (vault_after.content_version or 0) > (vault_before.content_version or 0)
    again = await client.patch_item(MAIN, DB, [PatchOperation.replace("/fields/username/label", "user")])
    assert again.title == "db (patched)"
    assert (await client.get_item(MAIN, DB)).version == 3


async def test_empty_patch_changes_nothing(client: ConnectClient) -> None:
    item = await client.patch_item(MAIN, DB, [])
    assert item.version == 1
    assert (await client.get_item(MAIN, DB)).version == 1


async def test_delete_item(client: ConnectClient) -> None:
    before = await client.get_vault(OTHER)
    assert await client.delete_item(OTHER, NOTE) is None
    with pytest.raises(NotFound):
        await client.get_item(OTHER, NOTE)
    after = await client.get_vault(OTHER)
    assert after.items == 0
    assert (after.content_version or 0) > (before.content_version or 0)
    with pytest.raises(NotFound):
        await client.delete_item(OTHER, NOTE)


# -- files -----------------------------------------------------------------------------------------


async def test_list_files(client: ConnectClient) -> None:
    files = await client.list_files(MAIN, DB)
    assert sorted((f.id, f.name, f.size) for f in files) == sorted(
        [(CA_FILE, "ca.crt", len(CA_PEM)), (BLOB_FILE, "blob.bin", 256)]
    )
    assert all(f.content is None for f in files)
    inline = {f.id: f for f in await client.list_files(MAIN, DB, inline_files=True)}
    assert inline[CA_FILE].content is not None
    assert inline[CA_FILE].content.get_secret_value() == CA_PEM
    assert inline[BLOB_FILE].content is not None
    assert inline[BLOB_FILE].content.get_secret_value() == BLOB


async def test_get_file(client: ConnectClient) -> None:
    file = await client.get_file(MAIN, DB, BLOB_FILE)
    assert (file.id, file.name, file.size, file.content) == (BLOB_FILE, "blob.bin", 256, None)
    inline = await client.get_file(MAIN, DB, BLOB_FILE, inline_files=True)
    assert inline.content is not None and inline.content.get_secret_value() == BLOB
    with pytest.raises(NotFound):
        await client.get_file(MAIN, DB, oid("nosuchfile"))


async def test_get_file_content(client: ConnectClient) -> None:
    assert (await client.get_file_content(MAIN, DB, BLOB_FILE)).get_secret_value() == BLOB
    assert (await client.get_file_content(MAIN, DB, CA_FILE)).get_secret_value() == CA_PEM


async def test_inline_content_over_the_limit_is_payload_too_large(
    connect_server_factory: Callable[..., Any],
) -> None:
    # A 1 KB inline limit keeps the data small; the default is 100 KB.
    big = {
        "id": BIG,
        "title": "big",
        "category": "DOCUMENT",
        "files": [{"id": BIG_FILE, "name": "big.bin", "content": BIG_CONTENT}],
    }
    server = await connect_server_factory(
        {"vaults": [{"id": MAIN, "name": "Main Vault", "items": [big]}]},
        options=ServerOptions(max_inline_file_size_kb=1),
    )
    config = ConnectConfig(host=server.url, token=server.issue_token([MAIN]))
    async with ConnectClient(config) as client:
        await _check_inline_limit(client)


async def _check_inline_limit(client: ConnectClient) -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        await client.list_files(MAIN, BIG, inline_files=True)
    assert caught.value.status == 413
    assert caught.value.endpoint == "GET /v1/vaults/{vault}/items/{item}/files"
    with pytest.raises(PayloadTooLarge):
        await client.get_file(MAIN, BIG, BIG_FILE, inline_files=True)
    assert [f.id for f in await client.list_files(MAIN, BIG)] == [BIG_FILE]
    assert (await client.get_file_content(MAIN, BIG, BIG_FILE)).get_secret_value() == BIG_CONTENT


async def test_get_item_with_files(client: ConnectClient, server: ConnectServer) -> None:
    item, contents = await client.get_item_with_files(MAIN, DB)
    assert item.id == DB
    assert {k: v.get_secret_value() for k, v in contents.items()} == {CA_FILE: CA_PEM, BLOB_FILE: BLOB}
    item, contents = await client.get_item_with_files(MAIN, BUNDLE)
    assert {k: v.get_secret_value() for k, v in contents.items()} == BUNDLE_FILES
    endpoint = "GET /v1/vaults/{vaultUuid}/items/{itemUuid}/files/{fileUuid}/content"
    assert server.request_count(endpoint) == 2 + len(BUNDLE_FILES)
    item, contents = await client.get_item_with_files(MAIN, TRICKY)
    assert item.title == TRICKY_TITLE
    assert contents == {}


# -- activity, health, metrics ---------------------------------------------------------------------


async def test_activity_pages(client: ConnectClient) -> None:
    for _ in range(3):
        await client.get_vault(MAIN)
    first = await client.list_activity(limit=2)
    assert len(first.requests) == 2
    assert first.range is not None
    assert (first.range.start, first.range.end) == (1, 2)
    assert first.range.total is not None and first.range.total >= 3
    record = first.requests[0]
    assert record.action == "READ" and record.result == "SUCCESS"
    assert record.resource is not None and record.resource.vault is not None
    assert record.resource.vault.id == MAIN
    assert record.actor is not None and record.actor.user_agent == f"opsync/{__version__}"
    second = await client.list_activity(limit=2, offset=1)
    assert second.range is not None and (second.range.start, second.range.end) == (2, 3)
    everything = await client.list_activity()
    assert len(everything.requests) == (everything.range.total if everything.range else -1)


async def test_heartbeat_health_metrics(client: ConnectClient) -> None:
    await client.heartbeat()
    health = await client.health()
    assert health.name == "1Password Connect API"
    assert health.version.count(".") == 2
    assert health.dependencies and all(d.status == "ACTIVE" for d in health.dependencies)
    await client.get_vault(MAIN)
    text = await client.metrics()
    assert "# TYPE" in text and "\n" in text


async def test_host_with_and_without_v1(server: ConnectServer) -> None:
    token = server.issue_token(ALL_VAULTS)
    for host in (server.url, server.url + "/", server.url + "/v1", server.url + "/v1/"):
        async with ConnectClient(ConnectConfig(host=host, token=token)) as client:
            assert (await client.get_vault(MAIN)).id == MAIN
            await client.heartbeat()


async def test_standard_data_parses_completely(connect_server: ConnectServer, connect_token: str) -> None:
    """Everything the server serves for the shared standard data reads into the models."""
    config = ConnectConfig(host=connect_server.url, token=connect_token)
    async with ConnectClient(config) as client:
        vaults = await client.list_vaults()
        assert vaults
        seen_files = 0
        for vault in vaults:
            assert (await client.get_vault(vault.id)).id == vault.id
            for overview in await client.list_items(vault.id):
                assert overview.id is not None
                item, contents = await client.get_item_with_files(vault.id, overview.id)
                assert item.id == overview.id
                assert set(contents) == {f.id for f in item.files or []}
                seen_files += len(contents)
                if item.title:
                    assert overview.id in {i.id for i in await client.find_items(vault.id, item.title)}
        assert seen_files > 0
