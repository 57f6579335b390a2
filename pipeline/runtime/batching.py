"""Batches of Kafka records: partitions taken in turn, rebalances after the batch, holes read again."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from aiokafka import ConsumerRebalanceListener

__all__ = ["FinishBatchFirst", "interleaved_batches", "round_robin", "skipped_offsets"]

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
