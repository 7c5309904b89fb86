"""How to reach 1Password Connect: the settings of :class:`~opsync.connect.client.ConnectClient`.

Why this module exists: the connection settings come from the environment
(the official operator's variable names, so its Deployment manifests keep
working) plus a few opsync knobs, and they must be checked once, at start-up,
with one clear message when something is wrong. Nothing is read at import
time, and building the model never reads the environment by itself:
``ConnectConfig(host=..., token=...)`` holds exactly what it is given, and
:meth:`ConnectConfig.from_env` is the one place that reads the variables below
(keyword arguments override them).

Environment variables (official names first, then opsync's own):

* ``OP_CONNECT_HOST``: Connect's base URL, e.g. ``http://onepassword-connect:8080``;
  a trailing ``/`` or ``/v1`` is accepted and dropped.
* ``OP_CONNECT_TOKEN``: the Connect access token; or
* ``OP_CONNECT_TOKEN_FILE``: a file holding it (e.g. a mounted Secret); not both.
* ``OPSYNC_CONNECT_CA_BUNDLE``: PEM file of CA certificates to trust instead of the system ones.
* ``OPSYNC_CONNECT_TLS_VERIFY``: ``false`` turns certificate verification off (default ``true``).
* ``OPSYNC_CONNECT_TIMEOUT`` (30): seconds to wait for a read, a write or a pooled connection.
* ``OPSYNC_CONNECT_CONNECT_TIMEOUT`` (5): seconds to wait for a new connection.
* ``OPSYNC_CONNECT_MAX_CONNECTIONS`` (10): size of the connection pool.
* ``OPSYNC_CONNECT_MAX_CONCURRENCY`` (10): requests in flight at once (at most the pool size).
* ``OPSYNC_CONNECT_FILE_CONCURRENCY`` (4): file downloads in flight at once for one item.
* ``OPSYNC_CONNECT_MAX_RETRIES`` (3): retries after the first attempt of a request.
* ``OPSYNC_CONNECT_FORBIDDEN_RETRIES`` (2): how many of those may follow a 403 (Connect's
  transient 403).
* ``OPSYNC_CONNECT_BACKOFF_INITIAL`` (0.5) and ``OPSYNC_CONNECT_BACKOFF_MAX`` (10): backoff
  delays in seconds (doubling per retry, jittered).
* ``OPSYNC_CONNECT_RETRY_AFTER_MAX`` (30): the longest ``Retry-After`` honoured by waiting; a
  longer one ends the retries with ``RateLimited`` carrying ``retry_after``.

For ``OP_CONNECT_HOST``, ``OP_CONNECT_TOKEN`` and ``OP_CONNECT_TOKEN_FILE``
pydantic-settings also accepts the ``OPSYNC_CONNECT_`` spelling as a fallback;
the official names win when both are set.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from opsync.core.errors import ConfigError
from opsync.envsettings import ExplicitSettings

__all__ = ["ConnectConfig"]

ENV_PREFIX: Final = "OPSYNC_CONNECT_"


class ConnectConfig(ExplicitSettings):
    """Settings of the Connect client. Invalid values raise :class:`opsync.core.errors.ConfigError`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        populate_by_name=True,
        hide_input_in_errors=True,
        extra="ignore",
        frozen=True,
    )

    host: str = Field(
        validation_alias="OP_CONNECT_HOST",
        description="Base URL of Connect, without /v1 (normalised: no trailing slash).",
    )
    token: SecretStr = Field(
        default=SecretStr(""),
        validation_alias="OP_CONNECT_TOKEN",
        description="The Connect access token (read from token_file when that is set instead).",
    )
    token_file: Path | None = Field(
        default=None,
        validation_alias="OP_CONNECT_TOKEN_FILE",
        description="File holding the token; surrounding whitespace is ignored.",
    )
    ca_bundle: Path | None = Field(default=None, description="PEM CA bundle to verify Connect's certificate.")
    ca_pem: str | None = Field(
        default=None,
        exclude=True,
        description="PEM CA certificates as text (a OnePasswordConnection's caSecretRef); not from the environment.",
    )
    tls_verify: bool = Field(default=True, description="Verify Connect's TLS certificate.")
    timeout: float = Field(default=30.0, gt=0, description="Read/write/pool timeout in seconds.")
    connect_timeout: float = Field(default=5.0, gt=0, description="Connection timeout in seconds.")
    max_connections: int = Field(default=10, ge=1, le=1000, description="Connection pool size.")
    max_concurrency: int = Field(default=10, ge=1, le=1000, description="Requests in flight at once.")
    file_concurrency: int = Field(default=4, ge=1, le=100, description="File downloads at once per item.")
    max_retries: int = Field(default=3, ge=0, le=20, description="Retries after the first attempt.")
    forbidden_retries: int = Field(default=2, ge=0, le=20, description="Retries allowed after a 403.")
    backoff_initial: float = Field(default=0.5, ge=0, le=60, description="First backoff delay (s).")
    backoff_max: float = Field(default=10.0, ge=0, le=600, description="Longest backoff delay (s).")
    retry_after_max: float = Field(default=30.0, ge=0, le=3600, description="Longest Retry-After waited (s).")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    @classmethod
    def from_env(cls, **overrides: Any) -> ConnectConfig:
        """The settings from the environment (names above); ``overrides`` that are not None win."""
        return cls(**cls.environment(**overrides))

    @field_validator("host")
    @classmethod
    def _normalise_host(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL, e.g. http://onepassword-connect:8080")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment")
        try:
            parts.port  # noqa: B018 - raises on an invalid port
        except ValueError:
            raise ValueError("has an invalid port") from None
        path = parts.path.rstrip("/")
        if path.endswith("/v1"):
            path = path[: -len("/v1")].rstrip("/")
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    @field_validator("ca_bundle")
    @classmethod
    def _check_ca_bundle(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                ssl.create_default_context(cafile=str(value))
            except (OSError, ssl.SSLError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                raise ValueError(f"cannot load CA bundle {value}: {reason}") from None
        return value

    @field_validator("ca_pem")
    @classmethod
    def _check_ca_pem(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ssl.create_default_context(cadata=value)
            except (ssl.SSLError, ValueError):
                raise ValueError("the CA certificates are not valid PEM") from None
        return value

    def with_token(self, token: SecretStr) -> ConnectConfig:
        """The same settings with another token (checked as the environment's is)."""
        values = {name: getattr(self, name) for name in type(self).model_fields if name != "token_file"}
        return type(self)(**{**values, "token": token})

    @model_validator(mode="after")
    def _resolve_token(self) -> ConnectConfig:
        has_token = bool(self.token.get_secret_value().strip())
        if has_token and self.token_file is not None:
            raise ValueError("set OP_CONNECT_TOKEN or OP_CONNECT_TOKEN_FILE, not both")
        if self.token_file is not None:
            try:
                text = self.token_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                raise ValueError(f"cannot read token file {self.token_file}: {reason}") from None
            # frozen model: set through object.__setattr__ while still validating.
            object.__setattr__(self, "token", SecretStr(text.strip()))
        else:
            object.__setattr__(self, "token", SecretStr(self.token.get_secret_value().strip()))
        if not self.token.get_secret_value():
            where = f"token file {self.token_file} is empty" if self.token_file else "no token"
            raise ValueError(f"{where}: set OP_CONNECT_TOKEN or OP_CONNECT_TOKEN_FILE")
        token = self.token.get_secret_value()
        if any(ch.isspace() for ch in token):
            raise ValueError("the token contains whitespace; is the token file a token?")
        if not (token.isascii() and token.isprintable()):
            raise ValueError("the token contains characters a bearer token cannot have")
        if self.max_concurrency > self.max_connections:
            raise ValueError("OPSYNC_CONNECT_MAX_CONCURRENCY must not exceed OPSYNC_CONNECT_MAX_CONNECTIONS")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("OPSYNC_CONNECT_BACKOFF_MAX must not be below OPSYNC_CONNECT_BACKOFF_INITIAL")
        return self

    @property
    def api_url(self) -> str:
        """Where the ``/v1`` endpoints live."""
        return f"{self.host}/v1"


def _env_name(location: str) -> str:
    """The environment variable behind a field (or alias) named in a validation error."""
    field = ConnectConfig.model_fields.get(location)
    if field is not None:
        alias = field.validation_alias
        return alias if isinstance(alias, str) else ENV_PREFIX + location.upper()
    return location


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        location = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{_env_name(location)}: {message}" if location else message)
    return "invalid 1Password Connect configuration: " + "; ".join(problems)
