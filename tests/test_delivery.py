"""Alert delivery against a real HTTP server run by the test (the receiving end)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import orjson
import pytest

from pipeline.alerts.delivery import SIGNATURE_HEADER, AlertDeliverer

from .conftest import Receiver

ALERT = {
    "area": "reports",
    "case_type": None,
    "event": "opened",
    "episode_id": "reports@1772532000",
    "window_start": "2026-03-03T10:00:00+00:00",
    "window_end": "2026-03-03T11:00:00+00:00",
    "observed": 90,
    "expected": 20.0,
    "score": 0.61,
    "p_value": 1e-6,
    "customers": 90,
    "tickets": 120,
    "tickets_per_customer": 1.33,
    "level": "warning",
    "example_ticket_ids": [],
    "top_terms": [],
    "recent_product_events": [],
}


def _deliver(deliverer: AlertDeliverer, *alerts: dict) -> list[bool]:
    async def go() -> list[bool]:
        try:
            return [await deliverer.deliver(a) for a in alerts]
        finally:
            await deliverer.close()

    return asyncio.run(go())


def test_slack_message_and_signed_webhook_content(receiver: Receiver) -> None:
    d = AlertDeliverer(f"{receiver.url}/slack", f"{receiver.url}/hook", "s3cret", dashboard_url="http://grafana/d/area")
    assert _deliver(d, ALERT) == [True]
    ((_, slack_body),) = receiver.posts("/slack")
    slack = orjson.loads(slack_body)
    assert slack["text"] == (
        ":rotating_light: Spike in *reports*: 90 customers in the hour from 2026-03-03 10:00 UTC, 4.5x the 20 expected"
    )
    details = slack["blocks"][1]["text"]["text"]
    assert "*Tickets:* 120 from 90 customers" in details and "<http://grafana/d/area?var-area=reports|" in details
    ((headers, body),) = receiver.posts("/hook")
    assert orjson.loads(body) == ALERT
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == expected
    assert headers["Content-Type"] == "application/json"


def test_resolution_is_marked_as_such(receiver: Receiver) -> None:
    d = AlertDeliverer(slack_url=f"{receiver.url}/slack")
    _deliver(d, {**ALERT, "event": "resolved", "level": "resolved", "observed": 22, "customers": 22})
    text = orjson.loads(receiver.posts("/slack")[0][1])["text"]
    assert text.startswith(":white_check_mark: Resolved: *reports* is back to normal (22 customers")


def test_retries_on_500_then_delivers_once(receiver: Receiver) -> None:
    receiver.script = [500, 503]
    d = AlertDeliverer(webhook_url=f"{receiver.url}/hook", webhook_secret="k", base_delay=0.05)
    started = time.monotonic()
    assert _deliver(d, ALERT) == [True]
    assert len(receiver.posts("/hook")) == 3
    assert time.monotonic() - started >= 0.05 * (0.5 + 2 * 0.5)  # it backed off
    assert (d.sent, d.failed) == (1, 0)


def test_gives_up_after_its_attempts_counts_and_does_not_record(receiver: Receiver) -> None:
    receiver.script = [500] * 10
    d = AlertDeliverer(webhook_url=f"{receiver.url}/hook", webhook_secret="k", attempts=3, base_delay=0.01)
    assert _deliver(d, ALERT) == [False]
    assert len(receiver.posts("/hook")) == 3
    assert (d.sent, d.failed) == (0, 1) and d.delivered == {}


def test_redelivered_alert_is_not_posted_twice(receiver: Receiver) -> None:
    d = AlertDeliverer(webhook_url=f"{receiver.url}/hook", webhook_secret="k")
    update = {**ALERT, "event": "updated", "window_start": "2026-03-03T11:00:00+00:00"}
    assert _deliver(d, ALERT, ALERT, update, ALERT) == [True, True, True, True]
    assert [orjson.loads(b)["event"] for _, b in receiver.posts("/hook")] == ["opened", "updated"]
    assert d.duplicates == 2


def test_a_webhook_without_a_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="TICKETPULSE_ALERT_WEBHOOK_SECRET"):
        AlertDeliverer(webhook_url="http://127.0.0.1:1/hook")
