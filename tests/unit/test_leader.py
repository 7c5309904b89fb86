"""Leader election decisions: who may take a Lease, judged on the local clock."""

from __future__ import annotations

import pytest

from opsync.sync.leader import LeaseRecord, can_acquire, micro_time


def record(holder: str, duration: float = 15) -> LeaseRecord:
    return LeaseRecord(holder, duration, 0, None, "2026-01-01T00:00:00.000000Z", "1")


@pytest.mark.parametrize(
    ("holder", "observed_at", "now", "expected"),
    [
        ("", 100.0, 100.0, True),  # released: take it at once
        ("me", 100.0, 100.0, True),  # ours: renew
        ("other", 100.0, 114.9, False),  # held, renewed less than a duration ago (as seen here)
        ("other", 100.0, 115.0, True),  # not renewed for a whole duration: expired
    ],
)
def test_who_may_take_the_lease(holder: str, observed_at: float, now: float, expected: bool) -> None:
    assert can_acquire(record(holder), "me", observed_at=observed_at, now=now) is expected


def test_a_record_is_read_from_a_lease_body() -> None:
    body = {
        "metadata": {"resourceVersion": "42"},
        "spec": {"holderIdentity": "pod-a_1234", "leaseDurationSeconds": 15, "leaseTransitions": 3},
    }
    parsed = LeaseRecord.from_body(body)
    assert (parsed.holder, parsed.duration, parsed.transitions, parsed.resource_version) == (
        "pod-a_1234",
        15.0,
        3,
        "42",
    )
    assert LeaseRecord.from_body({}).holder == ""


def test_micro_time_is_rfc3339_with_microseconds_in_utc() -> None:
    import datetime as dt

    moment = dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert micro_time(moment) == "2026-01-02T01:04:05.000006Z"
