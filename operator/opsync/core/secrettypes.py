"""Typed Secrets: check and convert a Secret's data for its ``type`` before it is written.

The API server checks little more than that a typed Secret has its required
keys; the content is read later by kubelet, ingress controllers or ssh, which
fail far from the OnePasswordItem that caused it. opsync checks the content
before writing, so a bad 1Password item shows up in the item's status with a
message that says what is wrong and which field to fix. Where a value from
1Password is valid but in a form the consumer does not read (an SSH key from a
1Password SSH Key item is PKCS#8 PEM; ssh wants OpenSSH format), it is
converted.

Rules per Secret type:

``Opaque``, ``""`` and any other type (e.g. ``example.com/custom``)
    Written unchanged.

``kubernetes.io/dockerconfigjson``
    ``.dockerconfigjson`` is required: a JSON object whose ``auths`` maps each
    registry to an object (that is what kubelet reads). :func:`docker_config_json`
    builds one from a registry server, username and password.

``kubernetes.io/dockercfg``
    ``.dockercfg`` is required: a JSON object.

``kubernetes.io/basic-auth``
    At least one of ``username`` and ``password`` (the API server's rule).

``kubernetes.io/ssh-auth``
    ``ssh-privatekey`` is required: an unencrypted private key, either in
    OpenSSH format (kept as given) or as PEM (PKCS#8 ``BEGIN PRIVATE KEY``,
    PKCS#1 ``BEGIN RSA PRIVATE KEY`` or SEC1 ``BEGIN EC PRIVATE KEY``), which is
    converted to OpenSSH format. Key types: Ed25519, ECDSA on P-256, P-384 or
    P-521, and RSA (OpenSSH has dropped DSA). The key is normalised (see below).

``kubernetes.io/tls``
    ``tls.crt`` and ``tls.key`` are required. ``tls.crt`` holds one or more PEM
    certificates, leaf first; ``tls.key`` an unencrypted PEM private key
    (PKCS#8, PKCS#1 RSA or SEC1 EC) that matches the first certificate. An
    optional ``ca.crt`` must hold PEM certificates. The values are kept as
    given (never re-encoded), only normalised.

``kubernetes.io/service-account-token``
    Refused: the API server's token controller fills these Secrets; opsync
    cannot produce one. Use ``Opaque`` to store a token.

``bootstrap.kubernetes.io/token``
    ``token-id`` (6 characters of ``[a-z0-9]``) and ``token-secret``
    (16 characters of ``[a-z0-9]``) are required.

Normalising (``ssh-privatekey``, ``tls.crt``, ``tls.key``, ``ca.crt``): values
from 1Password may come with ``\\r\\n`` line ends or surrounding whitespace, so
surrounding whitespace is stripped, ``\\r\\n`` becomes ``\\n``, and the value
ends with one newline (ssh refuses a key without one).

Encrypted keys are refused: opsync has no passphrase and will not ask for one.

Strict or not (``spec.typeCheck``): the rules above are opsync's. The official operator
writes whatever the item holds, and the API server refuses only a Secret missing a required
key, a Docker config that is not a JSON object, or a service-account token. So by default
(:func:`prepare` with ``strict=False``) only those refusals stop a write; every other rule is
checked and its finding reported (``problem``), while the values are written exactly as the
official operator writes them: neither normalised nor converted. ``strict=True`` refuses on any
rule and normalises and converts (an SSH key to OpenSSH) before writing.
Everything here is pure (no I/O, no logging), and no message, repr or chained
exception carries a secret value: errors name keys and problems only.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_ssh_private_key,
)

from opsync.core.errors import Reason, SpecError

DOCKER_CONFIG_JSON = "kubernetes.io/dockerconfigjson"
DOCKER_CFG = "kubernetes.io/dockercfg"
TLS = "kubernetes.io/tls"
SSH_AUTH = "kubernetes.io/ssh-auth"
BASIC_AUTH = "kubernetes.io/basic-auth"
SERVICE_ACCOUNT_TOKEN = "kubernetes.io/service-account-token"  # noqa: S105 - a type name
BOOTSTRAP_TOKEN = "bootstrap.kubernetes.io/token"  # noqa: S105 - a type name

INVALID = Reason.InvalidSecretData
MISSING = Reason.MissingSecretKey

REQUIRED_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        DOCKER_CONFIG_JSON: (".dockerconfigjson",),
        DOCKER_CFG: (".dockercfg",),
        # One of the two suffices (the API server's rule); both are listed for the docs.
        BASIC_AUTH: ("username", "password"),
        SSH_AUTH: ("ssh-privatekey",),
        TLS: ("tls.crt", "tls.key"),
        BOOTSTRAP_TOKEN: ("token-id", "token-secret"),
    }
)
"""The data keys each Secret type needs; types not listed need none."""

_OPENSSH_BEGIN = b"-----BEGIN OPENSSH PRIVATE KEY-----"
_SSH_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_SSH_KEY_TYPES = "Ed25519, ECDSA (P-256, P-384, P-521) or RSA"
_PEM_KEY_FORMS = "BEGIN PRIVATE KEY, BEGIN RSA PRIVATE KEY or BEGIN EC PRIVATE KEY"
_BOOTSTRAP_ID = re.compile(rb"[a-z0-9]{6}")
_BOOTSTRAP_SECRET = re.compile(rb"[a-z0-9]{16}")
# Errors cryptography raises for content it cannot load; their text is never passed on.
_LOAD_ERRORS = (ValueError, UnsupportedAlgorithm)


def docker_config_json(server: str, username: str, password: str, email: str | None = None) -> bytes:
    """The ``.dockerconfigjson`` value for one registry: compact JSON with sorted keys.

    ``server`` is used as given (``ghcr.io``, ``https://index.docker.io/v1/``);
    ``email`` is left out when empty.
    """
    _check_registry_login(server, username, password)
    auth = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    entry = {"username": username, "password": password, "auth": auth}
    if email:
        entry["email"] = email
    return json.dumps({"auths": {server: entry}}, separators=(",", ":"), sort_keys=True).encode()


def _check_registry_login(server: str, username: str, password: str) -> None:
    if not server or any(c.isspace() for c in server):
        raise SpecError(
            "dockerconfigjson: the registry server is empty or contains whitespace; "
            "set it to the registry host, e.g. ghcr.io or https://index.docker.io/v1/",
            reason=INVALID,
        )
    if not username:
        raise SpecError("dockerconfigjson: the registry username is empty; set the username", reason=INVALID)
    if ":" in username:
        raise SpecError(
            "dockerconfigjson: the registry username contains ':', which makes the auth string "
            "ambiguous; use a username without ':'",
            reason=INVALID,
        )
    if not password:
        raise SpecError(
            "dockerconfigjson: the registry password is empty; set the password or token", reason=INVALID
        )


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """The data to write for a typed Secret, and what is wrong with its content if anything."""

    data: dict[str, bytes]
    problem: str | None = None
    """Lenient only: the first rule the content breaks (names keys and rules, never values)."""


def has_rules(secret_type: str) -> bool:
    """Whether opsync checks the content of Secrets of ``secret_type``."""
    return secret_type in _CHECKS


def prepare(secret_type: str, data: Mapping[str, bytes], *, strict: bool = True) -> Prepared:
    """The data to write for a Secret of ``secret_type``, in a new dict.

    Strict: checked and converted; raises :class:`~opsync.core.errors.SpecError` (reason
    ``MissingSecretKey`` or ``InvalidSecretData``) when ``data`` breaks any rule. Lenient: raises
    only where the API server would refuse the Secret; otherwise the data is kept as given and
    ``problem`` says what the checks found.
    """
    check = _CHECKS.get(secret_type)
    if check is None:
        return Prepared(data=dict(data))
    if strict:
        return Prepared(data={**data, **check(data)})
    refused = _API_SERVER_RULES.get(secret_type)
    if refused is not None:
        refused(data)
    try:
        check(data)
    except SpecError as exc:
        return Prepared(data=dict(data), problem=str(exc))
    return Prepared(data=dict(data))


# Required keys.


def _require(secret_type: str, data: Mapping[str, bytes]) -> None:
    missing = [key for key in REQUIRED_KEYS[secret_type] if key not in data]
    if missing:
        needs = "the key" if len(missing) == 1 else "the keys"
        raise SpecError(_missing_message(secret_type, needs, missing), reason=MISSING)


def _missing_message(secret_type: str, needs: str, keys: list[str]) -> str:
    if len(keys) == 1:
        hint = f"name an item field {keys[0]}, or select a field with key: {keys[0]} in spec.fields"
    else:
        hint = f"name item fields after them, or select fields with key: <name> in spec.fields (e.g. key: {keys[0]})"
    return f"a {secret_type} Secret needs {needs} {', '.join(keys)}, which the item does not provide; {hint}"


def _invalid(message: str) -> SpecError:
    return SpecError(message, reason=INVALID)


# Per-type checks: each returns the values it converted (possibly none).


def _check_docker_config_json(data: Mapping[str, bytes]) -> dict[str, bytes]:
    _require(DOCKER_CONFIG_JSON, data)
    config = _json_object(".dockerconfigjson", data[".dockerconfigjson"])
    auths = config.get("auths")
    if not isinstance(auths, dict) or not all(isinstance(entry, dict) for entry in auths.values()):
        raise _invalid(
            '.dockerconfigjson: has no "auths" object mapping each registry to an object, which is what '
            'kubelet reads; store {"auths": {"<registry>": {"auth": "<base64 of user:password>"}}}'
        )
    return {}


def _docker_config_object(data: Mapping[str, bytes]) -> None:
    _require(DOCKER_CONFIG_JSON, data)
    _json_object(".dockerconfigjson", data[".dockerconfigjson"])


def _check_docker_cfg(data: Mapping[str, bytes]) -> dict[str, bytes]:
    _require(DOCKER_CFG, data)
    _json_object(".dockercfg", data[".dockercfg"])
    return {}


def _json_object(key: str, raw: bytes) -> dict[str, object]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _invalid(
            f"{key}: not valid JSON (error at line {exc.lineno} column {exc.colno}); "
            "store the JSON text of a Docker config"
        ) from None
    except ValueError:
        raise _invalid(f"{key}: not UTF-8 text; store the JSON text of a Docker config") from None
    if not isinstance(value, dict):
        raise _invalid(f"{key}: the JSON is not an object; store the JSON object of a Docker config")
    return value


def _check_basic_auth(data: Mapping[str, bytes]) -> dict[str, bytes]:
    if "username" not in data and "password" not in data:
        raise SpecError(
            _missing_message(BASIC_AUTH, "at least one of the keys", list(REQUIRED_KEYS[BASIC_AUTH])),
            reason=MISSING,
        )
    return {}


def _check_service_account_token(data: Mapping[str, bytes]) -> dict[str, bytes]:
    raise _invalid(
        f"opsync cannot produce a {SERVICE_ACCOUNT_TOKEN} Secret: the API server's token controller "
        "fills those; set type: Opaque to store a token from 1Password"
    )


def _check_bootstrap_token(data: Mapping[str, bytes]) -> dict[str, bytes]:
    _require(BOOTSTRAP_TOKEN, data)
    for key, pattern, length in (("token-id", _BOOTSTRAP_ID, 6), ("token-secret", _BOOTSTRAP_SECRET, 16)):
        if not pattern.fullmatch(data[key]):
            raise _invalid(
                f"{key}: must be exactly {length} characters of a-z and 0-9 "
                "(a bootstrap token is <token-id>.<token-secret>); fix the item field"
            )
    return {}


# kubernetes.io/ssh-auth


def _check_ssh_auth(data: Mapping[str, bytes]) -> dict[str, bytes]:
    _require(SSH_AUTH, data)
    return {"ssh-privatekey": _openssh_private_key(data["ssh-privatekey"])}


def _openssh_private_key(raw: bytes) -> bytes:
    """The key in OpenSSH format: kept when it already is, converted from PEM otherwise."""
    text = _normalised(raw)
    if text.startswith(_OPENSSH_BEGIN):
        _check_ssh_key_type(_load_ssh_key(text, load_ssh_private_key))
        return text
    key = _load_ssh_key(text, load_pem_private_key)
    _check_ssh_key_type(key)
    return _normalised(key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))


def _load_ssh_key(text: bytes, load: Callable[[bytes, None], PrivateKeyTypes]) -> PrivateKeyTypes:
    try:
        return load(text, None)
    except TypeError:
        raise _invalid(_encrypted_message("ssh-privatekey")) from None
    except UnsupportedAlgorithm:
        raise _invalid(
            f"ssh-privatekey: the key uses an algorithm or cipher opsync cannot read; "
            f"store an unencrypted {_SSH_KEY_TYPES} key"
        ) from None
    except ValueError:
        raise _invalid(
            "ssh-privatekey: not a PEM or OpenSSH private key; store the private key "
            f"(BEGIN OPENSSH PRIVATE KEY, {_PEM_KEY_FORMS}), e.g. from a 1Password SSH Key item"
        ) from None


def _check_ssh_key_type(key: PrivateKeyTypes) -> None:
    if isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        return
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _SSH_CURVES:
        return
    raise _invalid(
        f"ssh-privatekey: {_algorithm(key)} keys are not supported for ssh-auth; store an {_SSH_KEY_TYPES} key"
    )


def _algorithm(key: PrivateKeyTypes) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"EC ({key.curve.name})"
    return type(key).__name__.removesuffix("PrivateKey")


def _encrypted_message(key: str) -> str:
    return (
        f"{key}: the private key is encrypted; store it unencrypted in 1Password (opsync cannot decrypt it)"
    )


# kubernetes.io/tls


def _check_tls(data: Mapping[str, bytes]) -> dict[str, bytes]:
    _require(TLS, data)
    out = {key: _normalised(data[key]) for key in ("tls.crt", "tls.key", "ca.crt") if key in data}
    certificates = _certificates("tls.crt", out["tls.crt"], "leaf first, then intermediates")
    key = _tls_private_key(out["tls.key"])
    if _public_bytes(key) != _certificate_public_bytes(certificates[0]):
        raise _invalid(
            "tls.key does not match the certificate in tls.crt; store the private key of the first "
            "(leaf) certificate in tls.key, and put the leaf certificate first in tls.crt"
        )
    if "ca.crt" in out:
        _certificates("ca.crt", out["ca.crt"], "or remove the ca.crt field")
    return out


def _certificates(key: str, pem: bytes, advice: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except _LOAD_ERRORS:
        raise _invalid(
            f"{key}: not PEM certificates; store one or more BEGIN CERTIFICATE blocks ({advice})"
        ) from None


def _tls_private_key(pem: bytes) -> PrivateKeyTypes:
    try:
        return load_pem_private_key(pem, None)
    except TypeError:
        raise _invalid(_encrypted_message("tls.key")) from None
    except _LOAD_ERRORS:
        raise _invalid(
            f"tls.key: not a PEM private key opsync can read; store an unencrypted PEM key ({_PEM_KEY_FORMS})"
        ) from None


def _certificate_public_bytes(certificate: x509.Certificate) -> bytes:
    try:
        return certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    except _LOAD_ERRORS:
        raise _invalid(
            "tls.crt: the first certificate's public key uses an algorithm opsync cannot read; "
            "use an RSA, ECDSA or Ed25519 certificate"
        ) from None


def _public_bytes(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _normalised(pem: bytes) -> bytes:
    """``pem`` without surrounding whitespace, with ``\\n`` line ends and a final newline."""
    return pem.strip().replace(b"\r\n", b"\n") + b"\n"


_CHECKS: Mapping[str, Callable[[Mapping[str, bytes]], dict[str, bytes]]] = MappingProxyType(
    {
        DOCKER_CONFIG_JSON: _check_docker_config_json,
        DOCKER_CFG: _check_docker_cfg,
        BASIC_AUTH: _check_basic_auth,
        SSH_AUTH: _check_ssh_auth,
        TLS: _check_tls,
        SERVICE_ACCOUNT_TOKEN: _check_service_account_token,
        BOOTSTRAP_TOKEN: _check_bootstrap_token,
    }
)

_API_SERVER_RULES: Mapping[str, Callable[[Mapping[str, bytes]], object]] = MappingProxyType(
    {
        DOCKER_CONFIG_JSON: _docker_config_object,
        DOCKER_CFG: _check_docker_cfg,
        BASIC_AUTH: _check_basic_auth,
        SSH_AUTH: lambda data: _require(SSH_AUTH, data),
        TLS: lambda data: _require(TLS, data),
        SERVICE_ACCOUNT_TOKEN: _check_service_account_token,
    }
)
"""What the API server itself refuses (its Secret validation): required keys, a Docker config
that is not a JSON object, a service-account token opsync cannot fill. Bootstrap tokens have no
server-side rule."""
