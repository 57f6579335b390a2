"""Consumers in no group: for the topics every worker reads whole, or reads back at given offsets."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.settings import Settings

__all__ = ["groupless_consumer", "read_every_partition", "read_partitions"]


async def groupless_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A started consumer in no group (it is given its partitions), from the start of each."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    return consumer


async def read_every_partition(settings: Settings, topic: str, positions: dict[int, int]) -> AIOKafkaConsumer:
    """A started consumer of every partition of ``topic`` (no group: every worker reads all),
    at the checkpointed ``positions``, else at the beginning."""
    consumer = await groupless_consumer(settings)
    await read_partitions(consumer, topic, set(range(settings.partitions)), positions)
    return consumer


async def read_partitions(
    consumer: AIOKafkaConsumer, topic: str, partitions: set[int], positions: dict[int, int]
) -> None:
    """Point ``consumer`` at ``partitions`` of ``topic`` (and no others): each at its position
    in ``positions`` (the next offset to read), else at the beginning."""
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    for tp in tps:
        if tp.partition in positions:
            consumer.seek(tp, positions[tp.partition])
        else:
            await consumer.seek_to_beginning(tp)
