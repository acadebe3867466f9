"""udf.supervision.replay_log: sequence numbers, (kind, frame) entries, the snapshot cut, rollback. No threads."""

from __future__ import annotations

import pytest

from udf.supervision.replay_log import BATCH, POINT, ReplayLog


def filled(n: int, every: int = 10, keep: bool = True, slack: int = 5) -> ReplayLog:
    log = ReplayLog(every, keep=keep, slack=slack)
    for i in range(n):
        assert log.append(BATCH if i % 3 == 2 else POINT, b"f%d" % i) == i
    return log


def test_entries_keep_each_items_kind_and_order() -> None:
    log = filled(6)
    assert log.accepted == 6 and len(log) == 6
    assert log.since_cut() == (
        0,
        [(POINT, b"f0"), (POINT, b"f1"), (BATCH, b"f2"), (POINT, b"f3"), (POINT, b"f4"), (BATCH, b"f5")],
    )


def test_a_cut_drops_what_the_snapshot_covers_and_replay_starts_after_it() -> None:
    log = filled(6)
    assert log.cut(4, b"state@4")
    assert (log.covered, log.snapshot, len(log)) == (4, b"state@4", 2)
    assert log.since_cut() == (4, [(POINT, b"f4"), (BATCH, b"f5")])
    assert not log.cut(3, b"older"), "an older snapshot than ours is ignored"
    assert (log.covered, log.snapshot) == (4, b"state@4")
    assert log.cut(6, b"state@6") and log.since_cut() == (6, [])


def test_a_snapshot_cannot_cover_items_not_accepted() -> None:
    log = filled(3)
    with pytest.raises(ValueError, match="cannot cover item 4"):
        log.cut(4, b"x")


def test_rollback_unaccepts_only_the_last_item() -> None:
    log = filled(3)
    with pytest.raises(ValueError, match="only the last item"):
        log.rollback(1)
    log.rollback(2)
    assert log.accepted == 2 and log.since_cut() == (0, [(POINT, b"f0"), (POINT, b"f1")])
    assert log.append(POINT, b"again") == 2, "the next item gets the rolled back seq"


def test_without_replay_it_keeps_numbers_only_and_counts_the_lost() -> None:
    log = filled(5, keep=False)
    assert log.accepted == 5 and len(log) == 0
    log.rollback(4)
    assert log.accepted == 4
    assert log.cut(2, b"s") and log.covered == 2
    assert log.forget() == 2, "items 2 and 3 were accepted after the snapshot"
    assert (log.covered, log.accepted) == (4, 4)


def test_count_snapshots_fall_due_every_snapshot_every_items() -> None:
    log = filled(9, every=10)
    assert not log.snapshot_due() and log.limit() == 10
    log.append(POINT, b"f9")
    assert log.snapshot_due()
    log.snapshot_asked()
    assert not log.snapshot_due() and log.limit() == 15, "due at 20, but the log is full at 0 + 10 + 5"
    assert log.cut(8, b"s")
    assert log.limit() == 20, "a cut at 8 makes room up to 23; the next snapshot is due at 20"


def test_the_log_is_full_at_snapshot_every_plus_the_slack() -> None:
    log = filled(14, every=10, slack=5)
    log.snapshot_asked()  # asked at 14 (due at 24), not answered yet
    assert log.has_room() and log.limit() == 15
    log.append(POINT, b"f14")
    assert not log.has_room()
    log.cut(5, b"s")
    assert log.has_room() and log.limit() == 20


def test_without_replay_only_the_count_snapshot_limits_puts() -> None:
    log = filled(100, every=10, keep=False)
    assert log.has_room() and log.limit() == 10
