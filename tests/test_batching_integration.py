"""A batch agent's stage gets every message, even one Faust acknowledged without handing it over."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.runtime.batching import ReadAgainEvent, ReadAgainMessage, SkippedMessages
from pipeline.testbed.services import EmbeddedBroker

pytestmark = pytest.mark.integration


def _events(topic: str, offsets: list[int]) -> list[ReadAgainEvent]:
    """Events as Faust hands them to an agent, as far as a stage reads them."""
    return [ReadAgainEvent(ReadAgainMessage(topic, 0, o), f"k{o}".encode(), f"m{o}".encode()) for o in offsets]


async def _produce(servers: str, topic: str, messages: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    await producer.start()
    try:
        for n in range(messages):
            await producer.send_and_wait(topic, f"m{n}".encode(), key=f"k{n}".encode(), partition=0)
    finally:
        await producer.stop()


def test_holes_in_a_partitions_batches_are_read_again_from_the_broker(broker: EmbeddedBroker) -> None:
    servers = broker.url.removeprefix("kafka://")
    topic = f"holes-{uuid.uuid4().hex[:8]}"

    async def scenario() -> list[list[tuple[int, bytes | None, bytes]]]:
        await _produce(servers, topic, messages=10)
        guard = SkippedMessages(servers, "test", start_of=lambda _topic, _partition: None)
        seen = []
        for offsets in ([2, 3], [3, 5], [6, 9], [4, 5]):
            batch = await guard.complete(_events(topic, offsets))
            seen.append([(e.message.offset, e.key, e.value) for e in batch])
        guard.forget()  # a rebalance: the partition is read on from wherever it starts
        batch = await guard.complete(_events(topic, [7, 9]))
        seen.append([(e.message.offset, e.key, e.value) for e in batch])
        return seen

    first, second, third, replay, after_rebalance = asyncio.run(scenario())
    assert first == [(o, f"k{o}".encode(), f"m{o}".encode()) for o in (2, 3)]
    assert second == [(o, f"k{o}".encode(), f"m{o}".encode()) for o in (3, 4, 5)]  # 4 read again
    assert third == [(o, f"k{o}".encode(), f"m{o}".encode()) for o in (6, 7, 8, 9)]  # 7 and 8 read again
    assert [o for o, _, _ in replay] == [4, 5]  # read twice is no hole
    assert [o for o, _, _ in after_rebalance] == [7, 9]  # no baseline after a rebalance


def test_a_partitions_first_batch_is_read_from_where_its_consumer_started(broker: EmbeddedBroker) -> None:
    """Messages Faust dropped before the first it handed over (the consumer was seeked to 2)."""
    servers = broker.url.removeprefix("kafka://")
    topic = f"holes-{uuid.uuid4().hex[:8]}"
    started = {(topic, 0): 2}

    async def scenario() -> list[list[int]]:
        await _produce(servers, topic, messages=8)
        guard = SkippedMessages(servers, "test", start_of=lambda t, p: started.get((t, p)))
        seen = [[e.message.offset for e in await guard.complete(_events(topic, [5, 6]))]]
        guard.forget()  # a rebalance; the consumer now starts at 6
        started[(topic, 0)] = 6
        seen.append([e.message.offset for e in await guard.complete(_events(topic, [7]))])
        return seen

    assert asyncio.run(scenario()) == [[2, 3, 4, 5, 6], [6, 7]]


def test_a_changelog_whose_last_record_batch_holds_one_record_ends_where_its_records_do(
    broker: EmbeddedBroker,
) -> None:
    """What a table's recovery relies on (pipeline.runtime.tables.DurableTable): the broker's end
    offset of a partition counts every record when its last record batch holds one.

    (Tansu gives a last batch's base offset plus one: after a batch of several, that is short.)
    """
    servers = broker.url.removeprefix("kafka://")
    topic = f"ends-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[int, list[int]]:
        producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=50)
        await producer.start()
        try:
            batch = [await producer.send(topic, b"change", key=f"k{n}".encode(), partition=0) for n in range(3)]
            for sent in batch:  # one record batch of three
                await sent
            await (await producer.send(topic, None, key=b"0/~end~", partition=0))  # alone
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            end = (await consumer.end_offsets([tp]))[tp]
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            offsets: list[int] = []
            for _ in range(20):  # at most 20 s
                offsets += [r.offset for r in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])]
                if len(offsets) >= 4:
                    break
            return end, offsets
        finally:
            await consumer.stop()

    end, offsets = asyncio.run(scenario())
    assert offsets == [0, 1, 2, 3]
    assert end == 4
