"""Tags from meaning and words: an online linear model over the embedding and hashed token n-grams.

The same contract as :class:`pipeline.tagging.tagger.TicketTagger` (``predict_binned``,
``learn_batch``, ``process_many``, ``knows``, corrections, :class:`~pipeline.tagging.tagger.Calibration`,
:class:`~pipeline.tagging.tagger.Prequential`), over other features and another model:

- **Features**, computed in one pass over a batch: the ticket's embedding
  (:class:`pipeline.text.embedding.TicketEncoder`, of its reading) and the presence of its
  subword tokens and token pairs, hashed into ``buckets`` columns of a
  :mod:`scipy.sparse` matrix. The tokens are the embedding's own (one tokenization for
  both); a pair's bucket is arithmetic on the two ids, vectorised with numpy, the same in
  every process.
- **Model**: per field, multinomial logistic regression (softmax) learned by mini-batch
  gradient steps with AdaGrad step sizes: a batch's gradient is two matrix products. Each
  label is learned once, as it arrives; a class seen for the first time gets a row.
- **Confidence**: the margin (in nats, the log-odds of the first class over the second)
  is binned by :data:`MARGIN_EDGES` and read through :class:`Calibration` as today: a
  prediction's confidence is how often earlier ones with that margin were right. A ticket
  like none learned (CLINC's out-of-scope queries) has a small margin and is ``uncertain``.
- **Corrections**: a label that replaces an earlier one for the same ticket is learned with
  steps repeated until the model gives it (at most ``correction_steps``), and the earlier
  outcome leaves the calibration.

Unlike naive Bayes' counts, gradient steps do not commute: two workers that learn the same
labels in different orders end with slightly different weights (see the report in
docs/benchmarks.md).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from pipeline.tagging.tagger import (
    FIELDS,
    Calibration,
    Prequential,
    _bin_of,
    _first_prediction,
    _label_of,
    document_reading,
    predicted_labels,
)
from pipeline.text.embedding import TicketEncoder, check_model_id

__all__ = ["MARGIN_EDGES", "LinearTagger", "SoftmaxModel", "token_features"]

#: Margin bins for a softmax model (nats between the first class's log-probability and the
#: second's). A softmax is less extreme than naive Bayes: its margins run 0-10 nats, not 0-100.
MARGIN_EDGES = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)

_PAIR_SEED = np.uint64(0x9E3779B97F4A7C15)


def token_features(ids: np.ndarray, lengths: np.ndarray, buckets: int) -> sp.csr_matrix:
    """Presence of each text's tokens and token pairs, hashed into ``buckets`` columns.

    ``ids`` are the texts' token ids one after the other, ``lengths`` how many each text
    has. Each row is scaled to unit length.

    >>> m = token_features(np.array([5, 7, 5, 3]), np.array([3, 1]), 64)
    >>> m.shape, m.getnnz(axis=1).tolist()  # 5, 7, (5 7), (7 5); 3
    ((2, 64), [4, 1])
    """
    n = len(lengths)
    rows = np.repeat(np.arange(n), lengths)
    ids64 = ids.astype(np.uint64)
    single = ids64 % np.uint64(buckets)
    # a pair within one text: the next token belongs to the same row
    same = rows[1:] == rows[:-1] if ids.size > 1 else np.zeros(0, dtype=bool)
    with np.errstate(over="ignore"):
        mixed = (ids64[:-1] * _PAIR_SEED + ids64[1:] + np.uint64(1)) * _PAIR_SEED
    pairs = (mixed[same] >> np.uint64(17)) % np.uint64(buckets)
    cols = np.concatenate([single, pairs]).astype(np.int64)
    all_rows = np.concatenate([rows, rows[1:][same]])
    m = sp.csr_matrix((np.ones(cols.size, dtype=np.float32), (all_rows, cols)), shape=(n, buckets))
    m.sum_duplicates()
    m.data[:] = 1.0  # presence: a word repeated in a log is one word
    counts = np.diff(m.indptr)
    m.data /= np.sqrt(np.repeat(np.maximum(counts, 1), counts)).astype(np.float32)
    return m


class SoftmaxModel:
    """Multinomial logistic regression over [dense, sparse] features, learned online (AdaGrad).

    Examples
    --------
    >>> m = SoftmaxModel(dense_dims=2, buckets=4)
    >>> dense, sparse = np.array([[1.0, 0], [0, 1.0]]), sp.csr_matrix((2, 4))
    >>> for _ in range(20):
    ...     m.learn(dense, sparse, ["a", "b"])
    >>> m.classes, m.proba(dense, sparse).argmax(axis=1).tolist()
    (['a', 'b'], [0, 1])
    """

    def __init__(self, dense_dims: int, buckets: int, step: float = 0.5) -> None:
        self.step = step
        self.classes: list[str] = []
        self.index: dict[str, int] = {}
        # room for ``capacity`` classes, 8 more when full: a new class rarely copies the weights,
        # and the sparse part (buckets x classes, twice with AdaGrad's sums) stays near its size
        capacity = 8
        # one row per class (contiguous, so that the first k rows are a plain slice)
        self._dense = np.zeros((capacity, dense_dims), dtype=np.float32)
        self._sparse = np.zeros((buckets, capacity), dtype=np.float32)
        self._bias = np.zeros(capacity, dtype=np.float32)
        # AdaGrad's sums of squared gradients, per weight
        self._g_dense = np.zeros_like(self._dense)
        self._g_sparse = np.zeros_like(self._sparse)
        self._g_bias = np.zeros_like(self._bias)

    def _add_class(self, label: str) -> None:
        k = len(self.classes)
        if k == self._bias.shape[0]:
            more = 8
            self._dense = np.vstack([self._dense, np.zeros((more, self._dense.shape[1]), np.float32)])
            self._g_dense = np.vstack([self._g_dense, np.zeros((more, self._g_dense.shape[1]), np.float32)])
            self._sparse = np.hstack([self._sparse, np.zeros((self._sparse.shape[0], more), np.float32)])
            self._g_sparse = np.hstack([self._g_sparse, np.zeros((self._g_sparse.shape[0], more), np.float32)])
            self._bias = np.concatenate([self._bias, np.zeros(more, np.float32)])
            self._g_bias = np.concatenate([self._g_bias, np.zeros(more, np.float32)])
        self.index[label] = k
        self.classes.append(label)

    def scores(self, dense: np.ndarray, sparse: sp.csr_matrix) -> np.ndarray:
        """Each row's score per known class (log-probabilities up to a constant)."""
        k = len(self.classes)
        s = dense @ self._dense[:k].T + self._bias[:k]
        if sparse.nnz:
            cols = np.unique(sparse.indices)  # the buckets present: a few hundred of ``buckets``
            s += sparse[:, cols] @ self._sparse[cols, :k]
        return np.asarray(s, dtype=np.float32)

    def proba(self, dense: np.ndarray, sparse: sp.csr_matrix) -> np.ndarray:
        s = self.scores(dense, sparse)
        s -= s.max(axis=1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=1, keepdims=True)
        return s

    def learn(self, dense: np.ndarray, sparse: sp.csr_matrix, labels: Sequence[str]) -> None:
        """One gradient step on a mini-batch (the summed cross-entropy of its rows), AdaGrad's step sizes."""
        for label in labels:
            if label not in self.index:
                self._add_class(label)
        k = len(self.classes)
        y = np.fromiter((self.index[label] for label in labels), dtype=np.intp, count=len(labels))
        grad = self.proba(dense, sparse)
        grad[np.arange(len(y)), y] -= 1.0
        _adagrad(self._dense[:k], self._g_dense[:k], grad.T @ dense, self.step)
        bias_grad = grad.sum(axis=0)
        self._g_bias[:k] += bias_grad * bias_grad
        self._bias[:k] -= self.step * bias_grad / (np.sqrt(self._g_bias[:k]) + 1e-6)
        if sparse.nnz:
            cols = np.unique(sparse.indices)
            g = np.asarray(sparse[:, cols].T @ grad, dtype=np.float32)
            w, acc = self._sparse[cols, :k], self._g_sparse[cols, :k]
            _adagrad(w, acc, g, self.step)
            self._sparse[cols, :k], self._g_sparse[cols, :k] = w, acc


def _adagrad(weights: np.ndarray, accumulated: np.ndarray, grad: np.ndarray, step: float) -> None:
    """AdaGrad's update, in place (``weights`` and ``accumulated`` may be views)."""
    accumulated += grad * grad
    weights -= step * grad / (np.sqrt(accumulated) + 1e-6)


class LinearTagger:
    """Case type, product area and severity from a ticket's embedding and token n-grams.

    Parameters
    ----------
    encoder
        The embedding model (its ``model_id`` is kept: a checkpoint of another is refused).
    fields
        The fields tagged.
    buckets
        Columns the token n-grams are hashed into.
    dense_weight
        Scale of the embedding against the (unit-length) n-gram part.
    step
        AdaGrad's step size.
    batch
        Labels per gradient step within :meth:`learn_batch`.
    min_labels, min_confidence, calibrate
        As :class:`pipeline.tagging.tagger.TicketTagger`.
    correction_steps
        Most steps a correction is learned with (until the model gives the new label).

    Examples
    --------
    >>> tagger = LinearTagger(TicketEncoder(), min_labels=2, batch=2)
    >>> tagger.predict_one({"subject": "Refund", "body": "charged twice"})["case_type"]
    {'label': None, 'confidence': 0.0, 'uncertain': True}
    >>> for s, b, c in [("Charged twice", "refund my card", "billing"), ("App crashes", "error on start", "bug")] * 3:
    ...     tagger.learn_one({"subject": s, "body": b, "case_type": c})
    >>> tagger.predict_one({"subject": "I was charged twice", "body": "please refund"})["case_type"]["label"]
    'billing'
    """

    def __init__(
        self,
        encoder: TicketEncoder,
        fields: Sequence[str] = FIELDS,
        buckets: int = 2**15,
        dense_weight: float = 1.0,
        step: float = 0.5,
        batch: int = 16,
        min_labels: int = 20,
        min_confidence: float = 0.5,
        calibrate: bool = True,
        correction_steps: int = 8,
    ) -> None:
        if buckets < 1:
            raise ValueError(f"buckets must be a positive number, got {buckets}")
        self.encoder = encoder
        self.model_id = encoder.model_id
        self.fields = tuple(fields)
        self.buckets = buckets
        self.dense_weight = dense_weight
        self.batch = batch
        self.min_labels = min_labels
        self.min_confidence = min_confidence
        self.calibrate = calibrate
        self.correction_steps = correction_steps
        self.models = {f: SoftmaxModel(encoder.dims, buckets, step=step) for f in self.fields}
        self.learned = dict.fromkeys(self.fields, 0)
        self.quality = {f: Prequential() for f in self.fields}
        self.calibration = {f: Calibration() for f in self.fields}
        self.version = 0
        self._taught: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.max_remembered = 1_000_000
        self.corrections = 0
        #: per field, the labels scored but not yet learned (fewer than ``batch``; :meth:`_learn`)
        self._held: dict[str, tuple[Any, Any, list[str]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "encoder"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.encoder = None  # type: ignore[assignment]  # attach() gives it back

    def attach(self, encoder: TicketEncoder, what: str = "a tagger checkpoint") -> None:
        """Give a loaded tagger its encoder; refused if it learned on another model's vectors."""
        check_model_id(encoder.model_id, self.__dict__.get("model_id"), what)
        self.encoder = encoder

    def restore(self, other: LinearTagger, what: str = "the loaded tagger") -> None:
        """Become ``other`` (a checkpoint), in place, keeping this tagger's encoder; refused if
        ``other`` learned on another embedding model's vectors."""
        check_model_id(self.model_id, other.__dict__.get("model_id"), what)
        self.__dict__.update({k: v for k, v in other.__dict__.items() if k != "encoder"})

    # -- features --------------------------------------------------------------------------

    def features(
        self, tickets: Sequence[Mapping[str, Any]], vectors: np.ndarray | None = None
    ) -> tuple[np.ndarray, sp.csr_matrix]:
        """The embedding (scaled) and the hashed n-grams of each ticket's reading, as two matrices."""
        texts = [document_reading(t) for t in tickets]
        encoded, ids, lengths = self.encoder.encode_with_tokens(texts)
        dense = encoded if vectors is None else np.asarray(vectors, dtype=np.float32)
        return dense * np.float32(self.dense_weight), token_features(ids, lengths, self.buckets)

    # -- predicting ------------------------------------------------------------------------

    def predict_one(self, ticket: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Predictions for one ticket (it learns nothing)."""
        return self.predict_binned([ticket])[0][0]

    def predict_many(self, tickets: Sequence[Mapping[str, Any]]) -> list[dict[str, dict[str, Any]]]:
        return self.predict_binned(tickets)[0]

    def predict_binned(
        self,
        tickets: Sequence[Mapping[str, Any]],
        features: tuple[np.ndarray, sp.csr_matrix] | None = None,
    ) -> tuple[list[dict[str, dict[str, Any]]], list[dict[str, int]]]:
        """Each ticket's label, confidence and ``uncertain`` per field, and its margin bin per field."""
        out: list[dict[str, dict[str, Any]]] = [{} for _ in tickets]
        bins_of: list[dict[str, int]] = [{} for _ in tickets]
        if not tickets:
            return out, bins_of
        dense, sparse = features if features is not None else self.features(tickets)
        for name, model in self.models.items():
            if not self.learned[name] or not model.classes:
                for row in out:
                    row[name] = {"label": None, "confidence": 0.0, "uncertain": True}
                continue
            labels, confidences, bins = self._field(name, model, dense, sparse)
            for row, row_bins, label, confidence, margin_bin in zip(
                out, bins_of, labels, confidences, bins, strict=True
            ):
                uncertain = self.learned[name] < self.min_labels or confidence < self.min_confidence
                row[name] = {"label": label, "confidence": round(float(confidence), 4), "uncertain": uncertain}
                if margin_bin is not None:
                    row_bins[name] = margin_bin
        return out, bins_of

    def _field(
        self, name: str, model: SoftmaxModel, dense: np.ndarray, sparse: sp.csr_matrix
    ) -> tuple[list[str], list[float], list[int | None]]:
        scores = model.scores(dense, sparse)
        best = scores.argmax(axis=1)
        labels = [model.classes[k] for k in best.tolist()]
        top = scores[np.arange(len(best)), best]
        shifted = np.exp(scores - top[:, None])
        probability = 1.0 / shifted.sum(axis=1)
        if len(model.classes) < 2:  # one class known: no margin, it says that class
            return labels, probability.tolist(), [None] * len(labels)
        second = -np.partition(-scores, 1, axis=1)[:, 1]
        bins = np.searchsorted(MARGIN_EDGES, top - second, side="right")
        confidence = self.calibration[name].confidence(bins, probability) if self.calibrate else probability
        return labels, confidence.tolist(), bins.tolist()

    # -- learning --------------------------------------------------------------------------

    def knows(self, ticket: Mapping[str, Any]) -> bool:
        """Whether every label the ticket carries was already learned for its id (a re-send)."""
        ticket_id = ticket.get("id")
        if ticket_id is None:
            return False
        return all(
            not ticket.get(name) or self._taught.get((str(ticket_id), name)) == ticket.get(name) for name in self.fields
        )

    def _new_labels(self, ticket: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
        """The labels not learned before for the ticket's id, and of those, the corrected ones' earlier labels."""
        ticket_id = ticket.get("id")
        fresh, earlier_of = {}, {}
        for name in self.fields:
            label = ticket.get(name)
            if not label:
                continue
            if ticket_id is not None:
                key = (str(ticket_id), name)
                earlier = self._taught.get(key)
                if earlier == label:
                    continue
                if earlier is not None:
                    earlier_of[name] = earlier
                self._taught[key] = str(label)
                self._taught.move_to_end(key)
                if len(self._taught) > self.max_remembered:
                    self._taught.popitem(last=False)
            fresh[name] = str(label)
        return fresh, earlier_of

    def learn_one(self, ticket: Mapping[str, Any]) -> None:
        """Learn the labels one ticket carries (:meth:`learn_batch` of one)."""
        self.learn_batch([ticket])

    def learn_batch(
        self, tickets: Sequence[Mapping[str, Any]], features: tuple[np.ndarray, sp.csr_matrix] | None = None
    ) -> int:
        """Score, then learn, the new labels of a batch (prequential, calibrated); how many were learned.

        ``features``: the batch's :meth:`features` when at hand (made for its prediction).
        """
        fresh = [(i, *self._new_labels(t)) for i, t in enumerate(tickets)]
        fresh = [f for f in fresh if f[1]]
        if not fresh:
            return 0
        rows = [i for i, _, _ in fresh]
        batch = [tickets[i] for i in rows]
        if features is None:
            dense, sparse = self.features(batch)
        else:
            dense, sparse = features[0][rows], features[1][rows]
        if all("predicted" in t for t in batch):
            predicted = [_first_prediction(t["predicted"]) for t in batch]
        else:
            predicted = [
                predicted_labels(p, b) for p, b in zip(*self.predict_binned(batch, (dense, sparse)), strict=True)
            ]
        learned = 0
        for name in self.fields:
            at = [j for j, (_, labels, _) in enumerate(fresh) if name in labels]
            if not at:
                continue
            for j in at:
                label, guess = fresh[j][1][name], predicted[j].get(name)
                earlier = fresh[j][2].get(name)
                margin_bin, said = _bin_of(guess), _label_of(guess)
                if earlier is not None:  # a correction: the earlier outcome goes
                    if margin_bin is not None and said is not None:
                        self.calibration[name].remove(margin_bin, said == earlier)
                    self.corrections += 1
                else:
                    self.quality[name].add(label, said)
                    self.learned[name] += 1
                if margin_bin is not None and said is not None:
                    self.calibration[name].add(margin_bin, said == label)
            self._learn(name, dense[at], sparse[at], [fresh[j][1][name] for j in at])
            corrected = [j for j in at if name in fresh[j][2]]
            if corrected:
                self._correct(name, dense[corrected], sparse[corrected], [fresh[j][1][name] for j in corrected])
            learned += len(at)
            self.version += len(at)
        return learned

    def _learn(self, name: str, dense: np.ndarray, sparse: sp.csr_matrix, labels: list[str]) -> None:
        """Learn in steps of exactly ``batch`` labels; the rest waits for the next call.

        So the steps depend on the order of the labels alone, not on how they were split
        into calls: workers that read the same labels in the same order (one training
        partition) hold the same weights. A label waits at most ``batch - 1`` others.
        """
        held_dense, held_sparse, held_labels = self._held.get(name, (None, None, []))
        if held_labels:
            dense = np.vstack([held_dense, dense])
            sparse = sp.vstack([held_sparse, sparse], format="csr")
            labels = [*held_labels, *labels]
        model = self.models[name]
        whole = len(labels) - len(labels) % self.batch
        for start in range(0, whole, self.batch):
            end = start + self.batch
            model.learn(dense[start:end], sparse[start:end], labels[start:end])
        self._held[name] = (dense[whole:], sparse[whole:], labels[whole:])

    def _correct(self, name: str, dense: np.ndarray, sparse: sp.csr_matrix, labels: list[str]) -> None:
        """Steps on the corrected tickets until the model gives their new labels (at most ``correction_steps``)."""
        model = self.models[name]
        for _ in range(self.correction_steps):
            said = model.scores(dense, sparse).argmax(axis=1)
            wrong = [j for j, label in enumerate(labels) if model.classes[said[j]] != label]
            if not wrong:
                return
            model.learn(dense[wrong], sparse[wrong], [labels[j] for j in wrong])

    def flush(self) -> None:
        """Learn the held labels now (the end of a replay or an offline evaluation). A worker
        does not: the step it would take depends on when it is called, which differs between
        workers."""
        for name, (dense, sparse, labels) in list(self._held.items()):
            if labels:
                self.models[name].learn(dense, sparse, labels)
            self._held.pop(name)

    def process_many(self, tickets: Iterable[Mapping[str, Any]]) -> list[dict[str, dict[str, Any]]]:
        """For each ticket in order: predict, then score and learn its labels (the replay's loop)."""
        results = []
        for ticket in tickets:
            features = self.features([ticket])
            (predicted,), (bins,) = self.predict_binned([ticket], features)
            self.learn_batch([{**ticket, "predicted": predicted_labels(predicted, bins)}], features)
            results.append(predicted)
        return results
