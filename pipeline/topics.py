"""Topic creation and broker checks.

Topics are created explicitly, with the configured partition count: a topic that a
producer creates by writing to it gets the broker's default (4 on Tansu), and Faust
stops with PartitionsMismatch when that differs from what it expects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from .settings import Settings

__all__ = ["BrokerError", "all_topics", "broker_reachable", "ensure_topics", "read_values"]


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
