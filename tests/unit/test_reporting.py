"""Status and Events for sync results: transitions, no write when nothing changed, retry backoff."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
import pytest

from opsync.core import crd
from opsync.core.desired import ObjectRef, Owner
from opsync.core.errors import Reason
from opsync.handlers import reporting
from opsync.sync.reconcile import Failure, Outcome, Target

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"
TARGET = Target(Owner(crd.API_VERSION, crd.KIND, "db", "uid-db"), "ns", "db", "vaults/v/items/i")
OUTCOME = Outcome("created", "vaults/vid/items/iid", 3)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """reporting.now() returns the last element; append to move the clock."""
    times = [T0]
    monkeypatch.setattr(reporting, "now", lambda: times[-1])
    return times


def ready_status(**overrides: Any) -> dict[str, Any]:
    status = reporting.new_status(
        None, ready=True, reason=Reason.Synced, message="ok", generation=1, outcome=OUTCOME
    )
    assert status is not None
    status.update(overrides)
    return status


# -- new_status ----------------------------------------------------------------------------------


def test_a_first_status_has_the_condition_and_the_resolved_item(clock: list[str]) -> None:
    status = reporting.new_status(
        None, ready=True, reason=Reason.Synced, message="ok", generation=1, outcome=OUTCOME
    )
    assert status == {
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Synced",
                "message": "ok",
                "lastTransitionTime": T0,
                "observedGeneration": 1,
            }
        ],
        "observedGeneration": 1,
        "itemPath": "vaults/vid/items/iid",
        "itemVersion": 3,
        "lastSyncTime": T0,
    }


def test_nothing_is_written_when_only_the_clock_would_change(clock: list[str]) -> None:
    current = ready_status()
    clock.append(T1)
    assert (
        reporting.new_status(
            current, ready=True, reason=Reason.Synced, message="ok", generation=1, outcome=OUTCOME
        )
        is None
    )


def test_the_transition_time_stays_while_the_status_stays(clock: list[str]) -> None:
    current = ready_status()
    clock.append(T1)
    status = reporting.new_status(
        current, ready=True, reason=Reason.Synced, message="updated", generation=2, outcome=OUTCOME
    )
    assert status is not None
    (condition,) = status["conditions"]
    assert condition["lastTransitionTime"] == T0
    assert (condition["message"], condition["observedGeneration"], status["lastSyncTime"]) == (
        "updated",
        2,
        T1,
    )


def test_the_transition_time_moves_when_the_status_flips(clock: list[str]) -> None:
    current = ready_status()
    clock.append(T1)
    failed = reporting.new_status(
        current, ready=False, reason=Reason.ItemNotFound, message="no", generation=1
    )
    assert failed is not None
    (condition,) = failed["conditions"]
    assert (condition["status"], condition["reason"], condition["lastTransitionTime"]) == (
        "False",
        "ItemNotFound",
        T1,
    )
    # A failure keeps the last synced item in the status: the Secret still holds that version.
    assert (failed["itemPath"], failed["itemVersion"]) == ("vaults/vid/items/iid", 3)


def test_a_new_failure_reason_keeps_the_false_since_time(clock: list[str]) -> None:
    failed = reporting.new_status(
        None, ready=False, reason=Reason.ConnectUnavailable, message="down", generation=1
    )
    clock.append(T1)
    other = reporting.new_status(failed, ready=False, reason=Reason.Forbidden, message="no", generation=1)
    assert other is not None
    assert other["conditions"][0]["lastTransitionTime"] == T0
    assert other["conditions"][0]["reason"] == "Forbidden"


def test_a_condition_without_transition_time_gets_one(clock: list[str]) -> None:
    current = {"conditions": [{"type": "Ready", "status": "True"}]}
    status = reporting.new_status(current, ready=True, reason=Reason.Synced, message="ok", generation=1)
    assert status is not None and status["conditions"][0]["lastTransitionTime"] == T0


def test_an_official_operator_status_is_taken_over(clock: list[str]) -> None:
    official = {"conditions": [{"type": "Ready", "status": "True", "message": "", "lastTransitionTime": T0}]}
    clock.append(T1)
    status = reporting.new_status(
        official, ready=True, reason=Reason.Synced, message="ok", generation=4, outcome=OUTCOME
    )
    assert status is not None
    assert status["conditions"][0]["lastTransitionTime"] == T0
    assert len(status["conditions"]) == 1


def test_several_items_are_listed_and_going_back_to_one_removes_the_list(clock: list[str]) -> None:
    two = Outcome("updated", "vaults/v/items/a", 2, items=(("vaults/v/items/a", 2), ("vaults/w/items/b", 7)))
    status = reporting.new_status(
        None, ready=True, reason=Reason.Synced, message="ok", generation=1, outcome=two, secret_name="db"
    )
    assert status is not None
    assert status["items"] == [
        {"itemPath": "vaults/v/items/a", "itemVersion": 2},
        {"itemPath": "vaults/w/items/b", "itemVersion": 7},
    ]
    assert status["secretName"] == "db"
    one = Outcome("updated", "vaults/v/items/a", 3, items=(("vaults/v/items/a", 3),))
    back = reporting.new_status(
        status, ready=True, reason=Reason.Synced, message="ok", generation=2, outcome=one
    )
    assert back is not None
    assert "items" in back and back["items"] is None  # a merge patch's null: removes the list


def test_a_failure_leaves_the_item_fields_out_and_keeps_unknown_keys(clock: list[str]) -> None:
    current = {**ready_status(), "somethingElse": {"kept": True}}
    failed = reporting.new_status(
        current, ready=False, reason=Reason.ItemNotFound, message="no", generation=1
    )
    assert failed is not None
    assert failed["somethingElse"] == {"kept": True}
    assert "items" not in failed and "secretName" not in failed


def test_the_status_is_plain_json_in_the_crd_shape(clock: list[str]) -> None:
    status = ready_status(secretName="db")
    reason = status["conditions"][0]["reason"]
    assert type(reason) is str and reason == "Synced"  # the Reason, as the string it always was
    assert crd.OnePasswordItemStatus.model_validate(status).conditions[0].reason == "Synced"


def test_an_unknown_generation_is_written_as_null_as_before(clock: list[str]) -> None:
    status = reporting.new_status(
        None, ready=False, reason=Reason.InternalError, message="x", generation=None
    )
    assert status is not None
    assert status["observedGeneration"] is None
    assert status["conditions"][0]["observedGeneration"] is None


# -- retry_delay ---------------------------------------------------------------------------------


def test_retry_delay_doubles_from_five_seconds_up_to_five_minutes() -> None:
    assert [reporting.retry_delay(n) for n in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert reporting.retry_delay(10_000) == reporting.MAX_RETRY_DELAY == 300


# -- report_success / report_failure -------------------------------------------------------------


class FakeKube:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.patches: list[Mapping[str, Any]] = []

    async def post_event(self, ref: ObjectRef, *, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    async def patch_item_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.patches.append(status)


def body(status: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": "db", "namespace": "ns", "uid": "uid-db", "generation": generation},
        "status": status,
    }


async def test_a_created_secret_posts_an_event_and_writes_the_status(clock: list[str]) -> None:
    kube = FakeKube()
    await reporting.report_success(kube, TARGET, OUTCOME, body=body())  # type: ignore[arg-type]
    assert [(t, r) for t, r, _ in kube.events] == [("Normal", "SecretSynced")]
    (status,) = kube.patches
    assert status["conditions"][0]["status"] == "True"


async def test_an_unchanged_sync_writes_nothing_and_posts_nothing(clock: list[str]) -> None:
    kube = FakeKube()
    unchanged = Outcome("unchanged", OUTCOME.resolved_path, OUTCOME.item_version)
    message = f"Secret db in sync from item version {OUTCOME.item_version}"
    current = reporting.new_status(
        None, ready=True, reason=Reason.Synced, message=message, generation=1, outcome=unchanged
    )
    clock.append(T1)
    await reporting.report_success(kube, TARGET, unchanged, body=body(current))  # type: ignore[arg-type]
    assert kube.events == [] and kube.patches == []


async def test_recovering_posts_a_synced_event(clock: list[str]) -> None:
    kube = FakeKube()
    failed = reporting.new_status(
        None, ready=False, reason=Reason.ConnectUnavailable, message="down", generation=1
    )
    await reporting.report_success(
        kube,
        TARGET,
        Outcome("unchanged", "vaults/v/items/i", 1),
        body=body(failed),  # type: ignore[arg-type]
    )
    assert [r for _, r, _ in kube.events] == ["Synced"]
    assert kube.patches[0]["conditions"][0]["status"] == "True"


async def test_a_failure_posts_one_warning_per_transition_and_raises_when_retryable(clock: list[str]) -> None:
    kube = FakeKube()
    failure = Failure(Reason.ConnectUnavailable, "cannot reach 1Password Connect", retryable=True)
    with pytest.raises(kopf.TemporaryError) as raised:
        await reporting.report_failure(kube, TARGET, failure, body=body(ready_status()), retry=2)  # type: ignore[arg-type]
    assert raised.value.delay == 20
    assert kube.events == [("Warning", "ConnectUnavailable", "cannot reach 1Password Connect")]
    (status,) = kube.patches
    assert (status["conditions"][0]["status"], status["conditions"][0]["reason"]) == (
        "False",
        "ConnectUnavailable",
    )

    # The same failure again: no new Event and no status write.
    again = FakeKube()
    with pytest.raises(kopf.TemporaryError):
        await reporting.report_failure(again, TARGET, failure, body=body(status), retry=3)  # type: ignore[arg-type]
    assert again.events == [] and again.patches == []


async def test_a_permanent_failure_does_not_raise(clock: list[str]) -> None:
    kube = FakeKube()
    failure = Failure(Reason.ItemNotFound, "no item", retryable=False)
    await reporting.report_failure(kube, TARGET, failure, body=body(), retry=0)  # type: ignore[arg-type]
    assert [r for _, r, _ in kube.events] == ["ItemNotFound"]
    assert kube.patches[0]["conditions"][0]["reason"] == "ItemNotFound"


async def test_a_deployment_gets_events_but_no_status(clock: list[str]) -> None:
    kube = FakeKube()
    target = Target(Owner("apps/v1", "Deployment", "app", "uid-app"), "ns", "app-secret", "vaults/v/items/i")
    await reporting.report_success(kube, target, OUTCOME, body=None)  # type: ignore[arg-type]
    failure = Failure(Reason.ItemNotFound, "no item", retryable=False)
    await reporting.report_failure(kube, target, failure, body=None, retry=0)  # type: ignore[arg-type]
    assert [r for _, r, _ in kube.events] == ["SecretSynced", "ItemNotFound"]
    assert kube.patches == []


# -- the official operator's CRD, which prunes all but type, status, message, lastTransitionTime --


def pruned(status: Mapping[str, Any]) -> dict[str, Any]:
    """What the API server keeps of ``status`` under the official CRD's schema."""
    keep = ("type", "status", "message", "lastTransitionTime")
    return {"conditions": [{k: c[k] for k in keep if k in c} for c in status["conditions"]]}


async def test_under_the_official_crd_a_steady_item_is_not_rewritten(clock: list[str]) -> None:
    kube = FakeKube()
    unchanged = Outcome("unchanged", OUTCOME.resolved_path, OUTCOME.item_version)
    await reporting.report_success(kube, TARGET, unchanged, body=body(None))  # type: ignore[arg-type]
    (stored,) = kube.patches
    clock.append(T1)
    again = FakeKube()
    await reporting.report_success(again, TARGET, unchanged, body=body(pruned(stored)))  # type: ignore[arg-type]
    assert again.patches == [] and again.events == []


async def test_under_the_official_crd_a_repeated_failure_posts_one_warning(clock: list[str]) -> None:
    kube = FakeKube()
    failure = Failure(Reason.ItemNotFound, "no item", retryable=False)
    await reporting.report_failure(kube, TARGET, failure, body=body(pruned(ready_status())), retry=0)  # type: ignore[arg-type]
    (stored,) = kube.patches
    again = FakeKube()
    await reporting.report_failure(again, TARGET, failure, body=body(pruned(stored)), retry=1)  # type: ignore[arg-type]
    assert again.events == [] and again.patches == []
    other = FakeKube()
    await reporting.report_failure(
        other,
        TARGET,
        Failure(Reason.VaultNotFound, "no vault", retryable=False),
        body=body(pruned(stored)),
        retry=0,
    )  # type: ignore[arg-type]
    assert [r for _, r, _ in other.events] == ["VaultNotFound"] and len(other.patches) == 1


# -- ContentValid --------------------------------------------------------------------------------

PROBLEM = "tls.crt: not PEM certificates; store one or more BEGIN CERTIFICATE blocks"
WRITTEN_ANYWAY = Outcome("created", "vaults/vid/items/iid", 3, content_checked=True, content_problem=PROBLEM)


def conditions(status: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


async def test_content_written_anyway_is_ready_with_content_valid_false_and_one_warning(
    clock: list[str],
) -> None:
    kube = FakeKube()
    await reporting.report_success(kube, TARGET, WRITTEN_ANYWAY, body=body())  # type: ignore[arg-type]
    (status,) = kube.patches
    assert conditions(status) == {"Ready": ("True", "Synced"), "ContentValid": ("False", "InvalidSecretData")}
    assert ("Warning", "InvalidSecretData", PROBLEM) in kube.events

    # The same finding at the next sync: no second Warning, no status write.
    again = FakeKube()
    steady = Outcome("unchanged", "vaults/vid/items/iid", 3, content_checked=True, content_problem=PROBLEM)
    clock.append(T1)
    message = reporting.success_message(TARGET, steady)
    current = reporting.new_status(
        status, ready=True, reason=Reason.Synced, message=message, generation=1, outcome=steady
    )
    await reporting.report_success(again, TARGET, steady, body=body(current))  # type: ignore[arg-type]
    assert again.events == [] and again.patches == []


async def test_fixed_content_turns_content_valid_true_and_opaque_drops_it(clock: list[str]) -> None:
    kube = FakeKube()
    bad = reporting.new_status(
        None, ready=True, reason=Reason.Synced, message="ok", generation=1, outcome=WRITTEN_ANYWAY
    )
    fixed = Outcome("updated", "vaults/vid/items/iid", 4, ("data",), content_checked=True)
    await reporting.report_success(kube, TARGET, fixed, body=body(bad))  # type: ignore[arg-type]
    assert conditions(kube.patches[0])["ContentValid"] == ("True", "Valid")
    assert not [e for e in kube.events if e[0] == "Warning"]

    opaque = Outcome("updated", "vaults/vid/items/iid", 5, ("data",))
    later = FakeKube()
    await reporting.report_success(later, TARGET, opaque, body=body(kube.patches[0]))  # type: ignore[arg-type]
    assert set(conditions(later.patches[0])) == {"Ready"}


async def test_a_failure_keeps_the_content_condition(clock: list[str]) -> None:
    kube = FakeKube()
    bad = reporting.new_status(
        None, ready=True, reason=Reason.Synced, message="ok", generation=1, outcome=WRITTEN_ANYWAY
    )
    failure = Failure(Reason.ItemNotFound, "no item", retryable=False)
    await reporting.report_failure(kube, TARGET, failure, body=body(bad), retry=0)  # type: ignore[arg-type]
    assert conditions(kube.patches[0]) == {
        "Ready": ("False", "ItemNotFound"),
        "ContentValid": ("False", "InvalidSecretData"),
    }


# -- a 403 that passes, and one that lasts -------------------------------------------------------


@pytest.mark.parametrize("official_crd", [False, True])
async def test_a_first_403_says_retrying_and_only_a_lasting_one_gives_the_grant_advice(
    clock: list[str], official_crd: bool
) -> None:
    from opsync.core.errors import Forbidden
    from opsync.sync.reconcile import describe_failure

    failure = describe_failure(Forbidden("403 Forbidden"), TARGET)
    assert "retrying" in failure.message and "grant" not in failure.message

    first = FakeKube()
    with pytest.raises(kopf.TemporaryError):
        await reporting.report_failure(first, TARGET, failure, body=body(ready_status()), retry=0)  # type: ignore[arg-type]
    status = dict(first.patches[0])
    if official_crd:  # its CRD prunes the reason
        status["conditions"] = [{k: v for k, v in c.items() if k != "reason"} for c in status["conditions"]]
    assert "retrying" in status["conditions"][0]["message"]
    assert [(t, r) for t, r, _ in first.events] == [("Warning", "Forbidden")]

    lasting = FakeKube()
    with pytest.raises(kopf.TemporaryError):
        await reporting.report_failure(lasting, TARGET, failure, body=body(status), retry=1)  # type: ignore[arg-type]
    (again,) = lasting.patches
    assert "grant it" in again["conditions"][0]["message"]
    stored = dict(again)
    if official_crd:
        stored["conditions"] = [{k: v for k, v in c.items() if k != "reason"} for c in again["conditions"]]

    # Still lasting: no flapping back to "retrying", no status write.
    still = FakeKube()
    with pytest.raises(kopf.TemporaryError):
        await reporting.report_failure(still, TARGET, failure, body=body(stored), retry=2)  # type: ignore[arg-type]
    assert still.patches == []


# -- Fresh ---------------------------------------------------------------------------------------


def test_fresh_false_joins_ready_during_an_outage_and_leaves_after_it(clock: list[str]) -> None:
    from opsync.sync.poller import Outage

    current = ready_status()
    outage = Outage(reason=Reason.ConnectUnavailable, message="down", since=T1, last_ok=T0)
    patch = reporting.fresh_status(current, outage)
    assert patch is not None
    assert conditions(patch) == {"Ready": ("True", "Synced"), "Fresh": ("False", "ConnectUnavailable")}
    (fresh,) = [c for c in patch["conditions"] if c["type"] == "Fresh"]
    assert fresh["lastTransitionTime"] == T1 and T0 in fresh["message"]

    during = {**current, **patch}
    assert reporting.fresh_status(during, outage) is None  # told once
    after = reporting.fresh_status(during, None)
    assert after is not None and conditions(after) == {"Ready": ("True", "Synced")}
    assert reporting.fresh_status(current, None) is None  # a steady item: no write
