"""HTTP ingest: helpdesk webhooks in, tickets on Kafka out.

``POST /webhooks/{source}`` (``zendesk``, ``freshdesk``, ``intercom``, ``helpscout`` or
``ticketpulse`` for the project's own JSON). Answers: 202 once Kafka has the ticket;
200 for a delivery already taken (a helpdesk's redelivery or a replay: the same event
id, nothing produced again); 401 when the signature or token is wrong, or Zendesk's
signed timestamp is older or newer than ``TICKETPULSE_WEBHOOK_TOLERANCE_SECONDS``
(nothing is produced); 404 for a source that is not configured; 413 for a body over
the limit; 415 for a body that is not JSON; 400 for JSON that does not parse; 422 for a
payload that is not a valid ticket, with the reason the worker would dead-letter it for
(the same :func:`~pipeline.ingest.schema.parse_ticket`, with the same clock limit
``TICKETPULSE_MAX_FUTURE_HOURS``): a helpdesk retries a 5xx for days, and a ticket it
is told was taken must be counted; 503 only when the broker does not take the ticket
in time, so that the helpdesk retries. No request answers 500.

Replays: see :mod:`pipeline.ingest.helpdesks` (what each helpdesk signs, and what a
user should do where it signs no time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.ingest.helpdesks import (
    AdapterError,
    RecentDeliveries,
    adapt,
    delivery_id,
    stale_signature,
    verify,
)
from pipeline.ingest.schema import TicketError, parse_ticket

__all__ = ["Answer", "WebhookIngest"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]


class WebhookIngest:
    """Checks, adapts and produces one webhook request; no web framework in here.

    Parameters
    ----------
    secrets
        Per source, the signing secret or bearer token; a source without one is refused.
    send
        ``send(key, value)`` produces to the tickets topic and returns once the broker
        has acknowledged it.
    max_bytes
        ``TICKETPULSE_MAX_TICKET_BYTES``.
    send_timeout
        Seconds the broker has to take a ticket before the answer is 503.
    max_future_hours
        ``TICKETPULSE_MAX_FUTURE_HOURS``: a ticket dated further ahead of ``clock()`` is
        refused (422), as the worker would dead-letter it.
    tolerance_seconds
        ``TICKETPULSE_WEBHOOK_TOLERANCE_SECONDS``: the most a signed timestamp may be
        behind or ahead of ``clock()`` (401 otherwise).
    clock
        Seconds since the epoch (``time.time``; tests give a fixed one).
    recent_deliveries
        How many delivery ids (:func:`~pipeline.ingest.helpdesks.delivery_id`) are kept
        per source to take each delivery once.
    """

    def __init__(
        self,
        secrets: Mapping[str, str],
        send: Callable[[bytes, bytes], Awaitable[Any]],
        max_bytes: int = 1_000_000,
        send_timeout: float = 10.0,
        max_future_hours: float = 24.0,
        tolerance_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
        recent_deliveries: int = 10_000,
    ) -> None:
        self._secrets = dict(secrets)
        self._send = send
        self.max_bytes = max_bytes
        self.send_timeout = send_timeout
        self.max_future_hours = max_future_hours
        self.tolerance_seconds = tolerance_seconds
        self._clock = clock
        self._recent = {source: RecentDeliveries(recent_deliveries) for source in self._secrets}
        self.accepted = 0
        self.refused = 0
        self.duplicates = 0

    async def handle(
        self, source: str, body: bytes, headers: Mapping[str, str], content_type: str, content_length: int | None
    ) -> Answer:
        try:
            answer = await self._handle(source, body, headers, content_type, content_length)
        except Exception as exc:  # a defect: the helpdesk gets a reason, not a 500 to retry for days
            logger.exception("ingest source=%s unexpected error", source)
            answer = Answer(422, {"error": f"payload not understood: {type(exc).__name__}"})
        if answer.status == 202:
            self.accepted += 1
        elif answer.status == 200:
            self.duplicates += 1
        else:
            self.refused += 1
            logger.warning("ingest source=%s status=%d reason=%s", source, answer.status, answer.body.get("error"))
        return answer

    async def _handle(
        self, source: str, body: bytes, headers: Mapping[str, str], content_type: str, content_length: int | None
    ) -> Answer:
        secret = self._secrets.get(source)
        if not secret:
            return Answer(404, {"error": f"webhook source {source!r} is not configured"})
        if (content_length or len(body)) > self.max_bytes:
            return Answer(413, {"error": f"body over the limit of {self.max_bytes} bytes"})
        if content_type.split(";")[0].strip().lower() != "application/json":
            return Answer(415, {"error": f"content type must be application/json, got {content_type!r}"})
        if not verify(source, secret, body, headers):
            return Answer(401, {"error": "signature or token does not match"})
        now = self._clock()
        stale = stale_signature(source, headers, now, self.tolerance_seconds)
        if stale:
            return Answer(401, {"error": stale})
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return Answer(400, {"error": f"not valid JSON: {exc}"})
        delivery = delivery_id(source, doc, body)
        if delivery is not None and delivery in self._recent[source]:
            return Answer(200, {"duplicate": True, "delivery": delivery})
        try:
            raw = orjson.dumps(adapt(source, doc))
            ticket = parse_ticket(raw, self.max_bytes, latest=now + self.max_future_hours * 3600)
        except (AdapterError, TicketError) as exc:
            return Answer(422, {"error": str(exc)})
        except orjson.JSONEncodeError as exc:
            return Answer(422, {"error": f"payload not understood: {exc}"})
        try:
            await asyncio.wait_for(self._send(ticket.id.encode(), raw), self.send_timeout)
        except Exception as exc:
            return Answer(503, {"error": f"the broker did not take the ticket: {type(exc).__name__}"})
        if delivery is not None:
            # only once Kafka has it: a redelivery after a 503 must be taken
            self._recent[source].add(delivery)
        return Answer(202, {"id": ticket.id})
