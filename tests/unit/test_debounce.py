"""Debouncer: one pending action per key, run after the delay, never holding the caller."""

from __future__ import annotations

import asyncio

import pytest

from opsync.sync.debounce import Debouncer


async def test_events_within_the_delay_run_the_action_once() -> None:
    runs: list[str] = []
    debouncer = Debouncer(0.05)

    async def action() -> None:
        runs.append("repair")

    assert debouncer.schedule("a", action) is True
    assert debouncer.schedule("a", action) is False  # joins the pending one
    assert runs == []  # the caller is not held
    await asyncio.sleep(0.15)
    assert runs == ["repair"]
    assert len(debouncer) == 0


async def test_keys_are_independent_and_a_later_event_schedules_anew() -> None:
    runs: list[str] = []
    debouncer = Debouncer(0.02)

    async def record(key: str) -> None:
        runs.append(key)

    debouncer.schedule("a", lambda: record("a"))
    debouncer.schedule("b", lambda: record("b"))
    await asyncio.sleep(0.08)
    assert sorted(runs) == ["a", "b"]
    assert debouncer.schedule("a", lambda: record("a")) is True
    await asyncio.sleep(0.08)
    assert sorted(runs) == ["a", "a", "b"]


async def test_an_event_while_the_action_runs_schedules_another() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    runs: list[int] = []
    debouncer = Debouncer(0)

    async def slow() -> None:
        runs.append(len(runs))
        started.set()
        await release.wait()

    debouncer.schedule("a", slow)
    await started.wait()
    # The running action may have read the state before this event's change: a new one is due.
    assert debouncer.schedule("a", slow) is True
    release.set()
    await asyncio.sleep(0.05)
    assert runs == [0, 1]


async def test_a_failing_action_is_logged_and_does_not_stop_others(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[str] = []
    debouncer = Debouncer(0)

    async def boom() -> None:
        raise RuntimeError("boom")

    async def fine() -> None:
        runs.append("fine")

    debouncer.schedule("a", boom)
    debouncer.schedule("b", fine)
    await asyncio.sleep(0.05)
    assert runs == ["fine"]
    assert "debounced action for a failed" in caplog.text


async def test_aclose_cancels_what_is_pending() -> None:
    runs: list[str] = []
    debouncer = Debouncer(10)

    async def action() -> None:
        runs.append("late")

    debouncer.schedule("a", action)
    await debouncer.aclose()
    assert runs == []
    assert len(debouncer) == 0


async def test_an_action_may_be_scheduled_with_its_own_delay() -> None:
    """A Secret held back from repair is repaired when its backoff ends, not after the usual delay."""
    runs: list[str] = []
    debouncer = Debouncer(0.01)

    async def record(key: str) -> None:
        runs.append(key)

    debouncer.schedule("later", lambda: record("later"), delay=0.15)
    debouncer.schedule("soon", lambda: record("soon"))
    await asyncio.sleep(0.07)
    assert runs == ["soon"]
    assert debouncer.schedule("later", lambda: record("again"), delay=0.01) is False  # still pending
    await asyncio.sleep(0.15)
    assert runs == ["soon", "later"]
