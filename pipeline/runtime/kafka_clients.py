"""The Kafka clients of the synchronous commands (kafka-python), configured in one place.

``produce``, ``import``, ``report``, the demo, the topic checks and the benchmarks talk
to Kafka through these three functions, so that the broker's address, the timeouts and
the producer's batching are set once. The worker does not: it runs on Faust, and Faust
on aiokafka (:mod:`pipeline.worker`).

What kafka-python needed to work with Tansu, the broker of the tests and the demo, and
to keep ``produce`` as fast as it was with aiokafka (docs/benchmarks.md):

- API versions: kafka-python asks the broker (ApiVersions) and Tansu's answer makes it
  speak Kafka 3.9's versions; nothing is pinned here.
- The idempotent producer (kafka-python's default) works on Tansu: InitProducerId without
  a transactional id is answered, only transactions are not.
- CRC-32C: every record batch is checksummed when it is built and when it is read; with
  kafka-python alone that is pure Python (5,000 SUMO tickets/s sent); the ``crc32c``
  package, a dependency of ticketpulse, makes it C (about 30,000/s).
- Tansu answers a Metadata request that names no topics (kafka-python's first) with
  every topic on the broker, Apache Kafka with none; a producer is told which topics it
  writes, and keeps only theirs (:func:`_keep_metadata_of`).
- ListOffsets(latest) on Tansu is the last record batch's base offset plus one, fewer
  than the messages when batches hold several: readers read until quiet
  (:func:`pipeline.runtime.kafka.read_values`), and the worker's tables end each batch's
  changelog records with one sent alone (:class:`pipeline.runtime.tables.DurableTable`).
- DescribeConfigs on Tansu gives a topic's own settings as ``DEFAULT_CONFIG`` (Apache
  Kafka: ``DYNAMIC_TOPIC_CONFIG``), and drops the connection when asked for named keys:
  every config is asked for (:func:`pipeline.runtime.kafka.retention_ms`).
- The producer's metrics (a sensor update a record) are turned off: nothing reads them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from pipeline.settings import Settings

__all__ = [
    "PRODUCER_BATCH_BYTES",
    "PRODUCER_LINGER_MS",
    "BrokerError",
    "admin",
    "consumer",
    "error_text",
    "producer",
    "quiet_client_logs",
]

#: How long the producer waits for a batch to fill, and how large a batch (per
#: partition) grows: large batches are what makes a file of tickets fast to send.
PRODUCER_LINGER_MS = 20
PRODUCER_BATCH_BYTES = 512 * 1024
#: Connecting and each request give up after this long, unless a command says otherwise.
DEFAULT_TIMEOUT_S = 15.0


class BrokerError(RuntimeError):
    """The broker cannot be reached, or a topic does not fit the settings."""


def error_text(exc: BaseException) -> str:
    """``Name: message`` of an error, once (kafka-python's messages begin with their class's name)."""
    name, text = type(exc).__name__, str(exc)
    return text if text.startswith(name) else f"{name}: {text}"


def _unreachable(settings: Settings, exc: BaseException) -> BrokerError:
    return BrokerError(f"cannot reach the broker at {settings.broker_url} (TICKETPULSE_BROKER_URL): {error_text(exc)}")


@contextmanager
def quiet_client_logs() -> Iterator[None]:
    """kafka-python logs every failed connection attempt; the one :class:`BrokerError` says it all."""
    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        kafka_log.setLevel(level)


def _common(settings: Settings, timeout: float) -> dict[str, Any]:
    """The configuration every client shares: where the broker is, how long to wait for it."""
    ms = int(timeout * 1000)
    return {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "client_id": f"{settings.app_id}-tools",
        "request_timeout_ms": ms,
        "bootstrap_timeout_ms": ms,
    }


def admin(settings: Settings, timeout: float = DEFAULT_TIMEOUT_S) -> KafkaAdminClient:
    """A connected admin client; :class:`BrokerError` when the broker does not answer in ``timeout``."""
    try:
        with quiet_client_logs():
            return KafkaAdminClient(**_common(settings, timeout))
    except (KafkaError, OSError) as exc:
        raise _unreachable(settings, exc) from None


def producer(
    settings: Settings,
    timeout: float = DEFAULT_TIMEOUT_S,
    compression_type: str | None = None,
    topics: Sequence[str] = (),
) -> KafkaProducer:
    """A connected producer for tickets: acknowledged by every replica, idempotent, batched.

    ``compression_type``: none by default; lz4 and gzip cost more CPU per ticket than they
    save on a local broker (docs/benchmarks.md). ``topics``: the topics it will write,
    the only ones whose metadata it keeps (:func:`_keep_metadata_of`).
    """
    try:
        with quiet_client_logs():
            client = KafkaProducer(
                **_common(settings, timeout),
                acks="all",
                linger_ms=PRODUCER_LINGER_MS,
                batch_size=PRODUCER_BATCH_BYTES,
                max_request_size=max(1_048_576, settings.max_ticket_bytes * 2),
                compression_type=compression_type,
                metrics_enabled=False,
            )
    except (KafkaError, OSError) as exc:
        raise _unreachable(settings, exc) from None
    if topics:
        _keep_metadata_of(client, topics)
    return client


def _keep_metadata_of(client: KafkaProducer, topics: Sequence[str]) -> None:
    """Make the producer keep the metadata of ``topics`` only.

    kafka-python's first Metadata request names no topics: Apache Kafka answers with
    none, Tansu with every topic on the broker. The producer then holds them all, and
    its ``send`` makes a set of every topic it holds for each message: on a test broker
    with 500 topics that was about half of a ticket's cost. Asking for the producer's
    own topics replaces them; on Apache Kafka nothing changes. (kafka-python has no
    public call for it: the producer's metadata and sender, of the pinned version.)
    """
    metadata, sender = getattr(client, "_metadata", None), getattr(client, "_sender", None)
    if metadata is None or sender is None or metadata.topics() <= set(topics):
        return
    # not waited for: the first messages are sent while the answer comes back (the
    # client asks at most every retry_backoff_ms, 100 ms)
    metadata.set_topics(list(topics))
    sender.wakeup()


def consumer(settings: Settings, timeout: float = DEFAULT_TIMEOUT_S, **overrides: Any) -> KafkaConsumer:
    """A connected consumer outside any group, reading from the start, committing nothing.

    ``overrides``: further KafkaConsumer settings (``max_poll_records``, a ``group_id``).
    Partitions are assigned by the caller (``assign``), or subscribed by passing topics
    with ``topics=[...]``.
    """
    topics = overrides.pop("topics", ())
    config = {
        **_common(settings, timeout),
        "group_id": None,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "metrics_enabled": False,
        **overrides,
    }
    try:
        with quiet_client_logs():
            return KafkaConsumer(*topics, **config)
    except (KafkaError, OSError) as exc:
        raise _unreachable(settings, exc) from None
