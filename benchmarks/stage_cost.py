"""Where a ticket's CPU goes: the worker's stage code over an export, stage by stage, and the floors under it.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/stage_cost.py ../shared/data/sumo/questions-2022-2026.jsonl.gz \
        [--limit 20000] [--busier 1] [--body-chars 300] [--batch 500] [--json]

The first ``--limit`` tickets of the export go through :class:`pipeline.review.backtest.Backtest`
(the worker's stages in one process: tagging and learning every label, counting, the
spike watches of every area and case type, grouping into patterns and the pattern
watches), batch by batch, with the CPU of each stage timed apart (a stage's time excludes
the stages it calls). No Kafka or InfluxDB: what the stages cost, not the transport.
``--batch``: tickets a batch; the longest single call of each stage is printed too (a
worker runs its stages in its event loop: a long call holds its Kafka clients'
heartbeats), which a backlog's batches, thousands of tickets over weeks of event time,
make longest.

``--busier F`` plays the same tickets with their times squeezed F times closer (from
the first ticket's): the same texts as a helpdesk F times busier. The spike watches close
every window of every key as event time passes (a cost per window, not per ticket): at
SUMO's 75 questions a day that cost is spread over few tickets, at a busier helpdesk
over many. ``--body-chars`` sets how much of the body the embedding and the tagger read
(the trade-off of issue #27: the tokenizer is the floor).

The floors, measured apart on the same tickets: decoding and validating a message
(``parse_ticket``), the tagger's reading (``reading_text``), and tokenizing it alone
(the Hugging Face tokenizer, in batches of 500): no ticket can cost less than these with
the embedding on.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the ticketpulse command sets it

import pipeline.text.cleaning as cleaning
import pipeline.text.embedding as embedding
from pipeline.ingest.schema import Ticket, TicketError, parse_ticket
from pipeline.review.backtest import BATCH, Backtest
from pipeline.settings import load_settings


class StageClock:
    """CPU time per stage, exclusive: a stage called inside another is taken out of the caller's."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        #: the longest single call of each stage (exclusive): how long it holds the event loop
        self.longest: dict[str, float] = defaultdict(float)
        self._stack: list[list[float]] = []  # [start, time of the stages called inside]

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            frame = [time.process_time(), 0.0]
            self._stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                self._stack.pop()
                spent = time.process_time() - frame[0]
                self.seconds[name] += spent - frame[1]
                self.longest[name] = max(self.longest[name], spent - frame[1])
                if self._stack:
                    self._stack[-1][1] += spent

        return timed


def read_rows(path: Path, limit: int, busier: float) -> list[bytes]:
    """The first ``limit`` lines, in time order, their times squeezed ``busier`` times closer."""
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
            if len(rows) >= limit:
                break
    for row in rows:
        row["_at"] = datetime.fromisoformat(row["created_at"]).timestamp()
    rows.sort(key=lambda r: r["_at"])
    first = rows[0]["_at"]
    for row in rows:
        row["created_at"] = datetime.fromtimestamp(first + (row.pop("_at") - first) / busier, UTC).isoformat()
    return [json.dumps(row).encode() for row in rows]


def floors(raws: list[bytes], tickets: list[Ticket], encoder: embedding.TicketEncoder) -> dict[str, float]:
    """CPU us a ticket of the least any worker does: parse and validate, the reading, tokenizing it."""
    t0 = time.process_time()
    for raw in raws:
        try:
            parse_ticket(raw, 1 << 20, float("inf"))
        except TicketError:
            pass
    t1 = time.process_time()
    readings = [cleaning.reading_text(t.subject, t.body) for t in tickets]
    t2 = time.process_time()
    for start in range(0, len(readings), 500):
        batch = [r.lower() for r in readings[start : start + 500]]
        encoder.tokenizer.encode_batch_fast(batch, add_special_tokens=False)
    t3 = time.process_time()
    n = len(tickets)
    return {
        "parse_and_validate": 1e6 * (t1 - t0) / len(raws),
        "reading_text": 1e6 * (t2 - t1) / n,
        "tokenize_reading": 1e6 * (t3 - t2) / n,
        "reading_characters": sum(map(len, readings)) / n,
    }


def run_stages(tickets: list[Ticket], clock: StageClock, batch: int = BATCH) -> Backtest:
    settings = load_settings()
    run = Backtest(settings)
    run.tagger.process_many = clock.wrap("tag and learn (encoding included)", run.tagger.process_many)
    run.spikes.add = clock.wrap("count and area spike watches (a ticket)", run.spikes.add)
    run.spikes._advance_all = clock.wrap("area spike watches (closing days)", run.spikes._advance_all)
    run.patterns.add = clock.wrap("patterns: records in", run.patterns.add)
    run.patterns._group_many = clock.wrap("patterns: grouping (encoding included)", run.patterns._group_many)
    run.patterns.hear = clock.wrap("patterns: windows closed", run.patterns.hear)
    run.patterns.judge = clock.wrap("pattern spike watches", run.patterns.judge)
    run.patterns.close = clock.wrap("pattern spike watches", run.patterns.close)
    run.patterns.points = clock.wrap("patterns: points", run.patterns.points)
    run.run_batch = clock.wrap("other (documents, the review's records)", run.run_batch)
    for start in range(0, len(tickets), batch):
        run.run_batch(tickets[start : start + batch])
        print(f"\r  {min(start + batch, len(tickets))}/{len(tickets)} tickets", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path, help="JSON lines (gzipped or not) in the ticket schema")
    parser.add_argument("--limit", type=int, default=20_000)
    parser.add_argument("--busier", type=float, default=1.0, help="times squeezed this many times closer")
    parser.add_argument("--body-chars", type=int, help="characters of the body read (default: the product's)")
    parser.add_argument(
        "--batch", type=int, default=BATCH, help="tickets a batch (a worker reading a backlog gets 2,000 and more)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object as the last line")
    args = parser.parse_args()
    if args.body_chars is not None:  # the reading: what the tagger and the grouper embed of a ticket
        cleaning.OPENING_CHARS = args.body_chars
    raws = read_rows(args.export, args.limit, args.busier)
    tickets = []
    for raw in raws:
        try:
            tickets.append(parse_ticket(raw, 1 << 20, float("inf")))
        except TicketError:
            continue
    clock = StageClock()
    t0 = time.process_time()
    run = run_stages(tickets, clock, args.batch)
    total = time.process_time() - t0
    n = len(tickets)
    stages = {name: round(1e6 * s / n, 1) for name, s in sorted(clock.seconds.items(), key=lambda kv: -kv[1])}
    floor = {k: round(v, 1) for k, v in floors(raws, tickets, run.tagger.encoder).items()}
    quality = run.tagger.quality["product_area"]
    result = {
        "source": str(args.export),
        "tickets": n,
        "busier": args.busier,
        "body_chars": cleaning.OPENING_CHARS,
        "days": round((tickets[-1].created_ts - tickets[0].created_ts) / 86400, 2),
        "us_per_ticket": round(1e6 * total / n, 1),
        "tickets_per_cpu_second": round(n / total),
        "stages_us_per_ticket": stages,
        "batch": args.batch,
        "longest_call_seconds": {name: round(s, 3) for name, s in clock.longest.items()},
        "floors_us_per_ticket": floor,
        "topic_accuracy": round(quality.accuracy(), 4),
        "topic_macro_f1": round(quality.macro_f1(), 4),
    }
    for name, us in stages.items():
        print(f"  {us:8.1f} us  {name}", file=sys.stderr)
    print(
        f"  {result['us_per_ticket']:8.1f} us  all ({result['tickets_per_cpu_second']} tickets a CPU-second)",
        file=sys.stderr,
    )
    for name, us in floor.items():
        print(f"  floor {name}: {us}", file=sys.stderr)
    longest = max(clock.longest.items(), key=lambda kv: kv[1])
    print(f"  longest call (batches of {args.batch}): {longest[1]:.2f} CPU-s, {longest[0]}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
