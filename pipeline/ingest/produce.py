"""Sending tickets to Kafka: from JSONL or CSV files, or from the generator."""

from __future__ import annotations

import csv
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata
from tqdm import tqdm

from pipeline.ingest.schema import TicketError, parse_ticket
from pipeline.runtime import kafka_clients
from pipeline.runtime.kafka import kafka_partitions
from pipeline.runtime.kafka_clients import BrokerError
from pipeline.settings import Settings

__all__ = ["ProduceSummary", "produce", "read_tickets"]


@dataclass
class ProduceSummary:
    """What ``ticketpulse produce`` did."""

    sent: int = 0
    rejected: int = 0
    #: valid tickets the broker did not take (too large for it, or not confirmed in time)
    failed: int = 0
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        failed = f" failed={self.failed}" if self.failed else ""
        return f"sent={self.sent} rejected={self.rejected}{failed} seconds={self.seconds:.2f} rate={self.rate:.0f}/s"


def read_tickets(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw JSON)`` for each ticket of a JSONL or CSV file (by its suffix)."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            for n, row in enumerate(csv.DictReader(fh), start=2):
                doc = {k: v for k, v in row.items() if k and v not in (None, "")}
                yield n, orjson.dumps(doc)
    else:
        with path.open("rb") as fh:
            for n, line in enumerate(fh, start=1):
                if line.strip():
                    yield n, line.rstrip(b"\r\n")


def _id_key(raw: bytes) -> bytes | None:
    """The ticket id of ``raw`` as a message key, if it has one (broken input is sent keyless)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    ticket_id = doc.get("id") if isinstance(doc, dict) else None
    return str(ticket_id).encode() if isinstance(ticket_id, str | int) and not isinstance(ticket_id, bool) else None


#: Tickets validated, partitioned and handed to the producer at a time.
CHUNK = 2000
#: Sent but not yet confirmed tickets at most: kafka-python's producer buffers without
#: bound, so a large file waits for the broker here.
MAX_UNCONFIRMED = 50_000


def produce(
    settings: Settings,
    messages: Iterable[tuple[int, bytes]],
    total: int | None = None,
    validate: bool = True,
    progress: bool = True,
    compression_type: str | None = None,
) -> ProduceSummary:
    """Send ``(line, raw)`` messages keyed by ticket id; invalid ones are reported, not sent.

    A ticket counts as sent once the broker has confirmed it (every replica); one the
    broker refuses is counted in ``failed``, with the broker's reason. Raises
    :class:`BrokerError` when the broker cannot be reached.
    """
    summary = ProduceSummary()
    client = kafka_clients.producer(settings, compression_type=compression_type, topics=[settings.topic_tickets])
    started = time.perf_counter()
    bar = tqdm(total=total, unit="ticket", disable=not progress, file=sys.stderr, mininterval=0.5)
    unconfirmed: deque[tuple[int, FutureRecordMetadata]] = deque()
    try:
        # the partition of each key, as the client's partitioner would choose it, for a
        # chunk at once (kafka_partitions): the client's own murmur2 is pure Python
        try:
            partitions = len(client.partitions_for(settings.topic_tickets))
        except KafkaError as exc:
            raise BrokerError(
                f"the broker at {settings.broker_url} (TICKETPULSE_BROKER_URL) did not say which partitions "
                f"{settings.topic_tickets!r} has: {kafka_clients.error_text(exc)}"
            ) from None
        for chunk in _chunks(messages, CHUNK):
            keyed = _keyed(chunk, settings, validate, summary)
            keys = [key for _, key, _ in keyed if key is not None]
            chosen = iter(kafka_partitions(keys, partitions))
            for line, key, raw in keyed:
                partition = next(chosen) if key is not None else None
                try:
                    unconfirmed.append((line, client.send(settings.topic_tickets, raw, key=key, partition=partition)))
                except KafkaError as exc:  # refused before it left, e.g. larger than a request may be
                    summary.failed += 1
                    summary.reasons.append(f"line {line}: not sent: {kafka_clients.error_text(exc)}")
            _count_confirmed(unconfirmed, summary, bar, keep=MAX_UNCONFIRMED)
        client.flush()
        _count_confirmed(unconfirmed, summary, bar, keep=0)
    finally:
        bar.close()
        client.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _chunks(messages: Iterable[tuple[int, bytes]], size: int) -> Iterator[list[tuple[int, bytes]]]:
    it = iter(messages)
    while chunk := list(islice(it, size)):
        yield chunk


def _keyed(
    chunk: list[tuple[int, bytes]], settings: Settings, validate: bool, summary: ProduceSummary
) -> list[tuple[int, bytes | None, bytes]]:
    """``(line, key, raw)`` of the chunk's messages to send; the invalid ones go to the summary."""
    out: list[tuple[int, bytes | None, bytes]] = []
    for line, raw in chunk:
        if validate:
            try:
                key: bytes | None = parse_ticket(raw, settings.max_ticket_bytes).id.encode()
            except TicketError as exc:
                summary.rejected += 1
                summary.reasons.append(f"line {line}: {exc}")
                continue
        else:
            key = _id_key(raw)
        out.append((line, key, raw))
    return out


def _count_confirmed(
    unconfirmed: deque[tuple[int, FutureRecordMetadata]], summary: ProduceSummary, bar: tqdm[Any], keep: int
) -> None:
    """Count the tickets the broker has answered about, oldest first, waiting for an
    answer while more than ``keep`` are left unanswered."""
    confirmed = 0
    while unconfirmed:
        line, future = unconfirmed[0]
        if not future.is_done:
            if len(unconfirmed) <= keep:
                break
            try:
                future.get()
            except KafkaError:
                pass  # read below, as for a future already answered
        unconfirmed.popleft()
        if future.exception is None:
            confirmed += 1
        else:
            summary.failed += 1
            summary.reasons.append(
                f"line {line}: not confirmed by the broker: {kafka_clients.error_text(future.exception)}"
            )
    summary.sent += confirmed
    bar.update(confirmed)
