"""``ticketpulse produce``'s send path: tickets/s and CPU per ticket, into an embedded broker.

    .venv/bin/python benchmarks/bench_produce.py [--days 3] [--scale 1] [--file SUMO.jsonl]
        [--repeat 3] [--compression none lz4 gzip]

Generated tickets (``--days``, ``--scale``, as ``ticketpulse produce`` without a file) or
a JSONL file of tickets (``--file``) are read into memory first; then each run sends
them all through :func:`pipeline.ingest.produce.produce` (validated, keyed by id, every
ticket confirmed by the broker) to a topic of its own on one Tansu broker. Printed per
run: wall-clock tickets/s (the rate the command's summary line shows) and tickets per
CPU-second of this process (the producer's I/O thread included; the broker's not).
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson

from pipeline.ingest.produce import produce, read_tickets
from pipeline.runtime.kafka import ensure_topics
from pipeline.settings import Settings
from pipeline.testbed.generator import TicketGenerator
from pipeline.testbed.services import EmbeddedBroker


def _messages(args: argparse.Namespace) -> list[tuple[int, bytes]]:
    if args.file:
        return list(read_tickets(Path(args.file)))
    gen = TicketGenerator(datetime(2026, 1, 5, tzinfo=UTC), days=args.days, seed=0, scale=args.scale, customers=20000)
    return [(n, orjson.dumps(t.payload)) for n, t in enumerate(gen.tickets(), 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--file", help="JSONL tickets instead of generated ones")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compression", nargs="+", default=["none"], choices=["none", "lz4", "gzip"])
    parser.add_argument("--broker", help="a running broker's kafka:// URL (default: start one)")
    args = parser.parse_args()
    messages = _messages(args)
    size = sum(len(raw) for _, raw in messages)
    print(f"{len(messages)} tickets, {size / len(messages):.0f} bytes each on average")
    broker = None if args.broker else EmbeddedBroker().start()
    url = args.broker or broker.url  # type: ignore[union-attr]
    try:
        for run in range(args.repeat):
            for compression in args.compression:
                run_id = uuid.uuid4().hex[:8]
                settings = Settings(broker_url=url, app_id=f"bench-{run_id}", topic_tickets=f"tickets-{run_id}")
                ensure_topics(settings)
                cpu0, t0 = time.process_time(), time.perf_counter()
                summary = produce(
                    settings,
                    messages,
                    total=len(messages),
                    progress=False,
                    compression_type=None if compression == "none" else compression,
                )
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
                assert summary.sent == len(messages), summary.line()
                print(
                    f"run {run + 1} compression={compression}: {summary.sent / wall:,.0f} tickets/s "
                    f"({wall:.2f} s), {summary.sent / cpu:,.0f} tickets per CPU-second ({cpu:.2f} s)"
                )
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
