"""The label join: tags agents send later (``ticket-labels``) joined to the words of their tickets.

Labels are keyed by ticket id, and validation sends each ticket's reading to the
partition of its id of ``<app>-texts-to-join`` (one message per batch and partition),
which this stage keeps: a ticket and its labels share a partition number, and Faust
assigns both topics' partition p to one worker, so the join is local
(:class:`pipeline.tagging.labels.LabelJoin` holds the design).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import TopicPartition

from pipeline.ingest.schema import TicketError, parse_label
from pipeline.messages import TrainingBatch
from pipeline.runtime.consumers import groupless_consumer
from pipeline.runtime.dead_letters import dead_letter_record
from pipeline.runtime.outbox import Outbox
from pipeline.runtime.partitioning import KeyPartitioner
from pipeline.runtime.stats import PipelineStats
from pipeline.runtime.tables import PartitionedTable
from pipeline.settings import Settings
from pipeline.tagging.labels import ChunkedStore, LabelJoin, entry_chars, texts_of_message
from pipeline.topology import training_partition

__all__ = ["READ_AGAIN_QUIET_SECONDS", "JoinLabels"]

logger = logging.getLogger("pipeline.worker")

#: A worker reading kept texts back stops, and says which offsets it did not find, when
#: the topic has given nothing for this long (a broker that lost them, as Tansu on restart).
READ_AGAIN_QUIET_SECONDS = 10.0


class JoinLabels:
    """Joins ``ticket-labels`` to the kept texts of ``<app>-texts-to-join``; the examples go to training.

    ``table``: the join's table, ``"<partition>/<ticket id>"`` -> labels waiting for their
    ticket, ``"<partition>/ texts"`` -> the offsets of texts-to-join to read again (the
    texts themselves are in memory, read back after a restart or a rebalance).
    """

    def __init__(
        self, settings: Settings, topics: dict[str, Any], stats: PipelineStats, table: PartitionedTable
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.stats = stats
        self.table = table
        # one changelog record per batch and partition, not one per change (ChunkedStore)
        self.store = ChunkedStore(table, size_of=entry_chars)
        self.label_join = LabelJoin(self.store, settings.label_horizon_hours * 3600)
        self.partition_of = KeyPartitioner(settings.partitions)
        table.on_revoked.append(self.revoked)
        table.on_recovered.append(self.recovered)

    def revoked(self, revoked: set[TopicPartition]) -> None:
        """Forget partitions taken from this worker: another may keep texts in them, read again if they come back."""
        topic = self.topics["texts_to_join"].get_topic_name()
        self.label_join.drop({tp.partition for tp in revoked if tp.topic == topic})

    async def recovered(self, partitions: set[int]) -> None:
        """The partitions this worker joins from now on: their waiting labels, and their texts read back."""
        self.store.rebuild(partitions)
        self.label_join.drop(self.label_join.holds() - partitions)
        await self.read_texts_again(partitions - self.label_join.holds())

    async def on_batch(self, events: Sequence[Any]) -> None:
        """Keep the texts, join the labels (Faust events of both topics, values raw)."""
        joined: dict[int, list[dict[str, Any]]] = {}
        out = Outbox()
        for event in events:
            examples = await self._one(event, out)
            for example in examples:
                # the training partition of its id (the linear tagger's one): a correction after its tag
                partition = training_partition(self.settings, self.partition_of(example["id"].encode()))
                joined.setdefault(partition, []).append(example)
        for partition, examples in joined.items():
            self.stats.labels_joined += len(examples)
            await out.send_parts(self.topics["training"], partition, TrainingBatch(examples), ["examples"])
        self.store.flush()
        await out.delivered()
        await self.table.delivered()

    async def _one(self, event: Any, out: Outbox) -> list[dict[str, Any]]:
        """The training examples one message makes (a label joined, or texts that labels waited for)."""
        message = event.message
        if message.topic != self.settings.topic_labels:
            try:
                # a batch's texts of this partition ({"texts": [...]}; one text each before)
                docs = texts_of_message(event.value)
            except ValueError as exc:
                error = f"unreadable texts-to-join message: {exc}"
                await self._dead_letter(out, event, error)
                return []
            return self.label_join.remember_message(message.partition, message.offset, docs)
        try:
            label = parse_label(event.value)
        except TicketError as exc:
            await self._dead_letter(out, event, str(exc))
            return []
        return self.label_join.label(f"{message.partition}/{label['id']}", label)

    async def _dead_letter(self, out: Outbox, event: Any, error: str) -> None:
        self.stats.dead_letters += 1
        await out.send(
            self.topics["dead_letter"], value=dead_letter_record(event.value, event.key, error, event.message)
        )

    async def read_texts_again(self, partitions: set[int]) -> None:
        """Read back from ``<app>-texts-to-join`` the texts kept in ``partitions``, which this
        worker joins from now on (it started, or took them over), at the offsets its table
        names; before the streams resume, so no label of these partitions comes first."""
        offsets = {p: span for p in sorted(partitions) if (span := self.label_join.reread_from(p)) is not None}
        if not offsets:
            return
        topic = self.topics["texts_to_join"].get_topic_name()
        consumer = await groupless_consumer(self.settings)
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
                        self.label_join.restore(tp.partition, record.offset, docs, record.timestamp / 1000)
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
        self.label_join.expire_texts()
        logger.info(
            "label_join read_again partitions=%s messages=%d texts=%d kept=%d seconds=%.1f",
            ",".join(map(str, sorted(offsets))),
            messages,
            texts,
            sum(len(self.label_join.texts.get(p, ())) for p in offsets),
            time.monotonic() - started,
        )

    async def expire(self) -> None:
        """Forget texts older than the horizon; a label whose ticket never came is dead-lettered."""
        for label in self.label_join.expire():
            self.stats.labels_expired += 1
            self.stats.dead_letters += 1
            hours = self.settings.label_horizon_hours
            error = f"label for ticket '{label['id']}': no such ticket seen within the {hours:g} h horizon"
            value = {"error": error, "topic": self.settings.topic_labels, "value": orjson.dumps(label).decode()}
            await (await self.topics["dead_letter"].send(value=value))
