"""ConnectConfig: official env names, opsync extras, normalisation, one clear ConfigError."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from opsync.connect.config import ConnectConfig
from opsync.core.errors import ConfigError
from tests.pki import certificate

TOKEN = "eyJhbGciOiJFUzI1NiJ9.token-canary-91c2.sig"


@pytest.fixture
def ca_bundle(tmp_path: Path) -> Path:
    """A PEM file with one self-signed CA certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate(key, "opsync test CA", ca=True)
    path = tmp_path / "ca.pem"
    path.write_bytes(cert)
    return path


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("OP_CONNECT_HOST", "http://onepassword-connect:8080")
    monkeypatch.setenv("OP_CONNECT_TOKEN", TOKEN)
    return monkeypatch


def test_reads_official_env_names(env: pytest.MonkeyPatch) -> None:
    config = ConnectConfig.from_env()
    assert config.host == "http://onepassword-connect:8080"
    assert config.api_url == "http://onepassword-connect:8080/v1"
    assert config.token.get_secret_value() == TOKEN
    assert config.tls_verify is True
    assert config.ca_bundle is None


def test_defaults_are_explicit_and_sane(env: pytest.MonkeyPatch) -> None:
    config = ConnectConfig.from_env()
    assert config.timeout > 0 and config.connect_timeout > 0
    assert 1 <= config.max_concurrency <= config.max_connections
    assert config.max_retries >= 1
    assert 0 < config.forbidden_retries <= config.max_retries
    assert 0 < config.backoff_initial <= config.backoff_max


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("http://connect:8080", "http://connect:8080"),
        ("http://connect:8080/", "http://connect:8080"),
        ("http://connect:8080/v1", "http://connect:8080"),
        ("http://connect:8080/v1/", "http://connect:8080"),
        ("  https://connect.example.com/v1  ", "https://connect.example.com"),
        ("https://proxy.example.com/onepassword/v1", "https://proxy.example.com/onepassword"),
        ("http://127.0.0.1:1234//", "http://127.0.0.1:1234"),
        ("http://[::1]:8080/v1", "http://[::1]:8080"),
    ],
)
def test_host_is_normalised(raw: str, normalised: str) -> None:
    assert ConnectConfig(host=raw, token=TOKEN).host == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "connect:8080",
        "onepassword-connect",
        "ftp://connect",
        "http://",
        "http://connect:8080/?x=1",
        "http://c:99999",
    ],
)
def test_invalid_host_is_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ConnectConfig(host=raw, token=TOKEN)
    message = str(caught.value)
    assert message.startswith("invalid 1Password Connect configuration: OP_CONNECT_HOST: ")
    assert "\n" not in message


def test_missing_host_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OP_CONNECT_TOKEN", TOKEN)
    with pytest.raises(ConfigError, match="OP_CONNECT_HOST: Field required"):
        ConnectConfig.from_env()


def test_missing_token_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OP_CONNECT_HOST", "http://connect:8080")
    with pytest.raises(ConfigError, match="no token: set OP_CONNECT_TOKEN or OP_CONNECT_TOKEN_FILE"):
        ConnectConfig.from_env()
    monkeypatch.setenv("OP_CONNECT_TOKEN", "   ")
    with pytest.raises(ConfigError, match="no token"):
        ConnectConfig.from_env()


def test_token_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    monkeypatch.setenv("OP_CONNECT_HOST", "http://connect:8080")
    monkeypatch.setenv("OP_CONNECT_TOKEN_FILE", str(path))
    config = ConnectConfig.from_env()
    assert config.token.get_secret_value() == TOKEN
    assert config.token_file == path


def test_token_and_token_file_together_are_refused(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    env.setenv("OP_CONNECT_TOKEN_FILE", str(path))
    with pytest.raises(ConfigError, match="not both"):
        ConnectConfig.from_env()


def test_unreadable_or_empty_token_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OP_CONNECT_HOST", "http://connect:8080")
    monkeypatch.setenv("OP_CONNECT_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"cannot read token file .*missing: No such file"):
        ConnectConfig.from_env()
    empty = tmp_path / "empty"
    empty.write_text("\n")
    monkeypatch.setenv("OP_CONNECT_TOKEN_FILE", str(empty))
    with pytest.raises(ConfigError, match="is empty"):
        ConnectConfig.from_env()
    garbage = tmp_path / "garbage"
    garbage.write_text("two words")
    monkeypatch.setenv("OP_CONNECT_TOKEN_FILE", str(garbage))
    with pytest.raises(ConfigError, match="whitespace") as caught:
        ConnectConfig.from_env()
    assert "two words" not in str(caught.value)
    odd = tmp_path / "odd"
    odd.write_text("tökén")
    monkeypatch.setenv("OP_CONNECT_TOKEN_FILE", str(odd))
    with pytest.raises(ConfigError, match="characters a bearer token cannot have") as caught:
        ConnectConfig.from_env()
    assert "tökén" not in str(caught.value)


def test_opsync_extras_from_env(env: pytest.MonkeyPatch, ca_bundle: Path) -> None:
    env.setenv("OPSYNC_CONNECT_CA_BUNDLE", str(ca_bundle))
    env.setenv("OPSYNC_CONNECT_TIMEOUT", "12.5")
    env.setenv("OPSYNC_CONNECT_CONNECT_TIMEOUT", "2")
    env.setenv("OPSYNC_CONNECT_MAX_CONNECTIONS", "20")
    env.setenv("OPSYNC_CONNECT_MAX_CONCURRENCY", "15")
    env.setenv("OPSYNC_CONNECT_FILE_CONCURRENCY", "3")
    env.setenv("OPSYNC_CONNECT_MAX_RETRIES", "5")
    env.setenv("OPSYNC_CONNECT_FORBIDDEN_RETRIES", "1")
    env.setenv("OPSYNC_CONNECT_BACKOFF_INITIAL", "0.1")
    env.setenv("OPSYNC_CONNECT_BACKOFF_MAX", "2")
    env.setenv("OPSYNC_CONNECT_RETRY_AFTER_MAX", "60")
    env.setenv("OPSYNC_CONNECT_TLS_VERIFY", "false")
    config = ConnectConfig.from_env()
    assert config.ca_bundle == ca_bundle
    assert (config.timeout, config.connect_timeout) == (12.5, 2.0)
    assert (config.max_connections, config.max_concurrency, config.file_concurrency) == (20, 15, 3)
    assert (config.max_retries, config.forbidden_retries) == (5, 1)
    assert (config.backoff_initial, config.backoff_max, config.retry_after_max) == (0.1, 2.0, 60.0)
    assert config.tls_verify is False


def test_official_name_wins_over_opsync_spelling(env: pytest.MonkeyPatch) -> None:
    env.setenv("OPSYNC_CONNECT_HOST", "http://other:1")
    assert ConnectConfig.from_env().host == "http://onepassword-connect:8080"


def test_keyword_arguments_override_env(env: pytest.MonkeyPatch) -> None:
    config = ConnectConfig.from_env(host="http://127.0.0.1:9/v1", max_retries=0, timeout=None)
    assert config.host == "http://127.0.0.1:9"
    assert config.max_retries == 0
    assert config.timeout == 30.0  # None means "not given": the environment or the default
    assert config.token.get_secret_value() == TOKEN


def test_explicit_values_never_read_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("OPSYNC_CONNECT_MAX_RETRIES", "7")
    config = ConnectConfig(host="http://127.0.0.1:9", token="explicit")
    assert config.max_retries == 3
    assert config.token.get_secret_value() == "explicit"
    with pytest.raises(ConfigError, match="no token"):
        ConnectConfig(host="http://127.0.0.1:9")  # OP_CONNECT_TOKEN is set, and not used


def test_several_invalid_values_give_one_message_naming_each_variable(env: pytest.MonkeyPatch) -> None:
    env.setenv("OPSYNC_CONNECT_TIMEOUT", "soon")
    env.setenv("OPSYNC_CONNECT_MAX_RETRIES", "-1")
    env.setenv("OPSYNC_CONNECT_MAX_CONNECTIONS", "0")
    with pytest.raises(ConfigError) as caught:
        ConnectConfig.from_env()
    message = str(caught.value)
    assert "OPSYNC_CONNECT_TIMEOUT: " in message
    assert "OPSYNC_CONNECT_MAX_RETRIES: " in message
    assert "OPSYNC_CONNECT_MAX_CONNECTIONS: " in message
    assert "soon" not in message  # inputs are not echoed
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_cross_field_rules(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="MAX_CONCURRENCY must not exceed"):
        ConnectConfig.from_env(max_connections=2, max_concurrency=3)
    with pytest.raises(ConfigError, match="BACKOFF_MAX must not be below"):
        ConnectConfig.from_env(backoff_initial=5, backoff_max=1)


def test_bad_ca_bundle(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate")
    env.setenv("OPSYNC_CONNECT_CA_BUNDLE", str(not_pem))
    with pytest.raises(ConfigError, match="OPSYNC_CONNECT_CA_BUNDLE: cannot load CA bundle"):
        ConnectConfig.from_env()
    env.setenv("OPSYNC_CONNECT_CA_BUNDLE", str(tmp_path / "absent.pem"))
    with pytest.raises(ConfigError, match="OPSYNC_CONNECT_CA_BUNDLE: cannot load CA bundle"):
        ConnectConfig.from_env()


def test_token_never_shown(env: pytest.MonkeyPatch) -> None:
    config = ConnectConfig.from_env()
    assert TOKEN not in repr(config)
    assert TOKEN not in str(config)
    assert TOKEN not in config.model_dump_json()
    env.setenv("OPSYNC_CONNECT_MAX_RETRIES", "many")
    with pytest.raises(ConfigError) as caught:
        ConnectConfig.from_env()
    assert TOKEN not in str(caught.value)


def test_nothing_is_read_at_import_time() -> None:
    bad = {**os.environ, "OP_CONNECT_HOST": "not a url", "OPSYNC_CONNECT_MAX_RETRIES": "many"}
    result = subprocess.run(
        [sys.executable, "-c", "import opsync.connect"], env=bad, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
