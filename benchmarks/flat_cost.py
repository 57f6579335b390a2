"""Does a ticket cost the same after a million? The worker's stage code over a looped export.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/flat_cost.py ../shared/data/sumo/questions-2022-2026.jsonl.gz \
        --tickets 1000000 [--segment 100000] [--plot flat.png] [--write looped.jsonl.gz]

The export's tickets are played in order, again and again, each loop with new ids (``-<loop>``
appended) and times moved on by the export's span, so that the stream goes on in event
time as a longer history would: the same texts, askers and topics (SUMO-like, not new
words). They go through :class:`pipeline.review.backtest.Backtest` a batch at a time: the
worker's own stages (tagging and learning the labels, counting, the spike watches of every
area and case type, grouping and the pattern watches), without Kafka or InfluxDB. The
review's own records of every ticket (what ``ticketpulse backtest`` keeps to write its
HTML) are let go after each segment: what is measured is the state the worker keeps.

Each segment prints one line: tickets per CPU-second of the segment, the process's
resident memory at its end, and the sizes of the state that settings bound (spike watches,
live patterns and their watches, the tagger's kept readings). A last JSON line has them
all. Flat cost: the rate of the last segments near that of the first after warm-up;
flat memory: the RSS stops growing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the ticketpulse command sets it

from pipeline.ingest.schema import Ticket, TicketError, parse_ticket
from pipeline.review.backtest import BATCH, Backtest
from pipeline.settings import load_settings


def _rows(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    for row in rows:
        row["_at"] = datetime.fromisoformat(row["created_at"]).timestamp()
    rows.sort(key=lambda r: r["_at"])
    return rows


def looped_records(rows: list[dict[str, Any]], tickets: int, end_at_export: bool = False) -> Iterator[dict[str, Any]]:
    """``tickets`` rows: the export's again and again, new ids, times moved on a loop at a time.

    ``end_at_export``: the loops are moved back so that the last one is the export's own
    times (a worker refuses tickets dated far ahead of its clock).
    """
    span = rows[-1]["_at"] - rows[0]["_at"] + 86400  # a day between loops
    made, loop = 0, 0
    if end_at_export:
        loop = -((tickets - 1) // len(rows))
    while True:
        for row in rows:
            record = {k: v for k, v in row.items() if k != "_at"}
            record["id"] = f"{row['id']}-{loop}"
            record["created_at"] = datetime.fromtimestamp(row["_at"] + loop * span, UTC).isoformat()
            yield record
            made += 1
            if made >= tickets:
                return
        loop += 1


def looped(rows: list[dict[str, Any]], tickets: int, max_bytes: int) -> Iterator[Ticket]:
    """``tickets`` valid tickets of :func:`looped_records` (the export's own invalid rows skipped)."""
    made = 0
    for record in looped_records(rows, 2 * tickets):
        try:
            ticket = parse_ticket(json.dumps(record).encode(), max_bytes, float("inf"))
        except TicketError:
            continue  # the export's own invalid rows
        yield ticket
        made += 1
        if made >= tickets:
            return


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _state(run: Backtest) -> dict[str, int]:
    readings = run.tagger.__dict__.get("_readings")
    return {
        "spike_watches": len(run.spikes.watches),
        "live_patterns": len(run.patterns.area_of),
        "pattern_watches": len(run.patterns.watches),
        "kept_readings": len(readings._kept) if readings is not None else 0,
    }


def _forget_review(run: Backtest) -> None:
    # what only the HTML review reads (a record a ticket, the ids of each area's hours, every
    # pattern's name and hours): not the worker's state
    run.docs.clear()
    run.doc_hours.clear()
    run.assigned.clear()
    run.pattern_hours.clear()
    run.areas.clear()
    run.names.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path, help="JSON lines (gzipped or not) in the ticket schema")
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--segment", type=int, default=100_000, help="tickets a line of figures")
    parser.add_argument("--plot", type=Path, help="a PNG of the rate and memory by segment")
    parser.add_argument(
        "--write",
        type=Path,
        metavar="FILE.jsonl.gz",
        help="only write the looped lines (for bench_pipeline.py --tickets: the same million through real workers)",
    )
    args = parser.parse_args()
    settings = load_settings()
    rows = _rows(args.export)
    if args.write:
        with gzip.open(args.write, "wt", encoding="utf-8") as out:
            for record in looped_records(rows, args.tickets, end_at_export=True):
                out.write(json.dumps(record) + "\n")
        return
    run = Backtest(settings)
    segments: list[dict[str, Any]] = []
    batch: list[Ticket] = []
    done, started = 0, time.process_time()
    for ticket in looped(rows, args.tickets, settings.max_ticket_bytes):
        batch.append(ticket)
        if len(batch) < BATCH:
            continue
        run.run_batch(batch)
        done += len(batch)
        batch = []
        if done % args.segment < BATCH:
            cpu = time.process_time() - started
            segment = {"tickets": done, "per_cpu_second": round(args.segment / cpu), "rss_mb": round(_rss_mb())}
            segment.update(_state(run))
            segments.append(segment)
            print(" ".join(f"{k}={v}" for k, v in segment.items()), file=sys.stderr, flush=True)
            _forget_review(run)
            started = time.process_time()
    if args.plot:
        _plot(segments, args.plot)
    print(json.dumps({"source": str(args.export), "segment": args.segment, "segments": segments}))


def _plot(segments: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    xs = [s["tickets"] / 1000 for s in segments]
    ax.plot(xs, [s["per_cpu_second"] for s in segments], marker="o", label="tickets per CPU-second")
    ax.set_xlabel("tickets played (thousands)")
    ax.set_ylabel("tickets per CPU-second")
    other = ax.twinx()
    other.plot(xs, [s["rss_mb"] for s in segments], marker=".", color="grey", label="RSS (MB)")
    other.set_ylabel("RSS (MB)")
    ax.set_title("The worker's stages over a looped export")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
