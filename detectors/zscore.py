"""A rolling z-score: the baseline every other detector must beat."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from .base import Detector

__all__ = ["RollingZScore"]


class RollingZScore(Detector):
    """How many standard deviations ``y`` is from the mean of the last ``window`` values.

    The score is ``1 - 2 * P(Z > |z|)`` for a standard normal ``Z``, so 0.0 at the mean
    and close to 1.0 far from it.

    Parameters
    ----------
    window
        How many past values make the reference.
    min_samples
        Before this many values, the score is neutral (0.0).

    Examples
    --------
    >>> det = RollingZScore(window=50, min_samples=10)
    >>> det.score_one({"t": 0, "y": 100.0})
    0.0
    >>> for i in range(50):
    ...     det.learn_one({"t": i, "y": 10.0 + (i % 3)})
    >>> round(det.score_one({"t": 50, "y": 11.0}), 3), round(det.score_one({"t": 50, "y": 30.0}), 3)
    (0.019, 1.0)
    """

    def __init__(self, window: int = 500, min_samples: int = 30) -> None:
        self.window = window
        self.min_samples = min_samples
        self._values: deque[float] = deque(maxlen=window)

    def learn_one(self, x: dict[str, Any]) -> None:
        self._values.append(float(x["y"]))

    def score_one(self, x: dict[str, Any]) -> float:
        n = len(self._values)
        if n < self.min_samples:
            return self.neutral_score
        mean = sum(self._values) / n
        var = sum((v - mean) ** 2 for v in self._values) / (n - 1)
        if var <= 0:
            return 0.0 if float(x["y"]) == mean else 1.0
        z = abs(float(x["y"]) - mean) / math.sqrt(var)
        return 1.0 - math.erfc(z / math.sqrt(2))
