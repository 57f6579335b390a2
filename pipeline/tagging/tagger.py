"""Online tagging: case type, product area and severity from a ticket's words.

One River model per field, all fed by features computed once per ticket
(:func:`ticket_features`). Each model learns online from every label: fields the
helpdesk filled in, and tags agents send later. A prediction carries its confidence
and is marked ``uncertain`` until the model has seen enough labels, or when the
confidence is under a threshold: those are the tickets that need a human tag.

Quality is measured while it runs (prequential): each label is first scored against
what the model predicted before learning from it.

Several workers: labels are broadcast, not snapshots. Every labelled example goes to a
training topic (in the partition of its ticket id, so a correction comes after the tag
it corrects) that every worker reads in full with its own consumer (:mod:`pipeline.tagging.learn`,
``learn_labels``). Naive Bayes is counts, so the order across partitions does not
matter: two workers that have read the same labels hold the same counts and make the
same prediction. Snapshots from one learner would make every other worker lag by a
snapshot interval and ship the whole model each time; a label is a few hundred bytes.
A correction replaces the earlier tag (:meth:`TicketTagger._forget` subtracts its
counts). Each worker checkpoints its models with the training offsets they include
(:func:`save_tagger`), so a restart resumes rather than relearns.

Bounded state: the features are hashed into :data:`FEATURE_BUCKETS` buckets, not pruned.
Pruning rare words when a model grows would depend on which labels a worker had read
by then, which differs between workers (the training partitions interleave
differently), and workers would no longer agree; a bucket is a function of the word
alone, with a fixed seed, so counts still commute.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from river import naive_bayes

from pipeline.runtime.checkpoints import load_checkpoint, write_checkpoint
from pipeline.tagging.features import (  # noqa: F401 - names pickles and callers use
    FEATURE_BUCKETS,
    FEATURE_HASH_SEED,
    BatchWords,
    FeatureBuckets,
    FeatureMemo,
    _feature_buckets,
    _new_hasher,
    features_many,
    reading_features,
    ticket_features,
)
from pipeline.tagging.naive_bayes import SMALL_BATCH, AlignedMultinomialNB, _default_model
from pipeline.tagging.quality import (  # noqa: F401 - names pickles and callers use
    MARGIN_EDGES,
    PRIOR_OUTCOMES,
    Calibration,
    Prequential,
    _bin_of,
    _first_prediction,
    _label_of,
    margin_bins,
    predicted_labels,
)
from pipeline.text.cleaning import OPENING_CHARS, clean_text, document_reading, reading_text  # noqa: F401

__all__ = [
    "FEATURE_BUCKETS",
    "FIELDS",
    "FeatureMemo",
    "Prequential",
    "TicketTagger",
    "clean_text",
    "document_reading",
    "load_tagger",
    "predicted_labels",
    "reading_features",
    "reading_text",
    "save_tagger",
    "ticket_features",
]

FIELDS = ("case_type", "product_area", "severity")

#: a tagger's attributes that belong to its process, not to its checkpoint (``hasher``: before
#: :class:`FeatureBuckets`, in stop 15's checkpoints only if pickled with it; never, since)
_PROCESS_STATE = frozenset({"_memo", "buckets", "hasher"})


def _best(classes: list[Any], proba: np.ndarray, n: int) -> tuple[list[Any], list[float]]:
    """The most probable class of each row, and its probability."""
    if not classes:
        return [None] * n, [0.0] * n
    best = proba.argmax(axis=1)
    return [classes[k] for k in best], proba[np.arange(n), best].tolist()


def _predict_batch(model: Any, xs: Sequence[Mapping[str, float]]) -> tuple[list[Any], list[float]]:
    """The most probable label and its probability, per ticket, from any River classifier."""
    if isinstance(model, AlignedMultinomialNB):
        return _best(*model.predict_proba_present(xs), len(xs))
    # another River model (``model_factory``): River's per-example API, which every classifier has
    # among equals the first by name, as the batch path
    best_of = [
        max(sorted(p.items()), key=lambda kv: kv[1]) if p else (None, 0.0) for p in map(model.predict_proba_one, xs)
    ]
    return [label for label, _ in best_of], [float(confidence) for _, confidence in best_of]


class TicketTagger:
    """Three online classifiers (case type, product area, severity) over shared features.

    Parameters
    ----------
    min_labels
        Labels a field's model must have learned before its predictions count as more
        than a guess (``uncertain`` until then).
    min_confidence
        Predictions under this probability are marked ``uncertain``.
    model_factory
        Makes one River classifier per field (default: multinomial naive Bayes, chosen
        on the NLBSE'24 data: docs/benchmarks.md).
    feature_buckets
        The words and word pairs go through River's ``FeatureHasher`` into this many
        buckets (:data:`FEATURE_BUCKETS`), so each model holds at most this many
        features however long it learns; ``None`` keeps the words themselves (a
        vocabulary that grows with every labelled ticket). Workers that share labels
        must use the same number.
    calibrate
        A prediction's confidence is how often earlier predictions made with the same
        margin were right (:class:`Calibration`); ``False`` gives the model's own
        probability, which naive Bayes puts near 1 for most tickets, right or wrong.

    Examples
    --------
    >>> tagger = TicketTagger(min_labels=2)
    >>> tagger.predict_one({"subject": "Refund", "body": "charged twice"})["case_type"]
    {'label': None, 'confidence': 0.0, 'uncertain': True}
    >>> for s, b, c in [("Charged twice", "refund my card", "billing"), ("App crashes", "error on start", "bug")] * 3:
    ...     tagger.learn_one({"subject": s, "body": b, "case_type": c})
    >>> tagger.predict_one({"subject": "I was charged twice", "body": "please refund"})["case_type"]["label"]
    'billing'
    """

    def __init__(
        self,
        min_labels: int = 20,
        min_confidence: float = 0.5,
        model_factory: Callable[[], Any] = _default_model,
        feature_buckets: int | None = FEATURE_BUCKETS,
        calibrate: bool = True,
    ) -> None:
        if feature_buckets is not None and feature_buckets < 1:
            raise ValueError(f"feature_buckets must be a positive number of buckets or None, got {feature_buckets}")
        self.min_labels = min_labels
        self.min_confidence = min_confidence
        self.model_factory = model_factory
        self.feature_buckets = feature_buckets
        self.calibrate = calibrate
        self.buckets = _feature_buckets(feature_buckets)
        self.models = {f: model_factory() for f in FIELDS}
        self._bound_models()
        self.learned = dict.fromkeys(FIELDS, 0)
        self.quality = {f: Prequential() for f in FIELDS}
        self.calibration = {f: Calibration() for f in FIELDS}
        self.version = 0
        # (ticket id, field) -> label learned: a re-sent ticket teaches nothing twice
        self._taught: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.max_remembered = 1_000_000
        self.corrections = 0
        self.corrections_not_forgotten = 0
        self._memo = FeatureMemo(featurize=self.features)

    def __getstate__(self) -> dict[str, Any]:
        # the memo is a cache of this process (string hashes differ between processes);
        # the buckets (a hasher and what it found) are made again from their number
        return {k: v for k, v in self.__dict__.items() if k not in _PROCESS_STATE}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # saved before features were hashed (before 2026-11-30, stop 15): the words themselves, until
        # load_tagger puts them into the worker's buckets (:meth:`hash_features`)
        state = {k: v for k, v in state.items() if k not in _PROCESS_STATE}
        state.setdefault("feature_buckets", None)
        # saved before calibration (2026-11-30, stop 18): it starts from no outcome counted
        state.setdefault("calibrate", True)
        state.setdefault("calibration", {f: Calibration() for f in FIELDS})
        self.__dict__.update(state)
        self.buckets = _feature_buckets(self.feature_buckets)
        self._memo = FeatureMemo(featurize=self.features)
        self._bound_models()

    def _bound_models(self) -> None:
        """Tell each naive Bayes model how many features it can hold (its dense array's rows, at most)."""
        for model in self.models.values():
            if isinstance(model, AlignedMultinomialNB):
                model.max_features = self.feature_buckets

    def features(self, text: str) -> dict[Any, float]:
        """The features of a :func:`reading_text`: its words and pairs, in their buckets.

        >>> tagger = TicketTagger(feature_buckets=2**18)
        >>> sorted(tagger.features("export fails"))  # export, fails, (export, fails)
        [114832, 137287, 252855]
        >>> sorted(TicketTagger(feature_buckets=None).features("export fails"), key=str)
        [('export', 'fails'), 'export', 'fails']
        """
        if self.buckets is None:
            return reading_features(text)
        # presence: two of a ticket's features in one bucket still count once
        return self.buckets.features(text)

    def hash_features(self, feature_buckets: int) -> None:
        """Put the words of models saved before hashing into ``feature_buckets`` buckets.

        Each word's counts are added to its bucket's, so the models are those that
        learning the same labels in buckets would have made (but for two words of one
        ticket that share a bucket, which that would have counted once).
        """
        if self.buckets is not None:
            raise ValueError(f"the models' features are hashed already ({self.feature_buckets} buckets)")
        for model in self.models.values():
            if not isinstance(model, naive_bayes.MultinomialNB):
                raise ValueError(f"cannot move the features of a {type(model).__name__} into buckets")
        buckets = FeatureBuckets(feature_buckets)
        for model in self.models.values():
            merged: dict[Any, Counter[Any]] = {}
            for feature, counts in model.feature_counts.items():
                merged.setdefault(buckets.bucket(feature), Counter()).update(counts)
            model.feature_counts.clear()
            model.feature_counts.update(merged)
            if isinstance(model, AlignedMultinomialNB):
                model.forgot([], classes_removed=True)  # every row moved: its dense counts are read again
        self.feature_buckets, self.buckets = feature_buckets, buckets
        self._memo = FeatureMemo(featurize=self.features)
        self._bound_models()

    def _predict(self, features: Mapping[str, float]) -> dict[str, dict[str, Any]]:
        return self.predict_many([{}], [features])[0]

    def _learn(self, name: str, xs: Sequence[Mapping[str, float]], ys: Sequence[str]) -> None:
        model = self.models[name]
        if isinstance(model, AlignedMultinomialNB):
            model.learn_present(xs, ys)
        else:
            for x, y in zip(xs, ys, strict=True):
                model.learn_one(x, y)
        self.learned[name] += len(ys)
        self.version += len(ys)

    def predict_one(self, ticket: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Predictions for one ticket (it learns nothing)."""
        return self._predict(self.features(document_reading(ticket)))

    def knows(self, ticket: Mapping[str, Any]) -> bool:
        """Whether every label the ticket carries was already learned for its id (a re-send)."""
        ticket_id = ticket.get("id")
        if ticket_id is None:
            return False
        ticket_id, taught = str(ticket_id), self._taught
        for name in FIELDS:  # a loop, not all(...): it runs for every labelled ticket
            label = ticket.get(name)
            if label and taught.get((ticket_id, name)) != label:
                return False
        return True

    def _new_labels(self, ticket: Mapping[str, Any]) -> dict[str, str]:
        """The labels of ``ticket`` not learned before for its id (all, without an id).

        A label that differs from the one learned earlier for the same id is a
        correction: the earlier one is forgotten first (:meth:`_forget`), so the
        correction replaces it rather than adding to it.
        """
        ticket_id = ticket.get("id")
        fresh = {}
        for name in FIELDS:
            label = ticket.get(name)
            if not label:
                continue
            if ticket_id is not None:
                key = (str(ticket_id), name)
                earlier = self._taught.get(key)
                if earlier == label:
                    continue
                if earlier is not None:
                    self._forget(name, ticket, earlier)
                self._taught[key] = str(label)
                self._taught.move_to_end(key)
                if len(self._taught) > self.max_remembered:
                    self._taught.popitem(last=False)
            fresh[name] = str(label)
        return fresh

    def _forget(self, name: str, ticket: Mapping[str, Any], label: str) -> None:
        """Take back what the model of ``name`` learned from ``ticket`` as ``label``.

        Multinomial naive Bayes is counts, so forgetting is subtracting them: the model
        ends as if it had never seen that example. Other models cannot forget; for them
        a correction adds evidence. The earlier label's outcome leaves the calibration
        too, when the ticket carries the prediction both were scored against (as the
        worker's examples do: the label join keeps a ticket's first prediction).
        """
        guess = _first_prediction(ticket.get("predicted")).get(name)
        margin_bin, predicted = _bin_of(guess), _label_of(guess)
        if margin_bin is not None and predicted is not None:
            self.calibration[name].remove(margin_bin, predicted == label)
        model = self.models[name]
        if not isinstance(model, naive_bayes.MultinomialNB):
            self.corrections_not_forgotten += 1
            return
        x = self._memo.features([ticket])[0]
        total = model.class_totals[label]
        model.class_counts[label] -= 1
        for f, frequency in x.items():
            counts = model.feature_counts.get(f)
            # a re-sent ticket's text may have changed since: never below zero
            taken = min(frequency, counts.get(label, 0)) if counts is not None else 0
            if taken:
                counts[label] -= taken
                model.class_totals[label] -= taken
        removed = model.class_counts[label] <= 0
        if removed:
            # a class with no example left would have probability zero (log of 0)
            del model.class_counts[label]
            del model.class_totals[label]
            for counts in model.feature_counts.values():
                counts.pop(label, None)
        if isinstance(model, AlignedMultinomialNB):
            model.forgot(list(x), classes_removed=removed, totals={label: (total, model.class_totals.get(label, 0))})
        self.learned[name] -= 1
        self.corrections += 1

    def restore(self, other: TicketTagger) -> None:
        """Become ``other`` (a checkpoint or a warm-start model), in place: agents hold this object."""
        self.__dict__.update({k: v for k, v in other.__dict__.items() if k != "_memo"})
        self._memo = FeatureMemo(featurize=self.features)

    def learn_one(self, ticket: Mapping[str, Any], features: Mapping[str, float] | None = None) -> None:
        """Learn from the labels the ticket carries, unless learned already for its id.

        A different label for the same id (a correction) is learned too; naive Bayes
        cannot forget the earlier one, so a correction adds evidence rather than
        replacing it.
        """
        labels = self._new_labels(ticket)
        if not labels:
            return
        x = features if features is not None else self.features(document_reading(ticket))
        for name, label in labels.items():
            self.models[name].learn_one(x, label)
            self.learned[name] += 1
            self.version += 1

    def predict_many(
        self, tickets: Sequence[Mapping[str, Any]], features: Sequence[Mapping[str, float]] | None = None
    ) -> list[dict[str, dict[str, Any]]]:
        """Predictions for a batch (the worker's path); ``features`` of :func:`ticket_features`, if at hand."""
        return self.predict_binned(tickets, features)[0]

    def predict_binned(
        self, tickets: Sequence[Mapping[str, Any]], features: Sequence[Mapping[str, float]] | None = None
    ) -> tuple[list[dict[str, dict[str, Any]]], list[dict[str, int]]]:
        """:meth:`predict_many`, and each prediction's margin bin per field (:class:`Calibration`;
        none for a field not predicted yet, or by a model other than naive Bayes)."""
        out: list[dict[str, dict[str, Any]]] = [{} for _ in tickets]
        bins_of: list[dict[str, int]] = [{} for _ in tickets]
        if not tickets:
            return out, bins_of
        xs = features if features is not None else self._memo.features(tickets)
        batch: BatchWords | None = None
        for name, model in self.models.items():
            if not self.learned[name]:
                for row in out:
                    row[name] = {"label": None, "confidence": 0.0, "uncertain": True}
                continue
            if isinstance(model, AlignedMultinomialNB):
                batch = batch or BatchWords(xs)  # once for every field
                classes, proba = model.predict_proba_indexed(batch)
                labels, confidences = _best(classes, proba, len(xs))
                # a model that knows one class has no margin: it says that class, whatever the ticket
                if len(classes) > 1:
                    bins = margin_bins(proba)
                    if self.calibrate:
                        confidences = self.calibration[name].confidence(bins, np.asarray(confidences)).tolist()
                    for row_bins, margin_bin in zip(bins_of, bins.tolist(), strict=True):
                        row_bins[name] = margin_bin
            else:
                labels, confidences = _predict_batch(model, xs)
            for row, label, confidence in zip(out, labels, confidences, strict=True):
                uncertain = label is None or self.learned[name] < self.min_labels or confidence < self.min_confidence
                row[name] = {"label": label, "confidence": round(float(confidence), 4), "uncertain": uncertain}
        return out, bins_of

    def learn_batch(self, tickets: Sequence[Mapping[str, Any]]) -> int:
        """Score, then learn, the new labels of a batch; how many were learned.

        Prequential: every label is scored against the prediction made before it was
        learned: the ticket's ``predicted`` (made when the worker first saw it), or one
        made now, before this batch is learned; and counted in the field's
        :class:`Calibration` under the margin bin that prediction was made with. Features
        are computed once per ticket, for every field.
        """
        fresh = [(i, self._new_labels(t)) for i, t in enumerate(tickets)]
        fresh = [(i, labels) for i, labels in fresh if labels]
        if not fresh:
            return 0
        batch = [tickets[i] for i, _ in fresh]
        xs = self._memo.features(batch)
        if all("predicted" in t for t in batch):
            predicted = [_first_prediction(t["predicted"]) for t in batch]
        else:
            predicted = [predicted_labels(p, b) for p, b in zip(*self.predict_binned(batch, xs), strict=True)]
        learned = 0
        for name in FIELDS:
            rows = [j for j, (_, labels) in enumerate(fresh) if name in labels]
            if not rows:
                continue
            ys = [fresh[j][1][name] for j in rows]
            calibration = self.calibration[name]
            for j, y in zip(rows, ys, strict=True):
                guess = predicted[j].get(name)
                label = _label_of(guess)
                self.quality[name].add(y, label)
                margin_bin = _bin_of(guess)
                if margin_bin is not None and label is not None:
                    calibration.add(margin_bin, label == y)
            self._learn(name, [xs[j] for j in rows], ys)
            learned += len(rows)
        return learned

    def process_many(self, tickets: Iterable[Mapping[str, Any]]) -> list[dict[str, dict[str, Any]]]:
        """For each ticket in order: predict, score the prediction against its labels, learn.

        This is the worker's and the replay's loop: features are computed once per ticket.
        Each ticket is predicted by the models as they stand after learning the tickets
        before it, but the predictions are computed a run of tickets at a time (one
        sparse product a field, :meth:`AlignedMultinomialNB.predict_proba_learning`): a
        run ends after a ticket that corrects an earlier label, as forgetting it changes
        the models in a way the run did not foresee.
        """
        tickets = list(tickets)
        naive_bayes_only = all(isinstance(model, AlignedMultinomialNB) for model in self.models.values())
        if len(tickets) < SMALL_BATCH or not naive_bayes_only:
            # a ticket or two (the replay's): one at a time costs less than the arrays' fixed costs
            return [self._process_one(ticket, self.features(document_reading(ticket))) for ticket in tickets]
        xs = [self.features(document_reading(ticket)) for ticket in tickets]
        results: list[dict[str, dict[str, Any]]] = []
        start = 0
        while start < len(tickets):
            start = self._process_run(tickets, xs, start, results)
        return results

    def _process_one(self, ticket: Mapping[str, Any], x: Mapping[str, float]) -> dict[str, dict[str, Any]]:
        """:meth:`process_many` of one ticket: predicted, scored, learned (a small batch, or models other than ours)."""
        (predicted,), (bins,) = self.predict_binned([{}], [x])
        for name, label in self._score(ticket, predicted, bins).items():
            self._learn(name, [x], [label])
        return predicted

    def _score(
        self, ticket: Mapping[str, Any], predicted: Mapping[str, Any], bins: Mapping[str, int]
    ) -> dict[str, str]:
        """Score a ticket's prediction against its new labels (to be learned next); the labels."""
        labels = self._new_labels(ticket)
        for name, label in labels.items():
            # scored before it is learned: a label never helps predict its own ticket
            guess = predicted[name]["label"]
            self.quality[name].add(label, guess)
            if guess is not None and name in bins:
                self.calibration[name].add(bins[name], guess == label)
        return labels

    def _planned_labels(self, tickets: Sequence[Mapping[str, Any]], start: int) -> list[dict[str, str]]:
        """:meth:`_new_labels` of the tickets from ``start`` on, as they will be, without learning
        anything; up to the first ticket that corrects an earlier label (included)."""
        planned: list[dict[str, str]] = []
        overlay: dict[tuple[str, str], str] = {}
        taught = self._taught
        for ticket in tickets[start:]:
            ticket_id = ticket.get("id")
            fresh: dict[str, str] = {}
            corrects = False
            for name in FIELDS:
                label = ticket.get(name)
                if not label:
                    continue
                if ticket_id is not None:
                    key = (str(ticket_id), name)
                    earlier = overlay[key] if key in overlay else taught.get(key)
                    if earlier == label:
                        continue
                    corrects = corrects or earlier is not None
                    overlay[key] = str(label)
                fresh[name] = str(label)
            planned.append(fresh)
            if corrects:
                break
        return planned

    def _process_run(
        self,
        tickets: Sequence[Mapping[str, Any]],
        xs: Sequence[Mapping[str, float]],
        start: int,
        results: list[dict[str, dict[str, Any]]],
    ) -> int:
        """:meth:`process_many` of the tickets from ``start`` to the end of a run; where the next run starts."""
        planned = self._planned_labels(tickets, start)
        end = start + len(planned)
        batch = BatchWords(xs[start:end])
        fields = {}
        for name, model in self.models.items():
            classes, proba, n_classes = model.predict_proba_learning(batch, [p.get(name) for p in planned])
            best = proba.argmax(axis=1) if classes else np.zeros(len(planned), dtype=np.intp)
            confidence = proba[np.arange(len(planned)), best] if classes else np.zeros(len(planned))
            with np.errstate(invalid="ignore"):  # rows of one class or none have no margin (and take none)
                bins = margin_bins(proba) if classes else best
            fields[name] = (classes, best.tolist(), confidence.tolist(), bins.tolist(), n_classes.tolist())
        run = _RunLearning(self, batch, xs[start:end])
        for offset in range(len(planned)):
            i = start + offset
            predicted: dict[str, dict[str, Any]] = {}
            bins_of: dict[str, int] = {}
            for name in self.models:
                learned = self.learned[name]
                if not learned:
                    predicted[name] = {"label": None, "confidence": 0.0, "uncertain": True}
                    continue
                classes, best, confidences, bins, n_classes = fields[name]
                label, confidence = (classes[best[offset]], confidences[offset]) if n_classes[offset] else (None, 0.0)
                # a model that knows one class has no margin: it says that class, whatever the ticket
                if n_classes[offset] > 1:
                    bins_of[name] = bins[offset]
                    if self.calibrate:
                        confidence = self.calibration[name].confidence_one(bins[offset], confidence)
                uncertain = label is None or learned < self.min_labels or confidence < self.min_confidence
                predicted[name] = {"label": label, "confidence": round(float(confidence), 4), "uncertain": uncertain}
            if offset == len(planned) - 1:
                run.learn()  # the last may correct a label the run learned: forgotten from the models
            labels = self._score(tickets[i], predicted, bins_of)
            run.add(offset, labels)
            results.append(predicted)
            if labels != planned[offset]:  # not as foreseen (an id forgotten meanwhile): the rest predicted anew
                run.learn()
                return i + 1
        run.learn()
        return end


class _RunLearning:
    """The labels of a run of tickets (:meth:`TicketTagger.process_many`), learned by the models at once.

    Its predictions were all made before (from the labels it would learn): the models
    need the labels only by the end of the run, or before a ticket forgets one.
    """

    def __init__(self, tagger: TicketTagger, batch: BatchWords, xs: Sequence[Mapping[str, float]]) -> None:
        self.tagger, self.batch, self.xs = tagger, batch, xs
        self.labels: dict[str, list[str | None]] = {name: [None] * batch.size for name in tagger.models}

    def add(self, row: int, labels: Mapping[str, str]) -> None:
        """The new labels of one row, counted as learned now."""
        for name, label in labels.items():
            self.labels[name][row] = label
            self.tagger.learned[name] += 1
            self.tagger.version += 1

    def learn(self) -> None:
        """The models learn the labels added since the last time."""
        for name, labels in self.labels.items():
            if any(y is not None for y in labels):
                model = self.tagger.models[name]
                assert isinstance(model, AlignedMultinomialNB)  # noqa: S101 - process_many runs only these
                model.learn_indexed(self.batch, self.xs, labels)
                self.labels[name] = [None] * self.batch.size


logger = logging.getLogger(__name__)


def save_tagger(tagger: TicketTagger, positions: Mapping[int, int], path: Path) -> None:
    """Write a checkpoint: the models and, per training partition, the next offset they have not learned.

    Written to a temporary file and renamed, so a worker killed mid-write leaves the
    previous checkpoint whole.
    """
    write_checkpoint({"tagger": tagger, "positions": dict(positions)}, path)
    logger.info("tagger checkpoint=%s version=%d positions=%s", path, tagger.version, dict(positions))


def load_tagger(tagger: TicketTagger, checkpoint: Path, warm_start: str | None = None) -> dict[int, int]:
    """Load the checkpoint into ``tagger`` (else the warm-start model); the positions to resume from.

    Positions are empty when there is no checkpoint: the training topic is then read
    from its beginning (labels the warm-start model learned for the same ticket ids
    are not learned twice).

    The loaded models keep ``tagger``'s feature buckets: models saved before features
    were hashed are moved into them (:meth:`TicketTagger.hash_features`); models hashed
    into another number of buckets cannot be, and raise ``ValueError`` naming both
    numbers (a worker would otherwise predict from the wrong buckets, or disagree with
    the others).
    """
    if checkpoint.exists():
        state = load_checkpoint(checkpoint.read_bytes())
        tagger.restore(_same_buckets(state["tagger"], tagger.feature_buckets, checkpoint))
        logger.info("tagger loaded=checkpoint path=%s version=%d", checkpoint, tagger.version)
        return {int(p): int(o) for p, o in state["positions"].items()}
    if warm_start:
        loaded = load_checkpoint(Path(warm_start).read_bytes())  # a model the user saved
        if not isinstance(loaded, TicketTagger):
            raise TypeError(f"{warm_start} is not a model saved by `ticketpulse replay --save-model`")
        tagger.restore(_same_buckets(loaded, tagger.feature_buckets, Path(warm_start)))
        logger.info("tagger loaded=warm-start path=%s version=%d", warm_start, tagger.version)
    return {}


def _same_buckets(loaded: TicketTagger, feature_buckets: int | None, path: Path) -> TicketTagger:
    if loaded.feature_buckets == feature_buckets:
        return loaded
    if loaded.feature_buckets is None and feature_buckets is not None:
        loaded.hash_features(feature_buckets)
        logger.info("tagger hashed=%s feature_buckets=%d", path, feature_buckets)
        return loaded
    raise ValueError(
        f"{path} holds models over {loaded.feature_buckets} feature buckets, but this worker is set to "
        f"{feature_buckets} (TICKETPULSE_TAGGER_FEATURE_BUCKETS): set it back, or remove the file to learn anew"
    )
