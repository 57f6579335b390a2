"""How well tickets are grouped into patterns: real issue reports and generated tickets.

    .venv/bin/python benchmarks/pattern_eval.py ../shared/data/nlbse2024/issues_train.csv

NLBSE'24 issues (bug / feature / question, five repositories), grouped per repository
in time order: the number of patterns with two or more issues, their purity (the
share of each such pattern's issues carrying its most common label, weighted by
size) and pair agreement (how often two issues of the same pattern share a label;
random pairs of the repository share one at the rate printed as "chance").
Generated tickets with known duplicates (the same template about the same thing,
re-sends excluded): the share of duplicate pairs joined in one pattern (recall) and
of joined pairs that are duplicates (precision).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

from nlbse_eval import load_issues  # this script's neighbour (benchmarks/)

from pipeline.patterns.grouper import PatternGrouper
from pipeline.testbed.generator import TicketGenerator


def _pairs(counter: Counter) -> int:
    return sum(n * (n - 1) // 2 for n in counter.values())


def nlbse(path: Path, threshold: float) -> None:
    _, by_repo = load_issues(path)
    print(f"NLBSE'24 ({path.name}), threshold {threshold}")
    for repo, issues in sorted(by_repo.items()):
        issues.sort(key=lambda r: r["created_at"])
        g = PatternGrouper(threshold=threshold)
        labels: dict[str, list[str]] = defaultdict(list)
        t0 = time.perf_counter()
        for i, row in enumerate(issues):
            issue = {"id": str(i), "customer_id": str(i), "subject": row["title"], "body": row["body"]}
            p = g.add(issue)
            labels[p.id].append(row["label"])
        elapsed = time.perf_counter() - t0
        groups = [Counter(v) for v in labels.values() if len(v) >= 2]
        grouped = sum(sum(c.values()) for c in groups)
        purity = sum(c.most_common(1)[0][1] for c in groups) / grouped if grouped else 0.0
        same = sum(_pairs(c) for c in groups)
        pairs = sum(_pairs(Counter({"x": sum(c.values())})) for c in groups)
        chance = _pairs(Counter(r["label"] for r in issues)) / _pairs(Counter({"x": len(issues)}))
        print(
            f"  {repo:28s} issues={len(issues)} patterns>=2={len(groups)} grouped={grouped} "
            f"purity={purity:.3f} pair_agreement={same / pairs if pairs else 0:.3f} chance={chance:.3f} "
            f"rate={len(issues) / elapsed:,.0f}/s"
        )


def generated(threshold: float) -> None:
    gen = TicketGenerator(datetime(2026, 3, 2, tzinfo=UTC), days=7, seed=5)
    firsts = {}
    for t in gen.tickets():
        firsts.setdefault(t.payload["id"], t.payload)
    g = PatternGrouper(threshold=threshold)
    t0 = time.perf_counter()
    joined: dict[str, Counter] = defaultdict(Counter)
    truth: Counter = Counter()
    for payload in firsts.values():
        p = g.add(payload)
        key = (payload["subject"], payload["body"].split("\n\n")[0])  # template and thing, without signature
        joined[p.id][key] += 1
        truth[key] += 1
    elapsed = time.perf_counter() - t0
    true_pairs = _pairs(truth)
    found = sum(_pairs(c) for c in joined.values())
    all_joined = sum(_pairs(Counter({"x": sum(c.values())})) for c in joined.values())
    print(
        f"generated (7 days, seed 5): tickets={len(firsts)} duplicate groups={len(truth)} patterns={len(joined)} "
        f"pair recall={found / true_pairs:.3f} pair precision={found / all_joined:.3f} "
        f"rate={len(firsts) / elapsed:,.0f} tickets/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", default="../shared/data/nlbse2024/issues_train.csv")
    parser.add_argument("--threshold", type=float, default=PatternGrouper().threshold)
    args = parser.parse_args()
    generated(args.threshold)
    nlbse(Path(args.csv), args.threshold)


if __name__ == "__main__":
    main()
