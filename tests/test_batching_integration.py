"""A batch agent's stage gets every message, even one Faust acknowledged without handing it over."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaProducer

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
        guard = SkippedMessages(servers, "test")
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
