"""Owners → targets: what a OnePasswordItem or an annotated Deployment asks to be synced."""

from __future__ import annotations

from typing import Any

from opsync.core import desired
from opsync.sync.reconcile import deployment_target, item_target


def deployment(annotations: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "app", "namespace": "ns", "uid": "u1", "annotations": annotations}}


def test_an_annotated_deployment_names_its_secret_and_keeps_only_auto_restart_and_item_name() -> None:
    target = deployment_target(
        deployment(
            {
                desired.ITEM_PATH: "vaults/v/items/i",
                desired.ITEM_NAME: "App Creds!",
                desired.AUTO_RESTART: "true",
                "team": "a",
            }
        )
    )
    assert target is not None
    assert (target.namespace, target.secret_name, target.item_path) == ("ns", "app-creds", "vaults/v/items/i")
    assert target.owner == desired.Owner("apps/v1", "Deployment", "app", "u1")
    # item-name goes onto the Secret as given, as the official operator sets it.
    assert dict(target.annotations) == {desired.AUTO_RESTART: "true", desired.ITEM_NAME: "App Creds!"}


def test_a_deployment_without_item_name_has_no_target() -> None:
    assert deployment_target(deployment({desired.ITEM_PATH: "vaults/v/items/i"})) is None


def test_an_item_target_keeps_placement_when_the_spec_does_not_parse() -> None:
    body = {
        "metadata": {"name": "db", "namespace": "ns", "uid": "u2"},
        "spec": {
            "itemPath": "vaults/v/items/i",
            "secretName": "db-secret",
            "deletionPolicy": "Retain",
            "fields": 7,
        },
    }
    target = item_target(body)
    assert target.spec is None and target.spec_error
    assert (target.secret_name, target.retain) == ("db-secret", True)


def test_the_status_message_names_what_was_dropped_and_what_was_written_with_a_note() -> None:
    from opsync.core.mapping import Skipped
    from opsync.sync.reconcile import Outcome, Target, success_message

    target = Target(desired.Owner("onepassword.com/v1", "OnePasswordItem", "db", "u"), "ns", "db", "p")
    outcome = Outcome(
        "created",
        "vaults/v/items/i",
        2,
        skipped=(
            Skipped("field", "a b", "its key a-b is taken by a later field 'a-b'; the last wins"),
            Skipped("field", "k" * 40 + "…", "written under its key cut to 253 characters", kept=True),
        ),
    )
    message = success_message(target, outcome)
    assert "not synced: field 'a b' (its key a-b is taken" in message
    assert "synced with a note: field 'kkkk" in message
    assert message.index("not synced") < message.index("synced with a note")
