"""Cost of the tagger per ticket: features, prediction (three fields), learning.

    .venv/bin/python benchmarks/bench_tagger.py [--days 7] [--scale 3] [--growth 200000]
    .venv/bin/python benchmarks/bench_tagger.py --questions ../shared/data/sumo/questions-2022-2026.jsonl.gz

Generated tickets; the model first learns 3,000 labelled ones, then each step is
timed over the next 2,000 on one core.

``--growth N``: the models' state as they learn N labelled tickets that each bring
words never seen before (12 a ticket, as a helpdesk's vocabulary keeps growing: names,
versions, error codes), words as features against the tagger's buckets.

``--questions PATH``: instead, the backtest's tagging alone (``ticketpulse backtest``): the
first ``--limit`` tickets of a JSON-lines file (gzipped or not, the ticket schema) through
``TicketTagger.process_many`` in batches of the backtest's size, each ticket predicted, scored
and learned from the labels it carries; CPU time (``time.process_time``) per ticket, the
process's peak RSS, and the bytes of each field's batch arrays (:class:`DenseCounts`) at the end.
"""

from __future__ import annotations

import argparse
import gzip
import platform
import resource
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

from pipeline.tagging.tagger import TicketTagger, reading_text, ticket_features
from pipeline.testbed.generator import TicketGenerator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--scale", type=float, default=3)
    parser.add_argument("--growth", type=int, default=0, metavar="N")
    parser.add_argument("--questions", type=Path, help="JSON lines of tickets: time the backtest's tagging on them")
    parser.add_argument("--limit", type=int, default=10_000, help="tickets read from --questions")
    args = parser.parse_args()
    if args.questions:
        backtest_tagging(args.questions, args.limit)
        return
    rows = [
        t.payload
        for t in TicketGenerator(datetime(2026, 3, 2, tzinfo=UTC), days=args.days, seed=3, scale=args.scale).tickets()
        if not t.is_resend
    ]
    train, test = rows[:3000], rows[3000:5000]
    tagger = TicketTagger()
    tagger.process_many(train)
    t0 = time.perf_counter()
    feats = [tagger.features(reading_text(str(r["subject"]), str(r["body"]))) for r in test]
    t1 = time.perf_counter()
    for x in feats:
        tagger._predict(x)
    t2 = time.perf_counter()
    fresh = TicketTagger()
    t3 = time.perf_counter()
    fresh.process_many(test)
    t4 = time.perf_counter()
    n = len(test)
    batched = TicketTagger()
    t5 = time.perf_counter()
    for i in range(0, len(train), 500):
        batched.learn_batch(train[i : i + 500])
    t6 = time.perf_counter()
    batched.predict_many(test)
    t7 = time.perf_counter()
    labels = sum(1 for r in train if any(r.get(f) for f in ("case_type", "product_area", "severity")))
    print(
        f"worker path (batches of 500): learn_batch {1e6 * (t6 - t5) / labels:.0f} us/labelled ticket; "
        f"predict_many (3 fields, features included) {1e6 * (t7 - t6) / n:.0f} us/ticket"
    )
    print(f"machine: {platform.machine()}, Python {platform.python_version()}; {n} tickets after {len(train)} learned")
    big_vocabulary(test[:500])
    print(
        f"features {1e6 * (t1 - t0) / n:.0f} us/ticket; predict (3 fields) {1e6 * (t2 - t1) / n:.0f} us/ticket; "
        f"predict+learn from scratch {1e6 * (t4 - t3) / n:.0f} us/ticket = {n / (t4 - t3):,.0f} tickets/s"
    )
    if args.growth:
        growth(rows[:3000], args.growth)


def backtest_tagging(path: Path, limit: int) -> None:
    """CPU time a ticket of ``TicketTagger.process_many`` as the backtest calls it (batches of ``BATCH``)."""
    from pipeline.review.backtest import BATCH
    from pipeline.tagging.tagger import FIELDS

    opener = gzip.open if path.suffix == ".gz" else open
    docs = []
    with opener(path, "rb") as lines:
        for line in lines:
            row = orjson.loads(line)
            doc = {k: row.get(k) for k in ("id", "created_at", "customer_id", "subject", "body")}
            doc.update({f: row.get(f) for f in FIELDS})  # as the backtest's documents: None when absent
            docs.append(doc)
            if len(docs) == limit:
                break
    rss_read = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tagger = TicketTagger()
    t0 = time.process_time()
    for start in range(0, len(docs), BATCH):
        tagger.process_many(docs[start : start + BATCH])
    cpu = time.process_time() - t0
    labelled = {f: tagger.learned[f] for f in FIELDS}
    print(
        f"process_many over {len(docs):,} tickets of {path.name} in batches of {BATCH}: "
        f"{1e6 * cpu / len(docs):.0f} us CPU/ticket ({cpu:.2f} s); labels learned {labelled}; "
        f"machine: {platform.machine()}, Python {platform.python_version()}"
    )
    # ru_maxrss: kilobytes on Linux; the whole process's peak (the tickets read included)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:,.0f} MB (the {len(docs):,} tickets read included: {rss_read:,.0f} MB before tagging)")
    for name, model in tagger.models.items():
        dense = getattr(model, "_dense", None)
        if dense is None:
            continue
        arrays = {k: v for k, v in vars(dense).items() if isinstance(v, np.ndarray)}
        shapes = ", ".join(f"{k} {v.shape} {v.dtype}" for k, v in arrays.items())
        print(
            f"  {name}: {len(model.feature_counts):,} features, {len(model.class_totals)} classes; "
            f"batch arrays {sum(v.nbytes for v in arrays.values()) / 1e6:,.1f} MB ({shapes})"
        )


def growth(rows: list[dict], n: int, every: int = 500) -> None:
    """Features held and checkpoint size as the models learn ``n`` tickets in ever new words."""
    import pickle
    import random

    from tqdm import tqdm

    rng = random.Random(11)
    labelled = [r for r in rows if r.get("case_type")]
    taggers = {"words": TicketTagger(feature_buckets=None), "buckets": TicketTagger()}
    marks = {n // 4, n // 2, n}
    batch: list[dict] = []
    for i in tqdm(range(1, n + 1), unit="ticket", mininterval=1.0):
        row = labelled[i % len(labelled)]
        new_words = " ".join(f"w{rng.randrange(10**12)}" for _ in range(12))
        batch.append({**row, "id": f"G{i}", "body": f"{new_words} {row['body']}"})
        if len(batch) == every or i == n:
            for tagger in taggers.values():
                tagger.learn_batch(batch)
            batch = []
        if i in marks:
            for name, tagger in taggers.items():
                held = max(len(m.feature_counts) for m in tagger.models.values())
                models = len(pickle.dumps(tagger.models))
                t0 = time.perf_counter()
                checkpoint = pickle.dumps(tagger)  # what a checkpoint pickles (in a forked child, in the worker)
                t1 = time.perf_counter()
                pickle.loads(checkpoint)  # noqa: S301 - the bytes just made
                t2 = time.perf_counter()
                print(
                    f"{i:,} labelled tickets, {name}: {held:,} features in the largest model, "
                    f"models pickled {models / 1e6:.1f} MB, whole checkpoint {len(checkpoint) / 1e6:.1f} MB "
                    f"(pickled in {t1 - t0:.2f} s, loaded in {t2 - t1:.2f} s)"
                )


def big_vocabulary(batch: list[dict], terms: int = 200_000) -> None:
    """A batch's prediction once the model has seen about ``terms`` words: ours, and River's ``predict_proba_many``.

    A helpdesk's vocabulary (words and word pairs) keeps growing; River 0.26 builds a
    frame of all of it on every ``predict_proba_many`` call.
    """
    import random

    from river import naive_bayes

    from pipeline.tagging.tagger import AlignedMultinomialNB, features_many

    rng = random.Random(7)
    words = [f"w{i}" for i in range(terms)]
    docs = [rng.sample(words, 40) for _ in range(terms // 20)]
    ys = [rng.choice(["bug", "billing", "ux_confusion", "feature_gap"]) for _ in docs]
    ours, rivers = AlignedMultinomialNB(), naive_bayes.MultinomialNB()
    ours.learn_present(docs, ys)
    for doc, y in zip(docs, ys, strict=True):
        rivers.learn_one(dict.fromkeys(doc, 1), y)
    xs = [ticket_features(str(r["subject"]), str(r["body"])) for r in batch]
    t0 = time.perf_counter()
    ours.predict_proba_present(xs)  # the first: its dense counts made from the dicts
    t1 = time.perf_counter()
    ours.predict_proba_present(xs)
    t2 = time.perf_counter()
    rivers.predict_proba_many(features_many(batch))
    t3 = time.perf_counter()
    print(
        f"one batch of {len(batch)} with a {len(ours.feature_counts):,}-term vocabulary: "
        f"predict_proba_present {1e6 * (t2 - t1) / len(batch):.0f} us/ticket "
        f"(the first batch, dense counts made: {1e6 * (t1 - t0) / len(batch):.0f}), "
        f"River's predict_proba_many {1e6 * (t3 - t2) / len(batch):,.0f} us/ticket"
    )


if __name__ == "__main__":
    main()
