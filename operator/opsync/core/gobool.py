"""Booleans as the official operator parses them (Go's ``strconv.ParseBool``).

Settings, the auto-restart annotations and workload opt-ins all take the same
spellings, so a manifest written for the official operator means the same here.
"""

from __future__ import annotations

_TRUE = {"1", "t", "true"}
_FALSE = {"0", "f", "false"}


def parse_bool(value: object) -> bool:
    """Go's ``strconv.ParseBool`` on the lower-cased value, as the official operator does."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("must be true or false (or 1/0, t/f)")
