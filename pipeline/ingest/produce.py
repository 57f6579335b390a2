"""Sending tickets to Kafka: from JSONL or CSV files, or from the generator."""

from __future__ import annotations

import asyncio
import csv
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from tqdm import tqdm

from pipeline.ingest.schema import TicketError, parse_ticket
from pipeline.settings import Settings

__all__ = ["ProduceSummary", "produce", "read_tickets"]


@dataclass
class ProduceSummary:
    """What ``ticketpulse produce`` did."""

    sent: int = 0
    rejected: int = 0
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return f"sent={self.sent} rejected={self.rejected} seconds={self.seconds:.2f} rate={self.rate:.0f}/s"


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


async def produce(
    settings: Settings,
    messages: Iterable[tuple[int, bytes]],
    total: int | None = None,
    validate: bool = True,
    progress: bool = True,
) -> ProduceSummary:
    """Send ``(line, raw)`` messages keyed by ticket id; invalid ones are reported, not sent."""
    summary = ProduceSummary()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        linger_ms=20,
        max_batch_size=512 * 1024,
        max_request_size=max(1_048_576, settings.max_ticket_bytes * 2),
        acks="all",
    )
    await producer.start()
    started = time.perf_counter()
    bar = tqdm(total=total, unit="ticket", disable=not progress, file=sys.stderr, mininterval=0.5)
    pending: list[asyncio.Future[object]] = []
    try:
        for line, raw in messages:
            if validate:
                try:
                    key: bytes | None = parse_ticket(raw, settings.max_ticket_bytes).id.encode()
                except TicketError as exc:
                    summary.rejected += 1
                    summary.reasons.append(f"line {line}: {exc}")
                    continue
            else:
                key = _id_key(raw)
            pending.append(await producer.send(settings.topic_tickets, raw, key=key))
            summary.sent += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                bar.update(len(pending))
                pending.clear()
        await asyncio.gather(*pending)
        bar.update(len(pending))
    finally:
        bar.close()
        await producer.stop()
    summary.seconds = time.perf_counter() - started
    return summary
