"""Delivery: each alert event posted once to Slack and the signed webhook (:mod:`pipeline.alerts.delivery`)."""

from __future__ import annotations

from typing import Any

import faust

from pipeline.alerts.delivery import AlertDeliverer
from pipeline.runtime.tables import DurableTable
from pipeline.settings import Settings

__all__ = ["add_delivery"]


def add_delivery(app: faust.App, settings: Settings, alerts: Any) -> AlertDeliverer:
    """The alert delivery (Slack, signed webhook), and its agent when one is configured."""
    deliverer = AlertDeliverer(
        slack_url=settings.slack_webhook_url.get_secret_value() if settings.slack_webhook_url else None,
        webhook_url=settings.alert_webhook_url,
        webhook_secret=settings.alert_webhook_secret.get_secret_value() if settings.alert_webhook_secret else None,
        dashboard_url=settings.dashboard_url,
        attempts=settings.delivery_attempts,
    )
    if not deliverer.enabled:
        return deliverer
    # (episode, event, window) -> True, for the alerts already delivered
    delivered = DurableTable(
        app, name="alerts-delivered", key_type=str, value_type=bool, partitions=settings.partitions
    )
    app.tables.add(delivered)
    deliverer.delivered = delivered

    async def deliver(stream: Any) -> None:
        """Post spike alerts to Slack and the signed webhook, each once."""
        async for alert in stream:
            # the post (the effect) first, then the record that it was made
            await deliverer.deliver(alert)
            await delivered.delivered()

    app.agent(alerts, name="deliver")(deliver)
    return deliverer
