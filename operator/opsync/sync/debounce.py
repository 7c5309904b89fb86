"""Run one action per key after a quiet delay, without holding the caller.

Why this module exists: drift repair waits a moment after a Secret changes (so a
burst of edits, or opsync's own write echoing back as a watch event, costs one
repair), and that wait must not happen inside a kopf handler, where it would
hold one of kopf's workers. :class:`Debouncer` keeps at most one pending action
per key: events that arrive while one is pending join it, since the action
reads the current state when it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable

logger = logging.getLogger(__name__)


class Debouncer:
    """At most one pending action per key, run ``delay`` seconds after it was first asked for."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._pending: dict[Hashable, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # pending or running

    def __len__(self) -> int:
        return len(self._pending)

    def schedule(
        self, key: Hashable, action: Callable[[], Awaitable[None]], *, delay: float | None = None
    ) -> bool:
        """Run ``action`` after the delay (``delay`` s instead, when given) unless one is already
        pending for ``key`` (then it is dropped: the pending one will see the same state). True
        when this call scheduled."""
        if key in self._pending:
            return False
        wait = self.delay if delay is None else delay
        task = asyncio.create_task(self._run(key, action, wait), name=f"opsync debounce {key}")
        self._pending[key] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, key: Hashable, action: Callable[[], Awaitable[None]], delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            # An event from now on schedules anew: it may come after the state the action reads.
            self._pending.pop(key, None)
        try:
            await action()
        except Exception:
            logger.exception("debounced action for %s failed", key)

    async def aclose(self) -> None:
        """Cancel whatever is pending or running and wait for it to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._pending.clear()
