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
it corrects) that every worker reads in full with its own consumer (pipeline/app.py,
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

import itertools
import logging
import re
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import pandas as pd
from river import feature_extraction, naive_bayes
from river.preprocessing import FeatureHasher

from pipeline.runtime.checkpoints import load_checkpoint, write_checkpoint

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

#: a fenced code block, as :func:`_without_code_blocks` finds them (with ``str.find``; the tests
#: compare the two)
_CODE_BLOCK = re.compile(r"```.*?```", re.S)
_QUOTED = re.compile(r"^\s*>.*$", re.M)
_STACK = re.compile(r"^\s*(at |File \"|Traceback|\w+(\.\w+)+(Error|Exception)\b).*$", re.M)
_URL = re.compile(r"https?://\S+")
_HEADER = re.compile(r"^#+ .*$", re.M)
_SIGNATURE = re.compile(r"\n(--\s*\n|(thanks|regards|best|cheers)[,!.]?\s*\n).*", re.S | re.I)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b")
#: a number: ``\b\d[\d.,:]*\b``, written to start with the digit (a digit not after a
#: word character is a digit after a word boundary) so that the regular-expression engine
#: scans for digits instead of trying a boundary at every position: 20.4 -> 9.8 us a
#: 2,000-character NLBSE'24 body, the same matches (tests/test_tagger.py)
_NUMBER = re.compile(r"\d(?<!\w\d)[\d.,:]*\b")
#: The passes after code and signatures, each with a string every match contains: a text
#: without it skips the pass. The e-mail pattern alone cost 93 us a ticket on NLBSE'24's
#: bodies (1 in 10 has an "@"); clean_text 78.5 -> 55.1 us there, the same output
#: (checked on NLBSE'24 and on generated tickets; docs/benchmarks.md).
_PASSES = ((_QUOTED, ">"), (_STACK, ""), (_URL, "://"), (_HEADER, "#"), (_EMAIL, "@"), (_NUMBER, ""))


def clean_text(subject: str, body: str, body_chars: int | None = None) -> str:
    """Subject and body with what says nothing about the case taken out.

    Code blocks, quoted replies, stack traces, URLs, form-template headings,
    signatures, e-mail addresses and numbers are removed; the subject counts twice.
    With ``body_chars``, only that many characters of the cleaned body are kept (whole
    words).

    >>> clean_text("Export fails", "It fails when I export. Steps: open, click", body_chars=24)
    'export fails export fails it fails when i export.'
    >>> clean_text("Export fails", "It fails.\\n```\\ncode\\n```\\n> old reply\\nThanks,\\nAna\\nana@x.io")
    'export fails export fails it fails.'
    """
    text = _without_code_blocks(body) if "```" in body else body
    if body_chars is None:
        text = _clean_prose(text)
    else:
        # Only the opening is cleaned when it gives enough words: a real ticket's body runs
        # to thousands of characters, of which the reading keeps a few hundred (NLBSE'24's
        # bodies: 47 -> 26 us a reading, docs/benchmarks.md). It is cut at the end of a line, where
        # no pass's match crosses but for spacing (every pass matches within a line, but
        # for a signature, which runs to the end, and the leading blanks of a quoted or
        # stack line), so the cleaned opening begins the cleaned text
        # (``tests/test_tagger.py`` checks it against cleaning everything).
        raw_chars = _RAW_OPENING_FACTOR * body_chars
        end = text.find("\n", raw_chars) + 1 if len(text) > raw_chars else 0
        opening = " ".join(_clean_prose(text[:end]).split()) if end else ""
        # the cut counts characters of words, not of spacing; an opening of mostly quotes or
        # logs that cleans down to too few words: the whole text, rather than ever longer tries
        text = opening if len(opening) > body_chars else " ".join(_clean_prose(text).split())
        if len(text) > body_chars:
            text = text[: body_chars + 1].rsplit(" ", 1)[0]  # whole words only
    return " ".join(f"{subject} {subject} {text}".lower().split())


#: The raw characters (to the end of their line) first cleaned for a reading of
#: ``body_chars``, in multiples of it. On NLBSE'24 the opening gives enough words for 760 of
#: the 858 bodies longer than that (the others are cleaned whole: quotes, logs).
_RAW_OPENING_FACTOR = 2


def _without_code_blocks(body: str) -> str:
    """``_CODE_BLOCK.sub(" ", body)``, found with ``str.find``: the regular expression tried
    its closing fence at every character of a block (1.1 ms for one 200 KB log)."""
    pieces, at = [], 0
    while (opening := body.find("```", at)) >= 0 and (closing := body.find("```", opening + 3)) >= 0:
        pieces += [body[at:opening], " "]
        at = closing + 3
    return "".join(pieces) + body[at:] if pieces else body


def _clean_prose(text: str) -> str:
    """What :func:`clean_text` does after the code blocks are out."""
    text = _SIGNATURE.sub("\n", text)
    for pattern, needed in _PASSES:
        if needed in text:
            text = pattern.sub(" ", text)
    return text


#: Buckets of the hashing trick the models' features go into (``TicketTagger(feature_buckets=...)``,
#: ``TICKETPULSE_TAGGER_FEATURE_BUCKETS``): a model holds at most this many features, whatever
#: it reads. Words and word pairs without it grow with every labelled ticket (about 29 new
#: ones a labelled NLBSE'24 issue) for as long as the worker runs. 2**18 scores 0.675 on
#: NLBSE'24 against 0.680 for the words themselves (2**16: 0.672, 2**20: 0.682; docs/benchmarks.md).
FEATURE_BUCKETS = 2**18

#: Seed of the features' hash (River's ``FeatureHasher``, MurmurHash3): every worker, checkpoint
#: and saved model must put a word in the same bucket, so it is fixed, never drawn.
FEATURE_HASH_SEED = 20_260_301

#: Characters of the cleaned body the tagger reads. A ticket's opening says what the
#: case is; what follows (steps, versions, logs, pleasantries) is mostly words every
#: kind of case shares, and naive Bayes counts each as evidence: on NLBSE'24 reading the
#: first 300 gives macro-F1 0.689 against 0.651 for the whole body (200: 0.685, 400:
#: 0.677, 1000: 0.649; docs/benchmarks.md).
OPENING_CHARS = 300


def reading_text(subject: str, body: str) -> str:
    """What the tagger reads of a ticket: the cleaned subject and opening of the body.

    Every feature comes from this text alone, so it is all that travels to the label
    join and the training topic: about 300 characters, with e-mail addresses, numbers,
    quotes and signatures already out, instead of the raw body (cleaned once, by the
    worker that predicted it, not again by every worker that learns from it).

    >>> reading_text("Export fails", "It fails.\\n> old reply\\nThanks,\\nAna\\nana@x.io")
    'export fails export fails it fails.'
    """
    return clean_text(subject, body, OPENING_CHARS)


def document_reading(doc: Mapping[str, Any]) -> str:
    """A document's :func:`reading_text`: carried as ``reading``, or made from ``subject`` and ``body``."""
    reading = doc.get("reading")
    if reading is not None:
        return str(reading)
    return reading_text(str(doc.get("subject", "")), str(doc.get("body", "")))


def reading_features(text: str) -> dict[str, float]:
    """The words and word pairs of a :func:`reading_text` (see :func:`ticket_features`)."""
    words: list[Any] = _TOKEN.findall(text)
    features: dict[Any, float] = dict.fromkeys(words, 1)
    features.update(dict.fromkeys(itertools.pairwise(words), 1))
    return features


def ticket_features(subject: str, body: str, extractor: Any = None) -> dict[str, float]:
    """The words and word pairs of the cleaned text, each 1: computed once, used by every field.

    Presence, not counts: with naive Bayes this is "binarised" multinomial NB (Wang and
    Manning, 2012), +0.044 macro-F1 on NLBSE'24 (docs/benchmarks.md): a stack trace or
    a pasted log that repeats one word fifty times no longer outvotes the sentence
    that says what the ticket is about.

    The words and pairs are those of River's ``BagOfWords(ngram_range=(1, 2),
    strip_accents=False)`` (the keys of saved models), found with one regular-expression
    pass instead of its chain of generators and a ``Counter``: 2.5 times faster
    (``tests/test_tagger.py`` checks they are the same).

    >>> ticket_features("Export fails", "fails fails fails")["fails"]
    1
    >>> ticket_features("Export fails", "")[("export", "fails")]
    1
    """
    text = reading_text(subject, body)
    if extractor is not None:
        return dict.fromkeys(extractor.transform_one(text), 1)
    return reading_features(text)


_DEFAULT_EXTRACTOR = feature_extraction.BagOfWords(ngram_range=(1, 2), strip_accents=False)
#: River's default tokenizer pattern (``VectorizerMixin.tokenizer_pattern``)
_TOKEN = re.compile(r"(?u)\b\w[\w\-]+\b")


def features_many(tickets: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The same features for a batch, as River's mini-batch API wants them (sparse DataFrame)."""
    texts = pd.Series(
        [clean_text(str(t.get("subject", "")), str(t.get("body", "")), OPENING_CHARS) for t in tickets], dtype=object
    )
    counts = cast(pd.DataFrame, _DEFAULT_EXTRACTOR.transform_many(texts))
    if counts.shape[1] == 0:
        return counts
    presence = counts.sparse.to_coo()
    presence.data[:] = 1  # presence, as ticket_features
    return pd.DataFrame.sparse.from_spmatrix(presence, index=counts.index, columns=counts.columns)


#: a tagger's attributes that belong to its process, not to its checkpoint (``hasher``: before
#: :class:`FeatureBuckets`, in stop 15's checkpoints only if pickled with it; never, since)
_PROCESS_STATE = frozenset({"_memo", "buckets", "hasher"})

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


class BatchWords:
    """A batch's features as one index: its distinct words, and each row's words as
    positions in them, built once and read by the model of every field.

    >>> batch = BatchWords([["refund", "charged"], [], ["refund"]])
    >>> batch.words, batch.cols.tolist(), batch.starts.tolist(), batch.filled.tolist()
    (['refund', 'charged'], [0, 1, 0], [0, 2, 2], [True, False, True])
    """

    def __init__(self, xs: Sequence[Iterable[Any]]) -> None:
        self.size = len(xs)
        columns: dict[Any, int] = {}
        cols: list[int] = []
        per_row: list[int] = []
        for x in xs:
            before = len(cols)
            cols.extend(columns.setdefault(f, len(columns)) for f in x)
            per_row.append(len(cols) - before)
        self.words = list(columns)
        self.cols = np.array(cols, dtype=np.intp)
        lengths = np.array(per_row, dtype=np.intp)
        self.starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.intp) if self.size else lengths
        self.filled = lengths > 0


def _new_hasher(feature_buckets: int) -> FeatureHasher:
    """River's hashing trick, seeded so that every process puts a word in the same bucket."""
    return FeatureHasher(n_features=feature_buckets, seed=FEATURE_HASH_SEED, alternate_sign=False)


class FeatureBuckets:
    """The bucket of each word and word pair of a reading: River's ``FeatureHasher``, remembered.

    A helpdesk's tickets repeat their words: hashing the same word and pair again for
    every ticket (River's hasher turns each pair into its text first) cost as much as
    finding them (7.0 us a generated ticket of 27 features, 7.5 for both with the buckets
    remembered; docs/benchmarks.md). Each feature is hashed once, by the same hasher, so
    the buckets are those of ``hasher.transform_one`` whatever was remembered; up to
    ``remembered`` features are kept, then all are forgotten and found again (no order to
    keep, nothing that depends on which tickets came first).

    >>> buckets = FeatureBuckets(2**18)
    >>> buckets.features("export fails export")  # export, fails, (export, fails), (fails, export)
    {114832: 1, 252855: 1, 137287: 1, 180738: 1}
    >>> buckets.bucket(("export", "fails")) == next(iter(buckets.hasher.transform_one({("export", "fails"): 1})))
    True
    """

    def __init__(self, n_buckets: int, remembered: int = 2**17) -> None:
        self.n_buckets = n_buckets
        self.remembered = remembered
        self.hasher = _new_hasher(n_buckets)
        self._bucket_of: dict[Any, int] = {}

    def bucket(self, feature: Any) -> int:
        """The bucket of one word (a string) or word pair (a tuple of two)."""
        found = self._bucket_of.get(feature)
        if found is None:
            (found,) = self.hasher.transform_one({feature: 1})
            if len(self._bucket_of) >= self.remembered:
                self._bucket_of.clear()
            self._bucket_of[feature] = found
        return found

    def features(self, text: str) -> dict[Any, float]:
        """:func:`reading_features` of ``text``, in buckets: each bucket present counts 1."""
        words: list[Any] = _TOKEN.findall(text)
        bucket_of, bucket = self._bucket_of.get, self.bucket
        out: dict[Any, float] = {}
        for feature in itertools.chain(words, itertools.pairwise(words)):
            found = bucket_of(feature)
            out[bucket(feature) if found is None else found] = 1
        return out


def _feature_buckets(feature_buckets: int | None) -> FeatureBuckets | None:
    """:class:`FeatureBuckets`, or none when the words themselves are the features."""
    return None if feature_buckets is None else FeatureBuckets(feature_buckets)


def _default_model() -> Any:
    # Chosen on NLBSE'24 (docs/benchmarks.md): multinomial naive Bayes on the words
    # present in the cleaned text, 0.669 macro-F1 (0.625 on counts); ComplementNB scored
    # about as well but ran at 68 issues/s; online logistic regression 0.642.
    return AlignedMultinomialNB(alpha=1.0)


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


class FeatureMemo:
    """The features of the texts seen lately, each computed once.

    A labelled ticket is predicted as it arrives, and learned moments later when its
    labels come back on the training topic: the same text was tokenised twice (each
    time about 5 % of the worker's samples in py-spy; end to end 1,759 -> 1,799-1,865
    messages/s, docs/benchmarks.md). Keyed by the ticket id and the hash of its
    ``reading`` (:func:`document_reading`; of its subject and body for a document
    without one), no text held, so a text that changed is computed anew. The oldest
    entries go first beyond ``size``.

    >>> memo = FeatureMemo(size=2)
    >>> a = memo.features([{"id": "1", "subject": "Export fails", "body": ""}])[0]
    >>> memo.features([{"id": "1", "subject": "Export fails", "body": ""}])[0] is a
    True
    """

    def __init__(self, size: int = 20_000, featurize: Callable[[str], dict[Any, float]] = reading_features) -> None:
        self.size = size
        self.featurize = featurize
        # ordered, so that the oldest goes in O(1): ``del d[next(iter(d))]`` on a plain dict
        # scans the deleted slots at its front each time (3.25 against 0.23 us an insertion
        # at 20,000 entries; docs/benchmarks.md)
        self._memo: OrderedDict[tuple[Any, ...], dict[Any, float]] = OrderedDict()

    def features(self, tickets: Sequence[Mapping[str, Any]]) -> list[dict[Any, float]]:
        """``featurize`` (:func:`reading_features` unless told) of each ticket's reading."""
        out = []
        memo = self._memo
        for ticket in tickets:
            reading = ticket.get("reading")
            if reading is not None:
                key: tuple[Any, ...] = (str(ticket.get("id")), hash(reading))
            else:
                key = (str(ticket.get("id")), hash(ticket.get("subject")), hash(ticket.get("body")))
            x = memo.get(key)
            if x is None:
                x = memo[key] = self.featurize(document_reading(ticket))
                if len(memo) > self.size:
                    memo.popitem(last=False)
            out.append(x)
        return out


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
        self.feature_buckets, self.buckets = feature_buckets, buckets
        self._memo = FeatureMemo(featurize=self.features)

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
        model.class_counts[label] -= 1
        for f, frequency in x.items():
            counts = model.feature_counts.get(f)
            # a re-sent ticket's text may have changed since: never below zero
            taken = min(frequency, counts.get(label, 0)) if counts is not None else 0
            if taken:
                counts[label] -= taken
                model.class_totals[label] -= taken
        if model.class_counts[label] <= 0:
            # a class with no example left would have probability zero (log of 0)
            del model.class_counts[label]
            del model.class_totals[label]
            for counts in model.feature_counts.values():
                counts.pop(label, None)
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
        """
        results = []
        for ticket in tickets:
            x = self.features(document_reading(ticket))
            (predicted,), (bins,) = self.predict_binned([{}], [x])
            labels = self._new_labels(ticket)
            for name, label in labels.items():
                # scored before it is learned: a label never helps predict its own ticket
                guess = predicted[name]["label"]
                self.quality[name].add(label, guess)
                if guess is not None and name in bins:
                    self.calibration[name].add(bins[name], guess == label)
                self._learn(name, [x], [label])
            results.append(predicted)
        return results


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
