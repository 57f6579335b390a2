"""HTTP ingest: helpdesk webhooks in, tickets on Kafka out.

``POST /webhooks/{source}`` (``zendesk``, ``freshdesk``, ``intercom``, ``helpscout`` or
``ticketpulse`` for the project's own JSON). Answers: 202 once Kafka has the ticket;
401 when the signature or token is wrong (nothing is produced); 404 for a source that
is not configured; 413 for a body over the limit; 415 for a body that is not JSON;
400 for JSON that does not parse; 422 for a payload that is not a valid ticket (the
reason is in the answer); 503 when the broker does not take the ticket in time, so
that the helpdesk retries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.ingest.helpdesks import AdapterError, adapt, verify
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
    """

    def __init__(
        self,
        secrets: Mapping[str, str],
        send: Callable[[bytes, bytes], Awaitable[Any]],
        max_bytes: int = 1_000_000,
        send_timeout: float = 10.0,
    ) -> None:
        self._secrets = dict(secrets)
        self._send = send
        self.max_bytes = max_bytes
        self.send_timeout = send_timeout
        self.accepted = 0
        self.refused = 0

    async def handle(
        self, source: str, body: bytes, headers: Mapping[str, str], content_type: str, content_length: int | None
    ) -> Answer:
        answer = await self._handle(source, body, headers, content_type, content_length)
        if answer.status == 202:
            self.accepted += 1
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
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return Answer(400, {"error": f"not valid JSON: {exc}"})
        try:
            raw = orjson.dumps(adapt(source, doc))
            ticket = parse_ticket(raw, self.max_bytes)
        except (AdapterError, TicketError) as exc:
            return Answer(422, {"error": str(exc)})
        try:
            await asyncio.wait_for(self._send(ticket.id.encode(), raw), self.send_timeout)
        except Exception as exc:
            return Answer(503, {"error": f"the broker did not take the ticket: {type(exc).__name__}"})
        return Answer(202, {"id": ticket.id})
