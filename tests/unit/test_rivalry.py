"""The rival-writer tracker: three repairs in a window contest a Secret, with doubling backoff."""

from __future__ import annotations

from opsync.sync.rivalry import Rivalry


def test_repeated_repairs_hold_the_secret_back_with_doubling_backoff() -> None:
    now = [0.0]
    rivalry = Rivalry(repairs=3, window=60, first_backoff=30, max_backoff=100, clock=lambda: now[0])
    assert rivalry.repaired("s") is None and rivalry.repaired("s") is None
    assert rivalry.repaired("s") == 30 and rivalry.held_back("s")
    now[0] = 12
    assert rivalry.remaining("s") == 18  # when the repair held back is due
    now[0] = 31
    assert not rivalry.held_back("s") and rivalry.remaining("s") == 0
    rivalry.repaired("s")
    rivalry.repaired("s")
    assert rivalry.repaired("s") == 60
    now[0] = 95
    for _ in range(2):
        rivalry.repaired("s")
    assert rivalry.repaired("s") == 100  # capped


def test_occasional_repairs_are_no_fight_and_a_quiet_secret_is_forgiven() -> None:
    now = [0.0]
    rivalry = Rivalry(repairs=3, window=60, first_backoff=30, clock=lambda: now[0])
    for step in range(5):  # one repair a minute: a person editing now and then
        now[0] = step * 61.0
        assert rivalry.repaired("s") is None
    for _ in range(2):
        rivalry.repaired("t")
    assert rivalry.repaired("t") == 30
    now[0] += 30 + 61  # backoff over, then a quiet window
    for _ in range(2):
        rivalry.repaired("t")
    assert rivalry.repaired("t") == 30  # not doubled: forgiven
    assert not rivalry.held_back("other")


def test_the_last_other_writer_is_remembered_across_opsyncs_own_writes() -> None:
    from opsync.core.desired import last_writer

    rivalry = Rivalry()
    theirs = {"managedFields": [{"manager": "opsync", "time": "1"}, {"manager": "rival", "time": "2"}]}
    ours = {"managedFields": [{"manager": "opsync", "time": "3"}]}  # opsync took the fields back
    rivalry.note_writer("s", last_writer(theirs))
    rivalry.note_writer("s", last_writer(ours))
    assert rivalry.writer("s") == "rival"
