"""Reading ``tickets``: batches straight from the Kafka client into :class:`pipeline.ingest.validate.Validate`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError

from pipeline.counting.volume import IdleSources
from pipeline.ingest.validate import Validate
from pipeline.runtime.batching import FinishBatchFirst, interleaved_batches, round_robin
from pipeline.runtime.outbox import Outbox
from pipeline.settings import Settings

__all__ = ["TicketReader"]

logger = logging.getLogger("pipeline.worker")


class TicketReader:
    """The worker's reader of ``tickets``.

    Not a Faust agent: Faust's per-event path (a lock, a callback, an event, a queue put
    and get, an ack per message) costs about 60 µs a message here before any work,
    thirty times the Kafka client's own (``benchmarks/bench_faust_floor.py``), and
    ``tickets`` is the one topic with a message per ticket. The consumer is in its own
    group (``<app id>-tickets``), so workers share the partitions as Faust's agents do; a
    batch's offsets are committed once everything it sent was delivered, and partitions
    taken away in a rebalance wait for the batch in flight (:class:`FinishBatchFirst`):
    at least once, like the agents, and every effect downstream is idempotent.

    ``heard``: the windows the counting partitions of this worker have heard from every
    tickets partition (an idle partition follows the newest of them).
    """

    def __init__(
        self,
        settings: Settings,
        validate: Validate,
        ready: asyncio.Event,
        heard: Callable[[], Iterable[int]],
    ) -> None:
        self.settings = settings
        self.validate = validate
        self.ready = ready
        self.heard = heard

    def _consumer(self) -> AIOKafkaConsumer:
        settings = self.settings
        return AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=f"{settings.app_id}-tickets",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # as the app's own consumer: a new worker gets its partitions in seconds
            session_timeout_ms=6000,
            rebalance_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            max_partition_fetch_bytes=max(1_048_576, settings.max_ticket_bytes * 2),
        )

    async def run(self) -> None:
        """Read and validate batches until the worker stops (once the tagger is ready)."""
        await self.ready.wait()
        in_flight = asyncio.Lock()
        consumer = self._consumer()
        consumer.subscribe([self.settings.topic_tickets], listener=FinishBatchFirst(in_flight))
        await consumer.start()
        idle = IdleSources(self.settings.idle_partition_seconds)
        try:
            while True:
                # everything fetched, then batches that take from every partition in turn
                fetched = await consumer.getmany(timeout_ms=int(self.settings.batch_seconds * 1000))
                idle.assign(tp.partition for tp in consumer.assignment())
                for batch in interleaved_batches(fetched, self.settings.batch_size):
                    async with in_flight:
                        await self._one_batch(consumer, batch, idle)
                await self.send_idle_watermarks(consumer, idle)
        finally:
            await consumer.stop()

    async def _one_batch(self, consumer: AIOKafkaConsumer, batch: dict, idle: IdleSources) -> None:
        owned = consumer.assignment()
        batch = {tp: records for tp, records in batch.items() if tp in owned}
        if not batch:
            return  # given away in a rebalance: the new owner reads them
        marks = await self.validate.on_batch(round_robin(list(batch.values())))
        for tp in batch:
            idle.heard(tp.partition, marks.get(str(tp.partition)))
        try:
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
        except CommitFailedError as exc:
            # the group moved on (this worker was too slow): the new owner reads them again
            logger.warning("agent=read_tickets commit=failed error=%s", exc)

    async def send_idle_watermarks(self, consumer: AIOKafkaConsumer, idle: IdleSources) -> None:
        """Quiet partitions read to their end follow the newest window read (:class:`IdleSources`)."""
        caught_up = []
        for partition in idle.quiet():
            tp = TopicPartition(self.settings.topic_tickets, partition)
            end = consumer.highwater(tp)  # from the last fetch; None before the first
            if end is not None and tp in consumer.assignment() and await consumer.position(tp) >= end:
                caught_up.append(partition)
        # what the counting partitions here heard of every tickets partition, this worker's or not
        marks = idle.marks(caught_up, heard=list(self.heard()))
        if marks:
            out = Outbox()
            await self.validate.send_to_counting(out, {}, {}, marks)
            await out.delivered()
            logger.info(
                "agent=read_tickets idle_partitions=%s watermark=%d",
                ",".join(sorted(marks, key=int)),
                max(marks.values()),
            )
