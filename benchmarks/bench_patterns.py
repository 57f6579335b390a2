"""Patterns over months: does the grouping's state, and its cost per ticket, stay bounded?

    .venv/bin/python benchmarks/bench_patterns.py [--days 120] [--per-hour 40]
    .venv/bin/python benchmarks/bench_patterns.py --bodies ../shared/data/nlbse2024/issues_train.csv

One partition's :class:`pipeline.patterns.watch.PatternWatch`, fed hour by hour as the
worker feeds it (group, judge, points, close, hand over the assignments). Most tickets of a helpdesk describe
something nobody else reports: here each ticket is a few sentences drawn from a large
vocabulary (seeded), and one in four is one of twenty recurring problems, so most
patterns stay one ticket. Printed per month of event time: the patterns held, the size
of the pickled state (what the worker's checkpoint writes) and the cost of grouping a
ticket; once as the worker runs (small patterns quiet for 28 days are forgotten) and
once with nothing forgotten, as before 2026-11-30.

``--bodies CSV``: the cost of a ticket on real text instead: a week of NLBSE'24 issues
(title, and the first 2,000 characters of the body, as the worker sends them), 60 an
hour across five areas, in turn.
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import random
import sys
import time
from datetime import UTC, datetime
from typing import Any

from pipeline.commands.cli import tune_gc
from pipeline.patterns.watch import PatternWatch

H = 3600
DAY = 86400
START = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())
AREAS = ("reports", "billing", "login", "exports", "notifications")


def tickets_of_hour(rng: random.Random, hour: int, per_hour: int, vocabulary: list[str]) -> list[list[object]]:
    window = START + hour * H
    created = datetime.fromtimestamp(window + 60, UTC).isoformat()
    out: list[list[object]] = []
    for i in range(per_hour):
        if rng.random() < 0.25:  # one of twenty recurring problems, each in its area
            problem = rng.randrange(20)
            subject = f"problem{problem} fails on {vocabulary[problem]} page"
            body = f"the {vocabulary[problem]} {vocabulary[problem + 20]} breaks after the update"
            area = AREAS[problem % len(AREAS)]
        else:  # something nobody else reports
            words = rng.choices(vocabulary, k=30)
            subject, body = " ".join(words[:6]), " ".join(words[6:])
            area = AREAS[rng.randrange(len(AREAS))]
        out.append([f"t{hour}-{i}", window, area, "bug", f"c{rng.randrange(5000)}", created, subject, body])
    return out


def feed_hour(pw: PatternWatch, batch: list[list[object]], watermark: int) -> tuple[list[Any], list[Any], list[Any]]:
    """One hour's tickets, then the watermark past that hour, as the worker feeds a partition's watch:
    its ``pattern_volume`` points, spike events and ``[ticket id, pattern id]`` assignments."""
    touched = pw.add(batch) | pw.hear({"0": watermark})
    events = pw.judge(touched) + pw.close()
    return pw.points(touched, "1h"), events, pw.drain_assigned()


def run(days: int, per_hour: int, retire_after_seconds: int) -> list[tuple[int, int, int, float]]:
    rng = random.Random(11)
    vocabulary = [f"w{rng.randrange(10**6):06d}" for _ in range(20_000)]
    pw = PatternWatch(H, 7 * DAY, sources=1, retire_after_seconds=retire_after_seconds)
    rows: list[tuple[int, int, int, float]] = []
    spent, grouped = 0.0, 0
    for hour in range(days * 24):
        batch = tickets_of_hour(rng, hour, per_hour, vocabulary)
        t0 = time.perf_counter()
        feed_hour(pw, batch, START + (hour + 1) * H)
        spent += time.perf_counter() - t0
        grouped += len(batch)
        if (hour + 1) % (30 * 24) == 0:
            state = len(pickle.dumps(pw))
            rows.append(((hour + 1) // 24, len(pw.area_of), state, 1e6 * spent / grouped))
            spent, grouped = 0.0, 0
            print(f"  day {(hour + 1) // 24}: {len(pw.area_of):,} patterns", file=sys.stderr, flush=True)
    return rows


def prune_cost(per_hour: int = 500) -> float:
    """Milliseconds to let go of one window's tickets when the watermark moves a window on.

    A watch holding a week of ticket ids at ``per_hour`` (what ``seen`` holds in the
    worker); each new window lets the oldest go. Before 2026-11-30 (stop 17) this scanned
    every id remembered, each ticket about 168 times in its week.
    """
    pw = PatternWatch(H, 7 * DAY, sources=1)
    hours = 14 * 24
    # tickets of windows still open: remembered (and waiting), not grouped
    pw.add([[f"t{h}-{n}", START + h * H, "a", "bug", "c", "", "s", "b"] for h in range(hours) for n in range(per_hour)])
    t0 = time.perf_counter()
    for h in range(7 * 24, hours):
        pw.watermark = START + (h + 1) * H  # the line moves one window a time
        pw._prune()  # the step measured: hear() runs it when the watermark moves
    return 1e3 * (time.perf_counter() - t0) / (hours - 7 * 24)


def real_text(path: str, days: int = 7, per_hour: int = 60) -> float:
    """Microseconds a ticket for one partition's watch fed real issue text, hour by hour."""
    from pathlib import Path

    from nlbse_eval import load_issues  # this script's neighbour (benchmarks/)

    issues = [(row["title"], row["body"][:2000]) for row in load_issues(Path(path))[0]]
    rng = random.Random(3)
    pw = PatternWatch(H, 7 * DAY, sources=1)
    spent, grouped = 0.0, 0
    for hour in range(days * 24):
        window = START + hour * H
        created = datetime.fromtimestamp(window + 60, UTC).isoformat()
        batch: list[list[object]] = []
        for i in range(per_hour):
            subject, body = issues[(hour * per_hour + i) % len(issues)]
            customer = f"c{rng.randrange(3000)}"
            batch.append([f"t{hour}-{i}", window, AREAS[i % len(AREAS)], "bug", customer, created, subject, body])
        t0 = time.perf_counter()
        feed_hour(pw, batch, window + H)
        spent += time.perf_counter() - t0
        grouped += len(batch)
    return 1e6 * spent / grouped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--per-hour", type=int, default=40)
    parser.add_argument("--bodies", help="a CSV of issues (title, body): the cost of a ticket on real text")
    args = parser.parse_args()
    tune_gc()  # as the worker: its collector thresholds
    if args.bodies:
        print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"real text ({args.bodies}), a week at 60 an hour: {real_text(args.bodies):.0f} us a ticket")
        return
    machine = f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"machine: {machine}; {args.per_hour} tickets an hour, {args.days} days")
    print(f"letting go of a window's ids, a week of 500 tickets an hour held: {prune_cost():.2f} ms a window")
    for label, retire in (("forgetting (the worker)", 28 * DAY), ("nothing forgotten", 10**9)):
        print(label)
        for day, patterns, size, cost in run(args.days, args.per_hour, retire):
            print(f"  day {day:4d}: {patterns:8,} patterns  state {size / 1e6:7.1f} MB  {cost:6.1f} us a ticket")


if __name__ == "__main__":
    main()
