"""Composing the Secret from the shaping fields: selection, several items, dockerConfig,
templates, typed Secrets and metadata (pure; the items are built in memory)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from opsync.connect.models import FullItem
from opsync.core.compose import MAX_DATA_BYTES, Composed, compose, sources_of
from opsync.core.crd import OnePasswordItemSpec
from opsync.core.errors import SpecError
from opsync.core.itempath import Fetched, ItemPath
from opsync.core.mapping import item_to_data

VAULT = "kdwtq2m6g6v3u4r2l7tfvsu2pm"


def fetched(
    item_id: str, title: str, fields: dict[str, str], files: dict[str, bytes] | None = None, **extra: Any
) -> Fetched:
    files = files or {}
    item = FullItem.model_validate(
        {
            "id": item_id,
            "title": title,
            "vault": {"id": VAULT},
            "version": 7,
            "tags": ["team-a"],
            "fields": [
                {"id": f"f-{label}", "label": label, "value": value} for label, value in fields.items()
            ],
            "files": [
                {"id": f"file-{name}", "name": name, "size": len(body)} for name, body in files.items()
            ],
            **extra,
        }
    )
    return Fetched(ItemPath(VAULT, item_id), item, {f"file-{name}": body for name, body in files.items()})


DB = fetched(
    "dbdbdbdbdbdbdbdbdbdbdbdbdb", "db", {"username": "admin", "password": "s3cret", "host": "db.local"}
)
API = fetched("apiapiapiapiapiapiapiapiap", "api", {"token": "tok-123", "username": "svc"})


def run(spec: dict[str, Any], *items: Fetched, type_: str | None = None) -> Composed:
    parsed = OnePasswordItemSpec.model_validate(spec)
    return compose(parsed, sources_of(parsed, parsed.itemPath), list(items), type_=type_)


def fail(spec: dict[str, Any], *items: Fetched, type_: str | None = None) -> SpecError:
    with pytest.raises(SpecError) as caught:
        run(spec, *items, type_=type_)
    return caught.value


DB_PATH = {"itemPath": "vaults/v/items/db"}


def test_no_shaping_fields_is_the_official_mapping() -> None:
    composed = run(DB_PATH, DB)
    assert dict(composed.data) == dict(item_to_data(DB.item, DB.files).data)
    assert composed.type == "Opaque" and not composed.labels and not composed.annotations


def test_fields_select_and_rename() -> None:
    composed = run(
        {**DB_PATH, "fields": [{"field": "password", "key": "DB_PASSWORD"}, {"field": "host"}]}, DB
    )
    assert dict(composed.data) == {"DB_PASSWORD": b"s3cret", "host": b"db.local"}


def test_a_missing_field_names_it() -> None:
    error = fail({**DB_PATH, "fields": [{"field": "pasword"}]}, DB)
    assert error.reason == "FieldNotFound" and "'pasword'" in str(error)


def test_two_selections_to_one_key_collide() -> None:
    error = fail(
        {**DB_PATH, "fields": [{"field": "username", "key": "u"}, {"field": "password", "key": "u"}]}, DB
    )
    assert error.reason == "KeyCollision" and "'u'" in str(error)


def test_several_items_with_prefixes() -> None:
    spec = {**DB_PATH, "items": [{"itemPath": "vaults/v/items/api", "prefix": "api_"}]}
    composed = run(spec, DB, API)
    assert dict(composed.data) == {
        "username": b"admin",
        "password": b"s3cret",
        "host": b"db.local",
        "api_token": b"tok-123",
        "api_username": b"svc",
    }


def test_items_alone_without_item_path() -> None:
    spec = {
        "items": [
            {"itemPath": "vaults/v/items/db", "fields": [{"field": "password"}]},
            {"itemPath": "vaults/v/items/api", "fields": [{"field": "token"}]},
        ]
    }
    assert dict(run(spec, DB, API).data) == {"password": b"s3cret", "token": b"tok-123"}


def test_a_key_two_items_give_is_an_error_not_an_overwrite() -> None:
    error = fail({**DB_PATH, "items": [{"itemPath": "vaults/v/items/api"}]}, DB, API)
    assert error.reason == "KeyCollision"
    assert (
        "'username'" in str(error)
        and "vaults/v/items/db" in str(error)
        and "vaults/v/items/api" in str(error)
    )
    assert "admin" not in str(error) and "svc" not in str(error)


def test_docker_config_from_fields() -> None:
    registry = fetched(
        "regregregregregregregregre", "registry", {"server": "ghcr.io", "user": "bot", "token": "ghp_x"}
    )
    composed = run(
        {
            "itemPath": "vaults/v/items/registry",
            "dockerConfig": {"serverField": "server", "usernameField": "user", "passwordField": "token"},
        },
        registry,
    )
    assert composed.type == "kubernetes.io/dockerconfigjson"
    assert list(composed.data) == [".dockerconfigjson"]
    auth = json.loads(composed.data[".dockerconfigjson"])["auths"]["ghcr.io"]
    assert base64.b64decode(auth["auth"]) == b"bot:ghp_x"


def test_docker_config_refuses_another_type_and_a_missing_field() -> None:
    spec = {
        **DB_PATH,
        "dockerConfig": {"server": "ghcr.io", "usernameField": "username", "passwordField": "password"},
    }
    assert run(spec, DB).type == "kubernetes.io/dockerconfigjson"
    assert fail(spec, DB, type_="Opaque").reason == "InvalidSpec"
    missing = {
        **DB_PATH,
        "dockerConfig": {"server": "ghcr.io", "usernameField": "username", "passwordField": "pat"},
    }
    assert fail(missing, DB).reason == "FieldNotFound"


def test_template_replaces_by_default() -> None:
    spec = {
        **DB_PATH,
        "template": {
            "stringData": {
                "dsn": "postgres://{{ item.fields.username }}:{{ item.fields.password }}@{{ data.host }}/app"
            }
        },
    }
    assert dict(run(spec, DB).data) == {"dsn": b"postgres://admin:s3cret@db.local/app"}


def test_template_merge_adds_and_refuses_a_collision() -> None:
    spec = {
        **DB_PATH,
        "template": {
            "mergePolicy": "Merge",
            "stringData": {"user_upper": "{{ item.fields.username | upper }}"},
        },
    }
    assert dict(run(spec, DB).data)["user_upper"] == b"ADMIN"
    assert len(run(spec, DB).data) == 4
    clash = {**DB_PATH, "template": {"mergePolicy": "Merge", "stringData": {"host": "x"}}}
    assert fail(clash, DB).reason == "KeyCollision"


def test_template_over_several_items_and_files() -> None:
    cert = fetched("crtcrtcrtcrtcrtcrtcrtcrtcr", "cert", {}, {"ca.pem": b"CA-BYTES"})
    spec = {
        **DB_PATH,
        "items": [{"itemPath": "vaults/v/items/cert"}],
        "template": {
            "stringData": {
                "who": "{% for i in items %}{{ i.title }};{% endfor %}",
                "ca": "{{ items[1].files['ca.pem'] }}",
            },
            "data": {"raw": "{{ items[1].files['ca.pem'].base64 }}"},
        },
    }
    assert dict(run(spec, DB, cert).data) == {"who": b"db;cert;", "ca": b"CA-BYTES", "raw": b"CA-BYTES"}


def test_template_data_must_be_base64() -> None:
    error = fail({**DB_PATH, "template": {"data": {"x": "not base64!"}}}, DB)
    assert error.reason == "TemplateError" and "template.data.x" in str(error)


def test_template_error_names_key_and_line_and_hides_values() -> None:
    error = fail(
        {**DB_PATH, "template": {"stringData": {"conf": "a\nb\n{{ item.fields[item.fields.password] }}"}}}, DB
    )
    assert error.reason == "TemplateError"
    assert "template.stringData.conf" in str(error) and "line 3" in str(error)
    assert "s3cret" not in str(error)


def test_metadata_templates_see_no_values() -> None:
    spec = {
        **DB_PATH,
        "secretLabels": {"team": "a"},
        "secretAnnotations": {"owner": "platform"},
        "template": {
            "metadata": {
                "labels": {"item-version": "{{ item.version }}"},
                "annotations": {"source": "{{ item.title }} {{ item.tags | join(',') }}"},
            }
        },
    }
    composed = run(spec, DB)
    assert composed.labels == {"team": "a", "item-version": "7"}
    assert composed.annotations == {"owner": "platform", "source": "db team-a"}
    assert len(composed.data) == 3  # metadata templates alone keep the mapped keys
    leak = {**DB_PATH, "template": {"metadata": {"annotations": {"x": "{{ item.fields.password }}"}}}}
    assert fail(leak, DB).reason == "TemplateError"
    reserved = {**DB_PATH, "template": {"metadata": {"annotations": {"opsync.io/x": "1"}}}}
    assert fail(reserved, DB).reason == "InvalidSpec"


TLS_FIELDS = {
    **DB_PATH,
    "fields": [{"field": "username", "key": "tls.crt"}, {"field": "password", "key": "tls.key"}],
}


def test_a_missing_required_key_is_refused_in_either_mode() -> None:
    # The API server would refuse such a Secret too: nothing can be written.
    for check in ({}, {"typeCheck": "Strict"}):
        error = fail(
            {**DB_PATH, "fields": [{"field": "password", "key": "tls.key"}], **check},
            DB,
            type_="kubernetes.io/tls",
        )
        assert error.reason == "MissingSecretKey" and "tls.crt" in str(error)


def test_strict_refuses_content_that_breaks_a_rule() -> None:
    bad = fail({**TLS_FIELDS, "typeCheck": "Strict"}, DB, type_="kubernetes.io/tls")
    assert bad.reason == "InvalidSecretData" and "s3cret" not in str(bad)


def test_by_default_invalid_content_is_written_as_given_and_the_problem_reported() -> None:
    # As the official operator: a tls Secret with placeholder PEM is written unchanged.
    composed = run(TLS_FIELDS, DB, type_="kubernetes.io/tls")
    assert composed.type == "kubernetes.io/tls"
    assert dict(composed.data) == {"tls.crt": b"admin", "tls.key": b"s3cret"}
    assert composed.content_checked
    assert composed.content_problem is not None and "tls.crt" in composed.content_problem
    assert "s3cret" not in composed.content_problem and "admin" not in composed.content_problem


def test_an_opaque_secret_has_no_content_rules() -> None:
    composed = run(DB_PATH, DB)
    assert not composed.content_checked and composed.content_problem is None


def test_ssh_key_is_converted_to_openssh() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ssh = fetched("sshsshsshsshsshsshsshsshss", "deploy key", {"private key": pkcs8.decode()})
    spec = {
        "itemPath": "vaults/v/items/ssh",
        "fields": [{"field": "private key", "key": "ssh-privatekey"}],
        "typeCheck": "Strict",
    }
    out = run(spec, ssh, type_="kubernetes.io/ssh-auth").data["ssh-privatekey"]
    assert out.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    # Not asked for: kept as the item holds it (the official operator converts nothing).
    lenient = run({**spec, "typeCheck": "Warn"}, ssh, type_="kubernetes.io/ssh-auth")
    assert lenient.data["ssh-privatekey"] == pkcs8 and lenient.content_problem is None


def test_basic_auth() -> None:
    assert (
        run(
            {**DB_PATH, "fields": [{"field": "username"}, {"field": "password"}]},
            DB,
            type_="kubernetes.io/basic-auth",
        ).type
        == "kubernetes.io/basic-auth"
    )
    assert (
        fail({**DB_PATH, "fields": [{"field": "host"}]}, DB, type_="kubernetes.io/basic-auth").reason
        == "MissingSecretKey"
    )


def test_a_secret_over_the_size_limit_is_refused() -> None:
    big = fetched("bigbigbigbigbigbigbigbigbi", "big", {}, {"blob.bin": b"x" * (MAX_DATA_BYTES + 1)})
    assert fail({"itemPath": "vaults/v/items/big"}, big).reason == "SecretTooLarge"


def test_sources_follow_the_spec_order() -> None:
    spec = OnePasswordItemSpec.model_validate(
        {**DB_PATH, "items": [{"itemPath": "vaults/v/items/api", "prefix": "p_"}]}
    )
    assert [(s.item_path, s.prefix) for s in sources_of(spec, spec.itemPath)] == [
        ("vaults/v/items/db", ""),
        ("vaults/v/items/api", "p_"),
    ]
    assert [s.item_path for s in sources_of(None, "vaults/v/items/x")] == ["vaults/v/items/x"]


@pytest.mark.parametrize(
    ("metadata", "named"),
    [
        ({"secretLabels": {"bad key": "x"}}, "'bad key'"),
        ({"secretLabels": {"ok": "has space"}}, "ok='has space'"),
        ({"secretLabels": {"ok": "x" * 64}}, "ok="),
        ({"secretAnnotations": {"-leading": "x"}}, "'-leading'"),
        (
            {"template": {"metadata": {"labels": {"title": "{{ item.title }} and more"}}}},
            "title='db and more'",
        ),
    ],
)
def test_invalid_labels_and_annotations_are_named_before_writing(
    metadata: dict[str, Any], named: str
) -> None:
    error = fail({**DB_PATH, **metadata}, DB)
    assert error.reason == "InvalidMetadata" and named in str(error)


def test_valid_qualified_names_pass() -> None:
    spec = {
        **DB_PATH,
        "secretLabels": {"app.kubernetes.io/name": "shop", "empty": ""},
        "secretAnnotations": {"example.com/note": "any text at all"},
    }
    composed = run(spec, DB)
    assert composed.labels["app.kubernetes.io/name"] == "shop"


def test_file_contents_are_redacted_from_template_errors() -> None:
    canary = "file-canary-content"
    with_file = fetched("filfilfilfilfilfilfilfilfi", "f", {"username": "u"}, {"note.txt": canary.encode()})
    spec = {
        "itemPath": "vaults/v/items/f",
        "fields": [{"field": "username"}],
        "template": {"stringData": {"x": "{{ ('{' ~ item.files['note.txt'].text ~ '}').format() }}"}},
    }
    error = fail(spec, with_file)
    assert error.reason == "TemplateError" and canary not in str(error)


def test_a_replace_template_tolerates_keys_two_items_give_until_it_reads_one() -> None:
    both = {**DB_PATH, "items": [{"itemPath": "vaults/v/items/api"}]}
    fine = {
        **both,
        "template": {
            "stringData": {"users": "{{ items[0].fields.username }},{{ items[1].fields.username }}"}
        },
    }
    assert dict(run(fine, DB, API).data) == {"users": b"admin,svc"}
    reads = {**both, "template": {"stringData": {"u": "{{ data.username }}"}}}
    error = fail(reads, DB, API)
    assert error.reason == "TemplateError"
    assert "'username' in data is given by more than one item" in str(error)
    assert "admin" not in str(error)
    merged = {**both, "template": {"mergePolicy": "Merge", "stringData": {"u": "x"}}}
    assert fail(merged, DB, API).reason == "KeyCollision"
