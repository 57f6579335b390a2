"""Running a detector over a whole series, row by row, seeing only the past."""

from __future__ import annotations

import csv
import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .base import Detector

__all__ = ["Series", "SeriesError", "parse_timestamp", "read_series", "score_series"]


class SeriesError(ValueError):
    """The input is not a ``timestamp,value`` series; the message names the line."""


@dataclass
class Series:
    """The rows of a ``timestamp,value`` file, in file order, and what is irregular in them.

    Real exports repeat a timestamp (a daylight-saving change, a collector that wrote
    twice), skip some (an outage) and put rows out of order. Such a file is still a
    series: its rows are scored in file order. ``repeated``, ``backwards`` and ``gaps``
    hold the line numbers (the header is line 1) of the rows whose timestamp equals the
    row before's, is earlier than it, or comes more than twice the usual interval after it.
    """

    stamps: list[str]
    times: list[float]
    values: list[float]
    raw_values: list[str]
    interval: float
    repeated: list[int] = field(default_factory=list)
    backwards: list[int] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)

    def warning(self, source: str) -> str | None:
        """One line saying how many rows are irregular and where, or None when none is."""
        parts = []
        for what, lines in (
            ("repeated timestamps", self.repeated),
            ("timestamps earlier than the row before", self.backwards),
            ("gaps of more than twice the usual interval", self.gaps),
        ):
            if lines:
                where = ", ".join(str(n) for n in lines[:5]) + (", ..." if len(lines) > 5 else "")
                parts.append(f"{len(lines)} {what} (line {where})")
        if not parts:
            return None
        return f"{source}: scored in file order despite " + "; ".join(parts)


def read_series(source: Path) -> Series:
    """Read a ``timestamp,value`` CSV; refuse (:class:`SeriesError`, naming the line) what is not one.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "s.csv"
    >>> rows = ["00:00", "00:05", "00:05", "00:10", "00:25", "00:15"]  # a repeat, a gap, a step back
    >>> _ = path.write_text("timestamp,value\\n" + "".join(f"2014-04-01 {r}:00,{i}\\n" for i, r in enumerate(rows)))
    >>> s = read_series(path)
    >>> s.values, s.interval, s.repeated, s.gaps, s.backwards
    ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], 300.0, [4], [6], [7])
    """
    stamps: list[str] = []
    times: list[float] = []
    values: list[float] = []
    raw_values: list[str] = []
    with source.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"timestamp", "value"} <= set(reader.fieldnames):
            raise SeriesError(f"{source}: the header must have the columns timestamp,value; got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                moment = parse_timestamp(row["timestamp"])
                value = float(row["value"])
            except (TypeError, ValueError, AttributeError):
                raise SeriesError(f"{source}, line {line}: not a timestamp and a number: {row!r}") from None
            if not math.isfinite(value):
                raise SeriesError(f"{source}, line {line}: value is not a finite number: {row['value']!r}")
            stamps.append(row["timestamp"])
            times.append(moment)
            values.append(value)
            raw_values.append(row["value"])
    if len(stamps) < 2:
        raise SeriesError(f"{source}: a series needs at least two rows")
    steps = [b - a for a, b in itertools.pairwise(times) if b > a]
    interval = float(statistics.median(steps)) if steps else 0.0  # the usual step forward
    series = Series(stamps, times, values, raw_values, interval)
    for i in range(1, len(times)):
        step, line = times[i] - times[i - 1], i + 2
        if step == 0:
            series.repeated.append(line)
        elif step < 0:
            series.backwards.append(line)
        elif interval and step > 2 * interval:
            series.gaps.append(line)
    return series


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
