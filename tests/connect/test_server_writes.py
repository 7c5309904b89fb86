"""Writes on the local Connect server: create, replace, JSON Patch, delete, generated values, versions."""

from __future__ import annotations

import asyncio
import re
import string

import yaml

K8S = "kubernetesvault00000000001"
PLATFORM = "platformvault0000000000001"
DB = "dbcredentials0000000000001"
API_TOKEN = "apitoken000000000000000001"
UNKNOWN = "zzzzzzzzzzzzzzzzzzzzzzzzzz"
ITEMS = f"/v1/vaults/{K8S}/items"
SYMBOLS = "!#$%&()*+,-./:;<=>?@[]^_{|}~"


async def _vault(api, vault_id: str = K8S) -> dict:
    reply = await api.get(f"/v1/vaults/{vault_id}")
    assert reply.status == 200
    return reply.json()


async def test_create_returns_200_and_the_full_item(server_api):
    before = await _vault(server_api)
    body = {
        "title": "new login",
        "category": "login",
        "vault": {"id": ""},
        "id": "",
        "createdAt": "0001-01-01T00:00:00Z",
        "updatedAt": "0001-01-01T00:00:00Z",
        "trashed": False,
        "favorite": False,
        "tags": ["a"],
        "urls": [{"href": "https://example.com", "primary": True}],
        "sections": [{"id": "", "label": "Extra"}],
        "fields": [
            {"id": "", "type": "", "purpose": "USERNAME", "value": "me"},
            {"id": "", "type": "concealed", "purpose": "PASSWORD", "generate": True},
            {"id": "", "type": "string", "label": "note", "value": None, "recipe": None, "section": None},
            {"label": "in section", "value": "v", "section": {"id": "Section_custom"}},
        ],
    }
    reply = await server_api.post(ITEMS, body)
    assert reply.status == 200
    item = reply.json()
    assert re.match(r"^[a-z0-9]{26}$", item["id"])
    assert item["vault"] == {"id": K8S}
    assert item["category"] == "LOGIN"
    assert item["version"] == 1
    assert item["createdAt"] == item["updatedAt"]
    assert item["createdAt"] != "0001-01-01T00:00:00Z"
    fields = item["fields"]
    assert [field["id"] for field in fields[:2]] == ["username", "password"]
    assert fields[0]["label"] == "username" and fields[0]["type"] == "STRING"
    assert fields[1]["label"] == "password" and fields[1]["type"] == "CONCEALED"
    assert len(fields[1]["value"]) == 32
    assert fields[1]["entropy"] > 150
    assert re.match(r"^[a-z0-9]{26}$", fields[2]["id"])
    assert "value" not in fields[2]
    assert fields[-1] == {"id": "notesPlain", "type": "STRING", "purpose": "NOTES", "label": "notesPlain"}
    section_ids = [section["id"] for section in item["sections"]]
    assert section_ids[0].startswith("Section_") and len(section_ids[0]) == len("Section_") + 26
    assert "Section_custom" in section_ids
    assert (await server_api.get(f"{ITEMS}/{item['id']}")).json() == item

    after = await _vault(server_api)
    assert after["contentVersion"] == before["contentVersion"] + 1
    assert after["items"] == before["items"] + 1
    assert after["updatedAt"] > before["updatedAt"]


async def test_create_through_trailing_slash_route(server_api):
    reply = await server_api.post(ITEMS + "/", {"title": "js", "category": "PASSWORD", "vault": {"id": K8S}})
    assert reply.status == 200


async def test_create_into_another_vault_than_the_body_names_uses_the_path(server_api):
    # The Go SDK's CreateItem(GetItem(x, "Dev"), "Prod") sends the source item as it was read:
    # its id, its vault.id (the source vault), its version and timestamps. The path decides.
    source = (await server_api.get(f"/v1/vaults/{PLATFORM}/items/{API_TOKEN}")).json()
    before = await _vault(server_api, K8S)
    reply = await server_api.post(ITEMS, source)
    assert reply.status == 200, reply.json()
    copy = reply.json()
    assert copy["vault"] == {"id": K8S}
    assert copy["id"] != API_TOKEN and copy["version"] == 1
    assert copy["title"] == source["title"]
    stored = await server_api.get(f"{ITEMS}/{copy['id']}")
    assert stored.status == 200 and stored.json()["vault"] == {"id": K8S}
    assert (await _vault(server_api, K8S))["items"] == before["items"] + 1
    original = await server_api.get(f"/v1/vaults/{PLATFORM}/items/{API_TOKEN}")
    assert original.json()["version"] == source["version"]
    # A replace still refuses a body naming another vault.
    mismatched = await server_api.put(f"{ITEMS}/{copy['id']}", {**copy, "vault": {"id": PLATFORM}})
    assert (mismatched.status, mismatched.json()["message"]) == (
        400,
        "Validation: the item's vault.id does not match the vault in the path",
    )


async def test_invalid_bodies_are_400_with_status_and_message(server_api):
    bad = [
        ({"title": "x", "category": "CUSTOM"}, "Invalid item category"),
        ({"title": "x", "category": "DOCUMENT"}, "Invalid item category"),
        ({"title": "x", "category": "SPACESHIP"}, "Invalid item category"),
        ({"title": "x"}, "Invalid item category"),
        ({"category": "LOGIN", "fields": [{"type": "WHATEVER"}]}, "unknown field type"),
        ({"category": "LOGIN", "fields": [{"purpose": "PIN"}]}, "unknown field purpose"),
        ({"category": "LOGIN", "fields": [{"type": "DATE", "value": "31/12/2024"}]}, "YYYY-MM-DD"),
        ({"category": "LOGIN", "fields": [{"type": "MONTH_YEAR", "value": "13/2024"}]}, "YYYYMM"),
        ({"category": "LOGIN", "fields": [{"id": "a"}, {"id": "a"}]}, "duplicate field id"),
        ({"category": "LOGIN", "fields": [{"generate": True, "recipe": {"length": 65}}]}, "between 1 and 64"),
        (
            {"category": "LOGIN", "fields": [{"generate": True, "recipe": {"characterSets": ["EMOJI"]}}]},
            "character set",
        ),
        (
            {
                "category": "LOGIN",
                "fields": [
                    {
                        "generate": True,
                        "recipe": {"characterSets": ["DIGITS"], "excludeCharacters": string.digits},
                    }
                ],
            },
            "excludes every character",
        ),
        ({"category": "LOGIN", "tags": "not-a-list"}, "tags"),
        ({"category": "LOGIN", "fields": [{"value": 12}]}, "fields.0.value"),
        ([], "must be a JSON object"),
    ]
    for body, message in bad:
        reply = await server_api.post(ITEMS, body)
        assert reply.status == 400, body
        assert reply.json()["status"] == 400
        assert message in reply.json()["message"], (body, reply.json())
    broken = await server_api.request("POST", ITEMS, data=b"{not json")
    assert (broken.status, broken.json()["message"]) == (400, "Invalid request body: not valid JSON")
    assert (await _vault(server_api))["contentVersion"] == 1


async def test_valid_dates_and_months_are_accepted(server_api):
    body = {
        "category": "IDENTITY",
        "fields": [
            {"type": "DATE", "value": "2024-02-29"},
            {"type": "MONTH_YEAR", "value": "202412"},
            {"type": "MONTH_YEAR", "value": "2024/12"},
        ],
    }
    assert (await server_api.post(ITEMS, body)).status == 200


async def test_generated_values_honour_the_recipe(server_api):
    recipes = [
        ({"length": 20, "characterSets": ["DIGITS"], "excludeCharacters": "0123"}, set("456789"), 20),
        (
            {"length": 64, "characterSets": ["LETTERS", "SYMBOLS"], "excludeCharacters": "aeiouAEIOU!"},
            None,
            64,
        ),
        ({"length": 1}, None, 1),
        ({}, None, 32),
    ]
    for recipe, alphabet, length in recipes:
        reply = await server_api.post(
            ITEMS,
            {"category": "PASSWORD", "fields": [{"purpose": "PASSWORD", "generate": True, "recipe": recipe}]},
        )
        assert reply.status == 200, recipe
        value = reply.json()["fields"][0]["value"]
        assert len(value) == length
        if alphabet is not None:
            assert set(value) <= alphabet
        if recipe.get("characterSets") == ["LETTERS", "SYMBOLS"]:
            assert not set(value) & set("aeiouAEIOU!" + string.digits)
            assert set(value) & set(string.ascii_letters) and set(value) & set(SYMBOLS)
    values = {
        (
            await server_api.post(
                ITEMS, {"category": "PASSWORD", "fields": [{"purpose": "PASSWORD", "generate": True}]}
            )
        ).json()["fields"][0]["value"]
        for _ in range(5)
    }
    assert len(values) == 5


async def test_put_replaces_everything_but_files_and_reports_the_old_version(server_api):
    original = (await server_api.get(f"{ITEMS}/{DB}")).json()
    before = await _vault(server_api)
    body = {
        "id": DB,
        "vault": {"id": K8S},
        "title": "db-credentials v2",
        "category": "LOGIN",
        "version": 1,
        "files": [],
        "fields": [
            {"id": "password", "type": "CONCEALED", "purpose": "PASSWORD", "value": "canary-new-password"}
        ],
    }
    reply = await server_api.put(f"{ITEMS}/{DB}", body)
    assert reply.status == 200
    answered = reply.json()
    assert answered["version"] == 1
    assert answered["title"] == "db-credentials v2"
    assert [field["id"] for field in answered["fields"]] == ["password"]
    assert "urls" not in answered and "tags" not in answered and "sections" not in answered
    assert answered["files"] == original["files"]
    assert answered["createdAt"] == original["createdAt"]
    stored = (await server_api.get(f"{ITEMS}/{DB}")).json()
    assert stored["version"] == 2
    assert {key: value for key, value in stored.items() if key != "version"} == {
        key: value for key, value in answered.items() if key != "version"
    }
    after = await _vault(server_api)
    assert after["contentVersion"] == before["contentVersion"] + 1
    assert after["items"] == before["items"]


async def test_put_regenerates_and_checks_ids(server_api):
    body = {"category": "PASSWORD", "fields": [{"id": "password", "purpose": "PASSWORD", "generate": True}]}
    created = (await server_api.post(ITEMS, body)).json()
    path = f"{ITEMS}/{created['id']}"
    replaced = (await server_api.put(path, {**body, "id": created["id"], "vault": {"id": K8S}})).json()
    assert replaced["fields"][0]["value"] != created["fields"][0]["value"]
    mismatched = await server_api.put(path, {**body, "id": DB})
    assert (mismatched.status, mismatched.json()["message"]) == (
        400,
        "Validation: the item's id does not match the item in the path",
    )
    missing = await server_api.put(f"{ITEMS}/{UNKNOWN}", body)
    assert (missing.status, missing.json()) == (404, {"status": 404, "message": f"item {UNKNOWN} not found"})
    invalid = await server_api.put(path, {"category": "LOGIN", "fields": "nope"})
    assert invalid.status == 400


async def test_patch_fields_by_id_label_and_attribute(server_api):
    operations = [
        {"op": "replace", "path": "/fields/password/value", "value": "canary-patched"},
        {
            "op": "replace",
            "path": "/fields/host",
            "value": {"label": "hostname", "type": "string", "value": "db2.internal"},
        },
        {"op": "remove", "path": "/fields/port"},
        {
            "op": "add",
            "path": "/fields",
            "value": {"label": "New Field", "type": "concealed", "value": "canary-added"},
        },
        {"op": "add", "path": "/fields/comment/label", "value": "remark"},
        {"op": "remove", "path": "/fields/username/value"},
        {"op": "add", "path": "/fields/custom_id", "value": {"label": "by id", "value": "x"}},
        {"op": "replace", "path": "/fields/notesPlain/value", "value": "notes"},
    ]
    reply = await server_api.patch(f"{ITEMS}/{DB}", operations)
    assert reply.status == 200, reply.json()
    fields = {field["id"]: field for field in reply.json()["fields"]}
    assert fields["password"]["value"] == "canary-patched"
    assert fields["host"] == {"id": "host", "type": "STRING", "label": "hostname", "value": "db2.internal"}
    assert "port" not in fields
    added = next(field for field in fields.values() if field.get("label") == "New Field")
    assert added["type"] == "CONCEALED" and re.match(r"^[a-z0-9]{26}$", added["id"])
    assert fields["comment"]["label"] == "remark"
    assert "value" not in fields["username"]
    assert fields["custom_id"]["label"] == "by id"
    assert fields["notesPlain"]["value"] == "notes"
    assert reply.json()["version"] == 1
    assert (await server_api.get(f"{ITEMS}/{DB}")).json()["version"] == 2


async def test_patch_unique_label_and_ambiguous_label(server_api):
    by_label = await server_api.patch(
        f"{ITEMS}/{DB}", [{"op": "replace", "path": "/fields/port/value", "value": "6543"}]
    )
    assert by_label.status == 200
    await server_api.patch(
        f"{ITEMS}/{DB}", [{"op": "replace", "path": "/fields/host/label", "value": "server name"}]
    )
    renamed = await server_api.patch(
        f"{ITEMS}/{DB}", [{"op": "replace", "path": "/fields/server name/value", "value": "h"}]
    )
    assert {field["id"]: field.get("value") for field in renamed.json()["fields"]}["host"] == "h"
    await server_api.patch(
        f"{ITEMS}/{DB}", [{"op": "replace", "path": "/fields/port/label", "value": "server name"}]
    )
    ambiguous = await server_api.patch(
        f"{ITEMS}/{DB}", [{"op": "replace", "path": "/fields/server name/value", "value": "x"}]
    )
    assert ambiguous.status == 400
    assert "has no field 'server name'" in ambiguous.json()["message"]
    by_id_first = await server_api.patch(
        f"{ITEMS}/{DB}", [{"op": "replace", "path": "/fields/password/value", "value": "p"}]
    )
    values = {field["id"]: field.get("value") for field in by_id_first.json()["fields"]}
    assert values["password"] == "p"
    assert values["replicapassword"] == "canary-replica-password-91c2"


async def test_patch_top_level_attributes(server_api):
    operations = [
        {"op": "replace", "path": "/title", "value": "renamed"},
        {"op": "replace", "path": "/favorite", "value": True},
        {"op": "remove", "path": "/tags/1"},
        {"op": "add", "path": "/tags/-", "value": "new-tag"},
        {"op": "replace", "path": "/urls/1/label", "value": "console"},
        {"op": "add", "path": "/urls/-", "value": {"href": "https://third.example"}},
        {"op": "add", "path": "/sections/-", "value": {"id": "Section_more", "label": "More"}},
    ]
    reply = await server_api.patch(f"{ITEMS}/{DB}", operations)
    assert reply.status == 200
    item = reply.json()
    assert item["title"] == "renamed"
    assert item["favorite"] is True
    assert item["tags"] == ["k8s", "new-tag"]
    assert [url.get("label") for url in item["urls"]] == ["website", "console", None]
    assert item["sections"][-1] == {"id": "Section_more", "label": "More"}
    assert item["files"]


async def test_patch_root_replaces_the_item_and_empty_patch_changes_nothing(server_api):
    vault_before = await _vault(server_api)
    empty = await server_api.patch(f"{ITEMS}/{DB}", [])
    assert empty.status == 200
    assert empty.json()["version"] == 1
    assert (await _vault(server_api))["contentVersion"] == vault_before["contentVersion"]
    root = await server_api.patch(
        f"{ITEMS}/{DB}",
        [{"op": "replace", "path": "/", "value": {"title": "whole", "category": "LOGIN", "tags": ["t"]}}],
    )
    assert root.status == 200
    assert root.json()["title"] == "whole"
    assert "fields" not in root.json()
    assert root.json()["files"]
    assert (await _vault(server_api))["contentVersion"] == vault_before["contentVersion"] + 1


async def test_invalid_patches_are_400_and_change_nothing(server_api):
    bad = [
        ({"op": "replace", "path": "/title"}, "needs a value"),
        ({"op": "move", "from": "/title", "path": "/tags/0"}, "op must be add, remove or replace"),
        ({"op": "replace", "path": "/version", "value": 9}, "/version is read-only"),
        ({"op": "remove", "path": "/files"}, "/files is read-only"),
        ({"op": "replace", "path": "/colour", "value": "red"}, "no attribute /colour"),
        ({"op": "replace", "path": "/fields/nope/value", "value": "x"}, "has no field 'nope'"),
        ({"op": "remove", "path": "/tags/7"}, "does not exist"),
        ({"op": "remove", "path": "/"}, "cannot be removed"),
        ({"op": "replace", "path": "title", "value": "x"}, "must start with '/'"),
        ({"op": "replace", "path": "/category", "value": "SPACESHIP"}, "Invalid item category"),
        ({"op": "replace", "path": "/fields/password/type", "value": "WHATEVER"}, "unknown field type"),
        ("not an object", "not an object"),
    ]
    for operation, message in bad:
        reply = await server_api.patch(f"{ITEMS}/{DB}", [operation])
        assert reply.status == 400, operation
        assert message in reply.json()["message"], (operation, reply.json())
    not_a_list = await server_api.patch(f"{ITEMS}/{DB}", {"op": "replace", "path": "/title", "value": "x"})
    assert not_a_list.status == 400
    assert (await server_api.get(f"{ITEMS}/{DB}")).json()["version"] == 1
    assert (await _vault(server_api))["contentVersion"] == 1
    missing = await server_api.patch(f"{ITEMS}/{UNKNOWN}", [])
    assert missing.status == 404


async def test_delete_is_204_and_final(server_api):
    before = await _vault(server_api)
    reply = await server_api.delete(f"{ITEMS}/{DB}")
    assert (reply.status, reply.body) == (204, b"")
    assert reply.headers["1Password-Connect-Version"] == "1.8.1"
    assert (await server_api.get(f"{ITEMS}/{DB}")).status == 404
    assert (await server_api.get(f"{ITEMS}/{DB}/files")).status == 404
    again = await server_api.delete(f"{ITEMS}/{DB}")
    assert (again.status, again.json()) == (404, {"status": 404, "message": f"item {DB} not found"})
    after = await _vault(server_api)
    assert (after["contentVersion"], after["items"]) == (before["contentVersion"] + 1, before["items"] - 1)


async def test_version_and_content_version_arithmetic(connect_server, server_api):
    start = await _vault(server_api)
    created = (await server_api.post(ITEMS, {"title": "v", "category": "PASSWORD"})).json()
    path = f"{ITEMS}/{created['id']}"
    for step in range(3):
        await server_api.patch(path, [{"op": "replace", "path": "/title", "value": f"v{step}"}])
    await server_api.put(path, {"title": "v-put", "category": "PASSWORD"})
    await connect_server.store.update_item(
        "Kubernetes", created["id"], fields={"password": "canary-app-edit"}
    )
    item = (await server_api.get(path)).json()
    assert item["version"] == 6
    listed = {summary["id"]: summary for summary in (await server_api.get(ITEMS)).json()}
    assert listed[created["id"]]["version"] == 6
    await server_api.delete(path)
    end = await _vault(server_api)
    assert end["contentVersion"] == start["contentVersion"] + 7
    assert end["attributeVersion"] == start["attributeVersion"]
    platform = await _vault(server_api, PLATFORM)
    assert platform["contentVersion"] == 1
    renamed = await connect_server.store.update_vault("Kubernetes", description="changed")
    assert renamed.attribute_version == 2
    assert (await _vault(server_api))["attributeVersion"] == 2


async def test_store_test_api_edits_like_an_app(connect_server, server_api):
    store = connect_server.store
    edited = await store.update_item(
        "Kubernetes",
        "db-credentials",
        title="db",
        tags=["x"],
        urls=[{"href": "https://new.example", "primary": True}],
        fields={"port": "1", "comment": None, "brand new": "canary-fresh"},
        files={"ca.crt": b"new ca", "extra.txt": b"extra", "blob.bin": None},
    )
    assert edited.version == 2
    item = (await server_api.get(f"{ITEMS}/{DB}")).json()
    assert item["title"] == "db"
    values = {field.get("label"): field.get("value") for field in item["fields"]}
    assert values["port"] == "1" and values["brand new"] == "canary-fresh" and "comment" not in values
    assert sorted(file["name"] for file in item["files"]) == ["ca.crt", "extra.txt"]
    ca = next(file for file in item["files"] if file["name"] == "ca.crt")
    assert (await server_api.get(ca["content_path"])).body == b"new ca"
    replaced = await store.replace_item("Kubernetes", DB, {"title": "again", "category": "LOGIN"})
    assert (replaced.version, replaced.title, replaced.fields) == (3, "again", [])
    created = await store.create_item("Platform", {"title": "fresh", "category": "SERVER"})
    assert created.version == 1
    await store.delete_item("Platform", "fresh")
    assert (await _vault(server_api, PLATFORM))["contentVersion"] == 3
    vault = await store.create_vault("Extra", description="made in a test")
    assert [v.name for v in store.vaults()][-1] == "Extra"
    assert store.get_vault(vault.id).description == "made in a test"
    repr_text = repr(store.get_item("Kubernetes", DB)) + repr(store.get_item("Platform", "api-token"))
    assert "canary" not in repr_text


async def test_concurrent_writes_are_serialised_and_persisted(connect_server, server_api):
    path = f"{ITEMS}/{DB}"
    replies = await asyncio.gather(
        *(server_api.patch(path, [{"op": "add", "path": "/tags/-", "value": f"t{n}"}]) for n in range(20))
    )
    assert {reply.status for reply in replies} == {200}
    item = (await server_api.get(path)).json()
    assert item["version"] == 21
    assert len(item["tags"]) == 22
    assert (await _vault(server_api))["contentVersion"] == 21
    saved = yaml.safe_load(connect_server.data_path.read_text())
    stored = next(stored for stored in saved["vaults"][0]["items"] if stored["id"] == DB)
    assert stored["version"] == 21 and len(stored["tags"]) == 22
