"""The commands' Kafka clients (kafka-python) against the embedded broker, and where Tansu
answers otherwise than Apache Kafka."""

from __future__ import annotations

import time

import orjson
import pytest
from kafka import TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.partitioner.default import murmur2

from pipeline.ingest.produce import produce
from pipeline.runtime.kafka import BrokerError, all_topics, ensure_topics, read_values, retention_ms
from pipeline.runtime.kafka_clients import admin, consumer, producer
from pipeline.settings import Settings

#: A topic's own retention as each broker describes it (DescribeConfigs, every config).
APACHE_KAFKA_ANSWER = {
    "topic": {
        "t": {
            "retention.ms": {"value": "3600000", "read_only": False, "config_source": "DYNAMIC_TOPIC_CONFIG"},
            "cleanup.policy": {"value": "delete", "read_only": False, "config_source": "DEFAULT_CONFIG"},
        }
    }
}
TANSU_ANSWER = {
    "topic": {"t": {"retention.ms": {"value": "3600000", "read_only": False, "config_source": "DEFAULT_CONFIG"}}}
}


@pytest.mark.parametrize("answer", [APACHE_KAFKA_ANSWER, TANSU_ANSWER], ids=["apache-kafka", "tansu"])
def test_a_topics_retention_is_read_whichever_source_the_broker_names(answer: dict) -> None:
    assert retention_ms(answer, "t") == 3_600_000
    assert retention_ms(answer, "other") is None


def test_an_unreachable_broker_is_one_line_naming_the_setting(unused_port: int) -> None:
    settings = Settings(broker_url=f"kafka://127.0.0.1:{unused_port}")
    for make in (admin, producer, consumer):
        with pytest.raises(BrokerError) as caught:
            make(settings, timeout=1.0)
        message = str(caught.value)
        assert message.startswith(
            f"cannot reach the broker at kafka://127.0.0.1:{unused_port} (TICKETPULSE_BROKER_URL): "
        )
        assert "\n" not in message and message.count("KafkaTimeoutError") == 1


@pytest.fixture
def unused_port() -> int:
    from pipeline.testbed.services import free_port

    return free_port()


@pytest.fixture
def settings(stack) -> Settings:
    settings = stack.settings
    ensure_topics(settings)
    return settings


@pytest.mark.integration
def test_tansu_describes_a_topics_own_retention_as_a_default(settings: Settings) -> None:
    """The texts-to-join topic is created with its retention; Tansu calls it DEFAULT_CONFIG,
    which kafka-python's default filter (modified only) would drop: asked for every config."""
    topic = f"{settings.app_id}-texts-to-join"
    client = admin(settings)
    try:
        resource = [ConfigResource(ConfigResourceType.TOPIC, topic)]
        everything = client.describe_configs(resource, config_filter="all")
    finally:
        client.close()
    assert retention_ms(everything, topic) == max((settings.label_horizon_hours + 24) * 3600 * 1000, 7 * 86400 * 1000)


@pytest.mark.integration
def test_produce_confirms_every_ticket_on_the_partition_of_its_key(settings: Settings) -> None:
    """Partitions chosen a chunk at once are the client's own (murmur2 of the ticket id)."""
    tickets = [
        {"id": f"T-{i}", "created_at": "2026-03-02T10:00:00Z", "customer_id": f"c{i % 7}", "subject": "s", "body": "b"}
        for i in range(5000)
    ]
    summary = produce(settings, [(n, orjson.dumps(t)) for n, t in enumerate(tickets, 1)], progress=False)
    assert (summary.sent, summary.rejected, summary.failed) == (5000, 0, 0)
    client = consumer(settings, topics=[settings.topic_tickets])
    seen: dict[bytes, int] = {}
    deadline = time.monotonic() + 30
    try:
        while len(seen) < 5000 and time.monotonic() < deadline:
            for records in client.poll(timeout_ms=500).values():
                seen.update((r.key, r.partition) for r in records)
    finally:
        client.close()
    assert len(seen) == 5000
    assert all(partition == (murmur2(key) & 0x7FFFFFFF) % settings.partitions for key, partition in seen.items())


@pytest.mark.integration
def test_a_message_too_large_to_send_is_counted_failed_and_the_rest_are_sent(settings: Settings) -> None:
    small = settings.model_copy(update={"max_ticket_bytes": 1000})  # requests of at most 1 MiB
    messages = [(1, b'{"id": "a"}'), (2, b'{"id": "b", "body": "' + b"x" * 2_000_000 + b'"}'), (3, b'{"id": "c"}')]
    summary = produce(small, messages, validate=False, progress=False)
    assert (summary.sent, summary.failed) == (2, 1)
    (reason,) = summary.reasons
    assert reason.startswith("line 2: not sent: MessageSizeTooLargeError")
    assert "failed=1" in summary.line()


@pytest.mark.integration
def test_read_values_reads_every_message_whatever_the_end_offsets_say(settings: Settings) -> None:
    """Tansu answers ListOffsets(latest) with the last record batch's base offset plus one
    (Apache Kafka: the offset after the last record), so a reader that stopped at the end
    offsets would miss batched messages on Tansu: read_values reads until the topic is quiet."""
    topic = settings.topic_alerts
    client = producer(settings)
    try:
        futures = [client.send(topic, b"%d" % i, key=b"k%d" % (i % 13)) for i in range(3000)]
        client.flush()
        last = {}
        for future in futures:
            meta = future.get()
            last[meta.partition] = max(last.get(meta.partition, -1), meta.offset)
    finally:
        client.close()
    reader = consumer(settings)
    try:
        ends = reader.end_offsets([TopicPartition(topic, p) for p in range(settings.partitions)])
    finally:
        reader.close()
    # Apache Kafka: equal; Tansu: fewer
    assert sum(ends.values()) <= sum(offset + 1 for offset in last.values()) == 3000
    assert sorted(int(v) for v in read_values(settings, topic, quiet_seconds=2.0)) == list(range(3000))


@pytest.mark.integration
def test_a_producer_keeps_the_metadata_of_its_own_topics_only(settings: Settings) -> None:
    """Tansu answers kafka-python's first Metadata request (no topics named) with every
    topic; Apache Kafka with none. A producer told its topics holds theirs alone: each
    send goes over the topics the producer holds."""
    for_tickets = producer(settings, topics=[settings.topic_tickets])
    unrestricted = producer(settings)
    try:
        deadline = time.monotonic() + 10
        while for_tickets._metadata.topics() != {settings.topic_tickets} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert for_tickets._metadata.topics() == {settings.topic_tickets}
        # Tansu's answer (Apache Kafka's would be none): if this fails, Tansu answers as
        # Apache Kafka does now and kafka_clients._keep_metadata_of may go
        assert set(all_topics(settings)) <= unrestricted._metadata.topics()
    finally:
        for_tickets.close()
        unrestricted.close()
