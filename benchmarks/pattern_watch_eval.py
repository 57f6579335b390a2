"""The product's pattern grouping (:class:`pipeline.patterns.watch.PatternWatch`, as the worker runs it) on real data.

    PYTHONPATH=. .venv/bin/python benchmarks/pattern_watch_eval.py clinc ../shared/data --split test --threshold 0.3
    PYTHONPATH=. .venv/bin/python benchmarks/pattern_watch_eval.py backtest /tmp/sumo30k.jsonl
    PYTHONPATH=. .venv/bin/python benchmarks/pattern_watch_eval.py languages /tmp/sumo-2022-2024.jsonl [--show]

- ``clinc``: benchmarks/embedding_eval.py's ``clinc-patterns`` (the split's in-scope
  queries in the same seeded order, domains as areas, no labels), but through a
  PatternWatch: every query in one window, grouped when it closes, in that order
  (``created_at`` follows it); merges at the watch's merge threshold. NMI and ARI of the
  final patterns (merged ids resolved) against the intents.
- ``backtest``: ``ticketpulse backtest``'s run over a JSONL export (default settings);
  CPU seconds, patterns, and the share of tickets alone in their pattern (tickets per
  final pattern id, merged ids resolved). Runs on the code before issue #26 too (word
  patterns: no merges to resolve), for a before/after.
- ``languages``: the same run, then the ten largest patterns of every month (tickets that
  month, merged ids resolved): how many mix languages (under 80 % of their tickets that
  month in one language) and the mean share of their main language. The language of a
  ticket (its subject and 300 body characters) is judged by py3langid, a naive Bayes
  language identifier packaged with its model (``.venv/bin/pip install py3langid==0.4.0``;
  the product does not use it: 187 us a ticket). ``TICKETPULSE_PATTERN_BY_LOCALE=false``
  groups as before (per area alone). ``--show`` prints the largest patterns of ``--months``
  with their languages and first subjects (masked).

CPU time is ``time.process_time``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the ticketpulse command sets it

sys.path.insert(0, str(Path(__file__).resolve().parent))


def clinc(args: argparse.Namespace) -> None:
    from embedding_eval import holding, load_clinc, nmi_ari

    from pipeline.patterns.watch import PatternWatch

    data, domain_of = load_clinc(args.data)
    rows = [*data["train"], *data["val"], *data["test"]] if args.split == "all" else list(data[args.split])
    random.Random(args.seed).shuffle(rows)
    pw = PatternWatch(3600, 7 * 86400, sources=1, threshold=args.threshold)
    start = 1_700_000_000 // 3600 * 3600
    records = [
        [f"q{i:06d}", start, domain_of[intent], "", f"c{i}", datetime.fromtimestamp(start, UTC).isoformat(), text, ""]
        for i, (text, intent) in enumerate(rows)
    ]
    t0 = time.process_time()
    pw.add(records)
    pw.hear({"0": start + 3600})
    seconds = time.process_time() - t0
    assigned = dict(pw.drain_assigned())
    final = [pw.resolve(assigned[f"q{i:06d}"]) for i in range(len(rows))]
    nmi, ari = nmi_ari([intent for _, intent in rows], final)
    sizes = list(Counter(final).values())
    print(
        f"clinc split={args.split} threshold={args.threshold} merges={getattr(pw, 'merges', 0)}: queries={len(rows)} "
        f"NMI={nmi:.3f} ARI={ari:.3f} patterns={len(sizes)} holding_90%={holding(sizes)} "
        f"cpu_us_per_query={1e6 * seconds / len(rows):.0f}"
    )


def backtest(args: argparse.Namespace) -> None:
    from pipeline.ingest.importer import read_export
    from pipeline.review.backtest import Backtest, parse_rows
    from pipeline.settings import load_settings

    settings = load_settings()
    t0 = time.process_time()
    tickets, _, _ = parse_rows(read_export(args.data, "jsonl"), settings)
    run = Backtest(settings)
    run.run(tickets, progress=False)
    seconds = time.process_time() - t0
    resolve = getattr(run.patterns, "resolve", lambda pid: pid)
    final = Counter(resolve(pid) for pid in run.assigned.values())
    alone = sum(n == 1 for n in final.values())
    print(
        f"backtest {args.data} threshold={settings.pattern_threshold}: tickets={len(tickets)} "
        f"grouped={sum(final.values())} patterns={len(final)} alone={alone} "
        f"share_alone={alone / max(1, sum(final.values())):.3f} merges={getattr(run.patterns, 'merges', 0)} "
        f"cpu_s={seconds:.1f} (parse, tag, count, group, spikes; no HTML)"
    )


def languages(args: argparse.Namespace) -> None:
    try:
        import py3langid  # type: ignore[import-not-found]
    except ImportError:
        raise SystemExit("languages needs py3langid: .venv/bin/pip install py3langid==0.4.0") from None
    import orjson

    from pipeline.ingest.importer import read_export
    from pipeline.review.backtest import Backtest, parse_rows
    from pipeline.settings import load_settings
    from pipeline.text.privacy import mask_personal

    settings = load_settings()
    tickets, _, _ = parse_rows(read_export(args.data, "jsonl"), settings)
    run = Backtest(settings)
    run.run(tickets, progress=False)
    rows = {str(r["id"]): r for r in map(orjson.loads, args.data.read_bytes().splitlines())}
    month_of: dict[tuple[str, str], list[str]] = {}
    for ticket_id, pid in run.assigned.items():
        month = str(rows[ticket_id]["created_at"])[:7]
        month_of.setdefault((month, run.patterns.resolve(pid)), []).append(ticket_id)
    by_month: dict[str, Counter[str]] = {}
    for (month, pid), ids in month_of.items():
        by_month.setdefault(month, Counter())[pid] = len(ids)

    def language(ticket_id: str) -> str:
        r = rows[ticket_id]
        return str(py3langid.classify(f"{r['subject']} {str(r['body'])[:300]}")[0])

    purities, mixed = [], 0
    for month, counts in sorted(by_month.items()):
        for pid, n in counts.most_common(10):
            ids = month_of[(month, pid)]
            langs = Counter(map(language, ids))
            purity = langs.most_common(1)[0][1] / n
            purities.append(purity)
            mixed += purity < 0.8
            if args.show and month in args.months.split(","):
                subjects = " / ".join(mask_personal(str(rows[i]["subject"]))[:50] for i in ids[:5])
                print(f"  {month} {pid} {n} tickets {dict(langs.most_common(4))} | {subjects}")
    print(
        f"languages {args.data} by_locale={settings.pattern_by_locale}: tickets={len(tickets)} "
        f"top-10-a-month patterns={len(purities)} mixed (under 80 % one language)={mixed} "
        f"mean share of the main language={sum(purities) / max(1, len(purities)):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["clinc", "backtest", "languages"])
    parser.add_argument("data", type=Path, help="clinc: the evaluation data folder; backtest: a JSONL export")
    parser.add_argument("--split", choices=["val", "test", "all"], default="test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.3)
    parser.add_argument("--show", action="store_true", help="languages: print the largest patterns of --months")
    parser.add_argument("--months", default="", help="languages: months to show, as 2024-12,2026-05")
    args = parser.parse_args()
    {"clinc": clinc, "backtest": backtest, "languages": languages}[args.what](args)


if __name__ == "__main__":
    main()
