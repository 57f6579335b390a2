"""A watch learns a long run of windows without a customer in one step, as stepping through them would."""

from __future__ import annotations

import copy
import math
import random
from datetime import UTC, datetime

import pytest

from detectors import SeasonalRate, VolumeWatch

H = 3600
DAY = 86400
START = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())  # a Monday


def _poisson(rnd: random.Random, mean: float) -> int:
    # Knuth's: small means only
    limit, k, p = math.exp(-mean), 0, rnd.random()
    while p > limit:
        k += 1
        p *= rnd.random()
    return k


def _busy_watch() -> VolumeWatch:
    """Four weeks of an area with a day and a night, quiet weekends and busier days, learned hour by hour."""
    watch = VolumeWatch("reports", H, SeasonalRate(min_windows=72), min_customers=5, keep_baselines=False)
    rnd = random.Random(3)
    busier = [rnd.choice([0.5, 1.0, 1.6]) for _ in range(28)]  # its spans vary more than Poisson's
    for h in range(24 * 28):
        weekend = (h // 24) % 7 >= 5
        mean = (6.0 if 8 <= h % 24 < 20 else 0.5) * (0.3 if weekend else 1.0) * busier[h // 24]
        customers = _poisson(rnd, mean)
        if customers:
            watch.update(START + h * H, customers + rnd.randrange(2), customers)
        watch.advance(START + (h + 1) * H)
    return watch


def _silent_watch() -> VolumeWatch:
    """A key that hears from a customer every two or three days, for three weeks."""
    watch = VolumeWatch("reports/odd", H, SeasonalRate(min_windows=72), min_customers=5, keep_baselines=False)
    for h in range(24 * 21):
        if h % 61 == 14:
            watch.update(START + h * H, 1, 1)
        watch.advance(START + (h + 1) * H)
    return watch


def _learned_quiet_runs(watch: VolumeWatch) -> list[int]:
    """Make ``watch`` record the windows of each run it learns in closed form."""
    runs: list[int] = []
    learn_quiet = watch.detector.learn_quiet

    def spy(start: int, windows: int, step: int) -> None:
        runs.append(windows)
        learn_quiet(start, windows, step)

    watch.detector.learn_quiet = spy  # type: ignore[method-assign]
    return runs


@pytest.mark.parametrize("make", [_busy_watch, _silent_watch], ids=["busy", "nearly-silent"])
@pytest.mark.parametrize("quiet_days", [3, 12, 40])
def test_a_quiet_run_learned_at_once_leaves_the_watch_as_stepping_does(make, quiet_days: int) -> None:
    watch = make()
    end = watch.learned_through + H
    stepped, at_once = watch, copy.deepcopy(watch)
    runs = _learned_quiet_runs(at_once)
    for h in range(quiet_days * 24):
        assert stepped.advance(end + (h + 1) * H) == []
    assert at_once.advance(end + quiet_days * 24 * H) == []
    if make is _silent_watch:  # all but (part of) its first quiet day and the last windows, learned one by one
        assert sum(runs) >= quiet_days * 24 - 24 - 25
    elif quiet_days == 40:  # once no span could be improbably low, however long the quiet lasts (the
        # level falls over the first days of silence, each day's bound lower: VolumeWatch._fall_on)
        assert sum(runs) >= 15 * 24

    week = [stepped.learned_through + H + h * H for h in range(24 * 7)]
    for t in week:  # the model of normal: the same rates
        assert at_once.detector.expected(t) == pytest.approx(stepped.detector.expected(t), rel=1e-9)
    assert at_once.detector.learned == stepped.detector.learned
    assert at_once.learned_through == stepped.learned_through
    assert (at_once.low_run, at_once.protected_run, at_once.last_busy) == (
        stepped.low_run,
        stepped.protected_run,
        stepped.last_busy,
    )
    # the last windows, with what each expected, as the spans of the next windows read them
    assert [(w, c) for w, c, _ in at_once.recent] == [(w, c) for w, c, _ in stepped.recent]
    for span in (1, 6, 24):
        assert at_once._before(end + quiet_days * 24 * H, span).expected == pytest.approx(
            stepped._before(end + quiet_days * 24 * H, span).expected, rel=1e-9
        )
    # the dispersions, approximately: each relaxes towards what its span expects, taken to
    # fall steadily from the run's first windows to its last (the weekdays' ups and downs
    # are not followed); here within 8 % (6 % while a silent busy key's level fell in one day)
    assert at_once.dispersion == pytest.approx(stepped.dispersion, rel=0.08)


@pytest.mark.parametrize("make", [_busy_watch, _silent_watch], ids=["busy", "nearly-silent"])
def test_after_a_quiet_run_the_same_surge_gives_the_same_events(make) -> None:
    watch = make()
    end = watch.learned_through + H
    stepped, at_once = watch, copy.deepcopy(watch)
    for h in range(20 * 24):
        stepped.advance(end + (h + 1) * H)
    at_once.advance(end + 20 * 24 * H)
    surge = end + 20 * 24 * H + 10 * H  # a weekday morning: a customer or two an hour for six hours
    outcomes = []
    for w in (stepped, at_once):
        events = w.advance(surge)
        for i, customers in enumerate([2, 1, 1, 2, 1, 1] + [0] * 30):
            if customers:
                events += w.update(surge + i * H, customers, customers, at=surge + i * H + 600)
            events += w.advance(surge + (i + 1) * H)
        outcomes.append(events)
    plain, fast = outcomes
    # a slow surge, seen at six hours, its score neither at the line nor saturated
    assert [e.scale for e in plain] == [6 * H] * len(plain)
    assert plain[0].event == "opened" and plain[-1].event == "resolved" and plain[1].event == "updated"
    assert 0.4 <= plain[0].score < plain[-2].score < 0.9
    assert [(e.event, e.episode_id, e.window_start, e.scale, e.customers, e.tickets, e.detected_at) for e in fast] == [
        (e.event, e.episode_id, e.window_start, e.scale, e.customers, e.tickets, e.detected_at) for e in plain
    ]
    for a, b in zip(fast, plain, strict=True):
        assert a.expected == pytest.approx(b.expected, rel=1e-6, abs=1e-3)
        assert a.score == pytest.approx(b.score, abs=2e-3)


def test_the_quiet_ceiling_bounds_every_rate_of_any_quiet_that_follows() -> None:
    rate = SeasonalRate(min_windows=24)
    rnd = random.Random(7)
    for h in range(24 * 21):
        rate.learn_one({"t": START + h * H, "y": _poisson(rnd, 3.0 if h % 24 in (9, 10) and h // 24 % 7 == 1 else 0.2)})
    ceiling = rate.quiet_ceiling()
    for h in range(24 * 21, 24 * 70):
        assert rate.expected(START + h * H) <= ceiling[h % 24]
        rate.learn_one({"t": START + h * H, "y": 0})
