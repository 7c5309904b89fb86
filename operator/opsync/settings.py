"""Operator settings: the official operator's names first, validated once at start-up.

``WATCH_NAMESPACE``, ``POLLING_INTERVAL`` and ``AUTO_RESTART`` are read from the
environment exactly as the official 1Password operator reads them, and
``--enable-annotations`` / ``--allow-empty-values`` are its flags; opsync's own
knobs are ``OPSYNC_*``; ``POD_NAME`` and ``POD_NAMESPACE`` (the downward API)
name this replica. The environment is read in one place,
:meth:`OperatorSettings.from_env`, called once by ``opsync run`` (never at import
time; building the model directly reads nothing), and the frozen result reaches
the handlers in the operator's runtime. An invalid value stops
start-up with one :class:`~opsync.core.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from opsync.core.errors import ConfigError
from opsync.core.gobool import parse_bool
from opsync.envsettings import ExplicitSettings


def _namespaces(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


GoBool = Annotated[bool, BeforeValidator(parse_bool)]


class OperatorSettings(ExplicitSettings):
    """Everything ``opsync run`` needs besides the Connect connection (see ConnectConfig)."""

    model_config = SettingsConfigDict(
        env_prefix="OPSYNC_",
        frozen=True,
        hide_input_in_errors=True,
        populate_by_name=True,
        extra="ignore",
    )

    watch_namespaces: Annotated[list[str], NoDecode, BeforeValidator(_namespaces)] = Field(
        default_factory=list,
        validation_alias=AliasChoices("WATCH_NAMESPACE", "watch_namespaces"),
        description="Namespaces to watch (comma list; empty: all). Globs such as 'team-*' work too.",
    )
    polling_interval: int = Field(
        default=600,
        gt=0,
        le=86400,
        validation_alias=AliasChoices("POLLING_INTERVAL", "polling_interval"),
        description="Seconds between checks of each item against Connect.",
    )
    auto_restart: GoBool = Field(
        default=False,
        validation_alias=AliasChoices("AUTO_RESTART", "auto_restart"),
        description="Restart workloads using a Secret when it changes (overridden by annotations).",
    )
    enable_annotations: GoBool = Field(default=False, description="Copy the CR's annotations to its Secret.")
    allow_empty_values: GoBool = Field(default=False, description="Keep fields with empty values as keys.")
    default_connection: GoBool = Field(
        default=True,
        description="Items that name no connection (spec.connectionRef) use OP_CONNECT_HOST and "
        "OP_CONNECT_TOKEN; false: they are refused (Ready=False, NoConnection), as a multi-tenant "
        "cluster wants, and OP_CONNECT_* may be left unset.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info")
    metrics_bind_address: str = Field(
        default=":8080", description="Where /metrics is served, e.g. ':8080' ('0' = off)."
    )
    health_probe_bind_address: str = Field(
        default=":8081", description="Where /healthz and /readyz are served ('0' = off)."
    )
    leader_election: GoBool = Field(
        default=True, description="Only the replica holding the Lease acts (off: run one replica only)."
    )
    lease_name: str = Field(default="opsync-leader", min_length=1, description="The leader Lease's name.")
    lease_namespace: str = Field(
        default="", description="The leader Lease's namespace (default: the pod's own, else 'default')."
    )
    lease_duration: float = Field(
        default=10.0,
        ge=3,
        le=300,
        description="Seconds a leader may go without renewing before another takes over (a leader "
        "that cannot renew for 2/3 of it steps down; replicas retry every 2/15 of it).",
    )
    full_resync_every: int = Field(
        default=24,
        ge=1,
        description="Every this many polls, list every vault in use whatever its contentVersion.",
    )
    pod_name: str = Field(
        default="",
        validation_alias=AliasChoices("POD_NAME", "pod_name"),
        description="This replica's pod (the downward API): its Lease identity and Events' reporter.",
    )
    pod_namespace: str = Field(
        default="",
        validation_alias=AliasChoices("POD_NAMESPACE", "pod_namespace"),
        description="This replica's namespace (the downward API): where the Lease lives by default.",
    )
    drift_resync_seconds: float = Field(
        default=1.0, ge=0, le=60, description="Debounce before a drifted Secret is restored."
    )
    fault_point: Literal["", "exit-before-rollout"] = Field(
        default="",
        description="Tests only: exit-before-rollout exits (code 137, as a kill) right after a Secret's "
        "data changed and before its workloads are rolled out.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @classmethod
    def from_env(cls, **overrides: Any) -> OperatorSettings:
        """Read the environment (and explicit overrides that are not None, e.g. from flags); one
        clear error naming each invalid variable."""
        try:
            return cls(**cls.environment(**overrides))
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                location = str(error["loc"][0]) if error["loc"] else ""
                field = cls.model_fields.get(location)
                alias = field.validation_alias if field else None
                if field is None:  # already the environment name, e.g. AUTO_RESTART
                    name = location
                elif isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
                    name = alias.choices[0]
                else:
                    name = f"OPSYNC_{location.upper()}"
                problems.append(f"{name}: {error['msg']}")
            raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
