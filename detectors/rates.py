"""How many distinct customers a window of one key normally has: level x hour x weekday, shrunk."""

from __future__ import annotations

import math
from typing import Any

from .base import Detector
from .poisson import poisson_sf

__all__ = ["SeasonalRate"]


class SeasonalRate(Detector):
    """Customers per window as ``level x hour[h] x weekday[d]``, where the volume supports it.

    The hour-of-day and weekday factors are the rates seen in each slot, each shrunk
    towards 1 by ``prior_customers`` pseudo-customers at the overall rate: an area with
    thousands of customers a month gets its own daily and weekly shape; an area with a
    few a day gets factors near 1 (a flat day, or only a weekly shape once weekdays hold
    enough customers), since two customers at 3 a.m. say nothing about 3 a.m.

    The level is an exponential moving average of the deseasonalised counts over about
    ``level_windows`` windows (the first ones averaged evenly). What the watch teaches it
    is its business (:class:`detectors.VolumeWatch` caps spikes and skips episodes).

    ``score_one`` is a plain Poisson tail against the expected count; the watch scores
    several time scales itself (:class:`detectors.VolumeWatch`).

    Parameters
    ----------
    min_windows
        Windows to learn before :attr:`ready` (a new key warms up without alerting).
    level_windows
        Windows the level averages over (168: a week of hours).
    hour_visits, weekday_visits
        Visits of a slot its factor averages over (28 days; 8 weeks of hourly windows).
    prior_customers
        Pseudo-customers that pull each slot's factor towards 1.

    Examples
    --------
    >>> rate = SeasonalRate(min_windows=24)
    >>> for h in range(24 * 28):  # four weeks: 10 an hour by day (8-20 h), 1 by night
    ...     rate.learn_one({"t": h * 3600, "y": 10 if 8 <= h % 24 < 20 else 1})
    >>> round(rate.expected(28 * 86400 + 12 * 3600), 1), round(rate.expected(28 * 86400 + 3 * 3600), 1)
    (10.0, 1.2)
    >>> quiet = SeasonalRate()  # one customer at 3 a.m., 11 a.m. and 7 p.m. each day, none else
    >>> for h in range(24 * 28):
    ...     quiet.learn_one({"t": h * 3600, "y": 1 if h % 8 == 3 else 0})
    >>> round(quiet.expected(28 * 86400 + 3 * 3600), 2), round(quiet.expected(28 * 86400 + 4 * 3600), 2)
    (0.39, 0.09)

    Three customers a day are too few to trust a 3 a.m. peak at its face value (1.0):
    the factors say "more then", not "exactly then".
    """

    def __init__(
        self,
        min_windows: int = 24,
        level_windows: int = 168,
        hour_visits: int = 28,
        weekday_visits: int = 192,
        prior_customers: float = 5.0,
    ) -> None:
        self.min_windows = min_windows
        self.level_windows = level_windows
        self.hour_visits = hour_visits
        self.weekday_visits = weekday_visits
        self.prior_customers = prior_customers
        self._level: float | None = None
        self._mean_count = 0.0
        self._mean_season = 0.0
        self._n = 0
        #: decayed customers and windows seen per hour of day and per weekday
        self._hour_sum = [0.0] * 24
        self._hour_windows = [0.0] * 24
        self._weekday_sum = [0.0] * 7
        self._weekday_windows = [0.0] * 7

    @staticmethod
    def _slots(t: float) -> tuple[int, int]:
        # the UTC hour and weekday (the epoch began on a Thursday, weekday 3)
        days, seconds = divmod(int(t // 1), 86400)
        return seconds // 3600, (days + 3) % 7

    @staticmethod
    def _count(x: dict[str, Any]) -> float:
        value = x.get("customers")
        return float(x["y"] if value is None else value)

    @property
    def ready(self) -> bool:
        """Whether it has learned ``min_windows`` windows."""
        return self._n >= self.min_windows

    @property
    def learned(self) -> int:
        """Windows learned so far."""
        return self._n

    def _factor(self, sums: list[float], windows: list[float], slot: int) -> float:
        total_windows = sum(windows)
        if total_windows <= 0:
            return 1.0
        rate = sum(sums) / total_windows
        if rate <= 0:
            return 1.0
        prior = self.prior_customers
        return (sums[slot] + prior) / (windows[slot] * rate + prior)

    def season(self, t: float) -> float:
        """The hour-of-day and weekday factor of the window starting at ``t``."""
        hour, weekday = self._slots(t)
        return self._factor(self._hour_sum, self._hour_windows, hour) * self._factor(
            self._weekday_sum, self._weekday_windows, weekday
        )

    def expected(self, t: float) -> float:
        """Normal count of customers in the window starting at ``t`` (0.0 before any learning)."""
        if self._level is None:
            return 0.0
        return max(self._level * self.season(t), 1e-3)

    def score_one(self, x: dict[str, Any]) -> float:
        if not self.ready:
            return self.neutral_score
        p = poisson_sf(self._count(x), self.expected(float(x["t"])))
        return 1.0 if p <= 0 else min(1.0, max(0.0, -0.1 * math.log10(p)))

    def learn_one(self, x: dict[str, Any]) -> None:
        y = self._count(x)
        t = float(x["t"])
        hour, weekday = self._slots(t)
        keep_hour, keep_weekday = 1.0 - 1.0 / self.hour_visits, 1.0 - 1.0 / self.weekday_visits
        self._hour_sum[hour] = keep_hour * self._hour_sum[hour] + y
        self._hour_windows[hour] = keep_hour * self._hour_windows[hour] + 1.0
        self._weekday_sum[weekday] = keep_weekday * self._weekday_sum[weekday] + y
        self._weekday_windows[weekday] = keep_weekday * self._weekday_windows[weekday] + 1.0
        self._n += 1
        # the level is the mean count over the mean seasonal factor of the same windows:
        # the expected counts of the windows seen add up to the counts seen
        rate = max(1.0 / self._n, 1.0 / self.level_windows)
        self._mean_count += rate * (y - self._mean_count)
        self._mean_season += rate * (self.season(t) - self._mean_season)
        self._level = max(self._mean_count / max(self._mean_season, 1e-6), 1e-3)

    def relevel(self, windows: list[tuple[int, float]]) -> None:
        """Take the mean deseasonalised count of ``windows`` (``(start, customers)``) as the level."""
        if windows:
            self._mean_count = sum(y for _, y in windows) / len(windows)
            self._mean_season = sum(self.season(t) for t, _ in windows) / len(windows)
            self._level = max(self._mean_count / max(self._mean_season, 1e-6), 1e-3)

    def relevel_to(self, level: float, learned: int) -> None:
        """Start from ``level`` customers a window (flat), as if ``learned`` windows had been seen."""
        self._level = self._mean_count = max(level, 1e-3)
        self._mean_season = 1.0
        self._n = learned
