"""Typed models of the 1Password Connect JSON, tolerant of newer servers and safe with secrets.

Why this module exists: everything the client receives from Connect is parsed
here before any other code sees it, so that

* secret material is wrapped from parse time on: ``Field.value`` (and the
  current OTP code, ``Field.totp``) are ``SecretStr``; inline file content is
  ``SecretBytes``. Their ``repr``/``str`` and the default JSON dump show
  ``**********``; every model has ``hide_input_in_errors=True``, so a failed
  parse never echoes a value either. Keys the server sends that this module does
  not know are kept (``extra="allow"``, so a GET → PUT round trip loses
  nothing) but their values are left out of ``repr`` as well, since an unknown
  attribute of a newer server may hold secret material;
* newer servers do not break parsing: categories, field types, purposes and the
  other enumerations are plain ``str`` fields. The values known from spec 1.7.1
  and from real servers are listed in the ``StrEnum`` classes below, which
  compare equal to those strings (``item.category == ItemCategory.LOGIN``);
* the wire shape comes back out only on request: :meth:`ConnectModel.to_wire`
  is the one serialisation path that reveals secret values (for create, replace
  and patch bodies).

Attribute names are snake_case; on the wire they are camelCase, except the
file attribute ``content_path``, which Connect spells in snake_case.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final

import pydantic
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    SecretBytes,
    SecretStr,
    SerializationInfo,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "URL",
    "APIRequest",
    "APIRequestAction",
    "APIRequestActor",
    "APIRequestResource",
    "APIRequestResult",
    "ActivityPage",
    "CharacterSet",
    "ConnectModel",
    "ContentRange",
    "Field",
    "FieldPurpose",
    "FieldType",
    "File",
    "FullItem",
    "GeneratorRecipe",
    "Item",
    "ItemCategory",
    "ItemRef",
    "ItemState",
    "PatchOp",
    "PatchOperation",
    "ResourceType",
    "Section",
    "SectionRef",
    "ServerHealth",
    "ServiceDependency",
    "Vault",
    "VaultRef",
    "VaultType",
]

_REVEAL_KEY: Final = "opsync.connect.reveal"
"""Serialisation-context flag that makes secret types dump their real value (see ``to_wire``)."""

_MASK: Final = "**********"


# -- known enumeration values ---------------------------------------------------------------------


class VaultType(StrEnum):
    """Known values of ``Vault.type``."""

    USER_CREATED = "USER_CREATED"
    PERSONAL = "PERSONAL"
    EVERYONE = "EVERYONE"
    TRANSFER = "TRANSFER"


class ItemCategory(StrEnum):
    """Known values of ``Item.category`` (servers add new ones without notice)."""

    LOGIN = "LOGIN"
    PASSWORD = "PASSWORD"  # noqa: S105 - a category name
    API_CREDENTIAL = "API_CREDENTIAL"
    SERVER = "SERVER"
    DATABASE = "DATABASE"
    CREDIT_CARD = "CREDIT_CARD"
    MEMBERSHIP = "MEMBERSHIP"
    PASSPORT = "PASSPORT"
    SOFTWARE_LICENSE = "SOFTWARE_LICENSE"
    OUTDOOR_LICENSE = "OUTDOOR_LICENSE"
    SECURE_NOTE = "SECURE_NOTE"
    WIRELESS_ROUTER = "WIRELESS_ROUTER"
    BANK_ACCOUNT = "BANK_ACCOUNT"
    DRIVER_LICENSE = "DRIVER_LICENSE"
    IDENTITY = "IDENTITY"
    REWARD_PROGRAM = "REWARD_PROGRAM"
    DOCUMENT = "DOCUMENT"
    EMAIL_ACCOUNT = "EMAIL_ACCOUNT"
    SOCIAL_SECURITY_NUMBER = "SOCIAL_SECURITY_NUMBER"
    MEDICAL_RECORD = "MEDICAL_RECORD"
    SSH_KEY = "SSH_KEY"
    CUSTOM = "CUSTOM"


class ItemState(StrEnum):
    """Known values of ``Item.state`` (absent for active items)."""

    ARCHIVED = "ARCHIVED"
    DELETED = "DELETED"


class FieldType(StrEnum):
    """Known values of ``Field.type``: the spec's, plus those real servers send for app-made items."""

    STRING = "STRING"
    EMAIL = "EMAIL"
    CONCEALED = "CONCEALED"
    URL = "URL"
    OTP = "OTP"
    TOTP = "TOTP"
    DATE = "DATE"
    MONTH_YEAR = "MONTH_YEAR"
    MENU = "MENU"
    PHONE = "PHONE"
    ADDRESS = "ADDRESS"
    CREDIT_CARD_NUMBER = "CREDIT_CARD_NUMBER"
    CREDIT_CARD_TYPE = "CREDIT_CARD_TYPE"
    GENDER = "GENDER"
    REFERENCE = "REFERENCE"
    FILE = "FILE"
    SSHKEY = "SSHKEY"
    UNKNOWN = "UNKNOWN"


class FieldPurpose(StrEnum):
    """Known values of ``Field.purpose`` (``""`` means none)."""

    NONE = ""
    USERNAME = "USERNAME"
    PASSWORD = "PASSWORD"  # noqa: S105 - a purpose name
    NOTES = "NOTES"


class CharacterSet(StrEnum):
    """Known values of ``GeneratorRecipe.character_sets``."""

    LETTERS = "LETTERS"
    DIGITS = "DIGITS"
    SYMBOLS = "SYMBOLS"


class APIRequestAction(StrEnum):
    """Known values of ``APIRequest.action``."""

    READ = "READ"
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


class APIRequestResult(StrEnum):
    """Known values of ``APIRequest.result``."""

    SUCCESS = "SUCCESS"
    DENY = "DENY"


class ResourceType(StrEnum):
    """Known values of ``APIRequestResource.type``."""

    ITEM = "ITEM"
    VAULT = "VAULT"


class PatchOp(StrEnum):
    """The JSON Patch operations Connect supports."""

    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"


# -- secret types with a wire form ----------------------------------------------------------------


def _revealing(info: SerializationInfo) -> bool:
    context = info.context
    return isinstance(context, Mapping) and context.get(_REVEAL_KEY) is True


def _dump_secret_str(value: SecretStr, info: SerializationInfo) -> str:
    return value.get_secret_value() if _revealing(info) else _MASK


def _dump_secret_bytes(value: SecretBytes, info: SerializationInfo) -> str:
    if _revealing(info):
        return base64.b64encode(value.get_secret_value()).decode("ascii")
    return _MASK


def _decode_base64(value: object) -> object:
    """Wire file content is base64 text; bytes (or SecretBytes) given in Python pass through."""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            # Deliberately vague: the input is secret and must not end up in the message.
            raise ValueError("file content is not valid base64") from None
    return value


WireSecretStr = Annotated[SecretStr, PlainSerializer(_dump_secret_str, return_type=str, when_used="json")]
"""A ``SecretStr`` that dumps as ``**********`` in JSON, and as its value only through ``to_wire``."""

WireSecretBytes = Annotated[
    SecretBytes,
    BeforeValidator(_decode_base64),
    PlainSerializer(_dump_secret_bytes, return_type=str, when_used="json"),
]
"""``SecretBytes`` read from base64 text, written back as base64 only through ``to_wire``."""


class _Hidden:
    """Stands in for the value of an unknown attribute in ``repr``."""

    def __repr__(self) -> str:
        return "<hidden>"


_HIDDEN: Final = _Hidden()


# -- models ---------------------------------------------------------------------------------------


class ConnectModel(BaseModel):
    """Base of every Connect model: camelCase on the wire, unknown keys kept, inputs never echoed."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        hide_input_in_errors=True,
    )

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        extra = self.__pydantic_extra__ or {}
        for key, value in super().__repr_args__():
            yield (key, _HIDDEN) if key is not None and key in extra else (key, value)

    def to_wire(self) -> dict[str, Any]:
        """The JSON body Connect expects, with secret values revealed: the one path that does so.

        Attributes that are ``None`` are left out; unknown attributes received from
        the server are sent back unchanged.
        """
        return self.model_dump(
            mode="json",
            by_alias=True,
            exclude_none=True,
            context={_REVEAL_KEY: True},
        )


class VaultRef(ConnectModel):
    """A reference to a vault, as in ``item.vault``."""

    id: str


class ItemRef(ConnectModel):
    """A reference to an item, as in an activity record."""

    id: str | None = None


class SectionRef(ConnectModel):
    """A reference to a section, as in ``field.section`` and ``file.section``."""

    id: str | None = None
    label: str | None = None


class Vault(ConnectModel):
    """A vault the token can see."""

    id: str
    name: str | None = None
    description: str | None = None
    attribute_version: int | None = None
    """Version of the vault's own attributes (name, description…)."""
    content_version: int | None = None
    """Version of the vault's contents: goes up when an item in it changes."""
    items: int | None = None
    """Number of active items in the vault."""
    type: str | None = None
    """One of :class:`VaultType`, or a value newer than this client."""
    created_at: datetime | None = None
    updated_at: datetime | None = None


class URL(ConnectModel):
    """A URL of an item."""

    href: str
    label: str | None = None
    primary: bool | None = None


class GeneratorRecipe(ConnectModel):
    """How Connect should generate a value for a field with ``generate=True``."""

    length: int | None = None
    character_sets: list[str] | None = None
    """Values of :class:`CharacterSet`."""
    exclude_characters: str | None = None


class Section(ConnectModel):
    """A section of an item; fields and files point at it by id."""

    id: str | None = None
    label: str | None = None


class Field(ConnectModel):
    """A field of an item. ``value`` is secret; ``label`` is what the operator turns into a key."""

    id: str | None = None
    """Required in responses; may be left out when creating an item."""
    type: str = FieldType.STRING
    """One of :class:`FieldType`, or a value newer than this client."""
    purpose: str | None = None
    """One of :class:`FieldPurpose`, or a value newer than this client."""
    label: str | None = None
    value: WireSecretStr | None = None
    section: SectionRef | None = None
    generate: bool | None = None
    recipe: GeneratorRecipe | None = None
    entropy: float | None = None
    totp: WireSecretStr | None = None
    """The current one-time code of an OTP field (read-only)."""


class File(ConnectModel):
    """A file attached to an item. ``content`` is only set when asked for inline."""

    id: str | None = None
    name: str | None = None
    size: int | None = None
    content_path: str | None = pydantic.Field(default=None, alias="content_path")
    section: SectionRef | None = None
    content: WireSecretBytes | None = None


class Item(ConnectModel):
    """An item overview, as the list endpoint returns it: no fields, sections or files."""

    id: str | None = None
    """Set by Connect; left out when creating an item."""
    title: str | None = None
    vault: VaultRef | None = None
    category: str | None = None
    """One of :class:`ItemCategory`, or a value newer than this client (required when creating)."""
    urls: list[URL] | None = None
    favorite: bool | None = None
    tags: list[str] | None = None
    version: int | None = None
    """Goes up by one with every change of the item."""
    state: str | None = None
    """One of :class:`ItemState`; absent for an active item."""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_edited_by: str | None = None


class FullItem(Item):
    """A whole item: the overview plus sections, fields (with values) and file metadata."""

    sections: list[Section] | None = None
    fields: list[Field] | None = None
    files: list[File] | None = None


class PatchOperation(ConnectModel):
    """One operation of a JSON Patch (RFC 6902) document for ``PATCH …/items/{id}``.

    ``path`` addresses fields by id, e.g. ``/fields/password/value``. ``value``
    may be any JSON value or a model (such as a :class:`Field`); it is kept out
    of ``repr`` because it is usually secret.
    """

    op: str
    """One of :class:`PatchOp`."""
    path: str
    value: Any = pydantic.Field(default=None, repr=False)

    @classmethod
    def add(cls, path: str, value: Any) -> PatchOperation:
        return cls(op=PatchOp.ADD, path=path, value=value)

    @classmethod
    def replace(cls, path: str, value: Any) -> PatchOperation:
        return cls(op=PatchOp.REPLACE, path=path, value=value)

    @classmethod
    def remove(cls, path: str) -> PatchOperation:
        return cls(op=PatchOp.REMOVE, path=path)

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"op": str(self.op), "path": self.path}
        if "value" in self.model_fields_set:
            body["value"] = _wire_value(self.value)
        return body


def _wire_value(value: Any) -> Any:
    """A JSON value with models and secret types turned into their wire (revealed) form."""
    if isinstance(value, ConnectModel):
        return value.to_wire()
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, SecretBytes):
        return base64.b64encode(value.get_secret_value()).decode("ascii")
    if isinstance(value, Mapping):
        return {str(key): _wire_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_wire_value(item) for item in value]
    return value


class APIRequestActor(ConnectModel):
    """Who made a request: the token (``jti``) and where it came from."""

    id: str | None = None
    account: str | None = None
    jti: str | None = None
    user_agent: str | None = None
    request_ip: str | None = None


class APIRequestResource(ConnectModel):
    """What a request touched."""

    type: str | None = None
    """One of :class:`ResourceType`."""
    vault: VaultRef | None = None
    item: ItemRef | None = None
    item_version: int | None = None


class APIRequest(ConnectModel):
    """One record of ``GET /v1/activity``."""

    request_id: str | None = None
    timestamp: datetime | None = None
    action: str | None = None
    """One of :class:`APIRequestAction`."""
    result: str | None = None
    """One of :class:`APIRequestResult`."""
    actor: APIRequestActor | None = None
    resource: APIRequestResource | None = None


_CONTENT_RANGE: Final = re.compile(r"^\s*(?:[A-Za-z]+\s+)?(\d+)-(\d+)/(\d+|\*)\s*$")


class ContentRange(ConnectModel):
    """The ``Content-Range`` header of the activity endpoint, ``<start>-<end>/<total>``."""

    start: int
    end: int
    total: int | None = None
    """``None`` when the server answers ``*`` (unknown)."""

    @classmethod
    def parse(cls, header: str | None) -> ContentRange | None:
        """Parse the header; ``None`` when it is absent or not in that shape."""
        if not header:
            return None
        match = _CONTENT_RANGE.match(header)
        if match is None:
            return None
        start, end, total = match.groups()
        return cls(start=int(start), end=int(end), total=None if total == "*" else int(total))


class ActivityPage(ConnectModel):
    """One page of API activity, with the range the server says it covers."""

    requests: list[APIRequest]
    range: ContentRange | None = None


class ServiceDependency(ConnectModel):
    """The state of one dependency of the Connect server (``sqlite``, ``sync``…)."""

    service: str | None = None
    status: str | None = None
    message: str | None = None


class ServerHealth(ConnectModel):
    """``GET /health``: the server's name, version and dependencies."""

    name: str
    version: str
    dependencies: list[ServiceDependency] = pydantic.Field(default_factory=list)
