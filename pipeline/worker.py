"""The Faust app: topics, tables and the agents a ticket passes through.

Where a ticket goes (see :mod:`pipeline.counting.volume` for why it is exact):

``POST /webhooks/{source}`` (:mod:`pipeline.ingest.webhooks`) -> ``tickets`` (key: ticket id)
    -> ``read_tickets`` (batches straight from the Kafka client, in their own consumer group)
    -> ``validate`` -> bad input to ``tickets-dead-letter`` with the reason
    -> ``<app>-tickets-by-customer`` (partition: Kafka's partitioner of the customer id;
       one message per batch and partition, with the tickets partitions' watermarks)
    -> ``count`` (dedup by ticket id, counts per partition, window and key)
    -> ``<app>-volume-partials`` (partition: that of the window and key)
    -> ``merge`` (sum over partitions) -> ``ticket_volume`` points in InfluxDB
    -> ``<app>-area-volumes`` (partition: that of the area) -> ``watch``: a
       :class:`detectors.VolumeWatch` per area -> ``ticket-alerts``, ``ticket_spike``,
       ``ticket_baseline`` -> ``deliver`` (Slack, signed webhook)

``count`` also forwards each newly counted ticket with its words to ``<app>-pattern-tickets``
(partition: that of the area) -> ``group_patterns`` (every worker, every partition; a window
once it has closed, :mod:`pipeline.patterns.watch`) -> ``pattern_volume``, ``pattern_spike``,
``ticket-alerts``.

The watch also hears, on ``<app>-area-volumes``, example tickets and subject words
straight from ``validate``, and product events from ``product_events`` (which stores
them as ``product_event`` points).

Agents take whole batches (``stream.take_events``): the per-ticket work is a dict
lookup and a few additions; sends and InfluxDB writes happen once per batch. The one
topic with a message per ticket, ``tickets``, is read below Faust's per-event stream
(``read_tickets``: Faust's path cost about 60 µs a message before any work).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import itertools
import logging
import os
import pickle
import re
import socket
import time
from collections import ChainMap, Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError
from aiokafka.partitioner import murmur2

from detectors import AlertGate, SpikeEvent, VolumeWatch
from pipeline.alerts.delivery import AlertDeliverer
from pipeline.counting.volume import (
    ALL,
    COUNTED,
    DUPLICATE,
    Fact,
    IdleSources,
    PartitionVolume,
    VolumeTotals,
    volume_keys,
    window_start,
)
from pipeline.ingest.schema import UNASSIGNED, Ticket, TicketError, parse_label, parse_product_event, parse_ticket
from pipeline.ingest.webhooks import WebhookIngest
from pipeline.outputs.lineprotocol import Point
from pipeline.outputs.sinks import InfluxSink, create_sink
from pipeline.patterns.watch import PatternWatch
from pipeline.runtime.checkpoints import CheckpointWriter, load_checkpoint, write_checkpoint
from pipeline.runtime.kafka import broker_reachable, kafka_partitions
from pipeline.settings import Settings
from pipeline.tagging.labels import ChunkedStore, LabelJoin, entry_chars, texts_of_message
from pipeline.tagging.tagger import FIELDS, TicketTagger, load_tagger, predicted_labels, reading_text, save_tagger
from pipeline.text.privacy import mask_personal

__all__ = [
    "DurableTable",
    "PartitionedTable",
    "Pipeline",
    "PipelineStats",
    "TaggedBatch",
    "build_pipeline",
    "tag_tickets",
    "tagger_checkpoint",
]

logger = logging.getLogger(__name__)

#: Topic suffix (``<app id>-ticket-patterns``) of the pattern each ticket joined:
#: ``{"tickets": [[ticket id, pattern id], ...]}``, one message per batch and partition.
TICKET_PATTERNS = "ticket-patterns"
#: at most this many per message (about 30 bytes each: well under the broker's 1 MB)
ASSIGNMENTS_PER_MESSAGE = 10_000

#: Topic suffix (``<app id>-texts-to-join``) of the tickets whose words the label join keeps
#: in another partition than the one they came in (:mod:`pipeline.tagging.labels`).
TEXTS_TO_JOIN = "texts-to-join"
#: A worker reading kept texts back stops, and says which offsets it did not find, when
#: the topic has given nothing for this long (a broker that lost them, as Tansu on restart).
READ_AGAIN_QUIET_SECONDS = 10.0

#: Table key suffix of the watermarks a partition has heard (merge and watch agents).
WATERMARKS = "__watermarks__"

#: Watch table key suffix of the partition's :class:`detectors.AlertGate`.
ALERT_GATE = "__alert_gate__"

#: The tagger's fields in the order of a fact's tags (area, case type, severity).
FIELDS_BY_TAG = ("product_area", "case_type", "severity")

#: The tagger's fields, as a set: whether a ticket's reading carries labels, without a loop.
_TAGGED_FIELDS = frozenset(FIELDS)

#: Characters of a ticket's body that pattern grouping reads (the problem is said early).
PATTERN_BODY_CHARS = 2000

#: Bytes of a rejected message kept in its dead-letter record.
DEAD_LETTER_KEEP_BYTES = 64 * 1024


def tagger_checkpoint(settings: Settings) -> Path:
    """Where the worker saves its models, with the training positions they include."""
    return Path(settings.data_dir) / "tagger-checkpoint.pickle"


class PipelineApp(faust.App):  # type: ignore[misc]
    """A Faust app that closes its clients after its agents have stopped.

    Faust's ``on_before_shutdown`` fires before the agents are stopped: an agent still
    retrying a write to a slow InfluxDB then found its HTTP session closed under it and
    crashed. ``on_shutdown`` runs once the agents (the app's children) are gone.
    """

    def __init__(self, *args: Any, stop_wait_seconds: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closers: list[Callable[[], Awaitable[None]]] = []
        self.stop_wait_seconds = stop_wait_seconds

    async def _consumer_wait_empty(self, consumer: Any, faust_logger: Any) -> None:
        # Faust waits, when it stops or gives partitions away, for the batches in flight.
        # A batch retrying its write to an InfluxDB that is down would hold a stop until
        # the service manager kills the worker: a stop waits a while, then goes on. Those
        # batches are not committed; the next worker reads them again, and every effect
        # is idempotent (what a killed worker relies on too). A rebalance still waits.
        if not self.should_stop:
            await super()._consumer_wait_empty(consumer, faust_logger)
            return
        waiting = asyncio.ensure_future(super()._consumer_wait_empty(consumer, faust_logger))
        done, _ = await asyncio.wait({waiting}, timeout=self.stop_wait_seconds)
        if not done:
            # Faust's wait swallows cancellation: it is left to end when the consumer stops
            waiting.add_done_callback(lambda task: task.cancelled() or task.exception())
            logger.warning(
                "stop=batches_in_flight waited=%ss: left uncommitted, the next worker reads them again",
                self.stop_wait_seconds,
            )

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        for close in self.closers:
            await close()


#: The largest internal message :meth:`Outbox.send_parts` sends whole, in bytes: under
#: Kafka's default ``message.max.bytes`` (1,048,588) with room for a record batch's header.
MAX_INTERNAL_MESSAGE_BYTES = 900_000

#: The worker's producer batches (Faust's ``producer_max_batch_size``; its default is
#: 16 KB, 30 ``tickets-classified`` records). Each batch is a produce request with its own
#: future and response in the client's Python sender: at 16 KB the client used 4.2-4.6 us
#: of CPU a 520-byte record, at 512 KB 0.8-1.1 (a bare producer on this machine,
#: docs/benchmarks.md). Under the broker's ``message.max.bytes`` (1 MB); a batch always
#: takes its first record, so an internal message up to :data:`MAX_INTERNAL_MESSAGE_BYTES`
#: still goes in one.
PRODUCER_BATCH_BYTES = 512 * 1024


class Outbox:
    """The messages an agent sends for one batch, awaited before the batch is acknowledged.

    ``Topic.send`` only puts a message in Faust's producer buffer; under backpressure the
    flush before a commit gives up (see :class:`DurableTable`), so a worker killed then
    has committed the input of a message the broker never got, and the message is lost
    for good: a ticket never counted, a dead letter never written. An agent sends through
    an outbox and awaits :meth:`delivered` at the end of each batch.
    """

    def __init__(self) -> None:
        self._pending: list[asyncio.Future[Any]] = []

    async def send(self, channel: Any, **kwargs: Any) -> None:
        """Send on ``channel`` (a Faust topic), as ``channel.send(**kwargs)``."""
        self.track(await channel.send(**kwargs))

    async def send_parts(
        self,
        channel: Any,
        partition: int,
        value: dict[str, Any],
        split: Sequence[str],
        last: Sequence[str] = ("watermark", "watermarks"),
    ) -> None:
        """Send ``value`` as JSON to ``partition`` of ``channel``: one message, or, over
        :data:`MAX_INTERNAL_MESSAGE_BYTES`, several, each with a slice of the lists named in
        ``split`` (sliced alike, so that lists that go together stay aligned) and every
        other field whole, but those named in ``last``: the watermarks come with the last
        part only (empty before it), so that no window closes before all its rows came.

        Internal messages are one per batch and partition: a full batch of long tickets
        in a script of three bytes a character (Japanese, Chinese) made one of 5 MB, which
        the producer refused, and the worker stopped. Encoded here, once, and sent as it
        is (Faust's codec would encode it again).
        """
        data = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        lists = [name for name in split if name in value]
        size = len(value[lists[0]]) if lists else 0
        if len(data) > MAX_INTERNAL_MESSAGE_BYTES and size > 1:
            half = size // 2
            first = {**value, **{n: value[n][:half] for n in lists}}
            first.update({n: {} if isinstance(value[n], dict) else None for n in last if n in value})
            await self.send_parts(channel, partition, first, lists, last)
            await self.send_parts(channel, partition, {**value, **{n: value[n][half:] for n in lists}}, lists, last)
            return
        self.track(await channel.send(partition=partition, value=data, value_serializer="raw"))

    async def send_records(
        self, producer: Any, topic: str, partition: int, records: Iterable[tuple[bytes | None, bytes]]
    ) -> None:
        """Send ``(key, value)`` records to one partition of ``topic``, as whole produce batches.

        For a message per ticket (``tickets-classified``). ``Topic.send`` (a future
        message, Faust's producer buffer, its codec registry) made it cost a quarter of
        the worker; a message at a time through the Kafka client (a future, the
        accumulator, the partitioner's pure-Python murmur2) still a tenth
        (docs/benchmarks.md). Here each record is one append to a batch being built, and
        each batch (the producer's ``max_batch_size``) one future. ``producer`` is
        ``await app.maybe_start_producer()``: Faust's, whose Kafka client (settings,
        connection) this borrows.
        """
        client = producer._producer  # Faust's aiokafka producer, started by maybe_start_producer
        batch = client.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start the next
                self.track(await client.send_batch(batch, topic, partition=partition))
                batch = client.create_batch()
                batch.append(key=key, value=value, timestamp=None)  # a batch always takes its first record
        if batch.record_count():
            self.track(await client.send_batch(batch, topic, partition=partition))

    def track(self, sent: Any) -> Any:
        """Wait for ``sent`` (a message's future) in :meth:`delivered` too; return it."""
        self._pending.append(sent)
        return sent

    async def delivered(self) -> None:
        """Return once the broker has acknowledged every message sent so far."""
        pending, self._pending = self._pending, []
        # One by one, not ``asyncio.gather``: gather wraps every future (a callback, a
        # result list) and, at a message per ticket, that was about 5 % of the worker's
        # samples in py-spy; the futures of one produce request complete together, so
        # most are done when reached and awaiting them costs nothing.
        for sent in pending:
            await sent


class DurableTable(faust.Table):  # type: ignore[misc]
    """A table whose changes an agent can wait for, until the broker has them.

    Faust sends table changes through its producer buffer and flushes the producer
    before it commits offsets, but that flush gives up after 0.1 s without progress
    (``ProducerBuffer.flush_atmost``): under backpressure ("producer buffer full"),
    offsets can be committed while changes still wait in the buffer, and a worker
    killed then loses them for good (the events that made them are not read again).
    An agent awaits :meth:`delivered` at the end of each batch, before the batch's
    events are acknowledged, so a committed offset never covers an undelivered change.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._changes = Outbox()

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        return self._changes.track(super().send_changelog(*args, **kwargs))

    async def delivered(self) -> None:
        """Return once every change made so far is acknowledged by the broker."""
        await self._changes.delivered()


def interleaved_batches(fetched: dict[Any, list[Any]], size: int) -> Iterator[dict[Any, list[Any]]]:
    """Batches of about ``size`` records that take from every partition in turn, in offset order.

    A fetch brings megabytes of one partition at once; processed partition after
    partition, a backlog's first partition would run days ahead of the others in event
    time, and the others' tickets would then be too late for windows it had closed
    (:mod:`pipeline.counting.volume`). Faust's consumer takes from its partitions in turn too.

    >>> batches = interleaved_batches({"p0": [1, 2, 3, 4], "p1": [10, 11]}, size=4)
    >>> [dict(b) for b in batches]
    [{'p0': [1, 2], 'p1': [10, 11]}, {'p0': [3, 4]}]
    """
    taken = dict.fromkeys(fetched, 0)
    while True:
        left = [tp for tp, records in fetched.items() if taken[tp] < len(records)]
        if not left:
            return
        share = max(1, size // len(left))
        batch = {}
        for tp in left:
            batch[tp] = fetched[tp][taken[tp] : taken[tp] + share]
            taken[tp] += len(batch[tp])
        yield batch


_NOTHING = object()


def round_robin(lists: Sequence[Sequence[Any]]) -> list[Any]:
    """One item of each list in turn: a batch's records, partitions interleaved.

    Within a batch too, one partition's hours must not all come before another's: the
    counting watermark is the newest window a counting partition has seen, and a ticket
    more than the allowed lateness behind it is not counted (:mod:`pipeline.counting.volume`).

    >>> round_robin([[1, 2, 3], [10], [20, 21]])
    [1, 10, 20, 2, 21, 3]
    """
    return [
        item for group in itertools.zip_longest(*lists, fillvalue=_NOTHING) for item in group if item is not _NOTHING
    ]


class FinishBatchFirst(ConsumerRebalanceListener):  # type: ignore[misc]
    """Partitions taken away in a rebalance wait until the batch in flight is done and committed."""

    def __init__(self, in_flight: asyncio.Lock) -> None:
        self.in_flight = in_flight

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self.in_flight:
            pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        partitions = ",".join(str(tp.partition) for tp in sorted(assigned)) or "none"
        logger.info("agent=read_tickets assigned partitions=%s", partitions)


def skipped_offsets(next_offsets: dict[int, int], batch: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    """Offsets a batch should have held but did not, per partition; advances ``next_offsets``.

    Faust's ``take_events`` can, under a backlog, acknowledge a message it never handed
    to the agent (seen: offsets 11 then 13 of one partition, 12 committed unread), and a
    killed worker then never reads it again. Offsets of a partition are consecutive on
    an internal topic, so a hole after the offset the last batch ended at is such a
    message; the caller reads it again. A message handed over twice is no hole.

    >>> nexts = {}
    >>> skipped_offsets(nexts, [(0, 5), (0, 6), (1, 9)]), nexts   # nothing known yet
    ({}, {0: 7, 1: 10})
    >>> skipped_offsets(nexts, [(0, 6), (0, 8), (0, 10), (1, 10)])
    {0: [7, 9]}
    >>> nexts
    {0: 11, 1: 11}
    """
    by_partition: dict[int, set[int]] = {}
    for partition, offset in batch:
        by_partition.setdefault(partition, set()).add(offset)
    holes: dict[int, list[int]] = {}
    for partition, offsets in sorted(by_partition.items()):
        newest = max(offsets)
        expected = next_offsets.get(partition)
        if expected is not None:
            missing = [o for o in range(expected, newest) if o not in offsets]
            if missing:
                holes[partition] = missing
        next_offsets[partition] = max(newest + 1, expected or 0)
    return holes


class PartitionedTable(DurableTable):
    """A table whose keys are ``"<partition>/<key>"``.

    Faust writes a table change to the changelog partition of the event being
    processed; with batches (``take_events``) that is not the event a change belongs
    to, so the key itself names its partition. After recovery, ``active_partitions``
    says which partitions this worker owns.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.active_partitions: set[int] = set()
        #: called with the active partitions after every recovery (a rebalance, a start),
        #: before the streams resume; a callback may be a coroutine function
        self.on_recovered: list[Callable[[set[int]], Awaitable[None] | None]] = []
        #: called at every rebalance with the topic partitions taken from this worker
        self.on_revoked: list[Callable[[set[TopicPartition]], None]] = []

    def partition_for_key(self, key: Any) -> int:
        return int(str(key).split("/", 1)[0])

    async def on_rebalance(self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        for callback in self.on_revoked:
            callback({TopicPartition(tp.topic, tp.partition) for tp in revoked})

    async def on_recovery_completed(self, active_tps: Any, standby_tps: Any) -> None:
        self.active_partitions = {tp.partition for tp in active_tps}
        await super().on_recovery_completed(active_tps, standby_tps)
        for callback in self.on_recovered:
            result = callback(self.active_partitions)
            if result is not None:
                await result


@dataclass
class PipelineStats:
    """Counters a worker keeps and logs (``key=value``) once per batch."""

    received: int = 0
    dead_letters: int = 0
    counted: int = 0
    duplicates: int = 0
    too_late: int = 0
    #: tickets counted but too old for the pattern grouper (its lateness is from the watermark)
    patterns_too_late: int = 0
    points_written: int = 0
    spike_events: int = 0
    newest_created: float | None = None
    tagged: int = 0
    #: per field, predictions marked uncertain: the tickets that need a human tag
    uncertain: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIELDS, 0))
    labels_joined: int = 0
    labels_expired: int = 0

    def count_uncertain(self, predictions: list[dict[str, dict[str, Any]]]) -> None:
        self.tagged += len(predictions)
        for predicted in predictions:
            for name, guess in predicted.items():
                if guess["uncertain"]:
                    self.uncertain[name] += 1


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


_WORD = re.compile(r"[a-z][a-z0-9_-]{2,}")
_STOPWORDS = frozenset(
    "the and for with not but you your are was has have had this that from can cannot when what how why where "
    "does did its into out all any our get got please help issue problem since after".split()
)


def subject_terms(subject: str) -> list[str]:
    """The words of a subject that say what it is about (lower case, no stop words)."""
    return [w for w in _WORD.findall(subject.lower()) if w not in _STOPWORDS]


def ticket_document(ticket: Ticket) -> dict[str, Any]:
    """A validated ticket as JSON-ready fields (the ones it has)."""
    doc: dict[str, Any] = {
        "id": ticket.id,
        "created_at": ticket.created_at.isoformat(),
        "customer_id": ticket.customer_id,
        "subject": ticket.subject,
        "body": ticket.body,
    }
    for name in ("channel", "product_area", "case_type", "severity", "plan", "locale"):
        value = getattr(ticket, name)
        if value is not None:
            doc[name] = value
    return doc


def tagger_document(doc: dict[str, Any]) -> dict[str, Any]:
    """What the tagger needs of a ticket document: its id, its reading, the tags it carries."""
    reading: dict[str, Any] = {"id": doc["id"], "reading": reading_text(doc["subject"], doc["body"])}
    for name in FIELDS:
        if name in doc:
            reading[name] = doc[name]
    return reading


@dataclass
class TaggedBatch:
    """What tagging makes of a batch of tickets, by Kafka partition of each ticket's id."""

    #: per ticket, in order: each field's label, confidence and ``uncertain``
    predictions: list[dict[str, dict[str, Any]]]
    #: ``tickets-classified`` records: the ticket with its predictions and the model version
    classified: dict[int, list[tuple[bytes, bytes]]]
    #: what the label join keeps of each ticket: its reading and first prediction
    to_join: dict[int, list[dict[str, Any]]]
    #: training examples of the tickets that carry labels this worker has not learned
    labelled: dict[int, list[dict[str, Any]]]


def tag_tickets(tagger: TicketTagger, tickets: Sequence[Ticket], partitions: int) -> TaggedBatch:
    """Predict a batch's tags in one go, and make what goes from it to Kafka.

    Each ticket's reading is made once: predicted from, kept for the label join, and
    learned from when the ticket carries labels (the fields a helpdesk filled in).
    """
    docs = [ticket_document(ticket) for ticket in tickets]
    # what the tagger reads of each: predicted from, kept for late labels, learned from
    readings = [tagger_document(doc) for doc in docs]
    predictions, margin_bins = tagger.predict_binned(readings)
    tagged = TaggedBatch(predictions, {}, {}, {})
    ids = [doc["id"].encode() for doc in docs]
    id_partitions = kafka_partitions(ids, partitions)
    for doc, key, id_partition, reading, predicted, bins in zip(
        docs, ids, id_partitions, readings, predictions, margin_bins, strict=True
    ):
        # keyed by ticket id, in the partition Kafka's partitioner gives that key (the
        # document is this batch's own, made above: completed in place, not copied)
        doc["predicted"], doc["model_version"] = predicted, tagger.version
        tagged.classified.setdefault(id_partition, []).append((key, orjson.dumps(doc)))
        # with the prediction made before its labels are learned (prequential, calibration)
        first = predicted_labels(predicted, bins)
        # to the partition of its id, where its labels come (ticket-labels is keyed by id);
        # the prediction as it was on the wire before the join kept it flat, so that workers
        # of both versions read each other's messages during a rolling upgrade
        tagged.to_join.setdefault(id_partition, []).append(
            {"id": reading["id"], "reading": reading["reading"], "predicted": first}
        )
        # Labels this worker has learned for this id came from the training topic, so
        # every worker has them: a re-sent ticket's labels are not broadcast again.
        if not _TAGGED_FIELDS.isdisjoint(reading) and not tagger.knows(reading):
            # in the partition of its id, so that a later correction comes after it
            tagged.labelled.setdefault(id_partition, []).append({**reading, "predicted": first})
    return tagged


def _hear(marks: dict[str, int], heard: dict[str, int | None]) -> bool:
    """Raise ``marks`` to the watermarks in ``heard``; ``True`` if any moved."""
    moved = False
    for source, mark in heard.items():
        if mark is not None and mark > marks.get(source, -1):
            marks[source] = mark
            moved = True
    return moved


def _freeze(value: Any) -> str:
    """A detector's state as text for a JSON changelog (pickle: it is our own state)."""
    return base64.b64encode(pickle.dumps(value)).decode()


def _thaw(text: str | None) -> Any:
    return load_checkpoint(base64.b64decode(text)) if text else None  # our own changelog


def alert_payload(spike: SpikeEvent, area: str, case_type: str = ALL) -> dict[str, Any]:
    """The ``ticket-alerts`` message of a spike event of an area, or of one case type in it
    (../shared/architecture.md: ``case_type`` is null for the whole area)."""
    return {
        "area": area,
        "case_type": None if case_type == ALL else case_type,
        "event": spike.event,
        "episode_id": spike.episode_id,
        "window_start": datetime.fromtimestamp(spike.window_start, UTC).isoformat(),
        "window_end": datetime.fromtimestamp(spike.window_end, UTC).isoformat(),
        "observed": spike.customers,
        "expected": spike.expected,
        "score": spike.score,
        "p_value": spike.p_value,
        "customers": spike.customers,
        "tickets": spike.tickets,
        "tickets_per_customer": spike.concentration,
        "level": spike.level,
        "example_ticket_ids": [ticket_id for ticket_id, _ in spike.examples],
        # in the customers' words, personal data masked (pipeline.text.privacy)
        "example_tickets": [text for _, text in spike.examples],
        "top_terms": list(spike.top_terms),
        "recent_product_events": [
            {**e, "at": datetime.fromtimestamp(e["at"], UTC).isoformat()} for e in spike.recent_product_events
        ],
    }


def _spike_fields(spike: SpikeEvent) -> dict[str, int | float | str]:
    # the fields of ticket_spike and pattern_spike alike
    return {
        "observed": spike.customers,
        "expected": float(spike.expected),
        "score": float(spike.score),
        "customers": spike.customers,
        "tickets": spike.tickets,
        "episode": spike.episode_id,
    }


def spike_point(spike: SpikeEvent, window_tag: str, area: str, case_type: str = ALL) -> Point:
    """The ``ticket_spike`` point of a spike event, stamped at its window's start."""
    tags = {"area": area, "case_type": case_type, "level": spike.level, "window": window_tag}
    return Point("ticket_spike", tags, _spike_fields(spike), spike.window_start)


def pattern_spike_point(spike: SpikeEvent, area: str, name: str, window_tag: str) -> Point:
    """The ``pattern_spike`` point of a pattern's spike event, stamped at its window's start."""
    tags = {"pattern": spike.key, "area": area, "level": spike.level, "window": window_tag}
    return Point("pattern_spike", tags, {**_spike_fields(spike), "name": name}, spike.window_start)


def pattern_alert_payload(spike: SpikeEvent, area: str, pattern: dict[str, Any]) -> dict[str, Any]:
    """A ``ticket-alerts`` message for a pattern's spike: the area alert's fields, and the pattern."""
    return {
        **alert_payload(spike, area),
        "pattern": {
            "id": pattern["id"],
            "name": pattern["name"],
            "tickets": pattern["tickets"],
            "customers": pattern["customers"],
            "tier": pattern["tier"],
            "concentration": pattern["concentration"],
        },
        "top_terms": pattern["name"].split(),
    }


def build_pipeline(
    settings: Settings, sink: InfluxSink | None = None, loaded_tagger: tuple[TicketTagger, dict[int, int]] | None = None
) -> Pipeline:
    """Create the Faust app with its topics, tables and agents for ``settings``.

    ``loaded_tagger``: the tagger and the training positions it includes, already loaded
    (``ticketpulse worker`` loads its checkpoint to check it before it starts; a large
    one takes seconds, not to be paid twice). Without it, the worker loads them itself.
    """
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    app = PipelineApp(
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
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        consumer_max_fetch_size=max(4 * 1_048_576, settings.max_ticket_bytes * 2),
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_host=settings.web_host,
        topic_allow_declare=True,
        processing_guarantee="at_least_once",
        stop_wait_seconds=settings.stop_wait_seconds,
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

    def internal_topic(suffix: str) -> Any:
        # between our own agents: JSON values, explicit partitions, the app's prefix
        return app.topic(
            f"{settings.app_id}-{suffix}",
            key_serializer="raw",
            value_serializer="json",
            partitions=settings.partitions,
            internal=True,
        )

    by_customer = internal_topic("tickets-by-customer")
    training = internal_topic("tagger-training")
    if loaded_tagger is not None:
        tagger, loaded_positions = loaded_tagger
        preloaded: list[dict[int, int]] = [dict(loaded_positions)]  # used by the first start of learn_labels
    else:
        tagger, preloaded = TicketTagger(feature_buckets=settings.tagger_feature_buckets), []
    partials = internal_topic("volume-partials")
    pattern_tickets = internal_topic("pattern-tickets")
    # [ticket id, pattern id] of every grouped ticket: the report's patterns are the worker's
    ticket_patterns = internal_topic(TICKET_PATTERNS)
    # Durable facts, in chunks: "<partition>/<offset>" -> [fact, ...] (pipeline.counting.volume), and
    # "<partition>/__watermarks__" -> that counting partition's source_marks.
    first_seen = PartitionedTable(app, name="tickets-first-seen", key_type=str, partitions=settings.partitions)
    totals_table = PartitionedTable(app, name="volume-totals", key_type=str, partitions=settings.partitions)
    app.tables.add(first_seen)
    app.tables.add(totals_table)
    volumes: dict[int, PartitionVolume] = {}
    # counting partition -> {tickets partition: newest window seen}; kept in first_seen with
    # the facts, since after a restart a tickets partition may never be heard from again
    # (a stream that has ended) and its watermark would then hold every window open.
    source_marks: dict[int, dict[str, int]] = {}
    area_volumes = internal_topic("area-volumes")
    # The label join (pipeline.tagging.labels). ``validate`` sends a ticket's words through
    # ``<app>-texts-to-join`` to the partition of its id, where its labels will come; the
    # join keeps them in memory, and in its table "<partition>/<ticket id>" -> labels waiting
    # for their ticket, "<partition>/ texts" -> the offsets of texts-to-join to read again.
    label_texts = PartitionedTable(app, name="label-texts", key_type=str, partitions=settings.partitions)
    app.tables.add(label_texts)
    # one changelog record per batch and partition, not one per change (pipeline.tagging.labels.ChunkedStore)
    label_store = ChunkedStore(label_texts, size_of=entry_chars)
    label_join = LabelJoin(label_store, settings.label_horizon_hours * 3600)
    texts_to_join = internal_topic(TEXTS_TO_JOIN)

    def _texts_revoked(revoked: set[TopicPartition]) -> None:
        # a partition taken from this worker may come back after another worker kept texts
        # in it: forget it now, so that it is read again then
        label_join.drop({tp.partition for tp in revoked if tp.topic == texts_to_join.get_topic_name()})

    async def _texts_recovered(partitions: set[int]) -> None:
        label_store.rebuild(partitions)
        label_join.drop(label_join.holds() - partitions)
        await read_texts_again(partitions - label_join.holds())

    label_texts.on_revoked.append(_texts_revoked)
    label_texts.on_recovered.append(_texts_recovered)
    alerts = app.topic(settings.topic_alerts, key_serializer="raw", value_serializer="json")
    # Spike detection state per area: "<partition>/<area>" -> a pickled VolumeWatch, and
    # "<partition>/__watermarks__" -> the merging partitions' watermarks (see _freeze).
    watches = PartitionedTable(app, name="volume-watch", key_type=str, partitions=settings.partitions)
    app.tables.add(watches)

    @functools.lru_cache(maxsize=4096)
    def _partition_of(key: bytes) -> int:
        # Kafka's default partitioner, so that our explicit partitions match what any
        # client would choose for the same key. Cached: most keys are areas, asked for
        # ticket after ticket (a batch of distinct keys goes to kafka_partitions).
        return (murmur2(key) & 0x7FFFFFFF) % settings.partitions

    async def validate(records: Sequence[Any]) -> dict[str, int]:
        """Split good tickets from bad; pass the good ones on, grouped by customer partition.

        ``records``: a batch of ``tickets`` as Kafka records (``value``, ``key``, ``topic``,
        ``partition``, ``offset``), read by :func:`read_tickets`. Returns the newest window
        of the batch's good tickets per tickets partition (the watermarks it sent).
        """
        by_partition: dict[int, list[Fact]] = {}
        texts: dict[int, list[list[str]]] = {}
        marks: dict[str, int] = {}
        # (window, area, case type) -> examples, subject words: for the area's and the case type's watch
        context: dict[tuple[int, str, str], tuple[list[list[str]], Counter[str]]] = {}
        tagged = TaggedBatch([], {}, {}, {})
        good: list[tuple[Ticket, int]] = []
        out = Outbox()
        latest = time.time() + settings.max_future_hours * 3600  # once a batch
        for record in records:
            raw = record.value
            try:
                good.append((parse_ticket(raw, max_bytes, latest), record.partition))
            except TicketError as exc:
                stats.dead_letters += 1
                await out.send(dead_letter, value=_dead_letter(raw, record.key, str(exc), record))
        # Tags first, in one batched prediction: a ticket the helpdesk left untagged is
        # counted under its predicted tags when the models are sure of them.
        # Kafka's partition of each customer (and in tag_tickets, of each ticket id), for the batch at once
        customer_partitions = kafka_partitions([ticket.customer_id.encode() for ticket, _ in good], settings.partitions)
        if settings.tagging_enabled:
            tagged = tag_tickets(tagger, [ticket for ticket, _ in good], settings.partitions)
            stats.count_uncertain(tagged.predictions)
        for n, (ticket, source_partition) in enumerate(good):
            tags = [ticket.product_area, ticket.case_type, ticket.severity]
            if settings.tagging_enabled and settings.count_predicted_tags:
                guess = tagged.predictions[n]
                tags = [
                    given or (None if guess[name]["uncertain"] else guess[name]["label"])
                    for given, name in zip(tags, FIELDS_BY_TAG, strict=True)
                ]
            fact: Fact = [
                ticket.id,
                window_start(ticket.created_ts, window_seconds),
                tags[0] or UNASSIGNED,
                tags[1] or UNASSIGNED,
                tags[2] or UNASSIGNED,
                ticket.customer_id,
            ]
            customer_partition = customer_partitions[n]
            by_partition.setdefault(customer_partition, []).append(fact)
            if settings.patterns_enabled:
                # the words travel with the fact: what ``count`` counts, patterns group
                texts.setdefault(customer_partition, []).append(
                    [ticket.created_at.isoformat(), ticket.subject, ticket.body[:PATTERN_BODY_CHARS]]
                )
            source = str(source_partition)
            if fact[1] > marks.get(source, -1):
                marks[source] = fact[1]
            if stats.newest_created is None or ticket.created_ts > stats.newest_created:
                stats.newest_created = ticket.created_ts
            examples, terms = context.setdefault((fact[1], fact[2], fact[3]), ([], Counter()))
            terms.update(subject_terms(ticket.subject))
            if len(examples) < 2 and all(e[1] != ticket.customer_id for e in examples):
                text = mask_personal(f"{ticket.subject}: {ticket.body}")
                examples.append([ticket.id, ticket.customer_id, text])
        stats.received += len(records)
        await send_to_counting(out, by_partition, texts, marks)
        # Tags: the ticket with its predictions to tickets-classified, its reading to the
        # label join, its labels (fields the helpdesk filled in) to every worker's model.
        if tagged.classified:
            producer = await app.maybe_start_producer()
            for partition, records in tagged.classified.items():
                await out.send_records(producer, settings.topic_classified, partition, records)
        for partition, examples_of_partition in tagged.labelled.items():
            await out.send_parts(training, partition, {"examples": examples_of_partition}, ["examples"])
        for partition, kept_texts in tagged.to_join.items():
            await out.send_parts(texts_to_join, partition, {"texts": kept_texts}, ["texts"])
        # Examples and words travel straight to the spike watch: alerts show them.
        by_area_partition: dict[int, list[list[Any]]] = {}
        for (window, area, case_type), (examples, terms) in context.items():
            by_area_partition.setdefault(_partition_of(area.encode()), []).append(
                [window, area, case_type, examples, dict(terms.most_common(20))]
            )
        for partition, items in by_area_partition.items():
            await out.send_parts(area_volumes, partition, {"context": items}, ["context"])
        await out.delivered()
        return marks

    async def send_to_counting(
        out: Outbox, by_partition: dict[int, list[Fact]], texts: dict[int, list[list[str]]], marks: dict[str, int]
    ) -> None:
        """Facts (and their words) to their counting partitions, with the tickets partitions' watermarks.

        One message per partition and batch: all tickets of a customer land in the same
        partition, as if each had been sent keyed by its customer id. Every counting
        partition also hears how far in event time each tickets partition has got (its
        newest window): the watermark windows close by is the oldest of those.
        """
        for partition in range(settings.partitions):
            facts = by_partition.get(partition, [])
            if facts or marks:
                message: dict[str, Any] = {"facts": facts, "watermarks": marks}
                if settings.patterns_enabled:
                    message["texts"] = texts.get(partition, [])
                await out.send_parts(by_customer, partition, message, ["facts", "texts"])

    # set once the tagger's checkpoint (or warm start) is loaded: no ticket is predicted before
    tagger_ready = asyncio.Event()
    if not settings.tagging_enabled:
        tagger_ready.set()

    @app.task
    async def read_tickets() -> None:
        """Read ``tickets`` in batches, straight from the Kafka client, into :func:`validate`.

        Not a Faust agent: Faust's per-event path (a lock, a callback, an event, a queue
        put and get, an ack per message) costs about 60 µs a message here before any work,
        thirty times the Kafka client's own (``benchmarks/bench_faust_floor.py``), and
        ``tickets`` is the one topic with a message per ticket. The consumer is in its own
        group (``<app id>-tickets``), so workers share the partitions as Faust's agents do;
        a batch's offsets are committed once everything it sent was delivered, and
        partitions taken away in a rebalance wait for the batch in flight
        (:class:`FinishBatchFirst`): at least once, like the agents, and every effect
        downstream is idempotent.
        """
        await tagger_ready.wait()
        in_flight = asyncio.Lock()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=f"{settings.app_id}-tickets",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # as the app's own consumer (above): a new worker gets its partitions in seconds
            session_timeout_ms=6000,
            rebalance_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            max_partition_fetch_bytes=max(1_048_576, settings.max_ticket_bytes * 2),
        )
        consumer.subscribe([settings.topic_tickets], listener=FinishBatchFirst(in_flight))
        await consumer.start()
        idle = IdleSources(settings.idle_partition_seconds)
        try:
            while True:
                # everything fetched, then batches that take from every partition in turn
                fetched = await consumer.getmany(timeout_ms=int(settings.batch_seconds * 1000))
                idle.assign(tp.partition for tp in consumer.assignment())
                for batch in interleaved_batches(fetched, settings.batch_size):
                    async with in_flight:
                        owned = consumer.assignment()
                        batch = {tp: records for tp, records in batch.items() if tp in owned}
                        if not batch:
                            continue  # given away in a rebalance: the new owner reads them
                        marks = await validate(round_robin(list(batch.values())))
                        for tp in batch:
                            idle.heard(tp.partition, marks.get(str(tp.partition)))
                        try:
                            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
                        except CommitFailedError as exc:
                            # the group moved on (this worker was too slow): the new owner reads them again
                            logger.warning("agent=read_tickets commit=failed error=%s", exc)
                await send_idle_watermarks(consumer, idle)
        finally:
            await consumer.stop()

    async def send_idle_watermarks(consumer: AIOKafkaConsumer, idle: IdleSources) -> None:
        """Quiet partitions read to their end follow the newest window read (:class:`IdleSources`)."""
        caught_up = []
        for partition in idle.quiet():
            tp = TopicPartition(settings.topic_tickets, partition)
            end = consumer.highwater(tp)  # from the last fetch; None before the first
            if end is not None and tp in consumer.assignment() and await consumer.position(tp) >= end:
                caught_up.append(partition)
        # what the counting partitions here heard of every tickets partition, this worker's or not
        marks = idle.marks(caught_up, heard=[w for heard in source_marks.values() for w in heard.values()])
        if marks:
            out = Outbox()
            await send_to_counting(out, {}, {}, marks)
            await out.delivered()
            logger.info(
                "agent=read_tickets idle_partitions=%s watermark=%d",
                ",".join(sorted(marks, key=int)),
                max(marks.values()),
            )

    def _volume(partition: int) -> PartitionVolume:
        vol = volumes.get(partition)
        if vol is None:
            # fed by every tickets partition (validate sends each counting partition their watermarks)
            vol = volumes[partition] = PartitionVolume(
                window_seconds, settings.allowed_lateness_seconds, sources=settings.partitions
            )
        return vol

    async def _send_partials(partition: int, touched: Iterable[tuple[int, tuple[str, str, str]]], out: Outbox) -> None:
        vol = _volume(partition)
        by_target: dict[int, list[list[Any]]] = {}
        by_window: dict[int, dict[tuple[str, str, str], tuple[int, int]]] = {}
        rows: list[list[Any]] = []
        for window, key in touched:
            counts = by_window.get(window)
            if counts is None:
                counts = by_window[window] = vol.counts(window)
            tickets_n, customers_n = counts[key]
            rows.append([orjson.dumps([window, *key]).decode(), partition, tickets_n, customers_n])
        targets = kafka_partitions([row[0].encode() for row in rows], settings.partitions)
        for row, target in zip(rows, targets, strict=True):
            by_target.setdefault(target, []).append(row)
        # Every merging partition hears this counting partition's watermark (the oldest
        # of the tickets partitions' newest windows), even with no rows for it.
        watermark = {str(partition): vol.sources_watermark}
        for target in range(settings.partitions):
            value = {"rows": by_target.get(target, []), "watermarks": watermark}
            await out.send_parts(partials, target, value, ["rows"])

    async def _send_pattern_tickets(partition: int, by_target: dict[int, list[list[Any]]], out: Outbox) -> None:
        # every pattern partition hears this counting partition's watermark, as in _send_partials
        low = _volume(partition).sources_watermark
        for target in range(settings.partitions):
            value = {"tickets": by_target.get(target, []), "watermarks": {str(partition): low}}
            await out.send_parts(pattern_tickets, target, value, ["tickets"])

    @first_seen.on_recover
    async def rebuild_counts() -> None:
        """Derive the counts of the partitions this worker now owns from the durable facts."""
        volumes.clear()
        next_offsets.clear()  # read on from the committed offsets, wherever they are
        owned = first_seen.active_partitions
        for chunk_key, facts in first_seen.items():
            partition_part, _, name = chunk_key.partition("/")
            partition = int(partition_part)
            if partition not in owned:
                continue
            if name == WATERMARKS:
                _hear(source_marks.setdefault(partition, {}), facts)
            else:
                _volume(partition).restore(chunk_key, facts)
        out = Outbox()
        for partition in owned:
            vol = _volume(partition)
            vol.hear(source_marks.get(partition, {}))
            vol.close_windows()
            # Publishing every open count again, and the watermark to the pattern grouper,
            # is idempotent, and cheap insurance (effects are delivered before the state
            # that records them, but a rebalance may bring state another worker made).
            await _send_partials(partition, [(w, key) for w in vol.windows() for key in vol.counts(w)], out)
            if settings.patterns_enabled:
                await _send_pattern_tickets(partition, {}, out)
        await out.delivered()
        logger.info(
            "agent=count recovered partitions=%s windows=%d chunks=%d",
            ",".join(str(p) for p in sorted(owned)) or "none",
            sum(len(v.windows()) for v in volumes.values()),
            len(first_seen),
        )

    # counting partition -> the offset of tickets-by-customer the next batch should start at
    next_offsets: dict[int, int] = {}

    async def read_again(partition: int, offsets: list[int]) -> list[tuple[int, int, dict[str, Any]]]:
        """The messages of ``tickets-by-customer`` at ``offsets`` (ascending) of one partition."""
        wanted = set(offsets)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        found: list[tuple[int, int, dict[str, Any]]] = []
        try:
            tp = TopicPartition(by_customer.get_topic_name(), partition)
            consumer.assign([tp])
            consumer.seek(tp, offsets[0])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                records = batch.get(tp, [])
                found += [(partition, r.offset, orjson.loads(r.value)) for r in records if r.offset in wanted]
                if any(r.offset >= offsets[-1] for r in records):
                    return found
            logger.error("agent=count partition=%d offsets=%s error=not_read_again", partition, offsets)
            return found
        finally:
            await consumer.stop()

    async def with_skipped(events: Sequence[Any]) -> list[tuple[int, int, dict[str, Any]]]:
        """The batch as ``(partition, offset, value)``, with any message Faust skipped read again
        from the broker before the batch is acknowledged (see :func:`skipped_offsets`)."""
        items = [(e.message.partition, e.message.offset, e.value) for e in events]
        for partition, holes in skipped_offsets(next_offsets, [(p, o) for p, o, _ in items]).items():
            again = await read_again(partition, holes)
            items += again
            logger.warning(
                "agent=count partition=%d skipped=%d-%d holes=%d read_again=%d",
                partition,
                holes[0],
                holes[-1],
                len(holes),
                len(again),
            )
        return sorted(items, key=lambda item: (item[0], item[1]))

    @app.agent(by_customer, name="count")
    async def count(stream: Any) -> None:
        """Count each ticket id once, in the window of its ``created_at``."""
        async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            chunks: dict[int, tuple[str, list[Fact]]] = {}
            touched: dict[int, set[tuple[int, tuple[str, str, str]]]] = {}
            heard: set[int] = set()
            # counting partition -> pattern partition -> newly counted tickets with their words
            for_patterns: dict[int, dict[int, list[list[Any]]]] = {}
            for partition, offset, value in await with_skipped(events):
                vol = _volume(partition)
                texts = value.get("texts")
                for n, fact in enumerate(value["facts"]):
                    outcome = vol.add(fact)
                    if outcome == COUNTED and texts is not None:
                        by_target = for_patterns.setdefault(partition, {})
                        by_target.setdefault(_partition_of(fact[2].encode()), []).append(
                            [fact[0], fact[1], fact[2], fact[3], fact[5], *texts[n]]
                        )
                    if outcome == COUNTED:
                        if partition not in chunks:
                            # keyed by the first event with a new fact: a replay after a
                            # crash never overwrites a chunk that made it (pipeline.counting.volume)
                            chunks[partition] = (f"{partition}/{offset}", [])
                        chunks[partition][1].append(fact)
                        part_touched = touched.setdefault(partition, set())
                        for key in volume_keys(fact[2], fact[3], fact[4]):
                            part_touched.add((fact[1], key))
                    elif outcome == DUPLICATE:
                        stats.duplicates += 1
                    else:
                        stats.too_late += 1
                # How far the tickets partitions have got, heard after the message's own
                # facts: a batch may hold days of one partition, and its newest window
                # must not make its older tickets late (the line is what came before).
                if _hear(source_marks.setdefault(partition, {}), value["watermarks"]):
                    heard.add(partition)
                vol.hear(source_marks[partition])
            # Effects first, then the state that records them (see pipeline.counting.volume): the
            # words are not kept in the facts, so they must be on the broker before the
            # facts that say they were counted (a replay would not send them again).
            out = Outbox()
            for partition in heard | set(touched):
                await _send_partials(partition, touched.get(partition, ()), out)
                if settings.patterns_enabled:
                    await _send_pattern_tickets(partition, for_patterns.get(partition, {}), out)
            await out.delivered()
            for partition in heard:
                first_seen[f"{partition}/{WATERMARKS}"] = dict(source_marks[partition])
            for partition, (chunk_key, facts) in chunks.items():
                stats.counted += len(facts)
                first_seen[chunk_key] = facts
                vol = volumes[partition]
                vol.record_chunk(chunk_key, facts)
                if vol.close_windows():
                    for expired in vol.expired_chunks():
                        first_seen.pop(expired, None)
            await first_seen.delivered()  # before the batch is acknowledged (DurableTable)

    @app.agent(partials, name="merge")
    async def merge(stream: Any) -> None:
        """Sum the partitions' counts and write ``ticket_volume`` points; feed the spike watch."""
        async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            staged: dict[str, dict[str, Any]] = {}
            view = ChainMap(staged, totals_table)
            totals = VolumeTotals(view)
            changed: set[str] = set()
            targets: set[int] = set()
            for event in events:
                target = event.message.partition
                targets.add(target)
                for volume_key, partition, tickets_n, customers_n in event.value["rows"]:
                    table_key = f"{target}/{volume_key}"
                    if totals.merge(table_key, partition, tickets_n, customers_n):
                        changed.add(table_key)
                marks_key = f"{target}/{WATERMARKS}"
                marks = dict(view.get(marks_key) or {})
                _hear(marks, event.value["watermarks"])
                staged[marks_key] = marks
            points = []
            by_area: dict[int, list[list[Any]]] = {}
            for table_key in changed:
                window, area, case_type, severity = orjson.loads(table_key.split("/", 1)[1])
                tickets_n, customers_n = totals.total(table_key)
                tags = {"area": area, "case_type": case_type, "severity": severity, "window": window_tag}
                points.append(Point("ticket_volume", tags, {"tickets": tickets_n, "customers": customers_n}, window))
                if severity == ALL:  # the area's roll-up and its case types: what the watch judges
                    by_area.setdefault(_partition_of(area.encode()), []).append(
                        [window, area, case_type, tickets_n, customers_n]
                    )
            await sink.write(points)
            stats.points_written += len(points)
            out = Outbox()
            for target in targets:
                marks = view[f"{target}/{WATERMARKS}"]
                # the watermark of this merging partition: the oldest of every counter's
                low = min(marks.values()) if len(marks) == settings.partitions else None
                for q in range(settings.partitions):
                    rows = sorted(by_area.pop(q, [])) if target == min(targets) else []
                    value = {"rows": rows, "source": target, "watermark": low}
                    await out.send_parts(area_volumes, q, value, ["rows"])
            await out.delivered()
            for table_key, value in staged.items():
                totals_table[table_key] = value
            await totals_table.delivered()
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

    def watch_key(partition: int, area: str, case_type: str) -> str:
        """The table key of the watch of an area (``case_type`` ALL) or of one case type in it."""
        return f"{partition}/" + orjson.dumps([area, case_type]).decode()

    # The state this worker last wrote, thawed: table key -> (the text written, its object).
    # Every batch advances every watch of its partitions; unpickling them all again was
    # the agent's main cost. An object is reused only while the table holds the very text
    # it was frozen to (recovery and rebalances bring other texts), and the cache is
    # emptied when a batch fails before its state is written.
    thawed: dict[str, tuple[str, Any]] = {}

    def stored(table_key: str) -> Any:
        """The table's value at ``table_key``, thawed (``None`` if there is none)."""
        text = watches.get(table_key)
        if not text:
            return None
        hit = thawed.get(table_key)
        if hit is not None and hit[0] == text:
            return hit[1]
        return _thaw(text)

    def watch_of(touched: dict[str, Any], partition: int, area: str, case_type: str = ALL) -> VolumeWatch:
        """The watch of an area or of a case type in it: already in this batch, else from the table, else new."""
        table_key = watch_key(partition, area, case_type)
        key_watch = touched.get(table_key) or stored(table_key)
        if key_watch is None:
            key_watch = VolumeWatch(
                area if case_type == ALL else f"{area}/{case_type}",
                window_seconds,
                alert_score=settings.spike_alert_score,
                min_customers=settings.spike_min_customers
                if case_type == ALL
                else settings.case_type_spike_min_customers,
            )
        touched[table_key] = key_watch
        return key_watch

    @app.agent(area_volumes, name="watch")
    async def watch(stream: Any) -> None:
        """Run the spike detector on each area's and case type's window totals; publish alerts and ``ticket_spike``."""
        async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            try:
                await watch_batch(events)
            except BaseException:
                thawed.clear()  # objects of this batch may be ahead of the table
                raise

    async def watch_batch(events: Sequence[Any]) -> None:
        """One batch of the watch agent: window totals, context and product events in; spikes out."""
        touched: dict[str, Any] = {}
        # (partition, area, case type, event); an area's roll-up events before its case types'
        spikes: list[tuple[int, str, str, SpikeEvent]] = []
        partitions: set[int] = set()

        for event in events:
            partition = event.message.partition
            if "product_event" in event.value:
                product_event = event.value["product_event"]
                area = product_event.pop("area")
                watch_of(touched, partition, area).add_product_event(product_event)
                continue
            if "context" in event.value:
                for window, area, case_type, examples, terms in event.value["context"]:
                    watch_of(touched, partition, area).add_context(window, examples, terms)
                    watch_of(touched, partition, area, case_type).add_context(window, examples, terms)
                continue
            partitions.add(partition)
            marks_key = f"{partition}/{WATERMARKS}"
            marks = touched.get(marks_key) or dict(_thaw(watches.get(marks_key)) or {})
            _hear(marks, {str(event.value["source"]): event.value["watermark"]})
            touched[marks_key] = marks
            for window, area, case_type, tickets_n, customers_n in event.value["rows"]:
                news = watch_of(touched, partition, area, case_type).update(window, tickets_n, customers_n)
                spikes += [(partition, area, case_type, spike) for spike in news]
        for partition in partitions:
            marks = touched[f"{partition}/{WATERMARKS}"]
            if len(marks) < settings.partitions:
                continue  # not every merging partition has spoken yet
            watermark = min(marks.values())
            prefix = f"{partition}/["
            for table_key in sorted(k for k in {*watches.keys(), *touched} if k.startswith(prefix)):
                key_watch = touched.get(table_key) or stored(table_key)
                learned_through = key_watch.learned_through
                closed = key_watch.advance(watermark)
                # written when it learned a window, even one without events, so that
                # the table and the object reused from ``thawed`` stay the same state
                if closed or table_key in touched or key_watch.learned_through != learned_through:
                    touched[table_key] = key_watch
                    area, case_type = orjson.loads(table_key[len(prefix) - 1 :])
                    spikes += [(partition, area, case_type, spike) for spike in closed]
        logger.info(
            "agent=watch messages=%d partitions=%s watermarks=%s spike_events=%d",
            len(events),
            ",".join(str(p) for p in sorted(partitions)),
            ";".join(f"{p}:{touched[f'{p}/{WATERMARKS}']}" for p in sorted(partitions)),
            len(spikes),
        )
        # Effects first (alerts, points), then the state that has judged them.
        # in window order, an area's roll-up before its case types (AlertGate); stable:
        # each key's events keep their order
        spikes.sort(key=lambda s: (s[3].window_start, s[2] != ALL))
        out = Outbox()
        for partition, area, case_type, spike in spikes:
            stats.spike_events += 1
            gate_key = f"{partition}/{ALERT_GATE}"
            gate = touched.get(gate_key) or stored(gate_key) or AlertGate()
            touched[gate_key] = gate
            # one incident of an area, seen by its watch and its case types', is one alert
            published = gate.admit(area, spike)
            logger.warning(
                "agent=watch event=%s episode=%s area=%s case_type=%s customers=%d expected=%.1f score=%.3f alert=%s",
                spike.event,
                spike.episode_id,
                area,
                case_type,
                spike.customers,
                spike.expected,
                spike.score,
                "sent" if published else "muted",
            )
            if published:
                if case_type != ALL:  # the area's releases and fixes, which the area's watch holds
                    area_watch = watch_of(touched, partition, area)
                    spike = replace(spike, recent_product_events=area_watch.recent_product_events(spike.window_start))
                await out.send(alerts, key=area.encode(), value=alert_payload(spike, area, case_type))
        baselines = []
        for table_key, value in touched.items():
            if isinstance(value, VolumeWatch):
                area, case_type = orjson.loads(table_key.split("/", 1)[1])
                tags = {"area": area, "case_type": case_type, "window": window_tag}
                baselines += [
                    Point("ticket_baseline", tags, {"customers": c, "expected": e, "upper": u}, window)
                    for window, c, e, u in value.drain_baselines()
                ]
        await sink.write(
            [spike_point(spike, window_tag, area, case_type) for _, area, case_type, spike in spikes] + baselines
        )
        await out.delivered()
        for table_key, value in touched.items():
            text = watches[table_key] = _freeze(value)
            if not isinstance(value, dict):  # watermarks are copied, not reused
                thawed[table_key] = (text, value)
        await watches.delivered()

    deliverer = AlertDeliverer(
        slack_url=settings.slack_webhook_url.get_secret_value() if settings.slack_webhook_url else None,
        webhook_url=settings.alert_webhook_url,
        webhook_secret=settings.alert_webhook_secret.get_secret_value() if settings.alert_webhook_secret else None,
        dashboard_url=settings.dashboard_url,
        attempts=settings.delivery_attempts,
    )
    if deliverer.enabled:
        # (episode, event, window) -> True, for the alerts already delivered
        delivered = DurableTable(
            app, name="alerts-delivered", key_type=str, value_type=bool, partitions=settings.partitions
        )
        app.tables.add(delivered)
        deliverer.delivered = delivered

        @app.agent(alerts, name="deliver")
        async def deliver(stream: Any) -> None:
            """Post spike alerts to Slack and the signed webhook, each once."""
            async for alert in stream:
                # the post (the effect) first, then the record that it was made
                await deliverer.deliver(alert)
                await delivered.delivered()

    async def send_ticket(key: bytes, value: bytes) -> None:
        # returns once the broker has acknowledged the ticket
        await (await tickets.send(key=key, value=value))

    ingest = WebhookIngest(settings.webhook_secrets(), send_ticket, max_bytes=settings.max_ticket_bytes)

    class WebhookView(faust.web.View):  # type: ignore[misc]
        async def post(self, request: Any, source: str) -> Any:
            body = await request.read()
            answer = await ingest.handle(
                source, body, request.headers, request.headers.get("Content-Type", ""), request.content_length
            )
            return self.json(answer.body, status=answer.status)

    class HealthView(faust.web.View):  # type: ignore[misc]
        async def get(self, request: Any) -> Any:
            try:
                await broker_reachable(settings, timeout=5.0)
            except Exception as exc:
                return self.json({"broker": "unreachable", "error": type(exc).__name__}, status=503)
            return self.json({"broker": "ok", "accepted": ingest.accepted, "refused": ingest.refused})

    app.page("/webhooks/{source}")(WebhookView)
    app.page("/health")(HealthView)

    product_events = app.topic(
        settings.topic_product_events, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
    )

    @app.agent(product_events, name="product_events")
    async def read_product_events(stream: Any) -> None:
        """Store releases, fixes and docs changes (``product_event``) and tell the spike watch."""
        async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            points = []
            forward: list[tuple[int, dict[str, Any]]] = []
            out = Outbox()
            for event in events:
                try:
                    product_event = parse_product_event(event.value)
                except TicketError as exc:
                    stats.dead_letters += 1
                    await out.send(dead_letter, value=_dead_letter(event.value, event.key, str(exc), event.message))
                    continue
                tags = {"area": product_event["area"], "kind": product_event["kind"]}
                if "pattern" in product_event:
                    tags["pattern"] = product_event["pattern"]
                fields = {"ref": product_event["ref"], "note": product_event["note"]}
                points.append(Point("product_event", tags, fields, product_event["at"]))
                forward.append((_partition_of(product_event["area"].encode()), product_event))
            await sink.write(points)
            for partition, product_event in forward:
                await out.send(area_volumes, partition=partition, value={"product_event": product_event})
            await out.delivered()

    # the HTTP clients of the sink and the alert delivery, closed once no agent uses them
    app.closers += [sink.close, deliverer.close]

    labels_in = app.topic(
        texts_to_join.get_topic_name(),
        settings.topic_labels,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    async def join_labels(stream: Any) -> None:
        """Join the tags agents send later (ticket-labels) to the words of their tickets.

        Labels are keyed by ticket id, and ``validate`` sends each ticket's reading to the
        partition of its id of ``<app>-texts-to-join`` (one message per batch and
        partition), which this agent keeps: a ticket and its labels share a partition
        number, and Faust assigns both topics' partition p to one worker, so the join is
        local (module :mod:`pipeline.tagging.labels`).
        """
        async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            joined: dict[int, list[dict[str, Any]]] = {}
            out = Outbox()
            for event in events:
                message = event.message
                if message.topic != settings.topic_labels:
                    try:
                        # a batch's texts of this partition ({"texts": [...]}; one text each before)
                        docs = texts_of_message(event.value)
                    except ValueError as exc:
                        stats.dead_letters += 1
                        error = f"unreadable texts-to-join message: {exc}"
                        await out.send(dead_letter, value=_dead_letter(event.value, event.key, error, message))
                        continue
                    examples = label_join.remember_message(message.partition, message.offset, docs)
                else:
                    try:
                        label = parse_label(event.value)
                    except TicketError as exc:
                        stats.dead_letters += 1
                        await out.send(dead_letter, value=_dead_letter(event.value, event.key, str(exc), message))
                        continue
                    examples = label_join.label(f"{message.partition}/{label['id']}", label)
                for example in examples:
                    joined.setdefault(_partition_of(example["id"].encode()), []).append(example)
            for partition, examples in joined.items():
                stats.labels_joined += len(examples)
                await out.send_parts(training, partition, {"examples": examples}, ["examples"])
            label_store.flush()
            await out.delivered()
            await label_texts.delivered()

    async def groupless_consumer() -> AIOKafkaConsumer:
        """A started consumer in no group (it is given its partitions), from the start of each."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        return consumer

    async def read_texts_again(partitions: set[int]) -> None:
        """Read back from ``<app>-texts-to-join`` the texts kept in ``partitions``, which this
        worker joins from now on (it started, or took them over), at the offsets its table
        names; before the streams resume, so no label of these partitions comes first."""
        offsets = {p: span for p in sorted(partitions) if (span := label_join.reread_from(p)) is not None}
        if not offsets:
            return
        topic = texts_to_join.get_topic_name()
        consumer = await groupless_consumer()
        started = time.monotonic()
        texts = messages = 0
        try:
            tps = {p: TopicPartition(topic, p) for p in offsets}
            consumer.assign(list(tps.values()))
            oldest = await consumer.beginning_offsets(list(tps.values()))
            for partition, (first, _) in offsets.items():
                if oldest[tps[partition]] > first:
                    # the topic's retention was shorter than the horizon: their labels will wait,
                    # and go to the dead-letter topic when the horizon has passed
                    logger.warning(
                        "label_join texts_lost partition=%d offsets=%d-%d reason=%s",
                        partition,
                        first,
                        oldest[tps[partition]] - 1,
                        "deleted from the topic (its retention.ms is under TICKETPULSE_LABEL_HORIZON_HOURS)",
                    )
                consumer.seek(tps[partition], max(first, oldest[tps[partition]]))
            waiting = dict(offsets)
            last_heard = last_said = time.monotonic()
            while waiting:
                fetched = await consumer.getmany(*(tps[p] for p in waiting), timeout_ms=500)
                now = time.monotonic()
                if not any(fetched.values()) and now - last_heard > READ_AGAIN_QUIET_SECONDS:
                    logger.warning(
                        "label_join texts_lost partitions=%s offsets_to=%s reason=%s",
                        ",".join(map(str, sorted(waiting))),
                        ",".join(str(span[1]) for _, span in sorted(waiting.items())),
                        f"not on the topic (nothing came for {READ_AGAIN_QUIET_SECONDS:g} s)",
                    )
                    break
                for tp, records in fetched.items():
                    last_heard = now
                    last = waiting[tp.partition][1] if tp.partition in waiting else -1
                    for record in records:
                        if record.offset > last:
                            break
                        try:
                            docs = texts_of_message(record.value)
                        except ValueError as exc:
                            # dead-lettered when the join first read it: named again, not a crash loop
                            logger.warning(
                                "label_join texts_lost partition=%d offset=%d reason=%r",
                                tp.partition,
                                record.offset,
                                exc,
                            )
                            continue
                        label_join.restore(tp.partition, record.offset, docs, record.timestamp / 1000)
                        messages += 1
                        texts += len(docs)
                    if records and records[-1].offset >= last:
                        waiting.pop(tp.partition, None)
                if now - last_said > 10:  # a long horizon is millions of texts: say how far it is
                    logger.info("label_join reading_again messages=%d texts=%d", messages, texts)
                    last_said = now
        finally:
            await consumer.stop()
        # what was read back from past the horizon (for a re-sent ticket's first prediction)
        label_join.expire_texts()
        logger.info(
            "label_join read_again partitions=%s messages=%d texts=%d kept=%d seconds=%.1f",
            ",".join(map(str, sorted(offsets))),
            messages,
            texts,
            sum(len(label_join.texts.get(p, ())) for p in offsets),
            time.monotonic() - started,
        )

    async def expire_label_texts() -> None:
        """Forget texts older than the horizon; a label whose ticket never came is dead-lettered."""
        for label in label_join.expire():
            stats.labels_expired += 1
            stats.dead_letters += 1
            hours = settings.label_horizon_hours
            error = f"label for ticket '{label['id']}': no such ticket seen within the {hours:g} h horizon"
            value = {"error": error, "topic": settings.topic_labels, "value": orjson.dumps(label).decode()}
            await (await dead_letter.send(value=value))

    checkpoint_path = tagger_checkpoint(settings)

    async def read_every_partition(topic: str, positions: dict[int, int]) -> AIOKafkaConsumer:
        """A started consumer of every partition of ``topic`` (no group: every worker reads all),
        at the checkpointed ``positions``, else at the beginning."""
        consumer = await groupless_consumer()
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        for tp in tps:
            if tp.partition in positions:
                consumer.seek(tp, positions[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
        return consumer

    async def learn_labels() -> None:
        """Every worker reads every label from the training topic, resuming from its checkpoint.

        Broadcast, not a consumer group: each worker's models learn all labels, and naive
        Bayes counts do not depend on the order, so workers that have read the same labels
        predict the same; a ticket's labels and corrections share a partition, so they are
        read in the order they were sent, and a correction replaces the earlier tag.
        The models are saved every ``TICKETPULSE_TAGGER_CHECKPOINT_SECONDS`` with the offset
        of every training partition they include: a restarted worker loads them and reads
        on from there, so it neither starts from zero nor learns a label twice. Without a
        checkpoint it starts from ``TICKETPULSE_TAGGER_MODEL`` (a warm start) or empty, and
        reads the topic from its beginning. Faust's GlobalTable is documented to loop in
        recovery with several workers, hence a plain consumer.
        """
        # loaded by `ticketpulse worker` before it started (and logged then), else here
        positions = preloaded.pop() if preloaded else load_tagger(tagger, checkpoint_path, settings.tagger_model)
        tagger_ready.set()
        consumer = await read_every_partition(training.get_topic_name(), positions)
        checkpoints = CheckpointWriter(checkpoint_path, "tagger")
        try:
            last_written = last_saved = time.monotonic()
            saved_version = tagger.version
            while True:
                checkpoints.busy()  # a checkpoint written meanwhile is reaped (and logged) at once
                batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
                examples = [e for records in batch.values() for r in records for e in orjson.loads(r.value)["examples"]]
                if examples:
                    tagger.learn_batch(examples)
                for tp, records in batch.items():
                    if records:
                        positions[tp.partition] = records[-1].offset + 1
                if (
                    time.monotonic() - last_saved >= settings.tagger_checkpoint_seconds
                    and (tagger.version != saved_version or examples)
                    and checkpoints.save(
                        {"tagger": tagger, "positions": dict(positions)},
                        version=tagger.version,
                        positions=dict(positions),
                    )
                ):
                    last_saved, saved_version = time.monotonic(), tagger.version
                if time.monotonic() - last_written >= settings.stats_seconds and any(tagger.learned.values()):
                    last_written = time.monotonic()
                    now = int(time.time())
                    await sink.write(
                        [
                            Point(
                                "classifier_quality",
                                {"target": target, "worker": worker_tag},
                                {**tagger.quality[target].summary(), "learned": tagger.learned[target]},
                                now,
                            )
                            for target in FIELDS
                            if tagger.quality[target].labelled
                        ]
                    )
        finally:
            checkpoints.wait()  # then the last one, in place: no child writes after it
            save_tagger(tagger, positions, checkpoint_path)
            await consumer.stop()

    if settings.tagging_enabled:
        app.agent(labels_in, name="join_labels")(join_labels)
        # often enough that an expired label is reported within a quarter of the horizon
        app.timer(interval=min(60.0, settings.label_horizon_hours * 900))(expire_label_texts)
        app.task(learn_labels)

    pattern_checkpoint = Path(settings.data_dir) / "patterns-checkpoint.pickle"

    def new_pattern_watch() -> PatternWatch:
        return PatternWatch(
            window_seconds,
            settings.allowed_lateness_seconds,
            sources=settings.partitions,
            threshold=settings.pattern_threshold,
            alert_score=settings.spike_alert_score,
            min_customers=settings.pattern_spike_min_customers,
        )

    async def group_patterns() -> None:
        """Group counted tickets into patterns; ``pattern_volume``, ``pattern_spike`` and their alerts.

        Every worker reads every partition of ``<app>-pattern-tickets`` (a plain consumer,
        as ``learn_labels``), one :class:`PatternWatch` per partition. A partition holds
        whole areas and is read in order, so every worker forms the same patterns with the
        same ids and counts: the points they write are the same points (idempotent), and
        a rebalance moves nothing, since no worker owns this state. The price: each worker
        groups every ticket (benchmarks/bench_pipeline.py measures it). Alerts are sent by
        the worker that owns the same-numbered partition of the counting topic, so one
        episode is one alert however many workers run. Checkpoints as the tagger's: the
        watches and the next offset per partition, every ``TICKETPULSE_PATTERN_CHECKPOINT_SECONDS``
        and at shutdown; a restarted worker reads on from there.
        """
        state: dict[str, Any] = {"watches": {}, "positions": {}}
        if pattern_checkpoint.exists():
            state = load_checkpoint(pattern_checkpoint.read_bytes())
            logger.info("agent=patterns loaded=checkpoint path=%s positions=%s", pattern_checkpoint, state["positions"])
        pattern_watches: dict[int, PatternWatch] = state["watches"]
        positions: dict[int, int] = state["positions"]

        checkpoints = CheckpointWriter(pattern_checkpoint, "agent=patterns")

        consumer = await read_every_partition(pattern_tickets.get_topic_name(), positions)
        try:
            counting_topic = by_customer.get_topic_name()
            while not app.assignor.assigned_actives():
                await asyncio.sleep(0.2)  # whose alerts are whose is known once partitions are assigned
            last_saved = time.monotonic()
            while True:
                batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
                points: list[Point] = []
                events: list[tuple[int, SpikeEvent]] = []
                for tp, records in batch.items():
                    if not records:
                        continue
                    pw = pattern_watches.get(tp.partition)
                    if pw is None:
                        pw = pattern_watches[tp.partition] = new_pattern_watch()
                    touched: set[tuple[int, str]] = set()
                    for record in records:
                        value = orjson.loads(record.value)
                        changed = pw.add(value["tickets"]) | pw.hear(value["watermarks"])
                        touched |= changed
                        events += [(tp.partition, e) for e in pw.judge(changed) + pw.close()]
                    positions[tp.partition] = records[-1].offset + 1
                    points += pw.points(touched, window_tag)
                # Which pattern each ticket joined, from every worker (they agree, and the
                # report keeps one per ticket): on the broker before the checkpoint says so.
                out = Outbox()
                for partition, pw in sorted(pattern_watches.items()):
                    assigned = pw.drain_assigned()
                    for start in range(0, len(assigned), ASSIGNMENTS_PER_MESSAGE):
                        chunk = assigned[start : start + ASSIGNMENTS_PER_MESSAGE]
                        await out.send(ticket_patterns, partition=partition, value={"tickets": chunk})
                owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == counting_topic}
                for partition, spike in events:
                    pw = pattern_watches[partition]
                    pattern = pw.summary(spike.key)
                    points.append(pattern_spike_point(spike, pw.area_of[spike.key], pattern["name"], window_tag))
                    if partition in owned:
                        stats.spike_events += 1
                        payload = pattern_alert_payload(spike, pw.area_of[spike.key], pattern)
                        logger.warning(
                            "agent=patterns event=%s episode=%s pattern=%s area=%s customers=%d score=%.3f",
                            spike.event,
                            spike.episode_id,
                            spike.key,
                            payload["area"],
                            spike.customers,
                            spike.score,
                        )
                        await out.send(alerts, key=payload["area"].encode(), value=payload)
                # the points and alerts first, then the checkpoint that says they were made
                await sink.write(points)
                await out.delivered()
                if batch:
                    stats.patterns_too_late = sum(pw.too_late for pw in pattern_watches.values())
                    logger.info(
                        "agent=patterns messages=%d points=%d spike_events=%d too_late=%d patterns=%s forgotten=%d",
                        sum(len(r) for r in batch.values()),
                        len(points),
                        len(events),
                        stats.patterns_too_late,
                        ";".join(f"{p}:{len(pw.area_of)}" for p, pw in sorted(pattern_watches.items())),
                        sum(pw.forgotten for pw in pattern_watches.values()),
                    )
                checkpoints.busy()  # a checkpoint written meanwhile is reaped (and logged) at once
                if (
                    batch
                    and time.monotonic() - last_saved >= settings.pattern_checkpoint_seconds
                    and checkpoints.save(
                        {"watches": pattern_watches, "positions": positions}, positions=dict(positions)
                    )
                ):
                    last_saved = time.monotonic()
        finally:
            checkpoints.wait()  # then the last one, in place: no child writes after it
            write_checkpoint({"watches": pattern_watches, "positions": positions}, pattern_checkpoint)
            await consumer.stop()

    if settings.patterns_enabled:
        app.task(group_patterns)

    worker_tag = f"{socket.gethostname()}-{os.getpid()}"

    reported_tagging: dict[str, int] = {}

    @app.timer(interval=settings.stats_seconds)
    async def write_stats() -> None:
        """This worker's counters as a ``pipeline_stats`` point (rates and lag for dashboards)."""
        now = int(time.time())
        fields: dict[str, int | float] = {
            "received": stats.received,
            "dead_letters": stats.dead_letters,
            "counted": stats.counted,
            "duplicates": stats.duplicates,
            "too_late": stats.too_late,
            "patterns_too_late": stats.patterns_too_late,
            "spike_events": stats.spike_events,
            "alerts_delivered": deliverer.sent,
            "alerts_undelivered": deliverer.failed,
            "tagged": stats.tagged,
            **{f"uncertain_{name}": n for name, n in stats.uncertain.items()},
            "labels_joined": stats.labels_joined,
            "labels_expired": stats.labels_expired,
            "corrections": tagger.corrections,
        }
        if stats.newest_created is not None:
            fields["lag_seconds"] = round(max(0.0, now - stats.newest_created), 1)
        points = [Point("pipeline_stats", {"worker": worker_tag, "app": settings.app_id}, fields, now)]
        # Tickets tagged since the last point, and how many of them were uncertain per
        # field: summed over workers, the share of tickets that need a human tag.
        tagging = {"tagged": stats.tagged, **{f"uncertain_{n}": v for n, v in stats.uncertain.items()}}
        delta = {name: value - reported_tagging.get(name, 0) for name, value in tagging.items()}
        if delta["tagged"] > 0:
            points.append(Point("ticket_tags", {"worker": worker_tag}, delta, now))
        await sink.write(points)
        reported_tagging.update(tagging)

    topics = {"tickets": tickets, "dead_letter": dead_letter, "by_customer": by_customer, "partials": partials}
    return Pipeline(app=app, settings=settings, sink=sink, stats=stats, topics=topics)
