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


LONG = "k" * 300
"""A label whose key is cut to 253 characters; messages show its first 40 and an ellipsis."""
LONG_NAME = "k" * 40 + "…"

# What the official rules drop or change without a word is named here, by label (never by
# value): (source, name, words of the reason, kept). ``kept`` marks a note whose value is
# written all the same.
NAMED: list[tuple[str, FullItem, dict[str, bytes], dict[str, bytes], list[tuple[str, str, str, bool]]]] = [
    (
        "labels that sanitise to one key: the last wins, the others are named",
        item(
            fields=[
                {"id": "a", "label": "a b", "value": "one"},
                {"id": "b", "label": "a-b", "value": "two"},
                {"id": "c", "label": "a  b!", "value": "three"},
            ]
        ),
        {},
        {"a-b": b"three"},
        [
            ("field", "a b", "its key a-b is taken by a later field 'a-b'; the last wins", False),
            ("field", "a-b", "its key a-b is taken by a later field 'a  b!'; the last wins", False),
        ],
    ),
    (
        # The official documented rule, not named: a label given twice (say in two sections).
        "the same label in two sections: the last wins and nothing is named",
        item(
            fields=[
                {"id": "a", "label": "host", "value": "one", "section": {"id": "s1"}},
                {"id": "b", "label": "host", "value": "two", "section": {"id": "s2"}},
            ]
        ),
        {},
        {"host": b"two"},
        [],
    ),
    (
        "a URL whose key a field takes is named, even under the same label",
        item(
            urls=[{"label": "host", "href": "https://url.example"}],
            fields=[{"id": "a", "label": "host", "value": "field"}],
        ),
        {},
        {"host": b"field"},
        [("url", "host", "its key host is taken by the field 'host'; fields override URLs", False)],
    ),
    (
        "URL labels that sanitise to one key: the last wins, the other is named",
        item(
            urls=[
                {"label": "my site", "href": "https://one.example"},
                {"label": "my-site", "href": "https://two.example"},
            ]
        ),
        {},
        {"my-site": b"https://two.example"},
        [("url", "my site", "its key my-site is taken by a later URL 'my-site'; the last wins", False)],
    ),
    (
        "a primary URL keeps its key from a later URL with another label, which is named",
        item(
            urls=[
                {"label": "my site", "href": "https://primary.example", "primary": True},
                {"label": "my-site", "href": "https://other.example"},
            ]
        ),
        {},
        {"my-site": b"https://primary.example"},
        [("url", "my-site", "its key my-site is taken by the primary URL 'my site'", False)],
    ),
    (
        "the same URL label twice: the primary wins and nothing is named",
        item(
            urls=[
                {"label": "site", "href": "https://primary.example", "primary": True},
                {"label": "site", "href": "https://other.example"},
            ]
        ),
        {},
        {"site": b"https://primary.example"},
        [],
    ),
    (
        "a file whose key an earlier file has names that file",
        item(files=[{"id": "f1", "name": "a b"}, {"id": "f2", "name": "a-b"}]),
        {"f1": b"one", "f2": b"two"},
        {"a-b": b"one"},
        [("file", "a-b", "the file 'a b' already has this key", False)],
    ),
    (
        "a field emptied by the rules does not take the key",
        item(fields=[{"id": "a", "label": "a b", "value": "one"}, {"id": "b", "label": "a-b", "value": ""}]),
        {},
        {"a-b": b"one"},
        [("field", "a-b", "empty value", False)],
    ),
    (
        "a key cut to 253 characters is noted, and its value written",
        item(fields=[{"id": "a", "label": LONG + " x", "value": "x"}]),
        {},
        {"k" * 253: b"x"},
        [("field", LONG_NAME, "written under its key cut to 253 characters", True)],
    ),
    (
        "long labels cut to one key: the last wins, names are shortened",
        item(
            fields=[
                {"id": "a", "label": LONG + " x", "value": "x"},
                {"id": "b", "label": LONG + " y", "value": "y"},
            ],
            files=[{"id": "f1", "name": LONG + ".txt"}],
        ),
        {"f1": b"file"},
        {"k" * 253: b"y"},
        [
            ("field", LONG_NAME, f"its key {LONG_NAME} is taken by a later field '{LONG_NAME}'", False),
            ("file", LONG_NAME, f"the field '{LONG_NAME}' already has this key", False),
            ("field", LONG_NAME, "written under its key cut to 253 characters", True),
        ],
    ),
]


@pytest.mark.parametrize(
    ("source", "files", "expected", "named"), [case[1:] for case in NAMED], ids=[case[0] for case in NAMED]
)
def test_what_the_rules_drop_or_change_is_named(
    source: FullItem,
    files: dict[str, bytes],
    expected: dict[str, bytes],
    named: list[tuple[str, str, str, bool]],
) -> None:
    mapped = mapping.item_to_data(source, files)
    assert data(mapped) == expected
    assert [(s.source, s.name, s.kept) for s in mapped.skipped] == [(n[0], n[1], n[3]) for n in named]
    for entry, (_, _, words, _) in zip(mapped.skipped, named, strict=True):
        assert words in entry.reason, entry


def test_dropped_entries_come_before_kept_notes() -> None:
    source = item(
        fields=[
            {"id": "a", "label": LONG + " x", "value": "x"},
            {"id": "b", "label": "a b", "value": "one"},
            {"id": "c", "label": "a-b", "value": "two"},
        ]
    )
    skipped = mapping.item_to_data(source).skipped
    assert [(s.name, s.kept) for s in skipped] == [("a b", False), (LONG_NAME, True)]


def test_names_and_reasons_stay_short() -> None:
    source = item(
        urls=[{"label": "u" * 300, "href": "https://a.example"}],
        fields=[
            {"id": "a", "label": "?" * 300, "value": "x"},
            {"id": "b", "label": "u" * 300, "value": "y"},
            {"id": "c", "label": "e" * 300, "value": ""},
        ],
        files=[{"id": "f1", "name": "f" * 300}],
    )
    skipped = mapping.item_to_data(source).skipped
    assert len(skipped) == 5, skipped  # ???, the URL, the empty field, the file, the cut key
    assert all(len(s.name) <= 41 and len(s.reason) <= 160 for s in skipped), skipped


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


def test_collapsed_and_cut_labels_are_named_but_never_their_values() -> None:
    source = item(
        urls=[{"label": "x y", "href": "https://canary-url.example"}],
        fields=[
            {"id": "a", "label": "x-y", "value": "canary-value-1"},
            {"id": "b", "label": "x  y!", "value": "canary-value-2"},
            {"id": "c", "label": LONG + " z", "value": "canary-value-3"},
        ],
        files=[{"id": "f1", "name": "x y"}],
    )
    mapped = mapping.item_to_data(source, {"f1": b"canary-value-4"})
    assert [(s.source, s.name) for s in mapped.skipped] == [
        ("url", "x y"),
        ("field", "x-y"),
        ("file", "x-y"),
        ("field", LONG_NAME),
    ]
    assert "canary" not in repr(mapped)
    assert not any("canary" in s.name or "canary" in s.reason for s in mapped.skipped)


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
