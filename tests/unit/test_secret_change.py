"""Which sync outcomes are data changes that may restart workloads."""

from __future__ import annotations

from opsync.core import crd, workloads
from opsync.core.desired import Owner
from opsync.core.mapping import SecretData
from opsync.sync.reconcile import Outcome, Target
from opsync.sync.restarts import SecretChange

TARGET = Target(Owner(crd.API_VERSION, crd.KIND, "db", "uid-db"), "ns", "db", "vaults/v/items/i")
DATA = SecretData({"password": b"s3cret"})


def outcome(action: str, changed: tuple[str, ...]) -> Outcome:
    return Outcome(
        action,  # type: ignore[arg-type]
        "vaults/v/items/i",
        2,
        changed,
        secret_uid="uid-secret",
        data=DATA,
        secret_annotations={"operator.1password.io/auto-restart": "true"},
    )


def test_only_an_update_of_the_data_is_a_change() -> None:
    assert SecretChange.of(TARGET, outcome("created", ())) is None
    assert SecretChange.of(TARGET, outcome("unchanged", ())) is None
    assert SecretChange.of(TARGET, outcome("updated", ("labels",))) is None
    change = SecretChange.of(TARGET, outcome("updated", ("data", "annotations")))
    assert change is not None
    assert (change.namespace, change.secret_name) == ("ns", "db")
    assert change.fingerprint == workloads.data_fingerprint(DATA, salt="uid-secret")
    assert change.secret_annotations == {"operator.1password.io/auto-restart": "true"}
    assert change.owner is not None and (change.owner.kind, change.owner.name) == (crd.KIND, "db")
    assert "s3cret" not in repr(change)
