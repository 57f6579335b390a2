"""The tagger's features: the words and word pairs of a ticket's reading, hashed into a fixed number of buckets."""

from __future__ import annotations

import functools
import itertools
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
from river import feature_extraction
from river.preprocessing import FeatureHasher
from scipy import sparse

from pipeline.text.cleaning import OPENING_CHARS, clean_text, document_reading, reading_text

#: Buckets of the hashing trick the models' features go into (``TicketTagger(feature_buckets=...)``,
#: ``TICKETPULSE_TAGGER_FEATURE_BUCKETS``): a model holds at most this many features, whatever
#: it reads. Words and word pairs without it grow with every labelled ticket (about 29 new
#: ones a labelled NLBSE'24 issue) for as long as the worker runs. 2**18 scores 0.675 on
#: NLBSE'24 against 0.680 for the words themselves (2**16: 0.672, 2**20: 0.682; docs/benchmarks.md).
FEATURE_BUCKETS = 2**18

#: Seed of the features' hash (River's ``FeatureHasher``, MurmurHash3): every worker, checkpoint
#: and saved model must put a word in the same bucket, so it is fixed, never drawn.
FEATURE_HASH_SEED = 20_260_301


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


class BatchWords:
    """A batch's features as one index: its distinct words, and each row's words as
    positions in them, built once and read by the model of every field.

    ``matrix`` is the same as a sparse (rows x words) matrix of ones (CSR): a model's
    log-likelihoods of the batch's words are one product with it.

    >>> batch = BatchWords([["refund", "charged"], [], ["refund"]])
    >>> batch.words, batch.cols.tolist(), batch.starts.tolist(), batch.filled.tolist()
    (['refund', 'charged'], [0, 1, 0], [0, 2, 2], [True, False, True])
    >>> batch.matrix.toarray().tolist()
    [[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]
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
        self._lengths = lengths

    @functools.cached_property
    def matrix(self) -> sparse.csr_array:
        """The rows' words as a sparse (rows x words) matrix of ones (CSR)."""
        # 32-bit indices when they fit, as scipy would make them: else it checks and converts (15 us a batch)
        index = np.int32 if len(self.cols) < 2**31 else np.int64
        indptr = np.zeros(self.size + 1, dtype=index)
        np.cumsum(self._lengths, out=indptr[1:])
        return sparse.csr_array(
            (np.ones(len(self.cols)), self.cols.astype(index), indptr), shape=(self.size, len(self.words))
        )


def _new_hasher(feature_buckets: int) -> FeatureHasher:
    """River's hashing trick, seeded so that every process puts a word in the same bucket."""
    return FeatureHasher(n_features=feature_buckets, seed=FEATURE_HASH_SEED, alternate_sign=False)


class FeatureBuckets:
    """The bucket of each word and word pair of a reading: River's ``FeatureHasher``, seeded.

    :meth:`features` hashes a reading's words and pairs in one call of River's hasher
    (Rust): a word's bucket is the same whichever call hashes it, and a reading needs
    only which buckets are present, not which feature filled each. Remembering each
    feature's bucket in Python instead cost more than hashing it (SUMO questions 70 us
    against 52 a reading, generated tickets 34 against 14; docs/benchmarks.md).
    :meth:`bucket` (one feature, remembered up to ``remembered``, then all forgotten)
    serves the conversion of old checkpoints (:meth:`TicketTagger.hash_features`).

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
        present = dict.fromkeys(itertools.chain(words, itertools.pairwise(words)), 1)
        return dict.fromkeys(self.hasher.transform_one(present), 1)


def _feature_buckets(feature_buckets: int | None) -> FeatureBuckets | None:
    """:class:`FeatureBuckets`, or none when the words themselves are the features."""
    return None if feature_buckets is None else FeatureBuckets(feature_buckets)


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
