"""The LeaderElector against the in-memory LeaseStore (tests/unit/fakes.py): acquire, respect a
held Lease, take over an expired one, renew, release, lose races. Expiry runs on an injected
clock; the loops run on real time with durations of milliseconds.
(The pure decision, can_acquire, is in test_leader.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from opsync.core.errors import KubeError
from opsync.sync.leader import LeaderElector
from tests.unit.fakes import FakeKube, Write

NS = "opsync-system"
NAME = "opsync-leader"
DURATION = 15.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def elector(kube: FakeKube, identity: str, clock: Clock | None = None, **timing: float) -> LeaderElector:
    settings: dict[str, Any] = {"duration": DURATION, "renew_deadline": 10.0, "retry_period": 2.0} | timing
    if clock is not None:
        settings["clock"] = clock
    return LeaderElector(kube, namespace=NS, name=NAME, identity=identity, **settings)


def fast(kube: FakeKube, identity: str) -> LeaderElector:
    """Loops that turn every 10 ms."""
    return elector(kube, identity, duration=1.0, renew_deadline=0.05, retry_period=0.01)


def spec(kube: FakeKube) -> dict[str, Any]:
    lease = kube.lease(NS, NAME)
    assert lease is not None
    found: dict[str, Any] = lease["spec"]
    return found


def lease_writes(kube: FakeKube) -> list[tuple[str, int]]:
    return [(w.verb, w.status) for w in kube.writes]


async def test_a_missing_lease_is_created_and_held(kube: FakeKube) -> None:
    assert await elector(kube, "a").try_acquire_or_renew() is True

    assert lease_writes(kube) == [("create", 200)]
    held = spec(kube)
    assert (held["holderIdentity"], held["leaseDurationSeconds"], held["leaseTransitions"]) == ("a", 15, 0)
    assert held["acquireTime"] == held["renewTime"]


async def test_a_released_lease_is_taken_at_once(kube: FakeKube) -> None:
    a, b = elector(kube, "a"), elector(kube, "b")
    await a.acquire(asyncio.Event())
    await a.release()
    assert spec(kube)["holderIdentity"] == ""

    assert await b.try_acquire_or_renew() is True

    held = spec(kube)
    assert (held["holderIdentity"], held["leaseTransitions"]) == ("b", 1)


async def test_release_writes_nothing_unless_leading(kube: FakeKube) -> None:
    await elector(kube, "a").try_acquire_or_renew()

    await elector(kube, "a").release()  # the same identity, but this elector never led

    assert lease_writes(kube) == [("create", 200)]
    assert spec(kube)["holderIdentity"] == "a"


async def test_a_held_lease_is_not_taken_before_it_expires(kube: FakeKube, clock: Clock) -> None:
    await elector(kube, "a").try_acquire_or_renew()
    b = elector(kube, "b", clock)

    assert await b.try_acquire_or_renew() is False
    clock.now += DURATION - 0.1
    assert await b.try_acquire_or_renew() is False

    assert lease_writes(kube) == [("create", 200)]
    assert spec(kube)["holderIdentity"] == "a"


async def test_an_expired_lease_is_taken_over(kube: FakeKube, clock: Clock) -> None:
    await elector(kube, "a").try_acquire_or_renew()
    acquired = spec(kube)["acquireTime"]
    b = elector(kube, "b", clock)
    assert await b.try_acquire_or_renew() is False  # first seen now, on b's clock

    clock.now += DURATION  # a did not renew for a whole duration, as seen by b

    assert await b.try_acquire_or_renew() is True
    held = spec(kube)
    assert (held["holderIdentity"], held["leaseTransitions"]) == ("b", 1)
    assert held["acquireTime"] != acquired


async def test_a_renewal_seen_by_the_standby_restarts_its_wait(kube: FakeKube, clock: Clock) -> None:
    a = elector(kube, "a")
    await a.try_acquire_or_renew()
    b = elector(kube, "b", clock)
    await b.try_acquire_or_renew()

    clock.now += DURATION - 1
    await a.try_acquire_or_renew()  # a renews: the record b sees changes
    assert await b.try_acquire_or_renew() is False
    clock.now += DURATION - 1  # more than a duration since b first saw the lease, less since it changed

    assert await b.try_acquire_or_renew() is False
    assert spec(kube)["holderIdentity"] == "a"


async def test_the_holder_renews(kube: FakeKube) -> None:
    a = elector(kube, "a")
    await a.try_acquire_or_renew()
    before = kube.lease(NS, NAME)
    assert before is not None
    await asyncio.sleep(0.001)  # MicroTime resolution

    assert await a.try_acquire_or_renew() is True

    after = kube.lease(NS, NAME)
    assert after is not None
    assert lease_writes(kube) == [("create", 200), ("replace", 200)]
    assert after["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]
    assert after["spec"]["renewTime"] > before["spec"]["renewTime"]
    assert after["spec"]["acquireTime"] == before["spec"]["acquireTime"]
    assert after["spec"]["leaseTransitions"] == 0


async def test_a_lost_replace_race_is_not_leading(kube: FakeKube) -> None:
    a = elector(kube, "a")
    await a.acquire(asyncio.Event())
    await a.release()
    b = elector(kube, "b")

    def c_wins(*_: str) -> None:  # c writes between b's read and b's replace
        kube.before_write = None
        kube.edit_lease(NS, NAME, lambda body: body["spec"].update(holderIdentity="c"))

    kube.before_write = c_wins

    assert await b.try_acquire_or_renew() is False
    assert kube.writes[-1] == Write("replace", "Lease", NS, NAME, 409)
    assert spec(kube)["holderIdentity"] == "c"


async def test_a_lost_create_race_is_not_leading(kube: FakeKube) -> None:
    def other_creates(*_: str) -> None:
        kube.before_write = None
        kube.put_lease(NS, {"metadata": {"name": NAME}, "spec": {"holderIdentity": "other"}})

    kube.before_write = other_creates
    assert await elector(kube, "a").try_acquire_or_renew() is False
    assert spec(kube)["holderIdentity"] == "other"


async def test_release_hands_over_to_a_waiting_replica(kube: FakeKube) -> None:
    a, b = fast(kube, "a"), fast(kube, "b")
    stop = asyncio.Event()
    assert await a.acquire(stop) is True and a.leading
    waiting = asyncio.create_task(b.acquire(stop))
    await asyncio.sleep(0.03)
    assert not waiting.done()  # a holds it, unexpired

    await a.release()

    assert await asyncio.wait_for(waiting, 0.5) is True  # well before a lease duration (1 s)
    assert not a.leading and b.leading
    assert spec(kube)["holderIdentity"] == "b"


async def test_release_leaves_a_lease_someone_else_holds(kube: FakeKube, clock: Clock) -> None:
    a = elector(kube, "a")
    await a.acquire(asyncio.Event())
    b = elector(kube, "b", clock)
    await b.try_acquire_or_renew()
    clock.now += DURATION
    await b.try_acquire_or_renew()  # a stalled; b took over
    writes = len(kube.writes)

    await a.release()

    assert len(kube.writes) == writes and spec(kube)["holderIdentity"] == "b"


async def test_keep_renews_until_stopped(kube: FakeKube) -> None:
    a, stop = fast(kube, "a"), asyncio.Event()
    await a.acquire(stop)
    keeping = asyncio.create_task(a.keep(stop))
    await asyncio.sleep(0.05)
    stop.set()

    assert await keeping is True and a.leading
    assert [verb for verb, _ in lease_writes(kube)].count("replace") >= 2


async def test_keep_gives_up_when_renewal_fails_for_the_renew_deadline(kube: FakeKube) -> None:
    a, stop = fast(kube, "a"), asyncio.Event()
    await a.acquire(stop)

    def unavailable(*_: str) -> None:
        raise KubeError("updating Lease failed: 503 Service Unavailable", status=503, retryable=True)

    kube.before_write = unavailable

    assert await asyncio.wait_for(a.keep(stop), 1.0) is False
    assert not a.leading
