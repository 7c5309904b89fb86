"""Connect-style bearer tokens: ES256 JWTs listing the vaults they reach and at which level.

Why this module exists: real Connect tokens are JWTs whose ``1password.com/vts``
claim lists vault ids with an access mask; clients and operators pass them
around opaquely, and some tools decode the claims to show a token's reach. The
local server issues tokens of the same shape, signed with a P-256 key kept in
its data file, and checks every request's token against that key: a token of
another server (other key), a truncated one or an expired one is refused.

Access masks in ``a`` are this server's own encoding: ``READ`` (16384) and
``WRITE`` (32768), both for read+write. Token text never appears in messages.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from opsync.tooling.connectserver.models import new_id

ISSUER = "com.1password.b5"
AUDIENCE = "com.1password.secretservice"
FEATURE = "vaultaccess"
_COORDINATE_BYTES = 32


class Access(enum.IntFlag):
    """What a token may do in one vault."""

    NONE = 0
    READ = 1 << 14
    WRITE = 1 << 15
    READ_WRITE = READ | WRITE


class TokenError(Exception):
    """The bearer token is refused; the message is safe to return to the caller."""


def parse_scope(spec: str) -> tuple[str, Access]:
    """``"Vault name"`` → read+write, ``"Vault name,r"`` → read only, ``"Vault name,w"`` → write only.

    Only a trailing ``,r``/``,w``/``,rw`` is a level, so vault names may contain commas.
    """
    name, comma, level = spec.rpartition(",")
    levels = {"r": Access.READ, "w": Access.WRITE, "rw": Access.READ_WRITE, "wr": Access.READ_WRITE}
    if comma and level.strip().lower() in levels and name.strip():
        return name.strip(), levels[level.strip().lower()]
    if not spec.strip():
        raise ValueError("empty vault in token scope")
    return spec.strip(), Access.READ_WRITE


@dataclass(frozen=True)
class TokenClaims:
    """A verified token: its id, when it expires and what it may do in which vault."""

    token_id: str
    server_id: str
    account: str
    issued_at: int
    expires_at: int | None
    vaults: Mapping[str, Access] = field(default_factory=dict)

    def access(self, vault_id: str) -> Access:
        return self.vaults.get(vault_id, Access.NONE)


def generate_signing_key() -> str:
    """A new P-256 private key, PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


class TokenAuthority:
    """Issues and verifies this server's tokens."""

    def __init__(self, signing_key_pem: str, *, server_id: str, account: str) -> None:
        key = serialization.load_pem_private_key(signing_key_pem.encode("ascii"), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("the signing key must be a P-256 (ES256) private key")
        self._key = key
        self._public = key.public_key()
        public_der = self._public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        digest = hashlib.sha256(public_der).digest()
        self.key_id = base64.b32encode(digest).decode("ascii")[:26].lower()
        self.server_id = server_id
        self.account = account

    def __repr__(self) -> str:
        return f"TokenAuthority(key_id={self.key_id!r}, server_id={self.server_id!r})"

    def issue(self, vaults: Mapping[str, Access], *, expires_in: float | None = None) -> str:
        """A signed token for these vault ids; ``expires_in`` seconds, or no expiry."""
        if not vaults:
            raise ValueError("a token needs at least one vault")
        now = int(time.time())
        claims: dict[str, Any] = {
            "1password.com/auuid": self.account,
            "1password.com/fts": [FEATURE],
            "1password.com/vts": [{"u": vault_id, "a": int(access)} for vault_id, access in vaults.items()],
            "aud": [AUDIENCE],
            "iat": now,
            "iss": ISSUER,
            "jti": new_id(),
            "sub": self.server_id,
        }
        if expires_in is not None:
            claims["exp"] = now + max(0, int(expires_in))
        header = {"alg": "ES256", "kid": self.key_id, "typ": "JWT"}
        signing_input = f"{_encode(header)}.{_encode(claims)}".encode("ascii")
        der = self._key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(_COORDINATE_BYTES, "big") + s.to_bytes(_COORDINATE_BYTES, "big")
        return f"{signing_input.decode('ascii')}.{_b64url(signature)}"

    def verify(self, token: str, *, now: float | None = None) -> TokenClaims:
        """The token's claims, or :class:`TokenError` if it is malformed, foreign or expired."""
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("Invalid bearer token")
        header = _decode_json(parts[0])
        claims = _decode_json(parts[1])
        signature = _b64url_decode(parts[2])
        if header.get("alg") != "ES256" or len(signature) != 2 * _COORDINATE_BYTES:
            raise TokenError("Invalid bearer token")
        r = int.from_bytes(signature[:_COORDINATE_BYTES], "big")
        s = int.from_bytes(signature[_COORDINATE_BYTES:], "big")
        try:
            self._public.verify(
                encode_dss_signature(r, s),
                f"{parts[0]}.{parts[1]}".encode("ascii"),
                ec.ECDSA(hashes.SHA256()),
            )
        except (InvalidSignature, ValueError):
            raise TokenError("Invalid token signature") from None
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if claims.get("iss") != ISSUER or AUDIENCE not in audiences or claims.get("sub") != self.server_id:
            raise TokenError("Invalid bearer token: not issued for this server")
        if FEATURE not in (claims.get("1password.com/fts") or []):
            raise TokenError("Invalid bearer token: no vault access feature")
        expires_at = claims.get("exp")
        if expires_at is not None and (not isinstance(expires_at, int) or (now or time.time()) >= expires_at):
            raise TokenError("Invalid bearer token: token is expired (exp)")
        vaults: dict[str, Access] = {}
        for grant in claims.get("1password.com/vts") or []:
            if (
                not isinstance(grant, dict)
                or not isinstance(grant.get("u"), str)
                or not isinstance(grant.get("a"), int)
            ):
                raise TokenError("Invalid bearer token: malformed vault claim")
            vaults[grant["u"]] = vaults.get(grant["u"], Access.NONE) | Access(grant["a"] & Access.READ_WRITE)
        token_id, issued_at = claims.get("jti"), claims.get("iat")
        if not isinstance(token_id, str) or not isinstance(issued_at, int):
            raise TokenError("Invalid bearer token")
        return TokenClaims(
            token_id=token_id,
            server_id=self.server_id,
            account=str(claims.get("1password.com/auuid", "")),
            issued_at=issued_at,
            expires_at=expires_at,
            vaults=vaults,
        )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _encode(document: Mapping[str, Any]) -> str:
    return _b64url(json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8"))


def _b64url_decode(text: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise TokenError("Invalid bearer token") from None


def _decode_json(text: str) -> dict[str, Any]:
    try:
        document = json.loads(_b64url_decode(text))
    except (ValueError, UnicodeDecodeError):
        raise TokenError("Invalid bearer token") from None
    if not isinstance(document, dict):
        raise TokenError("Invalid bearer token")
    return document
