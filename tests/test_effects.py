"""The measured effect of a fix: against the overall volume, with an interval."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.review.effects import measure_effect


def test_growth_of_all_tickets_is_not_an_effect() -> None:
    e = measure_effect(before=100, total_before=1000, after=150, total_after=1500)  # everything grew by half
    assert (e.expected_after, e.change, e.ratio, e.verdict) == (150.0, 0.0, 1.0, "no clear change")
    assert e.ratio_low < 1 < e.ratio_high and e.change_low < 0 < e.change_high


def test_an_area_halved_is_fewer_with_an_interval_that_covers_the_truth() -> None:
    rng = np.random.default_rng(3)
    covered = 0
    for _ in range(400):  # the area's share halves from 20 % to 10 %; a 95 % interval covers 0.5 about 95 % of the time
        before, after = int(rng.binomial(1000, 0.2)), int(rng.binomial(1000, 0.1))
        e = measure_effect(before, 1000, after, 1000)
        covered += e.ratio_low <= 0.5 <= e.ratio_high
        assert e.verdict == "fewer"
    assert 0.92 <= covered / 400 <= 0.98


def test_no_tickets_after_is_still_finite_and_bad_counts_say_why() -> None:
    e = measure_effect(30, 600, 0, 500)
    assert e.after == 0 and e.ratio_high < 1 and e.verdict == "fewer"
    with pytest.raises(ValueError, match="no tickets at all"):
        measure_effect(0, 0, 1, 10)
    with pytest.raises(ValueError, match="between 0 and the total"):
        measure_effect(20, 10, 1, 10)
