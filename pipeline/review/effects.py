"""Did the fix work? The change in an area's tickets after a product event, with an interval.

Before and after are whole weeks on each side of the event (``days``, a multiple of
seven, so every hour of the week is in both: hour-of-day and weekday seasonality
cancel out). The overall ticket volume is the yardstick: if all tickets rose by 10 %
after the release (more users), the area's tickets are expected to rise by 10 % too.
The effect is the ratio of the area's share of all tickets after to its share before
(1.0: no change, 0.6: 40 % fewer than expected), with a 95 % interval for a ratio of
two binomial proportions (Katz's log method), and in tickets: observed after minus
expected after.

The same holds for customers, counted as customer-hours (each hour's distinct
customers, summed: a customer who writes in three different hours counts three times).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Effect", "measure_effect"]

_Z95 = 1.959963984540054


@dataclass(frozen=True)
class Effect:
    """The measured effect on one count (tickets, or customer-hours)."""

    before: int
    after: int
    total_before: int
    total_after: int
    expected_after: float
    change: float
    change_low: float
    change_high: float
    ratio: float
    ratio_low: float
    ratio_high: float

    @property
    def verdict(self) -> str:
        """``fewer`` or ``more`` when the interval excludes no change, else ``no clear change``."""
        if self.ratio_high < 1.0:
            return "fewer"
        if self.ratio_low > 1.0:
            return "more"
        return "no clear change"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def measure_effect(before: int, total_before: int, after: int, total_after: int) -> Effect:
    """The effect of an event on a count, against the overall volume.

    Parameters
    ----------
    before, after
        The area's count in the weeks before and after the event.
    total_before, total_after
        All areas' counts over the same weeks (the area included).

    Examples
    --------
    >>> e = measure_effect(before=200, total_before=1000, after=100, total_after=1100)
    >>> round(e.expected_after), round(e.change), round(e.ratio, 2), e.verdict
    (220, -120, 0.46, 'fewer')
    >>> measure_effect(50, 1000, 52, 1000).verdict
    'no clear change'
    """
    if total_before <= 0 or total_after <= 0:
        raise ValueError("no tickets at all before or after the event: nothing to compare with")
    if not (0 <= before <= total_before and 0 <= after <= total_after):
        raise ValueError("an area's count must be between 0 and the total")
    # a half added to empty cells keeps the interval finite (Haldane's correction)
    a1, a2 = (before or 0.5), (after or 0.5)
    share_before, share_after = a1 / total_before, a2 / total_after
    ratio = share_after / share_before
    se = math.sqrt(max(0.0, 1 / a1 - 1 / total_before + 1 / a2 - 1 / total_after))
    low, high = ratio * math.exp(-_Z95 * se), ratio * math.exp(_Z95 * se)
    expected = before / total_before * total_after
    return Effect(
        before=before,
        after=after,
        total_before=total_before,
        total_after=total_after,
        expected_after=round(expected, 1),
        change=round(after - expected, 1),
        # the interval of the ratio, as tickets: (ratio - 1) times what was expected
        change_low=round((low - 1) * expected, 1),
        change_high=round((high - 1) * expected, 1),
        ratio=round(ratio, 3),
        ratio_low=round(low, 3),
        ratio_high=round(high, 3),
    )
