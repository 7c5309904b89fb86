"""The ``spec.fields[].field`` selector language: one case per form, plus what it refuses."""

from __future__ import annotations

import pytest

from opsync.connect.models import FullItem
from opsync.core.errors import SpecError
from opsync.core.selection import FieldNotFound, default_key, select

ITEM = FullItem.model_validate(
    {
        "id": "ztbbvtbhjbxzuxrvgvwkrv4nty",
        "title": "db",
        "vault": {"id": "kdwtq2m6g6v3u4r2l7tfvsu2pm"},
        "version": 3,
        "sections": [{"id": "s1", "label": "primary"}, {"id": "s2", "label": "replica"}],
        "urls": [
            {"label": "website", "href": "https://one.example"},
            {"label": "website", "href": "https://two.example", "primary": True},
            {"label": "docs", "href": "https://docs.example"},
        ],
        "fields": [
            {"id": "username", "label": "username", "value": "admin"},
            {"id": "password", "label": "password", "value": "s3cret"},
            {"id": "h1", "label": "host", "value": "db-1", "section": {"id": "s1"}},
            {"id": "h2", "label": "host", "value": "db-2", "section": {"id": "s2"}},
            {"id": "p1", "label": "port", "value": "5432", "section": {"id": "s1"}},
            {"id": "p2", "label": "port", "value": "5432", "section": {"id": "s2"}},
            {"id": "slash", "label": "a/b", "value": "slashed"},
            {"id": "idlike", "label": "id:x", "value": "prefixed label"},
            {"id": "blank", "label": "empty", "value": ""},
            {"id": "odd", "label": "!!!", "value": "odd"},
        ],
        "files": [
            {"id": "f1", "name": "tls.crt", "size": 4},
            {"id": "f2", "name": "missing.bin", "size": 4},
        ],
    }
)
FILES = {"f1": b"CERT"}


@pytest.mark.parametrize(
    ("selector", "key", "value"),
    [
        ("password", "password", b"s3cret"),
        ("primary/host", "host", b"db-1"),
        ("replica/host", "host", b"db-2"),
        ("h2", "host", b"db-2"),  # a field id
        ("id:h1", "host", b"db-1"),
        ("docs", "docs", b"https://docs.example"),  # a URL label
        ("url:website", "website", b"https://two.example"),  # the primary URL wins
        ("tls.crt", "tls.crt", b"CERT"),  # a file name
        ("file:tls.crt", "tls.crt", b"CERT"),
        ("a/b", "a/b", b"slashed"),  # a whole label wins over section/label
        ("field:a/b", "a/b", b"slashed"),
        ("field:id:x", "id:x", b"prefixed label"),
        ("port", "port", b"5432"),  # equal values in several sections are not ambiguous
        ("empty", "empty", b""),
    ],
)
def test_selector_forms(selector: str, key: str, value: bytes) -> None:
    selected = select(ITEM, FILES, selector)
    assert (selected.key, selected.value) == (key, value)


@pytest.mark.parametrize(
    "selector",
    ["Password", "nope", "primary/nope", "nosection/host", "id:nope", "url:nope", "file:nope", "field:h1"],
)
def test_missing_selector_is_field_not_found(selector: str) -> None:
    with pytest.raises(FieldNotFound) as caught:
        select(ITEM, FILES, selector)
    message = str(caught.value)
    assert caught.value.reason == "FieldNotFound"
    assert repr(selector) in message
    assert "'password'" in message and "'file:tls.crt'" in message  # what exists is listed
    assert "s3cret" not in message


def test_same_label_different_values_is_ambiguous() -> None:
    with pytest.raises(SpecError) as caught:
        select(ITEM, FILES, "host")
    assert caught.value.reason == "FieldAmbiguous"
    assert "'primary'" in str(caught.value) and "id:h2" in str(caught.value)
    assert "db-1" not in str(caught.value)


def test_a_file_whose_content_was_not_read() -> None:
    with pytest.raises(SpecError) as caught:
        select(ITEM, FILES, "file:missing.bin")
    assert caught.value.reason == "FileUnavailable"


def test_default_key_is_sanitised_and_refuses_nothing_left() -> None:
    assert default_key(select(ITEM, FILES, "a/b")) == "a-b"
    with pytest.raises(SpecError) as caught:
        default_key(select(ITEM, FILES, "!!!"))
    assert caught.value.reason == "InvalidKey"


def test_selected_repr_hides_the_value() -> None:
    assert "s3cret" not in repr(select(ITEM, FILES, "password"))
