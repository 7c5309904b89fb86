"""Resolving an itemPath from listings (the poller's free re-check of title references)."""

from __future__ import annotations

from datetime import UTC, datetime

from opsync.connect.models import Item, Vault
from opsync.core.itempath import ItemPath, pick, pick_item_by_title, pick_vault

V1 = "vaultaaaaaaaaaaaaaaaaaaaa1"
V2 = "vaultaaaaaaaaaaaaaaaaaaaa2"
I1 = "itemaaaaaaaaaaaaaaaaaaaaa1"
I2 = "itemaaaaaaaaaaaaaaaaaaaaa2"
OLD = datetime(2025, 1, 1, tzinfo=UTC)
NEW = datetime(2026, 1, 1, tzinfo=UTC)


def vault(id_: str, name: str, created: datetime = OLD) -> Vault:
    return Vault.model_validate({"id": id_, "name": name, "createdAt": created.isoformat()})


def item(id_: str, title: str, created: datetime = OLD, vault_id: str = V1) -> Item:
    return Item.model_validate(
        {"id": id_, "title": title, "vault": {"id": vault_id}, "createdAt": created.isoformat()}
    )


VAULTS = [vault(V1, "Kubernetes"), vault(V2, "kubernetes", NEW)]


def test_a_vault_title_matches_in_any_case_and_the_oldest_wins() -> None:
    assert pick_vault("KUBERNETES", VAULTS) == V1
    assert pick_vault(V2, VAULTS) == V2  # an id-like string matching no title is an id
    assert pick_vault("missing", VAULTS) is None


def test_an_exact_title_beats_a_case_insensitive_one_then_the_oldest_wins() -> None:
    items = [item(I1, "DB", OLD), item(I2, "db", NEW)]
    assert pick_item_by_title("db", items) == I2
    assert pick_item_by_title("Db", items) == I1
    ties = [item(I2, "db", OLD), item(I1, "db", OLD)]
    assert pick_item_by_title("db", ties) == I1  # same createdAt: the smaller id, every time


def test_a_path_resolves_from_the_listings() -> None:
    items = [item(I1, "db"), item(I2, "cache")]
    assert pick(ItemPath("Kubernetes", "db"), VAULTS, items) == ItemPath(V1, I1)
    assert pick(ItemPath(V1, I2), VAULTS, items) == ItemPath(V1, I2)
    # an id that looks like an id but is not listed is tried as a title, and matches nothing
    assert pick(ItemPath(V1, "itemaaaaaaaaaaaaaaaaaaaaa9"), VAULTS, items) is None


def test_a_rename_a_deletion_or_an_older_duplicate_changes_the_answer() -> None:
    path = ItemPath("Kubernetes", "db")
    assert pick(path, VAULTS, [item(I1, "db-renamed")]) is None
    assert pick(path, VAULTS, []) is None
    assert pick(path, VAULTS, [item(I1, "db", NEW), item(I2, "db", OLD)]) == ItemPath(V1, I2)


def test_a_listing_of_another_vault_resolves_nothing() -> None:
    assert pick(ItemPath("Kubernetes", "db"), VAULTS, [item(I1, "db", vault_id=V2)]) is None
