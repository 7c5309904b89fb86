"""Conformance suite for the item → Secret mapping: one case per rule of the official operator."""

from __future__ import annotations

from typing import Any

import pytest

from opsync.connect.models import FullItem
from opsync.core import mapping


def item(
    *, urls: list[dict[str, Any]] = (), fields: list[dict[str, Any]] = (), files: list[dict[str, Any]] = ()
) -> FullItem:  # type: ignore[assignment]
    return FullItem.model_validate(
        {
            "id": "ztbbvtbhjbxzuxrvgvwkrv4nty",
            "title": "db",
            "category": "LOGIN",
            "vault": {"id": "kdwtq2m6g6v3u4r2l7tfvsu2pm"},
            "version": 3,
            "urls": list(urls),
            "fields": list(fields),
            "files": list(files),
        }
    )


def data(mapped: mapping.MappedItem) -> dict[str, bytes]:
    return dict(mapped.data)


CASES: list[tuple[str, FullItem, dict[str, bytes], dict[str, bytes]]] = [
    (
        "fields keyed by label",
        item(
            fields=[
                {"id": "a", "label": "username", "value": "admin"},
                {"id": "b", "label": "password", "value": "pw"},
            ]
        ),
        {},
        {"username": b"admin", "password": b"pw"},
    ),
    (
        "duplicate labels across sections: the last field wins",
        item(
            fields=[
                {"id": "a", "label": "host", "value": "one", "section": {"id": "s1"}},
                {"id": "b", "label": "host", "value": "two", "section": {"id": "s2"}},
            ]
        ),
        {},
        {"host": b"two"},
    ),
    (
        "URLs keyed by label",
        item(urls=[{"label": "website", "href": "https://a.example"}]),
        {},
        {"website": b"https://a.example"},
    ),
    (
        "duplicate URL labels: the primary wins even when first",
        item(
            urls=[
                {"label": "site", "href": "https://primary.example", "primary": True},
                {"label": "site", "href": "https://other.example"},
            ]
        ),
        {},
        {"site": b"https://primary.example"},
    ),
    (
        "duplicate URL labels without a primary: the last wins",
        item(
            urls=[
                {"label": "site", "href": "https://one.example"},
                {"label": "site", "href": "https://two.example"},
            ]
        ),
        {},
        {"site": b"https://two.example"},
    ),
    (
        "fields override URLs",
        item(
            urls=[{"label": "host", "href": "https://url.example"}],
            fields=[{"id": "a", "label": "host", "value": "field"}],
        ),
        {},
        {"host": b"field"},
    ),
    (
        "files keyed by name",
        item(files=[{"id": "f1", "name": "tls.crt"}]),
        {"f1": b"PEM"},
        {"tls.crt": b"PEM"},
    ),
    (
        "files shadowed by a field keep the field",
        item(
            fields=[{"id": "a", "label": "config.json", "value": "from-field"}],
            files=[{"id": "f1", "name": "config.json"}],
        ),
        {"f1": b"from-file"},
        {"config.json": b"from-field"},
    ),
    (
        "valid keys keep their case",
        item(fields=[{"id": "a", "label": "DB_Password", "value": "x"}]),
        {},
        {"DB_Password": b"x"},
    ),
    (
        "invalid inner characters become one dash",
        item(
            fields=[
                {"id": "a", "label": "old password", "value": "x"},
                {"id": "b", "label": "a  /  b", "value": "y"},
            ]
        ),
        {},
        {"old-password": b"x", "a-b": b"y"},
    ),
    (
        "invalid characters at the edges are stripped",
        item(fields=[{"id": "a", "label": "  (api key)!  ", "value": "x"}]),
        {},
        {"api-key": b"x"},
    ),
    (
        "unicode labels: only the valid characters remain",
        item(fields=[{"id": "a", "label": "mot de passe é", "value": "x"}]),
        {},
        {"mot-de-passe": b"x"},
    ),
    (
        "a label with nothing usable is skipped",
        item(fields=[{"id": "a", "label": "???", "value": "x"}, {"id": "b", "label": "", "value": "y"}]),
        {},
        {},
    ),
    (
        "keys are cut to 253 characters",
        item(fields=[{"id": "a", "label": "k" * 300 + " x", "value": "x"}]),
        {},
        {"k" * 253: b"x"},
    ),
    (
        "empty values are skipped",
        item(fields=[{"id": "a", "label": "empty", "value": ""}, {"id": "b", "label": "none"}]),
        {},
        {},
    ),
    (
        # A deviation, on purpose: the official operator keeps "." and ".." as keys (they are
        # valid by its check) and the API server then refuses the whole Secret. opsync skips
        # them, writes the rest and names them in the status (see the test below).
        "labels '.' and '..' are skipped, the rest is written",
        item(
            fields=[
                {"id": "a", "label": ".", "value": "one"},
                {"id": "b", "label": "..", "value": "two"},
                {"id": "c", "label": "kept", "value": "three"},
            ],
            files=[{"id": "f1", "name": ".."}],
        ),
        {"f1": b"x"},
        {"kept": b"three"},
    ),
    (
        "empty files are skipped",
        item(files=[{"id": "f1", "name": "empty.txt"}]),
        {"f1": b""},
        {},
    ),
]


@pytest.mark.parametrize(
    ("source", "files", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_official_mapping_rules(
    source: FullItem, files: dict[str, bytes], expected: dict[str, bytes]
) -> None:
    assert data(mapping.item_to_data(source, files)) == expected


def test_empty_values_are_kept_when_allowed() -> None:
    source = item(
        urls=[{"label": "site", "href": ""}],
        fields=[{"id": "a", "label": "empty", "value": ""}, {"id": "b", "label": "none"}],
        files=[{"id": "f1", "name": "empty.txt"}],
    )
    mapped = mapping.item_to_data(source, {"f1": b""}, allow_empty_values=True)
    assert data(mapped) == {"site": b"", "empty": b"", "none": b"", "empty.txt": b""}


def test_skipped_entries_name_the_reason_but_never_the_value() -> None:
    source = item(
        fields=[
            {"id": "a", "label": "???", "value": "canary-value-1"},
            {"id": "b", "label": "e", "value": ""},
        ],
        files=[{"id": "f1", "name": "e"}, {"id": "f2", "name": "missing"}],
    )
    mapped = mapping.item_to_data(source, {"f1": b"canary-value-2"})
    reasons = {(s.source, s.name): s.reason for s in mapped.skipped}
    assert set(reasons) == {("field", "???"), ("field", "e"), ("file", "missing")}
    assert "canary" not in repr(mapped)


def test_labels_dot_and_dot_dot_are_named_as_skipped() -> None:
    source = item(
        fields=[{"id": "a", "label": ".", "value": "v"}, {"id": "b", "label": "..", "value": "v"}],
        files=[{"id": "f1", "name": "."}],
    )
    skipped = mapping.item_to_data(source, {"f1": b"x"}).skipped
    assert {(s.source, s.name) for s in skipped} == {("field", "."), ("field", ".."), ("file", ".")}
    assert all("Secret key" in s.reason for s in skipped), skipped


def test_a_file_key_taken_by_a_field_is_reported() -> None:
    source = item(fields=[{"id": "a", "label": "k", "value": "v"}], files=[{"id": "f1", "name": "k"}])
    (skip,) = mapping.item_to_data(source, {"f1": b"x"}).skipped
    assert (skip.source, skip.name) == ("file", "k")


@pytest.mark.parametrize(
    ("label", "key"),
    [
        ("password", "password"),
        ("a.b-c_D", "a.b-c_D"),
        ("..", ""),
        (" . ", ""),
        ("x/../y", "x-..-y"),
        ("", ""),
    ],
)
def test_sanitize_key(label: str, key: str) -> None:
    assert mapping.sanitize_key(label) == key


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("db-credentials", "db-credentials"),
        ("DB Credentials", "db-credentials"),
        ("-My_App.Secret-", "my-app.secret"),
        ("a" * 300, "a" * 253),
    ],
)
def test_sanitize_secret_name(name: str, expected: str) -> None:
    assert mapping.sanitize_secret_name(name) == expected


def test_secret_data_repr_shows_keys_and_sizes_only() -> None:
    secret = mapping.SecretData({"password": b"hunter2-canary"})
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret)
    assert repr(secret) == "SecretData({password: 14 bytes})"


def test_digest_tells_data_apart() -> None:
    one = mapping.SecretData({"a": b"bc"})
    assert one.digest() == mapping.SecretData({"a": b"bc"}).digest()
    assert one.digest() != mapping.SecretData({"ab": b"c"}).digest()
    assert one.digest() != mapping.SecretData({"a": b"bd"}).digest()
