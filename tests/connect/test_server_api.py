"""The local Connect server's read endpoints, JSON shapes, headers and error answers, over real HTTP."""

from __future__ import annotations

import base64
import logging
import re

from opsync.tooling.connectserver import ConnectServer, ServerOptions

K8S = "kubernetesvault00000000001"
PLATFORM = "platformvault0000000000001"
DB = "dbcredentials0000000000001"
CA = "cacrtfile00000000000000001"
BLOB = "blobbinfile000000000000001"
API_TOKEN = "apitoken000000000000000001"
UNKNOWN = "zzzzzzzzzzzzzzzzzzzzzzzzzz"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def test_list_vaults_shape_and_order(server_api):
    reply = await server_api.get("/v1/vaults")
    assert reply.status == 200
    assert reply.headers["1Password-Connect-Version"] == "1.8.1"
    assert reply.headers["Content-Type"].startswith("application/json")
    vaults = reply.json()
    assert [vault["name"] for vault in vaults] == ["Kubernetes", "Platform"]
    kubernetes = vaults[0]
    assert kubernetes["id"] == K8S
    assert kubernetes["description"] == "Secrets synced into the cluster"
    assert kubernetes["items"] == 4
    assert kubernetes["type"] == "USER_CREATED"
    assert kubernetes["attributeVersion"] == 1
    assert kubernetes["contentVersion"] == 1
    assert kubernetes["createdAt"] == "2024-01-02T03:04:05Z"
    assert RFC3339.match(kubernetes["updatedAt"])
    assert "description" not in vaults[1]


async def test_get_vault(server_api):
    reply = await server_api.get(f"/v1/vaults/{PLATFORM}")
    assert reply.status == 200
    assert reply.json()["name"] == "Platform"
    assert reply.json()["items"] == 4


async def test_list_items_returns_summaries_with_vault_id(server_api):
    reply = await server_api.get(f"/v1/vaults/{K8S}/items")
    assert reply.status == 200
    items = reply.json()
    assert items[0]["id"] == DB
    summary = items[0]
    assert summary["vault"] == {"id": K8S}
    assert summary["title"] == "db-credentials"
    assert summary["category"] == "LOGIN"
    assert summary["version"] == 1
    assert summary["tags"] == ["k8s", "prod"]
    assert summary["urls"][0] == {"href": "https://db.example.internal", "label": "website", "primary": True}
    assert summary["urls"][1] == {"href": "https://admin.example.internal", "label": "admin console"}
    assert summary["createdAt"] == "2024-02-03T04:05:06Z"
    assert summary["trashed"] is False
    assert re.match(r"^[A-Z0-9]{26}$", summary["lastEditedBy"])
    for key in ("fields", "sections", "files"):
        assert key not in summary


async def test_get_item_full_shape(server_api):
    reply = await server_api.get(f"/v1/vaults/{K8S}/items/{DB}")
    assert reply.status == 200
    item = reply.json()
    assert item["id"] == DB and item["vault"] == {"id": K8S}
    assert item["sections"] == [
        {"id": "Section_connection", "label": "Connection"},
        {"id": "Section_replica", "label": "Replica"},
    ]
    fields = {field["id"]: field for field in item["fields"]}
    assert fields["password"]["value"] == "canary-db-password-7f3a"
    assert fields["password"]["purpose"] == "PASSWORD"
    assert fields["password"]["entropy"] > 0
    assert fields["host"]["section"] == {"id": "Section_connection"}
    assert [field["label"] for field in item["fields"]].count("password") == 2
    assert "value" not in fields["comment"]
    assert "value" not in fields["notesPlain"]
    assert "purpose" not in fields["host"]
    files = {file["id"]: file for file in item["files"]}
    assert files[CA] == {
        "id": CA,
        "name": "ca.crt",
        "size": len(b"-----BEGIN CERTIFICATE-----\nMIIBfakefakefake\n-----END CERTIFICATE-----\n"),
        "section": {"id": "Section_connection"},
        "content_path": f"/v1/vaults/{K8S}/items/{DB}/files/{CA}/content",
    }
    assert "content" not in files[BLOB]


async def test_otp_field_carries_a_current_code(server_api):
    item = (await server_api.get(f"/v1/vaults/{PLATFORM}/items/{API_TOKEN}")).json()
    otp = next(field for field in item["fields"] if field["type"] == "OTP")
    assert re.match(r"^\d{6}$", otp["totp"])


async def test_trailing_slashes_and_doubled_leading_slash_route_alike(server_api):
    for path in (
        "/v1/vaults/",
        "//v1/vaults",
        f"/v1/vaults/{K8S}/items/",
        f"/v1/vaults/{K8S}/items/{DB}/files/",
    ):
        reply = await server_api.get(path)
        assert reply.status == 200, path
        assert isinstance(reply.json(), list)


async def test_files_list_and_detail(server_api):
    listed = await server_api.get(f"/v1/vaults/{K8S}/items/{DB}/files")
    assert listed.status == 200
    assert [file["name"] for file in listed.json()] == ["ca.crt", "blob.bin"]
    assert all("content" not in file for file in listed.json())
    detail = await server_api.get(f"/v1/vaults/{K8S}/items/{DB}/files/{BLOB}")
    assert detail.status == 200
    assert detail.json()["size"] == 256
    assert detail.headers["1Password-Connect-Version"] == "1.8.1"


async def test_inline_file_content_with_both_parameter_names(server_api):
    for parameter in ("inline_files", "inline_content"):
        listed = await server_api.get(f"/v1/vaults/{K8S}/items/{DB}/files?{parameter}=true")
        assert listed.status == 200
        contents = {file["name"]: base64.b64decode(file["content"]) for file in listed.json()}
        assert contents["blob.bin"] == bytes(range(256))
        detail = await server_api.get(f"/v1/vaults/{K8S}/items/{DB}/files/{CA}?{parameter}=true")
        assert base64.b64decode(detail.json()["content"]).startswith(b"-----BEGIN CERTIFICATE-----")


async def test_inline_content_over_the_limit_is_413(connect_server_factory, raw_http):
    options = ServerOptions(max_inline_file_size_kb=1)
    server = await connect_server_factory({"vaults": [{"name": "V"}]}, options=options)
    item = await server.store.create_item("V", {"title": "big", "category": "DOCUMENT"})
    await server.store.update_item("V", item.id, files={"big.bin": b"x" * 2048, "small.txt": b"ok"})
    api = raw_http(server, server.issue_token(["V"]))
    vault_id = server.store.get_vault("V").id
    files = (await api.get(f"/v1/vaults/{vault_id}/items/{item.id}/files")).json()
    big = next(file for file in files if file["name"] == "big.bin")
    small = next(file for file in files if file["name"] == "small.txt")

    listed = await api.get(f"/v1/vaults/{vault_id}/items/{item.id}/files?inline_files=true")
    assert listed.status == 413
    assert listed.json()["status"] == 413
    assert "too large to inline" in listed.json()["message"]
    detail = await api.get(f"/v1/vaults/{vault_id}/items/{item.id}/files/{big['id']}?inline_content=true")
    assert detail.status == 413
    fine = await api.get(f"/v1/vaults/{vault_id}/items/{item.id}/files/{small['id']}?inline_files=true")
    assert fine.status == 200
    content = await api.get(big["content_path"])
    assert content.status == 200
    assert content.body == b"x" * 2048


async def test_file_content_download(server_api):
    reply = await server_api.get(f"/v1/vaults/{K8S}/items/{DB}/files/{BLOB}/content")
    assert reply.status == 200
    assert reply.body == bytes(range(256))
    assert reply.headers["Content-Type"] == "application/octet-stream"
    assert reply.headers["Content-Disposition"] == 'attachment; filename="blob.bin"'
    assert reply.headers["Content-Length"] == "256"
    assert re.match(r"^\d+\.\d+\.\d+$", reply.headers["1Password-Connect-Version"])


async def test_non_ascii_file_name_is_offered_safely(connect_server_factory, raw_http):
    server = await connect_server_factory(
        {
            "vaults": [
                {
                    "name": "V",
                    "items": [
                        {"title": "t", "category": "LOGIN", "files": [{"name": "zoë.txt", "content": "hi"}]}
                    ],
                }
            ]
        }
    )
    item = server.store.get_item("V", "t")
    api = raw_http(server, server.issue_token(["V"]))
    reply = await api.get(
        f"/v1/vaults/{server.store.get_vault('V').id}/items/{item.id}/files/{item.files[0].id}/content"
    )
    assert reply.status == 200
    assert (
        reply.headers["Content-Disposition"]
        == "attachment; filename=\"zo?.txt\"; filename*=UTF-8''zo%C3%AB.txt"
    )


async def test_error_statuses_for_missing_things(server_api):
    cases = {
        f"/v1/vaults/{K8S}/items/{UNKNOWN}": (404, f"item {UNKNOWN} not found"),
        f"/v1/vaults/{K8S}/items/{DB}/files/{UNKNOWN}": (404, f"file {UNKNOWN} not found"),
        f"/v1/vaults/{K8S}/items/{DB}/files/{UNKNOWN}/content": (404, f"file {UNKNOWN} not found"),
        f"/v1/vaults/{K8S}/items/{UNKNOWN}/files": (404, f"item {UNKNOWN} not found"),
        f"/v1/vaults/{UNKNOWN}": (403, "Authorization: token does not have access to vault"),
        f"/v1/vaults/{UNKNOWN}/items": (403, "Authorization: token does not have access to vault"),
        "/v1/vaults/Not-An-Id": (400, "Invalid Vault UUID"),
        f"/v1/vaults/{K8S}/items/db-credentials": (400, "Invalid Item UUID"),
        "/v1/nothing-here": (404, "Not Found"),
    }
    for path, (status, message) in cases.items():
        reply = await server_api.get(path)
        assert (reply.status, reply.json()) == (status, {"status": status, "message": message}), path
        assert reply.headers["1Password-Connect-Version"] == "1.8.1"


async def test_wrong_method_is_a_json_405(server_api):
    reply = await server_api.request("POST", "/v1/vaults", json_body={})
    assert reply.status == 405
    assert reply.json() == {"status": 405, "message": "Method Not Allowed"}


async def test_get_with_json_content_type_and_tracing_headers_is_fine(server_api):
    headers = {"X-B3-TraceId": "463ac35c9f6413ad", "X-B3-SpanId": "a2fb4a1d1a96d312", "X-B3-Sampled": "1"}
    reply = await server_api.request("DELETE", f"/v1/vaults/{K8S}/items/{UNKNOWN}", headers=headers)
    assert reply.status == 404
    reply = await server_api.get(
        f"/v1/vaults/{K8S}", headers={**headers, "User-Agent": "connect-sdk-go/1.5.3"}
    )
    assert reply.status == 200


async def test_heartbeat_health_and_metrics_need_no_token(connect_server: ConnectServer, raw_http):
    api = raw_http(connect_server, None)
    heartbeat = await api.get("/heartbeat")
    assert (heartbeat.status, heartbeat.body) == (200, b".")
    assert heartbeat.headers["Content-Type"].startswith("text/plain")
    health = await api.get("/health")
    assert health.status == 200
    assert health.json()["name"] == "1Password Connect API"
    assert health.json()["version"] == "1.8.1"
    assert {dependency["status"] for dependency in health.json()["dependencies"]} == {"ACTIVE"}
    metrics = await api.get("/metrics/")
    assert metrics.status == 200
    assert metrics.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


async def test_metrics_count_requests_by_route_template_and_status(connect_server, server_api, raw_http):
    await server_api.get(f"/v1/vaults/{K8S}/items/{DB}")
    await server_api.get(f"/v1/vaults/{K8S}/items/{UNKNOWN}")
    await server_api.get(f"/v1/vaults/{PLATFORM}/items/{API_TOKEN}/")
    await server_api.get("/v1/nowhere")
    item_route = "/v1/vaults/{vaultUuid}/items/{itemUuid}"
    assert connect_server.request_count(item_route) == 3
    assert connect_server.request_count(item_route, 200) == 2
    assert connect_server.request_count(f"GET {item_route}", 404) == 1
    assert connect_server.request_count("PUT " + item_route) == 0
    assert connect_server.request_count("unmatched") == 1
    text = (await raw_http(connect_server, None).get("/metrics")).body.decode()
    line = 'opsync_connect_server_requests_total{endpoint="/v1/vaults/{vaultUuid}/items/{itemUuid}",method="GET",status="200"} 2.0'
    assert line in text
    assert "opsync_connect_server_request_duration_seconds_bucket" in text
    assert K8S not in text


async def test_each_server_has_its_own_metrics(connect_server_factory, raw_http):
    first = await connect_server_factory({"vaults": []})
    second = await connect_server_factory({"vaults": []})
    await raw_http(first, None).get("/heartbeat")
    assert first.request_count("/heartbeat") == 1
    assert second.request_count("/heartbeat") == 0


async def test_activity_log_records_actions_and_pages(connect_server, server_api, connect_token):
    await server_api.get(f"/v1/vaults/{K8S}/items/{DB}")
    await server_api.get(f"/v1/vaults/{K8S}")
    await server_api.delete(f"/v1/vaults/{PLATFORM}/items/{API_TOKEN}")
    reply = await server_api.get("/v1/activity")
    assert reply.status == 200
    records = reply.json()
    assert reply.headers["Content-Range"] == f"1-{len(records)}/{len(records)}"
    newest = records[0]
    assert newest["action"] == "DELETE"
    assert newest["result"] == "SUCCESS"
    assert newest["resource"] == {
        "type": "ITEM",
        "vault": {"id": PLATFORM},
        "item": {"id": API_TOKEN},
        "itemVersion": 1,
    }
    claims = connect_server.verify_token(connect_token)
    assert newest["actor"]["jti"] == claims.token_id
    assert newest["actor"]["requestIp"] == "127.0.0.1"
    assert records[1]["resource"] == {"type": "VAULT", "vault": {"id": K8S}}
    assert records[2]["action"] == "READ"
    assert records[2]["resource"]["itemVersion"] == 1
    assert connect_token not in reply.body.decode()
    assert "canary" not in reply.body.decode()

    page = await server_api.get("/v1/activity?limit=1&offset=1")
    assert page.headers["Content-Range"] == f"2-2/{len(records)}"
    assert page.json() == [records[1]]
    beyond = await server_api.get("/v1/activity?offset=100")
    assert beyond.json() == []
    for query in ("limit=-1", "limit=ten", "offset=-3"):
        bad = await server_api.get(f"/v1/activity?{query}")
        assert bad.status == 400, query
        assert bad.json()["status"] == 400


async def test_activity_default_limit_is_50(connect_server, server_api):
    for _ in range(55):
        await server_api.get(f"/v1/vaults/{K8S}")
    reply = await server_api.get("/v1/activity")
    assert len(reply.json()) == 50
    assert reply.headers["Content-Range"] == f"1-50/{len(connect_server.activity)}"


async def test_secret_values_never_reach_logs_or_error_messages(connect_server, server_api, caplog):
    caplog.set_level(logging.DEBUG)
    canary = "canary-7c1e0d9b"
    item = f"/v1/vaults/{K8S}/items/{DB}"
    replies = [
        await server_api.post(
            f"/v1/vaults/{K8S}/items", {"category": "LOGIN", "fields": [{"value": canary}]}
        ),
        await server_api.post(f"/v1/vaults/{K8S}/items", {"category": "NOPE", "fields": [{"value": canary}]}),
        await server_api.post(
            f"/v1/vaults/{K8S}/items", {"category": "LOGIN", "fields": [{"type": "DATE", "value": canary}]}
        ),
        await server_api.post(
            f"/v1/vaults/{K8S}/items", {"category": "LOGIN", "fields": [{"value": [canary]}]}
        ),
        await server_api.patch(item, [{"op": "replace", "path": "/fields/password/value", "value": canary}]),
        await server_api.patch(item, [{"op": "replace", "path": "/tags/9", "value": canary}]),
        await server_api.patch(item, [{"op": "test", "path": "/title", "value": canary}]),
        await server_api.put(item, {"category": "LOGIN", "id": canary, "fields": [{"value": canary}]}),
        await server_api.get(item),
        await server_api.get("/v1/activity"),
    ]
    assert [reply.status for reply in replies] == [200, 400, 400, 400, 200, 400, 400, 400, 200, 200]
    for reply in replies[1:4] + replies[5:8] + replies[9:]:
        assert canary not in reply.body.decode()
    assert canary not in caplog.text
    assert "canary-db-password" not in caplog.text
    stored = connect_server.store.get_item("Kubernetes", DB)
    assert canary not in repr(stored) + str(stored) + repr(connect_server.store) + repr(connect_server)
    assert connect_server.issue_token(["Kubernetes"]) not in caplog.text
