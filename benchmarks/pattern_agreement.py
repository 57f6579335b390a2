"""Do two workers form the same patterns from real issue text? Run as two processes with different hash seeds.

    .venv/bin/python benchmarks/pattern_agreement.py ../shared/data/nlbse2024/issues_train.csv [--days 45]

Every worker groups every ticket of a partition, in the same order, and must come to the
same patterns, counts, alerts and ids; each Python process hashes strings with its own
seed. This feeds one partition's :class:`pipeline.patterns.watch.PatternWatch` with
NLBSE'24 issues (seeded: 1-11 an hour, 300 customers, the repository as the area) for
``--days`` of event time, hour by hour as the worker does, in processes started with
``PYTHONHASHSEED`` 1, 2 and 3, and prints each one's digest of every ``pattern_volume``
point, assignment and spike event, the patterns held and the patterns forgotten.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench_patterns import DAY, START, H, feed_hour  # this script's neighbour (benchmarks/)


def digest(path: Path, days: int) -> str:
    from pipeline.patterns.watch import PatternWatch

    csv.field_size_limit(sys.maxsize)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    rng = random.Random(3)
    pw = PatternWatch(H, 2 * DAY, sources=1)
    h = hashlib.sha256()
    for hour in range(days * 24):
        window = START + hour * H
        created = datetime.fromtimestamp(window + 60, UTC).isoformat()
        batch = []
        for i in range(rng.randrange(1, 12)):
            r = rng.choice(rows)
            customer, body = f"c{rng.randrange(300)}", r["body"][:2000]  # what the worker sends
            batch.append([f"t{hour}-{i}", window, r["repo"], r["label"], customer, created, r["title"], body])
        points, events, assigned = feed_hour(pw, batch, window + H)
        h.update(json.dumps([[p.tags, p.fields, p.time] for p in points], sort_keys=True, default=str).encode())
        h.update(json.dumps(assigned).encode())
        h.update(json.dumps([(e.event, e.key, e.window_start, e.customers) for e in events]).encode())
    return f"digest={h.hexdigest()[:16]} patterns={len(pw.area_of)} forgotten={pw.forgotten}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child process's run
    args = parser.parse_args()
    if args.one:
        print(digest(args.csv, args.days))
        return
    results = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        command = [sys.executable, __file__, str(args.csv), "--days", str(args.days), "--one"]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout.strip()
        print(f"PYTHONHASHSEED={seed}: {out}", flush=True)
        results.add(out.split()[0])
    print("the same in every process" if len(results) == 1 else "DIFFERENT between processes")


if __name__ == "__main__":
    main()
