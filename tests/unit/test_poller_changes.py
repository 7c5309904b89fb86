"""What one poll's listings decide for targets of several items (the poller's pure bookkeeping):
which items to read, which to take from the last sync, which targets to resolve afresh."""

from __future__ import annotations

from opsync.connect.models import FullItem, Item, Vault
from opsync.core.desired import Owner
from opsync.core.itempath import Fetched, ItemPath
from opsync.sync.poller import Changes, PollReport, Tracked
from opsync.sync.reconcile import Target

V1 = "vaultaaaaaaaaaaaaaaaaaaaa1"
V2 = "vaultaaaaaaaaaaaaaaaaaaaa2"
A = ItemPath(V1, "itemaaaaaaaaaaaaaaaaaaaaaa")
B = ItemPath(V2, "itembbbbbbbbbbbbbbbbbbbbbb")
VAULTS = [Vault.model_validate({"id": V1, "name": "one"}), Vault.model_validate({"id": V2, "name": "two"})]


def listing(path: ItemPath, version: int, title: str = "t") -> list[Item]:
    return [
        Item.model_validate(
            {"id": path.item, "title": title, "vault": {"id": path.vault}, "version": version}
        )
    ]


def fetched(path: ItemPath, version: int) -> Fetched:
    return Fetched(path, FullItem.model_validate({"id": path.item, "title": "t", "version": version}), {})


def entry(*, cached: bool = True) -> Tracked:
    target = Target(Owner("v1", "X", "x", "uid"), "ns", "x", f"vaults/{V1}/items/{A.item}")
    return Tracked(
        target,
        paths=(A, B),  # by id: the listing re-check keeps them
        resolved=(A, B),
        versions=(1, 1),
        fetched=(fetched(A, 1), fetched(B, 1)) if cached else (),
        state="ok",
    )


def test_only_the_item_that_moved_is_read_and_the_other_comes_from_the_last_sync() -> None:
    changes, tracked = Changes(), entry()
    changes.check(V1, [tracked], VAULTS, listing(A, 1), PollReport())
    changes.check(V2, [tracked], VAULTS, listing(B, 2), PollReport())
    assert changes.to_read() == [B]
    new_b = fetched(B, 2)
    ((got_entry, parts),) = changes.compose({B: new_b})
    assert got_entry is tracked
    assert parts == [tracked.fetched[0], new_b]


def test_without_the_items_as_last_read_every_item_is_read() -> None:
    changes = Changes()
    changes.check(V2, [entry(cached=False)], VAULTS, listing(B, 2), PollReport())
    assert changes.to_read() == [A, B]


def test_a_failed_read_sends_the_target_to_full_resolution() -> None:
    changes = Changes()
    changes.check(V2, [entry()], VAULTS, listing(B, 2), PollReport())
    ((_, parts),) = changes.compose({B: None})
    assert parts is None


def test_an_item_gone_from_its_listing_makes_the_target_stale_even_if_another_changed() -> None:
    changes, tracked = Changes(), entry()
    changes.check(V1, [tracked], VAULTS, listing(A, 2), PollReport())
    changes.check(V2, [tracked], VAULTS, [], PollReport())  # B deleted
    assert changes.stale == [tracked]
    assert changes.to_read() == [] and changes.compose({}) == []


def test_unchanged_items_read_nothing() -> None:
    changes, report = Changes(), PollReport()
    changes.check(V1, [entry()], VAULTS, listing(A, 1), report)
    assert changes.to_read() == [] and not changes.stale and report.checked == 1
