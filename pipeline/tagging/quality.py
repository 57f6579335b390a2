"""How good the tags are: prequential accuracy and macro-F1, and the calibrated confidence of a prediction."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson


@dataclass
class Prequential:
    """Accuracy and macro-F1 over the last ``window`` labels, scored before learning."""

    window: int = 1000
    pairs: deque[tuple[str, str | None]] = field(default_factory=deque)
    labelled: int = 0

    def add(self, truth: str, predicted: str | None) -> None:
        self.pairs.append((truth, predicted))
        self.labelled += 1
        if len(self.pairs) > self.window:
            self.pairs.popleft()

    def accuracy(self) -> float:
        return sum(t == p for t, p in self.pairs) / len(self.pairs) if self.pairs else 0.0

    def macro_f1(self) -> float:
        """Mean F1 over the labels seen in the window (as truth or as prediction)."""
        labels = {t for t, _ in self.pairs} | {p for _, p in self.pairs if p is not None}
        if not labels:
            return 0.0
        tp: Counter[str] = Counter()
        fp: Counter[str] = Counter()
        fn: Counter[str] = Counter()
        for t, p in self.pairs:
            if t == p:
                tp[t] += 1
            else:
                fn[t] += 1
                if p is not None:
                    fp[p] += 1
        f1s = [2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]) if tp[c] else 0.0 for c in labels]
        return sum(f1s) / len(f1s)

    def summary(self) -> dict[str, float]:
        return {"accuracy": round(self.accuracy(), 4), "macro_f1": round(self.macro_f1(), 4), "labelled": self.labelled}


#: Edges of the margin bins a prediction's confidence is read from (:class:`Calibration`): the
#: margin is how many nats the most likely class leads the second by. On NLBSE'24 the tagger's
#: accuracy rises from 0.41 under 0.5 nats to 0.97 over 64 (docs/benchmarks.md).
MARGIN_EDGES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)

#: How many outcomes the model's own probability counts as in a bin's confidence: a bin
#: that has seen nothing answers the model's probability, one that has seen many its record.
PRIOR_OUTCOMES = 2


@dataclass
class Calibration:
    """How often a field's predictions were right, by the margin they were made with.

    Naive Bayes is overconfident: on NLBSE'24 four predictions in five have a probability
    over 0.9 and are right three times in four. A prediction's confidence is instead the
    share of earlier predictions with a margin in the same bin (:data:`MARGIN_EDGES`) that
    its label then confirmed, with the model's own probability counted as
    :data:`PRIOR_OUTCOMES` outcomes: ``(right + 2 * probability) / (seen + 2)``, the model's
    probability while a bin has seen nothing. Every label is counted once, against the
    prediction its ticket carries (made before the label was learned), so the counts are
    sums that do not depend on the order labels arrive in: workers that learned the same
    labels give the same confidence.

    >>> c = Calibration()
    >>> for right in [True] * 6 + [False] * 4:
    ...     c.add(5, right)  # margin 16 to 32 nats
    >>> c.confidence(np.array([5, 0]), np.array([0.99, 0.55])).round(3).tolist()  # bin 0: nothing seen
    [0.665, 0.55]
    """

    seen: list[int] = field(default_factory=lambda: [0] * (len(MARGIN_EDGES) + 1))
    right: list[int] = field(default_factory=lambda: [0] * (len(MARGIN_EDGES) + 1))

    def add(self, margin_bin: int, right: bool) -> None:
        self.seen[margin_bin] += 1
        self.right[margin_bin] += int(right)

    def remove(self, margin_bin: int, right: bool) -> None:
        """Take back an outcome (a label corrected since); never below zero."""
        self.seen[margin_bin] = max(0, self.seen[margin_bin] - 1)
        self.right[margin_bin] = max(0, self.right[margin_bin] - int(right))

    def confidence(self, bins: np.ndarray, probability: np.ndarray) -> np.ndarray:
        """The confidence of predictions made with these margin bins and model probabilities."""
        right, seen = np.asarray(self.right)[bins], np.asarray(self.seen)[bins]
        return (right + PRIOR_OUTCOMES * probability) / (seen + PRIOR_OUTCOMES)

    def confidence_one(self, margin_bin: int, probability: float) -> float:
        """:meth:`confidence` of one prediction (the same arithmetic, without arrays)."""
        return (self.right[margin_bin] + PRIOR_OUTCOMES * probability) / (self.seen[margin_bin] + PRIOR_OUTCOMES)


def margin_bins(proba: np.ndarray) -> np.ndarray:
    """The margin bin of each row of class probabilities (nats the first leads the second by).

    >>> margin_bins(np.array([[0.5, 0.3, 0.2], [0.999, 0.001, 0.0], [1.0, 0.0, 0.0]])).tolist()
    [1, 4, 8]
    """
    if proba.shape[1] < 2:
        return np.full(proba.shape[0], len(MARGIN_EDGES), dtype=np.intp)
    top = -np.partition(-proba, 1, axis=1)[:, :2]
    with np.errstate(divide="ignore"):
        margins = np.log(top[:, 0]) - np.log(top[:, 1])
    return np.searchsorted(MARGIN_EDGES, margins, side="right")


def predicted_labels(
    prediction: Mapping[str, Mapping[str, Any]], bins: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The labels of a prediction (:meth:`TicketTagger.predict_many`), without their confidence;
    with ``bins`` (:meth:`TicketTagger.predict_binned`), each label with its margin bin.

    What a ticket carries to the label join and the training topic: scoring a label
    against the prediction made before it was learned (prequential, and
    :class:`Calibration`) needs the label and its margin bin alone. A third of the bytes
    to decode in every worker, and the kept texts hold no dict of floats.

    >>> predicted_labels({"case_type": {"label": "bug", "confidence": 0.93, "uncertain": False}})
    {'case_type': 'bug'}
    >>> predicted_labels({"case_type": {"label": "bug", "confidence": 0.93, "uncertain": False}}, {"case_type": 6})
    {'case_type': ['bug', 6]}
    """
    if bins is None:
        return {name: field["label"] for name, field in prediction.items()}
    return {
        name: field["label"] if bins.get(name) is None else [field["label"], bins[name]]
        for name, field in prediction.items()
    }


def _first_prediction(predicted: Any) -> Mapping[str, Any]:
    """An example's first prediction as a mapping of fields: the label join keeps it as
    JSON text, and a worker of an earlier version joined it to a label so (2026-12-01)."""
    if isinstance(predicted, str):
        try:
            predicted = orjson.loads(predicted)
        except orjson.JSONDecodeError:  # scored as not predicted; the label is still learned
            predicted = None
    return predicted if isinstance(predicted, Mapping) else {}


def _label_of(prediction: Any) -> Any:
    """The label of one field's prediction: a label (:func:`predicted_labels`), a label and
    its margin bin, or the whole prediction as examples written before 2026-11-30 (stop 16)
    carried it."""
    if isinstance(prediction, list):
        return prediction[0]
    return prediction.get("label") if isinstance(prediction, Mapping) else prediction


def _bin_of(prediction: Any) -> int | None:
    """The margin bin a prediction was made with, if it carries one."""
    return int(prediction[1]) if isinstance(prediction, list) and prediction[1] is not None else None
