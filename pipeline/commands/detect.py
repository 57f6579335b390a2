"""``ticketpulse detect``: score a ``timestamp,value`` series row by row (NAB's format)."""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from detectors import DETECTION_SCORE, SurpriseDetector
from detectors.series import SeriesError, read_series

__all__ = ["DetectError", "detect_file"]


class DetectError(SeriesError):
    """The input is not a ``timestamp,value`` series; the message names the line."""


def detect_file(
    source: Path,
    output: Path,
    threshold: float = DETECTION_SCORE,
    plot: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``source`` into ``output`` (``timestamp,value,anomaly_score``); return a summary.

    Rows are scored in file order, whatever their timestamps: repeated timestamps, gaps
    and rows out of order are counted in ``irregular`` and one warning line on standard
    error says how many and where (``warning`` in the summary); only a file that is not a series is refused.

    The summary counts the rows scored at or above ``threshold`` (detections) and names the
    first; with ``plot``, the series and its scores are drawn there (PNG), detections marked.
    """
    try:
        series = read_series(source)
    except SeriesError as exc:
        raise DetectError(str(exc)) from None
    stamps, times, values, raw_values = series.stamps, series.times, series.values, series.raw_values
    interval = series.interval
    detector = SurpriseDetector()
    scores: list[float] = []
    rows = zip(stamps, times, values, raw_values, strict=True)
    with output.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["timestamp", "value", "anomaly_score"])
        for stamp, moment, value, raw in tqdm(
            rows, total=len(stamps), unit="row", disable=not progress, file=sys.stderr, mininterval=0.5
        ):
            x = {"t": moment, "y": value}
            score = detector.score_one(x)
            detector.learn_one(x)
            scores.append(score)
            writer.writerow([stamp, raw, f"{score:.6f}"])
    detections = [i for i, score in enumerate(scores) if score >= threshold]
    if plot is not None:
        _plot(source.name, times, values, scores, detections, threshold, plot)
    return {
        "rows": len(stamps),
        "irregular": {"repeated": len(series.repeated), "backwards": len(series.backwards), "gaps": len(series.gaps)},
        "interval_seconds": interval,
        "threshold": threshold,
        "detections": len(detections),
        "first_detection": stamps[detections[0]] if detections else None,
        "plot": str(plot) if plot is not None else None,
        "warning": series.warning(str(source)),
    }


def _plot(
    title: str,
    times: list[float],
    values: list[float],
    scores: list[float],
    detections: list[int],
    threshold: float,
    path: Path,
) -> None:
    """The series over its anomaly score, each detection marked on both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    moments = [datetime.fromtimestamp(t, UTC) for t in times]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6), sharex=True, height_ratios=(3, 1))
    top.plot(moments, values, linewidth=0.8, color="tab:blue")
    top.scatter(
        [moments[i] for i in detections],
        [values[i] for i in detections],
        color="red",
        s=18,
        zorder=3,
        label=f"{len(detections)} detections (score >= {threshold:g})",
    )
    top.set_title(f"{title}: value, and the anomaly score of each row from the rows before it")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.plot(moments, scores, linewidth=0.8, color="tab:red")
    bottom.axhline(threshold, color="black", linewidth=0.6, linestyle="--")
    bottom.set_ylim(0, 1)
    bottom.set_ylabel("anomaly score")
    bottom.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
