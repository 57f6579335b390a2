"""Score detectors on the Numenta Anomaly Benchmark, with NAB's published method.

    .venv/bin/python benchmarks/nab_eval.py ../shared/data/nab [--detector NAME ...] [--param NAME=VALUE ...]

``--param`` sets a constructor argument of ``surprise`` (``--param range_margin=None``),
for the ablations in docs/benchmarks.md.

For each detector: run it over every file (row by row, seeing only the past: the same
code as ``ticketpulse detect``), then, for each profile, choose the one threshold that
maximises the total score over the corpus and print the normalised score (null
detector 0, perfect 100). The method, from ../shared/data/README.md:

- a labelled window containing detections earns ``A_TP * sigma(y) / sigma(-1)`` for its
  earliest detection, ``y = -(R - i + 1) / W``; a window with none costs ``A_FN``;
- a detection outside every window costs ``A_FP`` if no window came before it, else
  ``-A_FP * sigma(y)`` with ``y = |R_prev - i| / (W_prev - 1)`` (cheaper right after a window);
- ``sigma(y) = 2 / (1 + exp(5y)) - 1``; the first ``min(floor(0.15 N), 750)`` rows are not scored.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detectors.series import parse_timestamp, read_series

PROFILES = {
    "standard": (1.0, 0.11, 1.0),
    "reward_low_FP_rate": (1.0, 0.22, 1.0),
    "reward_low_FN_rate": (1.0, 0.11, 2.0),
}


def sigma(y: np.ndarray | float) -> np.ndarray | float:
    return 2.0 / (1.0 + np.exp(5.0 * np.asarray(y))) - 1.0


@dataclass
class LabelledFile:
    name: str
    timestamps: list[str]
    values: list[float]
    windows: list[tuple[int, int]]  # first and last row index of each window

    @property
    def probation(self) -> int:
        return min(math.floor(0.15 * len(self.values)), 750)


def load_corpus(root: Path) -> list[LabelledFile]:
    labels = json.loads((root / "labels" / "combined_windows.json").read_text())
    files = []
    for name in sorted(labels):
        # read as ``ticketpulse detect`` reads (repeated and out-of-order rows kept, in file order)
        series = read_series(root / "data" / name)
        windows = []
        for start, end in labels[name]:
            a, b = parse_timestamp(start), parse_timestamp(end)
            idx = [i for i, m in enumerate(series.times) if a <= m <= b]
            windows.append((idx[0], idx[-1]))
        files.append(LabelledFile(name, series.stamps, series.values, windows))
    return files


def score_file(f: LabelledFile, detections: np.ndarray, profile: tuple[float, float, float]) -> float:
    """Raw NAB score of one file for the rows in ``detections`` (sorted indices)."""
    a_tp, a_fp, a_fn = profile
    detections = detections[detections >= f.probation]
    total = 0.0
    in_window = np.zeros(detections.shape, dtype=bool)
    for first, last in f.windows:
        width = last - first + 1
        hits = detections[(detections >= first) & (detections <= last)]
        in_window |= (detections >= first) & (detections <= last)
        if hits.size:
            y = -(last - hits[0] + 1) / width
            total += a_tp * float(sigma(y)) / float(sigma(-1.0))
        else:
            total -= a_fn
    for i in detections[~in_window]:
        previous = [(first, last) for first, last in f.windows if last < i]
        if not previous:
            total -= a_fp
        else:
            first, last = previous[-1]
            width = last - first + 1
            y = abs(last - i) / max(width - 1, 1)
            total += a_fp * float(sigma(y))
    return total


def normalised(
    files: list[LabelledFile], scores: list[np.ndarray], profile: tuple[float, float, float], thresholds: np.ndarray
) -> tuple[float, float]:
    """Best normalised score over ``thresholds``, and the threshold that gives it."""
    n_windows = sum(len(f.windows) for f in files)
    null, perfect = -profile[2] * n_windows, profile[0] * n_windows
    best = (-math.inf, 1.0)
    for t in thresholds:
        raw = sum(score_file(f, np.flatnonzero(s >= t), profile) for f, s in zip(files, scores, strict=True))
        norm = 100.0 * (raw - null) / (perfect - null)
        if norm > best[0]:
            best = (norm, float(t))
    return best


def candidate_thresholds(scores: list[np.ndarray]) -> np.ndarray:
    allv = np.concatenate(scores)
    qs = np.quantile(allv, np.concatenate([np.linspace(0.5, 0.99, 50), 1 - np.logspace(-2, -5, 60)]))
    # above the largest score: the null detector, so no detector scores below 0
    return np.unique(np.concatenate([qs, np.linspace(0.05, 1.0, 96), [allv.max() + 1.0]]))


def make_detector(name: str, params: dict[str, object] | None = None):
    from detectors import RollingZScore, SurpriseDetector

    if name == "surprise":
        return SurpriseDetector(**(params or {}))
    if name == "zscore":
        return RollingZScore()
    if name.startswith("river-"):
        return _RiverAdapter(name.removeprefix("river-"))
    raise SystemExit(f"unknown detector {name!r}")


class _RiverAdapter:
    """River's own anomaly detectors on the same rows, scores mapped to [0, 1]."""

    def __init__(self, kind: str) -> None:
        from river import anomaly, preprocessing, stats

        self.kind = kind
        if kind == "hst":
            self.model = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=42, window_size=250)
        elif kind == "gaussian":
            self.model = anomaly.GaussianScorer(window_size=500, grace_period=100)
        elif kind == "pad":
            from river import linear_model, time_series

            self.model = anomaly.PredictiveAnomalyDetection(
                time_series.SNARIMAX(
                    p=6, d=0, q=0, regressor=preprocessing.StandardScaler() | linear_model.LinearRegression()
                ),
                horizon=1,
                n_std=3.0,
                warmup_period=100,
            )
        else:
            raise SystemExit(f"unknown river detector {kind!r}")
        self._max = stats.Max()

    def score_one(self, x: dict) -> float:
        y = float(x["y"])
        if self.kind == "gaussian":
            return float(self.model.score_one(None, y))
        if self.kind == "pad":
            return float(self.model.score_one(None, y))
        return float(self.model.score_one({"y": y}))

    def learn_one(self, x: dict) -> None:
        y = float(x["y"])
        if self.kind in ("gaussian", "pad"):
            self.model.learn_one(None, y)
        else:
            self.model.learn_one({"y": y})


def run_detector(name: str, f: LabelledFile, params: dict[str, object] | None = None) -> np.ndarray:
    from detectors.series import score_series

    return np.array(score_series(make_detector(name, params), f.timestamps, f.values))


def parse_param(text: str) -> tuple[str, object]:
    """``name=value``, the value read as a Python literal (``0.01``, ``None``, ``(1, 3)``)."""
    import ast

    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a Python literal") from exc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the NAB folder (data/, labels/)")
    parser.add_argument(
        "--detector", action="append", help="surprise (default), zscore, river-hst, river-gaussian, river-pad"
    )
    parser.add_argument("--param", action="append", type=parse_param, default=[], help="NAME=VALUE for surprise")
    args = parser.parse_args()
    params = dict(args.param)
    files = load_corpus(args.data)
    print(
        f"corpus: {len(files)} files, {sum(len(f.windows) for f in files)} windows, "
        f"{sum(len(f.values) for f in files)} rows"
    )
    for name in args.detector or ["surprise"]:
        t0 = time.perf_counter()
        scores = []
        for k, f in enumerate(files, 1):
            scores.append(run_detector(name, f, params if name == "surprise" else None))
            print(f"\r  {name}: {k}/{len(files)} files", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        rows = sum(len(s) for s in scores)
        seconds = time.perf_counter() - t0
        thresholds = candidate_thresholds(scores)
        results = {p: normalised(files, scores, prof, thresholds) for p, prof in PROFILES.items()}
        print(
            f"{name:>16}: "
            + "  ".join(f"{p}={v:.1f} (t={t:.4f})" for p, (v, t) in results.items())
            + f"  [{rows / seconds:,.0f} rows/s]"
        )


if __name__ == "__main__":
    main()
