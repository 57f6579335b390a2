"""The worker's web views: helpdesk webhooks in (``POST /webhooks/{source}``) and ``GET /health``."""

from __future__ import annotations

from typing import Any

import faust

from pipeline.ingest.webhooks import WebhookIngest
from pipeline.runtime.kafka import broker_reachable
from pipeline.settings import Settings

__all__ = ["add_web_views"]


def add_web_views(app: faust.App, settings: Settings, tickets: Any) -> WebhookIngest:
    """Register the webhook and health views on ``app``; webhooks produce to ``tickets`` (a Faust topic)."""

    async def send_ticket(key: bytes, value: bytes) -> None:
        # returns once the broker has acknowledged the ticket
        await (await tickets.send(key=key, value=value))

    ingest = WebhookIngest(
        settings.webhook_secrets(),
        send_ticket,
        max_bytes=settings.max_ticket_bytes,
        max_future_hours=settings.max_future_hours,
        tolerance_seconds=settings.webhook_tolerance_seconds,
    )

    class WebhookView(faust.web.View):  # type: ignore[misc]
        async def post(self, request: Any, source: str) -> Any:
            body = await request.read()
            answer = await ingest.handle(
                source, body, request.headers, request.headers.get("Content-Type", ""), request.content_length
            )
            return self.json(answer.body, status=answer.status)

    class HealthView(faust.web.View):  # type: ignore[misc]
        async def get(self, request: Any) -> Any:
            try:
                await broker_reachable(settings, timeout=5.0)
            except Exception as exc:
                return self.json({"broker": "unreachable", "error": type(exc).__name__}, status=503)
            counts = {"accepted": ingest.accepted, "refused": ingest.refused, "duplicates": ingest.duplicates}
            return self.json({"broker": "ok", **counts})

    app.page("/webhooks/{source}")(WebhookView)
    app.page("/health")(HealthView)
    return ingest
