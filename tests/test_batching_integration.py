"""A batch agent's stage gets every message, even one Faust acknowledged without handing it over."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.runtime.batching import SkippedMessages
from pipeline.testbed.services import EmbeddedBroker

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class _Message:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class _Event:
    """What Faust hands an agent, as far as a stage reads it."""

    message: _Message
    key: bytes | None
    value: bytes


def _events(topic: str, offsets: list[int]) -> list[_Event]:
    return [_Event(_Message(topic, 0, o), f"k{o}".encode(), f"m{o}".encode()) for o in offsets]


async def _produce_and_commit(servers: str, topic: str, group: str, messages: int, committed: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    await producer.start()
    try:
        for n in range(messages):
            await producer.send_and_wait(topic, f"m{n}".encode(), key=f"k{n}".encode(), partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.commit({tp: committed})
    finally:
        await consumer.stop()


def test_holes_in_a_partitions_batches_are_read_again_from_the_broker(broker: EmbeddedBroker) -> None:
    servers = broker.url.removeprefix("kafka://")
    topic, group = f"holes-{uuid.uuid4().hex[:8]}", f"group-{uuid.uuid4().hex[:8]}"

    async def scenario() -> list[list[tuple[int, bytes | None, bytes]]]:
        await _produce_and_commit(servers, topic, group, messages=10, committed=2)
        guard = SkippedMessages(servers, group, "test")
        seen = []
        # the first batch should have started at the committed offset, 2
        for offsets in ([4, 5], [5, 6, 9], [3, 4]):
            batch = await guard.complete(_events(topic, offsets))
            seen.append([(e.message.offset, e.key, e.value) for e in batch])
        guard.forget()  # a rebalance: read on from the committed offset (still 2) again
        batch = await guard.complete(_events(topic, [2, 3]))
        seen.append([(e.message.offset, e.key, e.value) for e in batch])
        return seen

    first, second, replay, after_rebalance = asyncio.run(scenario())
    assert first == [(o, f"k{o}".encode(), f"m{o}".encode()) for o in (2, 3, 4, 5)]
    assert second == [(o, f"k{o}".encode(), f"m{o}".encode()) for o in (5, 6, 7, 8, 9)]
    assert [o for o, _, _ in replay] == [3, 4]  # read twice is no hole
    assert [o for o, _, _ in after_rebalance] == [2, 3]
