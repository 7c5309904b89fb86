"""Fault injection for tests and demos: latency, 500s, 429s, dropped connections, the transient 403.

Why this module exists: clients must survive what real Connect servers do on a
bad day (slow answers, ``500 Something went wrong``, a proxy's ``429`` with
``Retry-After``, connections closed without an answer, and the intermittent
``403 Authorization: token does not have access to vault`` seen with Connect
1.7.x for vaults the token *does* reach). Everything is off by default.
:class:`FaultConfig` is a plain mutable object: change its attributes on a
running server and the next request sees them. Faults apply to ``/v1`` routes
only; ``/heartbeat``, ``/health`` and ``/metrics`` stay reliable.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Literal

FaultKind = Literal["drop", "error", "rate_limit", "transient_403"]
_RATES: Mapping[FaultKind, str] = MappingProxyType(
    {
        "drop": "drop_rate",
        "error": "error_rate",
        "rate_limit": "rate_limit_rate",
        "transient_403": "transient_403_rate",
    }
)


@dataclass
class FaultConfig:
    """What to inject; rates are probabilities per request (0 = never, 1 = always)."""

    latency_seconds: float = 0.0
    """Added before every /v1 request is handled."""
    error_rate: float = 0.0
    """Share of requests answered ``500 Something went wrong``."""
    rate_limit_rate: float = 0.0
    """Share of requests answered ``429`` with ``Retry-After: retry_after_seconds``."""
    drop_rate: float = 0.0
    """Share of connections closed without any answer."""
    transient_403_rate: float = 0.0
    """Share of in-scope vault requests answered ``403 Authorization: token does not have access to vault``."""
    retry_after_seconds: int = 1
    budget: int | None = None
    """How many more faults (of any kind but latency) may be injected; None = no limit. Counts down."""

    def validate(self) -> None:
        for name in ("error_rate", "rate_limit_rate", "drop_rate", "transient_403_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.latency_seconds < 0 or self.retry_after_seconds < 0:
            raise ValueError("latency_seconds and retry_after_seconds must not be negative")
        if self.budget is not None and self.budget < 0:
            raise ValueError("budget must not be negative")

    def reset(self) -> None:
        """Switch every fault off."""
        for spec in fields(self):
            setattr(self, spec.name, spec.default)


class FaultInjector:
    """Decides, request by request, whether to inject each fault."""

    def __init__(self, config: FaultConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self._rng = rng or random.Random()

    def roll(self, kind: FaultKind) -> bool:
        rate: float = getattr(self.config, _RATES[kind])
        if rate <= 0.0 or self.config.budget == 0:
            return False
        if rate < 1.0 and self._rng.random() >= rate:
            return False
        if self.config.budget is not None:
            self.config.budget -= 1
        return True
