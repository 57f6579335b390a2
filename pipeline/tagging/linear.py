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
- **Corrections**: a label that replaces an earlier one for the same ticket ends the step it
  is in, and is learned with steps repeated until the model gives it (at most
  ``correction_steps``); the earlier outcome leaves the calibration.

Unlike naive Bayes' counts, gradient steps do not commute: two workers that learn the same
labels in different orders end with slightly different weights. So the weights are a
function of the order of the labels alone: a step takes ``batch`` labels (or ends at a
correction), whatever calls they came in, and the labels of a step not yet full are held
(and checkpointed), until a step marker of the training topic (:meth:`LinearTagger.step_held`).
The worker gives every worker one order: its training topic has one partition
(:mod:`pipeline.tagging.learn`).
"""

from __future__ import annotations

import base64
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

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

__all__ = ["MARGIN_EDGES", "EncodedReadings", "LinearTagger", "SoftmaxModel", "token_features"]

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
        return self._scores(dense, _present(sparse))

    def _scores(self, dense: np.ndarray, present: tuple[np.ndarray, sp.csr_matrix] | None) -> np.ndarray:
        k = len(self.classes)
        s = dense @ self._dense[:k].T + self._bias[:k]
        if present is not None:
            cols, compact = present
            s += compact @ self._sparse[cols, :k]
        return np.asarray(s, dtype=np.float32)

    def proba(self, dense: np.ndarray, sparse: sp.csr_matrix) -> np.ndarray:
        return _softmax(self.scores(dense, sparse))

    def learn(self, dense: np.ndarray, sparse: sp.csr_matrix, labels: Sequence[str]) -> None:
        """One gradient step on a mini-batch (the summed cross-entropy of its rows), AdaGrad's step sizes."""
        self.learn_rows(dense, sparse, 0, sparse.shape[0], labels)

    def learn_rows(
        self, dense: np.ndarray, sparse: sp.csr_matrix, start: int, stop: int, labels: Sequence[str]
    ) -> None:
        """:meth:`learn` on rows ``start:stop`` of ``dense`` and ``sparse`` (``labels``: theirs).

        A step is a few labels: its sparse rows are read from ``sparse``'s arrays into a
        small dense matrix over the buckets present, without scipy, whose checks and copies
        of a sliced matrix cost more than the step's arithmetic (docs/benchmarks.md).
        """
        for label in labels:
            if label not in self.index:
                self._add_class(label)
        k = len(self.classes)
        y = np.fromiter((self.index[label] for label in labels), dtype=np.intp, count=len(labels))
        x = dense[start:stop]
        cols, compact = _present_rows(sparse, start, stop)
        grad = x @ self._dense[:k].T + self._bias[:k]
        if cols.size:  # whole rows gathered (contiguous), the classes beyond ``k`` left as they are
            w_rows = self._sparse.take(cols, axis=0)
            w = w_rows[:, :k]
            grad += compact @ w
        grad = _softmax(np.asarray(grad, dtype=np.float32))
        grad[np.arange(len(y)), y] -= 1.0
        _adagrad(self._dense[:k], self._g_dense[:k], grad.T @ x, self.step)
        bias_grad = grad.sum(axis=0)
        self._g_bias[:k] += bias_grad * bias_grad
        self._bias[:k] -= self.step * bias_grad / (np.sqrt(self._g_bias[:k]) + 1e-6)
        if cols.size:
            acc_rows = self._g_sparse.take(cols, axis=0)
            _adagrad(w, acc_rows[:, :k], compact.T @ grad, self.step)
            self._sparse[cols], self._g_sparse[cols] = w_rows, acc_rows


def _softmax(s: np.ndarray) -> np.ndarray:
    """Each row's scores as probabilities, in place."""
    s -= s.max(axis=1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=1, keepdims=True)
    return s


def _present(sparse: sp.csr_matrix) -> tuple[np.ndarray, sp.csr_matrix] | None:
    """The buckets present in ``sparse`` (a few hundred of ``buckets``), and ``sparse`` on them alone.

    Its entries renumbered in place of scipy's column slicing (``sparse[:, cols]``), which
    checked and sorted them: a third of a learning step's cost on short tickets.
    """
    if not sparse.nnz:
        return None
    cols, at = np.unique(sparse.indices, return_inverse=True)
    compact = sp.csr_matrix(
        (sparse.data, at.astype(sparse.indices.dtype), sparse.indptr), shape=(sparse.shape[0], len(cols))
    )
    return cols, compact


def _present_rows(sparse: sp.csr_matrix, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """The buckets present in rows ``start:stop`` of ``sparse``, and those rows on them alone, dense.

    Read from the CSR arrays directly (a step's rows: a few thousand entries). The rows'
    entries are distinct per row, as :func:`token_features` makes them (duplicates summed).

    >>> m = sp.csr_matrix(np.array([[0, 2.0, 0, 1.0], [0, 0, 0, 3.0], [5.0, 0, 0, 0]], dtype=np.float32))
    >>> cols, rows = _present_rows(m, 0, 2)
    >>> cols.tolist(), rows.tolist()
    ([1, 3], [[2.0, 1.0], [0.0, 3.0]])
    """
    lo, hi = sparse.indptr[start], sparse.indptr[stop]
    cols, at = np.unique(sparse.indices[lo:hi], return_inverse=True)
    rows = np.repeat(np.arange(stop - start), np.diff(sparse.indptr[start : stop + 1]))
    compact = np.zeros((stop - start, cols.size), dtype=np.float32)
    compact[rows, at] = sparse.data[lo:hi]
    return cols, compact


def _adagrad(weights: np.ndarray, accumulated: np.ndarray, grad: np.ndarray, step: float) -> None:
    """AdaGrad's update, in place (``weights`` and ``accumulated`` may be views)."""
    accumulated += grad * grad
    weights -= step * grad / (np.sqrt(accumulated) + 1e-6)


def _carried_tokens(ticket: Mapping[str, Any], encoder: TicketEncoder) -> np.ndarray | None:
    """The token ids a training example carries, if made by this embedding model and in its vocabulary."""
    tokens = ticket.get("tokens")
    if tokens is None or ticket.get("tokens_of") != encoder.model_id:
        return None  # none, or tokenized by another model (a rolling upgrade): tokenized here
    if isinstance(tokens, str):  # packed, base64 (pipeline.tagging.tag); a list of ids before
        try:
            return encoder.unpack_tokens(base64.b64decode(tokens, validate=True))
        except ValueError:  # binascii.Error: not base64
            return None
    try:
        ids = np.asarray(tokens, dtype=np.int32)
    except (TypeError, ValueError, OverflowError):
        return None
    if ids.ndim != 1 or (ids.size and (ids.min() < 0 or ids.max() >= len(encoder.vectors))):
        return None
    return ids


def _event_time(ticket: Mapping[str, Any], default: float) -> float:
    """A labelled ticket's event time (``created``, epoch seconds, or ``created_at``); else ``default``.

    A label joined later carries neither: it came within the label horizon, so it counts as
    the newest learned.
    """
    created = ticket.get("created")
    if isinstance(created, int | float):
        return float(created)
    created_at = ticket.get("created_at")
    if isinstance(created_at, str):
        try:
            return datetime.fromisoformat(created_at).timestamp()
        except ValueError:
            return default
    return default


class EncodedReadings:
    """The embedding and token ids of the readings encoded lately, by ticket id and reading.

    A labelled ticket is encoded as it is tagged, and again moments later when its labels
    come back on the training topic (every worker learns every label): tokenizing is most
    of the encoder's cost (docs/benchmarks.md). Kept by the ticket's id and the hash of its
    reading (a text that changed is encoded anew), the oldest let go beyond ``size``
    (1.3 KB a reading at 256 dimensions). The encoder gives each text the same row in
    any batch, so a kept row is the row encoding it again would give.

    >>> from pipeline.text.embedding import shared_encoder
    >>> readings, encoder = EncodedReadings(size=2), shared_encoder()
    >>> first = readings.encode(encoder, [{"id": "1", "subject": "Export fails", "body": "since the update"}])
    >>> again = readings.encode(encoder, [{"id": "1", "subject": "Export fails", "body": "since the update"}])
    >>> bool((first[0] == again[0]).all()), readings.hits
    (True, 1)
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.hits = 0
        self._kept: OrderedDict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def encode(
        self, encoder: TicketEncoder, tickets: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`TicketEncoder.encode_with_tokens` of each ticket's reading."""
        texts = [document_reading(t) for t in tickets]
        keys = [(str(t.get("id")), hash(text)) for t, text in zip(tickets, texts, strict=True)]
        found = [self._kept.get(key) for key in keys]
        missing = [i for i, row in enumerate(found) if row is None]
        self.hits += len(keys) - len(missing)
        # a training example carries the ids its reading was tokenized into (packed, where it
        # was tagged: :meth:`LinearTagger.packed_tokens`): every worker learning it embeds them
        carried_ids = {i: _carried_tokens(tickets[i], encoder) for i in missing}
        carried = [i for i in missing if carried_ids[i] is not None]
        fresh = [i for i in missing if carried_ids[i] is None]
        if carried:
            token_rows = [cast(np.ndarray, carried_ids[i]) for i in carried]
            lengths = np.fromiter(map(len, token_rows), dtype=np.int64, count=len(token_rows))
            self._keep(keys, found, carried, encoder.embed_tokens(np.concatenate(token_rows), lengths), token_rows)
        if fresh:
            encoded, ids, lengths = encoder.encode_with_tokens([texts[i] for i in fresh])
            ends = np.cumsum(lengths)
            self._keep(keys, found, fresh, encoded, [ids[e - n : e] for e, n in zip(ends, lengths, strict=True)])
        rows = [row for row in found if row is not None]
        if not rows:
            return encoder.encode_with_tokens([])
        dense = np.stack([row[0] for row in rows])
        token_ids = np.concatenate([row[1] for row in rows]).astype(np.int32, copy=False)
        return dense, token_ids, np.fromiter((len(row[1]) for row in rows), dtype=np.int64, count=len(rows))

    def _keep(
        self,
        keys: list[tuple[str, int]],
        found: list[tuple[np.ndarray, np.ndarray] | None],
        rows: list[int],
        encoded: np.ndarray,
        ids: list[np.ndarray],
    ) -> None:
        for j, i in enumerate(rows):
            found[i] = row = (encoded[j].copy(), ids[j].copy())
            self._kept[keys[i]] = row
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)

    def token_ids(self, ticket: Mapping[str, Any]) -> np.ndarray | None:
        """The token ids of a ticket's reading, when it was encoded lately (else ``None``)."""
        row = self._kept.get((str(ticket.get("id")), hash(document_reading(ticket))))
        return None if row is None else row[1]


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
    remember_seconds
        How long, in event time behind the newest labelled ticket, the labels learned for a
        ticket id are remembered (to learn a re-sent ticket's labels once and tell a
        correction from a new label); ``None``: the last million. The worker's: the label
        horizon and a day (a later label cannot be joined to its text anyway).

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
        remember_seconds: float | None = None,
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
        #: ``(ticket id, field)`` -> (the label learned, the ticket's event time): a re-sent
        #: ticket's labels are not learned twice, a correction is told from a new label
        self._taught: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self.max_remembered = 1_000_000
        #: how long (event time) a ticket's labels are remembered after the newest learned;
        #: ``None``: up to ``max_remembered`` (the worker's: the label horizon and a day)
        self.remember_seconds = remember_seconds
        self._newest = 0.0
        self.corrections = 0
        #: per field, the labels scored but not yet learned (fewer than ``batch``; :meth:`_learn`)
        self._held: dict[str, tuple[Any, Any, list[str]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("encoder", "_readings")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.encoder = None  # type: ignore[assignment]  # attach() gives it back
        self.__dict__.setdefault("remember_seconds", None)
        self.__dict__.setdefault("_newest", 0.0)
        taught = self._taught
        if taught and isinstance(next(iter(taught.values())), str):  # saved before event times were kept
            self._taught = OrderedDict((k, (v, 0.0)) for k, v in taught.items())  # type: ignore[misc]

    def attach(self, encoder: TicketEncoder, what: str = "a tagger checkpoint") -> None:
        """Give a loaded tagger its encoder; refused if it learned on another model's vectors."""
        check_model_id(encoder.model_id, self.__dict__.get("model_id"), what)
        self.encoder = encoder

    def restore(self, other: LinearTagger, what: str = "the loaded tagger") -> None:
        """Become ``other`` (a checkpoint), in place, keeping this tagger's encoder; refused if
        ``other`` learned on another embedding model's vectors."""
        check_model_id(self.model_id, other.__dict__.get("model_id"), what)
        # how long labels are remembered is this worker's setting, not the checkpoint's
        kept = ("encoder", "_readings", "remember_seconds")
        self.__dict__.update({k: v for k, v in other.__dict__.items() if k not in kept})

    # -- features --------------------------------------------------------------------------

    def features(
        self, tickets: Sequence[Mapping[str, Any]], vectors: np.ndarray | None = None
    ) -> tuple[np.ndarray, sp.csr_matrix]:
        """The embedding (scaled) and the hashed n-grams of each ticket's reading, as two matrices."""
        readings = self.__dict__.get("_readings")
        if readings is None:  # not pickled: a loaded tagger starts with none
            readings = self._readings = EncodedReadings()
        encoded, ids, lengths = readings.encode(self.encoder, tickets)
        dense = encoded if vectors is None else np.asarray(vectors, dtype=np.float32)
        return dense * np.float32(self.dense_weight), token_features(ids, lengths, self.buckets)

    def packed_tokens(self, ticket: Mapping[str, Any]) -> bytes | None:
        """The token ids of a ticket's reading, packed for the pattern stage (:meth:`TicketEncoder.pack_tokens`),
        if this tagger encoded it lately: the grouper embeds them rather than tokenizing the ticket again."""
        readings = self.__dict__.get("_readings")
        return None if readings is None else self.encoder.pack_tokens(readings.token_ids(ticket))

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
        labels, probability, bins = _raw_field(model, dense, sparse)
        if bins is None:  # one class known: no margin, it says that class
            return labels, probability.tolist(), [None] * len(labels)
        confidence = self.calibration[name].confidence(bins, probability) if self.calibrate else probability
        return labels, confidence.tolist(), bins.tolist()

    # -- learning --------------------------------------------------------------------------

    def knows(self, ticket: Mapping[str, Any]) -> bool:
        """Whether every label the ticket carries was already learned for its id (a re-send)."""
        ticket_id = ticket.get("id")
        if ticket_id is None:
            return False
        return all(
            not ticket.get(name) or self._label_of((str(ticket_id), name)) == ticket.get(name) for name in self.fields
        )

    def _label_of(self, key: tuple[str, str]) -> str | None:
        """The label learned for a ``(ticket id, field)``, if remembered."""
        taught = self._taught.get(key)
        return None if taught is None else taught[0]

    def _changes(
        self, ticket: Mapping[str, Any], earlier_of: Callable[[tuple[str, str]], str | None]
    ) -> Iterator[tuple[str, str, tuple[str, str] | None, str | None]]:
        """The ticket's labels not learned before: ``(field, label, key, earlier label)``.

        ``earlier_of``: what was learned for a ``(ticket id, field)`` key (a ticket without an id
        has no key, and every label of it is new).
        """
        ticket_id = ticket.get("id")
        for name in self.fields:
            label = ticket.get(name)
            if not label:
                continue
            if ticket_id is None:
                yield name, str(label), None, None
                continue
            key = (str(ticket_id), name)
            earlier = earlier_of(key)
            if earlier != label:
                yield name, str(label), key, earlier

    def _new_labels(self, ticket: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
        """The labels not learned before for the ticket's id, and of those, the corrected ones' earlier labels."""
        fresh, earlier_of = {}, {}
        at: float | None = None
        for name, label, key, earlier in self._changes(ticket, self._label_of):
            if key is not None:
                if earlier is not None:
                    earlier_of[name] = earlier
                if at is None:
                    at = _event_time(ticket, self._newest)
                    self._newest = max(self._newest, at)
                self._taught[key] = (label, at)
                self._taught.move_to_end(key)
                if len(self._taught) > self.max_remembered:
                    self._taught.popitem(last=False)
            fresh[name] = label
        if at is not None and self.remember_seconds is not None:
            self._forget_before(self._newest - self.remember_seconds)
        return fresh, earlier_of

    def _forget_before(self, oldest: float) -> None:
        # In the order learned: a late label of an old ticket waits behind younger ones
        # until they go (the bound is approximate; every worker forgets at the same labels).
        taught = self._taught
        while taught and next(iter(taught.values()))[1] < oldest:
            taught.popitem(last=False)

    def learn_one(self, ticket: Mapping[str, Any]) -> None:
        """Learn the labels one ticket carries (:meth:`learn_batch` of one)."""
        self.learn_batch([ticket])

    def learn_batch(
        self, tickets: Sequence[Mapping[str, Any]], features: tuple[np.ndarray, sp.csr_matrix] | None = None
    ) -> int:
        """Score, then learn, the new labels of a batch (prequential, calibrated); how many were learned.

        ``features``: the batch's :meth:`features` when at hand (made for its prediction).
        Each label is scored against the ticket's ``predicted`` (the prediction made when the
        worker first saw it), or against one made now, before the batch is learned.
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
        for (_, labels, earlier_of), guesses in zip(fresh, predicted, strict=True):
            self._score(labels, earlier_of, guesses)
        return self._learn_rows([(labels, earlier_of) for _, labels, earlier_of in fresh], dense, sparse)

    def _score(self, labels: Mapping[str, str], earlier_of: Mapping[str, str], guesses: Mapping[str, Any]) -> None:
        """Score one ticket's new labels against the prediction made before they were learned.

        As :class:`~pipeline.tagging.tagger.TicketTagger` counts them: every label is scored
        (``quality``'s ``labelled``); a correction replaces the earlier label (``learned``
        stays, ``corrections`` counts it) and the earlier outcome leaves the calibration.
        """
        for name, label in labels.items():
            guess = guesses.get(name)
            margin_bin, said = _bin_of(guess), _label_of(guess)
            earlier = earlier_of.get(name)
            if earlier is not None:
                if margin_bin is not None and said is not None:
                    self.calibration[name].remove(margin_bin, said == earlier)
                self.corrections += 1
            else:
                self.learned[name] += 1
            self.quality[name].add(label, said)
            if margin_bin is not None and said is not None:
                self.calibration[name].add(margin_bin, said == label)

    def _learn_rows(
        self, fresh: Sequence[tuple[Mapping[str, str], Mapping[str, str]]], dense: np.ndarray, sparse: sp.csr_matrix
    ) -> int:
        """The models learn the scored labels of these rows (``fresh``: each row's labels and the
        labels they correct), in the rows' order; how many labels."""
        learned = 0
        for name in self.fields:
            at = [j for j, (labels, _) in enumerate(fresh) if name in labels]
            if not at:
                continue
            corrects = [name in fresh[j][1] for j in at]
            rows = (dense, sparse) if len(at) == len(fresh) else (dense[at], sparse[at])  # scipy copies rows
            self._learn(name, *rows, [fresh[j][0][name] for j in at], corrects)
            learned += len(at)
            self.version += len(at)
        return learned

    def _learn(
        self,
        name: str,
        dense: np.ndarray,
        sparse: sp.csr_matrix,
        labels: list[str],
        corrects: Sequence[bool] | None = None,
    ) -> None:
        """Learn the labels in their order: a step each ``batch`` labels, and after a correction.

        A correction ends a step (with the labels held before it), then is learned again
        until the model gives it (:meth:`_correct`); other labels wait until ``batch`` are
        held. So the steps depend on the order of the labels alone, not on how they were
        split into calls: workers that read the same labels in the same order (one training
        partition) hold the same weights, as does a worker restarted from a checkpoint (the
        held labels are in it). A label waits at most ``batch - 1`` others.
        """
        corrects = list(corrects) if corrects is not None else [False] * len(labels)
        held_dense, held_sparse, held_labels = self._held.get(name, (None, None, []))
        if held_labels:  # never a correction: a correction ends its step at once
            dense = np.vstack([held_dense, dense])
            sparse = sp.vstack([held_sparse, sparse], format="csr")
            corrects = [False] * len(held_labels) + corrects
            labels = [*held_labels, *labels]
        model = self.models[name]
        start = 0
        for end in [k + 1 for k, corrected in enumerate(corrects) if corrected]:
            for step in range(start, end, self.batch):
                stop = min(step + self.batch, end)
                model.learn_rows(dense, sparse, step, stop, labels[step:stop])
            self._correct(name, dense[end - 1 : end], sparse[end - 1 : end], labels[end - 1 : end])
            start = end
        whole = start + (len(labels) - start) // self.batch * self.batch
        for step in range(start, whole, self.batch):
            end = step + self.batch
            model.learn_rows(dense, sparse, step, end, labels[step:end])
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
        """Learn the held labels now (the end of an offline evaluation). A worker does so only at
        a step marker of its training topic (:meth:`step_held`): at a moment of its own, the step
        would depend on when it is called, which differs between workers."""
        for name, (dense, sparse, labels) in list(self._held.items()):
            if labels:
                self.models[name].learn(dense, sparse, labels)
            self._held.pop(name)

    def held(self, name: str) -> int:
        """How many labels of field ``name`` wait for their step."""
        return len(self._held.get(name, (None, None, []))[2])

    def step_held(self) -> None:
        """A step marker of the training topic: the held labels of every field are learned now,
        a step each (every worker meets the marker at the same point of the labels' order)."""
        self.flush()

    # -- the replay's and the backtest's loop --------------------------------------------------

    def process_many(self, tickets: Iterable[Mapping[str, Any]]) -> list[dict[str, dict[str, Any]]]:
        """For each ticket in order: predict, score the prediction against its labels, learn.

        Each ticket is predicted by the models as they stand after learning the tickets
        before it (and its confidence by the calibration after scoring them), as one at a
        time would; but the features are made for the whole batch in one pass, and the
        predictions a run of tickets at a time: the models change only when a field's step
        of ``batch`` labels fills or a label corrects an earlier one, so a run ends with the
        ticket whose labels do that (:meth:`_run_end`). A ticket that carries its labels
        is predicted first, then learned from.
        """
        tickets = list(tickets)
        if not tickets:
            return []
        dense, sparse = self.features(tickets)
        results: list[dict[str, dict[str, Any]]] = []
        start = 0
        while start < len(tickets):
            end = self._run_end(tickets, start)
            results += self._process_run(tickets[start:end], dense[start:end], sparse[start:end])
            start += len(results) - start
        return results

    def _run_end(self, tickets: Sequence[Mapping[str, Any]], start: int) -> int:
        """Where the run of tickets from ``start`` ends: after the first ticket whose new labels
        fill a field's step or correct a label (without learning anything), or at the end."""
        room = {name: self.batch - self.held(name) for name in self.fields}
        overlay: dict[tuple[str, str], str] = {}  # what _new_labels would have recorded so far

        def earlier_of(key: tuple[str, str]) -> str | None:
            return overlay[key] if key in overlay else self._label_of(key)

        for i in range(start, len(tickets)):
            ends = False
            for name, label, key, earlier in self._changes(tickets[i], earlier_of):
                if key is not None:
                    overlay[key] = label
                    ends = ends or earlier is not None
                room[name] -= 1
                ends = ends or room[name] == 0
            if ends:
                return i + 1
        return len(tickets)

    def _process_run(
        self, tickets: Sequence[Mapping[str, Any]], dense: np.ndarray, sparse: sp.csr_matrix
    ) -> list[dict[str, dict[str, Any]]]:
        """:meth:`process_many` of a run, over which the models do not change until its last ticket is learned.

        Its predictions, one per ticket processed: all, unless a ticket's labels change a
        model before the run's end after all (a learned id forgotten meanwhile, of the
        million remembered), where the run stops, learned.
        """
        raw = {
            name: _raw_field(model, dense, sparse)
            for name, model in self.models.items()
            if self.learned[name] and model.classes
        }
        results: list[dict[str, dict[str, Any]]] = []
        fresh: list[tuple[dict[str, str], dict[str, str]]] = []
        rows: list[int] = []
        pending: Counter[str] = Counter()  # per field, the labels of this run
        for row, ticket in enumerate(tickets):
            predicted: dict[str, dict[str, Any]] = {}
            bins_of: dict[str, int] = {}
            for name in self.fields:
                if name not in raw:
                    predicted[name] = {"label": None, "confidence": 0.0, "uncertain": True}
                    continue
                labels, probability, bins = raw[name]
                confidence = float(probability[row])
                if bins is not None:
                    bins_of[name] = int(bins[row])
                    if self.calibrate:
                        confidence = self.calibration[name].confidence_one(bins_of[name], confidence)
                uncertain = self.learned[name] < self.min_labels or confidence < self.min_confidence
                predicted[name] = {"label": labels[row], "confidence": round(confidence, 4), "uncertain": uncertain}
            results.append(predicted)
            new, earlier_of = self._new_labels(ticket)
            if new:
                self._score(new, earlier_of, predicted_labels(predicted, bins_of))
                fresh.append((new, earlier_of))
                rows.append(row)
                pending.update(new.keys())
                if earlier_of or any(self.held(name) + pending[name] >= self.batch for name in new):
                    break  # the models change here: the rest is predicted by the next run
        if fresh:
            self._learn_rows(fresh, dense[rows], sparse[rows])
        return results


def _raw_field(
    model: SoftmaxModel, dense: np.ndarray, sparse: sp.csr_matrix
) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """Each row's most likely class, its probability, and its margin bin (``None`` with one class known)."""
    scores = model.scores(dense, sparse)
    best = scores.argmax(axis=1)
    labels = [model.classes[k] for k in best.tolist()]
    top = scores[np.arange(len(best)), best]
    shifted = np.exp(scores - top[:, None])
    probability = 1.0 / shifted.sum(axis=1)
    if len(model.classes) < 2:
        return labels, probability, None
    second = -np.partition(-scores, 1, axis=1)[:, 1]
    return labels, probability, np.searchsorted(MARGIN_EDGES, top - second, side="right")
