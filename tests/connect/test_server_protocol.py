"""Protocol edges of the local Connect server, over real HTTP: 405 answers list ``Allow``."""

from __future__ import annotations

import pytest

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
