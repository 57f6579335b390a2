from __future__ import annotations

from pipeline.counting.volume import (
    ALL,
    COUNTED,
    DUPLICATE,
    TOO_LATE,
    Fact,
    IdleSources,
    PartitionVolume,
    VolumeTotals,
    volume_keys,
    window_start,
)


def test_window_start_is_aligned_and_half_open() -> None:
    assert window_start(0, 3600) == 0
    assert window_start(3599.999, 3600) == 0
    assert window_start(3600, 3600) == 3600
    assert window_start(1767600000 + 899, 900) == 1767600000


def test_partition_volume_counts_tickets_and_distinct_customers_per_key() -> None:
    v = PartitionVolume(3600, 7200)
    for fact in (
        Fact("a", 0, "billing", "bug", "high", "c1"),
        Fact("b", 0, "billing", "bug", "high", "c1"),
        Fact("c", 0, "billing", "ux_confusion", "low", "c2"),
        Fact("d", 3600, "login", "bug", "high", "c3"),
    ):
        assert v.add(fact) == COUNTED
    assert v.add(Fact("b", 0, "billing", "bug", "high", "c1")) == DUPLICATE
    assert v.counts(0) == {
        ("billing", ALL, ALL): (3, 2),
        ("billing", "bug", ALL): (2, 1),
        ("billing", "bug", "high"): (2, 1),
        ("billing", "ux_confusion", ALL): (1, 1),
        ("billing", "ux_confusion", "low"): (1, 1),
    }
    assert v.counts(3600) == {
        ("login", ALL, ALL): (1, 1),
        ("login", "bug", ALL): (1, 1),
        ("login", "bug", "high"): (1, 1),
    }
    assert v.windows() == [0, 3600]


def test_late_ticket_updates_its_own_window_until_lateness_runs_out() -> None:
    v = PartitionVolume(3600, 7200)
    v.add(Fact("a", 10 * 3600, "x", "bug", "low", "c"))
    assert v.add(Fact("late", 8 * 3600, "x", "bug", "low", "c")) == COUNTED  # exactly at the line
    assert v.counts(8 * 3600)[("x", ALL, ALL)] == (1, 1)
    assert v.add(Fact("too-late", 7 * 3600, "x", "bug", "low", "c")) == TOO_LATE
    assert v.counts(7 * 3600) == {}
    assert v.close_windows() == []
    v.add(Fact("b", 11 * 3600, "x", "bug", "low", "c"))
    assert v.close_windows() == [8 * 3600]
    # once its window is closed, a ticket id is forgotten: a re-send is too late, not a duplicate
    assert v.add(Fact("late", 8 * 3600, "x", "bug", "low", "c")) == TOO_LATE


def test_chunks_expire_when_all_their_windows_are_closed() -> None:
    v = PartitionVolume(3600, 3600)
    old = [Fact("a", 0, "x", "bug", "low", "c")]
    mixed = [Fact("b", 0, "x", "bug", "low", "c"), Fact("c", 2 * 3600, "x", "bug", "low", "c")]
    for key, facts in (("0/1", old), ("0/2", mixed)):
        for fact in facts:
            v.add(fact)
        v.record_chunk(key, facts)
    v.add(Fact("d", 3 * 3600, "x", "bug", "low", "c"))
    assert v.close_windows() == [0]
    assert v.expired_chunks() == ["0/1"]


def test_restore_accepts_any_order_and_rebuilds_the_same_counts() -> None:
    chunks = {
        "0/7": [["a", 7200, "x", "bug", "low", "c1"]],
        "0/3": [["b", 0, "x", "bug", "low", "c2"], ["c", 3600, "y", "bug", "low", "c1"]],
    }
    live = PartitionVolume(3600, 7200)
    for key in ("0/3", "0/7"):
        for fact in chunks[key]:
            live.add(Fact(*fact))
    restored = PartitionVolume(3600, 7200)
    for key, facts in chunks.items():
        restored.restore(key, facts)
    assert {w: restored.counts(w) for w in restored.windows()} == {w: live.counts(w) for w in live.windows()}
    assert restored.watermark == live.watermark == 7200
    assert restored.add(Fact("b", 0, "x", "bug", "low", "c2")) == DUPLICATE


def test_volume_keys_roll_ups_and_full_key() -> None:
    assert volume_keys("a", "bug", "low") == (("a", ALL, ALL), ("a", "bug", ALL), ("a", "bug", "low"))


def test_totals_are_idempotent_under_replay_and_reordering() -> None:
    store: dict[str, dict[str, list[int]]] = {}
    totals = VolumeTotals(store)
    partials = [(0, 1, 1), (1, 4, 2), (0, 3, 2), (1, 5, 3)]
    for p in partials:
        totals.merge("k", *p)
    once = totals.total("k")
    for p in reversed(partials):  # replayed, out of order
        assert totals.merge("k", *p) is False
    assert totals.total("k") == once == (8, 5)
    assert store == {"k": {"0": [3, 2, 0], "1": [5, 3, 0]}}


def test_totals_keep_the_newest_ticket_time_and_read_partials_stored_before_it() -> None:
    store: dict[str, dict[str, list[int]]] = {"k": {"0": [3, 2]}}  # stored by an earlier version
    totals = VolumeTotals(store)
    assert totals.newest("k") == 0
    assert totals.merge("k", 0, 4, 2, newest=7260) and totals.merge("k", 1, 1, 1, newest=7300)
    assert totals.total("k") == (5, 3) and totals.newest("k") == 7300


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_quiet_partition_at_its_end_follows_the_newest_window_read_once_per_move() -> None:
    clock = _Clock()
    idle = IdleSources(30, clock=clock)
    idle.assign([0, 1, 2])
    idle.heard(0, 3600)
    idle.heard(1, 7200)
    clock.now += 29
    assert idle.quiet() == [] and idle.marks(caught_up=[0, 1, 2]) == {}
    idle.heard(1, 10800)  # partition 1 keeps bringing tickets
    clock.now += 1
    assert idle.quiet() == [0, 2]
    # partition 0 still has messages to read (not at its end): it is behind, not idle
    assert idle.marks(caught_up=[2]) == {"2": 10800}
    assert idle.marks(caught_up=[2]) == {}  # said once
    assert idle.marks(caught_up=[0, 2]) == {"0": 10800}
    idle.heard(1, 14400)
    assert idle.marks(caught_up=[0, 2]) == {"0": 14400, "2": 14400}  # the front moved


def test_a_partition_heard_again_or_newly_assigned_is_not_idle_and_zero_seconds_means_never() -> None:
    clock = _Clock()
    idle = IdleSources(30, clock=clock)
    idle.assign([0, 1])
    idle.heard(0, 3600)
    clock.now += 60
    idle.heard(1)  # a message (a bad one: no window) is a sign of life
    assert idle.quiet() == [0]
    idle.assign([0, 1, 2])  # partition 2 just came in a rebalance: its quiet time starts now
    assert idle.quiet() == [0]
    idle.assign([1, 2])  # partition 0 went to another worker: nothing is said for it
    clock.now += 30
    assert idle.quiet() == [1, 2]
    assert idle.marks(caught_up=[0, 1, 2]) == {}  # the front (partition 0's) left with it
    never = IdleSources(0, clock=clock)
    never.assign([0, 1])
    never.heard(0, 3600)
    clock.now += 10_000
    assert never.quiet() == [] and never.marks(caught_up=[1]) == {}
