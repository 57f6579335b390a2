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
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson

from pipeline.commands.demo import BROKEN, _count_dead_letters, _Volumes
from pipeline.counting.volume import PartitionVolume, window_start
from pipeline.ingest.produce import produce
from pipeline.ingest.schema import UNASSIGNED, TicketError, parse_ticket
from pipeline.messages import Fact
from pipeline.runtime.kafka import ensure_topics
from pipeline.settings import Settings
from pipeline.testbed.generator import Spike, TicketGenerator
from pipeline.testbed.services import EmbeddedBroker, EmbeddedInflux

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


def main() -> None:
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
    args = parser.parse_args()
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
        print(f"bodies: {len(bodies)} from {args.bodies}, {mean:.0f} characters on average")
    raws = [orjson.dumps(p) for p in payloads]
    unique = sum(gen.truth().values())
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
    settings_env = dict(item.split("=", 1) for item in args.set)
    if any(not name.startswith("TICKETPULSE_") for name in settings_env):
        parser.error("--set takes TICKETPULSE_NAME=VALUE")
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
