"""Topic creation and broker checks.

Topics are created explicitly, with the configured partition count: a topic that a
producer creates by writing to it gets the broker's default (4 on Tansu), and Faust
stops with PartitionsMismatch when that differs from what it expects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from .settings import Settings

__all__ = ["BrokerError", "all_topics", "broker_reachable", "ensure_topics", "kafka_partitions", "read_values"]


class BrokerError(RuntimeError):
    """The broker cannot be reached, or a topic does not fit the settings."""


def all_topics(settings: Settings) -> list[str]:
    """Every topic the app reads or writes, its internal ones included."""
    return [
        settings.topic_tickets,
        settings.topic_labels,
        settings.topic_classified,
        settings.topic_alerts,
        settings.topic_product_events,
        settings.topic_dead_letter,
        f"{settings.app_id}-tickets-by-customer",
        f"{settings.app_id}-volume-partials",
        f"{settings.app_id}-area-volumes",
        f"{settings.app_id}-tagger-training",
        f"{settings.app_id}-pattern-tickets",
        f"{settings.app_id}-ticket-patterns",
        f"{settings.app_id}-texts-to-join",
    ]


async def ensure_topics(settings: Settings, timeout: float = 15.0) -> None:
    """Create missing topics; raise :class:`BrokerError` naming the setting at fault."""
    # aiokafka logs every failed connection attempt; the one line we raise says it all.
    kafka_log = logging.getLogger("aiokafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        await _ensure_topics(settings, timeout)
    finally:
        kafka_log.setLevel(level)


async def _ensure_topics(settings: Settings, timeout: float) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
    except (KafkaError, OSError, TimeoutError) as exc:
        await admin.close()
        raise BrokerError(
            f"cannot reach the broker at {settings.broker_url} (TICKETPULSE_BROKER_URL): {type(exc).__name__}: {exc}"
        ) from None
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in all_topics(settings) if t not in existing]
        if wanted:
            try:
                await admin.create_topics(
                    [NewTopic(name, settings.partitions, 1) for name in wanted], timeout_ms=int(timeout * 1000)
                )
            except TopicAlreadyExistsError:  # another worker was quicker
                pass
        described = await admin.describe_topics(all_topics(settings))
        for topic in described:
            count = len(topic.get("partitions", []))
            if count and count != settings.partitions:
                raise BrokerError(
                    f"topic {topic['topic']!r} has {count} partitions but TICKETPULSE_PARTITIONS is "
                    f"{settings.partitions}: set it to {count}, or recreate the topic"
                )
    finally:
        await admin.close()


async def broker_reachable(settings: Settings, timeout: float = 5.0) -> list[str]:
    """The broker's topics, asked for real; raises when it does not answer in ``timeout``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        return list(await asyncio.wait_for(admin.list_topics(), timeout))
    finally:
        await admin.close()


async def read_values(settings: Settings, topic: str, quiet_seconds: float = 3.0) -> AsyncIterator[bytes]:
    """Every message value of ``topic``, from the start of each partition, until it has
    been quiet for ``quiet_seconds``.

    Read until quiet, not counted from end offsets: Tansu answers ListOffsets(latest)
    with the base offset of the last record batch plus one, which undercounts batched
    messages (../shared/architecture.md).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(settings.partitions)])
        last_news = time.monotonic()
        while time.monotonic() - last_news < quiet_seconds:
            batch = await consumer.getmany(timeout_ms=min(500, int(quiet_seconds * 1000)), max_records=5000)
            for records in batch.values():
                last_news = time.monotonic()
                for record in records:
                    if record.value is not None:
                        yield record.value
    finally:
        await consumer.stop()


_M = np.uint32(0x5BD1E995)
#: keys longer than this (bytes) are hashed one by one (:func:`kafka_partitions`)
_LONGEST_IN_COLUMNS = 256


def kafka_partitions(keys: Sequence[bytes], partitions: int) -> list[int]:
    """Kafka's default partition of each key (``murmur2(key) & 0x7fffffff % partitions``), for a batch at once.

    The same numbers as the Java client's and aiokafka's partitioner, which is pure
    Python: a few microseconds a key, and the worker chose three partitions a ticket
    (its customer's, its id's for the label join, and the producer's for
    ``tickets-classified``). Here the hash runs over the batch's keys as columns of
    32-bit words, one numpy step per word (tested against aiokafka's ``murmur2``).

    >>> from aiokafka.partitioner import murmur2
    >>> kafka_partitions([b"T-1", b"customer-42", b""], 12)
    [8, 9, 9]
    >>> [(murmur2(k) & 0x7FFFFFFF) % 12 for k in [b"T-1", b"customer-42", b""]]
    [8, 9, 9]
    """
    if not keys:
        return []
    long = [i for i, k in enumerate(keys) if len(k) > _LONGEST_IN_COLUMNS]
    if long:
        # every key is padded to the longest: one very long id (nothing bounds an id but
        # the ticket's size) would make a matrix of the batch times it, so long keys go
        # one by one through the client's own murmur2
        out = kafka_partitions([k for k in keys if len(k) <= _LONGEST_IN_COLUMNS], partitions)
        for i in long:
            out.insert(i, (murmur2(keys[i]) & 0x7FFFFFFF) % partitions)
        return out
    n = len(keys)
    lengths = np.fromiter((len(k) for k in keys), dtype=np.int64, count=n)
    # room for every key's words and one more (the tail's, zero-padded)
    width = (int(lengths.max()) // 4 + 1) * 4
    padded = b"".join(k.ljust(width, b"\0") for k in keys)
    words = np.frombuffer(padded, dtype="<u4").reshape(n, width // 4)
    whole = lengths // 4
    h = np.uint32(0x9747B28C) ^ lengths.astype(np.uint32)
    for j in range(int(whole.max())):
        k = words[:, j] * _M
        k ^= k >> np.uint32(24)
        k *= _M
        mixed = (h * _M) ^ k
        h = np.where(j < whole, mixed, h)
    # the last 1 to 3 bytes: the padded word holding them is their little-endian value
    tail = words[np.arange(n), whole]
    h = np.where(lengths % 4 > 0, (h ^ tail) * _M, h)
    h ^= h >> np.uint32(13)
    h *= _M
    h ^= h >> np.uint32(15)
    return ((h & np.uint32(0x7FFFFFFF)) % np.uint32(partitions)).tolist()
