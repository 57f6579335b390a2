"""Multinomial naive Bayes with a batch path whose cost does not grow with the vocabulary."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from river import naive_bayes

from pipeline.tagging.features import BatchWords

#: marks a model's counts pickled as columns (:meth:`AlignedMultinomialNB.__getstate__`)
_COLUMNS = "ticketpulse.columns.v1"


class AlignedMultinomialNB(naive_bayes.MultinomialNB):  # type: ignore[misc]
    """River's multinomial naive Bayes, with a batch path whose cost does not grow with the vocabulary.

    The state is River's (``class_counts``, ``feature_counts``, ``class_totals``), so
    ``learn_one``, ``predict_proba_one`` and pickles are River's own. The batch methods
    are ours, for two reasons measured here:

    - River 0.26's ``predict_proba_many`` builds a frame of the **whole** vocabulary on
      every call (``_feature_log_prob``), so a batch costs more as the model learns more
      words; with word pairs that is hundreds of thousands of columns a batch.
      :meth:`predict_proba_present` reads only the counts of the batch's own features.
    - River's ``learn_many`` goes through one-hot frames and sparse products for what is
      a few additions a word (274 us a labelled ticket, docs/benchmarks.md);
      :meth:`learn_present` adds the same counts as ``learn_one`` would.

    Both take the features as the words present (each counts 1), which is what the
    tagger feeds every model. River 0.26's ``predict_proba_many`` also aligned classes
    by position (the feature-count rows in the order classes first appear among the
    features, the totals in the order they were first learned), which mixed classes up
    after a forgotten correction; here classes are always taken by name.

    One departure from River, in both paths: words the model has never seen are left
    out, as a fitted vocabulary leaves them out. River scores an unseen word under
    every class as ``alpha / (class total + alpha * vocabulary)``, so each one favours
    the class with the fewest words: a new problem's tickets, in words no one has used
    yet, were tagged with the smallest product area, confidently, and spiked it (the
    demo's false ``notifications`` alerts). On NLBSE'24, with three balanced classes,
    this costs 0.018 macro-F1 (docs/benchmarks.md).

    >>> nb = AlignedMultinomialNB()
    >>> nb.learn_present([["refund", "charged"], ["crash", "error"], ["refund"]], ["billing", "bug", "billing"])
    >>> labels, proba = nb.predict_proba_present([["refund"], ["error", "crash"]])
    >>> labels, proba.round(3).tolist()
    (['billing', 'bug'], [[0.837, 0.163], [0.269, 0.731]])
    >>> {c: round(p, 3) for c, p in nb.predict_proba_one({"error": 1, "crash": 1}).items()}  # River's own
    {'billing': 0.269, 'bug': 0.731}
    >>> nb.predict_proba_present([["error", "crash", "since", "the", "last", "release"]])[1].round(3).tolist()
    [[0.269, 0.731]]
    """

    def __getstate__(self) -> dict[str, Any]:
        # The counts as one column of features and one of counts per class: pickling a
        # Counter per feature took 0.85 s a model of 262,144 buckets (every checkpoint,
        # every 30 s, then with the event loop held), the columns 0.08 s (docs/benchmarks.md).
        state = dict(self.__dict__)
        columns: dict[Any, tuple[list[Any], list[int]]] = {}
        for feature, counts in self.feature_counts.items():
            for label, n in counts.items():
                features, numbers = columns.setdefault(label, ([], []))
                features.append(feature)
                numbers.append(n)
        state["feature_counts"] = (_COLUMNS, columns)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        saved = state["feature_counts"]
        if isinstance(saved, tuple) and saved and saved[0] == _COLUMNS:
            feature_counts: defaultdict[Any, Counter[Any]] = defaultdict(Counter)
            for label, (features, numbers) in saved[1].items():
                for feature, n in zip(features, numbers, strict=True):
                    feature_counts[feature][label] = n
            state = {**state, "feature_counts": feature_counts}
        # else: pickled before the columns, River's own defaultdict of Counters
        self.__dict__.update(state)

    def joint_log_likelihood(self, x: Mapping[str, float]) -> Any:  # River declares float; it is a dict
        # words the model never saw say nothing about the class: left out (as a fitted
        # vocabulary does), else each one favours the class with the fewest words
        return super().joint_log_likelihood({f: v for f, v in x.items() if f in self.feature_counts})

    def learn_present(self, xs: Sequence[Iterable[Any]], ys: Sequence[str]) -> None:
        """``learn_one(dict.fromkeys(x, 1), y)`` for each pair: the same counts, without River's per-word overhead."""
        feature_counts, class_counts, class_totals = self.feature_counts, self.class_counts, self.class_totals
        for x, y in zip(xs, ys, strict=True):
            class_counts[y] += 1
            n = 0
            for f in x:
                feature_counts[f][y] += 1
                n += 1
            class_totals[y] += n

    def predict_proba_present(self, xs: Sequence[Iterable[Any]]) -> tuple[list[Any], np.ndarray]:
        """The classes, and one row of probabilities per ``x`` (the words present): as ``predict_proba_one``."""
        return self.predict_proba_indexed(BatchWords(xs))

    def predict_proba_indexed(self, batch: BatchWords) -> tuple[list[Any], np.ndarray]:
        """:meth:`predict_proba_present` of a batch indexed once for every field's model."""
        n = batch.size
        # by name, not in the order they were first learned: two workers that learned the
        # same labels in another order (the training topic's partitions interleave
        # differently) must break a tie alike and add the same floats in the same order
        classes = sorted(c for c in self.class_totals if self.class_counts.get(c, 0) > 0)
        if not classes:
            return [], np.zeros((n, 0))
        # log P(word | class) for the batch's words; 0 for the words never seen, which
        # thus add nothing to a row's sum (as joint_log_likelihood leaves them out)
        counts = np.zeros((len(batch.words), len(classes)))
        known = np.zeros(len(batch.words), dtype=bool)
        feature_counts = self.feature_counts
        for j, f in enumerate(batch.words):
            per_class = feature_counts.get(f)
            if per_class:
                counts[j] = [per_class.get(c, 0) for c in classes]
                known[j] = True
        totals = np.array([self.class_totals[c] for c in classes], dtype=float)
        log_word = np.log(counts + self.alpha) - np.log(totals + self.alpha * self.n_terms)
        log_word[~known] = 0.0
        priors = np.array([self.class_counts[c] for c in classes], dtype=float)
        jll = np.tile(np.log(priors / priors.sum()), (n, 1))
        if batch.filled.any():
            # each row: the sum over its words (a row without words keeps its prior)
            jll[batch.filled] += np.add.reduceat(log_word[batch.cols], batch.starts[batch.filled], axis=0)
        jll -= jll.max(axis=1, keepdims=True)
        proba = np.exp(jll)
        proba /= proba.sum(axis=1, keepdims=True)
        return classes, proba


def _default_model() -> Any:
    # Chosen on NLBSE'24 (docs/benchmarks.md): multinomial naive Bayes on the words
    # present in the cleaned text, 0.669 macro-F1 (0.625 on counts); ComplementNB scored
    # about as well but ran at 68 issues/s; online logistic regression 0.642.
    return AlignedMultinomialNB(alpha=1.0)
