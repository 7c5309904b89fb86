"""Typed Secrets: per-type checks and conversions, and that no error ever carries a value."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping

import pytest
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes, PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    KeySerializationEncryption,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_ssh_private_key,
)

from opsync.core import secrettypes
from opsync.core.errors import SpecError
from tests.pki import certificate

CANARY = "CANARY-hunter2"

# cryptography cannot write passphrase-protected OpenSSH keys without bcrypt, so this one was made with
# `ssh-keygen -t ed25519 -N opsync-test-passphrase`; it is a throwaway test key.
ENCRYPTED_OPENSSH_KEY = b"""-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABDuauRAFF
RrZZzhOGJZM/81AAAAEAAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIBq5VMTE2UI9kLfu
SNUtLlErHz898K5UnJfEOm/90a9fAAAAkP/vpub7JAD26/v4jgBwVYdXp39X8Ac7vhXCAx
JgprQjSmYu7IuzS/MjodUQ0fB4tXX5GpYDzhxYav8CXighbm6pOGgriXpbTck7VEtmxQeE
E9cfbnJFsLtYaNnpENG0NUzPdQ+pYAneDYqxpJt+++NVwxanC6c8tYU2p8LJLZKRP/mDch
gI0OnKYRHPUGx4KQ==
-----END OPENSSH PRIVATE KEY-----
"""


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def keys(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> dict[str, CertificateIssuerPrivateKeyTypes]:
    return {"rsa": rsa_key, "ec": ec_key, "ed25519": ed25519.Ed25519PrivateKey.generate()}


def pem(
    key: PrivateKeyTypes, form: PrivateFormat, encryption: KeySerializationEncryption | None = None
) -> bytes:
    return key.private_bytes(Encoding.PEM, form, encryption or NoEncryption())


def public_bytes(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def prepare(secret_type: str, data: Mapping[str, bytes]) -> dict[str, bytes]:
    """Strict preparation (``typeCheck: Strict``): checked, converted, refused when invalid."""
    return secrettypes.prepare(secret_type, data, strict=True).data


def refused(secret_type: str, data: Mapping[str, bytes], reason: str = "InvalidSecretData") -> SpecError:
    with pytest.raises(SpecError) as caught:
        secrettypes.prepare(secret_type, data, strict=True)
    assert caught.value.reason == reason
    return caught.value


def tls_data(key: CertificateIssuerPrivateKeyTypes) -> dict[str, bytes]:
    return {"tls.crt": certificate(key), "tls.key": pem(key, PrivateFormat.PKCS8)}


# docker_config_json


def test_docker_config_json_round_trip() -> None:
    out = secrettypes.docker_config_json("ghcr.io", "octocat", "s3cr:et")
    assert out == json.dumps(json.loads(out), separators=(",", ":"), sort_keys=True).encode()
    entry = json.loads(out)["auths"]["ghcr.io"]
    assert entry == {"username": "octocat", "password": "s3cr:et", "auth": entry["auth"]}
    assert base64.b64decode(entry["auth"]) == b"octocat:s3cr:et"
    assert prepare(secrettypes.DOCKER_CONFIG_JSON, {".dockerconfigjson": out})[".dockerconfigjson"] == out


def test_docker_config_json_email_and_server_as_given() -> None:
    out = secrettypes.docker_config_json("https://index.docker.io/v1/", "u", "p", email="u@example.com")
    assert json.loads(out)["auths"]["https://index.docker.io/v1/"]["email"] == "u@example.com"


@pytest.mark.parametrize(
    ("server", "username", "password", "problem"),
    [
        ("", "u", "p", "server is empty"),
        ("ghcr .io", "u", "p", "whitespace"),
        ("ghcr.io", "", "p", "username is empty"),
        ("ghcr.io", "us:er", "p", "contains ':'"),
        ("ghcr.io", "u", "", "password is empty"),
    ],
)
def test_docker_config_json_refuses(server: str, username: str, password: str, problem: str) -> None:
    with pytest.raises(SpecError, match=problem) as caught:
        secrettypes.docker_config_json(server, username, password)
    assert caught.value.reason == "InvalidSecretData"


# Types passed through, and types refused


@pytest.mark.parametrize("secret_type", ["Opaque", "", "example.com/custom"])
def test_untyped_and_unknown_types_pass_through(secret_type: str) -> None:
    data = {"tls.key": b"not a key", "x": b"\x00\xff"}
    out = prepare(secret_type, data)
    assert out == data
    assert out is not data


def test_service_account_token_refused() -> None:
    error = refused(secrettypes.SERVICE_ACCOUNT_TOKEN, {"token": b"t"})
    assert "Opaque" in str(error)


@pytest.mark.parametrize(("secret_type", "keys"), sorted(secrettypes.REQUIRED_KEYS.items()))
def test_missing_keys_named_with_a_fix(secret_type: str, keys: tuple[str, ...]) -> None:
    error = refused(secret_type, {"unrelated": b"x"}, "MissingSecretKey")
    assert secret_type in str(error)
    assert all(key in str(error) for key in keys)
    assert "spec.fields" in str(error)


@pytest.mark.parametrize(
    ("secret_type", "present", "missing"),
    [
        (secrettypes.TLS, "tls.crt", "tls.key"),
        (secrettypes.TLS, "tls.key", "tls.crt"),
        (secrettypes.BOOTSTRAP_TOKEN, "token-id", "token-secret"),
        (secrettypes.BOOTSTRAP_TOKEN, "token-secret", "token-id"),
    ],
)
def test_each_missing_key_named(secret_type: str, present: str, missing: str) -> None:
    error = refused(secret_type, {present: b"x"}, "MissingSecretKey")
    assert f"key {missing}," in str(error)
    assert f"key: {missing} in spec.fields" in str(error)


# kubernetes.io/dockerconfigjson and kubernetes.io/dockercfg


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"{", "not valid JSON"),
        (b"\x80{}", "not UTF-8"),
        (b'["auths"]', "not an object"),
        (b"{}", '"auths"'),
        (b'{"auths": []}', '"auths"'),
        (b'{"auths": {"ghcr.io": "x"}}', '"auths"'),
    ],
)
def test_dockerconfigjson_refused(value: bytes, problem: str) -> None:
    error = refused(secrettypes.DOCKER_CONFIG_JSON, {".dockerconfigjson": value})
    assert problem in str(error)
    assert str(error).startswith(".dockerconfigjson:")


def test_dockercfg() -> None:
    data = {".dockercfg": b'{"ghcr.io": {"auth": "dTpw"}}'}
    assert prepare(secrettypes.DOCKER_CFG, data) == data
    assert "not an object" in str(refused(secrettypes.DOCKER_CFG, {".dockercfg": b'"x"'}))
    assert "not valid JSON" in str(refused(secrettypes.DOCKER_CFG, {".dockercfg": b"x"}))


# kubernetes.io/basic-auth


@pytest.mark.parametrize(
    "data", [{"username": b"u"}, {"password": b"p"}, {"username": b"u", "password": b"p"}]
)
def test_basic_auth_needs_one_of_username_password(data: dict[str, bytes]) -> None:
    assert prepare(secrettypes.BASIC_AUTH, data) == data


def test_basic_auth_without_either() -> None:
    error = refused(secrettypes.BASIC_AUTH, {"user": b"u"}, "MissingSecretKey")
    assert "at least one of the keys username, password" in str(error)


# kubernetes.io/ssh-auth


def assert_openssh_of(out: bytes, key: PrivateKeyTypes) -> None:
    assert out.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert out.endswith(b"-----END OPENSSH PRIVATE KEY-----\n")
    assert public_bytes(load_ssh_private_key(out, None)) == public_bytes(key)


def ssh(value: bytes) -> bytes:
    return prepare(secrettypes.SSH_AUTH, {"ssh-privatekey": value, "known_hosts": b"k"})["ssh-privatekey"]


@pytest.mark.parametrize(
    ("make_key", "form"),
    [
        ("rsa", PrivateFormat.PKCS8),
        ("rsa", PrivateFormat.TraditionalOpenSSL),
        ("ec", PrivateFormat.TraditionalOpenSSL),
        ("ec", PrivateFormat.PKCS8),
        ("ed25519", PrivateFormat.PKCS8),
    ],
)
def test_ssh_pem_converted_to_openssh(
    make_key: str, form: PrivateFormat, keys: dict[str, CertificateIssuerPrivateKeyTypes]
) -> None:
    key = keys[make_key]
    value = pem(key, form)
    assert value.startswith(b"-----BEGIN PRIVATE KEY-----" if form is PrivateFormat.PKCS8 else b"-----BEGIN ")
    assert_openssh_of(ssh(value), key)


def test_ssh_keeps_other_keys(ec_key: ec.EllipticCurvePrivateKey) -> None:
    out = prepare(secrettypes.SSH_AUTH, {"ssh-privatekey": pem(ec_key, PrivateFormat.PKCS8), "a": b"b"})
    assert out["a"] == b"b"


def test_ssh_pem_with_crlf_and_whitespace(ec_key: ec.EllipticCurvePrivateKey) -> None:
    value = b"\r\n  " + pem(ec_key, PrivateFormat.PKCS8).replace(b"\n", b"\r\n") + b"  \r\n"
    assert_openssh_of(ssh(value), ec_key)


@pytest.mark.parametrize("make_key", ["rsa", "ed25519"])
def test_ssh_openssh_passes_through_unchanged(
    make_key: str, keys: dict[str, CertificateIssuerPrivateKeyTypes]
) -> None:
    value = pem(keys[make_key], PrivateFormat.OpenSSH)
    assert ssh(value) == value


def test_ssh_openssh_normalised(ec_key: ec.EllipticCurvePrivateKey) -> None:
    value = pem(ec_key, PrivateFormat.OpenSSH)
    assert ssh(b" " + value.replace(b"\n", b"\r\n") + b"\r\n") == value
    assert ssh(value.rstrip(b"\n")) == value


@pytest.mark.parametrize(
    "form", [PrivateFormat.PKCS8, PrivateFormat.TraditionalOpenSSL], ids=["pkcs8", "traditional"]
)
def test_ssh_encrypted_pem_refused(form: PrivateFormat, ec_key: ec.EllipticCurvePrivateKey) -> None:
    error = refused(
        secrettypes.SSH_AUTH, {"ssh-privatekey": pem(ec_key, form, BestAvailableEncryption(b"pw"))}
    )
    assert "ssh-privatekey: the private key is encrypted; store it unencrypted" in str(error)


def test_ssh_openssh_with_passphrase_refused() -> None:
    error = refused(secrettypes.SSH_AUTH, {"ssh-privatekey": ENCRYPTED_OPENSSH_KEY})
    assert "is encrypted" in str(error)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"hello",
        b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBq5VMTE2UI9kLfuSNUtLlErHz898K5UnJfEOm/90a9f",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    ],
    ids=["empty", "text", "public-key", "broken-openssh"],
)
def test_ssh_garbage_refused(value: bytes) -> None:
    error = refused(secrettypes.SSH_AUTH, {"ssh-privatekey": value})
    assert "not a PEM or OpenSSH private key" in str(error)


@pytest.mark.parametrize(
    ("make_key", "named"),
    [
        (lambda: ec.generate_private_key(ec.SECP256K1()), "EC (secp256k1)"),
        (ed448.Ed448PrivateKey.generate, "Ed448"),
        (lambda: dsa.generate_private_key(1024), "DSA"),
    ],
    ids=["secp256k1", "ed448", "dsa"],
)
def test_ssh_key_types_openssh_cannot_use(make_key: Callable[[], PrivateKeyTypes], named: str) -> None:
    error = refused(secrettypes.SSH_AUTH, {"ssh-privatekey": pem(make_key(), PrivateFormat.PKCS8)})
    assert f"ssh-privatekey: {named} keys are not supported" in str(error)


# kubernetes.io/tls


@pytest.mark.parametrize("make_key", ["rsa", "ec", "ed25519"])
def test_tls_valid_kept_as_given(make_key: str, keys: dict[str, CertificateIssuerPrivateKeyTypes]) -> None:
    data = tls_data(keys[make_key])
    assert prepare(secrettypes.TLS, data) == data


@pytest.mark.parametrize("form", [PrivateFormat.TraditionalOpenSSL, PrivateFormat.PKCS8])
def test_tls_key_forms(form: PrivateFormat, rsa_key: rsa.RSAPrivateKey) -> None:
    data = {"tls.crt": certificate(rsa_key), "tls.key": pem(rsa_key, form)}
    assert prepare(secrettypes.TLS, data) == data


def test_tls_whitespace_stripped_newline_added(ec_key: ec.EllipticCurvePrivateKey) -> None:
    clean = tls_data(ec_key) | {"ca.crt": certificate(ec_key)}
    messy = {key: b"\n  " + value.rstrip() + b" \t" for key, value in clean.items()}
    assert prepare(secrettypes.TLS, messy) == clean


def test_tls_crlf_normalised(ec_key: ec.EllipticCurvePrivateKey) -> None:
    clean = tls_data(ec_key)
    crlf = {key: value.replace(b"\n", b"\r\n") for key, value in clean.items()}
    assert prepare(secrettypes.TLS, crlf) == clean


def chain(ec_key: ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes, bytes]:
    """Leaf certificate, CA certificate, leaf key."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    return (
        certificate(ec_key, "leaf", ("ca", ca_key)),
        certificate(ca_key, "ca"),
        pem(ec_key, PrivateFormat.PKCS8),
    )


def test_tls_chain(ec_key: ec.EllipticCurvePrivateKey) -> None:
    leaf, ca, key = chain(ec_key)
    data = {"tls.crt": leaf + ca, "tls.key": key, "ca.crt": ca}
    assert prepare(secrettypes.TLS, data) == data


def test_tls_chain_leaf_not_first(ec_key: ec.EllipticCurvePrivateKey) -> None:
    leaf, ca, key = chain(ec_key)
    error = refused(secrettypes.TLS, {"tls.crt": ca + leaf, "tls.key": key})
    assert "tls.key does not match the certificate in tls.crt" in str(error)


def test_tls_key_mismatch(ec_key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    data = {"tls.crt": certificate(other), "tls.key": pem(ec_key, PrivateFormat.PKCS8)}
    assert "tls.key does not match the certificate in tls.crt" in str(refused(secrettypes.TLS, data))


def test_tls_encrypted_key(ec_key: ec.EllipticCurvePrivateKey) -> None:
    data = tls_data(ec_key) | {"tls.key": pem(ec_key, PrivateFormat.PKCS8, BestAvailableEncryption(b"pw"))}
    error = refused(secrettypes.TLS, data)
    assert str(error) == (
        "tls.key: the private key is encrypted; store it unencrypted in 1Password (opsync cannot decrypt it)"
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("tls.crt", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        ("tls.crt", b""),
        ("tls.key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
        ("tls.key", b"not a key"),
        ("ca.crt", b"not a certificate"),
    ],
)
def test_tls_malformed_pem_named(key: str, value: bytes, ec_key: ec.EllipticCurvePrivateKey) -> None:
    error = refused(secrettypes.TLS, tls_data(ec_key) | {key: value})
    assert str(error).startswith(f"{key}: not ")
    assert "PEM" in str(error)


def test_tls_key_in_openssh_format_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    data = tls_data(ec_key) | {"tls.key": pem(ec_key, PrivateFormat.OpenSSH)}
    assert str(refused(secrettypes.TLS, data)).startswith("tls.key: not a PEM private key")


# bootstrap.kubernetes.io/token


def test_bootstrap_token_valid() -> None:
    data = {"token-id": b"abc123", "token-secret": b"0123456789abcdef", "usage-bootstrap-signing": b"true"}
    assert prepare(secrettypes.BOOTSTRAP_TOKEN, data) == data


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("token-id", b"abc12"),
        ("token-id", b"ABC123"),
        ("token-id", b"abc123\n"),
        ("token-secret", b"0123456789abcde"),
        ("token-secret", b"0123456789abcdef0"),
        ("token-secret", b"0123456789abcde_"),
    ],
)
def test_bootstrap_token_invalid(key: str, value: bytes) -> None:
    data = {"token-id": b"abc123", "token-secret": b"0123456789abcdef"} | {key: value}
    error = refused(secrettypes.BOOTSTRAP_TOKEN, data)
    assert str(error).startswith(f"{key}: must be exactly")
    assert value.decode().strip() not in str(error)


# No value in any error


CANARY_PEM_KEY = f"-----BEGIN PRIVATE KEY-----\n{CANARY}\n-----END PRIVATE KEY-----".encode()


def canary_cases(key: ec.EllipticCurvePrivateKey) -> list[Callable[[], object]]:
    c = CANARY.encode()
    good = tls_data(key)
    prepare = secrettypes.prepare
    return [
        lambda: secrettypes.docker_config_json("ghcr.io", f"{CANARY}:x", CANARY),
        lambda: secrettypes.docker_config_json(f"{CANARY} x", "u", CANARY),
        lambda: secrettypes.docker_config_json("ghcr.io", "u", "", email=CANARY),
        lambda: prepare(secrettypes.DOCKER_CONFIG_JSON, {".dockerconfigjson": c}),
        lambda: prepare(secrettypes.DOCKER_CONFIG_JSON, {".dockerconfigjson": b'{"' + c + b'"'}),
        lambda: prepare(secrettypes.DOCKER_CONFIG_JSON, {".dockerconfigjson": b"\x80" + c}),
        lambda: prepare(secrettypes.DOCKER_CONFIG_JSON, {".dockerconfigjson": b'{"auths": "' + c + b'"}'}),
        lambda: prepare(secrettypes.DOCKER_CFG, {".dockercfg": b'["' + c + b'"]'}),
        lambda: prepare(secrettypes.BASIC_AUTH, {"user": c}),
        lambda: prepare(secrettypes.SERVICE_ACCOUNT_TOKEN, {"token": c}),
        lambda: prepare(secrettypes.BOOTSTRAP_TOKEN, {"token-id": c, "token-secret": c}),
        lambda: prepare(secrettypes.BOOTSTRAP_TOKEN, {"token-id": b"abc123", "token-secret": c}),
        lambda: prepare(secrettypes.SSH_AUTH, {"ssh-privatekey": c}),
        lambda: prepare(secrettypes.SSH_AUTH, {"ssh-privatekey": CANARY_PEM_KEY}),
        lambda: prepare(
            secrettypes.SSH_AUTH,
            {
                "ssh-privatekey": b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
                + c
                + b"\n-----END OPENSSH PRIVATE KEY-----"
            },
        ),
        lambda: prepare(secrettypes.SSH_AUTH, {"ssh-privatekey": ENCRYPTED_OPENSSH_KEY, "x": c}),
        lambda: prepare(secrettypes.TLS, good | {"tls.key": CANARY_PEM_KEY}),
        lambda: prepare(
            secrettypes.TLS, good | {"tls.crt": CANARY_PEM_KEY.replace(b"PRIVATE KEY", b"CERTIFICATE")}
        ),
        lambda: prepare(secrettypes.TLS, good | {"ca.crt": c}),
        lambda: prepare(secrettypes.TLS, {"tls.crt": c}),
    ]


def test_canary_never_in_errors(ec_key: ec.EllipticCurvePrivateKey) -> None:
    cases = canary_cases(ec_key)
    for number, case in enumerate(cases):
        with pytest.raises(SpecError) as caught:
            case()
        error = caught.value
        for text in (str(error), repr(error)):
            assert CANARY not in text, f"case {number}"
            assert "hunter2" not in text, f"case {number}"
        assert error.__cause__ is None
        assert error.__context__ is None or error.__suppress_context__, f"case {number}"


def test_no_key_material_in_mismatch_error(ec_key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    data = {"tls.crt": certificate(other), "tls.key": pem(ec_key, PrivateFormat.PKCS8)}
    text = str(refused(secrettypes.TLS, data))
    assert "BEGIN" not in text
    assert all(line.decode() not in text for value in data.values() for line in value.splitlines()[1:-1])


# Lenient (the default, typeCheck: Warn): only what the API server refuses stops a write.


@pytest.mark.parametrize(
    ("secret_type", "data", "reason"),
    [
        (secrettypes.TLS, {"tls.crt": b"x"}, "MissingSecretKey"),
        (secrettypes.SSH_AUTH, {}, "MissingSecretKey"),
        (secrettypes.BASIC_AUTH, {"other": b"x"}, "MissingSecretKey"),
        (secrettypes.DOCKER_CONFIG_JSON, {".dockerconfigjson": b"{not json"}, "InvalidSecretData"),
        (secrettypes.DOCKER_CONFIG_JSON, {".dockerconfigjson": b"[1]"}, "InvalidSecretData"),
        (secrettypes.DOCKER_CFG, {".dockercfg": b"nope"}, "InvalidSecretData"),
        (secrettypes.SERVICE_ACCOUNT_TOKEN, {"token": b"t"}, "InvalidSecretData"),
    ],
)
def test_lenient_refuses_what_the_api_server_refuses(
    secret_type: str, data: Mapping[str, bytes], reason: str
) -> None:
    with pytest.raises(SpecError) as caught:
        secrettypes.prepare(secret_type, data, strict=False)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("secret_type", "data", "named"),
    [
        (secrettypes.TLS, {"tls.crt": b"placeholder-canary", "tls.key": b"placeholder-canary"}, "tls.crt"),
        (secrettypes.SSH_AUTH, {"ssh-privatekey": b"not-a-key-canary"}, "ssh-privatekey"),
        (secrettypes.DOCKER_CONFIG_JSON, {".dockerconfigjson": b'{"x": 1}'}, "auths"),
        (secrettypes.BOOTSTRAP_TOKEN, {"token-id": b"ABC-canary"}, "token-secret"),
    ],
)
def test_lenient_writes_invalid_content_unchanged_and_says_what_is_wrong(
    secret_type: str, data: Mapping[str, bytes], named: str
) -> None:
    prepared = secrettypes.prepare(secret_type, data, strict=False)
    assert prepared.data == dict(data)
    assert prepared.problem is not None and named in prepared.problem
    assert "canary" not in prepared.problem


def test_lenient_keeps_valid_content_as_given_without_normalising() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    crlf = pem(key, PrivateFormat.PKCS8).replace(b"\n", b"\r\n") + b"  "
    prepared = secrettypes.prepare(secrettypes.SSH_AUTH, {"ssh-privatekey": crlf}, strict=False)
    assert prepared.data == {"ssh-privatekey": crlf} and prepared.problem is None
