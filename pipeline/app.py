"""The Faust app: topics, tables and the agents a ticket passes through.

Where a ticket goes (see :mod:`pipeline.volume` for why it is exact):

``tickets`` (key: ticket id)
    -> :func:`validate` -> bad input to ``tickets-dead-letter`` with the reason
    -> ``<app>-tickets-by-customer`` (partition: Kafka's partitioner of the customer id;
       one message per batch and partition)
    -> :func:`count` (dedup by ticket id, counts per partition, window and key)
    -> ``<app>-volume-partials`` (partition: that of the window and key)
    -> :func:`merge` (sum over partitions) -> ``ticket_volume`` points in InfluxDB

Agents take whole batches (``stream.take_events``): the per-ticket work is a dict
lookup and a few additions; sends and InfluxDB writes happen once per batch.
"""

from __future__ import annotations

import base64
import logging
from collections import ChainMap
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import orjson
from aiokafka.partitioner import murmur2

from .lineprotocol import Point
from .schema import UNASSIGNED, TicketError, parse_ticket
from .settings import Settings
from .sinks import InfluxSink, create_sink
from .volume import COUNTED, DUPLICATE, Fact, PartitionVolume, VolumeTotals, volume_keys, window_start

__all__ = ["PartitionedTable", "Pipeline", "PipelineStats", "build_pipeline"]

logger = logging.getLogger(__name__)

#: Bytes of a rejected message kept in its dead-letter record.
DEAD_LETTER_KEEP_BYTES = 64 * 1024


class PartitionedTable(faust.Table):  # type: ignore[misc]
    """A table whose keys are ``"<partition>/<key>"``.

    Faust writes a table change to the changelog partition of the event being
    processed; with batches (``take_events``) that is not the event a change belongs
    to, so the key itself names its partition. After recovery, ``active_partitions``
    says which partitions this worker owns.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.active_partitions: set[int] = set()

    def partition_for_key(self, key: Any) -> int:
        return int(str(key).split("/", 1)[0])

    async def on_recovery_completed(self, active_tps: Any, standby_tps: Any) -> None:
        self.active_partitions = {tp.partition for tp in active_tps}
        await super().on_recovery_completed(active_tps, standby_tps)


@dataclass
class PipelineStats:
    """Counters a worker keeps and logs (``key=value``) once per batch."""

    received: int = 0
    dead_letters: int = 0
    counted: int = 0
    duplicates: int = 0
    too_late: int = 0
    points_written: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


@dataclass
class Pipeline:
    """The app and everything registered on it."""

    app: faust.App
    settings: Settings
    sink: InfluxSink
    stats: PipelineStats
    topics: dict[str, Any]


def _dead_letter(raw: bytes | None, key: bytes | None, error: str, message: Any) -> dict[str, Any]:
    data = raw or b""
    kept = data[:DEAD_LETTER_KEEP_BYTES]
    record: dict[str, Any] = {
        "error": error,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "key": key.decode(errors="replace") if isinstance(key, bytes) else key,
        "value_bytes": len(data),
        "truncated": len(kept) < len(data),
    }
    try:
        record["value"] = kept.decode()
    except UnicodeDecodeError:
        record["value_base64"] = base64.b64encode(kept).decode()
    return record


def build_pipeline(settings: Settings, sink: InfluxSink | None = None) -> Pipeline:
    """Create the Faust app with its topics, tables and agents for ``settings``."""
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        store="memory://",
        datadir=str(Path(settings.data_dir) / f"{settings.app_id}-data"),
        topic_partitions=settings.partitions,
        table_standby_replicas=0,
        # Measured with Tansu: the defaults made a new worker wait 32 s for its first
        # message, these 5 s (../shared/architecture.md).
        broker_session_timeout=6,
        broker_rebalance_timeout=6,
        broker_heartbeat_interval=1,
        broker_commit_interval=1.0,
        producer_max_request_size=max(1_048_576, settings.max_ticket_bytes * 2),
        consumer_max_fetch_size=max(4 * 1_048_576, settings.max_ticket_bytes * 2),
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_host=settings.web_host,
        topic_allow_declare=True,
        processing_guarantee="at_least_once",
    )
    sink = sink or create_sink(settings)
    stats = PipelineStats()
    window_seconds = settings.window_seconds
    window_tag = settings.window_label
    max_bytes = settings.max_ticket_bytes

    tickets = app.topic(
        settings.topic_tickets, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
    )
    dead_letter = app.topic(
        settings.topic_dead_letter, key_serializer="raw", value_serializer="json", partitions=settings.partitions
    )
    by_customer = app.topic(
        f"{settings.app_id}-tickets-by-customer",
        key_serializer="raw",
        value_serializer="json",
        partitions=settings.partitions,
        internal=True,
    )
    partials = app.topic(
        f"{settings.app_id}-volume-partials",
        key_serializer="raw",
        value_serializer="json",
        partitions=settings.partitions,
        internal=True,
    )
    # Durable facts, in chunks: "<partition>/<offset>" -> [fact, ...] (pipeline.volume).
    first_seen = PartitionedTable(app, name="tickets-first-seen", key_type=str, partitions=settings.partitions)
    totals_table = PartitionedTable(app, name="volume-totals", key_type=str, partitions=settings.partitions)
    app.tables.add(first_seen)
    app.tables.add(totals_table)
    volumes: dict[int, PartitionVolume] = {}

    def _partition_of(key: bytes) -> int:
        # Kafka's default partitioner, so that our explicit partitions match what any
        # client would choose for the same key.
        return (murmur2(key) & 0x7FFFFFFF) % settings.partitions

    @app.agent(tickets, name="validate")
    async def validate(stream: Any) -> None:
        """Split good tickets from bad; pass the good ones on, grouped by customer partition."""
        async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            by_partition: dict[int, list[Fact]] = {}
            for event in events:
                raw = event.value
                try:
                    ticket = parse_ticket(raw, max_bytes)
                except TicketError as exc:
                    stats.dead_letters += 1
                    await dead_letter.send(value=_dead_letter(raw, event.key, str(exc), event.message))
                    continue
                fact = [
                    ticket.id,
                    window_start(ticket.created_ts, window_seconds),
                    ticket.product_area or UNASSIGNED,
                    ticket.case_type or UNASSIGNED,
                    ticket.severity or UNASSIGNED,
                    ticket.customer_id,
                ]
                by_partition.setdefault(_partition_of(ticket.customer_id.encode()), []).append(fact)
            stats.received += len(events)
            # One message per partition and batch: all tickets of a customer land in
            # the same partition, as if each had been sent keyed by its customer id.
            for partition, facts in by_partition.items():
                await by_customer.send(partition=partition, value=facts)

    def _volume(partition: int) -> PartitionVolume:
        vol = volumes.get(partition)
        if vol is None:
            vol = volumes[partition] = PartitionVolume(window_seconds, settings.allowed_lateness_seconds)
        return vol

    async def _send_partials(partition: int, touched: Iterable[tuple[int, tuple[str, str, str]]]) -> None:
        vol = volumes[partition]
        by_target: dict[int, list[list[Any]]] = {}
        by_window: dict[int, dict[tuple[str, str, str], tuple[int, int]]] = {}
        for window, key in touched:
            counts = by_window.get(window)
            if counts is None:
                counts = by_window[window] = vol.counts(window)
            tickets_n, customers_n = counts[key]
            volume_key = orjson.dumps([window, *key]).decode()
            by_target.setdefault(_partition_of(volume_key.encode()), []).append(
                [volume_key, partition, tickets_n, customers_n]
            )
        for target, rows in by_target.items():
            await partials.send(partition=target, value=rows)

    @first_seen.on_recover
    async def rebuild_counts() -> None:
        """Derive the counts of the partitions this worker now owns from the durable facts."""
        volumes.clear()
        owned = first_seen.active_partitions
        for chunk_key, facts in first_seen.items():
            partition = int(chunk_key.split("/", 1)[0])
            if partition in owned:
                _volume(partition).restore(chunk_key, facts)
        for partition in owned:
            vol = _volume(partition)
            vol.close_windows()
            # A partial sent before a crash may not have reached the broker although
            # the facts did: publishing every open count again is idempotent.
            await _send_partials(partition, [(w, key) for w in vol.windows() for key in vol.counts(w)])
        logger.info(
            "agent=count recovered partitions=%s windows=%d chunks=%d",
            ",".join(str(p) for p in sorted(owned)) or "none",
            sum(len(v.windows()) for v in volumes.values()),
            len(first_seen),
        )

    @app.agent(by_customer, name="count")
    async def count(stream: Any) -> None:
        """Count each ticket id once, in the window of its ``created_at``."""
        async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            chunks: dict[int, tuple[str, list[Fact]]] = {}
            touched: dict[int, set[tuple[int, tuple[str, str, str]]]] = {}
            for event in events:
                partition = event.message.partition
                vol = _volume(partition)
                for fact in event.value:
                    outcome = vol.add(fact)
                    if outcome == COUNTED:
                        if partition not in chunks:
                            # keyed by the first event with a new fact: a replay after a
                            # crash never overwrites a chunk that made it (pipeline.volume)
                            chunks[partition] = (f"{partition}/{event.message.offset}", [])
                        chunks[partition][1].append(fact)
                        part_touched = touched.setdefault(partition, set())
                        for key in volume_keys(fact[2], fact[3], fact[4]):
                            part_touched.add((fact[1], key))
                    elif outcome == DUPLICATE:
                        stats.duplicates += 1
                    else:
                        stats.too_late += 1
            # Effects first, then the state that records them (see pipeline.volume).
            for partition, keys in touched.items():
                await _send_partials(partition, keys)
            for partition, (chunk_key, facts) in chunks.items():
                stats.counted += len(facts)
                first_seen[chunk_key] = facts
                vol = volumes[partition]
                vol.record_chunk(chunk_key, facts)
                if vol.close_windows():
                    for expired in vol.expired_chunks():
                        first_seen.pop(expired, None)

    @app.agent(partials, name="merge")
    async def merge(stream: Any) -> None:
        """Sum the partitions' counts and write ``ticket_volume`` points."""
        async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            staged: dict[str, dict[str, list[int]]] = {}
            totals = VolumeTotals(ChainMap(staged, totals_table))
            changed: set[str] = set()
            for event in events:
                target = event.message.partition
                for volume_key, partition, tickets_n, customers_n in event.value:
                    table_key = f"{target}/{volume_key}"
                    if totals.merge(table_key, partition, tickets_n, customers_n):
                        changed.add(table_key)
            points = []
            for table_key in changed:
                window, area, case_type, severity = orjson.loads(table_key.split("/", 1)[1])
                tickets_n, customers_n = totals.total(table_key)
                tags = {"area": area, "case_type": case_type, "severity": severity, "window": window_tag}
                points.append(Point("ticket_volume", tags, {"tickets": tickets_n, "customers": customers_n}, window))
            await sink.write(points)
            stats.points_written += len(points)
            for table_key, value in staged.items():
                totals_table[table_key] = value
            if events:
                logger.info(
                    "agent=merge received=%d dead_letters=%d counted=%d duplicates=%d too_late=%d points=%d",
                    stats.received,
                    stats.dead_letters,
                    stats.counted,
                    stats.duplicates,
                    stats.too_late,
                    stats.points_written,
                )

    topics = {"tickets": tickets, "dead_letter": dead_letter, "by_customer": by_customer, "partials": partials}
    return Pipeline(app=app, settings=settings, sink=sink, stats=stats, topics=topics)
