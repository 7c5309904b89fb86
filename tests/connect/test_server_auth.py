"""Tokens and scope rules of the local Connect server: 401 for bad tokens, 403/401/404 per vault and level."""

from __future__ import annotations

import base64
import json

import pytest

from opsync.tooling.connectserver import Access, ServerOptions, StoreLookupError, TokenError

K8S = "kubernetesvault00000000001"
PLATFORM = "platformvault0000000000001"
DB = "dbcredentials0000000000001"
NO_ACCESS = {"status": 403, "message": "Authorization: token does not have access to vault"}
NO_WRITE = {"status": 401, "message": "Unauthorized Request, token does not have write access to the Vault"}
NO_READ = {"status": 403, "message": "Authorization: token does not have read access to vault"}
NEW_ITEM = {
    "title": "new",
    "category": "PASSWORD",
    "fields": [{"purpose": "PASSWORD", "value": "canary-new"}],
}


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _header(token: str) -> dict:
    header = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))


async def test_tokens_are_es256_jwts_listing_vault_ids(connect_server):
    token = connect_server.issue_token(["Kubernetes", f"{PLATFORM},r"])
    assert _header(token)["alg"] == "ES256"
    claims = _claims(token)
    assert claims["1password.com/vts"] == [
        {"u": K8S, "a": int(Access.READ_WRITE)},
        {"u": PLATFORM, "a": int(Access.READ)},
    ]
    assert claims["1password.com/fts"] == ["vaultaccess"]
    assert claims["sub"] == connect_server.store.identity.id
    assert len(claims["jti"]) == 26
    verified = connect_server.verify_token(token)
    assert verified.access(K8S) == Access.READ_WRITE
    assert verified.access(PLATFORM) == Access.READ
    assert verified.access("nothing") == Access.NONE


def test_scope_syntax(connect_server):
    levels = {
        "kubernetes": Access.READ_WRITE,
        "Kubernetes,r": Access.READ,
        "Kubernetes,w": Access.WRITE,
        f"{K8S},rw": Access.READ_WRITE,
    }
    for spec, access in levels.items():
        claims = connect_server.verify_token(connect_server.issue_token([spec]))
        assert claims.vaults == {K8S: access}, spec
    merged = connect_server.verify_token(connect_server.issue_token(["Kubernetes,r", "Kubernetes,w"]))
    assert merged.vaults == {K8S: Access.READ_WRITE}
    with pytest.raises(StoreLookupError, match="Nowhere"):
        connect_server.issue_token(["Nowhere"])
    with pytest.raises(ValueError, match="at least one vault"):
        connect_server.issue_token([])
    with pytest.raises(TypeError):
        connect_server.issue_token("Kubernetes")


async def test_vault_names_with_commas_and_duplicates(connect_server_factory):
    server = await connect_server_factory(
        {"vaults": [{"name": "Dev, Staging"}, {"name": "Twin"}, {"name": "Twin"}]}
    )
    comma_id = server.store.get_vault("Dev, Staging").id
    assert server.verify_token(server.issue_token(["Dev, Staging"])).vaults == {comma_id: Access.READ_WRITE}
    assert server.verify_token(server.issue_token(["Dev, Staging,r"])).vaults == {comma_id: Access.READ}
    with pytest.raises(StoreLookupError, match="2 vaults are named 'Twin'"):
        server.issue_token(["Twin"])


async def test_missing_malformed_and_foreign_tokens_are_401(connect_server, connect_server_factory, raw_http):
    other = await connect_server_factory({"vaults": [{"name": "Kubernetes", "id": K8S}]})
    foreign = other.issue_token(["Kubernetes"])
    genuine = connect_server.issue_token(["Kubernetes"])
    header, payload, signature = genuine.split(".")
    widened = dict(_claims(genuine), **{"1password.com/vts": [{"u": PLATFORM, "a": int(Access.READ_WRITE)}]})
    forged_payload = base64.urlsafe_b64encode(json.dumps(widened).encode()).decode().rstrip("=")
    cases = {
        None: "Invalid bearer token",
        "": "Invalid bearer token",
        "not-a-jwt": "Invalid bearer token",
        genuine[:-10]: "Invalid bearer token",
        f"{header}.{payload}": "Invalid bearer token",
        f"{header}.%%%.{signature}": "Invalid bearer token",
        f"{header}.{forged_payload}.{signature}": "Invalid token signature",
        foreign: "Invalid token signature",
    }
    for token, message in cases.items():
        for path in ("/v1/vaults", f"/v1/vaults/{K8S}/items/{DB}", "/v1/activity", "/v1/vaults/BAD"):
            reply = await raw_http(connect_server, token).get(path)
            assert reply.status == 401, (token, path)
            assert reply.json() == {"status": 401, "message": message}, (token, path)
            assert reply.headers["WWW-Authenticate"] == "Bearer"
    basic = await raw_http(connect_server, None).get(
        "/v1/vaults", headers={"Authorization": f"Basic {genuine}"}
    )
    assert basic.status == 401
    with pytest.raises(TokenError):
        connect_server.verify_token(foreign)


async def test_expired_token_is_401(connect_server, raw_http):
    token = connect_server.issue_token(["Kubernetes"], expires_in=0)
    reply = await raw_http(connect_server, token).get("/v1/vaults")
    assert reply.status == 401
    assert reply.json()["message"] == "Invalid bearer token: token is expired (exp)"


async def test_token_for_one_vault_cannot_see_the_other(connect_server, raw_http):
    api = raw_http(connect_server, connect_server.issue_token(["Kubernetes"]))
    listed = await api.get("/v1/vaults")
    assert [vault["id"] for vault in listed.json()] == [K8S]
    filtered = await api.get("/v1/vaults?filter=name%20eq%20%22Platform%22")
    assert filtered.json() == []
    for method, path in (
        ("GET", f"/v1/vaults/{PLATFORM}"),
        ("GET", f"/v1/vaults/{PLATFORM}/items"),
        ("GET", f"/v1/vaults/{PLATFORM}/items/apitoken000000000000000001"),
        ("GET", f"/v1/vaults/{PLATFORM}/items/apitoken000000000000000001/files"),
        ("DELETE", f"/v1/vaults/{PLATFORM}/items/apitoken000000000000000001"),
    ):
        reply = await api.request(method, path)
        assert (reply.status, reply.json()) == (403, NO_ACCESS), (method, path)
    assert (await api.get(f"/v1/vaults/{K8S}/items/{DB}")).status == 200


async def test_read_only_token_cannot_write(connect_server, raw_http):
    api = raw_http(connect_server, connect_server.issue_token(["Kubernetes,r"]))
    assert (await api.get(f"/v1/vaults/{K8S}/items/{DB}")).status == 200
    writes = [
        await api.post(f"/v1/vaults/{K8S}/items", NEW_ITEM),
        await api.put(f"/v1/vaults/{K8S}/items/{DB}", {"title": "x", "category": "LOGIN"}),
        await api.patch(f"/v1/vaults/{K8S}/items/{DB}", [{"op": "replace", "path": "/title", "value": "x"}]),
        await api.delete(f"/v1/vaults/{K8S}/items/{DB}"),
    ]
    for reply in writes:
        assert (reply.status, reply.json()) == (401, NO_WRITE)
    assert connect_server.store.get_item("Kubernetes", DB).version == 1
    records = connect_server.activity.records()
    assert [record.result for record in records[:4]] == ["DENY"] * 4
    assert [record.action for record in records[:4]] == ["DELETE", "UPDATE", "UPDATE", "CREATE"]


async def test_read_only_write_status_can_be_403(connect_server_factory, raw_http):
    server = await connect_server_factory(
        {"vaults": [{"name": "V"}]}, options=ServerOptions(read_only_write_status=403)
    )
    vault_id = server.store.get_vault("V").id
    reply = await raw_http(server, server.issue_token(["V,r"])).post(f"/v1/vaults/{vault_id}/items", NEW_ITEM)
    assert reply.status == 403
    assert reply.json()["message"] == NO_WRITE["message"]


async def test_write_only_token_writes_but_cannot_read(connect_server, raw_http):
    api = raw_http(connect_server, connect_server.issue_token(["Kubernetes,w"]))
    assert [vault["id"] for vault in (await api.get("/v1/vaults")).json()] == [K8S]
    for path in (f"/v1/vaults/{K8S}", f"/v1/vaults/{K8S}/items", f"/v1/vaults/{K8S}/items/{DB}"):
        reply = await api.get(path)
        assert (reply.status, reply.json()) == (403, NO_READ), path
    patched = await api.patch(
        f"/v1/vaults/{K8S}/items/{DB}", [{"op": "replace", "path": "/title", "value": "x"}]
    )
    assert (patched.status, patched.json()) == (403, NO_READ)
    created = await api.post(f"/v1/vaults/{K8S}/items", NEW_ITEM)
    assert created.status == 200
    deleted = await api.delete(f"/v1/vaults/{K8S}/items/{created.json()['id']}")
    assert deleted.status == 204


async def test_id_syntax_is_checked_before_scope(connect_server, raw_http):
    api = raw_http(connect_server, connect_server.issue_token(["Platform,r"]))
    reply = await api.get("/v1/vaults/UPPERCASEISNOTANIDATALL001")
    assert (reply.status, reply.json()["message"]) == (400, "Invalid Vault UUID")
    reply = await api.get(f"/v1/vaults/{K8S}/items/short")
    assert (reply.status, reply.json()["message"]) == (400, "Invalid Item UUID")


async def test_deleted_vault_in_scope_is_404(connect_server, raw_http):
    api = raw_http(connect_server, connect_server.issue_token(["Platform"]))
    await connect_server.store.delete_vault("Platform")
    reply = await api.get(f"/v1/vaults/{PLATFORM}/items")
    assert (reply.status, reply.json()) == (404, {"status": 404, "message": f"vault {PLATFORM} not found"})


async def test_no_endpoint_mints_tokens(server_api):
    for path in ("/v1/tokens", "/v1/token", "/v1/auth/token"):
        reply = await server_api.post(path, {"vaults": ["Kubernetes"]})
        assert reply.status == 404


async def test_unknown_vault_status_can_be_404(connect_server_factory, raw_http):
    server = await connect_server_factory(
        {"vaults": [{"name": "A"}, {"name": "B"}]}, options=ServerOptions(unknown_vault_status=404)
    )
    api = raw_http(server, server.issue_token(["A"]))
    missing = await api.get("/v1/vaults/zzzzzzzzzzzzzzzzzzzzzzzzzz/items")
    assert (missing.status, missing.json()["message"]) == (404, "vault zzzzzzzzzzzzzzzzzzzzzzzzzz not found")
    other = await api.get(f"/v1/vaults/{server.store.get_vault('B').id}")
    assert other.status == 403
