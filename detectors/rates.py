"""How many distinct customers a window of one key normally has: level x hour x weekday, shrunk."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import Detector
from .poisson import poisson_sf

__all__ = ["SeasonalRate"]


class SeasonalRate(Detector):
    """Customers per window by hour of day and weekday, where the volume supports them.

    Each hour of day has its own rate: the customers of its last visits (about
    ``hour_visits`` days, older ones fading) over those visits, shrunk towards the
    overall rate by ``prior_customers`` pseudo-customers. A weekday factor, shrunk
    towards 1 the same way, scales it. An area with thousands of customers a month gets
    its own daily and weekly shape; an area with a few a day gets nearly flat ones (two
    customers at 3 a.m. say little about 3 a.m.). Memory is about four weeks, as a
    28-day median's; a level that changes for good is taken at once by :meth:`relevel`
    (:class:`detectors.VolumeWatch` calls it when a change has lasted days).

    What the watch teaches it is the watch's business (it caps spikes, skips episodes).

    Parameters
    ----------
    min_windows
        Windows to learn before :attr:`ready` (a new key warms up without alerting).
    hour_visits, weekday_visits
        Visits of an hour of day (days), and of an hour of a weekday (weeks), a rate averages over.
    prior_customers
        Pseudo-customers that pull each rate towards the overall one.

    Examples
    --------
    >>> rate = SeasonalRate(min_windows=24)
    >>> for h in range(24 * 28):  # four weeks: 10 an hour by day (8-20 h), 1 by night
    ...     rate.learn_one({"t": h * 3600, "y": 10 if 8 <= h % 24 < 20 else 1})
    >>> round(rate.expected(28 * 86400 + 12 * 3600), 1), round(rate.expected(28 * 86400 + 3 * 3600), 1)
    (9.8, 1.2)
    >>> quiet = SeasonalRate()  # one customer at 3 a.m., 11 a.m. and 7 p.m. each day, none else
    >>> for h in range(24 * 28):
    ...     quiet.learn_one({"t": h * 3600, "y": 1 if h % 8 == 3 else 0})
    >>> round(quiet.expected(28 * 86400 + 3 * 3600), 2), round(quiet.expected(28 * 86400 + 4 * 3600), 2)
    (0.4, 0.09)

    Three customers a day are too few to trust a 3 a.m. peak at its face value (1.0):
    the rates say "more then", not "exactly then".
    """

    #: sums derived from the rates, kept in step by :meth:`learn_one` (``None``: to be made
    #: again, after any other change; and by instances pickled before they existed)
    _derived: list[Any] | None = None
    #: learns in step since the sums were last made whole (their rounding drifts a little a learn)
    _since_derived = 0

    def __init__(
        self,
        min_windows: int = 24,
        hour_visits: int = 28,
        weekday_visits: int = 8,
        prior_customers: float = 5.0,
    ) -> None:
        self.min_windows = min_windows
        self.hour_visits = hour_visits
        self.weekday_visits = weekday_visits
        self.prior_customers = prior_customers
        self._n = 0
        #: decayed customers and visits per hour of day
        self._hour_sum = [0.0] * 24
        self._hour_windows = [0.0] * 24
        #: decayed customers and visits per weekday and hour
        self._weekday_sum = [[0.0] * 24 for _ in range(7)]
        self._weekday_windows = [[0.0] * 24 for _ in range(7)]

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

    def _derive(self) -> list[Any]:
        """``[customers, visits, each weekday's customers, each weekday's visits times its hours' means]``.

        Every :meth:`expected` read these sums over 24 hours (the window's weekday's visits
        times each hour's mean, its customers): the most frequent call of a spike watch.
        :meth:`learn_one` changes one hour of one weekday, so it moves them in a few steps.
        """
        hour_sum, hour_windows = self._hour_sum, self._hour_windows
        means = [hour_sum[h] / hour_windows[h] if hour_windows[h] else 0.0 for h in range(24)]
        # (an hour never visited is in no weekday's visits either: its mean counts nothing)
        weekday_expected = [sum(n * m for n, m in zip(day, means, strict=True)) for day in self._weekday_windows]
        self._derived = [
            sum(hour_sum),
            sum(hour_windows),
            [sum(day) for day in self._weekday_sum],
            weekday_expected,
        ]
        self._since_derived = 0
        return self._derived

    def _overall(self) -> float:
        derived = self._derived or self._derive()
        return derived[0] / derived[1] if derived[1] > 0 else 0.0

    def _hour_rate(self, hour: int, overall: float) -> float:
        if overall <= 0:
            return 0.0
        prior = self.prior_customers
        return (self._hour_sum[hour] + prior) / (self._hour_windows[hour] + prior / overall)

    def _weekday_factor(self, weekday: int, overall: float) -> float:
        # the weekday's customers over what its hours' means (not shrunk: the shrinkage
        # lifts quiet hours, which would make every weekday seen mostly at night look
        # quiet) expected of its visits (a Tuesday seen from midnight to 8 a.m. has seen
        # little of a Tuesday)
        prior = self.prior_customers
        derived = self._derived or self._derive()
        return (derived[2][weekday] + prior) / (derived[3][weekday] + prior)

    def expected(self, t: float) -> float:
        """Normal count of customers in the window starting at ``t`` (0.0 before any learning)."""
        if self._n == 0:
            return 0.0
        # :meth:`_overall`, :meth:`_hour_rate` and :meth:`_weekday_factor` in one call, the same
        # sums in the same order: a watch reads it for every window it closes
        days, seconds = divmod(int(t // 1), 86400)
        hour, weekday = seconds // 3600, (days + 3) % 7
        derived = self._derived or self._derive()
        overall = derived[0] / derived[1] if derived[1] > 0 else 0.0
        if overall <= 0:
            return 1e-3
        prior = self.prior_customers
        rate = (self._hour_sum[hour] + prior) / (self._hour_windows[hour] + prior / overall)
        return max(rate * ((derived[2][weekday] + prior) / (derived[3][weekday] + prior)), 1e-3)

    def score_one(self, x: dict[str, Any]) -> float:
        if not self.ready:
            return self.neutral_score
        p = poisson_sf(self._count(x), self.expected(float(x["t"])))
        return 1.0 if p <= 0 else min(1.0, max(0.0, -0.1 * math.log10(p)))

    def learn_one(self, x: dict[str, Any]) -> None:
        self.learn_count(float(x["t"]), self._count(x))

    def learn_count(self, t: float, y: float) -> None:
        """``learn_one({"t": t, "y": y})`` without the dict: the watches' call, once a window."""
        days, seconds = divmod(int(t // 1), 86400)
        hour, weekday = seconds // 3600, (days + 3) % 7
        keep_hour, keep_weekday = 1.0 - 1.0 / self.hour_visits, 1.0 - 1.0 / self.weekday_visits
        old_sum, old_windows = self._hour_sum[hour], self._hour_windows[hour]
        new_sum, new_windows = keep_hour * old_sum + y, keep_hour * old_windows + 1.0
        self._hour_sum[hour], self._hour_windows[hour] = new_sum, new_windows
        sums, visits = self._weekday_sum[weekday], self._weekday_windows[weekday]
        old_day_sum, old_visits = sums[hour], visits[hour]
        sums[hour] = keep_weekday * old_day_sum + y
        visits[hour] = keep_weekday * old_visits + 1.0
        self._n += 1
        derived = self._derived
        if derived is None:
            return
        self._since_derived += 1
        if self._since_derived >= 4096:
            self._derived = None  # made whole again at the next read: the rounding stays small
            return
        # the sums, moved by what changed: this hour's mean in every weekday, this weekday's visits
        old_mean = old_sum / old_windows if old_windows else 0.0
        moved = new_sum / new_windows - old_mean
        derived[0] += new_sum - old_sum
        derived[1] += new_windows - old_windows
        derived[2][weekday] += sums[hour] - old_day_sum
        derived[3] = [e + day[hour] * moved for e, day in zip(derived[3], self._weekday_windows, strict=True)]
        derived[3][weekday] += (visits[hour] - old_visits) * old_mean  # its visits at the old mean

    def learn_quiet(self, start: int, windows: int, step: int) -> None:
        """Learn ``windows`` windows of no customer, ``step`` seconds apart from ``start``, at once.

        The same as ``learn_one({"t": t, "y": 0})`` for each of them, in closed form: a slot
        (an hour of day, or an hour of a weekday) visited ``v`` times keeps ``keep ** v`` of
        its customers, and its visits become ``keep ** v * visits + (1 - keep ** v) / (1 - keep)``.
        Zeros teach each slot the same whatever their order, so only the visits count.

        Examples
        --------
        >>> stepped, at_once = SeasonalRate(), SeasonalRate()
        >>> for rate in (stepped, at_once):
        ...     for h in range(24 * 14):
        ...         rate.learn_one({"t": h * 3600, "y": 3 if 9 <= h % 24 < 17 else 0})
        >>> for h in range(24 * 14, 24 * 60):
        ...     stepped.learn_one({"t": h * 3600, "y": 0})
        >>> at_once.learn_quiet(24 * 14 * 3600, 24 * 46, 3600)
        >>> stepped.learned == at_once.learned
        True
        >>> abs(stepped.expected(10 * 3600) / at_once.expected(10 * 3600) - 1) < 1e-12
        True
        """
        if windows <= 0:
            return
        # the visits of each slot (weekday x 24 + hour), counted with numpy: a watch that wakes
        # learns its quiet days here, thousands of times over a long history
        week = 7 * 86400
        full, windows_left = divmod(windows, week // step) if week % step == 0 else (0, windows)
        counted = min(windows, week // step) if full else windows_left
        times = start + step * np.arange(counted, dtype=np.int64)
        slot_of = ((times // 86400 + 3) % 7) * 24 + (times % 86400) // 3600
        visits = np.bincount(slot_of, minlength=168) * full if full else np.zeros(168, dtype=np.int64)
        if full and windows_left:
            # every week of windows visits the same slots: one counted, then the windows left
            rest = start + full * week + step * np.arange(windows_left, dtype=np.int64)
            visits += np.bincount(((rest // 86400 + 3) % 7) * 24 + (rest % 86400) // 3600, minlength=168)
        elif not full:
            visits = np.bincount(slot_of, minlength=168)
        by_slot = visits.reshape(7, 24).astype(np.float64)
        # a slot not visited keeps 1.0 of its customers and visits, exactly (x * 1.0 + 0.0)
        keep = (1.0 - 1.0 / self.weekday_visits) ** by_slot
        self._weekday_sum = (np.array(self._weekday_sum) * keep).tolist()
        self._weekday_windows = (keep * np.array(self._weekday_windows) + (1.0 - keep) * self.weekday_visits).tolist()
        hour_keep = (1.0 - 1.0 / self.hour_visits) ** visits.reshape(7, 24).sum(axis=0).astype(np.float64)
        self._hour_sum = (np.array(self._hour_sum) * hour_keep).tolist()
        self._hour_windows = (hour_keep * np.array(self._hour_windows) + (1.0 - hour_keep) * self.hour_visits).tolist()
        self._n += int(visits.sum())
        self._derived = None

    def quiet_ceiling(self) -> list[float]:
        """A bound on :meth:`expected` at each hour of day, however many windows of no customer it learns next.

        Zeros only lower each hour's customers and raise its visits (never past
        ``hour_visits``), so the overall rate and every hour's rate can only fall. A weekday
        factor can rise (its hours' means fall), but never past ``(customers + prior) / prior``.
        ``inf`` everywhere when an hour has no visit yet (its mean is the overall one, which
        this does not bound).

        >>> rate = SeasonalRate()
        >>> for h in range(24 * 7):
        ...     rate.learn_one({"t": h * 3600, "y": 1 if h % 24 == 12 else 0})
        >>> ceiling = rate.quiet_ceiling()
        >>> all(rate.expected(h * 3600) <= ceiling[h % 24] for h in range(24 * 7))
        True
        """
        if self._n == 0:
            return [0.0] * 24
        if min(self._hour_windows) <= 0:
            return [math.inf] * 24
        overall = self._overall()
        prior = self.prior_customers
        factor = max((sum(day) + prior) / prior for day in self._weekday_sum)
        return [max(self._hour_rate(h, overall) * factor, 1e-3) for h in range(24)]

    def relevel(self, windows: list[tuple[int, float]], at_least: float = 0.0) -> None:
        """Take the level of ``windows`` (``(start, customers)``) as normal: every rate scaled to it.

        ``at_least``: the customers the windows are taken to total, at least (a level
        lowered from one quiet day keeps what that day cannot rule out).
        """
        expected = sum(self.expected(t) for t, _ in windows)
        seen = sum(y for _, y in windows)
        if not windows or expected <= 0:
            return
        ratio = max(seen, at_least, 1e-3 * len(windows)) / expected
        self._hour_sum = [s * ratio for s in self._hour_sum]
        self._weekday_sum = [[s * ratio for s in day] for day in self._weekday_sum]
        self._derived = None

    def relevel_to(self, level: float, learned: int) -> None:
        """Start from ``level`` customers a window at every hour, as if ``learned`` windows had been seen."""
        visits = float(min(self.hour_visits, max(learned // 24, 1)))
        self._hour_sum = [max(level, 1e-3) * visits] * 24
        self._hour_windows = [visits] * 24
        self._weekday_sum = [[0.0] * 24 for _ in range(7)]
        self._weekday_windows = [[0.0] * 24 for _ in range(7)]
        self._n = learned
        self._derived = None
