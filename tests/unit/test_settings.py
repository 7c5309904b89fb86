"""Operator settings: the official operator's environment names and bool parsing, one clear error."""

from __future__ import annotations

import pytest

from opsync.core.errors import ConfigError
from opsync.core.gobool import parse_bool
from opsync.settings import OperatorSettings


def test_defaults_match_the_official_operator() -> None:
    settings = OperatorSettings.from_env()
    assert settings.watch_namespaces == []  # all namespaces
    assert settings.polling_interval == 600
    assert settings.auto_restart is False
    assert settings.enable_annotations is False
    assert settings.allow_empty_values is False


def test_the_official_environment_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCH_NAMESPACE", "default, team-a,,team-*")
    monkeypatch.setenv("POLLING_INTERVAL", "10")
    monkeypatch.setenv("AUTO_RESTART", "True")
    settings = OperatorSettings.from_env()
    assert settings.watch_namespaces == ["default", "team-a", "team-*"]
    assert settings.polling_interval == 10
    assert settings.auto_restart is True


def test_an_empty_watch_namespace_means_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCH_NAMESPACE", "")
    assert OperatorSettings.from_env().watch_namespaces == []


def test_flags_override_and_opsync_knobs_use_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSYNC_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("OPSYNC_ENABLE_ANNOTATIONS", "false")
    settings = OperatorSettings.from_env(enable_annotations=True, allow_empty_values=None)
    assert settings.log_level == "debug"
    assert settings.enable_annotations is True
    assert settings.allow_empty_values is False


# Go's strconv.ParseBool, applied to the lower-cased value as the official operator does.
@pytest.mark.parametrize("text", ["1", "t", "T", "true", "TRUE", "True", "tRuE"])
def test_parse_bool_true(text: str) -> None:
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["0", "f", "F", "false", "FALSE", "False"])
def test_parse_bool_false(text: str) -> None:
    assert parse_bool(text) is False


@pytest.mark.parametrize("text", ["", "yes", "no", "on", "off", "y", "2", "-1", "truthy", "10"])
def test_parse_bool_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="true or false"):
        parse_bool(text)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUTO_RESTART", "yes"),
        ("AUTO_RESTART", ""),
        ("POLLING_INTERVAL", "ten"),
        ("POLLING_INTERVAL", "0"),
        ("POLLING_INTERVAL", "-5"),
        ("OPSYNC_LOG_LEVEL", "verbose"),
        ("OPSYNC_ALLOW_EMPTY_VALUES", "maybe"),
        ("OPSYNC_DRIFT_RESYNC_SECONDS", "999"),
    ],
)
def test_an_invalid_value_is_one_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        OperatorSettings.from_env()
    message = str(raised.value)
    assert message.startswith("invalid configuration: ")
    assert f"{name}: " in message
    assert message.count(";") == 0  # one problem, one entry


def test_several_invalid_values_are_named_in_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTO_RESTART", "sometimes")
    monkeypatch.setenv("POLLING_INTERVAL", "soon")
    with pytest.raises(ConfigError) as raised:
        OperatorSettings.from_env()
    message = str(raised.value)
    assert "AUTO_RESTART: " in message and "POLLING_INTERVAL: " in message
    # The offending values are not echoed (an environment may hold secrets).
    assert "sometimes" not in message and "soon" not in message


def test_settings_are_frozen() -> None:
    settings = OperatorSettings.from_env()
    with pytest.raises(Exception, match="frozen"):
        settings.polling_interval = 5  # type: ignore[misc]


def test_building_the_model_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLLING_INTERVAL", "10")
    monkeypatch.setenv("OPSYNC_LOG_LEVEL", "debug")
    settings = OperatorSettings(auto_restart=True)
    assert (settings.polling_interval, settings.log_level, settings.auto_restart) == (600, "info", True)
    assert OperatorSettings.from_env().polling_interval == 10


def test_the_pod_comes_from_the_downward_api(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (OperatorSettings.from_env().pod_name, OperatorSettings.from_env().pod_namespace) == ("", "")
    monkeypatch.setenv("POD_NAME", "opsync-7d9f-abcde")
    monkeypatch.setenv("POD_NAMESPACE", "opsync-system")
    settings = OperatorSettings.from_env()
    assert (settings.pod_name, settings.pod_namespace) == ("opsync-7d9f-abcde", "opsync-system")
