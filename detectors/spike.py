"""Ticket volume against what is normal for that hour and weekday."""

from __future__ import annotations

import math
from collections import deque
from typing import Any, cast

from .base import Detector
from .poisson import poisson_sf

__all__ = ["SpikeDetector"]


class SpikeDetector(Detector):
    """Counts per window against a seasonal quasi-Poisson model of normal.

    Normal is ``level x hour[h] x weekday[d]``: a level, and hour-of-day and
    day-of-week factors, all learned online. The score comes from the upper tail
    probability ``p`` of the observed count under a Poisson law whose variance is
    inflated by the dispersion seen so far (``phi``): ``min(1, -log10(p) / 10)``, so a
    score of 0.4 is ``p = 1e-4``.

    The count tested is the number of distinct **customers** when the observation
    has one (``x["customers"]``), else ``x["y"]``: twenty tickets from one loud
    customer are one customer, not a spike.

    A spike does not become the new normal: a window whose ``p`` is below
    ``protect_p`` teaches the model only up to the edge of normal. When the level
    really changes (``adapt_after`` anomalous windows in a row) the model accepts it.

    Parameters
    ----------
    level_rate, season_rate
        Learning rates of the level and of the seasonal factors (exponential moving
        averages; the first observations are averaged evenly).
    min_windows
        Windows to learn before any score but the neutral 0.0.
    protect_p
        Windows less likely than this do not move the model of normal at full weight.
    adapt_after
        After this many anomalous windows in a row, the new level is accepted.
    max_log10
        ``-log10(p)`` that maps to a score of 1.0.
    span
        Windows tested together for a sustained rise (the current one and the
        ``span - 1`` before it), besides the current window alone.

    Examples
    --------
    >>> det = SpikeDetector(min_windows=48)
    >>> det.score_one({"t": 0, "y": 50})
    0.0
    >>> for h in range(24 * 14):   # two weeks of ~10 tickets an hour
    ...     det.learn_one({"t": h * 3600, "y": 10 + (h * 7) % 5 - 2})
    >>> det.score_one({"t": 14 * 86400, "y": 11}) < 0.1, det.score_one({"t": 14 * 86400, "y": 40}) > 0.9
    (True, True)
    >>> round(det.explain({"t": 14 * 86400, "y": 40})["expected"])
    10
    """

    def __init__(
        self,
        level_rate: float = 0.03,
        season_rate: float = 0.1,
        min_windows: int = 24,
        protect_p: float = 1e-3,
        adapt_after: int = 12,
        max_log10: float = 10.0,
        span: int = 3,
    ) -> None:
        self.level_rate = level_rate
        self.season_rate = season_rate
        self.min_windows = min_windows
        self.protect_p = protect_p
        self.adapt_after = adapt_after
        self.max_log10 = max_log10
        self.span = span
        self._level: float | None = None
        self._hour = [1.0] * 24
        self._hour_n = [0] * 24
        self._weekday = [1.0] * 7
        self._weekday_n = [0] * 7
        self._dispersion = 1.0
        self._n = 0
        self._anomalous_run = 0
        self._recent: deque[tuple[float, float]] = deque(maxlen=max(span - 1, 0))

    @staticmethod
    def _slots(t: float) -> tuple[int, int]:
        # the UTC hour and weekday (the epoch began on a Thursday, weekday 3), as
        # ``datetime.fromtimestamp(t, UTC)`` gives them, without making one: a pattern's
        # watch asks this of every window it closes
        days, seconds = divmod(int(t // 1), 86400)
        return seconds // 3600, (days + 3) % 7

    @staticmethod
    def _count(x: dict[str, Any]) -> float:
        value = x.get("customers")
        return float(x["y"] if value is None else value)

    def expected(self, t: float, fraction: float = 1.0) -> float:
        """Normal count for the window starting at ``t`` (``fraction`` of it elapsed)."""
        if self._level is None:
            return 0.0
        hour, weekday = self._slots(t)
        return self._expected_in(hour, weekday, fraction)

    def _expected_in(self, hour: int, weekday: int, fraction: float = 1.0) -> float:
        level = cast(float, self._level)  # callers check it is set
        return max(level * self._hour[hour] * self._weekday[weekday] * fraction, 1e-3)

    @property
    def ready(self) -> bool:
        """Whether it has learned enough windows to score (``min_windows``)."""
        return self._n >= self.min_windows

    def upper(self, t: float, fraction: float = 1.0) -> float:
        """The top of the normal band: three (dispersion-inflated) standard deviations up."""
        mu = self.expected(t, fraction)
        return mu + 3.0 * math.sqrt(self._dispersion * mu)

    def _p_value(self, x: dict[str, Any]) -> tuple[float, float]:
        mu = self.expected(float(x["t"]), float(x.get("fraction", 1.0)))
        phi = self._dispersion
        y = self._count(x)
        # quasi-Poisson: a Poisson law on the count scaled down by the dispersion
        p = poisson_sf(y / phi, mu / phi)
        if self._recent and y > mu + math.sqrt(phi * mu):
            # A sustained rise: this window (itself above normal) and the previous
            # ones together. Each test at half strength (Bonferroni, for the two).
            seen = y + sum(o for o, _ in self._recent)
            normal = mu + sum(e for _, e in self._recent)
            p = min(1.0, 2 * min(p, poisson_sf(seen / phi, normal / phi)))
        return p, mu

    def score_one(self, x: dict[str, Any]) -> float:
        if not self.ready:
            return self.neutral_score
        return self._score_of(self._p_value(x)[0])

    def _score_of(self, p: float) -> float:
        if p <= 0.0:
            return 1.0
        return min(1.0, max(0.0, -math.log10(p) / self.max_log10))  # max: not -0.0 when p = 1

    def explain(self, x: dict[str, Any]) -> dict[str, float]:
        """The score with its reasons: ``observed``, ``expected``, ``p_value``, ``score``."""
        p, mu = self._p_value(x) if self._level is not None else (1.0, 0.0)
        if not self.ready:
            score = self.neutral_score
        elif self._level is None:  # ready before learning anything (min_windows=0)
            score = self.score_one(x)
        else:  # score_one's, from the p-value at hand rather than computed again
            score = self._score_of(p)
        return {"observed": self._count(x), "expected": round(mu, 3), "p_value": p, "score": score}

    def learn_one(self, x: dict[str, Any]) -> None:
        y = self._count(x)
        t = float(x["t"])
        hour, weekday = self._slots(t)
        if self._level is None:
            self._level = max(y, 0.5)
        mu = self._expected_in(hour, weekday)
        p = poisson_sf(y / self._dispersion, mu / self._dispersion) if self._n >= self.min_windows else 1.0
        if p < self.protect_p:
            self._anomalous_run += 1
            # a window anomalous on its own has had its say: it does not also make
            # the next, normal windows look like a sustained rise
            self._recent.clear()
        else:
            self._anomalous_run = 0
            self._recent.append((y, mu))
        protected = 0 < self._anomalous_run < self.adapt_after
        if protected:
            # teach only up to the edge of normal: a spike must not become normal
            y = min(y, mu + 3.0 * math.sqrt(self._dispersion * mu))
        self._n += 1
        season = self._hour[hour] * self._weekday[weekday]
        rate = max(self.level_rate, 1.0 / self._n)
        if self._anomalous_run >= self.adapt_after:
            # The level really changed: take the new one at once, rather than let a slow
            # level push the difference into the seasonal factors.
            rate, self._anomalous_run = 1.0, 0
        self._level += rate * (y / max(season, 1e-3) - self._level)
        self._level = max(self._level, 1e-3)
        self._hour_n[hour] += 1
        h_rate = max(self.season_rate, 1.0 / (self._hour_n[hour] + 1))
        self._hour[hour] += h_rate * (y / max(self._level * self._weekday[weekday], 1e-3) - self._hour[hour])
        self._weekday_n[weekday] += 1
        d_rate = max(self.season_rate / 24, 1.0 / (self._weekday_n[weekday] + 24))
        self._weekday[weekday] += d_rate * (y / max(self._level * self._hour[hour], 1e-3) - self._weekday[weekday])
        self._hour = _normalised(self._hour)
        self._weekday = _normalised(self._weekday)
        if self._n > 1 and not protected:
            resid = (y - mu) ** 2 / max(mu, 1e-3)
            self._dispersion = max(1.0, self._dispersion + self.level_rate * (resid - self._dispersion))


def _normalised(factors: list[float]) -> list[float]:
    mean = sum(factors) / len(factors)
    # max(f / mean, 0.01) without a call per factor (twice a window in every watch)
    return [q if (q := f / mean) > 0.01 else 0.01 for f in factors] if mean > 0 else [1.0] * len(factors)
