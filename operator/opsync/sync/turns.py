"""Blocking work on one worker thread, namespaces taking turns.

Why this module exists: a template may use its whole budget (seconds of CPU), so templates render
off the event loop, on a thread of their own. A plain thread pool serves them first come, first
served: one namespace with twenty heavy templates would make every other namespace's template
wait for all twenty (about 30 s). :class:`Turns` keeps a queue per key (the namespace) and takes
one job from each waiting key in turn, so a job waits for the job running and at most one job of
each other busy key, whatever the others have queued; within a key, jobs run in order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[[], Any], "concurrent.futures.Future[Any]"]


class Turns:
    """One worker thread (started on first use); keys take turns, one job each."""

    def __init__(self, *, thread_name: str = "opsync-turns") -> None:
        self._thread_name = thread_name
        self._queues: dict[Hashable, deque[_Job]] = {}  # in turn order: served from the front
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    async def run(self, key: Hashable, job: Callable[[], T]) -> T:
        """Run ``job`` on the worker thread when ``key``'s turn comes; its result or exception."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("closed")
            self._queues.setdefault(key, deque()).append((job, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._thread_name, daemon=True)
                self._thread.start()
            self._lock.notify()
        return await asyncio.wrap_future(future)

    def waiting(self) -> dict[Hashable, int]:
        """Jobs queued per key (not the one running)."""
        with self._lock:
            return {key: len(queue) for key, queue in self._queues.items()}

    def _next(self) -> _Job | None:
        with self._lock:
            while not self._queues and not self._closed:
                self._lock.wait()
            if self._closed:
                return None
            key = next(iter(self._queues))
            queue = self._queues.pop(key)
            job = queue.popleft()
            if queue:
                self._queues[key] = queue  # to the back of the line
            return job

    def _work(self) -> None:
        while (job := self._next()) is not None:
            work, future = job
            if not future.set_running_or_notify_cancel():
                continue  # its caller was cancelled meanwhile
            try:
                result = work()
            except BaseException as exc:  # handed to the caller, as an executor does
                future.set_exception(exc)
            else:
                future.set_result(result)

    def close(self) -> None:
        """Cancel what waits; a job already running ends on its own (a template within its budget)."""
        with self._lock:
            self._closed = True
            for queue in self._queues.values():
                for _, future in queue:
                    future.cancel()
            self._queues.clear()
            self._lock.notify_all()
