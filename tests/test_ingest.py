"""Webhook ingest: each helpdesk's fixture payload through the real endpoint into the real broker."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from pipeline.ingest.helpdesks import adapt
from pipeline.testbed.services import free_port

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
SECRETS = {
    "zendesk": "zd-secret",
    "freshdesk": "fd-token",
    "intercom": "ic-secret",
    "helpscout": "hs-secret",
    "ticketpulse": "own-token",
}


def signed_headers(source: str, body: bytes, secret: str | None = None) -> dict[str, str]:
    key = (secret or SECRETS[source]).encode()
    if source == "zendesk":
        stamp = "2026-03-03T10:12:05Z"
        mac = hmac.new(key, stamp.encode() + body, hashlib.sha256).digest()
        return {
            "X-Zendesk-Webhook-Signature": base64.b64encode(mac).decode(),
            "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        }
    if source == "intercom":
        return {"X-Hub-Signature": "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest()}
    if source == "helpscout":
        return {"X-HelpScout-Signature": base64.b64encode(hmac.new(key, body, hashlib.sha1).digest()).decode()}
    return {"Authorization": f"Bearer {key.decode()}"}


def post(url: str, body: bytes, headers: dict[str, str], content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type, **headers}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, orjson.loads(raw)
        except orjson.JSONDecodeError:  # aiohttp's own answer (413 over its body limit) is text
            return exc.code, {"error": raw.decode(errors="replace")}


@pytest.fixture
def endpoint(stack):
    port = free_port()
    stack.env_overrides.update(
        {
            "TICKETPULSE_WEB_ENABLED": "true",
            "TICKETPULSE_WEB_PORT": str(port),
            "TICKETPULSE_ZENDESK_WEBHOOK_SECRET": SECRETS["zendesk"],
            "TICKETPULSE_FRESHDESK_WEBHOOK_TOKEN": SECRETS["freshdesk"],
            "TICKETPULSE_INTERCOM_WEBHOOK_SECRET": SECRETS["intercom"],
            "TICKETPULSE_HELPSCOUT_WEBHOOK_SECRET": SECRETS["helpscout"],
            "TICKETPULSE_INGEST_TOKEN": SECRETS["ticketpulse"],
        }
    )
    stack.create_topics()
    stack.start_worker()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as resp:
                if resp.status == 200:
                    return base
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the worker's web server did not come up:\n{stack.worker_logs()}")


def test_each_helpdesk_payload_becomes_a_ticket_on_kafka_and_is_counted(stack, endpoint) -> None:
    expected = {}
    for source in SECRETS:
        body = (FIXTURES / f"{source}.json").read_bytes()
        status, answer = post(f"{endpoint}/webhooks/{source}", body, signed_headers(source, body))
        assert status == 202, (source, answer)
        expected[answer["id"]] = adapt(source, json.loads(body))
    # an update of the same Zendesk ticket (a new comment): same id, counted once
    update = json.loads((FIXTURES / "zendesk.json").read_text())
    update["detail"]["status"] = "PENDING"
    body = orjson.dumps(update)
    assert post(f"{endpoint}/webhooks/zendesk", body, signed_headers("zendesk", body))[0] == 202

    on_topic = stack.read_topic(stack.settings.topic_tickets, expected=6)
    assert len(on_topic) == 6
    assert {t["id"]: t for t in on_topic} == expected
    assert expected["zendesk-35436"]["product_area"] == "reports"
    assert expected["zendesk-35436"]["severity"] == "high" and expected["zendesk-35436"]["case_type"] == "bug"
    assert expected["freshdesk-1207"]["customer_id"].startswith("email-")  # no address stored
    assert "ann.lee" not in orjson.dumps(on_topic).decode()
    counts = stack.wait_for_counts(
        {(1772532000, "reports"): 1, (1772532000, "billing"): 2, (1772532000, "login"): 1, (1772532000, "dashboard"): 1}
    )
    assert counts == {
        (1772532000, "reports"): 1,
        (1772532000, "billing"): 2,
        (1772532000, "login"): 1,
        (1772532000, "dashboard"): 1,
    }


def test_requests_that_fail_are_refused_and_produce_nothing(stack, endpoint) -> None:
    body = (FIXTURES / "intercom.json").read_bytes()
    cases = [
        ("intercom", body, signed_headers("intercom", body, secret="wrong"), "application/json", 401),
        ("zendesk", body, {}, "application/json", 401),
        ("freshdesk", body, {"Authorization": "Bearer nope"}, "application/json", 401),
        ("intercom", b"{not json", signed_headers("intercom", b"{not json"), "application/json", 400),
        ("intercom", body, signed_headers("intercom", body), "text/plain", 415),
        ("ticketpulse", b'{"id": "x"}', signed_headers("ticketpulse", b'{"id": "x"}'), "application/json", 422),
        ("intercom", b'{"type": "ping"}', signed_headers("intercom", b'{"type": "ping"}'), "application/json", 422),
        ("kayako", body, {}, "application/json", 404),
    ]
    for source, payload, headers, content_type, status in cases:
        got, answer = post(f"{endpoint}/webhooks/{source}", payload, headers, content_type)
        assert (got, source) == (status, source), answer
        assert answer["error"]
    big = b'{"id": "big", "body": "' + b"x" * 1_100_000 + b'"}'
    assert post(f"{endpoint}/webhooks/ticketpulse", big, signed_headers("ticketpulse", big))[0] == 413
    # a good one last, so we know the topic was read to its end
    good = (FIXTURES / "ticketpulse.json").read_bytes()
    assert post(f"{endpoint}/webhooks/ticketpulse", good, signed_headers("ticketpulse", good))[0] == 202
    on_topic = stack.read_topic(stack.settings.topic_tickets, expected=1)
    assert [t["id"] for t in on_topic] == ["own-1"]


def test_broker_down_gives_the_helpdesk_a_5xx_to_retry(stack_factory, influx) -> None:
    from pipeline.testbed.services import EmbeddedBroker

    own_broker = EmbeddedBroker().start()  # this test stops it: not the session's
    try:
        stack = stack_factory()
        stack.broker = own_broker
        stack.env_overrides["TICKETPULSE_BROKER_URL"] = own_broker.url
        port = free_port()
        stack.env_overrides.update(
            {"TICKETPULSE_WEB_ENABLED": "true", "TICKETPULSE_WEB_PORT": str(port), "TICKETPULSE_INGEST_TOKEN": "t"}
        )
        stack.create_topics()
        stack.start_worker()
        base = f"http://127.0.0.1:{port}"
        good = (FIXTURES / "ticketpulse.json").read_bytes()
        deadline = time.monotonic() + 60
        status = 0
        while time.monotonic() < deadline and status != 202:
            try:
                status, _ = post(f"{base}/webhooks/ticketpulse", good, {"Authorization": "Bearer t"})
            except OSError:
                time.sleep(0.5)
        assert status == 202
        own_broker.halt()
        started = time.monotonic()
        status, answer = post(f"{base}/webhooks/ticketpulse", good, {"Authorization": "Bearer t"})
        assert status == 503, answer
        assert answer["error"].startswith("the broker did not take the ticket")
        assert time.monotonic() - started < 20
        health = post_get(f"{base}/health")
        assert health[0] == 503 and health[1]["broker"] == "unreachable"
        # a worker without a broker takes long to stop gracefully; this test is done with it
        for proc in stack.workers:
            os.killpg(proc.pid, signal.SIGKILL)
    finally:
        own_broker.stop()


def post_get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())
