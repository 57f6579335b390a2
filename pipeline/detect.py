"""``ticketpulse detect``: score a ``timestamp,value`` series row by row (NAB's format)."""

from __future__ import annotations

import csv
import itertools
import math
import statistics
from pathlib import Path

from detectors import SurpriseDetector, parse_timestamp

__all__ = ["DetectError", "detect_file"]


class DetectError(ValueError):
    """The input is not a ``timestamp,value`` series; the message names the line."""


def detect_file(source: Path, output: Path) -> dict[str, float]:
    """Score ``source`` into ``output`` (``timestamp,value,anomaly_score``); return a summary."""
    stamps: list[str] = []
    values: list[float] = []
    raw_values: list[str] = []
    with source.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"timestamp", "value"} <= set(reader.fieldnames):
            raise DetectError(f"{source}: the header must have the columns timestamp,value; got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                moment = parse_timestamp(row["timestamp"])
                value = float(row["value"])
            except (TypeError, ValueError):
                raise DetectError(f"{source}, line {line}: not a timestamp and a number: {row!r}") from None
            if not math.isfinite(value):
                raise DetectError(f"{source}, line {line}: value is not a finite number: {row['value']!r}")
            if stamps and moment <= parse_timestamp(stamps[-1]):
                raise DetectError(f"{source}, line {line}: timestamps must increase ({row['timestamp']})")
            stamps.append(row["timestamp"])
            values.append(value)
            raw_values.append(row["value"])
    if len(stamps) < 2:
        raise DetectError(f"{source}: a series needs at least two rows")
    times = [parse_timestamp(s) for s in stamps]
    interval = statistics.median(b - a for a, b in itertools.pairwise(times))
    detector = SurpriseDetector()
    with output.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["timestamp", "value", "anomaly_score"])
        for stamp, moment, value, raw in zip(stamps, times, values, raw_values, strict=True):
            x = {"t": moment, "y": value}
            score = detector.score_one(x)
            detector.learn_one(x)
            writer.writerow([stamp, raw, f"{score:.6f}"])
    return {"rows": len(stamps), "interval_seconds": interval}
