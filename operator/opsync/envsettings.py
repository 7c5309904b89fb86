"""Settings models that read the environment only when asked to.

Why this module exists: pydantic-settings reads the environment whenever a
settings model is built, so a test (or a caller) that builds one with explicit
values silently gets the process's ``OP_CONNECT_*`` or ``POLLING_INTERVAL`` mixed
in. :class:`ExplicitSettings` turns that off: building the model holds exactly
what it is given, and :meth:`ExplicitSettings.environment` is the one place that
reads the variables (as pydantic-settings does: prefixes, aliases, case).
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource


class ExplicitSettings(BaseSettings):
    """A settings model built only from the values it is given."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    @classmethod
    def environment(cls, **overrides: Any) -> dict[str, Any]:
        """The values the environment holds for this model's fields, keyed by field name, with
        ``overrides`` that are not None laid over them (flags win over variables)."""
        names: dict[str, str] = {}
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            for choice in alias.choices if isinstance(alias, AliasChoices) else [alias]:
                if isinstance(choice, str):
                    names[choice] = name
        found = {names.get(key, key): value for key, value in EnvSettingsSource(cls)().items()}
        return {**found, **{key: value for key, value in overrides.items() if value is not None}}
