"""A detector for any numeric series: how surprising is the recent past, given the long past?"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from .base import Detector

__all__ = ["DETECTION_SCORE", "SurpriseDetector"]

#: The score from which a row counts as a detection (``ticketpulse detect`` reports and plots
#: those rows): the round figure under the threshold NAB's standard profile chose for the
#: default detector over its 48 files (0.1125; at 0.11 it scores 72.3, docs/benchmarks.md).
DETECTION_SCORE = 0.11


def _normal_tail(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


class _Tail:
    """How rare a deviation is among a history of them: mean, spread and order."""

    def __init__(self) -> None:
        self.mean = 0.0
        self.std = 1.0
        self.ordered = np.zeros(0)  # the history, sorted (``recurring``)

    def fit(self, values: np.ndarray) -> None:
        if values.size > 1:
            self.mean = float(values.mean())
            self.std = max(float(values.std()), 1e-3)
            self.ordered = np.sort(values)

    def __call__(self, deviation: float, recurring: bool) -> float:
        """The normal tail of ``deviation``, and with ``recurring`` no rarer than the
        share of the history at least as large."""
        p = _normal_tail((deviation - self.mean) / self.std)
        if recurring and self.ordered.size:
            # a deviation the window has already seen this large, k times, is not rarer
            # than k in the window's rows: a daily spike, a weekly batch job
            seen = self.ordered.size - int(np.searchsorted(self.ordered, deviation, side="left"))
            p = max(p, seen / self.ordered.size)
        return p


class _Deviations:
    """The last ``window`` raw deviations; what a score compares with is each averaged
    with the ``short - 1`` before it (``averaged``), and with ``rows`` the raw ones too.

    >>> d = _Deviations(window=100, short=2, rows=True)
    >>> for raw in [1.0] * 95 + [9.0] * 5:
    ...     d.add(raw)
    >>> d.averaged(3.0)  # with the 9.0 before it
    6.0
    >>> d.refresh()
    >>> d.tail(9.0, recurring=False) < 1e-5, d.tail(9.0, recurring=True)  # averaged: 4 times in 100
    (True, 0.04)
    >>> d.row_tail(9.0, recurring=True)  # row by row: 5 times in 100
    0.05
    """

    def __init__(self, window: int, short: int, rows: bool = False) -> None:
        self.window = window
        self.short = short
        # the averages of the window's first rows reach back ``short - 1`` rows before it
        self.raw: deque[float] = deque(maxlen=window + short - 1)
        self.rows = rows
        self.tail = _Tail()
        self.row_tail = _Tail()

    def averaged(self, raw: float) -> float:
        """``raw`` averaged with the ``short - 1`` deviations before it."""
        k = min(len(self.raw), self.short - 1)
        # by index from the end: a deque reaches its ends in O(1), islice walks from the start
        return (sum(self.raw[-j] for j in range(1, k + 1)) + raw) / (k + 1)

    def add(self, raw: float) -> None:
        self.raw.append(raw)

    def refresh(self) -> None:
        raw = np.fromiter(self.raw, dtype=float)
        if raw.size < 2:
            return  # too few to have a spread: the tails stay neutral
        # each row averaged with the short - 1 before it (fewer at the very start), then the
        # last ``window`` of those; each run's sum added left to right, as ``averaged`` adds
        # (a cumulative sum's differences are off in the last bits, which moves ties)
        k = min(self.short, raw.size)
        averaged = np.empty_like(raw)
        averaged[: k - 1] = np.cumsum(raw[: k - 1]) / np.arange(1, k)
        averaged[k - 1 :] = np.lib.stride_tricks.sliding_window_view(raw, k).sum(axis=1) / k
        self.tail.fit(averaged[-self.window :])
        if self.rows:
            self.row_tail.fit(raw[-self.window :])


class SurpriseDetector(Detector):
    """Robust deviation, then its likelihood against the series' own history of deviations.

    Step 1, the raw deviation of ``y``: its distance from the median of the last
    ``window`` values, in robust standard deviations (1.4826 MAD), and the same for
    its change from the previous value (a jump in a noisy series); the larger wins.
    When the series has a period (``period_seconds``, a day by default), the raw
    deviation is the smaller of that and the distance from the value one period
    earlier, in its own robust units: a value where it was yesterday at this time is
    not surprising, however far from the median (a daily cycle). The same holds for
    the value one ``long_period_seconds`` earlier (a week: a quiet Sunday is not a
    drop), where the window holds that many rows.
    Step 2, the surprise: the mean raw deviation of the last ``short`` rows, against
    the mean and spread of raw deviations over the last ``window`` rows (the idea of
    Numenta's "anomaly likelihood": a series that is always noisy is not anomalous
    for being noisy), and no rarer than the share of those deviations that were at
    least as large (``recurring``: a spike the series has every few hours is not news).
    Step 2b, the cycle alone: when the series has a cycle, how far ``y`` is from where
    the cycle puts it (the smaller distance of a day and of a week earlier), against
    its own history, in the same way. A missing daily peak is a value near the median
    and near the row before, which step 1 finds unremarkable; only the cycle says it
    is not where it should be. Real series leave yesterday's path often, so this tail
    counts with ``cycle_weight`` of its ``-log10``.
    Step 3, the score: ``-log10`` of the smaller tail probability, scaled
    to ``[0, 1]`` at ``max_log10`` (so 1e-10 maps to 1.0 with the default).
    Besides, a value beyond every value seen so far, by more than ``range_margin`` of
    their range, is a new extreme and scores 1.0 at once (Numenta's "spatial
    anomaly"): the likelihood of step 2 is slow to believe a series that was always
    quiet and now leaves its range. Unless the row's deviation (step 1) is an ordinary
    one among the window's rows (its tail, as in step 2 but row by row, above
    ``extreme_rarity``): a series that creeps past its old maximum in steps it takes
    every day is scored as any other row.
    And a coarse view: the means of blocks of ``coarse_seconds`` go to a second detector
    of the same kind (its own history, ``coarse_min_samples`` blocks before it scores),
    whose score counts at the row that completes a block when it is the larger. A slow
    decline, a few robust units a row for hundreds of rows, never surprises the rows'
    view (each row is near the one before, and near where it was a day earlier in the
    units of day-to-day change); in blocks it is a few large steps.

    Parameters
    ----------
    window
        Rows of history for the baseline and for the spread of deviations.
    short
        Rows averaged for the recent deviation.
    min_samples
        Rows before any score but the neutral 0.0.
    max_log10
        ``-log10(p)`` that maps to a score of 1.0.
    period_seconds
        The period of a cycle (86400, a day); the rows it spans are inferred from the
        first two timestamps. ``0`` turns the comparison with one period earlier off;
        so does a period of more than ``window`` rows.
    long_period_seconds
        A second, longer cycle (604800, a week), compared in the same way; ``0`` turns
        it off, and so does a period of more than ``window`` rows.
    recurring
        Step 2 also counts how many of the window's averaged deviations were at least
        as large: a deviation seen ``k`` times in the window's rows is not rarer than
        ``k / window``, however thin the normal tail (deviations have heavy tails: a
        daily spike, a weekly batch job). ``False`` leaves the normal tail alone.
    range_margin
        Share of the range seen so far that a new extreme must exceed it by to score
        1.0; ``None`` turns new extremes off.
    extreme_rarity
        A new extreme scores 1.0 only if the tail probability of its row's deviation
        among the window's rows' is at most this (0.3); ``1.0`` scores every new
        extreme.
    fade
        How fast the surprise already reported fades, per row (0.995: half in ~140 rows).
    coarse_seconds
        Length of the coarse view's blocks (28800, eight hours; rows per block inferred
        from the first two timestamps). ``0`` turns the coarse view off, and so does a
        block of fewer than two rows.
    coarse_min_samples
        Blocks the coarse view learns before it scores (100: a month of eight-hour blocks).
    cycle_weight
        What the cycle's own surprise (step 2b) counts for: its tail probability ``p``
        counts as ``p ** cycle_weight``, so with 0.4 a departure from the cycle as rare as
        1e-10 weighs as 1e-4 would in step 2. ``0`` turns step 2b off.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(1)
    >>> det = SurpriseDetector(window=200, min_samples=50)
    >>> det.score_one({"t": 0, "y": 5.0})
    0.0
    >>> for i in range(300):
    ...     det.learn_one({"t": i, "y": 10 + rng.gauss(0, 1)})
    >>> det.score_one({"t": 300, "y": 10.5}) < 0.05 < 0.3 < det.score_one({"t": 300, "y": 25.0})
    True
    """

    def __init__(
        self,
        window: int = 1000,
        short: int = 3,
        min_samples: int = 300,
        max_log10: float = 30.0,
        fade: float = 0.995,
        period_seconds: float = 86400.0,
        range_margin: float | None = 0.01,
        long_period_seconds: float = 604800.0,
        recurring: bool = True,
        coarse_seconds: float = 28800.0,
        coarse_min_samples: int = 100,
        cycle_weight: float = 0.4,
        extreme_rarity: float = 0.3,
    ) -> None:
        self.window = window
        self.short = short
        self.min_samples = min_samples
        self.max_log10 = max_log10
        self.fade = fade
        self.period_seconds = period_seconds
        self.range_margin = range_margin
        self.long_period_seconds = long_period_seconds
        self.recurring = recurring
        self.coarse_seconds = coarse_seconds
        self.coarse_min_samples = coarse_min_samples
        self.cycle_weight = cycle_weight
        self.extreme_rarity = extreme_rarity
        # the coarse view: a detector of block means, the rows of a block, the current block's values
        self._coarse: SurpriseDetector | None = None
        self._block_rows = 0
        self._block: list[float] = []
        self._low = math.inf
        self._high = -math.inf
        self._seen = 0
        self._values: deque[float] = deque(maxlen=window)
        # the raw deviations (step 2; row by row too, what a new extreme's is compared
        # with) and the departures from the cycle (step 2b)
        self._raw = _Deviations(window, short, rows=True)
        self._off_cycle = _Deviations(window, short)
        self._median = 0.0
        self._scale = 1.0
        self._diff_scale = 1.0
        self._since_refresh = 0
        self._reported = 0.0
        self._last_t: float | None = None
        # per cycle (a day, a week) that the window holds: [rows back, robust scale of the
        # change over that many rows]; None until the sampling interval is known
        self._cycles: list[list[float]] | None = None

    def _start_coarse_view(self, interval: float) -> None:
        rows = round(self.coarse_seconds / interval)
        if rows < 2:
            return
        self._block_rows = rows
        self._coarse = SurpriseDetector(
            window=max(3 * self.coarse_min_samples, 200),
            short=self.short,
            min_samples=self.coarse_min_samples,
            max_log10=self.max_log10,
            fade=self.fade,
            period_seconds=self.period_seconds,
            range_margin=self.range_margin,
            long_period_seconds=self.long_period_seconds,
            recurring=self.recurring,
            coarse_seconds=0,
            cycle_weight=self.cycle_weight,
            extreme_rarity=self.extreme_rarity,
        )
        # the first row (learned before the interval was known) opens the first block
        self._block = [self._values[-1]] if self._values else []

    def _raw_deviation(self, y: float) -> tuple[float, float | None]:
        """Step 1's deviation, and the distance from where the cycle puts ``y`` (step 2b;
        ``None`` without a cycle the window holds yet)."""
        level = abs(y - self._median) / self._scale
        if not self._values:
            return level, None
        level = max(level, abs(y - self._values[-1]) / self._diff_scale)
        # where it was one cycle ago: the cycle explains it (docs/benchmarks.md: the day
        # +0.6 on NAB, the week +1.0)
        off_cycle = None
        for rows, scale in self._cycles or ():
            if len(self._values) >= rows:
                distance = abs(y - self._values[-int(rows)]) / scale
                off_cycle = distance if off_cycle is None else min(off_cycle, distance)
        if off_cycle is not None:
            level = min(level, off_cycle)
        return level, off_cycle

    def _new_extreme(self, y: float) -> bool:
        if self.range_margin is None or self._seen <= self.min_samples:
            return False
        margin = self.range_margin * (self._high - self._low)
        return y > self._high + margin or y < self._low - margin

    def _refresh(self) -> None:
        # Robust statistics over the window, recomputed every few rows: medians are
        # the costly part, and they move slowly.
        values = np.fromiter(self._values, dtype=float)
        self._median = float(np.median(values))
        spread = float(np.median(np.abs(values - self._median))) * 1.4826
        floor = 1e-6 * (abs(self._median) + 1.0)
        self._scale = max(spread, floor)
        diffs = np.abs(np.diff(values))
        self._diff_scale = max(float(np.median(diffs)) * 1.4826 if diffs.size else 0.0, floor)
        for cycle in self._cycles or ():
            lag = int(cycle[0])
            if values.size > lag:
                cycle[1] = max(float(np.median(np.abs(values[lag:] - values[:-lag]))) * 1.4826, floor)
        self._raw.refresh()
        self._off_cycle.refresh()
        self._since_refresh = 0

    def score_one(self, x: dict[str, Any]) -> float:
        # Only what is new counts: an excursion alerts once, at its start, and again
        # only if it grows beyond the surprise already reported (which fades slowly).
        score = max(0.0, self._surprise(x) - self._reported)
        if self._coarse is not None and len(self._block) + 1 == self._block_rows:
            # this row completes a block: the coarse view scores the block's mean
            score = max(score, self._coarse.score_one(self._block_point(x)))
        return score

    def _block_point(self, x: dict[str, Any]) -> dict[str, Any]:
        return {"t": x["t"], "y": (sum(self._block) + float(x["y"])) / self._block_rows}

    def _surprise(self, x: dict[str, Any]) -> float:
        if len(self._values) < self.min_samples:
            return self.neutral_score
        y = float(x["y"])
        raw, off_cycle = self._raw_deviation(y)
        # this row and the ``short - 1`` before it: what the history of deviations holds
        p = self._raw.tail(self._raw.averaged(raw), self.recurring)
        # a new extreme counts at once unless the row's deviation is an ordinary one for the window
        if self._new_extreme(y) and self._raw.row_tail(raw, self.recurring) <= self.extreme_rarity:
            return 1.0
        if self.cycle_weight > 0 and off_cycle is not None and self._off_cycle.tail.ordered.size:
            p = min(p, self._off_cycle.tail(self._off_cycle.averaged(off_cycle), self.recurring) ** self.cycle_weight)
        if p <= 0.0:
            return 1.0
        return min(1.0, max(0.0, -math.log10(p) / self.max_log10))

    def learn_one(self, x: dict[str, Any]) -> None:
        y = float(x["y"])
        t = float(x["t"])
        if self._cycles is None and self._last_t is not None and t > self._last_t:
            # the sampling interval, from the first two rows: a day back is this many rows
            back = (round(period / (t - self._last_t)) for period in (self.period_seconds, self.long_period_seconds))
            self._cycles = [[rows, 1.0] for rows in back if 2 <= rows < self.window]
            self._start_coarse_view(t - self._last_t)
        self._last_t = t
        if self._coarse is not None:
            if len(self._block) + 1 == self._block_rows:
                self._coarse.learn_one(self._block_point(x))
                self._block = []
            else:
                self._block.append(y)
        self._reported = max(self._reported * self.fade, self._surprise(x))
        if len(self._values) >= self.min_samples:
            raw, off_cycle = self._raw_deviation(y)
            self._raw.add(raw)
            if off_cycle is not None:
                self._off_cycle.add(off_cycle)
        self._values.append(y)
        self._low, self._high, self._seen = min(self._low, y), max(self._high, y), self._seen + 1
        self._since_refresh += 1
        if self._since_refresh >= 10 or len(self._values) <= self.min_samples:
            self._refresh()
