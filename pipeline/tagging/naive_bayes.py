"""Multinomial naive Bayes with a batch path whose cost does not grow with the vocabulary."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
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


class DenseCounts:
    """A model's feature counts as a dense (features x classes) array, and ``log(count + alpha)``.

    Derived from the model's dicts (``feature_counts``, which stay what is learned, pickled
    and forgotten) and kept in step with them cheaply: what was learned since is added to
    the rows it touched when a prediction needs the array (:meth:`apply_pending`), rows
    forgotten are read again from the dicts (:meth:`refresh`), and rows and columns grow
    by doubling as new features and classes arrive. Rows are in the order features were
    first seen, columns in the order classes were: a prediction picks its classes' columns.

    ``logs`` holds ``log(count + alpha)`` for a feature the model knows (its ``Counter`` is not
    empty) and 0 for one it does not, which thus adds nothing to a ticket's sum, as
    :meth:`AlignedMultinomialNB.joint_log_likelihood` leaves unseen words out.

    >>> dense = DenseCounts(alpha=1.0)
    >>> dense.pending.append((["refund", "charged"], "billing"))
    >>> dense.apply_pending()
    >>> dense.counts[: len(dense.row_of), : len(dense.col_of)].tolist(), dense.col_sums[:1].tolist()
    ([[1.0], [1.0]], [2.0])
    """

    def __init__(self, alpha: float, rows: int = 1024, cols: int = 4) -> None:
        self.alpha = alpha
        self.row_of: dict[Any, int] = {}
        self.col_of: dict[Any, int] = {}
        self.counts = np.zeros((rows, cols))
        self.logs = np.zeros((rows, cols))
        self.known = np.zeros(rows, dtype=bool)
        #: each column's sum: a model's ``class_totals`` when the two are in step (:meth:`agrees_with`)
        self.col_sums = np.zeros(cols)
        #: (features, class) learned by the model since the array was last brought up to date
        self.pending: list[tuple[Sequence[Any], Any]] = []

    @classmethod
    def of(cls, model: naive_bayes.MultinomialNB) -> DenseCounts:
        """The dense counts of a model's dicts, read whole (a model loaded, or changed behind our back)."""
        feature_counts = model.feature_counts
        dense = cls(model.alpha, rows=max(1024, len(feature_counts)), cols=max(4, len(model.class_totals)))
        for label in model.class_totals:
            dense.col(label)
        dense.row_of = dict(zip(feature_counts, range(len(feature_counts)), strict=True))
        rows: list[int] = []
        cols: list[int] = []
        values: list[float] = []
        for row, per_class in enumerate(feature_counts.values()):
            for label, n in per_class.items():
                rows.append(row)
                cols.append(dense.col(label))
                values.append(n)
        known = np.fromiter((bool(per_class) for per_class in feature_counts.values()), bool, len(feature_counts))
        dense.known[: len(known)] = known
        dense.add(np.array(rows, dtype=np.intp), np.array(cols, dtype=np.intp), np.array(values, dtype=float))
        dense.known[: len(known)] = known  # _add marks its rows known; an empty Counter is not
        return dense

    def col(self, label: Any) -> int:
        """The column of a class, made (zeros) if new."""
        found = self.col_of.get(label)
        if found is None:
            found = self.col_of[label] = len(self.col_of)
            if found >= self.counts.shape[1]:
                self._grow(self.counts.shape[0], 2 * self.counts.shape[1])
            # the rows' logs are kept for the columns in use (:meth:`add`): a known feature's count of 0
            self.logs[:, found] = np.where(self.known, np.log(self.alpha), 0.0)
        return found

    def _grow(self, rows: int, cols: int) -> None:
        """Room for ``rows`` features and ``cols`` classes (new columns' logs are set as they come into use)."""
        old_rows, old_cols = self.counts.shape
        counts, logs, col_sums = np.zeros((rows, cols)), np.zeros((rows, cols)), np.zeros(cols)
        counts[:old_rows, :old_cols] = self.counts
        logs[:old_rows, :old_cols] = self.logs
        col_sums[:old_cols] = self.col_sums
        known = np.zeros(rows, dtype=bool)
        known[:old_rows] = self.known
        self.counts, self.logs, self.known, self.col_sums = counts, logs, known, col_sums

    def add(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> None:
        """``counts[rows, cols] += values`` (repeats add up), and the touched rows' logs."""
        if not len(rows):
            return
        needed = len(self.row_of)
        if needed > self.counts.shape[0]:
            self._grow(max(needed, 2 * self.counts.shape[0]), self.counts.shape[1])
        np.add.at(self.counts, (rows, cols), values)
        self.col_sums += np.bincount(cols, weights=values, minlength=self.counts.shape[1])
        if len(rows) < 1000:  # a ticket or a few: not an array the size of the counts
            touched = np.fromiter(set(rows.tolist()), np.intp)
        else:
            marked = np.zeros(self.counts.shape[0], dtype=bool)
            marked[rows] = True
            touched = np.flatnonzero(marked)
        self.known[touched] = True
        in_use = len(self.col_of)
        self.logs[touched, :in_use] = np.log(self.counts[touched, :in_use] + self.alpha)

    def apply_pending(self) -> None:
        """Add what was learned since the last time to the array."""
        if not self.pending:
            return
        features: list[Any] = []
        cols: list[int] = []
        for learned, label in self.pending:
            features.extend(learned)
            cols.extend([self.col(label)] * len(learned))
        self.pending.clear()
        row_of = self.row_of
        rows = np.array([row_of.setdefault(f, len(row_of)) for f in features], dtype=np.intp)
        self.add(rows, np.array(cols, dtype=np.intp), np.ones(len(rows)))

    def refresh(self, features: Iterable[Any], feature_counts: Mapping[Any, Mapping[Any, float]]) -> None:
        """Read these features' rows again from the dicts (counts taken back by a correction)."""
        self.apply_pending()  # the dicts hold them already: added after the refresh, they would count twice
        for feature in features:
            row = self.row_of.get(feature)
            if row is None:  # never learned: nothing to take back
                continue
            per_class = feature_counts.get(feature, {})
            cols = [self.col(label) for label in per_class]
            fresh = np.zeros(self.counts.shape[1])
            fresh[cols] = list(per_class.values())
            self.col_sums += fresh - self.counts[row]
            self.counts[row] = fresh
            self.known[row] = bool(per_class)
            self.logs[row] = np.log(fresh + self.alpha) if per_class else 0.0

    def agrees_with(self, model: naive_bayes.MultinomialNB) -> bool:
        """Whether the array sums to the model's class totals and has a row for each of its features.

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

    #: the counts as a dense array for the batch path (:class:`DenseCounts`): derived, never pickled
    _dense: DenseCounts | None = None
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
        super().learn_one(x, y)
        if self._dense is not None:
            if any(v != 1 for v in x.values()):  # counts, not presence: read the rows again
                self._dense.refresh(list(x), self.feature_counts)
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
            self._dense.apply_pending()

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
        word_rows[new] = [row_of.setdefault(batch.words[w], len(row_of)) for w in new.tolist()]
        self._batch_rows = (batch, dense, word_rows)
        cols = np.full(batch.size, -1, dtype=np.intp)
        cols[learned] = [dense.col(labels[i]) for i in learned]
        dense.apply_pending()
        dense.add(word_rows[words], cols[at], np.ones(len(words)))

    def forgot(self, features: Iterable[Any], classes_removed: bool) -> None:
        """Counts of these features were taken back from the dicts (a correction): the dense counts follow.

        ``classes_removed``: a class lost its last example, and every feature's count of
        it went: the dense counts are read again whole at the next prediction.
        """
        if self._dense is None:
            return
        if classes_removed:
            self._dense = None
        else:
            self._dense.refresh(features, self.feature_counts)

    def dense_counts(self) -> DenseCounts:
        """The counts as a dense array, up to date with everything learned and forgotten."""
        dense = self._dense
        if dense is not None:
            dense.apply_pending()
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
            _learned_before(batch, learned, self.alpha, dense.counts[np.ix_(rows[held], cols)], held, known, before)
        return classes, *self._probabilities(counts, totals, n_terms, words, n_known)

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
    held_counts: np.ndarray,
    held: np.ndarray,
    known: np.ndarray,
    before: _Before,
) -> None:
    """Add to ``before`` (the model as it stands, for every row) the rows of the batch learned before each row.

    ``learned``: each row's class column, -1 for a row not learned. ``held_counts``: the
    counts of the batch's words the model holds (``held``), ``known``: the words it knows.
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
        counts = np.zeros((len(word), n_classes))
        where_held = held[word]
        row_in_held = np.cumsum(held) - 1
        counts[where_held] = held_counts[row_in_held[word[where_held]]]
        fix = np.log(counts + delta + alpha)
        was_known = known[word]
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
