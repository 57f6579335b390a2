"""Topic creation and broker checks, and the readers of the commands outside the worker.

Topics are created explicitly, with the configured partition count: a topic that a
producer creates by writing to it gets the broker's default (4 on Tansu), and Faust
stops with PartitionsMismatch when that differs from what it expects.

Everything here but :func:`broker_reachable` is synchronous, on kafka-python
(:mod:`pipeline.runtime.kafka_clients`); :func:`broker_reachable` is the worker's
health check, awaited in the worker's own event loop, and stays on aiokafka.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.partitioner.default import murmur2

from pipeline.runtime import kafka_clients
from pipeline.runtime.kafka_clients import BrokerError
from pipeline.settings import Settings
from pipeline.topology import training_topic

__all__ = [
    "BrokerError",
    "all_topics",
    "broker_reachable",
    "ensure_topics",
    "kafka_partitions",
    "read_values",
    "retention_ms",
    "topic_configs",
]

logger = logging.getLogger(__name__)

#: Apache Kafka's default retention (``log.retention.hours=168``), in milliseconds.
KAFKA_DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000


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
        training_topic(settings)[0],
        f"{settings.app_id}-pattern-tickets",
        f"{settings.app_id}-ticket-patterns",
        f"{settings.app_id}-texts-to-join",
    ]


def _partitions_of(settings: Settings, topic: str) -> int:
    """The partitions ``topic`` is created with: ``TICKETPULSE_PARTITIONS``, but the training topic's own."""
    training, partitions = training_topic(settings)
    return partitions if topic == training else settings.partitions


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


def ensure_topics(settings: Settings, timeout: float = 15.0) -> None:
    """Create missing topics; raise :class:`BrokerError` naming the setting at fault."""
    client = kafka_clients.admin(settings, timeout)
    try:
        with kafka_clients.quiet_client_logs():
            _ensure_topics(client, settings, timeout)
    except KafkaError as exc:
        raise BrokerError(
            f"the broker at {settings.broker_url} (TICKETPULSE_BROKER_URL) refused to create or describe "
            f"the app's topics: {kafka_clients.error_text(exc)}"
        ) from None
    finally:
        client.close()


def _ensure_topics(client: KafkaAdminClient, settings: Settings, timeout: float) -> None:
    existing = set(client.list_topics())
    wanted = [t for t in all_topics(settings) if t not in existing]
    if wanted:
        new = {
            name: {
                "num_partitions": _partitions_of(settings, name),
                "replication_factor": 1,
                "configs": topic_configs(settings, name),
            }
            for name in wanted
        }
        try:
            client.create_topics(new, timeout_ms=int(timeout * 1000))
        except TopicAlreadyExistsError:  # another worker was quicker
            pass
    _keep_long_enough(client, settings, [t for t in all_topics(settings) if t in existing])
    training, training_partitions = training_topic(settings)
    for topic in client.describe_topics(all_topics(settings)):
        count = len(topic.get("partitions") or [])
        if count and topic["name"] == training and count != training_partitions:
            raise BrokerError(
                f"topic {training!r} has {count} partitions, but the linear tagger (TICKETPULSE_TAGGER=linear) "
                f"learns its labels in one order, from one partition: delete the topic for the worker to create "
                "it again (the tagger then learns anew, or from TICKETPULSE_TAGGER_MODEL)"
            )
        if count and topic["name"] != training and count != settings.partitions:
            raise BrokerError(
                f"topic {topic['name']!r} has {count} partitions but TICKETPULSE_PARTITIONS is "
                f"{settings.partitions}: set it to {count}, or recreate the topic"
            )


def retention_ms(described: Mapping[str, Any], topic: str) -> int | None:
    """A topic's ``retention.ms`` from kafka-python's ``describe_configs`` answer (``None``: not given).

    Asked with ``config_filter="all"``: Apache Kafka marks a topic's own setting
    ``DYNAMIC_TOPIC_CONFIG``, but Tansu marks every value ``DEFAULT_CONFIG``, which the
    client's default filter (modified values only) drops. The value is the one in force
    either way.

    >>> retention_ms({"topic": {"t": {"retention.ms": {"value": "3600000"}}}}, "t")
    3600000
    >>> retention_ms({"topic": {"t": {}}}, "t") is None
    True
    """
    entry = described.get("topic", {}).get(topic, {}).get("retention.ms")
    value = entry.get("value") if isinstance(entry, Mapping) else None
    return int(value) if value not in (None, "") else None


def _keep_long_enough(client: KafkaAdminClient, settings: Settings, existing: list[str]) -> None:
    """Warn about an existing topic that keeps messages for less than :func:`topic_configs`
    wants (one created by an earlier version, or before the horizon was raised): the
    worker runs on, and says what to change. Not altered here: retention is the broker
    owner's call (Tansu answers AlterConfigs, but a production cluster's policy may not
    let the app change it)."""
    topics = [t for t in existing if "retention.ms" in topic_configs(settings, t)]
    if not topics:
        return
    # every config of each topic: Tansu drops the connection when asked for named keys only
    described = client.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics], config_filter="all"
    )
    for topic in topics:
        current = retention_ms(described, topic)
        wanted = topic_configs(settings, topic)["retention.ms"]
        if current is None or current < 0 or current >= int(wanted):
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
    """The broker's topics, asked for real; raises when it does not answer in ``timeout``.

    The worker's health check (``/health``), awaited in the worker's event loop: aiokafka,
    as the rest of the worker (imported here: the commands need not load it).
    """
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        return list(await asyncio.wait_for(admin.list_topics(), timeout))
    finally:
        await admin.close()


def read_values(settings: Settings, topic: str, quiet_seconds: float = 3.0) -> Iterator[bytes]:
    """Every message value of ``topic``, from the start of each partition, until it has
    been quiet for ``quiet_seconds``.

    Read until quiet, not counted from end offsets: Tansu answers ListOffsets(latest)
    with the base offset of the last record batch plus one, which undercounts batched
    messages (tests/test_kafka_clients.py shows it).
    """
    consumer = kafka_clients.consumer(settings, max_poll_records=5000)
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(settings.partitions)])
        last_news = time.monotonic()
        while time.monotonic() - last_news < quiet_seconds:
            batch = consumer.poll(timeout_ms=min(500, int(quiet_seconds * 1000)))
            for records in batch.values():
                last_news = time.monotonic()
                for record in records:
                    if record.value is not None:
                        yield record.value
    finally:
        # closing cancels the metadata refresh in flight, which kafka-python logs as an error
        # ("Metadata refresh: failed Cancelled") on every read of the demo's progress
        with kafka_clients.quiet_client_logs():
            consumer.close()


_M = np.uint32(0x5BD1E995)
#: keys longer than this (bytes) are hashed one by one (:func:`kafka_partitions`)
_LONGEST_IN_COLUMNS = 256


def kafka_partitions(keys: Sequence[bytes], partitions: int) -> list[int]:
    """Kafka's default partition of each key (``murmur2(key) & 0x7fffffff % partitions``), for a batch at once.

    The same numbers as the Java client's, aiokafka's and kafka-python's partitioners,
    which are pure Python: a few microseconds a key, and the worker chose three partitions a ticket
    (its customer's, its id's for the label join, and the producer's for
    ``tickets-classified``). Here the hash runs over the batch's keys as columns of
    32-bit words, one numpy step per word (tested against aiokafka's and kafka-python's ``murmur2``).

    >>> from kafka.partitioner.default import murmur2
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
