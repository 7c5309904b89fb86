"""The server's state as pydantic models; the same models are the data-file schema.

Why this module exists: the local Connect server keeps all of its state (vaults,
items, files and its own identity) in one YAML file, and that file is what users
write by hand. One set of models therefore validates the hand-written file,
fills in what may be left out (ids, versions, timestamps) and is the live state
the HTTP layer serves. Keys are the API's camelCase names (``createdAt``,
``contentVersion``), except ``content_base64`` for file content.

Secret material stays out of reprs (``repr=False`` on field values and file
content, ``SecretStr`` for the signing key) and out of validation errors
(``hide_input_in_errors=True`` on every model).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator
from pydantic.alias_generators import to_camel

ID_PATTERN = r"^[a-z0-9]{26}$"
"""Vault, item and file ids: 26 lower-case characters, as every official client validates."""

ID_RE = re.compile(ID_PATTERN)

USER_ID_PATTERN = r"^[A-Z0-9]{26}$"
"""Server, account and user ids: 26 upper-case characters, as real servers send them."""

CATEGORIES: tuple[str, ...] = (
    "LOGIN",
    "PASSWORD",
    "API_CREDENTIAL",
    "SERVER",
    "DATABASE",
    "CREDIT_CARD",
    "MEMBERSHIP",
    "PASSPORT",
    "SOFTWARE_LICENSE",
    "OUTDOOR_LICENSE",
    "SECURE_NOTE",
    "WIRELESS_ROUTER",
    "BANK_ACCOUNT",
    "DRIVER_LICENSE",
    "IDENTITY",
    "REWARD_PROGRAM",
    "DOCUMENT",
    "EMAIL_ACCOUNT",
    "SOCIAL_SECURITY_NUMBER",
    "MEDICAL_RECORD",
    "SSH_KEY",
    "CUSTOM",
)

APP_ONLY_CATEGORIES = frozenset({"CUSTOM", "DOCUMENT"})
"""Categories Connect cannot create (400), though items of them exist and can be read."""

FIELD_TYPES = frozenset(
    {
        "STRING",
        "EMAIL",
        "CONCEALED",
        "URL",
        "OTP",
        "DATE",
        "MONTH_YEAR",
        "MENU",
        "PHONE",
        "ADDRESS",
        "CREDIT_CARD_NUMBER",
        "CREDIT_CARD_TYPE",
        "GENDER",
        "REFERENCE",
        "FILE",
        "SSHKEY",
        "UNKNOWN",
    }
)
"""Field types of spec 1.7.1 plus those real servers return for app-made items (``TOTP`` is read as ``OTP``)."""

PURPOSES = frozenset({"", "USERNAME", "PASSWORD", "NOTES"})
CHARACTER_SETS = ("LETTERS", "DIGITS", "SYMBOLS")
VAULT_TYPES = ("USER_CREATED", "PERSONAL", "EVERYONE", "TRANSFER")


def new_id() -> str:
    """A fresh vault/item/file/field id: base32 of 128 random bits, lower-case, no padding."""
    return base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()


def new_user_id() -> str:
    """A fresh server/account/user id (the upper-case form real servers use)."""
    return new_id().upper()


def new_section_id() -> str:
    return f"Section_{new_id()}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``; fractional seconds only when there are any."""
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _check_category(value: str) -> str:
    if value not in CATEGORIES:
        raise ValueError(f"unknown item category; expected one of {', '.join(CATEGORIES)}")
    return value


def _check_field_type(value: str) -> str:
    if value == "TOTP":
        return "OTP"
    if value not in FIELD_TYPES:
        raise ValueError(f"unknown field type; expected one of {', '.join(sorted(FIELD_TYPES))}")
    return value


def _check_purpose(value: str) -> str:
    if value not in PURPOSES:
        raise ValueError("unknown field purpose; expected USERNAME, PASSWORD, NOTES or empty")
    return value


def _check_character_set(value: str) -> str:
    if value not in CHARACTER_SETS:
        raise ValueError(f"unknown character set; expected one of {', '.join(CHARACTER_SETS)}")
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
Category = Annotated[str, BeforeValidator(_upper), AfterValidator(_check_category)]
FieldType = Annotated[str, BeforeValidator(_upper), AfterValidator(_check_field_type)]
Purpose = Annotated[str, BeforeValidator(_upper), AfterValidator(_check_purpose)]
CharacterSet = Annotated[str, BeforeValidator(_upper), AfterValidator(_check_character_set)]
ObjectId = Annotated[str, Field(pattern=ID_PATTERN)]


class StateModel(BaseModel):
    """Base of the state models: strict about unknown keys (typos in the data file), never echoes input."""

    model_config = ConfigDict(
        hide_input_in_errors=True,
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
    )

    read_only_keys: ClassVar[frozenset[str]] = frozenset()
    """Keys the API returns that are accepted and ignored, so pasted API JSON loads."""

    @model_validator(mode="before")
    @classmethod
    def _drop_read_only_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls.read_only_keys & data.keys():
            return {key: value for key, value in data.items() if key not in cls.read_only_keys}
        return data


class SectionRef(StateModel):
    id: str = Field(min_length=1)


class Section(StateModel):
    id: str = Field(default_factory=new_section_id, min_length=1)
    label: str = ""


class Recipe(StateModel):
    """How to generate a value (data file and API): length 1-64, character sets, excluded characters."""

    length: int = Field(32, ge=1, le=64)
    character_sets: list[CharacterSet] | None = None
    exclude_characters: str = ""


class ItemField(StateModel):
    read_only_keys = frozenset({"totp"})

    id: str = Field(default_factory=new_id, min_length=1)
    type: FieldType = "STRING"
    purpose: Purpose = ""
    label: str = ""
    value: str = Field("", repr=False)
    section: SectionRef | None = None
    entropy: float | None = None
    generate: bool = False
    """Data file only: generate a value at load time (the flag is then dropped)."""
    recipe: Recipe | None = None
    """Data file only: the recipe for ``generate``."""


class ItemUrl(StateModel):
    href: str
    label: str = ""
    primary: bool = False


class ItemFile(StateModel):
    """An attached file; in the data file its bytes are ``content_base64`` (or ``content``: text or !!binary)."""

    read_only_keys = frozenset({"size", "content_path"})

    id: ObjectId = Field(default_factory=new_id)
    name: str = Field(min_length=1)
    content: bytes = Field(b"", alias="content_base64", repr=False)
    section: SectionRef | None = None

    @model_validator(mode="before")
    @classmethod
    def _content_forms(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "content" in data:
            if "content_base64" in data:
                raise ValueError("give either content or content_base64, not both")
            plain = data.pop("content")
            if isinstance(plain, str):
                plain = plain.encode("utf-8")
            if not isinstance(plain, bytes):
                raise ValueError("content must be text or !!binary")
            data["content_base64"] = plain
        elif isinstance(data.get("content_base64"), str):
            try:
                data["content_base64"] = base64.b64decode(
                    "".join(data["content_base64"].split()), validate=True
                )
            except (binascii.Error, ValueError):
                raise ValueError("content_base64 is not valid base64") from None
        return data

    @property
    def size(self) -> int:
        return len(self.content)


class Item(StateModel):
    read_only_keys = frozenset({"vault", "trashed"})

    id: ObjectId = Field(default_factory=new_id)
    title: str = ""
    category: Category
    favorite: bool = False
    tags: list[str] = Field(default_factory=list)
    urls: list[ItemUrl] = Field(default_factory=list)
    sections: list[Section] = Field(default_factory=list)
    fields: list[ItemField] = Field(default_factory=list)
    files: list[ItemFile] = Field(default_factory=list)
    version: int = Field(1, ge=1)
    created_at: UtcDatetime
    updated_at: UtcDatetime
    last_edited_by: str = ""

    @model_validator(mode="before")
    @classmethod
    def _timestamps(cls, data: Any) -> Any:
        return _fill_timestamps(data)

    @model_validator(mode="after")
    def _unique_ids(self) -> Item:
        _require_unique((field.id for field in self.fields), "field id")
        _require_unique((section.id for section in self.sections), "section id")
        _require_unique((file.id for file in self.files), "file id")
        return self

    def field(self, key: str) -> ItemField | None:
        """The field with this id, else the only field with this label (None when absent or ambiguous)."""
        for candidate in self.fields:
            if candidate.id == key:
                return candidate
        labelled = [candidate for candidate in self.fields if candidate.label == key]
        return labelled[0] if len(labelled) == 1 else None


class Vault(StateModel):
    id: ObjectId = Field(default_factory=new_id)
    name: str = Field(min_length=1)
    description: str = ""
    type: Literal["USER_CREATED", "PERSONAL", "EVERYONE", "TRANSFER"] = "USER_CREATED"
    attribute_version: int = Field(1, ge=1)
    content_version: int = Field(1, ge=1)
    created_at: UtcDatetime
    updated_at: UtcDatetime
    items: list[Item] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _timestamps(cls, data: Any) -> Any:
        return _fill_timestamps(data)

    @model_validator(mode="after")
    def _unique_item_ids(self) -> Vault:
        _require_unique((item.id for item in self.items), "item id")
        return self

    def item(self, item_id: str) -> Item | None:
        for candidate in self.items:
            if candidate.id == item_id:
                return candidate
        return None


class ServerIdentity(StateModel):
    """Who this server is and the key it signs tokens with (written to the data file on first start)."""

    id: str = Field(default_factory=new_user_id, pattern=USER_ID_PATTERN)
    account: str = Field(default_factory=new_user_id, pattern=USER_ID_PATTERN)
    signing_key: SecretStr


class DataFile(StateModel):
    """The whole data file: the vaults, then the server's identity."""

    vaults: list[Vault] = Field(default_factory=list)
    server: ServerIdentity | None = None

    @model_validator(mode="after")
    def _unique_ids(self) -> DataFile:
        _require_unique((vault.id for vault in self.vaults), "vault id")
        _require_unique((item.id for vault in self.vaults for item in vault.items), "item id")
        return self


def _fill_timestamps(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    created = data.get("createdAt", data.get("created_at"))
    updated = data.get("updatedAt", data.get("updated_at"))
    if created is not None and updated is not None:
        return data
    data = dict(data)
    now = utcnow()
    if created is None:
        data["createdAt"] = created = now
    if updated is None:
        data["updatedAt"] = created
    return data


def _require_unique(values: Any, what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}")
        seen.add(value)
