"""Values the server computes: generated passwords, their entropy, and current TOTP codes.

Why this module exists: Connect generates a field's value when the field is
sent with ``generate: true`` (honouring the ``recipe``: length, character sets,
excluded characters), reports an ``entropy`` for password fields and the
current one-time code (``totp``) for OTP fields. All randomness comes from
:mod:`secrets`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
import string
import struct
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

LETTERS = string.ascii_letters
DIGITS = string.digits
SYMBOLS = "!#$%&()*+,-./:;<=>?@[]^_{|}~"
DEFAULT_LENGTH = 32

_SETS: Mapping[str, str] = MappingProxyType({"LETTERS": LETTERS, "DIGITS": DIGITS, "SYMBOLS": SYMBOLS})


class RecipeError(ValueError):
    """The recipe cannot be honoured (its message names the problem, never a value)."""


@dataclass(frozen=True)
class Generated:
    value: str
    entropy: float

    def __repr__(self) -> str:
        return f"Generated(value=<{len(self.value)} characters>, entropy={self.entropy:.1f})"


def generate(
    length: int = DEFAULT_LENGTH,
    character_sets: Sequence[str] | None = None,
    exclude: str = "",
) -> Generated:
    """A random value of ``length`` characters drawn from the chosen sets minus ``exclude``.

    No or empty ``character_sets`` means all three. When the length allows, every
    chosen set that still has characters after the exclusions appears at least once.
    """
    if not 1 <= length <= 64:
        raise RecipeError("recipe length must be between 1 and 64")
    names = list(dict.fromkeys(name.upper() for name in character_sets or ())) or list(_SETS)
    unknown = [name for name in names if name not in _SETS]
    if unknown:
        raise RecipeError(f"unknown character set; expected one of {', '.join(_SETS)}")
    excluded = set(exclude)
    pools = [
        pool for pool in ("".join(c for c in _SETS[name] if c not in excluded) for name in names) if pool
    ]
    alphabet = "".join(pools)
    if not alphabet:
        raise RecipeError("the recipe excludes every character of its character sets")
    chosen = [secrets.choice(pool) for pool in pools] if length >= len(pools) else []
    chosen += [secrets.choice(alphabet) for _ in range(length - len(chosen))]
    secrets.SystemRandom().shuffle(chosen)
    return Generated("".join(chosen), round(length * math.log2(len(alphabet)), 2))


def estimate_entropy(value: str) -> float:
    """Entropy of a value as if drawn uniformly from the character classes it uses."""
    if not value:
        return 0.0
    size = 0
    for pool in (string.ascii_lowercase, string.ascii_uppercase, DIGITS):
        if any(c in pool for c in value):
            size += len(pool)
    if any(not c.isascii() or not c.isalnum() for c in value):
        size += len(SYMBOLS)
    return round(len(value) * math.log2(size), 2)


def totp(uri: str, now: float, *, step: int = 30) -> str | None:
    """The current RFC 6238 code for an ``otpauth://`` URI (or a bare base32 secret); None if unusable."""
    secret = uri
    digits = 6
    algorithm = "sha1"
    if uri.startswith("otpauth://"):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
        secret = (query.get("secret") or [""])[0]
        try:
            digits = int((query.get("digits") or ["6"])[0])
            step = int((query.get("period") or [str(step)])[0])
        except ValueError:
            return None
        algorithm = (query.get("algorithm") or ["SHA1"])[0].lower()
    if algorithm not in {"sha1", "sha256", "sha512"} or not 6 <= digits <= 10 or step <= 0:
        return None
    cleaned = "".join(secret.split()).upper()
    try:
        key = base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except (binascii.Error, ValueError):
        return None
    if not key:
        return None
    counter = struct.pack(">Q", int(now) // step)
    digest = hmac.new(key, counter, getattr(hashlib, algorithm)).digest()
    offset = digest[-1] & 0x0F
    code = (struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF) % (10**digits)
    return str(code).zfill(digits)
