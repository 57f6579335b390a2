"""Spike alerts delivered to ops: Slack's incoming webhook, and a signed JSON webhook.

The ``deliver`` agent reads ``ticket-alerts`` and posts each alert event (an episode
opened, updated or resolved) to the configured webhooks. It runs beside the counting
agents and never holds them up. A failed post is retried with backoff; an alert still
not delivered after its retries is counted and logged, and stays on the topic.
Each (episode, event, window) is delivered once: a redelivered alert (at-least-once
consumption after a restart) is recognised and not posted again.

The generic webhook's body is the alert JSON, signed: the header
``X-Ticketpulse-Signature: sha256=<hex HMAC-SHA256 of the body with the shared secret>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

__all__ = ["AlertDeliverer", "delivery_key", "sign", "slack_message"]

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Ticketpulse-Signature"


def delivery_key(alert: Mapping[str, Any]) -> str:
    """What makes an alert event unique: its episode, its kind and its window."""
    return f"{alert['episode_id']}|{alert['event']}|{alert['window_start']}"


def sign(body: bytes, secret: str) -> str:
    """The signature header's value for ``body``.

    >>> sign(b'{"a":1}', "s3cret")
    'sha256=5910e62016ef5034272c926c27071992a465c2335cecf41851bda071577f4f6d'
    """
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def slack_message(alert: Mapping[str, Any], dashboard_url: str | None = None) -> dict[str, Any]:
    """A readable Slack message: what, how far above normal, how many customers, where to look.

    >>> msg_alert = {"event": "opened", "level": "warning", "area": "reports", "observed": 90,
    ...     "expected": 20.0, "customers": 90, "tickets": 120, "window_start": "2026-03-03T10:00:00+00:00",
    ...     "episode_id": "reports@1", "example_ticket_ids": [], "recent_product_events": []}
    >>> msg = slack_message(msg_alert)
    >>> msg["text"]
    ':rotating_light: Spike in *reports*: 90 customers in the hour from 2026-03-03 10:00 UTC, 4.5x the 20 expected'
    >>> pattern = {"name": "fails last release", "tickets": 90, "customers": 88, "tier": "roadmap",
    ...            "concentration": 0.02}
    >>> slack_message({**msg_alert, "expected": 0.001, "pattern": pattern})["text"]  # doctest: +NORMALIZE_WHITESPACE
    ':rotating_light: Spike in pattern *fails last release* (reports): 90 customers in the hour from
     2026-03-03 10:00 UTC, where none were expected'
    >>> slack_message({**msg_alert, "case_type": "ux_confusion"})["text"]  # doctest: +NORMALIZE_WHITESPACE
    ':rotating_light: Spike in *ux confusion* tickets of *reports*: 90 customers in the hour from
     2026-03-03 10:00 UTC, 4.5x the 20 expected'
    """
    area = str(alert["area"])
    pattern = alert.get("pattern")
    case_type = alert.get("case_type")
    # a pattern's spike names the problem, in the pattern's words, and its area
    if pattern:
        what = f"pattern *{pattern['name']}* ({area})"
    elif case_type:
        what = f"*{case_type.replace('_', ' ')}* tickets of *{area}*"
    else:
        what = f"*{area}*"
    expected = float(alert["expected"])
    ratio = float(alert["observed"]) / expected if expected > 0 else float("inf")
    # the span the evidence covers: an hour for a burst, a day for a slow surge (the scale)
    hours = int(alert.get("scale") or 3600) / 3600
    span = "the hour" if hours == 1 else f"the {hours:g} h"
    when = str(alert.get("span_start") or alert["window_start"]).replace("T", " ")[:16] + " UTC"
    event = alert["event"]
    if event == "resolved":
        text = (
            f":white_check_mark: Resolved: {what} is back to normal "
            f"({alert['observed']} customers in {span} from {when}, {expected:.0f} expected)"
        )
    else:
        prefix = ":rotating_light: Spike in" if event == "opened" else ":arrow_up: Spike growing in"
        against = f"{ratio:.1f}x the {expected:.0f} expected" if expected >= 0.5 else "where none were expected"
        text = f"{prefix} {what}: {alert['observed']} customers in {span} from {when}, {against}"
    lines = [
        f"*Tickets:* {alert.get('tickets')} from {alert['customers']} customers  *Level:* {alert['level']}  "
        f"*Episode:* {alert['episode_id']}"
    ]
    if pattern:
        lines.append(
            f"*Pattern so far:* {pattern['tickets']} tickets from {pattern['customers']} customers "
            f"({pattern['tier']}), {pattern['concentration']:.0%} from its top customer"
        )
    examples = alert.get("example_tickets") or []
    for example in examples[:3]:
        lines.append(f"> {example}")
    events = alert.get("recent_product_events") or []
    if events:
        shown = [f"{e['kind']} {e['ref']} ({str(e['at'])[:16].replace('T', ' ')})" for e in events[-3:]]
        lines.append("*Recent product events:* " + ", ".join(shown))
    if dashboard_url:
        lines.append(f"<{dashboard_url.rstrip('/')}?var-area={quote(area)}|Open the area dashboard>")
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
        ],
    }


class AlertDeliverer:
    """Posts alert events to Slack and/or a signed webhook, with retries and once-only delivery.

    Parameters
    ----------
    slack_url, webhook_url
        Where to post; either may be ``None``.
    webhook_secret
        The HMAC key of the generic webhook's signature (required with ``webhook_url``).
    attempts, base_delay
        Tries per destination, and the first backoff (doubled each time, with jitter).
    delivered
        The keys (:func:`delivery_key`) already delivered; the agent passes its durable table.
    """

    def __init__(
        self,
        slack_url: str | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        dashboard_url: str | None = None,
        attempts: int = 5,
        base_delay: float = 0.5,
        timeout_seconds: float = 10.0,
        delivered: Any = None,
        rng: random.Random | None = None,
    ) -> None:
        if webhook_url and not webhook_secret:
            raise ValueError("a webhook needs a secret to sign with (TICKETPULSE_ALERT_WEBHOOK_SECRET)")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.slack_url = slack_url
        self.webhook_url = webhook_url
        self._secret = webhook_secret
        self.dashboard_url = dashboard_url
        self.attempts = attempts
        self.base_delay = base_delay
        self.timeout_seconds = timeout_seconds
        self.delivered: Any = delivered if delivered is not None else {}
        self._rng = rng or random.Random(0)  # noqa: S311 - jitter, not cryptography
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0
        self.failed = 0
        self.duplicates = 0

    @property
    def enabled(self) -> bool:
        return bool(self.slack_url or self.webhook_url)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, name: str, url: str, body: bytes, headers: dict[str, str]) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_seconds))
        for attempt in range(1, self.attempts + 1):
            try:
                async with self._session.post(url, data=body, headers=headers) as resp:
                    if resp.status < 300:
                        return True
                    reason = f"status={resp.status}"
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        logger.error("delivery=%s %s gave_up=client_error", name, reason)
                        return False
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = f"error={type(exc).__name__}"
            if attempt < self.attempts:
                delay = self.base_delay * 2 ** (attempt - 1) * (0.5 + self._rng.random())
                logger.warning("delivery=%s attempt=%d %s retry_in=%.1fs", name, attempt, reason, delay)
                await asyncio.sleep(delay)
        logger.error("delivery=%s attempts=%d %s gave_up=retries", name, self.attempts, reason)
        return False

    async def deliver(self, alert: Mapping[str, Any]) -> bool:
        """Post one alert event everywhere it should go; ``True`` if all posts succeeded."""
        key = delivery_key(alert)
        if key in self.delivered:
            self.duplicates += 1
            return True
        ok = True
        if self.slack_url:
            body = orjson.dumps(slack_message(alert, self.dashboard_url))
            ok &= await self._post("slack", self.slack_url, body, {"Content-Type": "application/json"})
        if self.webhook_url and self._secret:
            body = orjson.dumps(dict(alert))
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, self._secret)}
            ok &= await self._post("webhook", self.webhook_url, body, headers)
        if ok:
            self.sent += 1
            self.delivered[key] = True
        else:
            self.failed += 1
            logger.error(
                "alert=%s delivered=false undelivered_total=%d (it stays on the alerts topic)", key, self.failed
            )
        return ok
