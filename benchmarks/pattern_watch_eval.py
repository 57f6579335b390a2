"""The product's pattern grouping (:class:`pipeline.patterns.watch.PatternWatch`, as the worker runs it) on real data.

    PYTHONPATH=. .venv/bin/python benchmarks/pattern_watch_eval.py clinc ../shared/data --split test --threshold 0.3
    PYTHONPATH=. .venv/bin/python benchmarks/pattern_watch_eval.py backtest /tmp/sumo30k.jsonl

- ``clinc``: benchmarks/embedding_eval.py's ``clinc-patterns`` (the split's in-scope
  queries in the same seeded order, domains as areas, no labels), but through a
  PatternWatch: every query in one window, grouped when it closes, in that order
  (``created_at`` follows it); merges at the watch's merge threshold. NMI and ARI of the
  final patterns (merged ids resolved) against the intents.
- ``backtest``: ``ticketpulse backtest``'s run over a JSONL export (default settings);
  CPU seconds, patterns, and the share of tickets alone in their pattern (tickets per
  final pattern id, merged ids resolved). Runs on the code before issue #26 too (word
  patterns: no merges to resolve), for a before/after.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["clinc", "backtest"])
    parser.add_argument("data", type=Path, help="clinc: the evaluation data folder; backtest: a JSONL export")
    parser.add_argument("--split", choices=["val", "test", "all"], default="test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.3)
    args = parser.parse_args()
    {"clinc": clinc, "backtest": backtest}[args.what](args)


if __name__ == "__main__":
    main()
