"""Multinomial naive Bayes with a batch path whose cost does not grow with the vocabulary."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from river import naive_bayes

from pipeline.tagging.features import BatchWords

#: marks a model's counts pickled as columns (:meth:`AlignedMultinomialNB.__getstate__`)
_COLUMNS = "ticketpulse.columns.v1"

logger = logging.getLogger(__name__)

#: Batches of fewer rows are predicted from the dicts, word by word, as before the dense counts,
#: and learned into the dense counts word by word: the arrays' fixed costs (about 100 us a field
#: and a call) exceed the loop's for a ticket or two (the replay's, one at a time).
SMALL_BATCH = 4

#: examples learned and not yet added to the dense counts beyond which they are added (by a
#: process that predicts one ticket at a time, whose dense counts are not read otherwise)
_PENDING_LIMIT = 1024

#: a model's attributes derived from its counts, never pickled
_DERIVED = frozenset({"_dense", "_batch_rows"})

#: an empty Counter, without running ``Counter.__init__`` (nothing to count yet)
_new_counter = Counter.__new__

#: the counts of a feature the model does not hold
_NO_COUNTS: Mapping[Any, float] = {}


class DenseCounts:
    """A model's ``log(count + alpha)`` as a dense (features x classes) array, for the batch path.

    Derived from the model's dicts (``feature_counts``, which stay what is learned, pickled
    and forgotten) and kept in step with them cheaply: the entries a batch learned are read
    again from the dicts when a prediction needs the array (:meth:`apply_pending`), rows
    forgotten likewise (:meth:`refresh`). Only the logs are held, not the counts themselves
    (which were as many bytes again, 145 MB for a 64-class field): the few counts a batch
    needs come from the dicts. Rows grow by doubling as new features arrive, but never
    past ``max_rows`` (the model's feature buckets: it has no more features); columns grow
    by half as new classes arrive. Rows are in the order features were first seen, columns
    in the order classes were: a prediction picks its classes' columns.

    ``logs`` holds ``log(count + alpha)`` for a feature the model knows (its ``Counter`` is not
    empty) and 0 for one it does not, which thus adds nothing to a ticket's sum, as
    :meth:`AlignedMultinomialNB.joint_log_likelihood` leaves unseen words out.

    >>> dense = DenseCounts(alpha=1.0)
    >>> dense.pending.append((["refund", "charged"], "billing"))
    >>> dense.apply_pending({"refund": Counter(billing=1), "charged": Counter(billing=1)})
    >>> dense.logs[: len(dense.row_of), : len(dense.col_of)].round(4).tolist(), dense.col_sums[:1].tolist()
    ([[0.6931], [0.6931]], [2.0])
    """

    def __init__(self, alpha: float, rows: int = 1024, cols: int = 4, max_rows: int | None = None) -> None:
        self.alpha = alpha
        self.max_rows = max_rows
        rows = rows if max_rows is None else max(1, min(rows, max_rows))
        self.row_of: dict[Any, int] = {}
        #: each row's feature (``row_of`` the other way)
        self.features: list[Any] = []
        self.col_of: dict[Any, int] = {}
        #: each column's class (``col_of`` the other way)
        self.labels: list[Any] = []
        self.logs = np.zeros((rows, cols))
        self.known = np.zeros(rows, dtype=bool)
        #: each column's sum of counts: a model's ``class_totals`` when the two are in step (:meth:`agrees_with`)
        self.col_sums = np.zeros(cols)
        #: (features, class) learned by the model since the array was last brought up to date
        self.pending: list[tuple[Sequence[Any], Any]] = []
        #: every count is a whole number, so :meth:`counts_from_logs` reads them back exactly
        #: (the tagger's always are: words present, each counts 1); else they are read from the dicts
        self.integral = True

    def counts_from_logs(self, logs: np.ndarray) -> np.ndarray:
        """The counts whose ``log(count + alpha)`` these are (of known features), when :attr:`integral`.

        Exact: ``exp`` gives ``count + alpha`` back within a few units in the last place,
        far less than the 0.5 that rounding to the whole count forgives (below 2**40).

        >>> dense = DenseCounts(alpha=1.0)
        >>> dense.counts_from_logs(np.log(np.array([0.0, 1.0, 7.0, 123456789.0]) + 1.0)).tolist()
        [0.0, 1.0, 7.0, 123456789.0]
        """
        return np.rint(np.exp(logs) - self.alpha)

    @classmethod
    def of(cls, model: naive_bayes.MultinomialNB) -> DenseCounts:
        """The logs of a model's dicts, read whole (a model loaded, or changed behind our back)."""
        feature_counts = model.feature_counts
        max_rows = getattr(model, "max_features", None)
        n_rows = len(feature_counts)
        dense = cls(model.alpha, rows=max(1024, n_rows), cols=max(4, len(model.class_totals)), max_rows=max_rows)
        for label in model.class_totals:
            dense.col(label)
        dense.row_of = dict(zip(feature_counts, range(n_rows), strict=True))
        dense.features = list(feature_counts)
        dense._room(n_rows)
        rows: list[int] = []
        cols: list[int] = []
        values: list[float] = []
        for row, per_class in enumerate(feature_counts.values()):
            for label, n in per_class.items():
                rows.append(row)
                cols.append(dense.col(label))
                values.append(n)
        known = np.fromiter((bool(per_class) for per_class in feature_counts.values()), bool, n_rows)
        dense.known[:n_rows] = known
        in_use = len(dense.col_of)
        dense.logs[:n_rows, :in_use] = np.where(known[:, None], np.log(dense.alpha), 0.0)
        at = (np.array(rows, dtype=np.intp), np.array(cols, dtype=np.intp))
        counts = np.array(values, dtype=float)
        dense.logs[at] = np.log(counts + dense.alpha)  # each (row, col) once: a dict's
        dense.col_sums += np.bincount(at[1], weights=counts, minlength=len(dense.col_sums))
        dense.integral = bool(np.array_equal(counts, np.rint(counts)))
        return dense

    def row(self, feature: Any) -> int:
        """The row of a feature, given it if new (its logs are set when it is learned: :meth:`add`)."""
        found = self.row_of.get(feature)
        if found is None:
            found = self.row_of[feature] = len(self.features)
            self.features.append(feature)
        return found

    def col(self, label: Any) -> int:
        """The column of a class, made (zeros) if new."""
        found = self.col_of.get(label)
        if found is None:
            found = self.col_of[label] = len(self.labels)
            self.labels.append(label)
            cols = self.logs.shape[1]
            if found >= cols:
                # by half, not doubled: a column is a row's length of float64 (2 MB at 262,144 rows), and
                # the forum's 134 product areas took 256 columns doubled (537 MB), 135 so (283 MB)
                self._grow(self.logs.shape[0], cols + max(4, cols // 2))
            # the rows' logs are kept for the columns in use (:meth:`add`): a known feature's count of 0
            self.logs[:, found] = np.where(self.known, np.log(self.alpha), 0.0)
        return found

    def _room(self, needed: int) -> None:
        """Rows for ``needed`` features: doubled, but never past ``max_rows`` (no model holds more)."""
        rows = self.logs.shape[0]
        if needed <= rows:
            return
        grown = max(needed, 2 * rows)
        if self.max_rows is not None:
            grown = max(needed, min(grown, self.max_rows))
        self._grow(grown, self.logs.shape[1])

    def _grow(self, rows: int, cols: int) -> None:
        """Room for ``rows`` features and ``cols`` classes (new columns' logs are set as they come into use)."""
        old_rows, old_cols = self.logs.shape
        if cols == old_cols:
            # more rows of as many columns: the same bytes, followed by zeros; in place when nothing
            # else holds the array (no copy: the old and the new array are never both in memory)
            try:
                self.logs.resize((rows, cols))
            except ValueError:  # referenced elsewhere (a debugger, a caller): copied
                logs = np.zeros((rows, cols))
                logs[:old_rows] = self.logs
                self.logs = logs
        else:
            logs = np.zeros((rows, cols))
            logs[:old_rows, :old_cols] = self.logs
            self.logs = logs
            col_sums = np.zeros(cols)
            col_sums[:old_cols] = self.col_sums
            self.col_sums = col_sums
        known = np.zeros(rows, dtype=bool)
        known[:old_rows] = self.known
        self.known = known

    def add(
        self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, feature_counts: Mapping[Any, Mapping[Any, float]]
    ) -> None:
        """``values`` were added to these (row, col) counts in ``feature_counts``: their logs follow.

        The new counts are those the logs held plus ``values`` (whole numbers: :attr:`integral`),
        else read from ``feature_counts`` (a Python look-up a (row, col): 2 s more over
        60,000 forum questions, about 12 % of their tagging).
        """
        if not len(rows):
            return
        self._room(len(self.row_of))
        n_cols = self.logs.shape[1]
        self.col_sums += np.bincount(cols, weights=values, minlength=n_cols)
        # a (row, col) learned twice in a batch: once, with all it was added
        pairs, back = np.unique(rows * n_cols + cols, return_inverse=True)
        pair_rows, pair_cols = np.divmod(pairs, n_cols)
        self.integral = self.integral and bool(np.array_equal(values, np.rint(values)))
        if self.integral:
            held = np.where(self.known[pair_rows], self.counts_from_logs(self.logs[pair_rows, pair_cols]), 0.0)
            counts = held + np.bincount(back.ravel(), weights=values, minlength=len(pairs))
        else:
            features, labels = self.features, self.labels
            found = (
                feature_counts.get(features[r], _NO_COUNTS).get(labels[c], 0)
                for r, c in zip(pair_rows.tolist(), pair_cols.tolist(), strict=True)
            )
            counts = np.fromiter(found, float, len(pairs))
        touched = pair_rows[np.r_[True, pair_rows[1:] != pair_rows[:-1]]]
        new = touched[~self.known[touched]]
        if len(new):  # known from now on: its other classes' count is 0, not nothing
            self.known[new] = True
            self.logs[new, : len(self.col_of)] = np.log(self.alpha)
        self.logs[pair_rows, pair_cols] = np.log(counts + self.alpha)

    def apply_pending(self, feature_counts: Mapping[Any, Mapping[Any, float]]) -> None:
        """Bring the array up to date with what was learned since the last time (into ``feature_counts``)."""
        if not self.pending:
            return
        features: list[Any] = []
        cols: list[int] = []
        for learned, label in self.pending:
            features.extend(learned)
            cols.extend([self.col(label)] * len(learned))
        self.pending.clear()
        row = self.row
        rows = np.array([row(f) for f in features], dtype=np.intp)
        self.add(rows, np.array(cols, dtype=np.intp), np.ones(len(rows)), feature_counts)

    def refresh(
        self,
        features: Iterable[Any],
        feature_counts: Mapping[Any, Mapping[Any, float]],
        totals: Mapping[Any, tuple[float, float]],
    ) -> None:
        """Read these features' rows again from the dicts (counts taken back by a correction, or added).

        ``totals``: each class total the change moved, (before, after). A column that was in
        step with its total before is in step after; one that was not stays out of step
        (:meth:`agrees_with` tells).
        """
        self.apply_pending(feature_counts)  # before: their sums are the totals' "before"
        for feature in features:
            row = self.row_of.get(feature)
            if row is None:  # never learned: nothing to take back
                continue
            per_class = feature_counts.get(feature, {})
            cols = [self.col(label) for label in per_class]
            fresh = np.zeros(self.logs.shape[1])
            fresh[cols] = list(per_class.values())
            self.integral = self.integral and bool(np.array_equal(fresh, np.rint(fresh)))
            self.known[row] = bool(per_class)
            self.logs[row] = np.log(fresh + self.alpha) if per_class else 0.0
        for label, (before, after) in totals.items():
            col = self.col(label)
            if self.col_sums[col] == before:
                self.col_sums[col] = after

    def agrees_with(self, model: naive_bayes.MultinomialNB) -> bool:
        """Whether the array's column sums are the model's class totals and it has a row for each of its features.

        A cheap check (a few numbers a class) that no count changed without the array
        hearing of it; when it fails the array is read again whole.
        """
        if len(self.row_of) != len(model.feature_counts):
            return False
        totals = model.class_totals
        for label, col in self.col_of.items():
            if self.col_sums[col] != totals.get(label, 0):
                return False
        return all(label in self.col_of or not total for label, total in totals.items())


class AlignedMultinomialNB(naive_bayes.MultinomialNB):  # type: ignore[misc]
    """River's multinomial naive Bayes, with a batch path whose cost does not grow with the vocabulary.

    The state is River's (``class_counts``, ``feature_counts``, ``class_totals``), so
    ``learn_one``, ``predict_proba_one`` and pickles are River's own. The batch methods
    are ours, for two reasons measured here:

    - River 0.26's ``predict_proba_many`` builds a frame of the **whole** vocabulary on
      every call (``_feature_log_prob``), so a batch costs more as the model learns more
      words; with word pairs that is hundreds of thousands of columns a batch.
      :meth:`predict_proba_present` reads only the rows of the batch's own features, from
      a dense (features x classes) array of ``log(count + alpha)`` kept beside the dicts
      (:class:`DenseCounts`): a batch is one sparse (tickets x words) by dense product a
      field. Reading the dicts word by word and class by class instead cost 0.28 ms a
      ticket of the backtest on real forum questions (issue #27).
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

    #: the logs of the counts as a dense array for the batch path (:class:`DenseCounts`): derived, never pickled
    _dense: DenseCounts | None = None
    #: the most features the model can hold (its tagger's feature buckets; ``None``: no bound),
    #: which bounds the dense array's rows
    max_features: int | None = None
    #: the last batch predicted, the dense counts it was read from, and its words' rows in them (-1: none yet)
    _batch_rows: tuple[BatchWords, DenseCounts, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The counts as one column of features and one of counts per class: pickling a
        # Counter per feature took 0.85 s a model of 262,144 buckets (every checkpoint,
        # every 30 s, then with the event loop held), the columns 0.08 s (docs/benchmarks.md).
        state = {k: v for k, v in self.__dict__.items() if k not in _DERIVED}
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
        # the dense counts are made again from these at the first prediction
        self.__dict__.update({k: v for k, v in state.items() if k not in _DERIVED})

    def joint_log_likelihood(self, x: Mapping[str, float]) -> Any:  # River declares float; it is a dict
        # words the model never saw say nothing about the class: left out (as a fitted
        # vocabulary does), else each one favours the class with the fewest words
        return super().joint_log_likelihood({f: v for f, v in x.items() if f in self.feature_counts})

    def learn_one(self, x: Mapping[Any, float], y: Any) -> None:
        """River's ``learn_one``; the dense counts hear of it."""
        total = self.class_totals.get(y, 0)
        super().learn_one(x, y)
        if self._dense is not None:
            if any(v != 1 for v in x.values()):  # counts, not presence: read the rows again
                self._dense.refresh(list(x), self.feature_counts, {y: (total, self.class_totals[y])})
            else:
                self._dense.pending.append((list(x), y))

    def learn_present(self, xs: Sequence[Iterable[Any]], ys: Sequence[str]) -> None:
        """``learn_one(dict.fromkeys(x, 1), y)`` for each pair: the same counts, without River's per-word overhead."""
        pending = self._dense.pending if self._dense is not None else None
        for x, y in zip(xs, ys, strict=True):
            features = self._count_present(x, y)
            if pending is not None:
                pending.append((features, y))
        if pending is not None and len(pending) >= _PENDING_LIMIT and self._dense is not None:
            self._dense.apply_pending(self.feature_counts)

    def _count_present(self, x: Iterable[Any], y: Any) -> list[Any]:
        """Add one example (its features present) to the dicts; its features."""
        features = list(x)
        self.class_counts[y] += 1
        feature_counts = self.feature_counts
        known = feature_counts.get
        for f in features:
            per_class = known(f)
            if per_class is None:
                # a Counter without Counter.__init__ (0.57 us, as River's defaultdict makes it): one a new word
                per_class = feature_counts[f] = _new_counter(Counter)
                per_class[y] = 1
            else:
                per_class[y] = per_class.get(y, 0) + 1
        self.class_totals[y] += len(features)
        return features

    def learn_indexed(self, batch: BatchWords, xs: Sequence[Iterable[Any]], labels: Sequence[Any]) -> None:
        """:meth:`learn_present` of the rows of ``batch`` (made of ``xs``) with a label (``None``: not learned).

        The dense counts are added to from the batch's index at once, not word by word.
        """
        learned = [i for i, y in enumerate(labels) if y is not None]
        if len(learned) < SMALL_BATCH:  # word by word costs less than the arrays' fixed costs
            self.learn_present([xs[i] for i in learned], [labels[i] for i in learned])
            return
        for i in learned:
            self._count_present(xs[i], labels[i])
        dense = self._dense
        if dense is None:  # the dense counts, when made, will read them from the dicts
            return
        lengths = np.diff(batch.matrix.indptr)
        is_learned = np.zeros(batch.size, dtype=bool)
        is_learned[learned] = True
        nz_row = np.repeat(np.arange(batch.size), lengths)
        keep = is_learned[nz_row]
        words, at = batch.matrix.indices[keep], nz_row[keep]
        row_of = dense.row_of
        stash = self._batch_rows
        if stash is not None and stash[0] is batch and stash[1] is dense:  # the rows the prediction looked up
            word_rows = stash[2]
        else:
            word_rows = np.fromiter((row_of.get(f, -1) for f in batch.words), np.intp, len(batch.words))
        needed = np.zeros(len(batch.words), dtype=bool)
        needed[words] = True
        new = np.flatnonzero(needed & (word_rows < 0))
        word_rows[new] = [dense.row(batch.words[w]) for w in new.tolist()]
        self._batch_rows = (batch, dense, word_rows)
        cols = np.full(batch.size, -1, dtype=np.intp)
        cols[learned] = [dense.col(labels[i]) for i in learned]
        dense.apply_pending(self.feature_counts)
        dense.add(word_rows[words], cols[at], np.ones(len(words)), self.feature_counts)

    def forgot(
        self,
        features: Iterable[Any],
        classes_removed: bool,
        totals: Mapping[Any, tuple[float, float]] | None = None,
    ) -> None:
        """Counts of these features were taken back from the dicts (a correction): the dense counts follow.

        ``classes_removed``: a class lost its last example, and every feature's count of
        it went. ``totals``: each class total the correction moved, (before, after). Either
        way, and without ``totals``, the dense counts are read again whole at the next prediction.
        """
        if self._dense is None:
            return
        if classes_removed or totals is None:
            self._dense = None
        else:
            self._dense.refresh(features, self.feature_counts, totals)

    def dense_counts(self) -> DenseCounts:
        """The counts as a dense array, up to date with everything learned and forgotten."""
        dense = self._dense
        if dense is not None:
            dense.apply_pending(self.feature_counts)
            if not dense.agrees_with(self):
                logger.warning("naive Bayes dense counts out of step with the model's dicts: read again whole")
                dense = None
        if dense is None:
            dense = self._dense = DenseCounts.of(self)
        return dense

    def predict_proba_present(self, xs: Sequence[Iterable[Any]]) -> tuple[list[Any], np.ndarray]:
        """The classes, and one row of probabilities per ``x`` (the words present): as ``predict_proba_one``."""
        return self.predict_proba_indexed(BatchWords(xs))

    def predict_proba_indexed(self, batch: BatchWords) -> tuple[list[Any], np.ndarray]:
        """:meth:`predict_proba_present` of a batch indexed once for every field's model."""
        if batch.size < SMALL_BATCH:
            return self._predict_proba_words(batch)
        classes, proba, _ = self.predict_proba_learning(batch, None)
        return classes, proba

    def _predict_proba_words(self, batch: BatchWords) -> tuple[list[Any], np.ndarray]:
        """:meth:`predict_proba_indexed` from the dicts, word by word (the loop before the dense counts)."""
        n = batch.size
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

    def predict_proba_learning(
        self, batch: BatchWords, labels: Sequence[Any] | None
    ) -> tuple[list[Any], np.ndarray, np.ndarray]:
        """Each row's probabilities as the model will stand once the rows before it have been learned.

        ``labels[j]`` is the class row ``j`` will be learned as (its words present, as
        :meth:`learn_present`), ``None`` for a row not learned; ``labels=None``: none is.
        This is a prediction made and then learned one row at a time, computed for the
        whole batch at once: one sparse (rows x words) by dense (words x classes) product
        of the counts as they are, then the words of rows learned earlier in the batch
        corrected (:func:`_learned_before`).

        Returns the classes (sorted by name: two workers that learned the same labels in
        another order break a tie alike), the probabilities (a class the model has not
        learned yet at a row has 0), and how many classes each row had.
        """
        n = batch.size
        fresh = [] if labels is None else [y for y in labels if y is not None]
        classes = sorted({c for c in self.class_totals if self.class_counts.get(c, 0) > 0}.union(fresh))
        if not classes:
            return [], np.zeros((n, 0)), np.zeros(n, dtype=np.intp)
        dense = self.dense_counts()
        cols = np.array([dense.col(c) for c in classes], dtype=np.intp)
        rows = np.fromiter((dense.row_of.get(f, -1) for f in batch.words), np.intp, len(batch.words))
        self._batch_rows = (batch, dense, rows.copy())
        held = rows >= 0
        known = np.zeros(len(rows), dtype=bool)
        known[held] = dense.known[rows[held]]
        # log(count + alpha) of the batch's words (0 for a word never seen), and their counts
        logs = np.zeros((len(rows), len(classes)))
        logs[held] = dense.logs[np.ix_(rows[held], cols)]
        words = batch.matrix @ logs
        n_known = batch.matrix @ known.astype(float)
        # one row for the whole batch, unless rows learn: then each row its own
        counts = np.array([[self.class_counts.get(c, 0) for c in classes]], dtype=float)
        totals = np.array([[self.class_totals.get(c, 0) for c in classes]], dtype=float)
        n_terms = np.array([float(len(self.feature_counts))])
        column = {c: k for k, c in enumerate(classes)}
        learned = np.array([-1 if y is None else column[y] for y in labels or ()], dtype=np.intp)
        if (learned[:-1] >= 0).any():  # the last row's label changes no row's prediction
            counts, totals, n_terms = np.repeat(counts, n, axis=0), np.repeat(totals, n, axis=0), np.repeat(n_terms, n)
            before = _Before(counts, totals, n_terms, words, n_known)
            counts_of = self._counts_of(batch, classes, dense, logs)
            _learned_before(batch, learned, self.alpha, counts_of, held, known, before)
        return classes, *self._probabilities(counts, totals, n_terms, words, n_known)

    def _counts_of(
        self, batch: BatchWords, classes: Sequence[Any], dense: DenseCounts, logs: np.ndarray
    ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """The counts of the batch's known words (by index) in classes (by index): read back from
        their ``logs`` (words x classes, of ``dense``) when whole numbers (:attr:`DenseCounts.integral`),
        else from the dicts."""
        if dense.integral:
            return lambda word, cls: dense.counts_from_logs(logs[word, cls])
        feature_counts, words = self.feature_counts, batch.words

        def counts_of(word: np.ndarray, cls: np.ndarray) -> np.ndarray:
            # a word's class learned by many rows before: looked up once
            pairs, back = np.unique(word * len(classes) + cls, return_inverse=True)
            pair_words, pair_classes = np.divmod(pairs, len(classes))
            at = zip(pair_words.tolist(), pair_classes.tolist(), strict=True)
            found = (feature_counts.get(words[w], _NO_COUNTS).get(classes[k], 0) for w, k in at)
            return np.fromiter(found, float, len(pairs))[back.ravel()]

        return counts_of

    def _probabilities(
        self, counts: np.ndarray, totals: np.ndarray, n_terms: np.ndarray, words: np.ndarray, n_known: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each row's class probabilities from its counts, and how many classes it had (``counts``,
        ``totals`` and ``n_terms``: one row for every row of ``words``, or one for all)."""
        present = counts > 0
        n_classes = np.broadcast_to(present.sum(axis=1), (len(words),))
        with np.errstate(divide="ignore", invalid="ignore"):
            prior = np.log(counts / counts.sum(axis=1, keepdims=True))
            # each known word: log(count + alpha) - log(total + alpha * terms); a row without any keeps its prior
            per_word = np.log(totals + self.alpha * n_terms[:, None])
            jll = prior + np.where(n_known[:, None] > 0, words - n_known[:, None] * per_word, 0.0)
        jll = np.where(present, jll, -np.inf)
        jll[n_classes == 0] = 0.0  # no class yet: 0 for every class, below
        jll -= jll.max(axis=1, keepdims=True)
        proba = np.exp(jll)
        proba /= proba.sum(axis=1, keepdims=True)
        proba[n_classes == 0] = 0.0
        return proba, n_classes


class _Before(NamedTuple):
    """What each row of a batch sees of the model (per class): changed by the rows learned before it."""

    counts: np.ndarray  # examples of each class (n x classes)
    totals: np.ndarray  # words of each class (n x classes)
    n_terms: np.ndarray  # features the model holds (n)
    words: np.ndarray  # the sum of log(count + alpha) over the row's known words (n x classes)
    n_known: np.ndarray  # the row's known words (n)


def _learned_before(
    batch: BatchWords,
    learned: np.ndarray,
    alpha: float,
    counts_of: Callable[[np.ndarray, np.ndarray], np.ndarray],
    held: np.ndarray,
    known: np.ndarray,
    before: _Before,
) -> None:
    """Add to ``before`` (the model as it stands, for every row) the rows of the batch learned before each row.

    ``learned``: each row's class column, -1 for a row not learned. ``counts_of(words, classes)``:
    the model's counts of the batch's words (by index) in classes (by column); ``held``: the words
    the model holds, ``known``: those it knows.
    """
    n, n_classes = before.counts.shape
    one_hot = np.zeros((n, n_classes))
    is_learned = learned >= 0
    one_hot[is_learned, learned[is_learned]] = 1.0
    lengths = np.diff(batch.matrix.indptr)
    before.counts[:] += np.cumsum(one_hot, axis=0) - one_hot
    before.totals[:] += np.cumsum(one_hot * lengths[:, None], axis=0) - one_hot * lengths[:, None]
    nz_row = np.repeat(np.arange(n), lengths)
    nz_col = batch.matrix.indices
    nz_learned = learned[nz_row]
    changed, delta = _earlier_learned(nz_col, nz_learned, len(held), n_classes)
    if len(changed):
        word = nz_col[changed]
        was_known = known[word]
        # the counts only where a known word's class was learned before: elsewhere the fix is
        # log(c + alpha) - log(c + alpha), 0 whatever c, or c is 0 (a word not known)
        counts = np.zeros((len(word), n_classes))
        entry, cls = np.nonzero((delta > 0) & was_known[:, None])
        if len(entry):
            counts[entry, cls] = counts_of(word[entry], cls)
        fix = np.log(counts + delta + alpha)
        fix[was_known] -= np.log(counts[was_known] + alpha)
        at = nz_row[changed]
        starts = np.flatnonzero(np.r_[True, at[1:] != at[:-1]])
        before.words[at[starts]] += np.add.reduceat(fix, starts, axis=0)
        before.n_known[:] += np.bincount(at[~was_known], minlength=n)
    # words the model had never held: each is a new term from the row after the first that learned it
    first_learned = np.full(len(held), n)
    np.minimum.at(first_learned, nz_col[nz_learned >= 0], nz_row[nz_learned >= 0])
    new_terms = first_learned[~held]
    new_terms = np.bincount(new_terms[new_terms < n], minlength=n)
    before.n_terms[:] += np.cumsum(new_terms) - new_terms


def _earlier_learned(
    nz_col: np.ndarray, nz_learned: np.ndarray, n_words: int, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The entries of a batch (in the order of its rows) whose word rows before them learned, and how
    many of those rows learned each class (one row per entry).

    ``nz_col``: each entry's word, ``nz_learned``: the class its row learns (-1: none).

    >>> changed, delta = _earlier_learned(np.array([0, 1, 0, 0]), np.array([1, 1, 0, -1]), 2, 2)
    >>> changed.tolist(), delta.tolist()  # word 0: rows learned classes 1, then 0
    ([2, 3], [[0, 1], [1, 1]])
    """
    # only the words of two entries or more can have been (integers: counts, exactly, and half the bytes)
    shared = np.flatnonzero(np.bincount(nz_col, minlength=n_words)[nz_col] >= 2)
    if not len(shared):
        return shared, np.zeros((0, n_classes), dtype=np.int32)
    order = np.argsort(nz_col[shared], kind="stable")  # by word, then by row
    by_word, learned_as = nz_col[shared][order], nz_learned[shared][order]
    added = np.zeros((len(shared), n_classes), dtype=np.int32)
    mask = learned_as >= 0
    added[np.flatnonzero(mask), learned_as[mask]] = 1
    earlier = np.cumsum(added, axis=0, dtype=np.int32)
    earlier -= added
    first_of_word = np.flatnonzero(np.r_[True, by_word[1:] != by_word[:-1]])
    earlier -= np.repeat(earlier[first_of_word], np.diff(np.r_[first_of_word, len(by_word)]), axis=0)
    delta = np.empty_like(earlier)
    delta[order] = earlier
    touched = delta.any(axis=1)
    return shared[touched], delta[touched]


def _default_model() -> Any:
    # Chosen on NLBSE'24 (docs/benchmarks.md): multinomial naive Bayes on the words
    # present in the cleaned text, 0.669 macro-F1 (0.625 on counts); ComplementNB scored
    # about as well but ran at 68 issues/s; online logistic regression 0.642.
    return AlignedMultinomialNB(alpha=1.0)
