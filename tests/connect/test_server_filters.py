"""SCIM ``?filter=`` on the local Connect server: encodings, quotes, Unicode, operators, errors."""

from __future__ import annotations

import unicodedata
import urllib.parse

import pytest

from opsync.tooling.connectserver import ServerOptions
from opsync.tooling.connectserver.filters import FilterError, parse

K8S = "kubernetesvault00000000001"
PLATFORM = "platformvault0000000000001"
UNICODE_TITLE = 'Say "hi" to Zoë — 東京 🔑'
ITEM_ATTRIBUTES = frozenset({"title", "tag", "tags", "id", "category", "favorite"})


def _titles(reply) -> list[str]:
    assert reply.status == 200, reply.body
    return [item["title"] for item in reply.json()]


async def test_vault_filters_from_every_official_client(server_api):
    go_sdk = await server_api.get("/v1/vaults?filter=title+eq+%22kubernetes%22")
    python_sdk = await server_api.get("/v1/vaults?filter=name%20eq%20%22Platform%22")
    js_sdk = await server_api.get("/v1/vaults/?filter=title%20eq%20%22KUBERNETES%22")
    assert [vault["id"] for vault in go_sdk.json()] == [K8S]
    assert [vault["id"] for vault in python_sdk.json()] == [PLATFORM]
    assert [vault["id"] for vault in js_sdk.json()] == [K8S]
    nothing = await server_api.get("/v1/vaults?filter=name+eq+%22Nope%22")
    assert (nothing.status, nothing.json()) == (200, [])
    by_id = await server_api.get(f"/v1/vaults?filter=id+eq+%22{PLATFORM}%22")
    assert [vault["name"] for vault in by_id.json()] == ["Platform"]


async def test_item_title_with_plus_and_percent_20(server_api):
    for query in (
        "title+eq+%22db-credentials%22",
        "title%20eq%20%22db-credentials%22",
        "title%20eq%20%22DB-Credentials%22",
    ):
        assert _titles(await server_api.get(f"/v1/vaults/{K8S}/items?filter={query}")) == [
            "db-credentials"
        ], query


async def test_literal_plus_in_a_title(connect_server, server_api):
    await connect_server.store.create_item("Kubernetes", {"title": "a+b c", "category": "LOGIN"})
    encoded = await server_api.get(f"/v1/vaults/{K8S}/items?filter=title%20eq%20%22a%2Bb%20c%22")
    assert _titles(encoded) == ["a+b c"]
    plus_as_space = await server_api.get(f"/v1/vaults/{K8S}/items?filter=title+eq+%22a+b+c%22")
    assert _titles(plus_as_space) == []


async def test_unicode_title_with_quotes_as_the_official_clients_send_it(server_api):
    unescaped = f'title eq "{UNICODE_TITLE}"'
    escaped = 'title eq "' + UNICODE_TITLE.replace('"', '\\"') + '"'
    for text in (unescaped, escaped):
        for quote in (urllib.parse.quote, urllib.parse.quote_plus):
            reply = await server_api.get(f"/v1/vaults/{K8S}/items?filter={quote(text)}")
            assert _titles(reply) == [UNICODE_TITLE], (text, quote)


async def test_unicode_is_compared_normalised_and_case_folded(server_api):
    decomposed = unicodedata.normalize("NFD", UNICODE_TITLE.upper())
    escaped = 'title eq "' + decomposed.replace('"', '\\"') + '"'
    reply = await server_api.get(f"/v1/vaults/{K8S}/items?filter={urllib.parse.quote(escaped)}")
    assert _titles(reply) == [UNICODE_TITLE]
    escape_sequence = urllib.parse.quote(
        'title eq "Say \\"hi\\" to Zo\\u00eb \\u2014 \\u6771\\u4eac \\ud83d\\udd11"'
    )
    assert _titles(await server_api.get(f"/v1/vaults/{K8S}/items?filter={escape_sequence}")) == [
        UNICODE_TITLE
    ]


async def test_duplicate_titles_are_scoped_to_the_vault(server_api):
    k8s = await server_api.get(f"/v1/vaults/{K8S}/items?filter=title+eq+%22shared-title%22")
    platform = await server_api.get(f"/v1/vaults/{PLATFORM}/items?filter=title+eq+%22shared-title%22")
    assert [(item["id"], item["vault"]["id"]) for item in k8s.json()] == [("sharedtitlek8s000000000001", K8S)]
    assert [(item["id"], item["vault"]["id"]) for item in platform.json()] == [
        ("sharedtitleplatform0000001", PLATFORM)
    ]
    twins = await server_api.get(f"/v1/vaults/{PLATFORM}/items?filter=title+eq+%22twin%22")
    assert [item["createdAt"] for item in twins.json()] == ["2024-03-01T00:00:00Z", "2024-03-02T00:00:00Z"]


async def test_other_operators_and_attributes(server_api):
    cases = {
        'tag eq "prod"': ["db-credentials"],
        'tags eq "PROD"': ["db-credentials"],
        'title co "CRED"': ["db-credentials"],
        'title sw "test26"': ["test26charlongitemtitle123"],
        'title ew "title"': ["shared-title"],
        'title eq "db-credentials" or title eq "shared-title"': ["db-credentials", "shared-title"],
        'category eq "login" and not (tag eq "staging")': ["db-credentials"],
        'title ne "db-credentials" and category eq "LOGIN"': [],
        "tag pr": ["db-credentials"],
        'favorite eq false and category eq "PASSWORD"': ["shared-title"],
        "": ["db-credentials", UNICODE_TITLE, "shared-title", "test26charlongitemtitle123"],
    }
    for text, expected in cases.items():
        reply = await server_api.get(f"/v1/vaults/{K8S}/items?filter={urllib.parse.quote(text)}")
        assert _titles(reply) == expected, text


async def test_invalid_filters_are_400(server_api):
    for text in (
        "title eq 'db'",
        'bogus eq "x"',
        'title zz "x"',
        '(title eq "x"',
        "title eq",
        'title eq "x" and',
        "42",
    ):
        reply = await server_api.get(f"/v1/vaults/{K8S}/items?filter={urllib.parse.quote(text)}")
        assert reply.status == 400, text
        assert reply.json()["status"] == 400
        assert reply.json()["message"].startswith("Invalid filter: ")
    vaults = await server_api.get("/v1/vaults?filter=tag+eq+%22x%22")
    assert vaults.status == 400


async def test_case_sensitive_item_filters_can_be_switched_on(connect_server_factory, raw_http):
    data = {"vaults": [{"name": "Vault", "items": [{"title": "Case", "category": "LOGIN"}]}]}
    server = await connect_server_factory(data, options=ServerOptions(filter_case_sensitive_items=True))
    api = raw_http(server, server.issue_token(["Vault"]))
    vault_id = server.store.get_vault("Vault").id
    assert _titles(await api.get(f"/v1/vaults/{vault_id}/items?filter=title+eq+%22case%22")) == []
    assert _titles(await api.get(f"/v1/vaults/{vault_id}/items?filter=title+eq+%22Case%22")) == ["Case"]
    assert len((await api.get("/v1/vaults?filter=name+eq+%22VAULT%22")).json()) == 1


def test_parser_values_and_lenient_quotes():
    attributes = {"title": ['He said "no"'], "tag": [], "favorite": [True]}
    assert parse('title eq "He said "no""', ITEM_ATTRIBUTES).matches(attributes)
    assert parse('title eq "He said \\"no\\""', ITEM_ATTRIBUTES).matches(attributes)
    assert parse("tag eq null", ITEM_ATTRIBUTES).matches(attributes)
    assert not parse("tag pr", ITEM_ATTRIBUTES).matches(attributes)
    assert parse("favorite eq TRUE", ITEM_ATTRIBUTES).matches(attributes)
    assert not parse("title eq 3", ITEM_ATTRIBUTES).matches(attributes)
    assert parse("   ", ITEM_ATTRIBUTES).matches(attributes)
    assert parse('TITLE EQ "he SAID \\"NO\\""', ITEM_ATTRIBUTES).matches(attributes)
    with pytest.raises(FilterError, match="unknown attribute 'name'"):
        parse('name eq "x"', ITEM_ATTRIBUTES)
    with pytest.raises(FilterError):
        parse('title eq "unterminated', ITEM_ATTRIBUTES)
