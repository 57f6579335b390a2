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
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from pipeline.settings import Settings

__all__ = [
    "BrokerError",
    "all_topics",
    "broker_reachable",
    "ensure_topics",
    "kafka_partitions",
    "read_values",
    "topic_configs",
]

logger = logging.getLogger(__name__)

#: Apache Kafka's default retention (``log.retention.hours=168``), in milliseconds.
KAFKA_DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000


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


def topic_configs(settings: Settings, topic: str) -> dict[str, str]:
    """The configs a topic is created with, beyond the broker's defaults.

    ``<app>-texts-to-join`` is where the label join finds its kept texts again after a
    restart (:mod:`pipeline.tagging.labels`): it must keep them for the whole label horizon, and a
    day more for a worker that is down a while; never less than Kafka's default week.
    """
    if topic == f"{settings.app_id}-texts-to-join":
        horizon_ms = int((settings.label_horizon_hours + 24) * 3600 * 1000)
        return {"retention.ms": str(max(horizon_ms, KAFKA_DEFAULT_RETENTION_MS))}
    return {}


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
                    [
                        NewTopic(name, settings.partitions, 1, topic_configs=topic_configs(settings, name))
                        for name in wanted
                    ],
                    timeout_ms=int(timeout * 1000),
                )
            except TopicAlreadyExistsError:  # another worker was quicker
                pass
        await _keep_long_enough(admin, settings, [t for t in all_topics(settings) if t in existing])
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


async def _keep_long_enough(admin: AIOKafkaAdminClient, settings: Settings, existing: list[str]) -> None:
    """Warn about an existing topic that keeps messages for less than :func:`topic_configs`
    wants (one created by an earlier version, or before the horizon was raised): the
    worker runs on, and says what to change. Not altered here: Tansu, the broker of the
    tests, does not answer AlterConfigs, and retention is the broker owner's call."""
    topics = [t for t in existing if "retention.ms" in topic_configs(settings, t)]
    if not topics:
        return
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    for response in responses:
        for resource in response.resources:
            topic, entries = resource[3], resource[4]
            current = {entry[0]: entry[1] for entry in entries}.get("retention.ms")
            wanted = topic_configs(settings, topic)["retention.ms"]
            if current is None or int(current) < 0 or int(current) >= int(wanted):
                continue  # the broker's default, unlimited, or long enough
            logger.warning(
                "topic=%s retention_ms=%s wanted=%s reason=%s fix=%s",
                topic,
                current,
                wanted,
                "under TICKETPULSE_LABEL_HORIZON_HOURS and a day: texts kept longer are lost when a worker restarts",
                f"kafka-configs --alter --entity-type topics --entity-name {topic} --add-config retention.ms={wanted}",
            )


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
