"""Running a detector over a whole series, row by row, seeing only the past."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from .base import Detector

__all__ = ["parse_timestamp", "score_series"]


def parse_timestamp(text: str) -> float:
    """Epoch seconds of an ISO 8601 timestamp; one without a zone is taken as UTC.

    >>> parse_timestamp("2014-04-01 00:05:00"), parse_timestamp("2014-04-01T02:05:00+02:00")
    (1396310700.0, 1396310700.0)
    """
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def score_series(detector: Detector, timestamps: Sequence[str], values: Sequence[float]) -> list[float]:
    """Score each row from what came before it, then learn it (NAB's result order)."""
    scores = []
    for stamp, value in zip(timestamps, values, strict=True):
        x = {"t": parse_timestamp(stamp), "y": float(value)}
        scores.append(detector.score_one(x))
        detector.learn_one(x)
    return scores
