"""Patterns and tags on the static embedding (issue #26), against today's word models, on real data.

    PYTHONPATH=. .venv/bin/python benchmarks/embedding_eval.py clinc-patterns ../shared/data --split val
    PYTHONPATH=. .venv/bin/python benchmarks/embedding_eval.py clinc-tags ../shared/data --split val
    PYTHONPATH=. .venv/bin/python benchmarks/embedding_eval.py nlbse ../shared/data
    PYTHONPATH=. .venv/bin/python benchmarks/embedding_eval.py sumo ../shared/data --years 2022-2024
    PYTHONPATH=. .venv/bin/python benchmarks/embedding_eval.py cost ../shared/data

- ``clinc-patterns``: CLINC150's in-scope queries of one split, in a seeded random order,
  grouped per domain (domains play areas) with no labels; NMI and ARI of the patterns
  against the intents, and how many patterns hold 90 % of the queries.
- ``clinc-tags``: one pass over the 15,000 training queries (seeded random order,
  prequential, mini-batches), then the split scored: intent accuracy, the share of
  in-scope queries marked uncertain, and the share of out-of-scope queries marked
  uncertain (recall of ``oos`` as uncertain).
- ``nlbse``: benchmarks/nlbse_eval.py's protocol (per repository, learn 2/3 online in a
  seeded random order, score 1/3; 5 repositories x 5 seeds; mean macro-F1).
- ``sumo``: the forum's questions of the years given, in time order: product_area
  (the topic) predicted prequentially (each question predicted, then learned), and
  patterns per topic: the share of questions in patterns of 5+ customers, the patterns,
  and the largest of the last month with names and examples.
- ``cost``: CPU seconds per ticket (time.process_time) to encode, tag (predict and learn)
  and group, at SUMO's length and CLINC's.

``--model words`` runs today's models (:class:`PatternGrouper`, :class:`TicketTagger`) on
the same data. ``--model-dir`` reads another static model (made by
``deploy/build_embedding_model.py OUT [--teacher PATH] [--dims N]`` or
``benchmarks/nlbse_finetune.py``) in place of the committed one.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# OpenBLAS's threads spin on a batch's small products: 828 -> 157 us of CPU a CLINC query
# (one pass, predict and learn) with one thread, on this 2-core machine (docs/benchmarks.md)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline.patterns.grouper import PatternGrouper
from pipeline.patterns.semantic import SemanticGrouper
from pipeline.patterns.watch import grouping_key
from pipeline.tagging.linear import LinearTagger
from pipeline.tagging.tagger import OPENING_CHARS, Prequential, TicketTagger, clean_text, predicted_labels
from pipeline.text.embedding import MODEL_DIR, TicketEncoder


def nmi_ari(truth: Sequence[Any], pred: Sequence[Any]) -> tuple[float, float]:
    """Normalised mutual information (arithmetic mean of the entropies, as scikit-learn) and adjusted Rand index."""
    _, t = np.unique(np.asarray(truth, dtype=object).astype(str), return_inverse=True)
    _, p = np.unique(np.asarray(pred, dtype=object).astype(str), return_inverse=True)
    n = len(t)
    table = np.zeros((t.max() + 1, p.max() + 1))
    np.add.at(table, (t, p), 1)
    a, b = table.sum(1), table.sum(0)
    nz = table > 0
    mi = float((table[nz] / n * np.log(table[nz] * n / np.outer(a, b)[nz])).sum())
    ht = -float((a / n * np.log(a / n)).sum())
    hp = -float((b / n * np.log(b / n)).sum())
    nmi = mi / ((ht + hp) / 2) if ht + hp > 0 else 1.0

    def comb(x: np.ndarray) -> float:
        return float((x * (x - 1) / 2).sum())

    index, expected = comb(table), comb(a) * comb(b) / (n * (n - 1) / 2)
    ari = (index - expected) / ((comb(a) + comb(b)) / 2 - expected)
    return nmi, ari


def holding(sizes: Sequence[int], share: float = 0.9) -> int:
    """How many of the largest patterns hold ``share`` of the tickets."""
    ordered = sorted(sizes, reverse=True)
    total, running = sum(ordered), 0
    for k, size in enumerate(ordered, 1):
        running += size
        if running >= share * total:
            return k
    return len(ordered)


def load_clinc(data: Path) -> tuple[dict[str, Any], dict[str, str]]:
    clinc = json.loads((data / "clinc150" / "data_full.json").read_text())
    domains = json.loads((data / "clinc150" / "domains.json").read_text())
    domain_of = {intent: domain for domain, intents in domains.items() for intent in intents}
    return clinc, domain_of


def clinc_patterns(args: argparse.Namespace) -> None:
    clinc, domain_of = load_clinc(args.data)
    # "all": the 22,500 in-scope queries of the three splits, as issue #26 measured today's grouper
    rows = [*clinc["train"], *clinc["val"], *clinc["test"]] if args.split == "all" else list(clinc[args.split])
    random.Random(args.seed).shuffle(rows)
    encoder = TicketEncoder(args.model_dir)
    t0 = time.process_time()
    groupers: dict[str, Any] = {}
    assigned: list[str] = []
    for i, (text, intent) in enumerate(rows):
        area = domain_of[intent]
        if area not in groupers:
            groupers[area] = (
                PatternGrouper(threshold=args.threshold or 0.45)
                if args.model == "words"
                else SemanticGrouper(
                    encoder,
                    threshold=args.threshold or 0.3,
                    merge_threshold=args.merge or 0.5,
                    center_prior=args.center_prior,
                )
            )
        ticket = {"id": f"q{i}", "customer_id": f"c{i}", "subject": text, "body": "", "product_area": area}
        assigned.append(groupers[area].add(ticket).id)
    seconds = time.process_time() - t0
    final = [
        groupers[domain_of[intent]].pattern_of(f"q{i}").id  # type: ignore[union-attr]
        for i, (_, intent) in enumerate(rows)
    ]
    nmi, ari = nmi_ari([intent for _, intent in rows], final)
    sizes = list(Counter(final).values())
    print(
        f"clinc-patterns split={args.split} model={args.model} threshold={args.threshold} merge={args.merge}: "
        f"queries={len(rows)} NMI={nmi:.3f} ARI={ari:.3f} patterns={len(sizes)} holding_90%={holding(sizes)} "
        f"cpu_us_per_query={1e6 * seconds / len(rows):.0f}"
    )


def _tagger(args: argparse.Namespace, encoder: TicketEncoder, field: str) -> Any:
    if args.model == "words":
        return TicketTagger()
    return LinearTagger(encoder, fields=(field,), buckets=args.buckets, dense_weight=args.dense_weight, step=args.step)


def _prequential(tagger: Any, docs: list[dict[str, Any]], batch: int) -> None:
    """Predict each mini-batch, then learn it with those predictions (as the worker does)."""
    for start in range(0, len(docs), batch):
        chunk = docs[start : start + batch]
        if isinstance(tagger, LinearTagger):
            features = tagger.features(chunk)
            predictions, bins = tagger.predict_binned(chunk, features)
            chunk = [
                {**d, "predicted": predicted_labels(p, b)} for d, p, b in zip(chunk, predictions, bins, strict=True)
            ]
            tagger.learn_batch(chunk, features)
        else:
            predictions, bins = tagger.predict_binned(chunk)
            chunk = [
                {**d, "predicted": predicted_labels(p, b)} for d, p, b in zip(chunk, predictions, bins, strict=True)
            ]
            tagger.learn_batch(chunk)
    if isinstance(tagger, LinearTagger):
        tagger.flush()  # the last labels of the pass, fewer than a step's


def clinc_tags(args: argparse.Namespace) -> None:
    clinc, _ = load_clinc(args.data)
    encoder = TicketEncoder(args.model_dir)
    tagger = _tagger(args, encoder, "case_type")
    train = list(clinc["train"])
    random.Random(args.seed).shuffle(train)
    docs = [{"id": f"t{i}", "subject": text, "body": "", "case_type": intent} for i, (text, intent) in enumerate(train)]
    t0 = time.process_time()
    _prequential(tagger, docs, args.batch)
    learn_seconds = time.process_time() - t0
    scored = [{"id": f"s{i}", "subject": t, "body": ""} for i, (t, _) in enumerate(clinc[args.split])]
    oos = [{"id": f"o{i}", "subject": t, "body": ""} for i, (t, _) in enumerate(clinc[f"oos_{args.split}"])]
    predictions = tagger.predict_many(scored)
    truth = [intent for _, intent in clinc[args.split]]
    right = sum(p["case_type"]["label"] == y for p, y in zip(predictions, truth, strict=True))
    sure = [p["case_type"] for p in predictions if not p["case_type"]["uncertain"]]
    sure_right = sum(
        p["case_type"]["label"] == y for p, y in zip(predictions, truth, strict=True) if not p["case_type"]["uncertain"]
    )
    oos_uncertain = sum(p["case_type"]["uncertain"] for p in tagger.predict_many(oos))
    print(
        f"clinc-tags split={args.split} model={args.model}: accuracy={right / len(truth):.4f} "
        f"in_scope_uncertain={1 - len(sure) / len(truth):.3f} "
        f"accuracy_when_certain={sure_right / max(1, len(sure)):.4f} "
        f"oos_recall_as_uncertain={oos_uncertain / len(oos):.3f} (oos={len(oos)}) "
        f"train_prequential={tagger.quality['case_type'].summary()} learn_cpu_us={1e6 * learn_seconds / len(docs):.0f}"
    )


def nlbse(args: argparse.Namespace) -> None:
    from nlbse_eval import LABELS, load_issues

    _, by_repo = load_issues(args.data / "nlbse2024" / "issues_train.csv")
    encoder = TicketEncoder(args.model_dir)
    f1s = []
    repos = sorted(r for r in by_repo.items() if not args.repo or r[0] == args.repo)
    for _repo, all_items in repos:
        for seed in range(args.seeds):
            items = sorted(all_items, key=lambda r: r["created_at"])
            random.Random(seed).shuffle(items)
            cut = len(items) * 2 // 3
            tagger = _tagger(args, encoder, "case_type")
            docs = [
                {"id": f"i{k}", "subject": r["title"], "body": r["body"], "case_type": LABELS[r["label"]]}
                for k, r in enumerate(items)
            ]
            _prequential(tagger, docs[:cut], args.batch)
            score = Prequential(window=10_000)
            for d, p in zip(docs[cut:], tagger.predict_many(docs[cut:]), strict=True):
                score.add(d["case_type"], p["case_type"]["label"])
            f1s.append(score.macro_f1())
    per_repo = " ".join(f"{np.mean(f1s[i * args.seeds : (i + 1) * args.seeds]):.3f}" for i in range(len(repos)))
    print(
        f"nlbse model={args.model}: mean macro-F1 {np.mean(f1s):.3f} per repository [{per_repo}] (train 2/3, score 1/3)"
    )


def load_sumo(data: Path, years: str) -> list[dict[str, Any]]:
    first, _, last = years.partition("-")
    low, high = int(first), int(last or first)
    out = []
    with gzip.open(data / "sumo" / "questions-2022-2026.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            if low <= int(q["created_at"][:4]) <= high:
                out.append(q)
    return out


def sumo(args: argparse.Namespace) -> None:
    questions = load_sumo(args.data, args.years)[: args.limit or None]
    encoder = TicketEncoder(args.model_dir)
    tagger = _tagger(args, encoder, "product_area")
    field = "product_area"
    if args.model == "words":
        field = "product_area"
    groupers: dict[str, Any] = {}
    final_of: list[tuple[str, str]] = []
    whole = Prequential(window=len(questions) + 1)  # every question, not the last 1,000
    tag_s = group_s = 0.0
    for start in range(0, len(questions), args.batch):
        chunk = questions[start : start + args.batch]
        docs = [
            {"id": q["id"], "reading": clean_text(q["subject"], q["body"], args.body_chars), field: q["product_area"]}
            for q in chunk
        ]
        t0 = time.process_time()
        if isinstance(tagger, LinearTagger):
            features = tagger.features(docs)
            predictions, bins = tagger.predict_binned(docs, features)
            labelled = [
                {**d, "predicted": predicted_labels(p, b)} for d, p, b in zip(docs, predictions, bins, strict=True)
            ]
            tagger.learn_batch(labelled, features)
            vectors = features[0] / np.float32(tagger.dense_weight)
        else:
            predictions, bins = tagger.predict_binned(docs)
            tagger.learn_batch(
                [{**d, "predicted": predicted_labels(p, b)} for d, p, b in zip(docs, predictions, bins, strict=True)]
            )
            vectors = None
        t1 = time.process_time()
        for q, p in zip(chunk, predictions, strict=True):
            whole.add(q["product_area"], p[field]["label"])
        by_area: dict[str, list[int]] = defaultdict(list)
        for k, q in enumerate(chunk):
            # --by-locale: one grouper per topic and language (the model is English: other
            # languages' questions meet by language, not by problem)
            key = grouping_key(q["product_area"], q.get("locale"), args.by_locale)
            by_area[key].append(k)
        for area, rows in sorted(by_area.items()):
            if area not in groupers:
                groupers[area] = (
                    PatternGrouper()
                    if args.model == "words"
                    else SemanticGrouper(
                        encoder,
                        threshold=args.threshold or 0.3,
                        merge_threshold=args.merge or 0.5,
                        center_prior=args.center_prior,
                    )
                )
            tickets = [chunk[k] for k in rows]
            if isinstance(groupers[area], SemanticGrouper):
                groupers[area].add_many(tickets, vectors[rows])  # type: ignore[index]
            else:
                for t in tickets:
                    groupers[area].add(t)
            final_of += [(area, t["id"]) for t in tickets]
        tag_s += t1 - t0
        group_s += time.process_time() - t1
        if args.every and (start + len(chunk)) % args.every < args.batch:
            live = sum(len(g.patterns) for g in groupers.values())
            print(f"  after {start + len(chunk):,}: tag+group CPU {tag_s + group_s:.1f} s, live patterns {live:,}")
    n = len(questions)
    quality = tagger.quality[field].summary()
    # in the questions' order (final_of is in the order grouped: per batch, area by area)
    pattern_by_id = {i: groupers[a].pattern_of(i) for a, i in final_of}
    final = [pattern_by_id[q["id"]] for q in questions]
    in_5 = sum(len(p.customers) >= 5 for p in final)
    patterns = sum(len(g.patterns) for g in groupers.values())
    alone = sum(p.tickets == 1 for g in groupers.values() for p in g.patterns.values())
    print(
        f"sumo years={args.years} model={args.model} body_chars={args.body_chars} by_locale={args.by_locale} "
        f"threshold={args.threshold} questions={n}: "
        f"topic prequential accuracy={whole.accuracy():.3f} macro-F1={whole.macro_f1():.3f} "
        f"(last 1,000: {quality['accuracy']}) patterns={patterns} single-question patterns={alone} "
        f"share in patterns of 5+ customers={in_5 / n:.3f} "
        f"cpu_us tag={1e6 * tag_s / n:.0f} group={1e6 * group_s / n:.0f} (per question)"
    )
    sizes = Counter(p.id for p in final)
    for name, english in (("en-US", True), ("other locales", False)):
        rows = [k for k, q in enumerate(questions) if (q.get("locale") == "en-US") == english]
        alone_share = sum(sizes[final[k].id] == 1 for k in rows) / max(1, len(rows))
        in_5_share = sum(len(final[k].customers) >= 5 for k in rows) / max(1, len(rows))
        print(f"  {name}: {len(rows)} questions, alone {alone_share:.3f}, in patterns of 5+ customers {in_5_share:.3f}")
    if args.show:
        last_month = questions[-1]["created_at"][:7]
        month = Counter(p.id for p, q in zip(final, questions, strict=True) if q["created_at"][:7] == last_month)
        by_id = {p.id: p for p in final}
        for pid, count in month.most_common(args.show):
            p = by_id[pid]
            print(
                f"  {last_month} {pid} [{p.name}] {count} this month, {p.tickets} in all, {len(p.customers)} customers"
            )
            for e in p.examples[:3]:
                print(f"      - {e['text'][:110]!r}")


def cost(args: argparse.Namespace) -> None:
    clinc, _ = load_clinc(args.data)
    encoder = TicketEncoder(args.model_dir)
    short = [
        {"id": f"c{i}", "subject": t, "body": "", "case_type": y} for i, (t, y) in enumerate(clinc["train"][:4000])
    ]
    long = [
        {"id": q["id"], "subject": q["subject"], "body": q["body"], "case_type": q["product_area"]}
        for q in load_sumo(args.data, "2022")[:4000]
    ]
    for name, docs in (("CLINC (short queries)", short), ("SUMO (forum questions)", long)):
        chars = np.mean([len(d["subject"]) + len(d["body"]) for d in docs])
        readings = [{"id": d["id"], "reading": clean_text(d["subject"], d["body"], OPENING_CHARS)} for d in docs]
        t0 = time.process_time()
        for start in range(0, len(docs), 256):
            [clean_text(d["subject"], d["body"], OPENING_CHARS) for d in docs[start : start + 256]]
        t_clean = time.process_time() - t0
        texts = [r["reading"] for r in readings]
        t0 = time.process_time()
        for start in range(0, len(texts), 256):
            encoder.encode(texts[start : start + 256])
        t_encode = time.process_time() - t0
        tagger = LinearTagger(encoder, fields=("case_type",))
        labelled = [{**r, "case_type": d["case_type"]} for r, d in zip(readings, docs, strict=True)]
        t0 = time.process_time()
        _prequential(tagger, labelled, 256)
        t_tag = time.process_time() - t0
        grouper = SemanticGrouper(encoder)
        vectors = encoder.encode(texts)
        t0 = time.process_time()
        for start in range(0, len(docs), 256):
            grouper.add_many(docs[start : start + 256], vectors[start : start + 256], remember=False)
        t_group = time.process_time() - t0
        n = len(docs)
        print(
            f"cost {name}, {chars:.0f} characters on average, batches of 256, CPU us per ticket: "
            f"clean reading {1e6 * t_clean / n:.1f}, encode {1e6 * t_encode / n:.1f}, "
            f"tag predict+learn (encode included) {1e6 * t_tag / n:.1f}, group {1e6 * t_group / n:.1f} "
            f"({len(grouper.patterns)} live patterns at the end)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["clinc-patterns", "clinc-tags", "nlbse", "sumo", "cost"])
    parser.add_argument("data", type=Path, help="the evaluation data folder (../shared/data)")
    parser.add_argument("--model", choices=["embedding", "words"], default="embedding")
    parser.add_argument(
        "--model-dir", type=Path, default=MODEL_DIR, help="a static model's folder (default: the committed one)"
    )
    parser.add_argument("--repo", default="", help="nlbse: one repository only (facebook/react, ...)")
    parser.add_argument("--seeds", type=int, default=5, help="nlbse: seeds (splits) per repository")
    parser.add_argument("--split", choices=["val", "test", "all"], default="val", help="all: clinc-patterns only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--merge", type=float, default=None)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--center-prior", type=int, default=3)
    parser.add_argument("--buckets", type=int, default=2**15)
    parser.add_argument("--dense-weight", type=float, default=1.0)
    parser.add_argument("--step", type=float, default=0.5)
    parser.add_argument("--years", default="2022-2024")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--body-chars", type=int, default=OPENING_CHARS)
    parser.add_argument("--every", type=int, default=0, help="sumo: print the CPU so far every N questions")
    parser.add_argument("--by-locale", action="store_true", help="sumo: a grouper per topic and language")
    parser.add_argument("--show", type=int, default=0, help="print the largest patterns of the last month")
    args = parser.parse_args()
    {"clinc-patterns": clinc_patterns, "clinc-tags": clinc_tags, "nlbse": nlbse, "sumo": sumo, "cost": cost}[args.what](
        args
    )


if __name__ == "__main__":
    main()
