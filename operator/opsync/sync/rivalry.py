"""Another writer keeps changing a managed Secret back: stop repairing it, with backoff.

Why this module exists: drift repair puts a hand-edited Secret back within a second. Against a
person that is right; against another controller (a second opsync install, leader election off
on two replicas, a different tool syncing the same name) it is a fight: two writers restoring
each other's writes, thousands of writes and Events a minute, values going backwards. The
official operator never fights because it never repairs. This tracker notices the fight (the
same Secret repaired ``repairs`` times within ``window`` seconds) and holds repairs of that
Secret back, first ``first_backoff`` seconds, doubling up to ``max_backoff``; a Secret left
alone for a whole window is forgiven. Pure bookkeeping: the caller says what to report.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


@dataclass(kw_only=True)
class _Record:
    repairs: deque[float] = field(default_factory=deque)
    backoff: float = 0.0
    until: float = 0.0


class Rivalry:
    """Repairs per Secret, and which Secrets are contested (held back) for how long."""

    def __init__(
        self,
        *,
        repairs: int = 3,
        window: float = 60.0,
        first_backoff: float = 30.0,
        max_backoff: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repairs = repairs
        self.window = window
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self._clock = clock
        self._records: dict[Hashable, _Record] = {}
        self._writers: dict[Hashable, str] = {}

    def note_writer(self, key: Hashable, writer: str | None) -> None:
        """Who last changed ``key`` other than opsync, when a change event can tell. (opsync's
        own write takes the fields over, and the other writer's entry leaves managedFields.)"""
        if writer:
            self._writers[key] = writer

    def writer(self, key: Hashable) -> str | None:
        return self._writers.get(key)

    def held_back(self, key: Hashable) -> bool:
        """Whether a repair of ``key`` must wait (its backoff runs)."""
        return self.remaining(key) > 0

    def remaining(self, key: Hashable) -> float:
        """Seconds until ``key``'s backoff ends (0 when it is not held back)."""
        record = self._records.get(key)
        return 0.0 if record is None else max(0.0, record.until - self._clock())

    def repaired(self, key: Hashable) -> float | None:
        """Record a repair of ``key``; the backoff in seconds when this repair makes it contested
        (report it then), else None."""
        now = self._clock()
        record = self._records.setdefault(key, _Record())
        while record.repairs and record.repairs[0] <= now - self.window:
            record.repairs.popleft()
        if not record.repairs and now >= record.until + self.window:
            record.backoff = 0.0  # left alone for a whole window since the last backoff: forgiven
        record.repairs.append(now)
        if len(record.repairs) < self.repairs:
            return None
        record.repairs.clear()
        record.backoff = min(self.max_backoff, record.backoff * 2 or self.first_backoff)
        record.until = now + record.backoff
        return record.backoff

    def forget(self, key: Hashable) -> None:
        self._records.pop(key, None)
        self._writers.pop(key, None)
