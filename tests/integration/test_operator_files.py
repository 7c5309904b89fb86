"""Files, URLs and key rules end to end, on a Connect server whose data file holds files.

Files cannot be uploaded through the Connect API, so this module starts its own Connect server
on a data file written here (with fixed ids and creation times), and an operator of its own
watching ``opf-*``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from bench.kube import Kube
from opsync.tooling.harness import ConnectServerProcess, OperatorProcess
from tests.conftest import Cluster
from tests.integration.helpers import (
    eventually,
    running_operator,
    secret_ready,
    start_connect,
    watched_namespace,
)

PREFIX = "opf-"
VAULT_ID = "filesvault0000000000000001"
CA_CERT = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
BLOB = bytes(range(256))
OLDER_TWIN_ID = "zzztwinolder00000000000001"  # the oldest, though its id sorts last
NEWER_TWIN_ID = "aaatwinnewer00000000000001"

DATA: dict[str, Any] = {
    "vaults": [
        {
            "id": VAULT_ID,
            "name": "Files",
            "items": [
                {
                    "title": "with-files",
                    "category": "LOGIN",
                    "fields": [
                        {"label": "username", "value": "app"},
                        {"label": "config.yaml", "value": "from-the-field"},
                    ],
                    "files": [
                        {"name": "ca.crt", "content": CA_CERT.decode()},
                        {"name": "blob.bin", "content_base64": base64.b64encode(BLOB).decode()},
                        {"name": "config.yaml", "content": "from-the-file"},
                        {"name": "empty.txt", "content": ""},
                        {"name": "???", "content": "no usable key"},
                    ],
                },
                {
                    "title": "with-urls",
                    "category": "LOGIN",
                    "urls": [
                        {"href": "https://one.example", "label": "website"},
                        {"href": "https://primary.example", "label": "website", "primary": True},
                        {"href": "https://three.example", "label": "website"},
                        {"href": "https://first.example", "label": "admin"},
                        {"href": "https://last.example", "label": "admin"},
                        {"href": "https://url.example", "label": "endpoint"},
                    ],
                    "fields": [{"label": "endpoint", "value": "field-wins"}],
                },
                {
                    "title": "key-rules",
                    "category": "LOGIN",
                    "sections": [{"id": "Section_a", "label": "A"}, {"id": "Section_b", "label": "B"}],
                    "fields": [
                        {"label": "old password", "value": "spaced"},
                        {"label": "MixedCase_Key", "value": "kept"},
                        {"label": "  ~~leading and trailing~~  ", "value": "trimmed"},
                        {"label": "!!!", "value": "dropped"},
                        {"label": "host", "value": "from-a", "section": {"id": "Section_a"}},
                        {"label": "host", "value": "from-b", "section": {"id": "Section_b"}},
                        {"label": "blank", "value": ""},
                    ],
                },
                {
                    "id": OLDER_TWIN_ID,
                    "title": "twin",
                    "category": "LOGIN",
                    "createdAt": "2020-01-01T00:00:00Z",
                    "fields": [{"label": "which", "value": "older"}],
                },
                {
                    "id": NEWER_TWIN_ID,
                    "title": "twin",
                    "category": "LOGIN",
                    "createdAt": "2021-01-01T00:00:00Z",
                    "fields": [{"label": "which", "value": "newer"}],
                },
            ],
        }
    ]
}


@pytest.fixture(scope="module")
def files_connect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectServerProcess]:
    server = start_connect(tmp_path_factory.mktemp("files-connect"), vaults=["Files"], data=DATA)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def files_operator(
    cluster: Cluster,
    crds_installed: None,
    files_connect: ConnectServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    with running_operator(
        cluster, files_connect, Path(tmp_path_factory.mktemp("files-operator")), namespace_prefix=PREFIX
    ) as process:
        yield process


@pytest.fixture
def ns(api_client: client.ApiClient, files_operator: OperatorProcess) -> Iterator[str]:
    with watched_namespace(api_client, files_operator) as name:
        yield name


async def test_files_become_keys_unless_a_field_already_has_the_key(ns: str, kube: Kube) -> None:
    kube.create_item(ns, "files", "vaults/Files/items/with-files")
    condition = await eventually(lambda: secret_ready(kube, ns, "files"))
    assert kube.secret_data(ns, "files") == {
        "username": b"app",
        "config.yaml": b"from-the-field",
        "ca.crt": CA_CERT,
        "blob.bin": BLOB,
    }
    # What was left out is named in the status (names and reasons only).
    message = condition["message"]
    assert "'config.yaml'" in message and "already has this key" in message
    assert "'empty.txt'" in message and "empty value" in message
    assert "'???'" in message
    assert "from-the-file" not in message


async def test_urls_primary_wins_else_the_last_and_fields_override_urls(ns: str, kube: Kube) -> None:
    kube.create_item(ns, "urls", "vaults/Files/items/with-urls")
    await eventually(lambda: secret_ready(kube, ns, "urls"))
    assert kube.secret_data(ns, "urls") == {
        "website": b"https://primary.example",
        "admin": b"https://last.example",
        "endpoint": b"field-wins",
    }


async def test_labels_are_sanitised_the_official_way(ns: str, kube: Kube) -> None:
    kube.create_item(ns, "keys", "vaults/Files/items/key-rules")
    condition = await eventually(lambda: secret_ready(kube, ns, "keys"))
    assert kube.secret_data(ns, "keys") == {
        "old-password": b"spaced",
        "MixedCase_Key": b"kept",
        "leading-and-trailing": b"trimmed",
        "host": b"from-b",
    }
    assert "'!!!'" in condition["message"] and "'blank'" in condition["message"]


async def test_the_oldest_duplicate_wins_by_creation_time_not_by_id(ns: str, kube: Kube) -> None:
    kube.create_item(ns, "twin", "vaults/Files/items/twin")
    await eventually(lambda: secret_ready(kube, ns, "twin"))
    assert kube.secret_data(ns, "twin") == {"which": b"older"}
    assert kube.item(ns, "twin")["status"]["itemPath"] == f"vaults/{VAULT_ID}/items/{OLDER_TWIN_ID}"
