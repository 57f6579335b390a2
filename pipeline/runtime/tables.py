"""Faust tables whose changes an agent waits for, keyed by the partition they belong to."""

from __future__ import annotations

import base64
import pickle
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from aiokafka import TopicPartition

from pipeline.runtime.checkpoints import load_checkpoint
from pipeline.runtime.outbox import Outbox

__all__ = ["END", "DurableTable", "PartitionedTable", "freeze", "thaw"]

#: The key, after ``"<partition>/"``, of the tombstone that ends a batch's changes in a
#: changelog partition (:class:`DurableTable`); no table sets it.
END = "~end~"


class DurableTable(faust.Table):  # type: ignore[misc]
    """A table whose changes an agent can wait for, until the broker has them.

    Faust sends table changes through its producer buffer and flushes the producer
    before it commits offsets, but that flush gives up after 0.1 s without progress
    (``ProducerBuffer.flush_atmost``): under backpressure ("producer buffer full"),
    offsets can be committed while changes still wait in the buffer, and a worker
    killed then loses them for good (the events that made them are not read again).
    An agent awaits :meth:`delivered` at the end of each batch, before the batch's
    events are acknowledged, so a committed offset never covers an undelivered change.

    Each changelog partition a batch changed then gets one record more, alone: a
    tombstone of a key never set (:data:`END`). A recovering worker reads a changelog up
    to the end offset the broker gives, and Tansu (the embedded broker) gives the last
    record batch's base offset plus one: the records after the first of a last batch of
    several were not read back, and a worker killed after its input offsets were
    committed lost the facts of its last batch (a SIGKILL test counted 138 tickets short).
    A one-record last batch makes Tansu's end offset the true one; Apache Kafka's is
    anyway. Recovery applies the tombstone as the deletion of a key that is not there.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._changes = Outbox()
        self._touched: set[int] = set()

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        sent = self._changes.track(super().send_changelog(*args, **kwargs))
        self._touched.add(sent.message.partition)  # set at once (Faust partitions eagerly)
        return sent

    async def delivered(self) -> None:
        """Return once every change made so far is acknowledged by the broker, and ends its partitions."""
        await self._changes.delivered()
        touched, self._touched = self._touched, set()
        if touched:
            ends = Outbox()
            for partition in sorted(touched):
                ends.track(super().send_changelog(partition, f"{partition}/{END}", None, value_serializer="raw"))
            await ends.delivered()


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


def freeze(value: Any) -> str:
    """A detector's state as text for a JSON changelog (pickle: it is our own state)."""
    return base64.b64encode(pickle.dumps(value)).decode()


def thaw(text: str | None) -> Any:
    """What :func:`freeze` made of a state (``None`` for none)."""
    return load_checkpoint(base64.b64decode(text)) if text else None  # our own changelog
