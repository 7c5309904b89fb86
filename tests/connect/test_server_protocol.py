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


FILES = f"/v1/vaults/{K8S}/items/{DB}/files"
CA = "cacrtfile00000000000000001"


@pytest.mark.parametrize("path", [FILES, f"{FILES}/{CA}"])
@pytest.mark.parametrize("name", ["inline_files", "inline_content"])
@pytest.mark.parametrize("value", ["11949999", "1", "yes", "on", "null", "tru", "true%20", "%EF%BC%91"])
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
        ("inline_files=", False),
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
    for query in ("limit=0", "offset=9223372036854775807", "limit=&offset=", "limit=007"):
        reply = await server_api.get(f"/v1/activity?{query}")
        assert reply.status == 200, query
