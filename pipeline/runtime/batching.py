"""Batches of Kafka records: partitions taken in turn, rebalances after the batch, holes read again."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

__all__ = ["FinishBatchFirst", "SkippedMessages", "interleaved_batches", "round_robin", "skipped_offsets"]

P = TypeVar("P", bound=Hashable)

logger = logging.getLogger("pipeline.worker")


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


def skipped_offsets(next_offsets: dict[P, int], batch: Iterable[tuple[P, int]]) -> dict[P, list[int]]:
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
    by_partition: dict[P, set[int]] = {}
    for partition, offset in batch:
        by_partition.setdefault(partition, set()).add(offset)
    holes: dict[P, list[int]] = {}
    for partition, offsets in by_partition.items():
        newest = max(offsets)
        expected = next_offsets.get(partition)
        if expected is not None:
            missing = [o for o in range(expected, newest) if o not in offsets]
            if missing:
                holes[partition] = missing
        next_offsets[partition] = max(newest + 1, expected or 0)
    return holes


@dataclass(frozen=True)
class ReadAgainMessage:
    """Where a message read again came from (what a stage reads of a Faust event's ``message``)."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class ReadAgainEvent:
    """A message read again from the broker, shaped as the Faust event a stage reads."""

    message: ReadAgainMessage
    key: bytes | None
    value: bytes


class SkippedMessages:
    """Hands a batch agent's stage every message of its batch, with any Faust skipped read again.

    Faust's ``take_events`` can acknowledge a message it never handed to the agent
    (:func:`skipped_offsets`). A stage whose state is derived from every message (the
    merge keeps the latest count of every counting partition) misses it for good: a
    window's last partial of one counting partition, skipped, leaves the window's total
    short. Each batch's offsets are checked against where the last batch of that topic
    partition ended; a hole is read again from the broker before the batch is handled,
    and so before it is acknowledged. :meth:`forget` at a rebalance: a partition taken
    over is read on from its committed offset. The first batch of a partition is checked
    against ``start_of``, when that is known.

    Parameters
    ----------
    bootstrap_servers
        The broker, to read holes again (a consumer that joins no group and commits nothing).
    agent
        The agent's name, for the log.
    start_of
        ``(topic, partition) -> offset`` where a partition's first batch after an assignment
        should start: how far the stage recorded it had got, or the offset its consumer was
        seeked to (``None``: not known; the first batch is then not checked).
    timeout_seconds
        How long to try to read a hole again before logging it as lost.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        agent: str,
        start_of: Callable[[str, int], int | None] | None = None,
        timeout_seconds: float = 30.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.agent = agent
        self.start_of = start_of
        self.timeout_seconds = timeout_seconds
        #: (topic, partition) -> the offset the next batch should start at
        self.next_offsets: dict[tuple[str, int], int] = {}

    def forget(self) -> None:
        """Read on from the committed offsets, wherever they are (after a rebalance or recovery)."""
        self.next_offsets.clear()

    async def complete(self, events: Sequence[Any]) -> list[Any]:
        """``events``, with any message skipped before them read again (then in offset order per partition)."""
        offsets = [((e.message.topic, e.message.partition), e.message.offset) for e in events]
        if self.start_of is not None:
            for key in {key for key, _ in offsets} - set(self.next_offsets):
                start = self.start_of(*key)
                if start is not None:
                    self.next_offsets[key] = start
        holes = skipped_offsets(self.next_offsets, offsets)
        if not holes:
            return list(events)
        found = list(events)
        for (topic, partition), missing in holes.items():
            again = await self.read_again(topic, partition, missing)
            found += again
            logger.warning(
                "agent=%s topic=%s partition=%d skipped=%d-%d holes=%d read_again=%d",
                self.agent,
                topic,
                partition,
                missing[0],
                missing[-1],
                len(missing),
                len(again),
            )
        return sorted(found, key=lambda e: (e.message.topic, e.message.partition, e.message.offset))

    async def read_again(self, topic: str, partition: int, offsets: list[int]) -> list[ReadAgainEvent]:
        """The messages at ``offsets`` (ascending) of one topic partition."""
        wanted = set(offsets)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers, group_id=None, enable_auto_commit=False)
        await consumer.start()
        found: list[ReadAgainEvent] = []
        try:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, offsets[0])
            deadline = time.monotonic() + self.timeout_seconds
            while time.monotonic() < deadline:
                records = (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
                found += [
                    ReadAgainEvent(ReadAgainMessage(topic, partition, r.offset), r.key, r.value)
                    for r in records
                    if r.offset in wanted
                ]
                if any(r.offset >= offsets[-1] for r in records):
                    return found
            logger.error(
                "agent=%s topic=%s partition=%d offsets=%s error=not_read_again", self.agent, topic, partition, offsets
            )
            return found
        finally:
            await consumer.stop()
