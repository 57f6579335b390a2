"""The floor under any Faust worker on this machine: messages/s through agents that do nothing.

    .venv/bin/python benchmarks/bench_faust_floor.py [--days 7] [--scale 20]

The same generated messages as ``bench_pipeline.py`` (92,226 by default), already in the
embedded Tansu broker's ``tickets`` topic (4 partitions) before the clock starts, are
read by one process in three ways:

1. ``aiokafka``: a plain consumer's ``getmany`` loop, no Faust (the Kafka client alone);
2. ``faust-read``: a Faust agent taking batches (``stream.take_events``, as every agent of
   the pipeline does) and doing nothing with them;
3. ``faust-forward``: the same agent sending one message per message read to another
   topic through Faust's producer, as ``validate`` sends one ``tickets-classified``
   message per ticket, and waiting for the batch to be delivered.

(3) says how far a worker that reads every ticket through a Faust agent can go here at
all; the gap to (1) is why the pipeline reads ``tickets`` below Faust's stream
(``pipeline.worker``'s ``read_tickets``) and keeps Faust's agents for the topics that
carry one message per batch.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

BATCH = 2000  # TICKETPULSE_BATCH_SIZE's default
START = datetime(2026, 3, 2, tzinfo=UTC)


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_agent(mode: str, broker: str, workdir: Path) -> None:
    """The worker side (a subprocess): a Faust app whose one agent reads ``tickets``."""
    import faust

    from pipeline.commands.cli import service_worker, tune_gc

    app = faust.App(
        f"floor-{mode}",
        broker=broker,
        store="memory://",
        datadir=str(workdir / f"floor-{mode}-data"),
        topic_partitions=4,
        broker_session_timeout=6,
        broker_rebalance_timeout=6,
        broker_heartbeat_interval=1,
        broker_commit_interval=1.0,
        web_enabled=False,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
    )
    tickets = app.topic("tickets", key_serializer="raw", value_serializer="raw")
    progress = workdir / f"{mode}.count"
    seen = 0

    @app.agent(tickets)
    async def read(stream: Any) -> None:
        nonlocal seen
        async for events in stream.take_events(BATCH, within=0.5):
            if mode == "faust-forward":
                producer = await app.maybe_start_producer()
                sent = [await producer.send("floor-out", e.key, e.value, None, None, None) for e in events]
                await asyncio.gather(*sent)
            seen += len(events)
            progress.write_text(str(seen))

    worker = service_worker(app, "warning")
    tune_gc()
    worker.execute_from_commandline()


async def _read_plain(broker: str, total: int) -> None:
    # aiokafka, not the commands' kafka-python: the floor under Faust is Faust's own client
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        "tickets", bootstrap_servers=broker.removeprefix("kafka://"), auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        seen = 0
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=BATCH)
            seen += sum(len(records) for records in batch.values())
    finally:
        await consumer.stop()


def measure(mode: str, broker_url: str, total: int, workdir: Path) -> dict[str, float]:
    if mode == "aiokafka":
        cpu0, t0 = time.process_time(), time.perf_counter()
        asyncio.run(_read_plain(broker_url, total))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        return {"elapsed_s": elapsed, "cpu_s": cpu, "per_s": total / elapsed, "per_cpu_s": total / cpu}
    progress = workdir / f"{mode}.count"
    worker = subprocess.Popen(
        [sys.executable, __file__, "--agent", mode, "--broker", broker_url, "--workdir", str(workdir)],
        start_new_session=True,
        stdout=(workdir / f"{mode}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        # the clock starts with the first batch read: start-up and the group's join are not the floor
        while not progress.exists():
            time.sleep(0.01)
        t0, cpu0 = time.perf_counter(), _cpu_seconds(worker.pid)
        first = int(progress.read_text() or 0)
        seen = first
        while seen < total:
            time.sleep(0.05)
            seen = int(progress.read_text() or 0)
            print(f"\r  {mode}: {seen}/{total}", end="", file=sys.stderr, flush=True)
        elapsed, cpu = time.perf_counter() - t0, _cpu_seconds(worker.pid) - cpu0
        print(file=sys.stderr)
        n = total - first
        return {"elapsed_s": elapsed, "cpu_s": cpu, "per_s": n / elapsed, "per_cpu_s": n / cpu}
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--scale", type=float, default=20)
    parser.add_argument("--agent", help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.agent:
        run_agent(args.agent, args.broker, args.workdir)
        return

    from pipeline.ingest.produce import produce
    from pipeline.runtime.kafka import ensure_topics
    from pipeline.settings import Settings
    from pipeline.testbed.generator import Spike, TicketGenerator
    from pipeline.testbed.services import EmbeddedBroker

    spike = Spike("reports", START.replace(day=3, hour=10), 2, 4)
    gen = TicketGenerator(START, days=args.days, scale=args.scale, seed=42, spikes=[spike])
    raws = [orjson.dumps(t.payload) for t in gen.tickets()]
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    workdir = Path(tempfile.mkdtemp(prefix="ticketpulse-floor-"))
    broker = EmbeddedBroker().start()
    try:
        settings = Settings(broker_url=broker.url, app_id="floor")
        ensure_topics(settings)
        produce(settings, list(enumerate(raws)), total=len(raws), validate=False, progress=False)
        print(f"input: {len(raws)} messages in 'tickets' before the clock starts")
        for mode in ("aiokafka", "faust-read", "faust-forward"):
            r = measure(mode, broker.url, len(raws), workdir)
            print(
                f"{mode}: {r['per_s']:,.0f} messages/s ({r['elapsed_s']:.1f} s), "
                f"{r['per_cpu_s']:,.0f} messages per reader CPU-second"
            )
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
