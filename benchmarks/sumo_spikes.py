"""How soon and how often spike alerts fire on a real support stream (Mozilla's SUMO forum).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/sumo_spikes.py ../shared/data/sumo [--option NAME=VALUE ...]

The questions (``questions-2022-2026.jsonl.gz``, oldest first) go through
:class:`detectors.backtest.SpikeBacktest`: the worker's watches, one per forum topic
(``product_area``), hourly windows of distinct askers, as the stream would have run them.
``standout-days.csv`` lists the topic-days with at least 4x the questions of the median
of the 28 days before (weak labels). For each standout topic-day:

- its **surge start** is the moment the day's questions first outnumber a normal day's
  (the time of question number ``floor(median) + 1`` of that day): before it, nothing
  says the day is unusual;
- it is **alerted within X h** when an alerted episode of that topic was open at some
  moment between the start of the day and ``start + X h``, detected by then (an episode
  still open from the day before counts, with delay 0); the **delay** is
  ``detected_at - start``, at least 0; a day not alerted within 24 h whose topic had an
  alerted episode in the three days before is counted apart (a surge that began earlier).

**Episodes elsewhere**: alerted episodes of a topic that are open on none of the days from
the day before to the day after one of its standout days, per month of the period. Those
that fall on a day when all topics together stood out are counted apart.

Periods: 2022-2024 (tuned on) and 2025-2026 (confirmation), printed separately.
``--option`` sets a :class:`detectors.VolumeWatch` argument (``--option min_ratio=3.0``).
``--misses`` prints the missed days and the subjects of their first questions;
``--elsewhere`` prints each episode elsewhere (its scale, customers against expected, and
the askers, posts and last subjects of its span up to its detection), to read what it was.
"""

from __future__ import annotations

import argparse
import ast
import csv
import gzip
import json
import statistics
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from detectors.backtest import SpikeBacktest

PERIODS = {"2022-2024 (tuned on)": (2022, 2024), "2025-2026 (confirmation)": (2025, 2026)}
DAY = 86400


def load_questions(root: Path) -> list[dict[str, Any]]:
    """The questions, oldest first, with ``at`` (epoch seconds) added."""
    out = []
    with gzip.open(root / "questions-2022-2026.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            q["at"] = datetime.fromisoformat(q["created_at"]).timestamp()
            out.append(q)
    out.sort(key=lambda q: q["at"])
    return out


def load_standout(root: Path) -> tuple[list[dict[str, Any]], set[int]]:
    """Standout topic-days (``area``, ``day`` epoch, ``questions``, ``median``), and the all-topics days."""
    topic_days, all_days = [], set()
    with (root / "standout-days.csv").open() as fh:
        for row in csv.DictReader(fh):
            day = int(datetime.fromisoformat(row["day_utc"]).replace(tzinfo=UTC).timestamp())
            if row["product_area"] == "(all topics)":
                all_days.add(day)
            else:
                topic_days.append(
                    {
                        "area": row["product_area"],
                        "day": day,
                        "questions": int(row["questions"]),
                        "median": float(row["median_of_previous_28_days"]),
                    }
                )
    return topic_days, all_days


def run(questions: list[dict[str, Any]], options: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
    """Alerted area episodes over the whole stream, and the CPU seconds per question."""
    backtest = SpikeBacktest(3600, **options)
    started = time.process_time()
    for q in questions:
        backtest.add(q["at"], q["product_area"] or "unassigned", None, q["id"], q["customer_id"])
    backtest.finish(questions[-1]["at"] + 2 * DAY)
    cpu = (time.process_time() - started) / len(questions)
    episodes = []
    for e in backtest.episodes:
        if e["alerted"]:
            e = dict(e)
            e["detected"] = datetime.fromisoformat(e["detected_at"]).timestamp()
            e["until"] = datetime.fromisoformat(e["resolved_at"]).timestamp() if e["resolved_at"] else float("inf")
            episodes.append(e)
    return episodes, cpu


def surge_start(questions_of_day: list[float], median: float) -> float:
    """The moment the day's questions first outnumber a normal day's (see the module docstring)."""
    return sorted(questions_of_day)[min(int(median), len(questions_of_day) - 1)]


def evaluate(
    questions: list[dict[str, Any]],
    episodes: list[dict[str, Any]],
    topic_days: list[dict[str, Any]],
    all_days: set[int],
) -> dict[str, dict[str, Any]]:
    by_area_day: dict[tuple[str, int], list[float]] = defaultdict(list)
    for q in questions:
        by_area_day[(q["product_area"], int(q["at"]) // DAY * DAY)].append(q["at"])
    by_area: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in episodes:
        by_area[e["area"]].append(e)
    results = {}
    for name, (first, last) in PERIODS.items():
        lo = datetime(first, 1, 1, tzinfo=UTC).timestamp()
        hi = min(datetime(last + 1, 1, 1, tzinfo=UTC).timestamp(), questions[-1]["at"])
        days = [d for d in topic_days if lo <= d["day"] < hi]
        delays: list[float] = []
        rows = []
        for d in days:
            start = surge_start(by_area_day[(d["area"], d["day"])], d["median"])
            best = None
            for e in by_area[d["area"]]:
                if e["detected"] <= start + 24 * 3600 and e["until"] >= d["day"]:
                    delay = max(0.0, e["detected"] - start)
                    best = delay if best is None else min(best, delay)
            # an episode of the same topic in the three days before: a surge that began earlier
            earlier = any(d["day"] - 3 * DAY <= e["detected"] < d["day"] for e in by_area[d["area"]])
            rows.append({**d, "start": start, "delay": best, "alerted_earlier": earlier})
            if best is not None:
                delays.append(best)
        elsewhere = on_all_days = 0
        for e in episodes:
            if not lo <= e["detected"] < hi:
                continue
            near = any(
                d["area"] == e["area"] and e["detected"] <= d["day"] + 2 * DAY and e["until"] >= d["day"] - DAY
                for d in topic_days
            )
            if not near:
                elsewhere += 1
                on_all_days += int(e["detected"]) // DAY * DAY in all_days
                e["elsewhere"] = True
        months = (hi - lo) / (DAY * 365.25 / 12)
        results[name] = {
            "standout_topic_days": len(days),
            "within_6h": sum(r["delay"] is not None and r["delay"] <= 6 * 3600 for r in rows),
            "within_24h": sum(r["delay"] is not None for r in rows),
            "missed_but_alerted_in_3_days_before": sum(r["delay"] is None and r["alerted_earlier"] for r in rows),
            "median_delay_hours": round(statistics.median(delays) / 3600, 1) if delays else None,
            "episodes_elsewhere": elsewhere,
            "of_which_on_all_topics_standout_days": on_all_days,
            "months": round(months, 1),
            "episodes_elsewhere_per_month": round(elsewhere / months, 2),
            "alerted_episodes": sum(lo <= e["detected"] < hi for e in episodes),
            "rows": rows,
        }
    return results


def print_misses(questions: list[dict[str, Any]], results: dict[str, dict[str, Any]]) -> None:
    for name, result in results.items():
        for r in result["rows"]:
            if r["delay"] is not None and r["delay"] <= 6 * 3600:
                continue
            day = datetime.fromtimestamp(r["day"], UTC).date()
            late = "missed" if r["delay"] is None else f"late ({r['delay'] / 3600:.1f} h)"
            late += " (alerted in the 3 days before)" if r["alerted_earlier"] and r["delay"] is None else ""
            print(f"\n{name}: {day} {r['area']} {r['questions']} (median {r['median']}): {late}")
            subjects = [
                q["subject"]
                for q in questions
                if q["product_area"] == r["area"] and int(q["at"]) // DAY * DAY == r["day"]
            ]
            for s in subjects[:8]:
                print(f"    {s[:100]}")


def print_elsewhere(questions: list[dict[str, Any]], episodes: list[dict[str, Any]]) -> None:
    """Each episode elsewhere, with the questions of its span up to its detection."""
    by_area: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for q in questions:
        by_area[q["product_area"] or "unassigned"].append(q)
    for e in episodes:
        if not e.get("elsewhere"):
            continue
        start = datetime.fromisoformat(e["window_start"]).timestamp()
        span = [q for q in by_area[e["area"]] if start <= q["at"] <= e["detected"]]
        askers = len({q["customer_id"] for q in span})
        detected = datetime.fromtimestamp(e["detected"], UTC).strftime("%Y-%m-%d %H:%M")
        print(
            f"\n{detected} {e['area']}: scale {e['scale'] // 3600} h, {e['customers']} customers "
            f"(expected {e['expected']:.2f}), {askers} askers, {len(span)} posts"
        )
        for q in span[-8:]:
            print(f"    {q['subject'][:100]}")


def parse_option(text: str) -> tuple[str, Any]:
    name, _, value = text.partition("=")
    return name, ast.literal_eval(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the sumo folder")
    parser.add_argument("--option", action="append", type=parse_option, default=[], help="VolumeWatch NAME=VALUE")
    parser.add_argument("--misses", action="store_true", help="print the days alerted late or not at all")
    parser.add_argument("--elsewhere", action="store_true", help="print the episodes elsewhere and their questions")
    args = parser.parse_args()
    questions = load_questions(args.data)
    topic_days, all_days = load_standout(args.data)
    options = dict(args.option)
    episodes, cpu = run(questions, options)
    results = evaluate(questions, episodes, topic_days, all_days)
    cost = f"CPU {cpu * 1e6:.1f} us a question (loaded machine)"
    print(f"options: {options or 'defaults'}; {len(questions)} questions; {cost}")
    for name, r in results.items():
        n = r["standout_topic_days"]
        print(
            f"{name}: {n} standout topic-days: within 6 h {r['within_6h']} ({100 * r['within_6h'] / max(n, 1):.0f} %), "
            f"within 24 h {r['within_24h']} ({100 * r['within_24h'] / max(n, 1):.0f} %), "
            f"median delay {r['median_delay_hours']} h; not within 24 h but alerted in the 3 days before "
            f"{r['missed_but_alerted_in_3_days_before']}; episodes elsewhere {r['episodes_elsewhere']} "
            f"in {r['months']} months = {r['episodes_elsewhere_per_month']}/month "
            f"({r['of_which_on_all_topics_standout_days']} on all-topics standout days); "
            f"alerted episodes {r['alerted_episodes']}"
        )
    if args.misses:
        print_misses(questions, results)
    if args.elsewhere:
        print_elsewhere(questions, episodes)


if __name__ == "__main__":
    main()
