"""The Connect models: spec examples parse, newer servers don't break them, secrets stay hidden."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import SecretBytes, SecretStr, ValidationError

from opsync.connect.models import (
    APIRequest,
    ContentRange,
    Field,
    FieldPurpose,
    FieldType,
    File,
    FullItem,
    GeneratorRecipe,
    Item,
    ItemCategory,
    PatchOp,
    PatchOperation,
    ServerHealth,
    Vault,
    VaultType,
)

CANARY = "canary-7f3a9c1e-d0e4-4b8b-9a55-2f6c0c9b1d77"
FILE_CANARY = b"-----BEGIN PRIVATE KEY-----\ncanary-file-5d2b8e\n-----END PRIVATE KEY-----\n"

# Shapes as in the OpenAPI spec 1.7.1 and the behaviour document (values made up).
SPEC_FILE = {
    "id": "6r65pjq33banznomn7q22sj44e",
    "name": "foo.txt",
    "size": 35,
    "content_path": "v1/vaults/ionaiwtdvgclrixbt6ztpqcxnq/items/p7eflcy7f5mk7vg6zrzf5rjjyu/files/6r65pjq33banznomn7q22sj44e/content",
    "content": "VGhlIGZ1dHVyZSBiZWxvbmdzIHRvIHRoZSBjdXJpb3VzLgo=",
}

SPEC_VAULT = {
    "id": "pcus37gspiswp56mujnpuejw4a",
    "name": "Kubernetes Secrets",
    "description": "Secrets synced into the prod cluster",
    "attributeVersion": 2,
    "contentVersion": 57,
    "items": 12,
    "type": "USER_CREATED",
    "createdAt": "2023-11-03T12:00:01Z",
    "updatedAt": "2024-06-11T16:40:55Z",
}

SPEC_ITEM_SUMMARY = {
    "id": "f47bt2kutlchzdm4ro2hy7ltuy",
    "title": "db-credentials",
    "vault": {"id": "pcus37gspiswp56mujnpuejw4a"},
    "category": "LOGIN",
    "urls": [{"href": "https://example.com", "primary": True}, {"href": "https://example.org"}],
    "tags": ["k8s", "prod"],
    "version": 3,
    "favorite": False,
    "createdAt": "2024-05-02T09:14:07Z",
    "updatedAt": "2024-06-11T16:40:55.170Z",
    "lastEditedBy": "T5HQ2BCHYD4P5OEGQ6GUZSFNVY",
}


def full_item_json(secret: str = CANARY) -> dict[str, object]:
    return {
        **SPEC_ITEM_SUMMARY,
        "sections": [
            {"id": "Section_t5qvoq7bvruqryifcct26sr6oy", "label": "Connection"},
            {"id": "unlabelled"},
        ],
        "fields": [
            {"id": "username", "type": "STRING", "purpose": "USERNAME", "label": "username", "value": "app"},
            {
                "id": "password",
                "type": "CONCEALED",
                "purpose": "PASSWORD",
                "label": "password",
                "value": secret,
                "entropy": 189.4,
            },
            {"id": "notesPlain", "type": "STRING", "purpose": "NOTES", "label": "notesPlain"},
            {
                "id": "TOTP_nbmzbdyqmkir36zu76zyxfuysi",
                "section": {"id": "Section_t5qvoq7bvruqryifcct26sr6oy"},
                "type": "OTP",
                "label": "one-time password",
                "value": "otpauth://totp/db?secret=JBSWY3DPEHPK3PXP",
                "totp": "492039",
            },
            {
                "id": "generated",
                "type": "CONCEALED",
                "generate": True,
                "recipe": {"length": 40, "characterSets": ["LETTERS", "DIGITS"], "excludeCharacters": "abc1"},
            },
        ],
        "files": [
            {
                "id": "4ofkjnwjzdevpzzfqaxpjscffe",
                "name": "ca.crt",
                "size": 1903,
                "section": {"id": "Section_t5qvoq7bvruqryifcct26sr6oy"},
                "content_path": "/v1/vaults/pcus37gspiswp56mujnpuejw4a/items/f47bt2kutlchzdm4ro2hy7ltuy/files/4ofkjnwjzdevpzzfqaxpjscffe/content",
            }
        ],
    }


# -- spec examples ---------------------------------------------------------------------------------


def test_vault_example_parses() -> None:
    vault = Vault.model_validate(SPEC_VAULT)
    assert vault.id == "pcus37gspiswp56mujnpuejw4a"
    assert vault.name == "Kubernetes Secrets"
    assert vault.content_version == 57
    assert vault.attribute_version == 2
    assert vault.items == 12
    assert vault.type == VaultType.USER_CREATED
    assert vault.created_at is not None and vault.created_at.year == 2023


def test_item_summary_example_parses() -> None:
    item = Item.model_validate(SPEC_ITEM_SUMMARY)
    assert item.vault is not None and item.vault.id == "pcus37gspiswp56mujnpuejw4a"
    assert item.category == ItemCategory.LOGIN
    assert item.urls is not None
    assert [(u.href, u.primary) for u in item.urls] == [
        ("https://example.com", True),
        ("https://example.org", None),
    ]
    assert item.version == 3
    assert item.last_edited_by == "T5HQ2BCHYD4P5OEGQ6GUZSFNVY"
    assert item.updated_at is not None and item.updated_at.microsecond == 170000


def test_full_item_example_parses() -> None:
    item = FullItem.model_validate(full_item_json())
    assert item.sections is not None and [s.id for s in item.sections][1] == "unlabelled"
    assert item.fields is not None and item.files is not None
    by_id = {f.id: f for f in item.fields}
    assert by_id["password"].value is not None
    assert by_id["password"].value.get_secret_value() == CANARY
    assert by_id["password"].purpose == FieldPurpose.PASSWORD
    assert by_id["password"].entropy == pytest.approx(189.4)
    assert by_id["notesPlain"].value is None
    totp = by_id["TOTP_nbmzbdyqmkir36zu76zyxfuysi"]
    assert totp.type == FieldType.OTP
    assert totp.section is not None and totp.section.id == "Section_t5qvoq7bvruqryifcct26sr6oy"
    assert totp.totp is not None and totp.totp.get_secret_value() == "492039"
    recipe = by_id["generated"].recipe
    assert recipe == GeneratorRecipe(
        length=40, character_sets=["LETTERS", "DIGITS"], exclude_characters="abc1"
    )
    assert item.files[0].content_path is not None and item.files[0].content_path.endswith("/content")
    assert item.files[0].content is None


def test_file_example_decodes_inline_content() -> None:
    file = File.model_validate(SPEC_FILE)
    assert file.content is not None
    assert file.content.get_secret_value() == b"The future belongs to the curious.\n"
    assert file.size == 35
    assert file.content_path == SPEC_FILE["content_path"]


def test_api_request_example_parses() -> None:
    record = APIRequest.model_validate(
        {
            "requestId": "3c1f7c2a-6a0e-4c58-9d84-0f2a9a5b8e11",
            "timestamp": "2024-06-11T16:41:02Z",
            "action": "READ",
            "result": "SUCCESS",
            "actor": {
                "id": "HQ7RZKX2C3YMAUO4TQW6NDBLFE",
                "account": "NB4MQDX7SLJ2RFE5GYVKT3WO6A",
                "jti": "r33ngkrcmnw5y6bzt64qty5qlm",
                "userAgent": "connect-sdk-go/1.5.3",
                "requestIp": "10.0.0.12",
                "ip": "10.0.0.12",
            },
            "resource": {
                "type": "ITEM",
                "vault": {"id": "pcus37gspiswp56mujnpuejw4a"},
                "item": {"id": "f47bt2kutlchzdm4ro2hy7ltuy"},
                "itemVersion": 3,
            },
        }
    )
    assert record.actor is not None and record.actor.user_agent == "connect-sdk-go/1.5.3"
    assert record.actor.request_ip == "10.0.0.12"
    assert record.resource is not None and record.resource.item_version == 3
    assert record.resource.item is not None and record.resource.item.id == "f47bt2kutlchzdm4ro2hy7ltuy"


def test_health_example_parses() -> None:
    health = ServerHealth.model_validate(
        {
            "name": "1Password Connect API",
            "version": "1.2.1",
            "dependencies": [
                {"service": "sync", "status": "TOKEN_NEEDED"},
                {"service": "sqlite", "status": "ACTIVE", "message": "Connected to./1password.sqlite"},
            ],
        }
    )
    assert health.version == "1.2.1"
    assert [(d.service, d.status) for d in health.dependencies] == [
        ("sync", "TOKEN_NEEDED"),
        ("sqlite", "ACTIVE"),
    ]
    assert ServerHealth.model_validate({"name": "x", "version": "1"}).dependencies == []


# -- newer servers ---------------------------------------------------------------------------------


def test_unknown_enum_values_are_kept_as_strings() -> None:
    data = full_item_json()
    data["category"] = "CRYPTO_WALLET"
    data["state"] = "SHREDDED"
    data["fields"] = [{"id": "x", "type": "PASSKEY", "purpose": "OTP_SEED", "value": "v"}]
    item = FullItem.model_validate(data)
    assert item.category == "CRYPTO_WALLET"
    assert item.state == "SHREDDED"
    assert item.fields is not None and item.fields[0].type == "PASSKEY"
    assert item.fields[0].purpose == "OTP_SEED"
    vault = Vault.model_validate({**SPEC_VAULT, "type": "BUSINESS"})
    assert vault.type == "BUSINESS"
    record = APIRequest.model_validate(
        {"action": "EXPORT", "result": "THROTTLED", "resource": {"type": "FILE"}}
    )
    assert record.action == "EXPORT"


def test_known_enum_values_compare_as_strings() -> None:
    assert ItemCategory("SSH_KEY") == "SSH_KEY"
    assert FieldType.ADDRESS == "ADDRESS"
    assert FieldPurpose.NONE == ""
    assert Field(id="a").type == FieldType.STRING


def test_unknown_attributes_are_kept_and_round_trip_but_hidden_from_repr() -> None:
    data = full_item_json()
    data["passwordHistory"] = [CANARY + "-old"]
    data["fields"][1]["passwordDetails"] = {"history": [CANARY + "-older"], "strength": "FANTASTIC"}  # type: ignore[index]
    item = FullItem.model_validate(data)
    assert item.model_extra == {"passwordHistory": [CANARY + "-old"]}
    assert item.fields is not None and item.fields[1].model_extra is not None
    assert "passwordDetails" in item.fields[1].model_extra
    text = repr(item) + str(item)
    assert "passwordHistory=<hidden>" in text
    assert CANARY not in text
    wire = item.to_wire()
    assert wire["passwordHistory"] == [CANARY + "-old"]
    assert wire["fields"][1]["passwordDetails"]["strength"] == "FANTASTIC"


def test_missing_optional_attributes_parse() -> None:
    item = FullItem.model_validate({"vault": {"id": "v" * 26}, "category": "LOGIN"})
    assert item.fields is None and item.files is None and item.version is None
    assert Item.model_validate({"id": "x"}).category is None
    assert Field.model_validate({"id": "f"}).type == "STRING"


# -- secrets ---------------------------------------------------------------------------------------


def test_secret_values_never_in_repr_str_or_default_dumps() -> None:
    item = FullItem.model_validate(full_item_json())
    file = File.model_validate({**SPEC_FILE, "content": base64.b64encode(FILE_CANARY).decode()})
    for model in (item, file):
        for text in (
            repr(model),
            str(model),
            model.model_dump_json(),
            json.dumps(model.model_dump(mode="json")),
        ):
            assert CANARY not in text
            assert "canary-file" not in text
            assert base64.b64encode(FILE_CANARY).decode() not in text
    assert "492039" not in repr(item)
    assert item.fields is not None
    assert isinstance(item.model_dump()["fields"][1]["value"], SecretStr)
    assert isinstance(file.model_dump()["content"], SecretBytes)


def test_to_wire_reveals_values_in_wire_shape() -> None:
    item = FullItem.model_validate(full_item_json())
    wire = item.to_wire()
    assert wire["fields"][1]["value"] == CANARY
    assert wire["fields"][3]["totp"] == "492039"
    assert wire["lastEditedBy"] == "T5HQ2BCHYD4P5OEGQ6GUZSFNVY"
    assert wire["vault"] == {"id": "pcus37gspiswp56mujnpuejw4a"}
    assert wire["fields"][4]["recipe"] == {
        "length": 40,
        "characterSets": ["LETTERS", "DIGITS"],
        "excludeCharacters": "abc1",
    }
    assert wire["files"][0]["content_path"].startswith("/v1/")
    assert "value" not in wire["fields"][2]  # None is left out
    json.dumps(wire)  # plain JSON
    assert FullItem.model_validate(wire) == item  # and it reads back the same
    file = File.model_validate(SPEC_FILE)
    assert file.to_wire()["content"] == SPEC_FILE["content"]


def test_models_build_from_python_values() -> None:
    field = Field(id="password", type=FieldType.CONCEALED, value=SecretStr(CANARY))
    item = FullItem(title="t", category=ItemCategory.PASSWORD, fields=[field])
    assert item.to_wire()["fields"][0] == {"id": "password", "type": "CONCEALED", "value": CANARY}
    assert CANARY not in repr(item)
    file = File(id="f", content=SecretBytes(FILE_CANARY))
    assert base64.b64decode(file.to_wire()["content"]) == FILE_CANARY
    assert File(id="f", content=FILE_CANARY).content == SecretBytes(FILE_CANARY)  # type: ignore[arg-type]


def test_validation_errors_never_echo_input() -> None:
    bad_field = {"id": "password", "value": CANARY, "entropy": CANARY}
    with pytest.raises(ValidationError) as caught:
        Field.model_validate(bad_field)
    assert CANARY not in str(caught.value)
    assert CANARY not in repr(caught.value)

    bad_item = full_item_json()
    bad_item["fields"] = [{"id": "p", "value": CANARY, "section": CANARY}]
    with pytest.raises(ValidationError) as caught:
        FullItem.model_validate(bad_item)
    assert CANARY not in str(caught.value)

    with pytest.raises(ValidationError) as caught:
        Field.model_validate({"id": "password", "value": [CANARY]})
    assert CANARY not in str(caught.value)

    with pytest.raises(ValidationError) as caught:
        FullItem.model_validate_json(json.dumps({"fields": [{"id": "p", "value": CANARY, "type": 7}]}))
    assert CANARY not in str(caught.value)


def test_bad_base64_content_error_never_echoes_input() -> None:
    with pytest.raises(ValidationError) as caught:
        File.model_validate({"id": "f", "content": CANARY + "!"})
    assert CANARY not in str(caught.value)
    assert "base64" in str(caught.value)


def test_every_model_hides_input_in_errors() -> None:
    import opsync.connect.models as models

    classes = [
        value
        for value in vars(models).values()
        if isinstance(value, type) and issubclass(value, models.ConnectModel)
    ]
    assert len(classes) > 15
    for model in classes:
        assert model.model_config.get("hide_input_in_errors") is True, model.__name__


# -- patch documents -------------------------------------------------------------------------------


def test_patch_operations_serialise_to_rfc6902() -> None:
    new_field = Field(label="New Field", type=FieldType.CONCEALED, value=SecretStr(CANARY))
    ops = [
        PatchOperation.add("/fields", new_field),
        PatchOperation.replace("/fields/password/value", SecretStr(CANARY)),
        PatchOperation.replace("/title", "new title"),
        PatchOperation.replace("/tags", ["a", "b"]),
        PatchOperation.remove("/fields/notesPlain"),
        PatchOperation(op=PatchOp.REPLACE, path="/favorite", value=True),
    ]
    assert [op.to_wire() for op in ops] == [
        {
            "op": "add",
            "path": "/fields",
            "value": {"label": "New Field", "type": "CONCEALED", "value": CANARY},
        },
        {"op": "replace", "path": "/fields/password/value", "value": CANARY},
        {"op": "replace", "path": "/title", "value": "new title"},
        {"op": "replace", "path": "/tags", "value": ["a", "b"]},
        {"op": "remove", "path": "/fields/notesPlain"},
        {"op": "replace", "path": "/favorite", "value": True},
    ]
    for op in ops:
        assert CANARY not in repr(op)
    assert CANARY not in repr(PatchOperation.replace("/fields/password/value", CANARY))


# -- content range ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("1-50/1134", ContentRange(start=1, end=50, total=1134)),
        ("0-0/1", ContentRange(start=0, end=0, total=1)),
        ("items 11-20/*", ContentRange(start=11, end=20, total=None)),
        (" 3-4/4 ", ContentRange(start=3, end=4, total=4)),
        (None, None),
        ("", None),
        ("bytes */0", None),
        ("garbage", None),
    ],
)
def test_content_range_parse(header: str | None, expected: ContentRange | None) -> None:
    assert ContentRange.parse(header) == expected
