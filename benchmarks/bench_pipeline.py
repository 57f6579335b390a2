"""Throughput of the walking skeleton: the hot path in-process, and end to end.

    .venv/bin/python benchmarks/bench_pipeline.py [--days 7] [--scale 20] [--set TICKETPULSE_NAME=VALUE ...]
        [--bodies ../shared/data/nlbse2024/issues_train.csv] [--tagging-share] [--repeat N] [--restart]
        [--tagging-floor [--producer-batch BYTES]]

1. In-process, one core: validation (``parse_ticket``) and counting
   (``PartitionVolume.add``) over generated tickets, without Kafka.
2. End to end: an embedded Tansu broker and influxd, one worker process, generated
   tickets produced as fast as the producer can; the clock runs from the first
   message sent until InfluxDB holds the exact count of every window.

``--tagging-share``: the issue #3 bound, "the worker not slower than the model alone by
more than a fifth", on these messages. The worker runs twice, tagging on and off: the
CPU it spends on tagging, per message, is the difference. The model alone is the same
tagging code on the same messages in one process, batch by batch as the worker takes
them (each ticket's tags predicted from its subject and body, then the labels of those
that carry some learned with the prediction they were scored against), without Kafka;
and the worker's own tagging steps alone (``tagging_steps_alone``), so that what is left
of the worker's share is Kafka's and Faust's.

``--tagging-floor``: no worker; the model alone against the least that the issue's
required outputs add to it with this Kafka client, and then with the late labels' texts
and the labels themselves through Kafka, as several workers and a restart need
(:func:`tagging_floor`): how close to the bound any worker could get here.

``--repeat N`` runs each configuration N times, in turn (on, off, on, off, ...), and
takes each one's median CPU: on this 2-core machine one run's worker CPU spreads by up
to a quarter (11.1 and 14.4 CPU-s for the same code and messages, one after the other).

``--restart``: after the run, the worker is killed (SIGKILL) and started again, and the
time it takes to read its label join's kept texts back from ``texts-to-join`` is reported.

The generated bodies are short (about 120 characters); ``--bodies`` takes the bodies
from a CSV with a ``body`` column instead (in turn), for real tickets' length and mess.

The contract other tools call (issue #27; docs/benchmarks.md)::

    .venv/bin/python benchmarks/bench_pipeline.py --tickets FILE.jsonl[.gz] [--limit N] [--workers N]
        [--rate R] [--set TICKETPULSE_NAME=VALUE ...] --json

plays a file's tickets in file order, as they are (ids, times, text, labels; invalid rows
too, which the workers must dead-letter), through the embedded broker, InfluxDB and N
worker processes, and prints one JSON object as its last line (:func:`run_contract`):
the time until InfluxDB holds every count, the workers' CPU, the broker's raw consumption
of the same messages, with ``--rate R`` the latency from produce to ``tickets-classified``,
``exact``: whether the counts read back from InfluxDB equal the valid tickets per area
and window computed from the file, and ``changelog_records``: what each of the workers'
tables wrote to its changelog. Without ``--tickets``, the generated tickets are played.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import itertools
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

from pipeline.commands.demo import BROKEN, _count_dead_letters, _Volumes
from pipeline.counting.volume import PartitionVolume, window_start
from pipeline.ingest.produce import produce
from pipeline.ingest.schema import UNASSIGNED, TicketError, parse_ticket
from pipeline.messages import Fact
from pipeline.outputs.series import InfluxReader
from pipeline.runtime.kafka import ensure_topics
from pipeline.settings import Settings
from pipeline.testbed.generator import Spike, TicketGenerator
from pipeline.testbed.services import EmbeddedBroker, EmbeddedInflux
from pipeline.topology import topology

START = datetime(2026, 3, 2, tzinfo=UTC)


def in_process(raws: list[bytes]) -> dict[str, float]:
    t0 = time.perf_counter()
    tickets = [parse_ticket(r) for r in raws]
    t1 = time.perf_counter()
    facts = [
        Fact(
            t.id,
            window_start(t.created_ts, 3600),
            t.product_area or UNASSIGNED,
            t.case_type or UNASSIGNED,
            t.severity or UNASSIGNED,
            t.customer_id,
            int(t.created_ts),
        )
        for t in tickets
    ]
    t2 = time.perf_counter()
    vol = PartitionVolume(3600, 7 * 86400)
    for fact in facts:
        vol.add(fact)
    t3 = time.perf_counter()
    n = len(raws)
    return {"parse": n / (t1 - t0), "facts": n / (t2 - t1), "count": n / (t3 - t2), "all": n / (t3 - t0)}


def _tagger_inputs(raws: list[bytes]) -> list[dict[str, str]]:
    """The valid messages as the tagger takes them: id, subject, body and the tags they carry."""
    from pipeline.tagging.tagger import FIELDS

    docs = []
    for raw in raws:
        try:
            ticket = parse_ticket(raw)
        except TicketError:
            continue
        doc = {"id": ticket.id, "subject": ticket.subject, "body": ticket.body}
        docs.append(doc | {f: getattr(ticket, f) for f in FIELDS if getattr(ticket, f)})
    return docs


def tagging_alone(raws: list[bytes], batch_size: int) -> dict[str, float]:
    """The tagger's predict and learn on these messages in one process, as the worker batches them."""
    from pipeline.commands.cli import tune_gc
    from pipeline.tagging.tagger import FIELDS, TicketTagger, predicted_labels

    tickets = _tagger_inputs(raws)
    tune_gc()  # as the worker
    tagger = TicketTagger()
    learned = 0
    t0 = time.process_time()
    for start in range(0, len(tickets), batch_size):
        batch = tickets[start : start + batch_size]
        predictions, bins = tagger.predict_binned(batch)
        examples = [
            t | {"predicted": predicted_labels(p, b)}
            for t, p, b in zip(batch, predictions, bins, strict=True)
            if any(f in t for f in FIELDS)
        ]
        learned += tagger.learn_batch(examples)
    cpu = time.process_time() - t0
    return {"messages": len(raws), "labels_learned": learned, "cpu_s": cpu, "us_per_message": 1e6 * cpu / len(raws)}


def tagging_steps_alone(raws: list[bytes], batch_size: int, partitions: int) -> dict[str, float]:
    """The worker's own tagging steps on these messages in one process, without Kafka.

    What ``validate`` does with a batch (``pipeline.tagging.tag.tag_tickets``: documents,
    readings, prediction, the ``tickets-classified`` records, the texts to join, the
    examples), each message the worker sends encoded and read back as the agent that
    reads it does, the label join keeping every text (``LabelJoin``, its offsets in a
    ``ChunkedStore`` in memory), and the examples learned. What the worker spends
    beyond this is Kafka's and Faust's: sending, fetching, the changelog.
    """
    from pipeline.commands.cli import tune_gc
    from pipeline.tagging.labels import ChunkedStore, LabelJoin, entry_chars
    from pipeline.tagging.tag import tag_tickets
    from pipeline.tagging.tagger import TicketTagger

    tickets = []
    for raw in raws:
        try:
            tickets.append(parse_ticket(raw))
        except TicketError:
            continue
    tune_gc()  # as the worker
    tagger = TicketTagger()
    store = ChunkedStore({}, size_of=entry_chars)
    join = LabelJoin(store, horizon_seconds=72 * 3600)
    learned = 0
    offsets: dict[int, int] = {}
    t0 = time.process_time()
    for start in range(0, len(tickets), batch_size):
        tagged = tag_tickets(tagger, tickets[start : start + batch_size], partitions)
        for partition, texts in tagged.to_join.items():
            offsets[partition] = offsets.get(partition, -1) + 1  # of the message on texts-to-join
            join.remember_message(partition, offsets[partition], orjson.loads(orjson.dumps({"texts": texts}))["texts"])
        store.flush()
        examples = [
            example
            for examples in tagged.labelled.values()
            for example in orjson.loads(orjson.dumps({"examples": examples}))["examples"]
        ]
        learned += tagger.learn_batch(examples)
    cpu = time.process_time() - t0
    return {"messages": len(raws), "labels_learned": learned, "cpu_s": cpu, "us_per_message": 1e6 * cpu / len(raws)}


def tagging_floor(
    raws: list[bytes],
    batch_size: int,
    partitions: int,
    through_kafka: Sequence[str] = (),
    producer_batch: int | None = None,
) -> dict[str, float]:
    """The least that tagging with its required outputs can cost a worker with this Kafka client.

    In one process, against the embedded broker, no Faust: each batch predicted and
    learned as in :func:`tagging_alone`, plus what the issue requires of every ticket:
    the ticket with its predictions encoded and produced to ``tickets-classified``
    (whole produce batches per partition through aiokafka, delivery awaited once per
    batch, as ``Outbox.send_records``), and its reading and first prediction kept for a
    late label (a plain dict, no expiry).

    ``through_kafka``: also what several workers and a restart need at the least, with
    nothing around it: ``"labels"``, the examples of the batch's labelled tickets (every
    worker learns every label), ``"texts"``, the texts to keep (they must outlive the
    worker); each sent as one JSON message a batch and partition, read back by a plain
    consumer and decoded, and learned or kept from what was read.

    ``producer_batch``: the producer's batch size in bytes (the worker's,
    ``pipeline.runtime.app.PRODUCER_BATCH_BYTES``, unless given).
    """
    # aiokafka, not the commands' kafka-python: this is the worker's floor, with Faust's client
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from pipeline.commands.cli import tune_gc
    from pipeline.runtime.app import PRODUCER_BATCH_BYTES
    from pipeline.runtime.kafka import kafka_partitions
    from pipeline.runtime.outbox import Outbox
    from pipeline.tagging.tagger import FIELDS, TicketTagger, predicted_labels, reading_text

    docs = _tagger_inputs(raws)

    class Faustless:
        """What ``Outbox.send_records`` takes of Faust's producer: its aiokafka client."""

        def __init__(self, client: AIOKafkaProducer) -> None:
            self._producer = client

    async def run(url: str) -> dict[str, float]:
        # as the worker's producer: every replica, its batch size
        producer = AIOKafkaProducer(
            bootstrap_servers=url, acks="all", max_batch_size=producer_batch or PRODUCER_BATCH_BYTES
        )
        consumer = AIOKafkaConsumer(bootstrap_servers=url, group_id=None, auto_offset_reset="earliest")
        await producer.start()
        await consumer.start()
        client = Faustless(producer)
        consumer.assign([TopicPartition(t, p) for t in ("floor-texts", "floor-training") for p in range(partitions)])
        try:
            tune_gc()  # as the worker
            tagger = TicketTagger()
            kept: dict[str, tuple[str, str]] = {}
            learned = 0
            t0 = time.process_time()
            for start in range(0, len(docs), batch_size):
                batch = docs[start : start + batch_size]
                readings = [
                    {"id": d["id"], "reading": reading_text(d["subject"], d["body"])}
                    | {f: d[f] for f in FIELDS if f in d}
                    for d in batch
                ]
                predictions, bins = tagger.predict_binned(readings)
                keys = [d["id"].encode() for d in batch]
                by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
                texts: dict[int, list[list[str]]] = {}
                examples: dict[int, list[dict[str, object]]] = {}
                for doc, key, partition, reading, predicted, b in zip(
                    batch, keys, kafka_partitions(keys, partitions), readings, predictions, bins, strict=True
                ):
                    value = orjson.dumps({**doc, "predicted": predicted, "model_version": tagger.version})
                    by_partition.setdefault(partition, []).append((key, value))
                    first = predicted_labels(predicted, b)
                    if "texts" in through_kafka:
                        texts.setdefault(partition, []).append([reading["id"], reading["reading"], first])
                    else:
                        kept[doc["id"]] = (reading["reading"], first)
                    if len(reading) > 2:
                        examples.setdefault(partition, []).append({**reading, "predicted": first})
                # the worker's own code for the records, its delivery awaited once a batch
                out = Outbox()
                for partition, records in by_partition.items():
                    await out.send_records(client, "tickets-classified", partition, records)
                if "labels" not in through_kafka:
                    learned += tagger.learn_batch([e for part in examples.values() for e in part])
                    examples = {}
                if through_kafka:
                    for topic, lists in (("floor-texts", texts), ("floor-training", examples)):
                        for partition, items in lists.items():
                            await out.send_records(client, topic, partition, [(None, orjson.dumps(items))])
                    wanted = len(texts) + len(examples)
                    while wanted:
                        for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                            wanted -= len(records)
                            for record in records:
                                items = orjson.loads(record.value)
                                if tp.topic == "floor-texts":
                                    for ticket_id, reading_, first in items:
                                        kept[ticket_id] = (reading_, first)
                                else:
                                    learned += tagger.learn_batch(items)
                await out.delivered()
            cpu = time.process_time() - t0
        finally:
            await consumer.stop()
            await producer.stop()
        return {"messages": len(raws), "labels_learned": learned, "cpu_s": cpu, "us_per_message": 1e6 * cpu / len(raws)}

    broker = EmbeddedBroker().start()
    try:
        settings = Settings(broker_url=broker.url, app_id="ticketpulse-floor")
        ensure_topics(settings)
        return asyncio.run(run(settings.bootstrap_servers))
    finally:
        broker.stop()


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _restart(worker: subprocess.Popen[bytes], env: dict[str, str], workdir: Path) -> dict[str, float]:
    """Kill the worker (SIGKILL) and start it again; how long it takes to read its label
    join's kept texts back from ``texts-to-join`` (its log's ``label_join read_again``)."""
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    log = workdir / "worker-restarted.log"
    started = time.perf_counter()
    again = subprocess.Popen(
        [sys.executable, "-m", "pipeline.commands.cli", "worker"],
        env={**env, "TICKETPULSE_LOG_LEVEL": "info"},
        start_new_session=True,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        while time.perf_counter() - started < 300:
            time.sleep(0.5)
            lines = [line for line in log.read_text(errors="replace").splitlines() if "label_join read_again" in line]
            if lines:
                fields = dict(item.split("=", 1) for item in lines[0].split("read_again ", 1)[1].split())
                return {
                    "ready_s": time.perf_counter() - started,
                    "read_s": float(fields["seconds"]),
                    "messages": int(fields["messages"]),
                    "texts": int(fields["texts"]),
                    "kept": int(fields["kept"]),
                }
        raise SystemExit(f"the restarted worker read no kept texts back in 300 s; its log: {log}")
    finally:
        os.killpg(again.pid, signal.SIGTERM)
        again.wait(timeout=30)


def end_to_end(raws: list[bytes], unique: int, settings_env: dict[str, str], restart: bool = False) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="ticketpulse-bench-"))
    broker = EmbeddedBroker().start()
    influx = EmbeddedInflux().start()
    worker = None
    try:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TICKETPULSE_")},
            "TICKETPULSE_BROKER_URL": broker.url,
            "TICKETPULSE_INFLUX_URL": influx.url,
            "TICKETPULSE_APP_ID": "ticketpulse-bench",
            "TICKETPULSE_DATA_DIR": str(workdir),
            "TICKETPULSE_WEB_ENABLED": "false",
            "TICKETPULSE_LOG_LEVEL": "warning",
            **settings_env,
        }
        settings = Settings(broker_url=broker.url, influx_url=influx.url, app_id="ticketpulse-bench")
        ensure_topics(settings)
        worker = subprocess.Popen(
            [sys.executable, "-m", "pipeline.commands.cli", "worker"],
            env=env,
            start_new_session=True,
            stdout=(workdir / "worker.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        produce(settings, [(0, r) for _, r in BROKEN], validate=False, progress=False)
        while _count_dead_letters(settings) < len(BROKEN):
            time.sleep(0.2)
        reader = _Volumes(influx, Path("/nonexistent"), settings.influx_database)
        cpu0 = _cpu_seconds(worker.pid)
        t0 = time.perf_counter()
        summary = produce(settings, list(enumerate(raws)), total=len(raws), validate=False)
        sent_s = time.perf_counter() - t0
        counted, progress_at = 0, time.monotonic()
        while counted < unique:
            time.sleep(0.2)
            now_counted = sum(sum(v.values()) for v in reader.read().values())
            if now_counted != counted:
                counted, progress_at = now_counted, time.monotonic()
            elif time.monotonic() - progress_at > 60:
                # a count that stops short is a lost ticket, not a slow worker: say so, do not wait for ever
                raise SystemExit(
                    f"the counts stopped at {counted} of {unique} distinct tickets for 60 s; worker log: {workdir}"
                )
            print(f"\r  counted {counted}/{unique}", end="", file=sys.stderr, flush=True)
        elapsed = time.perf_counter() - t0
        cpu = _cpu_seconds(worker.pid) - cpu0
        print(file=sys.stderr)
        restarted: dict[str, float] = {}
        if restart:
            killed, worker = worker, None  # _restart kills it, and stops the one it starts
            restarted = _restart(killed, env, workdir)
        return {
            **{f"restart_{name}": value for name, value in restarted.items()},
            "messages": summary.sent,
            "produce_s": sent_s,
            "elapsed_s": elapsed,
            "worker_cpu_s": cpu,
            "messages_per_cpu_s": summary.sent / cpu,
            "messages_per_s": summary.sent / elapsed,
            "tickets_per_s": unique / elapsed,
        }
    finally:
        try:
            if worker is not None:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(timeout=30)
        finally:  # the services stop whatever happened to the worker
            broker.stop()
            influx.stop()


# --- the contract other tools call (issue #27): a file's tickets, N workers, one JSON line ---


def read_ticket_file(path: Path, limit: int | None = None) -> list[bytes]:
    """The messages of a JSONL file (gzip-compressed when it ends in ``.gz``), in file order.

    Every non-blank line is a message, valid or not: the invalid ones are for the
    workers to dead-letter, as a helpdesk's would be.
    """
    if not path.is_file():
        raise SystemExit(f"--tickets: {path} is not a file")
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    raws: list[bytes] = []
    with opener(path, "rb") as fh:
        for line in fh:
            if limit is not None and len(raws) >= limit:
                break
            if line.strip():
                raws.append(line.rstrip(b"\r\n"))
    if not raws:
        raise SystemExit(f"--tickets: {path} holds no lines")
    return raws


@dataclass
class Expected:
    """What an exact pipeline makes of the messages: computed from them, not from the pipeline."""

    #: distinct valid tickets per ``(area, window start)``, each in the window of its first copy
    counts: Counter[tuple[str, int]]
    #: the ticket id of each message, ``None`` for an invalid one (in message order)
    ids: list[str | None]
    #: messages the workers must reject (dead letters): not a ticket, too large, dated too far ahead
    rejected: int
    #: valid tickets that carry no ``product_area`` (counted under a predicted one unless the
    #: worker's TICKETPULSE_COUNT_PREDICTED_TAGS is false)
    without_area: int
    #: how far, at most, a ticket's window is behind the newest window before it in the file:
    #: the allowed lateness a worker needs to count every ticket whatever order it reads them in
    lateness_seconds: int = 0

    @property
    def tickets(self) -> int:
        return sum(self.counts.values())


def expected_counts(raws: Sequence[bytes], settings: Settings, now: float | None = None) -> Expected:
    """Validate each message as the worker does (:func:`parse_ticket`, its size limit and
    TICKETPULSE_MAX_FUTURE_HOURS), and count each ticket id once, in its first copy's window.

    >>> good = b'{"id": "a", "created_at": "2026-03-02T10:05:00Z", "customer_id": "c", "subject": "s", "body": "b"}'
    >>> e = expected_counts([good, good, b"{"], Settings())
    >>> dict(e.counts), e.ids, e.rejected, e.without_area, e.lateness_seconds
    ({('unassigned', 1772445600): 1}, ['a', 'a', None], 1, 1, 0)
    """
    latest = (time.time() if now is None else now) + settings.max_future_hours * 3600
    counts: Counter[tuple[str, int]] = Counter()
    ids: list[str | None] = []
    seen: set[str] = set()
    rejected = without_area = lateness = 0
    newest: int | None = None
    for raw in raws:
        try:
            ticket = parse_ticket(raw, settings.max_ticket_bytes, latest)
        except TicketError:
            ids.append(None)
            rejected += 1
            continue
        ids.append(ticket.id)
        window = window_start(ticket.created_ts, settings.window_seconds)
        newest = window if newest is None else max(newest, window)
        lateness = max(lateness, newest - window)
        if ticket.id in seen:
            continue
        seen.add(ticket.id)
        without_area += ticket.product_area is None
        counts[(ticket.product_area or UNASSIGNED, window)] += 1
    return Expected(counts, ids, rejected, without_area, lateness)


def _start_workers(
    n: int, env: dict[str, str], workdir: Path, profile_dir: Path | None = None
) -> list[subprocess.Popen[bytes]]:
    """``n`` worker processes of one app, each with its own data dir and log in ``workdir``
    (with ``profile_dir``: each under cProfile, ``benchmarks/profiled_worker.py``)."""
    workers = []
    for i in range(n):
        data_dir = workdir / f"worker-{i + 1}"
        data_dir.mkdir()
        command = [sys.executable, "-m", "pipeline.commands.cli", "worker"]
        extra = {}
        if profile_dir is not None:
            command = [sys.executable, str(Path(__file__).with_name("profiled_worker.py"))]
            extra = {"TICKETPULSE_PROFILE_OUT": str(profile_dir.resolve() / f"worker-{i + 1}.prof")}
        workers.append(
            subprocess.Popen(
                command,
                env={**env, "TICKETPULSE_DATA_DIR": str(data_dir), **extra},
                start_new_session=True,
                stdout=(workdir / f"worker-{i + 1}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
    return workers


def _stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def _groups_stable(settings: Settings, members: int) -> bool:
    """Whether the worker's consumer groups (Faust's, and the ticket reader's ``<app id>-tickets``)
    are stable with ``members`` members each: every worker has its partitions before the clock starts.

    aiokafka's admin client: kafka-python's cannot read Tansu's DescribeGroups answer (nor can
    aiokafka's for a group Tansu does not know yet: then not stable).
    """
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    async def stable(group: str) -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        await admin.start()
        try:
            answers = await admin.describe_consumer_groups([group])
        except (KafkaError, ValueError):
            return False
        finally:
            await admin.close()
        described = [g for answer in answers for g in answer.groups if g[1] == group]
        return bool(described) and described[0][2] == "Stable" and len(described[0][5]) == members

    return all(asyncio.run(stable(group)) for group in (settings.app_id, f"{settings.app_id}-tickets"))


def _wait_until_ready(settings: Settings, workers: list[subprocess.Popen[bytes]], workdir: Path) -> None:
    """The workers are up once they have dead-lettered the broken messages and their groups are stable."""
    produce(settings, [(0, r) for _, r in BROKEN], validate=False, progress=False)
    deadline = time.monotonic() + 180
    while _count_dead_letters(settings) < len(BROKEN) or not _groups_stable(settings, len(workers)):
        if any(w.poll() is not None for w in workers) or time.monotonic() > deadline:
            raise SystemExit(f"the workers did not all start reading within 180 s; their logs: {workdir}")
        time.sleep(0.5)


def produce_at_rate(
    settings: Settings, raws: Sequence[bytes], ids: Sequence[str | None], rate: float
) -> tuple[int, dict[str, float]]:
    """Send the messages at ``rate`` a second, keyed by ticket id as ``produce`` does; the
    messages confirmed and, per ticket id, when its first copy was handed to the producer
    (``time.time()``)."""
    from kafka.errors import KafkaError

    from pipeline.runtime import kafka_clients

    client = kafka_clients.producer(settings, topics=[settings.topic_tickets])
    stamps: dict[str, float] = {}
    futures = []
    t0 = time.perf_counter()
    try:
        for n, (raw, ticket_id) in enumerate(zip(raws, ids, strict=True)):
            wait = t0 + n / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            key = ticket_id.encode() if ticket_id is not None else None
            stamps.setdefault(ticket_id or "", time.time())
            futures.append(client.send(settings.topic_tickets, raw, key=key))
        client.flush()
        sent = 0
        for future in futures:
            try:
                future.get()
                sent += 1
            except KafkaError:
                pass  # refused by the broker: counted below as not sent
    finally:
        client.close()
    stamps.pop("", None)
    return sent, stamps


class ClassifiedWatch(threading.Thread):
    """Reads ``tickets-classified`` (its name from :mod:`pipeline.topology`) from the start and
    notes when each ticket id first arrived (``time.time()``)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        from kafka import TopicPartition

        from pipeline.runtime import kafka_clients

        self.topic = topology(settings)["classified"].name
        self.client = kafka_clients.consumer(settings, max_poll_records=5000, fetch_max_wait_ms=50)
        self.client.assign([TopicPartition(self.topic, p) for p in range(settings.partitions)])
        self.arrived: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.is_set():
                batch = self.client.poll(timeout_ms=100)
                now = time.time()
                for records in batch.values():
                    for record in records:
                        if record.key is not None:
                            self.arrived.setdefault(record.key.decode(), now)
        finally:
            self.client.close()

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=30)


def latency_ms(stamps: dict[str, float], arrived: dict[str, float]) -> dict[str, float]:
    """p50 and p99 of the time from a ticket's first produce to its first ``tickets-classified`` record.

    >>> latency_ms({"a": 1.0, "b": 2.0}, {"a": 1.5, "b": 2.1})
    {'p50_latency_ms': 300.0, 'p99_latency_ms': 496.0, 'latency_tickets': 2}
    """
    values = np.array([arrived[i] - t for i, t in stamps.items() if i in arrived]) * 1000
    if not len(values):
        raise SystemExit("no ticket arrived on tickets-classified: is tagging off (TICKETPULSE_TAGGING_ENABLED)?")
    p50, p99 = np.percentile(values, [50, 99])
    return {
        "p50_latency_ms": round(float(p50), 1),
        "p99_latency_ms": round(float(p99), 1),
        "latency_tickets": len(values),
    }


def _read_counts(reader: InfluxReader) -> Counter[tuple[str, int]]:
    """Distinct tickets per ``(area, window start)`` as InfluxDB holds them (the areas' roll-ups)."""
    counts: Counter[tuple[str, int]] = Counter()
    for series in reader.query("SELECT tickets FROM ticket_volume WHERE case_type = 'all' GROUP BY area"):
        for ts, tickets in series["values"]:
            counts[(series["tags"]["area"], int(ts))] = int(tickets)
    return counts


def _read_total(reader: InfluxReader) -> int:
    series = reader.query("SELECT sum(tickets) FROM ticket_volume WHERE case_type = 'all'")
    return int(series[0]["values"][0][1]) if series else 0


def _rss_mb(pid: int) -> float:
    """Resident memory of a process (MB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _wait_for_counts(
    reader: InfluxReader,
    tickets: int,
    workdir: Path,
    procs: Sequence[subprocess.Popen[bytes]] = (),
    trace: list[dict[str, float]] | None = None,
    every: float = 10.0,
) -> int:
    """Wait until InfluxDB holds ``tickets`` tickets in all (or more: then the counts are not
    exact, and waiting is no use); a count that stops short for 60 s is a lost ticket.

    ``trace``: every ``every`` seconds, the tickets counted, the workers' CPU and their
    resident memory are appended (a long run's rate and memory over time)."""
    counted, progress_at = 0, time.monotonic()
    started = next_trace = time.monotonic()
    while counted < tickets:
        time.sleep(0.2)
        now_counted = _read_total(reader)
        if now_counted != counted:
            counted, progress_at = now_counted, time.monotonic()
        elif time.monotonic() - progress_at > 60:
            print(f"\nthe counts stopped at {counted} of {tickets} tickets for 60 s; logs: {workdir}", file=sys.stderr)
            break
        if trace is not None and time.monotonic() >= next_trace:
            next_trace += every
            trace.append(
                {
                    "seconds": round(time.monotonic() - started, 1),
                    "counted": counted,
                    "worker_cpu_seconds": round(sum(_cpu_seconds(p.pid) for p in procs), 2),
                    "worker_rss_mb": round(sum(_rss_mb(p.pid) for p in procs), 1),
                }
            )
        print(f"\r  counted {counted}/{tickets}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return counted


def _wait_until_idle(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 180.0) -> float:
    """Wait until the workers' CPU over two seconds is under 5 % of a core; the seconds waited.

    The counts reach InfluxDB before the stages behind them are done (the spike watches
    judge the windows the watermark closed, every worker learns the last labels): their
    CPU belongs to these tickets too, so the CPU is read once the workers are idle.
    """
    t0 = time.monotonic()
    before = sum(_cpu_seconds(p.pid) for p in procs)
    while time.monotonic() - t0 < timeout:
        time.sleep(2.0)
        now = sum(_cpu_seconds(p.pid) for p in procs)
        if now - before < 0.1:
            break
        before = now
    return time.monotonic() - t0


def transport_rate(settings: Settings, messages: int) -> dict[str, float]:
    """The broker's raw consumption of ``tickets``: the same messages read from the start by the
    Kafka client the worker's ticket reader uses (aiokafka, its fetch size), nothing done with them."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def consume() -> dict[str, float]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=max(1_048_576, settings.max_ticket_bytes * 2),
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(settings.topic_tickets, p) for p in range(settings.partitions)])
            read, t0, cpu0 = 0, time.perf_counter(), time.process_time()
            deadline = time.monotonic() + 300
            while read < messages and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=1000, max_records=settings.batch_size)).values():
                    read += len(records)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        finally:
            await consumer.stop()
        if read < messages:
            raise SystemExit(f"the transport run read {read} of the {messages} messages on {settings.topic_tickets}")
        return {"transport_messages_per_second": round(read / seconds), "transport_cpu_seconds": round(cpu, 3)}

    return asyncio.run(consume())


def changelog_records(settings: Settings) -> dict[str, int]:
    """Records on each table's changelog topic (every partition's end offset, summed): what the
    workers' tables wrote, which their commits wait for (Faust flushes table changes first)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def read() -> dict[str, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None)
        await consumer.start()
        try:
            records = {}
            for topic in sorted(t for t in await consumer.topics() if t.endswith("-changelog")):
                tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
                ends = await consumer.end_offsets(tps)
                records[topic.removeprefix(f"{settings.app_id}-").removesuffix("-changelog")] = sum(ends.values())
            return records
        finally:
            await consumer.stop()

    return asyncio.run(read())


def _check_counts(expected: Expected, counts: Mapping[tuple[str, int], int], by_window: bool) -> dict[str, object]:
    """Whether the counts read back equal the expected ones (per area and window, or per window
    when some tickets are counted under predicted areas); a few differences when not."""
    want, got = expected.counts, counts
    if by_window:
        want, got = Counter(), Counter()
        for (_, window), n in expected.counts.items():
            want[("*", window)] += n
        for (_, window), n in counts.items():
            got[("*", window)] += n
    wrong = sorted(k for k in set(want) | set(got) if want.get(k, 0) != got.get(k, 0))
    out: dict[str, object] = {"counted": sum(counts.values()), "exact_by": "window" if by_window else "area and window"}
    if wrong:
        out["differences"] = [
            {
                "area": area,
                "window": datetime.fromtimestamp(window, UTC).isoformat(),
                "expected": want.get((area, window), 0),
                "read": got.get((area, window), 0),
            }
            for area, window in wrong[:10]
        ] + ([{"more": len(wrong) - 10}] if len(wrong) > 10 else [])
    return out


def _workers_setup(
    raws: Sequence[bytes], broker: EmbeddedBroker, influx: EmbeddedInflux, settings_env: dict[str, str]
) -> tuple[dict[str, str], Settings, Expected]:
    """The workers' environment and settings (as they read them), and what they should count.

    A file out of time order by more than the workers' allowed lateness gets a lateness
    that covers it (unless ``settings_env`` sets one): the workers would rightly skip the
    tickets that come too late, and here every ticket is to be counted.
    """
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TICKETPULSE_")},
        "TICKETPULSE_BROKER_URL": broker.url,
        "TICKETPULSE_INFLUX_URL": influx.url,
        "TICKETPULSE_APP_ID": "ticketpulse-bench",
        "TICKETPULSE_WEB_ENABLED": "false",
        "TICKETPULSE_LOG_LEVEL": "warning",
        **settings_env,
    }
    settings = Settings.model_validate(
        {k.removeprefix("TICKETPULSE_").lower(): v for k, v in env.items() if k.startswith("TICKETPULSE_")}
    )
    expected = expected_counts(raws, settings)
    lateness = "TICKETPULSE_ALLOWED_LATENESS_SECONDS"
    if expected.lateness_seconds > settings.allowed_lateness_seconds and lateness not in settings_env:
        env[lateness] = str(expected.lateness_seconds + settings.window_seconds)
        settings = settings.model_copy(update={"allowed_lateness_seconds": int(env[lateness])})
    return env, settings, expected


def run_contract(
    raws: Sequence[bytes],
    workers: int = 1,
    rate: float | None = None,
    settings_env: dict[str, str] | None = None,
    trace: list[dict[str, float]] | None = None,
    profile_dir: Path | None = None,
) -> dict[str, object]:
    """Play ``raws`` in order through the embedded broker, InfluxDB and ``workers`` worker
    processes; what the ``--json`` line reports (module docstring, docs/benchmarks.md).

    The clock runs from the first message sent until InfluxDB holds every count; the
    workers' CPU is read from /proc from then until they are idle again. ``trace``: filled
    with the count, CPU and memory of the workers every ten seconds. ``rate``: messages a second (each
    stamped as it is handed to the producer), and the latency to ``tickets-classified``.
    """
    workdir = Path(tempfile.mkdtemp(prefix="ticketpulse-bench-"))
    broker, influx = EmbeddedBroker(), EmbeddedInflux()
    procs: list[subprocess.Popen[bytes]] = []
    watch: ClassifiedWatch | None = None
    stamps: dict[str, float] = {}
    try:
        broker.start()
        influx.start()
        env, settings, expected = _workers_setup(raws, broker, influx, settings_env or {})
        ensure_topics(settings)
        procs = _start_workers(workers, env, workdir, profile_dir)
        _wait_until_ready(settings, procs, workdir)
        reader = InfluxReader(settings)
        if rate is not None:
            watch = ClassifiedWatch(settings)
            watch.start()
        cpu0 = sum(_cpu_seconds(p.pid) for p in procs)
        t0 = time.perf_counter()
        if rate is None:
            summary = produce(settings, list(enumerate(raws)), total=len(raws), validate=False)
            sent = summary.sent
        else:
            sent, stamps = produce_at_rate(settings, raws, expected.ids, rate)
        produce_s = time.perf_counter() - t0
        _wait_for_counts(reader, expected.tickets, workdir, procs, trace)
        seconds = time.perf_counter() - t0
        counted_cpu = sum(_cpu_seconds(p.pid) for p in procs) - cpu0
        _wait_until_idle(procs)
        settled = time.perf_counter() - t0
        cpu = sum(_cpu_seconds(p.pid) for p in procs) - cpu0
        dead_letters = _count_dead_letters(settings) - len(BROKEN)
        latency: dict[str, float] = {}
        if watch is not None:
            wait_until = time.monotonic() + 60
            while len(watch.arrived) < len(stamps) and time.monotonic() < wait_until:
                time.sleep(0.2)
            watch.stop()
            latency = latency_ms(stamps, watch.arrived)
        _stop_workers(procs)  # idle by now; stopped so that the transport run has the cores
        tables = changelog_records(settings)
        checked = _check_counts(
            expected, _read_counts(reader), by_window=expected.without_area > 0 and settings.count_predicted_tags
        )
        transport = transport_rate(settings, len(BROKEN) + sent)
    finally:
        if watch is not None and watch.is_alive():
            watch.stop()
        try:
            _stop_workers(procs)
        finally:  # the services stop whatever happened to the workers
            broker.stop()
            influx.stop()
    exact = "differences" not in checked and dead_letters + (len(raws) - sent) == expected.rejected
    return {
        "tickets": expected.tickets,
        "messages": len(raws),
        "rejected": expected.rejected,
        "dead_letters": dead_letters,
        "not_sent": len(raws) - sent,
        "workers": workers,
        "file_lateness_seconds": expected.lateness_seconds,
        "allowed_lateness_seconds": settings.allowed_lateness_seconds,
        "seconds": round(seconds, 2),
        "produce_seconds": round(produce_s, 2),
        "tickets_per_second": round(expected.tickets / seconds, 1),
        "settled_seconds": round(settled, 2),
        "worker_cpu_seconds_at_counts": round(counted_cpu, 2),
        "worker_cpu_seconds": round(cpu, 2),
        "tickets_per_worker_cpu_second": round(expected.tickets / cpu, 1) if cpu > 0 else None,
        **transport,
        **({"rate": rate, **latency} if rate is not None else {}),
        **checked,
        "exact": exact,
        "changelog_records": tables,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each configuration, in turn (median)")
    parser.add_argument("--scale", type=float, default=20)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TICKETPULSE_NAME=VALUE",
        help="a worker setting, e.g. TICKETPULSE_TAGGING_ENABLED=false (repeatable)",
    )
    parser.add_argument("--bodies", type=Path, help="a CSV with a 'body' column: real bodies, in turn")
    parser.add_argument(
        "--restart", action="store_true", help="then kill the worker and time reading its kept texts back"
    )
    parser.add_argument(
        "--tagging-share", action="store_true", help="tagging's CPU in the worker against the model alone"
    )
    parser.add_argument(
        "--tagging-floor",
        action="store_true",
        help="only the least tagging's required outputs cost (model, tickets-classified, texts kept), no worker",
    )
    parser.add_argument(
        "--producer-batch",
        type=int,
        metavar="BYTES",
        help="with --tagging-floor: the producer's batch size (default: the worker's)",
    )
    contract = parser.add_argument_group("the contract of issue #27 (docs/benchmarks.md)")
    contract.add_argument(
        "--tickets", type=Path, metavar="FILE.jsonl[.gz]", help="play this file's tickets, in file order"
    )
    contract.add_argument("--limit", type=int, metavar="N", help="only the first N messages")
    contract.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default 1)")
    contract.add_argument(
        "--rate", type=float, metavar="R", help="send R messages a second; report the latency to tickets-classified"
    )
    contract.add_argument("--json", action="store_true", help="one JSON object as the last line")
    contract.add_argument(
        "--trace",
        type=Path,
        metavar="FILE",
        help="write a JSON line every 10 s: tickets counted, the workers' CPU and resident memory",
    )
    contract.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run the workers under cProfile (CPU time), a DIR/worker-N.prof each: slower, for attributing CPU only",
    )
    return parser


def _generated(args: argparse.Namespace) -> tuple[list[bytes], int]:
    """The generated messages (with ``--bodies``' texts) and their distinct tickets."""
    spike = Spike("reports", START.replace(day=3, hour=10), 2, 4)
    gen = TicketGenerator(START, days=args.days, scale=args.scale, seed=42, spikes=[spike])
    payloads = [t.payload for t in gen.tickets()]
    if args.bodies:
        csv.field_size_limit(10_000_000)  # issue bodies with pasted logs
        with args.bodies.open(newline="") as f:
            bodies = [row["body"] for row in csv.DictReader(f) if row.get("body")]
        # a re-sent ticket keeps its text: the body follows the id
        body_of: dict[object, str] = {}
        payloads = [{**p, "body": body_of.setdefault(p["id"], bodies[len(body_of) % len(bodies)])} for p in payloads]
        mean = sum(len(p["body"]) for p in payloads) / len(payloads)
        print(f"bodies: {len(bodies)} from {args.bodies}, {mean:.0f} characters on average", file=sys.stderr)
    return [orjson.dumps(p) for p in payloads], sum(gen.truth().values())


def contract_main(args: argparse.Namespace, settings_env: dict[str, str]) -> None:
    """``--tickets`` or ``--json``: :func:`run_contract` on the file's messages (or the generated ones)."""
    if args.workers < 1 or (args.limit is not None and args.limit < 1) or (args.rate is not None and args.rate <= 0):
        raise SystemExit("--workers and --limit take a positive whole number, --rate a positive number")
    if args.tickets is not None:
        raws, source = read_ticket_file(args.tickets, args.limit), str(args.tickets)
    else:
        raws = _generated(args)[0][: args.limit]
        source = f"generated: {args.days:g} days, scale {args.scale:g}" + (
            f", bodies {args.bodies}" if args.bodies else ""
        )
    print(f"{source}: {len(raws)} messages, {args.workers} worker(s)", file=sys.stderr)
    trace: list[dict[str, float]] | None = [] if args.trace else None
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    result = {"source": source, **run_contract(raws, args.workers, args.rate, settings_env, trace, args.profile)}
    if args.trace and trace is not None:
        args.trace.write_text("".join(orjson.dumps(point).decode() + "\n" for point in trace))
    result["machine"] = f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        for name, value in result.items():
            print(f"{name}: {value}")


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    settings_env = dict(item.split("=", 1) for item in args.set)
    if any(not name.startswith("TICKETPULSE_") for name in settings_env):
        parser.error("--set takes TICKETPULSE_NAME=VALUE")
    if args.tickets is not None or args.json:
        contract_main(args, settings_env)
        return
    raws, unique = _generated(args)
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"input: {len(raws)} messages, {unique} distinct tickets ({args.days:g} days, scale {args.scale:g})")
    best = max((in_process(raws) for _ in range(3)), key=lambda r: r["all"])
    print("in-process, one core (tickets/s): " + ", ".join(f"{k}={v:,.0f}" for k, v in best.items()))
    if args.tagging_floor:
        settings = Settings()
        levels = {"required": (), "labels": ("labels",), "texts": ("labels", "texts")}
        runs_us: dict[str, list[float]] = {"alone": [], **{name: [] for name in levels}}
        learned = {}
        for _ in range(args.repeat):  # in turn, as --tagging-share
            runs_us["alone"].append(tagging_alone(raws, settings.batch_size)["us_per_message"])
            for name, through_kafka in levels.items():
                run = tagging_floor(
                    raws,
                    settings.batch_size,
                    settings.partitions,
                    through_kafka=through_kafka,
                    producer_batch=args.producer_batch,
                )
                runs_us[name].append(run["us_per_message"])
                learned[name] = run["labels_learned"]
        med = {name: statistics.median(values) for name, values in runs_us.items()}
        of = {name: " / ".join(f"{v:.1f}" for v in values) for name, values in runs_us.items()}
        print(f"the model alone: median {med['alone']:.1f} us a message (of {of['alone']})")
        print(
            f"with what the issue requires of each ticket (its tickets-classified record produced, its text kept), "
            f"one process, no Faust: median {med['required']:.1f} us (of {of['required']}) = "
            f"{med['required'] / med['alone']:.2f} times the model (the issue allows 1.2); {learned['required']:,} "
            "labels learned"
        )
        for name, what in (("labels", "the labels"), ("texts", "the labels and the texts")):
            print(
                f"and {what} through Kafka (one JSON message a batch and partition, read back): "
                f"median {med[name]:.1f} us (of {of[name]}) = {med[name] / med['alone']:.2f} times the model; "
                f"{learned[name]:,} labels learned"
            )
        return
    runs = {"": settings_env}
    if args.tagging_share:
        runs = {" (tagging on)": {**settings_env, "TICKETPULSE_TAGGING_ENABLED": "true"}}
        runs[" (tagging off)"] = {**settings_env, "TICKETPULSE_TAGGING_ENABLED": "false"}
    cpus: dict[str, list[float]] = {label: [] for label in runs}
    for _, (label, env) in itertools.product(range(args.repeat), runs.items()):
        e2e = end_to_end(raws, unique, env, restart=args.restart)
        cpus[label].append(e2e["worker_cpu_s"])
        print(
            f"end to end, one worker{label}: {e2e['messages']} messages in {e2e['elapsed_s']:.1f} s = "
            f"{e2e['messages_per_s']:,.0f} messages/s, {e2e['tickets_per_s']:,.0f} distinct tickets/s "
            f"(producer alone: {e2e['produce_s']:.1f} s); the worker used {e2e['worker_cpu_s']:.1f} CPU-s = "
            f"{e2e['messages_per_cpu_s']:,.0f} messages per worker CPU-second"
        )
        if "restart_read_s" in e2e:
            print(
                f"killed and started again: {e2e['restart_kept']:,.0f} kept texts read back "
                f"({e2e['restart_texts']:,.0f} texts in {e2e['restart_messages']:,.0f} messages of texts-to-join) "
                f"in {e2e['restart_read_s']:.1f} s, {e2e['restart_ready_s']:.1f} s after the start"
            )
    cpu = {label: statistics.median(values) for label, values in cpus.items()}
    if args.repeat > 1:
        for label, values in cpus.items():
            runs_s = " / ".join(f"{v:.1f}" for v in values)
            print(f"worker CPU{label}: median {cpu[label]:.1f} s of {runs_s}")
    if args.tagging_share:
        settings = Settings()
        alone = tagging_alone(raws, settings.batch_size)
        steps = tagging_steps_alone(raws, settings.batch_size, settings.partitions)
        in_worker = 1e6 * (cpu[" (tagging on)"] - cpu[" (tagging off)"]) / len(raws)
        print(
            f"tagging: {in_worker:.1f} us a message in the worker (on minus off); the model alone "
            f"{alone['us_per_message']:.1f} us ({alone['labels_learned']:,} labels learned, "
            f"{alone['cpu_s']:.1f} CPU-s): the worker {in_worker / alone['us_per_message']:.2f} times the model "
            "(the issue allows 1.2)"
        )
        print(
            f"the worker's tagging steps in one process, without Kafka: {steps['us_per_message']:.1f} us a message "
            f"({steps['labels_learned']:,} labels learned), {steps['us_per_message'] / alone['us_per_message']:.2f} "
            f"times the model; the rest (Kafka, Faust, the collector): {in_worker - steps['us_per_message']:.1f} us"
        )


if __name__ == "__main__":
    main()
