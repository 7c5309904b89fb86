"""Connections: which 1Password Connect server and token an item reads with, and who may use them.

Why this module exists: a cluster that hosts several teams needs each team's items read with that
team's own Connect server and token. Two kinds in opsync's own API group (never in
``onepassword.com``) say where and with what: :class:`OnePasswordConnection` (namespaced: usable
from its own namespace only) and :class:`ClusterOnePasswordConnection` (cluster-scoped: usable
from the namespaces its ``spec.namespaces`` / ``spec.namespaceSelector`` allow). An item names
one with ``spec.connectionRef`` (a Deployment in annotation mode with :data:`CONNECTION_ANNOTATION`);
an item that names none uses the operator's own ``OP_CONNECT_*`` settings, unless that default
is switched off.

Everything here is pure: the models (the CRDs are derived from them, as for the
OnePasswordItem), the reference an owner makes (:class:`ConnectionRef`) and the admission
rules (:func:`refusal`), so the kopf layer only reads objects and applies the answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from opsync.core import crd
from opsync.core.crd import ConnectionRefSpec

GROUP = "opsync.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = crd.CONNECTION_KIND
PLURAL = "onepasswordconnections"
CLUSTER_KIND = crd.CLUSTER_CONNECTION_KIND
CLUSTER_PLURAL = "clusteronepasswordconnections"
KINDS = (KIND, CLUSTER_KIND)
DEFAULT_LABEL = "default"
"""The metrics label of the operator's own connection (``OP_CONNECT_*``)."""

CONNECTION_ANNOTATION = "opsync.io/connection"
"""On a Deployment in annotation mode: the connection it reads with, ``<name>`` (a
OnePasswordConnection of its namespace) or ``ClusterOnePasswordConnection/<name>``."""

NAME_PATTERN = crd.CONNECTION_NAME_PATTERN


class _Model(BaseModel):
    model_config = ConfigDict(hide_input_in_errors=True, populate_by_name=True, extra="ignore")


class SecretKeyRef(_Model):
    """A key of a Secret."""

    name: str = Field(min_length=1, max_length=253, pattern=NAME_PATTERN, description="The Secret's name.")
    key: str = Field(default="token", min_length=1, max_length=253, description="The key (default: token).")


class NamespacedSecretKeyRef(SecretKeyRef):
    """A key of a Secret in a named namespace."""

    namespace: str = Field(
        min_length=1, max_length=63, pattern=NAME_PATTERN, description="The Secret's namespace."
    )


class LabelSelectorRequirement(_Model):
    key: str = Field(min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None


class LabelSelector(_Model):
    """A Kubernetes label selector (matchLabels and matchExpressions, all must match)."""

    matchLabels: dict[str, str] | None = None
    matchExpressions: list[LabelSelectorRequirement] | None = None


_HOST_RULE: dict[str, Any] = {
    "rule": "self.startsWith('http://') || self.startsWith('https://')",
    "message": "host must be an http:// or https:// URL, e.g. http://onepassword-connect.team-a:8080",
}


class ConnectionSpec(_Model):
    """Where Connect is and the token to read with."""

    host: str = Field(
        min_length=1,
        max_length=2048,
        description="Connect's base URL, e.g. http://onepassword-connect:8080 (a trailing /v1 is dropped).",
        json_schema_extra={"x-kubernetes-validations": [dict(_HOST_RULE)]},
    )
    tokenSecretRef: SecretKeyRef = Field(
        description="The Secret (in this namespace) and key holding the Connect token. Rotate the token "
        "by changing the Secret: it takes effect at the next poll, without a restart."
    )
    pollingInterval: int | None = Field(
        default=None, ge=1, le=86400, description="Seconds between polls (default: the operator's)."
    )
    caSecretRef: SecretKeyRef | None = Field(
        default=None,
        description="A Secret key holding PEM CA certificates to trust for Connect's TLS (default: the system's).",
    )
    tlsVerify: bool | None = Field(
        default=None, description="false turns TLS verification off (default: true)."
    )


class ClusterConnectionSpec(_Model):
    """The same for a cluster-scoped connection, with its Secrets' namespace and who may use it."""

    host: str = Field(
        min_length=1,
        max_length=2048,
        description="Connect's base URL, e.g. http://onepassword-connect.shared:8080.",
        json_schema_extra={"x-kubernetes-validations": [dict(_HOST_RULE)]},
    )
    tokenSecretRef: NamespacedSecretKeyRef = Field(
        description="The Secret (namespace, name, key) holding the Connect token."
    )
    pollingInterval: int | None = Field(default=None, ge=1, le=86400)
    caSecretRef: NamespacedSecretKeyRef | None = Field(default=None)
    tlsVerify: bool | None = Field(default=None)
    namespaces: list[str] | None = Field(
        default=None, description="The namespaces that may use this connection, by name."
    )
    namespaceSelector: LabelSelector | None = Field(
        default=None,
        description="The namespaces that may use this connection, by label. With neither this nor "
        "namespaces, no namespace may use it; with both, a namespace either names is allowed.",
    )


class VaultRef(_Model):
    id: str
    name: str


class ConnectionStatus(_Model):
    """What opsync last found with this connection (written while an item uses it)."""

    conditions: list[crd.Condition] = Field(default_factory=list)
    vaults: list[VaultRef] | None = Field(default=None, description="The vaults the token can see.")
    lastPollTime: str | None = Field(default=None, description="When a poll last succeeded (RFC 3339).")
    observedGeneration: int | None = None


class OnePasswordConnection(_Model):
    spec: ConnectionSpec
    status: ConnectionStatus | None = None


class ClusterOnePasswordConnection(_Model):
    spec: ClusterConnectionSpec
    status: ConnectionStatus | None = None


AnySpec = ConnectionSpec | ClusterConnectionSpec


# -- references ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ConnectionRef:
    """A connection as an owner names it: kind, name and, for a namespaced one, its namespace."""

    kind: str
    name: str
    namespace: str | None = None
    """The connection's namespace (a OnePasswordConnection); None for a cluster connection."""

    @property
    def cluster(self) -> bool:
        return self.kind == CLUSTER_KIND

    @property
    def label(self) -> str:
        """Its metrics label and how logs name it: ``<namespace>/<name>`` or ``cluster:<name>``
        (a colon never appears in a namespace's name, so the two never collide)."""
        return f"cluster:{self.name}" if self.cluster else f"{self.namespace}/{self.name}"

    def __str__(self) -> str:
        return f"{self.kind} {self.name}" if self.cluster else f"{self.kind} {self.namespace}/{self.name}"


def ref_of(spec: ConnectionRefSpec, owner_namespace: str) -> ConnectionRef:
    if spec.kind == CLUSTER_KIND:
        return ConnectionRef(kind=CLUSTER_KIND, name=spec.name)
    return ConnectionRef(kind=KIND, name=spec.name, namespace=spec.namespace or owner_namespace)


def parse_annotation(value: str, owner_namespace: str) -> ConnectionRef:
    """The connection a Deployment's :data:`CONNECTION_ANNOTATION` names; ValueError if malformed."""
    kind, _, name = value.strip().rpartition("/")
    kind = kind or KIND
    if kind not in KINDS:
        raise ValueError(f"{CONNECTION_ANNOTATION} is {value!r}: use <name> or {CLUSTER_KIND}/<name>")
    try:
        spec = ConnectionRefSpec.model_validate({"kind": kind, "name": name})
    except ValidationError:
        raise ValueError(f"{CONNECTION_ANNOTATION} is {value!r}: {name!r} is not a valid name") from None
    return ref_of(spec, owner_namespace)


def parse(kind: str, body: Mapping[str, Any]) -> tuple[AnySpec | None, str | None]:
    """A connection object's spec, or None and what is wrong with it (for its status)."""
    model: type[OnePasswordConnection] | type[ClusterOnePasswordConnection] = (
        ClusterOnePasswordConnection if kind == CLUSTER_KIND else OnePasswordConnection
    )
    try:
        return model.model_validate({"spec": body.get("spec") or {}}).spec, None
    except ValidationError as exc:
        problems = "; ".join(
            ".".join(str(part) for part in error["loc"]) + ": " + error["msg"].removeprefix("Value error, ")
            for error in exc.errors(include_url=False, include_input=False)
        )
        return None, f"the spec is invalid: {problems}"


# -- admission -----------------------------------------------------------------------------------


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy every term of ``selector`` (an empty selector matches all)."""
    for key, value in (selector.matchLabels or {}).items():
        if labels.get(key) != value:
            return False
    for term in selector.matchExpressions or []:
        values = set(term.values or [])
        present = term.key in labels
        if term.operator == "In" and not (present and labels[term.key] in values):
            return False
        if term.operator == "NotIn" and present and labels[term.key] in values:
            return False
        if term.operator == "Exists" and not present:
            return False
        if term.operator == "DoesNotExist" and present:
            return False
    return True


def namespace_allowed(spec: ClusterConnectionSpec, namespace: str, labels: Mapping[str, str] | None) -> bool:
    """Whether a cluster connection serves ``namespace`` (``labels``: the Namespace's, None if unread)."""
    if namespace in (spec.namespaces or []):
        return True
    return (
        spec.namespaceSelector is not None
        and labels is not None
        and selector_matches(spec.namespaceSelector, labels)
    )


def needs_labels(spec: ClusterConnectionSpec, namespace: str) -> bool:
    """Whether deciding for ``namespace`` needs the Namespace's labels."""
    return namespace not in (spec.namespaces or []) and spec.namespaceSelector is not None


def cross_namespace_refusal(ref: ConnectionRef, owner_namespace: str) -> str | None:
    """Why an owner in ``owner_namespace`` may not use ``ref`` whatever the object says, or None."""
    if not ref.cluster and ref.namespace != owner_namespace:
        return (
            f"{ref} serves namespace {ref.namespace} only; this item is in {owner_namespace}. Create a "
            f"{KIND} in {owner_namespace}, or ask for a {CLUSTER_KIND} that allows it"
        )
    return None


def not_allowed_message(ref: ConnectionRef, namespace: str) -> str:
    return (
        f"{ref} does not allow namespace {namespace}: its spec.namespaces and spec.namespaceSelector "
        "name the namespaces that may use it"
    )


def vault_refs(vaults: Sequence[tuple[str, str]]) -> list[VaultRef]:
    return [VaultRef(id=vault_id, name=name) for vault_id, name in sorted(vaults, key=lambda v: (v[1], v[0]))]


# -- the CRDs ------------------------------------------------------------------------------------


def _schema(model: type[BaseModel], description: str) -> dict[str, Any]:
    raw = model.model_json_schema()
    schema = crd._structural(raw, raw.get("$defs", {}))
    schema["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        **schema["properties"],
    }
    schema["description"] = description
    return schema


def _definition(kind: str, plural: str, scope: str, model: type[BaseModel], short: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
            },
            "scope": scope,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Host", "type": "string", "jsonPath": ".spec.host"},
                        *crd.READY_COLUMNS,
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": _schema(
                            model, f"{kind}: a 1Password Connect server and the token opsync reads it with."
                        )
                    },
                }
            ],
        },
    }


def definitions() -> list[dict[str, Any]]:
    """The CustomResourceDefinitions of both connection kinds."""
    return [
        _definition(KIND, PLURAL, "Namespaced", OnePasswordConnection, "opconn"),
        _definition(CLUSTER_KIND, CLUSTER_PLURAL, "Cluster", ClusterOnePasswordConnection, "copconn"),
    ]


def definitions_yaml() -> str:
    header = "# Generated from opsync.core.connection by `make crds`; do not edit by hand.\n"
    import yaml  # only `opsync crd` needs it

    return header + "---\n".join(yaml.safe_dump(d, sort_keys=False, width=120) for d in definitions())


# -- status --------------------------------------------------------------------------------------

LAST_POLL_REFRESH = 300.0
"""Seconds after which ``lastPollTime`` alone is worth a status write (a steady connection costs
one write per five minutes, not one per poll)."""


def _seconds_between(earlier: str | None, later: str) -> float:
    import datetime as dt

    if not earlier:
        return float("inf")
    try:
        start = dt.datetime.strptime(earlier, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
        end = dt.datetime.strptime(later, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return float("inf")
    return (end - start).total_seconds()


def connection_status(
    current: Mapping[str, Any] | None,
    *,
    ready: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
    vaults: Sequence[tuple[str, str]] | None = None,
) -> dict[str, Any] | None:
    """The status to write (a merge patch) for a connection, or None when only the clock moved
    (and ``lastPollTime`` is younger than :data:`LAST_POLL_REFRESH`). ``vaults``: what the token
    sees (id, name), on success only; a failure keeps the last list."""
    current = dict(current or {})
    conditions = [c for c in current.get("conditions") or [] if isinstance(c, Mapping)]
    previous = next((c for c in conditions if c.get("type") == "Ready"), None)
    flag = "True" if ready else "False"
    transition = (
        previous.get("lastTransitionTime")
        if previous is not None and previous.get("status") == flag and previous.get("lastTransitionTime")
        else now
    )
    condition = crd.Condition(
        type="Ready",
        status=flag,
        reason=reason,
        message=message,
        lastTransitionTime=transition,
        observedGeneration=generation,
    ).model_dump(mode="json", exclude_none=True)
    status: dict[str, Any] = {
        "conditions": [condition, *[c for c in conditions if c.get("type") != "Ready"]],
        "observedGeneration": generation,
    }
    if vaults is not None:
        status["vaults"] = [v.model_dump() for v in vault_refs(vaults)]
    if ready:
        status["lastPollTime"] = now
    unchanged = all(current.get(key) == value for key, value in status.items() if key != "lastPollTime")
    fresh_enough = not ready or _seconds_between(current.get("lastPollTime"), now) < LAST_POLL_REFRESH
    if unchanged and fresh_enough:
        return None
    return status


def transition(current: Mapping[str, Any] | None, *, ready: bool, reason: str) -> bool:
    """Whether Ready flips or its reason changes (an Event is posted then)."""
    for condition in (current or {}).get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            return (
                condition.get("status") != ("True" if ready else "False") or condition.get("reason") != reason
            )
    return True
