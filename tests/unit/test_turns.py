"""Turns: blocking jobs on one worker thread, keys (namespaces) taking turns."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from opsync.sync.turns import Turns


async def test_a_busy_key_holds_another_key_for_one_job_at_most() -> None:
    """Twenty heavy templates in one namespace, then one in another: the latter waits for the job
    running and one more of the busy namespace, not for all twenty (a thread pool's order)."""
    turns = Turns()
    order: list[str] = []
    gate = threading.Event()

    def job(name: str) -> str:
        gate.wait(5)
        order.append(name)
        time.sleep(0.002)
        return name

    heavy = [asyncio.ensure_future(turns.run("busy", lambda n=n: job(f"busy-{n}"))) for n in range(20)]
    await asyncio.sleep(0.05)  # the first busy job has started and holds the thread
    light = asyncio.ensure_future(turns.run("quiet", lambda: job("quiet")))
    await asyncio.sleep(0.05)
    gate.set()
    assert await light == "quiet"
    await asyncio.gather(*heavy)
    assert order.index("quiet") == 2
    assert [name for name in order if name.startswith("busy")] == [f"busy-{n}" for n in range(20)]
    turns.close()


async def test_results_exceptions_and_the_thread() -> None:
    turns = Turns(thread_name="opsync-template")
    assert await turns.run("a", lambda: threading.current_thread().name) == "opsync-template"

    def fails() -> None:
        raise ValueError("bad template")

    with pytest.raises(ValueError, match="bad template"):
        await turns.run("a", fails)
    turns.close()
    with pytest.raises(RuntimeError):
        await turns.run("a", lambda: None)


async def test_a_cancelled_caller_skips_its_job_and_close_cancels_what_waits() -> None:
    turns = Turns()
    gate = threading.Event()
    ran: list[str] = []

    def job(name: str) -> None:
        gate.wait(5)
        ran.append(name)

    first = asyncio.ensure_future(turns.run("a", lambda: job("first")))
    await asyncio.sleep(0.05)
    skipped = asyncio.ensure_future(turns.run("a", lambda: job("skipped")))
    waiting = asyncio.ensure_future(turns.run("b", lambda: job("waiting")))
    await asyncio.sleep(0.01)
    skipped.cancel()
    assert turns.waiting() == {"a": 1, "b": 1}
    turns.close()
    gate.set()
    await first
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert ran == ["first"]
