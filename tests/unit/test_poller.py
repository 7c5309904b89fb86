"""The Poller's bookkeeping, end to end through its ports: the local Connect server in process
(requests counted by the server itself) and the in-memory SecretStore.

An idle poll is one request; a poll reads only the items whose version moved, once however many
targets use them; ``track``/``forget`` decide what is polled; failed targets retry when they
should. (What one poll's listings decide for targets of several items is in
test_poller_changes.py.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from opsync.core.errors import KubeError
from opsync.core.itempath import Fetched
from opsync.sync.poller import Poller, Result
from opsync.sync.reconcile import Failure, Outcome, Reconciler, Target, describe_failure, item_target
from tests.unit.fakes import FakeKube, LocalConnect

NS = "apps"
ENDPOINTS = {
    "vaults": "GET /v1/vaults",
    "list": "GET /v1/vaults/{vaultUuid}/items",
    "item": "GET /v1/vaults/{vaultUuid}/items/{itemUuid}",
}


def secret_item(title: str, value: str) -> dict[str, Any]:
    return {
        "title": title,
        "category": "PASSWORD",
        "fields": [{"id": "password", "type": "CONCEALED", "label": "password", "value": value}],
    }


def data() -> dict[str, Any]:
    return {
        "vaults": [
            {"name": "Kubernetes", "items": [secret_item("db", "db-1"), secret_item("api", "api-1")]},
            {"name": "Platform", "items": [secret_item("token", "token-1"), secret_item("other", "x")]},
            {"name": "Spare", "items": [secret_item("unused", "u")]},
        ]
    }


class Harness:
    """A poller as the operator wires it: the sync callable reports failures as Failure."""

    def __init__(self, connect: LocalConnect, kube: FakeKube) -> None:
        self.connect = connect
        self.kube = kube
        self.reconciler = Reconciler(connect=connect.client, kube=kube)
        self.after: list[list[str]] = []
        self.poller = Poller(
            self.reconciler, self.sync, interval=60, full_resync_every=1000, after_poll=self.after_poll
        )
        self._mark = self.counts()
        self._writes = 0

    async def sync(
        self, target: Target, body: Mapping[str, Any] | None, fetched: Sequence[Fetched] | None
    ) -> Result:
        try:
            return await self.reconciler.sync(target, fetched=fetched)
        except Exception as exc:
            return describe_failure(exc, target)

    async def after_poll(self, changed: Sequence[tuple[Target, Outcome]]) -> None:
        self.after.append([target.secret_name for target, _ in changed])

    def counts(self) -> dict[str, int]:
        return {name: self.connect.requests(endpoint) for name, endpoint in ENDPOINTS.items()} | {
            "all": self.connect.requests()
        }

    def mark(self) -> None:
        """Start counting requests and writes afresh."""
        self._mark = self.counts()
        self._writes = len(self.kube.writes)

    def requests(self) -> dict[str, int]:
        """Requests since the mark, by kind; kinds with none left out."""
        now = self.counts()
        return {name: now[name] - self._mark[name] for name in now if now[name] != self._mark[name]}

    def writes(self) -> list[tuple[str, str]]:
        return [(w.verb, w.name) for w in self.kube.writes[self._writes :]]

    def data(self, name: str) -> bytes:
        secret = self.kube.secret(NS, name)
        assert secret is not None, f"no Secret {name}"
        value: bytes = secret["data"]["password"]
        return value

    async def change(self, vault: str, item: str, value: str) -> None:
        await self.connect.server.store.update_item(vault, item, fields={"password": value})


def target(name: str, path: str, *, uid: str | None = None) -> Target:
    return item_target(
        {"metadata": {"name": name, "namespace": NS, "uid": uid or f"uid-{name}"}, "spec": {"itemPath": path}}
    )


DB = target("db", "vaults/Kubernetes/items/db")
API = target("api", "vaults/Kubernetes/items/api")
TOKEN = target("token", "vaults/Platform/items/token")


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with LocalConnect(data(), tmp_path) as connect:
        yield Harness(connect, FakeKube())


async def started(harness: Harness, *targets: Target) -> Harness:
    """The targets tracked and synced by a first poll; counting starts afresh."""
    for tracked in targets:
        harness.poller.track(tracked)
    report = await harness.poller.poll_once()
    assert all(isinstance(result, Outcome) for _, result in report.synced)
    harness.mark()
    return harness


async def test_the_first_poll_syncs_a_new_target(harness: Harness) -> None:
    harness.poller.track(DB)

    report = await harness.poller.poll_once()

    ((synced, outcome),) = report.synced
    assert synced == DB and isinstance(outcome, Outcome) and outcome.action == "created"
    assert harness.writes() == [("create", "db")]
    entry = harness.poller.tracked(DB.owner.uid)
    assert entry is not None and entry.state == "ok" and entry.versions == (1,)


async def test_an_idle_poll_is_one_request_and_no_write(harness: Harness) -> None:
    await started(harness, DB, API, TOKEN)

    for _ in range(3):
        report = await harness.poller.poll_once()
        assert (report.vaults_changed, report.vaults_listed, report.fetched, report.synced) == (0, 0, 0, [])

    assert harness.requests() == {"vaults": 3, "all": 3}
    assert harness.writes() == []


async def test_a_poll_reads_only_the_item_that_changed(harness: Harness) -> None:
    await started(harness, DB, API, TOKEN)
    await harness.change("Kubernetes", "db", "db-2")

    report = await harness.poller.poll_once()

    assert harness.requests() == {"vaults": 1, "list": 1, "item": 1, "all": 3}
    assert (report.vaults_changed, report.vaults_listed, report.checked, report.fetched) == (1, 1, 2, 1)
    assert harness.writes() == [("replace", "db")]
    assert harness.data("db") == b"db-2" and harness.data("api") == b"api-1"
    assert harness.after == [["db"]]
    entry = harness.poller.tracked(DB.owner.uid)
    assert entry is not None and entry.versions == (2,)


async def test_an_item_is_read_once_however_many_targets_use_it(harness: Harness) -> None:
    twin = target("db-copy", "vaults/Kubernetes/items/db")
    await started(harness, DB, twin)
    await harness.change("Kubernetes", "db", "db-2")

    await harness.poller.poll_once()

    assert harness.requests()["item"] == 1
    assert sorted(harness.writes()) == [("replace", "db"), ("replace", "db-copy")]
    assert harness.data("db-copy") == b"db-2"


async def test_a_change_no_target_uses_reads_no_item(harness: Harness) -> None:
    await started(harness, DB, TOKEN)
    await harness.change("Spare", "unused", "u-2")  # a vault nobody uses: not even listed
    await harness.poller.poll_once()
    assert harness.requests() == {"vaults": 1, "all": 1}

    harness.mark()
    await harness.change("Platform", "other", "x-2")  # a vault in use: listed, nothing read
    report = await harness.poller.poll_once()
    assert harness.requests() == {"vaults": 1, "list": 1, "all": 2}
    assert (report.checked, report.fetched, harness.writes()) == (1, 0, [])


async def test_a_forgotten_target_is_not_polled(harness: Harness) -> None:
    await started(harness, DB, TOKEN)
    harness.poller.forget(DB.owner.uid)
    await harness.change("Kubernetes", "db", "db-2")

    report = await harness.poller.poll_once()

    assert len(harness.poller) == 1 and harness.poller.tracked(DB.owner.uid) is None
    assert harness.requests() == {"vaults": 1, "all": 1}
    assert (report.synced, harness.writes()) == ([], [])
    assert harness.data("db") == b"db-1"


async def test_tracking_a_new_item_path_starts_afresh(harness: Harness) -> None:
    await started(harness, DB)
    harness.poller.track(target("db", "vaults/Kubernetes/items/db"))  # the same paths: nothing to do
    await harness.poller.poll_once()
    assert harness.requests() == {"vaults": 1, "all": 1}

    harness.poller.track(target("db", "vaults/Kubernetes/items/api"))  # same owner, another item
    report = await harness.poller.poll_once()

    assert [result.action for _, result in report.synced if isinstance(result, Outcome)] == ["updated"]
    assert harness.data("db") == b"api-1"
    entry = harness.poller.tracked(DB.owner.uid)
    assert entry is not None and entry.state == "ok"


async def test_a_target_that_failed_for_good_waits_for_a_change_in_connect(harness: Harness) -> None:
    missing = target("missing", "vaults/Kubernetes/items/later")
    await started(harness, DB)
    harness.poller.track(missing)
    report = await harness.poller.poll_once()
    ((_, failure),) = report.synced
    assert isinstance(failure, Failure) and failure.reason == "ItemNotFound"
    entry = harness.poller.tracked(missing.owner.uid)
    assert entry is not None and entry.state == "permanent"

    harness.mark()
    await harness.poller.poll_once()  # nothing changed in Connect: not tried again
    assert harness.requests() == {"vaults": 1, "all": 1}

    await harness.connect.server.store.create_item("Kubernetes", secret_item("later", "late"))
    await harness.poller.poll_once()
    assert harness.writes() == [("create", "missing")]
    assert harness.data("missing") == b"late"


async def test_a_transient_failure_is_retried_at_the_next_poll(harness: Harness) -> None:
    def refuse_once(*_: str) -> None:
        harness.kube.before_write = None
        raise KubeError("creating Secret failed: 503 Service Unavailable", status=503, retryable=True)

    harness.kube.before_write = refuse_once
    harness.poller.track(DB)
    report = await harness.poller.poll_once()
    ((_, failure),) = report.synced
    assert isinstance(failure, Failure) and failure.retryable
    assert harness.kube.secret(NS, "db") is None

    await harness.poller.poll_once()  # Connect did not change, yet it is tried again

    assert harness.data("db") == b"db-1"
    entry = harness.poller.tracked(DB.owner.uid)
    assert entry is not None and entry.state == "ok"


async def test_a_renamed_item_is_resolved_afresh_and_its_secret_kept(harness: Harness) -> None:
    await started(harness, DB)
    await harness.connect.server.store.update_item("Kubernetes", "db", title="db-renamed")

    report = await harness.poller.poll_once()

    ((_, failure),) = report.synced
    assert isinstance(failure, Failure) and failure.reason == "ItemNotFound"
    # the poll (vaults, one listing), then resolution by title: the vault from the poll's listing,
    # the item missing from it, so listed again before it counts as gone
    assert harness.requests() == {"vaults": 1, "list": 2, "all": 3}
    assert harness.writes() == []
    assert harness.data("db") == b"db-1"


async def test_a_full_resync_lists_every_vault_in_use_and_writes_nothing_unchanged(harness: Harness) -> None:
    await started(harness, DB, API, TOKEN)

    report = await harness.poller.poll_once(full=True)

    assert report.full and report.vaults_listed == 2  # Kubernetes and Platform, not Spare
    assert harness.requests() == {"vaults": 1, "list": 2, "all": 3}
    assert harness.writes() == []


async def test_an_outage_is_told_once_when_it_begins_and_once_when_it_ends(harness: Harness) -> None:
    from opsync.core.errors import ConnectUnavailable
    from opsync.sync.poller import Outage

    told: list[Outage | None] = []

    async def on_outage(outage: Outage | None) -> None:
        told.append(outage)

    poller = Poller(harness.reconciler, harness.sync, interval=60, on_outage=on_outage)
    poller.track(DB)
    await poller.poll_once()
    assert told == [] and poller.outage is None

    client = harness.connect.client
    working = client.list_vaults

    async def down() -> Any:
        raise ConnectUnavailable("Connect could not be reached")

    client.list_vaults = down  # type: ignore[method-assign]
    for _ in range(3):
        with pytest.raises(ConnectUnavailable):
            await poller.poll_once()
    (outage,) = told
    assert outage is not None and outage.reason == "ConnectUnavailable"
    assert outage.last_ok is not None and outage.since >= outage.last_ok
    assert "last successful check" in outage.describe()

    client.list_vaults = working  # type: ignore[method-assign]
    await poller.poll_once()
    assert told == [outage, None] and poller.outage is None
