"""Shaping the Secret end to end: field selection, several items, templates, typed Secrets,
the Secret's name and metadata, the deletion policy, and what the API server refuses.

Every test applies a OnePasswordItem to the real API server and checks what the operator
(``opsync run`` in a subprocess) makes of it: the Secret's data, type, labels and
annotations, the ``Ready`` condition and the Events. The module starts a Connect server of
its own on a data file written here (fixed vault, item and field ids; files; a self-signed
certificate and an SSH key generated at import), and an operator watching ``ops-*`` that
polls every two seconds, so a change made through the Connect API shows up quickly.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_ssh_private_key,
)
from kubernetes import client

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.connect.models import PatchOperation
from opsync.core import crd
from opsync.tooling.harness import ConnectServerProcess, OperatorProcess, request_delta
from tests.conftest import Cluster
from tests.integration.helpers import (
    connect_config,
    eventually,
    running_operator,
    start_connect,
    watched_namespace,
)
from tests.pki import certificate

PREFIX = "ops-"
POLLING_INTERVAL = 2
VAULT = "Shape"
VAULT_ID = "shapevault0000000000000001"

MANAGED = "opsync.io/managed"
ITEMS_ANNOTATION = "opsync.io/items"
RETAINED_FROM = "opsync.io/retained-from"
COPIED_ANNOTATIONS = "opsync.io/copied-annotations"
ITEM_PATH_ANNOTATION = "operator.1password.io/item-path"
ITEM_VERSION_ANNOTATION = "operator.1password.io/item-version"
OPENSSH_BEGIN = b"-----BEGIN OPENSSH PRIVATE KEY-----"

# -- key material --------------------------------------------------------------------------------


def self_signed_certificate() -> tuple[bytes, bytes]:
    """A self-signed certificate and its key (PKCS#8), both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return certificate(key, "shape.example"), key.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )


TLS_CERT, TLS_KEY = self_signed_certificate()
BROKEN_CERT = b"-----BEGIN CERTIFICATE-----\nthis is not base64 !!\n-----END CERTIFICATE-----\n"
SSH_KEY = ed25519.Ed25519PrivateKey.generate()
SSH_PKCS8 = SSH_KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
SEED = bytes(range(256))  # not UTF-8: only base64 gets it through a template intact

# -- the Connect data ----------------------------------------------------------------------------

DB_PASSWORD = "s3cret-db-9c41"
API_TOKEN = "tok-api-5d72"
REGISTRY_TOKEN = "ghp_registry-3a8e"
ROTATING_PASSWORD = "rotating-v1-77aa"
ROTATED_PASSWORD = "rotating-v2-88bb"
CANARY = "canary-Zq8t3Vx1Lm"
FILE_CANARY = "filecanary-Pk2m9Rw4"


def item_id(title: str) -> str:
    """The fixed 26-character id of the item titled ``title``."""
    stem = re.sub("[^a-z0-9]", "", title)
    return stem + "0" * (26 - len(stem))


def _field(
    label: str, value: str | bytes, *, field_id: str | None = None, section: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": field_id or f"{re.sub('[^a-z0-9]', '', label)}field",
        "label": label,
        "value": value.decode() if isinstance(value, bytes) else value,
        "type": "CONCEALED" if "pass" in label or "key" in label or "token" in label else "STRING",
    }
    if section is not None:
        out["section"] = {"id": section}
    return out


def _item(title: str, *fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": item_id(title), "title": title, "category": "LOGIN", "fields": list(fields), **extra}


ITEMS: list[dict[str, Any]] = [
    _item(
        "db",
        _field("username", "admin"),
        _field("password", DB_PASSWORD),
        _field("host", "db-primary.local", field_id="dbhostprimary", section="Section_primary"),
        _field("host", "db-replica.local", field_id="dbhostreplica", section="Section_replica"),
        _field("port", "5432"),
        sections=[
            {"id": "Section_primary", "label": "primary"},
            {"id": "Section_replica", "label": "replica"},
        ],
        urls=[{"href": "https://console.db.example", "label": "console", "primary": True}],
        files=[
            {"name": "ca.pem", "content": TLS_CERT.decode()},
            {"name": "seed.bin", "content_base64": base64.b64encode(SEED).decode()},
        ],
    ),
    _item("api", _field("username", "svc"), _field("token", API_TOKEN)),
    _item("rotating", _field("password", ROTATING_PASSWORD, field_id="rotpass")),
    _item(
        "tls",
        _field("certificate", TLS_CERT),
        files=[{"name": "server.key", "content": TLS_KEY.decode()}],
    ),
    _item(
        "tls-broken",
        _field("certificate", BROKEN_CERT),
        files=[{"name": "server.key", "content": TLS_KEY.decode()}],
    ),
    _item("registry", _field("server", "ghcr.io"), _field("user", "bot"), _field("token", REGISTRY_TOKEN)),
    _item("ssh", _field("private key", SSH_PKCS8), category="SSH_KEY"),
    _item(
        "canary",
        _field("username", "canary-user"),
        _field("password", CANARY),
        files=[{"name": "canary.txt", "content": FILE_CANARY}],
    ),
]
DATA: dict[str, Any] = {"vaults": [{"id": VAULT_ID, "name": VAULT, "items": ITEMS}]}

DB_KEYS = {"username", "password", "host", "port", "console", "ca.pem", "seed.bin"}
"""What the db item gives by the official rules (the last 'host' wins, files after fields)."""


def path(title: str) -> str:
    return f"vaults/{VAULT}/items/{title}"


def resolved(title: str) -> str:
    return f"vaults/{VAULT_ID}/items/{item_id(title)}"


# -- CR bodies -----------------------------------------------------------------------------------


def pick(field: str, key: str | None = None) -> dict[str, str]:
    """One ``fields[]`` entry."""
    return {"field": field} if key is None else {"field": field, "key": key}


def source(
    title: str, *, fields: list[dict[str, str]] | None = None, prefix: str | None = None
) -> dict[str, Any]:
    """One ``items[]`` entry."""
    out: dict[str, Any] = {"itemPath": path(title)}
    if fields is not None:
        out["fields"] = fields
    if prefix is not None:
        out["prefix"] = prefix
    return out


def item_body(name: str, *, type_: str | None = None, **spec: Any) -> dict[str, Any]:
    """A OnePasswordItem; ``spec`` takes the CRD's own names (itemPath, fields, template, …)."""
    body: dict[str, Any] = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name},
        "spec": {key: value for key, value in spec.items() if value is not None},
    }
    if type_ is not None:
        body["type"] = type_
    return body


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shape_connect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectServerProcess]:
    server = start_connect(tmp_path_factory.mktemp("shape-connect"), vaults=[VAULT], data=DATA)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shape_operator(
    cluster: Cluster,
    crds_installed: None,
    shape_connect: ConnectServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    with running_operator(
        cluster,
        shape_connect,
        Path(tmp_path_factory.mktemp("shape-operator")),
        namespace_prefix=PREFIX,
        env={"POLLING_INTERVAL": str(POLLING_INTERVAL)},
    ) as process:
        yield process


@pytest.fixture
async def shape_client(shape_connect: ConnectServerProcess) -> AsyncIterator[ConnectClient]:
    async with ConnectClient(connect_config(shape_connect)) as api:
        yield api


@dataclass(frozen=True)
class SecretView:
    """What the tests look at in a Secret, with values decoded."""

    resource_version: str
    type: str
    data: dict[str, bytes]
    labels: dict[str, str]
    annotations: dict[str, str]
    owners: list[tuple[str, str, str]]
    """The ownerReferences as (kind, name, uid)."""

    @classmethod
    def of(cls, secret: client.V1Secret) -> SecretView:
        meta = secret.metadata
        assert meta is not None
        return cls(
            resource_version=str(meta.resource_version),
            type=secret.type or "Opaque",
            data={key: base64.b64decode(value) for key, value in (secret.data or {}).items()},
            labels=dict(meta.labels or {}),
            annotations=dict(meta.annotations or {}),
            owners=[(ref.kind, ref.name, ref.uid) for ref in meta.owner_references or []],
        )


@dataclass
class Shaping:
    """One test's namespace, watched by the module's operator, and what tests do in it."""

    kube: Kube
    ns: str
    operator: OperatorProcess

    # writing

    def create(self, name: str, *, type_: str | None = None, **spec: Any) -> None:
        self.kube.custom.create_namespaced_custom_object(
            crd.GROUP, crd.VERSION, self.ns, crd.PLURAL, item_body(name, type_=type_, **spec)
        )

    def patch(self, name: str, **spec: Any) -> None:
        """A JSON merge patch of the spec: ``None`` removes a key."""
        self.kube.patch_item(self.ns, name, {"spec": spec})

    def delete(self, name: str) -> None:
        self.kube.delete_item(self.ns, name)

    # reading

    def item(self, name: str) -> dict[str, Any]:
        return self.kube.item(self.ns, name)

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.item(name).get("status") or {})

    def find(self, name: str) -> SecretView | None:
        secret = self.kube.secret(self.ns, name)
        return None if secret is None else SecretView.of(secret)

    def secret(self, name: str) -> SecretView:
        found = self.find(name)
        assert found is not None, f"no Secret {name}"
        return found

    def data(self, name: str) -> dict[str, bytes]:
        return self.secret(name).data

    def labels(self, name: str) -> dict[str, str]:
        return self.secret(name).labels

    def annotations(self, name: str) -> dict[str, str]:
        return self.secret(name).annotations

    # waiting

    async def settled(self, name: str, *, ready: bool, reason: str | None = None) -> dict[str, Any]:
        """The Ready condition once it is for the CR's current generation, checked to be
        ``ready`` (and ``reason``)."""

        def check() -> dict[str, Any] | None:
            body = self.item(name)
            condition = next(
                (c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"),
                None,
            )
            if condition is None or condition.get("observedGeneration") != body["metadata"]["generation"]:
                return None
            expected = ("True" if ready else "False", reason or condition["reason"])
            if (condition["status"], condition["reason"]) != expected:
                pytest.fail(f"{name}: expected Ready {expected}, got {condition}")  # no use waiting
            return dict(condition)

        return await eventually(check)

    async def ready(self, name: str) -> dict[str, Any]:
        return await self.settled(name, ready=True, reason="Synced")

    async def failed(self, name: str, reason: str) -> dict[str, Any]:
        return await self.settled(name, ready=False, reason=reason)

    async def event(self, name: str, reason: str) -> client.CoreV1Event:
        found: list[client.CoreV1Event] = await eventually(
            lambda: [e for e in self.kube.events(self.ns, name) if e.reason == reason]
        )
        return found[-1]

    async def gone(self, name: str) -> None:
        """Wait until the OnePasswordItem ``name`` no longer exists."""

        def check() -> bool:
            try:
                self.item(name)
            except client.ApiException as exc:
                return bool(exc.status == 404)
            return False

        await eventually(check)

    def assert_unchanged(self, name: str, before: SecretView) -> None:
        """The Secret is exactly as ``before``: same resourceVersion, data, labels and annotations."""
        assert self.secret(name) == before


@pytest.fixture
def shaping(api_client: client.ApiClient, kube: Kube, shape_operator: OperatorProcess) -> Iterator[Shaping]:
    with watched_namespace(api_client, shape_operator) as name:
        yield Shaping(kube, name, shape_operator)


# -- 1. field selection --------------------------------------------------------------------------


async def test_fields_select_and_rename_with_every_selector_form(shaping: Shaping) -> None:
    shaping.create(
        "selected",
        itemPath=path("db"),
        fields=[
            pick("password", "DB_PASSWORD"),  # a label
            pick("primary/host", "DB_HOST"),  # section/label ('host' alone is ambiguous)
            pick("id:dbhostreplica", "DB_REPLICA"),  # a field id
            pick("url:console"),  # a URL label, keyed by it
            pick("file:ca.pem", "ca.crt"),  # a file
            pick("port"),  # keyed by its label
        ],
    )
    condition = await shaping.ready("selected")
    assert shaping.data("selected") == {
        "DB_PASSWORD": DB_PASSWORD.encode(),
        "DB_HOST": b"db-primary.local",
        "DB_REPLICA": b"db-replica.local",
        "console": b"https://console.db.example",
        "ca.crt": TLS_CERT,
        "port": b"5432",
    }
    assert condition["message"].startswith("Secret selected created from item version 1")
    status = shaping.status("selected")
    assert status["itemPath"] == resolved("db") and status["secretName"] == "selected"
    assert "items" not in status
    assert ITEMS_ANNOTATION not in shaping.annotations("selected")


# -- 2. a selected field that does not exist -----------------------------------------------------


async def test_a_missing_field_fails_and_leaves_the_secret_as_it_was(shaping: Shaping) -> None:
    shaping.create("missing", itemPath=path("db"), fields=[pick("password"), pick("username")])
    await shaping.ready("missing")
    before = shaping.secret("missing")

    shaping.patch("missing", fields=[pick("password"), pick("pasword", "typo")])
    condition = await shaping.failed("missing", "FieldNotFound")
    assert "'pasword'" in condition["message"] and "'db'" in condition["message"]
    assert "'password'" in condition["message"]  # the labels that exist are listed
    assert DB_PASSWORD not in condition["message"]
    event = await shaping.event("missing", "FieldNotFound")
    assert event.type == "Warning" and "'pasword'" in (event.message or "")
    shaping.assert_unchanged("missing", before)

    # A label two fields share with different values is never picked silently.
    shaping.patch("missing", fields=[pick("host")])
    condition = await shaping.failed("missing", "FieldAmbiguous")
    assert "'primary'" in condition["message"] and "'replica'" in condition["message"]
    assert "db-primary.local" not in condition["message"]
    shaping.assert_unchanged("missing", before)

    shaping.patch("missing", fields=[pick("password")])
    await shaping.ready("missing")
    assert shaping.data("missing") == {"password": DB_PASSWORD.encode()}


# -- 3. several items ----------------------------------------------------------------------------


async def test_items_with_prefix_next_to_item_path_and_alone(shaping: Shaping) -> None:
    shaping.create(
        "beside",
        itemPath=path("db"),
        fields=[pick("password", "DB_PASSWORD")],
        items=[source("api", prefix="api_")],
    )
    shaping.create(
        "alone",
        items=[
            source("db", fields=[pick("username", "db_user")]),
            source("api", fields=[pick("token")]),
        ],
    )
    await shaping.ready("beside")
    await shaping.ready("alone")
    assert shaping.data("beside") == {
        "DB_PASSWORD": DB_PASSWORD.encode(),
        "api_username": b"svc",
        "api_token": API_TOKEN.encode(),
    }
    assert shaping.data("alone") == {"db_user": b"admin", "token": API_TOKEN.encode()}
    both = [{"itemPath": resolved("db"), "itemVersion": 1}, {"itemPath": resolved("api"), "itemVersion": 1}]
    for name in ("beside", "alone"):
        status = shaping.status(name)
        assert status["items"] == both
        assert (status["itemPath"], status["itemVersion"]) == (resolved("db"), 1)
        annotations = shaping.annotations(name)
        assert annotations[ITEMS_ANNOTATION] == f"{resolved('db')}@1,{resolved('api')}@1"
        assert annotations[ITEM_PATH_ANNOTATION] == resolved("db")

    # Both items give 'username' now: an error, not an overwrite, and nothing is written.
    before = shaping.secret("beside")
    shaping.patch("beside", fields=None, items=[source("api")])
    condition = await shaping.failed("beside", "KeyCollision")
    message = condition["message"]
    assert "'username'" in message and path("db") in message and path("api") in message
    assert "admin" not in message and "svc" not in message
    await shaping.event("beside", "KeyCollision")
    shaping.assert_unchanged("beside", before)


# -- 4. a change to the second item is polled ----------------------------------------------------


async def test_a_change_to_the_second_item_is_picked_up_by_polling(
    shaping: Shaping, shape_client: ConnectClient, shape_connect: ConnectServerProcess
) -> None:
    shaping.create(
        "polled",
        itemPath=path("db"),
        fields=[pick("username")],
        items=[source("rotating", fields=[pick("password", "rotating_password")])],
    )
    await shaping.ready("polled")
    assert shaping.data("polled") == {"username": b"admin", "rotating_password": ROTATING_PASSWORD.encode()}

    before = shape_connect.requests()
    await shape_client.patch_item(
        VAULT_ID,
        item_id("rotating"),
        [PatchOperation(op="replace", path="/fields/rotpass/value", value=ROTATED_PASSWORD)],
    )
    await eventually(
        lambda: shaping.data("polled")["rotating_password"] == ROTATED_PASSWORD.encode(),
        within=POLLING_INTERVAL * 5 + 5,
    )
    assert shaping.data("polled") == {"username": b"admin", "rotating_password": ROTATED_PASSWORD.encode()}
    # Only the item that changed is read again; the first one comes from the last sync.
    delta = request_delta(before, shape_connect.requests())
    assert delta.get(("GET", "/v1/vaults/{vaultUuid}/items/{itemUuid}")) == 1, delta
    status = await eventually(lambda: (s := shaping.status("polled"))["items"][1]["itemVersion"] == 2 and s)
    assert status["items"] == [
        {"itemPath": resolved("db"), "itemVersion": 1},
        {"itemPath": resolved("rotating"), "itemVersion": 2},
    ]
    annotations = shaping.annotations("polled")
    assert annotations[ITEMS_ANNOTATION] == f"{resolved('db')}@1,{resolved('rotating')}@2"
    assert annotations[ITEM_VERSION_ANNOTATION] == "1"  # the first item's
    await shaping.event("polled", "SecretSynced")


# -- 5. templates --------------------------------------------------------------------------------

CONFIG_TEMPLATE = """\
[database]
user = {{ items[0].fields.username }}
password = {{ items[0].fields.password }}
host = {{ items[0].sections.primary.host }}
[api]
token = {{ items[1].fields.token }}"""
CONFIG_RENDERED = f"""\
[database]
user = admin
password = {DB_PASSWORD}
host = db-primary.local
[api]
token = {API_TOKEN}"""


async def test_templates_render_keys_and_metadata(shaping: Shaping) -> None:
    shaping.create(
        "rendered",
        itemPath=path("db"),
        # Without the prefix both items give 'username': a collision even though Replace
        # drops the mapped keys (they are composed first, and templates see them as 'data').
        items=[source("api", prefix="api_")],
        template={
            "stringData": {"app.ini": CONFIG_TEMPLATE, "ca.crt": "{{ item.files['ca.pem'] }}"},
            "data": {"seed.bin": "{{ item.files['seed.bin'] | b64encode }}"},
            "metadata": {
                "labels": {"example.com/item-version": "{{ item.version }}"},
                "annotations": {
                    "example.com/sources": "{% for i in items %}{{ i.title }}@{{ i.version }} {% endfor %}"
                },
            },
        },
    )
    shaping.create(
        "merged",
        itemPath=path("api"),
        template={"mergePolicy": "Merge", "stringData": {"authorization": "Bearer {{ data.token }}"}},
    )
    await shaping.ready("rendered")
    await shaping.ready("merged")

    # Replace (the default): only the rendered keys, none of the two items' own.
    data = shaping.data("rendered")
    assert set(data) == {"app.ini", "ca.crt", "seed.bin"}
    assert data["app.ini"] == CONFIG_RENDERED.encode()
    assert data["ca.crt"] == TLS_CERT
    assert data["seed.bin"] == SEED
    labels, annotations = shaping.labels("rendered"), shaping.annotations("rendered")
    assert labels == {"example.com/item-version": "1", MANAGED: "true"}
    assert annotations["example.com/sources"] == "db@1 api@1"

    assert shaping.data("merged") == {
        "username": b"svc",
        "token": API_TOKEN.encode(),
        "authorization": f"Bearer {API_TOKEN}".encode(),
    }


async def test_a_template_error_names_key_and_line_and_writes_nothing(shaping: Shaping) -> None:
    template = {
        "stringData": {"app.ini": "user = {{ item.fields.username }}", "other": "ok"},
        "data": {"seed.bin": "{{ item.files['seed.bin'] | b64encode }}"},
    }
    shaping.create("broken", itemPath=path("db"), template=template)
    await shaping.ready("broken")
    before = shaping.secret("broken")
    assert set(shaping.data("broken")) == {"app.ini", "other", "seed.bin"}

    # 'other' would render fine and 'app.ini' breaks on line 2: neither is written.
    shaping.patch(
        "broken",
        template={"stringData": {"other": "changed", "app.ini": "user = ok\n{% if %}\n"}},
    )
    condition = await shaping.failed("broken", "TemplateError")
    assert "template.stringData.app.ini" in condition["message"]
    assert "line 2" in condition["message"]
    event = await shaping.event("broken", "TemplateError")
    assert "template.stringData.app.ini" in (event.message or "")
    shaping.assert_unchanged("broken", before)

    # A template whose output is not base64 under template.data is an error too.
    shaping.patch("broken", template={"stringData": {"app.ini": "fine"}, "data": {"seed.bin": "not base64!"}})
    condition = await shaping.failed("broken", "TemplateError")
    assert "template.data.seed.bin" in condition["message"] and "base64" in condition["message"]
    shaping.assert_unchanged("broken", before)


@dataclass(frozen=True)
class Leak:
    """A template that tries to get ``secret`` into its error message."""

    template: str
    secret: str
    fields: list[dict[str, str]] | None = None
    """The canary item's fields to select (default: all of them)."""


LEAKS: dict[str, Leak] = {
    # The brief's example: a value used as a lookup key, so that "no such key" would name it.
    "lookup": Leak("a\nb\n{{ item.fields[item.fields.password] }}", CANARY),
    "lookup-upper": Leak("{{ item.fields[item.fields.password | upper] }}", CANARY.upper()),
    "data-lookup": Leak("{{ data[data.password.text] }}", CANARY),
    "file-lookup": Leak(
        "{{ item.fields[item.files['canary.txt'].text] }}", FILE_CANARY, fields=[pick("username")]
    ),
    # Python's own message names the value here; it is redacted as given.
    "format-key": Leak("{{ ('{' ~ item.fields.password ~ '}').format() }}", CANARY),
}

TRANSFORMED_LEAKS: dict[str, Leak] = {
    "filter-name": Leak("{{ [1] | map(item.fields.password | upper) | list }}", CANARY.upper()),
    "test-name": Leak("{{ [1] | select(item.fields.password | reverse) | list }}", CANARY[::-1]),
    "format-key-upper": Leak("{{ ('{' ~ (item.fields.password | upper) ~ '}').format() }}", CANARY.upper()),
    "format-spec": Leak("{{ ('{:' ~ (item.fields.password | upper) ~ '}').format(1) }}", CANARY.upper()),
}
"""A value changed on the way into an error message that names it: redacting exact values misses it."""

FILE_LEAKS: dict[str, Leak] = {
    "file-format-key": Leak(
        "{{ ('{' ~ item.files['canary.txt'].text ~ '}').format() }}", FILE_CANARY, fields=[pick("username")]
    ),
    "file-filter-name": Leak(
        "{{ [1] | map(item.files['canary.txt'].text) | list }}", FILE_CANARY, fields=[pick("username")]
    ),
}
"""A file's content, as is, when the file is not one of the Secret's keys."""


async def assert_leak_free(shaping: Shaping, name: str, secret: str) -> None:
    """``secret`` is nowhere a reader of OnePasswordItems, Events, Secret metadata or the log looks."""
    condition = await shaping.failed(name, "TemplateError")
    assert "template.stringData.leak" in condition["message"]
    item = shaping.item(name)
    assert secret not in json.dumps(item.get("status")), item.get("status")
    assert secret not in json.dumps(item["metadata"].get("annotations") or {})
    await shaping.event(name, "TemplateError")
    for event in shaping.kube.events(shaping.ns, name):
        assert secret not in (event.message or ""), event.message
    assert secret not in json.dumps(shaping.annotations(name))
    assert secret not in shaping.operator.logs()


async def check_leaks(shaping: Shaping, leaks: Mapping[str, Leak]) -> None:
    # A good Secret first, so that its metadata can be checked after the failure too.
    for name, leak in leaks.items():
        shaping.create(
            name,
            itemPath=path("canary"),
            fields=leak.fields,
            template={"stringData": {"leak": "{{ item.title }}"}},
        )
    for name in leaks:
        await shaping.ready(name)
    for name, leak in leaks.items():
        shaping.patch(name, template={"stringData": {"leak": leak.template}})
    for name, leak in leaks.items():
        await assert_leak_free(shaping, name, leak.secret)


async def test_a_template_error_never_echoes_a_value(shaping: Shaping) -> None:
    await check_leaks(shaping, LEAKS)
    assert "line 3" in (await shaping.failed("lookup", "TemplateError"))["message"]


async def test_a_template_error_never_echoes_a_transformed_value(shaping: Shaping) -> None:
    await check_leaks(shaping, TRANSFORMED_LEAKS)


async def test_a_template_error_never_echoes_a_file(shaping: Shaping) -> None:
    await check_leaks(shaping, FILE_LEAKS)


# -- 6. typed Secrets ----------------------------------------------------------------------------


async def test_typed_secrets_are_built_and_checked(shaping: Shaping) -> None:
    shaping.create(
        "tls",
        type_="kubernetes.io/tls",
        itemPath=path("tls"),
        fields=[pick("certificate", "tls.crt"), pick("file:server.key", "tls.key")],
    )
    shaping.create(
        "registry",
        itemPath=path("registry"),
        dockerConfig={"serverField": "server", "usernameField": "user", "passwordField": "token"},
    )
    shaping.create(
        "ssh",
        type_="kubernetes.io/ssh-auth",
        itemPath=path("ssh"),
        fields=[pick("private key", "ssh-privatekey")],
        typeCheck="Strict",
    )
    shaping.create(
        "ssh-as-given",
        type_="kubernetes.io/ssh-auth",
        itemPath=path("ssh"),
        fields=[pick("private key", "ssh-privatekey")],
    )
    shaping.create(
        "basic",
        type_="kubernetes.io/basic-auth",
        itemPath=path("db"),
        fields=[pick("username"), pick("password")],
    )
    shaping.create(
        "tls-broken",
        type_="kubernetes.io/tls",
        itemPath=path("tls-broken"),
        fields=[pick("certificate", "tls.crt"), pick("file:server.key", "tls.key")],
        typeCheck="Strict",
    )
    shaping.create(
        "tls-written-anyway",
        type_="kubernetes.io/tls",
        itemPath=path("tls-broken"),
        fields=[pick("certificate", "tls.crt"), pick("file:server.key", "tls.key")],
    )
    for name in ("tls", "registry", "ssh", "ssh-as-given", "basic", "tls-written-anyway"):
        await shaping.ready(name)

    tls = shaping.secret("tls")
    assert tls.type == "kubernetes.io/tls"
    assert shaping.data("tls") == {"tls.crt": TLS_CERT, "tls.key": TLS_KEY}

    registry = shaping.secret("registry")
    assert registry.type == "kubernetes.io/dockerconfigjson"
    data = shaping.data("registry")
    assert list(data) == [".dockerconfigjson"]
    entry = json.loads(data[".dockerconfigjson"])["auths"]["ghcr.io"]
    assert entry["auth"] == base64.b64encode(f"bot:{REGISTRY_TOKEN}".encode()).decode()
    assert (entry["username"], entry["password"]) == ("bot", REGISTRY_TOKEN)

    ssh = shaping.secret("ssh")
    assert ssh.type == "kubernetes.io/ssh-auth"
    key = shaping.data("ssh")["ssh-privatekey"]
    assert key.startswith(OPENSSH_BEGIN) and key.endswith(b"\n")
    loaded = load_ssh_private_key(key, None)
    public = (Encoding.Raw, PublicFormat.Raw)
    assert loaded.public_key().public_bytes(*public) == SSH_KEY.public_key().public_bytes(*public)

    assert shaping.secret("basic").type == "kubernetes.io/basic-auth"
    assert shaping.data("basic") == {"username": b"admin", "password": DB_PASSWORD.encode()}

    # Not asked to convert (typeCheck: Strict): the key is written as 1Password holds it.
    assert shaping.data("ssh-as-given") == {"ssh-privatekey": SSH_PKCS8}

    def content(name: str) -> dict[str, Any]:
        (found,) = [c for c in shaping.status(name)["conditions"] if c["type"] == "ContentValid"]
        return dict(found)

    assert (content("tls")["status"], content("tls")["reason"]) == ("True", "Valid")
    assert content("ssh-as-given")["status"] == "True"

    # Strict: refused, nothing written.
    condition = await shaping.failed("tls-broken", "InvalidSecretData")
    assert "tls.crt" in condition["message"]
    assert shaping.find("tls-broken") is None
    await shaping.event("tls-broken", "InvalidSecretData")

    # The default, as the official operator: written as the item holds it, Ready, and the
    # finding in ContentValid and a Warning Event.
    assert shaping.secret("tls-written-anyway").type == "kubernetes.io/tls"
    assert shaping.data("tls-written-anyway") == {"tls.crt": BROKEN_CERT, "tls.key": TLS_KEY}
    finding = content("tls-written-anyway")
    assert (finding["status"], finding["reason"]) == ("False", "InvalidSecretData")
    assert "tls.crt" in finding["message"]
    warning = await shaping.event("tls-written-anyway", "InvalidSecretData")
    assert warning.type == "Warning"


# -- 7. the Secret's name, labels and annotations ------------------------------------------------


async def test_a_spec_over_256_kib_of_annotations_gets_a_clear_status_and_no_kopf_error(
    shaping: Shaping,
) -> None:
    """30 annotations of 10 KB: the CRD admits the spec, Kubernetes would refuse the Secret. kopf
    used to fail with a 422 on its last-handled-configuration annotation (the whole spec), with
    tracebacks and throttling; its diff state is kept in memory now, so only the status speaks."""
    logs_before = len(shaping.operator.logs())
    shaping.create(
        "huge",
        itemPath=path("api"),
        secretAnnotations={f"example.com/a{n}": "x" * 10_000 for n in range(30)},
    )
    condition = await shaping.failed("huge", "InvalidMetadata")
    assert "256 KiB" in condition["message"]
    assert shaping.find("huge") is None
    written = shaping.operator.logs()[logs_before:]
    assert "Traceback" not in written and "Unprocessable" not in written  # no 422 from the API server
    annotations = shaping.item("huge")["metadata"].get("annotations") or {}
    assert not [key for key in annotations if key.startswith(("opsync.io/", "kopf.zalando.org/"))]


async def test_secret_name_labels_and_annotations_follow_the_spec(shaping: Shaping) -> None:
    shaping.create(
        "named",
        itemPath=path("api"),
        secretName="api-creds",
        secretLabels={"team": "payments", "tier": "backend"},
        secretAnnotations={"example.com/owner": "platform", "note": "kept for now"},
    )
    await shaping.ready("named")
    assert shaping.find("named") is None
    assert shaping.data("api-creds") == {"username": b"svc", "token": API_TOKEN.encode()}
    assert shaping.labels("api-creds") == {"team": "payments", "tier": "backend", MANAGED: "true"}
    annotations = shaping.annotations("api-creds")
    assert annotations["example.com/owner"] == "platform" and annotations["note"] == "kept for now"
    assert shaping.status("named")["secretName"] == "api-creds"

    # A new name: the Secret under the old one goes (the default deletionPolicy).
    shaping.patch("named", secretName="api-creds-v2")
    await shaping.ready("named")
    assert shaping.status("named")["secretName"] == "api-creds-v2"
    assert shaping.data("api-creds-v2") == {"username": b"svc", "token": API_TOKEN.encode()}
    await eventually(lambda: shaping.find("api-creds") is None)
    renamed = await shaping.event("named", "SecretRenamed")
    assert "api-creds" in (renamed.message or "") and "deleted" in (renamed.message or "")
    assert shaping.labels("api-creds-v2") == {"team": "payments", "tier": "backend", MANAGED: "true"}

    # A label and an annotation removed from the spec go from the Secret as well.
    shaping.patch("named", secretLabels={"tier": None}, secretAnnotations={"note": None})
    await shaping.ready("named")
    assert shaping.labels("api-creds-v2") == {"team": "payments", MANAGED: "true"}
    annotations = shaping.annotations("api-creds-v2")
    assert "note" not in annotations and annotations["example.com/owner"] == "platform"
    assert annotations[COPIED_ANNOTATIONS] == "example.com/owner"  # how the next removal is found


# -- 8. deletionPolicy: Retain -------------------------------------------------------------------


async def test_retain_keeps_the_secret_and_a_new_item_adopts_it(shaping: Shaping) -> None:
    spec: dict[str, Any] = {"itemPath": path("api"), "deletionPolicy": "Retain"}
    shaping.create("kept", **spec)
    await shaping.ready("kept")
    first_uid = shaping.item("kept")["metadata"]["uid"]
    assert shaping.secret("kept").owners == [("OnePasswordItem", "kept", first_uid)]

    shaping.delete("kept")
    await shaping.gone("kept")
    left = shaping.secret("kept")
    assert not left.owners and MANAGED not in left.labels
    assert left.annotations[RETAINED_FROM] == "OnePasswordItem/kept"
    assert shaping.data("kept") == {"username": b"svc", "token": API_TOKEN.encode()}

    shaping.create("kept", **spec)
    await shaping.ready("kept")
    second_uid = shaping.item("kept")["metadata"]["uid"]
    assert second_uid != first_uid
    adopted = shaping.secret("kept")
    assert adopted.owners == [("OnePasswordItem", "kept", second_uid)]
    assert adopted.labels[MANAGED] == "true" and RETAINED_FROM not in adopted.annotations

    # With Retain, a rename leaves the Secret under the old name behind instead of deleting it.
    shaping.patch("kept", secretName="kept-v2")
    await shaping.ready("kept")
    assert shaping.data("kept-v2") == {"username": b"svc", "token": API_TOKEN.encode()}

    def retained_old() -> SecretView | None:
        secret = shaping.secret("kept")
        return None if secret.owners else secret

    old = await eventually(retained_old)
    assert old.annotations[RETAINED_FROM] == "OnePasswordItem/kept" and MANAGED not in old.labels
    renamed = await shaping.event("kept", "SecretRenamed")
    assert "Retain" in (renamed.message or "")


async def test_retain_holds_even_when_the_spec_no_longer_parses(shaping: Shaping) -> None:
    shaping.create("fragile", itemPath=path("api"), deletionPolicy="Retain")
    shaping.create("renamed", itemPath=path("api"), deletionPolicy="Retain", secretName="renamed-secret")
    for name in ("fragile", "renamed"):
        await shaping.ready(name)
        # The API server takes this key; the operator's model refuses it (InvalidSpec).
        shaping.patch(name, template={"stringData": {"bad key": "x"}})
        await shaping.failed(name, "InvalidSpec")
        shaping.delete(name)
        await shaping.gone(name)
    for name in ("fragile", "renamed-secret"):
        secret = shaping.find(name)
        assert secret is not None, f"Secret {name} was deleted despite deletionPolicy: Retain"
        assert not secret.owners, (name, secret.owners)
        assert MANAGED not in secret.labels and RETAINED_FROM in secret.annotations


# -- 9. switching between features leaves nothing stale ------------------------------------------


async def test_switching_features_leaves_no_stale_keys_or_metadata(shaping: Shaping) -> None:
    async def step(expected_keys: set[str]) -> tuple[dict[str, str], dict[str, str]]:
        await shaping.ready("switch")
        assert set(shaping.data("switch")) == expected_keys
        return shaping.labels("switch"), shaping.annotations("switch")

    shaping.create("switch", itemPath=path("db"))
    labels, annotations = await step(DB_KEYS)
    assert labels == {MANAGED: "true"}

    shaping.patch(
        "switch", fields=[pick("password", "DB_PASSWORD"), pick("port")], secretLabels={"stage": "1"}
    )
    labels, _ = await step({"DB_PASSWORD", "port"})
    assert labels == {"stage": "1", MANAGED: "true"}

    shaping.patch(
        "switch",
        fields=None,
        secretLabels=None,
        template={
            "stringData": {"dsn": "postgres://{{ item.fields.username }}@{{ item.sections.primary.host }}"},
            "metadata": {
                "labels": {"rendered": "yes"},
                "annotations": {"example.com/title": "{{ item.title }}"},
            },
        },
    )
    labels, annotations = await step({"dsn"})
    assert shaping.data("switch")["dsn"] == b"postgres://admin@db-primary.local"
    assert labels == {"rendered": "yes", MANAGED: "true"}
    assert annotations["example.com/title"] == "db"

    shaping.patch("switch", template=None, items=[source("api", prefix="api_")])
    labels, annotations = await step(DB_KEYS | {"api_username", "api_token"})
    assert labels == {MANAGED: "true"}
    assert "example.com/title" not in annotations
    assert ITEMS_ANNOTATION in annotations
    assert len(shaping.status("switch")["items"]) == 2

    shaping.patch("switch", items=None)
    labels, annotations = await step(DB_KEYS)
    assert labels == {MANAGED: "true"}
    assert set(annotations) == {ITEM_PATH_ANNOTATION, ITEM_VERSION_ANNOTATION}
    assert "items" not in shaping.status("switch")


# -- 10. invalid specs: reported by the operator, or refused at admission ------------------------


async def test_a_spec_the_api_server_accepts_but_opsync_cannot_use_is_reported(shaping: Shaping) -> None:
    shaping.create(
        "docker-opaque",
        type_="Opaque",
        itemPath=path("registry"),
        dockerConfig={"server": "ghcr.io", "usernameField": "user", "passwordField": "token"},
    )
    shaping.create(
        "reserved-meta",
        itemPath=path("api"),
        template={"metadata": {"annotations": {"opsync.io/owner": "me"}}},
    )
    shaping.create("bad-template-key", itemPath=path("api"), template={"stringData": {"bad key": "x"}})

    condition = await shaping.failed("docker-opaque", "InvalidSpec")
    assert "spec.dockerConfig" in condition["message"] and "'Opaque'" in condition["message"]
    condition = await shaping.failed("reserved-meta", "InvalidSpec")
    assert "template.metadata.annotations.opsync.io/owner" in condition["message"]
    condition = await shaping.failed("bad-template-key", "InvalidSpec")
    assert "spec.template.stringData" in condition["message"] and "'bad key'" in condition["message"]
    for name in ("docker-opaque", "reserved-meta", "bad-template-key"):
        assert shaping.find(name) is None
        await shaping.event(name, "InvalidSpec")


REFUSED: dict[str, dict[str, Any]] = {
    "key-with-space": {"itemPath": path("db"), "fields": [pick("password", "db password")]},
    "uppercase-secret-name": {"itemPath": path("db"), "secretName": "DB-Creds"},
    "reserved-annotation": {"itemPath": path("db"), "secretAnnotations": {"opsync.io/owner": "me"}},
    "fields-without-item-path": {"items": [source("db")], "fields": [pick("password")]},
    "two-registry-servers": {
        "itemPath": path("registry"),
        "dockerConfig": {
            "server": "ghcr.io",
            "serverField": "server",
            "usernameField": "user",
            "passwordField": "token",
        },
    },
    "bad-deletion-policy": {"itemPath": path("db"), "deletionPolicy": "Orphan"},
}


async def test_the_crd_refuses_what_it_can_at_admission(shaping: Shaping) -> None:
    for name, spec in REFUSED.items():
        with pytest.raises(client.ApiException) as refused:
            shaping.create(name, **spec)
        assert refused.value.status == 422, (name, refused.value.body)
        with pytest.raises(client.ApiException) as absent:
            shaping.item(name)
        assert absent.value.status == 404


async def test_an_invalid_label_or_annotation_is_named_in_the_status(shaping: Shaping) -> None:
    # The CRD cannot check label and annotation syntax in maps; the Secret write fails.
    shaping.create("label-value", itemPath=path("api"), secretLabels={"team": "has space"})
    shaping.create(
        "rendered-label",
        itemPath=path("api"),
        template={"metadata": {"labels": {"title": "{{ item.title }} and more"}}},
    )
    shaping.create("annotation-key", itemPath=path("api"), secretAnnotations={"bad key": "x"})
    for name, key in (("label-value", "team"), ("rendered-label", "title"), ("annotation-key", "bad key")):
        condition = await shaping.settled(name, ready=False)
        assert shaping.find(name) is None
        assert key in condition["message"], condition
