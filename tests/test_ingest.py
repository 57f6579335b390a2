"""Webhook ingest: each helpdesk's fixture payload through the real endpoint into the real broker."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from pipeline.ingest.helpdesks import adapt
from pipeline.ingest.schema import TicketError, parse_ticket
from pipeline.ingest.webhooks import WebhookIngest
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


def signed_headers(
    source: str, body: bytes, secret: str | None = None, signed_at: float | None = None
) -> dict[str, str]:
    """The headers ``source`` signs ``body`` with; Zendesk's signature includes the time,
    ``signed_at`` (seconds since the epoch; now by default)."""
    key = (secret or SECRETS[source]).encode()
    if source == "zendesk":
        moment = datetime.fromtimestamp(time.time() if signed_at is None else signed_at, UTC)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
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
    update["id"] = "0c4e2b7a-9d31-4f6e-8b2a-5e7f1a3c9d20"  # a new event (the same event again is a duplicate)
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


# --- issue #29, items 2 and 3: replays refused, honest answers (no broker needed) -------------

#: The time the fixtures' Zendesk request was signed: 2026-03-03T10:12:05Z.
SIGNED_AT = 1772532725.0


class Sent:
    """A stand-in for the producer: what was sent, or an error to raise."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bytes]] = []
        self.fail: Exception | None = None

    async def __call__(self, key: bytes, value: bytes) -> None:
        if self.fail is not None:
            raise self.fail
        self.messages.append((key, value))


def ingest_at(now: float, **kwargs) -> tuple[WebhookIngest, Sent]:
    sent = Sent()
    return WebhookIngest(SECRETS, sent, clock=lambda: now, send_timeout=1.0, **kwargs), sent


def handle(ingest: WebhookIngest, source: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    answer = asyncio.run(ingest.handle(source, body, headers, "application/json", len(body)))
    return answer.status, answer.body


def zendesk(change: dict | None = None, detail: dict | None = None) -> bytes:
    doc = json.loads((FIXTURES / "zendesk.json").read_text())
    doc.update(change or {})
    doc["detail"].update(detail or {})
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("signed_at", "reason"),
    [
        (SIGNED_AT - 301, "is 301 s old, over the tolerance of 300 s"),
        (SIGNED_AT + 301, "is 301 s in the future, over the tolerance of 300 s"),
        (0.0, "is 1,772,532,725 s old"),  # 1970
        (1556668800.0, "s old"),  # 2019
        (4070908800.0, "s in the future"),  # 2099
    ],
)
def test_a_captured_zendesk_request_replayed_with_its_old_or_a_future_timestamp_is_refused(
    signed_at: float, reason: str
) -> None:
    """The probe replayed a captured request ten times and dated 1970, 2019 and 2099: all 202.
    The signed timestamp's age is now checked (TICKETPULSE_WEBHOOK_TOLERANCE_SECONDS)."""
    body = zendesk()
    ingest, sent = ingest_at(SIGNED_AT)
    status, answer = handle(ingest, "zendesk", body, signed_headers("zendesk", body, signed_at=signed_at))
    assert status == 401 and reason in answer["error"], answer
    assert "TICKETPULSE_WEBHOOK_TOLERANCE_SECONDS" in answer["error"]
    assert sent.messages == []


def test_a_zendesk_request_within_the_tolerance_is_taken_once_and_its_replay_is_not_produced_again() -> None:
    body = zendesk()
    headers = signed_headers("zendesk", body, signed_at=SIGNED_AT)
    ingest, sent = ingest_at(SIGNED_AT + 299)  # a request 299 s on the way: taken
    assert handle(ingest, "zendesk", body, headers) == (202, {"id": "zendesk-35436"})
    for _ in range(9):  # the same request replayed within the tolerance
        status, answer = handle(ingest, "zendesk", body, headers)
        assert status == 200 and answer["duplicate"] is True
    assert len(sent.messages) == 1
    # a later event of the same ticket (a new event id) is taken
    update = zendesk({"id": "0c4e2b7a-9d31-4f6e-8b2a-5e7f1a3c9d20"}, {"status": "PENDING"})
    assert handle(ingest, "zendesk", update, signed_headers("zendesk", update, signed_at=SIGNED_AT))[0] == 202
    assert len(sent.messages) == 2


@pytest.mark.parametrize(
    ("stamp", "reason"),
    [
        ("yesterday", "the signed timestamp 'yesterday' is not an ISO 8601 date-time"),
        ("0001-01-01T00:00:00+23:59", "s old, over the tolerance"),
        ("9999-12-31T23:59:59-23:59", "s in the future, over the tolerance"),
        ("2026-03-03", "is 36,725 s old"),
        ("1772532725", "the signed timestamp '1772532725' is not an ISO 8601 date-time"),
    ],
)
def test_a_zendesk_timestamp_that_is_no_time_or_out_of_range_is_refused(stamp: str, reason: str) -> None:
    body = zendesk()
    key = SECRETS["zendesk"].encode()
    headers = {
        "X-Zendesk-Webhook-Signature": base64.b64encode(
            hmac.new(key, stamp.encode() + body, hashlib.sha256).digest()
        ).decode(),
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
    }
    status, answer = handle(ingest_at(SIGNED_AT)[0], "zendesk", body, headers)
    assert status == 401 and reason in answer["error"], answer


@pytest.mark.parametrize("source", ["intercom", "helpscout"])
def test_helpdesks_that_sign_only_the_body_have_each_delivery_taken_once(source: str) -> None:
    """Intercom's notification id, Help Scout's body (it sends no event id): a replay or a
    redelivery is answered 200 and not produced again; one after a 503 is taken."""
    body = (FIXTURES / f"{source}.json").read_bytes()
    ingest, sent = ingest_at(SIGNED_AT)
    sent.fail = ConnectionError("broker gone")
    assert handle(ingest, source, body, signed_headers(source, body))[0] == 503
    sent.fail = None
    assert handle(ingest, source, body, signed_headers(source, body))[0] == 202  # the helpdesk's retry
    status, answer = handle(ingest, source, body, signed_headers(source, body))
    assert status == 200 and answer["duplicate"] is True
    assert len(sent.messages) == 1


def test_the_recent_deliveries_are_bounded() -> None:
    ingest, sent = ingest_at(SIGNED_AT, recent_deliveries=3)
    doc = json.loads((FIXTURES / "intercom.json").read_text())
    bodies = []
    for n in range(5):
        doc["id"] = f"notif_{n}"
        bodies.append(orjson.dumps(doc))
        assert handle(ingest, "intercom", bodies[-1], signed_headers("intercom", bodies[-1]))[0] == 202
    assert handle(ingest, "intercom", bodies[0], signed_headers("intercom", bodies[0]))[0] == 202  # forgotten
    assert handle(ingest, "intercom", bodies[4], signed_headers("intercom", bodies[4]))[0] == 200
    assert len(ingest._recent["intercom"]) == 3
    assert len(sent.messages) == 6


@pytest.mark.parametrize(
    ("detail", "reason"),
    [
        ({"id": None}, "field 'id' must be a string or an integer, got null"),
        ({"id": [1]}, "field 'id' must be a string or an integer, got a list"),
        ({"id": {"n": 1}}, "field 'id' must be a string or an integer, got an object"),
        ({"id": True}, "field 'id' must be a string or an integer, got a boolean"),
        ({"id": " "}, "field 'id' is empty"),
        ({"created_at": 1e20}, "field 'created_at' is 1e+20 seconds since 1970, not a time between 1970 and 9999"),
        ({"created_at": -1e15}, "field 'created_at' is -1000000000000000.0 seconds since 1970, not a time"),
        ({"created_at": True}, "field 'created_at' must be a time, got a boolean"),
        ({"created_at": "soon"}, "field 'created_at' is not an ISO 8601 date-time: 'soon'"),
        ({"created_at": "2099-01-01T00:00:00Z"}, "field 'created_at' is '2099-01-01T00:00:00+00:00', 638,414 h ahead"),
        ({"requester_id": ["8812"]}, "field 'requester_id' must be a string or an integer, got a list"),
        ({"subject": {"text": "x"}}, "field 'subject' must be a string, got an object"),
        ({"subject": "w" * 500_000}, "field 'subject' is 500,000 characters long, over the limit of 1000"),
        ({"tags": ["area:" + "a" * 990_000]}, "field 'product_area' is 990,000 characters long, over the limit of 128"),
        ({"tags": ["area:billing\nreports"]}, "field 'product_area' holds a line break"),
    ],
)
def test_what_the_worker_would_dead_letter_is_refused_at_the_door_with_the_same_reason(
    detail: dict, reason: str
) -> None:
    """Before: ``created_at`` 1e20 or -1e15 answered 500 (Zendesk retries it for days); a
    ticket dated 2099 got 202 and was dead-lettered later; ``"id": null`` became ``zendesk-None``."""
    body = zendesk(detail=detail)
    ingest, sent = ingest_at(SIGNED_AT)
    status, answer = handle(ingest, "zendesk", body, signed_headers("zendesk", body, signed_at=SIGNED_AT))
    assert status == 422 and answer["error"].startswith(reason), answer
    assert sent.messages == []


def test_a_ticket_dated_ahead_gets_the_reason_the_worker_would_dead_letter_it_for() -> None:
    doc = json.loads((FIXTURES / "ticketpulse.json").read_text())
    doc["created_at"] = "2026-03-05T10:25:00+00:00"  # two days ahead of the clock
    body = orjson.dumps(doc)
    ingest, sent = ingest_at(SIGNED_AT)
    status, answer = handle(ingest, "ticketpulse", body, signed_headers("ticketpulse", body))
    assert sent.messages == []
    with pytest.raises(TicketError) as worker:
        parse_ticket(body, latest=SIGNED_AT + 24 * 3600)  # the worker's own check, same settings
    assert (status, answer["error"]) == (422, str(worker.value))
    assert "TICKETPULSE_MAX_FUTURE_HOURS" in answer["error"]
    assert (
        handle(ingest_at(SIGNED_AT + 2 * 86400)[0], "ticketpulse", body, signed_headers("ticketpulse", body))[0] == 202
    )


def _random_json(rng: random.Random, depth: int = 0) -> object:
    """A random JSON value: the shapes a helpdesk (or an attacker) could send in any field."""
    kinds = ["null", "bool", "int", "bigint", "float", "str", "longstr", "list", "object"]
    kind = rng.choice(kinds[:7] if depth > 2 else kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, -1, 1, 7, 2**31, -(2**53), 1772532000, 1772532000000])
    if kind == "bigint":
        return rng.choice([2**63 - 1, -(2**63), 10**18])
    if kind == "float":
        return rng.choice([0.5, -1e15, 1e20, 1.7e308, -0.0, 1772532000.5, 1e-300])
    if kind == "str":
        return rng.choice(
            [
                "",
                " ",
                "x",
                "2026-03-03T10:00:00Z",
                "2099-01-01T00:00:00Z",
                "0001-01-01T00:00:00+14:00",
                "9999-12-31T23:59:59-14:00",
                "not a date",
                "area:billing",
                "é\u0000\n\\",
                "<p>hi</p>",
                "1e20",
            ]
        )
    if kind == "longstr":
        return rng.choice(["a", "w", "\\", " "]) * rng.choice([129, 1001, 70_000])
    if kind == "list":
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {
        rng.choice(["id", "created_at", "tags", "x", "email", "body", "item"]): _random_json(rng, depth + 1)
        for _ in range(rng.randint(0, 3))
    }


def _mutate(doc: object, rng: random.Random) -> object:
    """``doc`` with one value somewhere in it (or a key of it dropped) replaced by a random one."""
    if not isinstance(doc, dict | list) or not doc or rng.random() < 0.25:
        return _random_json(rng)
    if isinstance(doc, list):
        i = rng.randrange(len(doc))
        return [*doc[:i], _mutate(doc[i], rng), *doc[i + 1 :]]
    key = rng.choice(list(doc))
    out = dict(doc)
    if rng.random() < 0.15:
        del out[key]
    else:
        out[key] = _mutate(doc[key], rng)
    return out


@pytest.mark.parametrize("source", list(SECRETS))
def test_fuzz_no_payload_gets_a_500_and_every_202_is_a_ticket_the_worker_counts(source: str) -> None:
    """Seeded random JSON shapes in every field of each helpdesk's payload (up to three
    mutations each), correctly signed: every answer is 202 or 422 with a reason, never
    an uncaught exception or a 500; and every ticket produced passes the worker's check."""
    rng = random.Random(f"issue-29-{source}")
    base = json.loads((FIXTURES / f"{source}.json").read_text())
    statuses: Counter[int] = Counter()
    for _ in range(1500):
        ingest, sent = ingest_at(SIGNED_AT)  # each payload new to it: none answered as a duplicate
        doc: object = base
        for _ in range(rng.randint(1, 3)):
            doc = _mutate(doc, rng)
        body = orjson.dumps(doc)
        status, answer = handle(ingest, source, body, signed_headers(source, body, signed_at=SIGNED_AT))
        statuses[status] += 1
        assert status in (202, 413, 422), (status, answer, body[:300])
        if status == 422:
            assert answer["error"] and not answer["error"].startswith("payload not understood: "), answer
        if status == 202:
            ((key, value),) = sent.messages
            ticket = parse_ticket(value, latest=SIGNED_AT + 24 * 3600)  # the worker takes it
            assert key == ticket.id.encode()
    assert statuses[422] > 100 and statuses[202] > 10, statuses


# --- the same through the real worker and broker ------------------------------------------


def test_replayed_and_invalid_webhooks_are_refused_by_the_worker_and_produce_nothing(stack, endpoint) -> None:
    """Issue #29, items 2 and 3, through the worker's own endpoint: a captured Zendesk request
    replayed with its old timestamp or dated ahead is 401; what the worker would dead-letter is
    422 with the reason (``created_at`` 1e20 answered 500 before); a replay within the tolerance
    is 200 and produces nothing."""
    now = time.time()
    body = zendesk()
    for signed_at, reason in [(now - 400, "s old"), (now + 400, "s in the future"), (0.0, "s old")]:
        status, answer = post(
            f"{endpoint}/webhooks/zendesk", body, signed_headers("zendesk", body, signed_at=signed_at)
        )
        assert status == 401 and reason in answer["error"], answer
    for detail, reason in [
        ({"id": None}, "field 'id' must be a string or an integer, got null"),
        ({"created_at": 1e20}, "field 'created_at' is 1e+20 seconds since 1970"),
        ({"created_at": -1e15}, "field 'created_at' is -1000000000000000.0 seconds since 1970"),
        ({"created_at": "2099-01-01T00:00:00Z"}, "field 'created_at' is '2099-01-01T00:00:00+00:00'"),
        ({"tags": ["area:" + "a" * 990_000]}, "field 'product_area' is 990,000 characters long"),
        ({"subject": "w" * 500_000}, "field 'subject' is 500,000 characters long"),
    ]:
        bad = zendesk({"id": f"event-{len(reason)}"}, detail)
        status, answer = post(f"{endpoint}/webhooks/zendesk", bad, signed_headers("zendesk", bad))
        assert status == 422 and answer["error"].startswith(reason), (detail, status, answer)
    headers = signed_headers("zendesk", body)
    assert post(f"{endpoint}/webhooks/zendesk", body, headers) == (202, {"id": "zendesk-35436"})
    status, answer = post(f"{endpoint}/webhooks/zendesk", body, headers)  # replayed within the tolerance
    assert status == 200 and answer["duplicate"] is True
    on_topic = stack.read_topic(stack.settings.topic_tickets, expected=1)
    assert [t["id"] for t in on_topic] == ["zendesk-35436"]


def test_poison_tickets_are_dead_lettered_naming_the_field_and_the_tickets_after_them_are_counted(stack) -> None:
    """Issue #29, item 1, the probe's case on the real broker: a 990,000-character area and six
    subjects of one 500,000-character word (each under the 1 MB ticket limit) made the worker
    crash at every start, and nothing after them was counted. Now they are dead-lettered with
    the field named; two tickets of 600,000-character bodies (real tickets: counted, their
    bodies cut) and the good tickets after them are counted, and the worker stays up."""
    window = 1772532000  # 2026-03-03T10:00Z

    def ticket(n: int, area: str, subject: str = "Export fails", body: str = "It fails.") -> tuple[bytes, bytes]:
        doc = {
            "id": f"t{n}",
            "created_at": f"2026-03-03T10:{n:02d}:00Z",
            "customer_id": f"c{n}",
            "subject": subject,
            "body": body,
            "product_area": area,
        }
        return f"t{n}".encode(), orjson.dumps(doc)

    poison = [ticket(0, "a" * 990_000)] + [ticket(n, "reports", subject="w" * 500_000) for n in range(1, 7)]
    long_bodies = [ticket(n, "exports", body="log line " * 66_000) for n in (7, 8)]
    good = [ticket(n, "billing") for n in range(9, 12)]
    assert all(len(value) < 1_000_000 for _, value in poison + long_bodies)
    stack.create_topics()
    worker = stack.start_worker()
    stack.send(poison + long_bodies + good)
    counts = stack.wait_for_counts({(window, "billing"): 3, (window, "exports"): 2})
    assert counts == {(window, "billing"): 3, (window, "exports"): 2}
    dead = stack.read_topic(stack.settings.topic_dead_letter, expected=7)
    assert Counter(d["error"].partition(" (it starts")[0] for d in dead) == {
        "field 'product_area' is 990,000 characters long, over the limit of 128": 1,
        "field 'subject' is 500,000 characters long, over the limit of 1000": 6,
    }
    time.sleep(5)  # the state records of the batch written: the worker is still up
    assert worker.poll() is None, stack.worker_logs()


def test_tickets_at_every_bound_in_one_area_are_counted_and_the_worker_stays_up(stack) -> None:
    """The worst tickets parse_ticket lets through, many in one area and two open windows:
    subjects of one distinct 1,000-character word each (the watch counts subject words),
    bodies of 5,000 control characters (each six in JSON: the watch keeps example texts), the
    longest area. Every state record stays under the producer's 1 MB; all are counted."""
    window = 1772532000
    area = "r" * 128

    def ticket(n: int) -> tuple[bytes, bytes]:
        doc = {
            "id": f"t{n}",
            "created_at": f"2026-03-03T{10 + n % 2}:{n % 60:02d}:00Z",
            "customer_id": f"c{n}",
            "subject": (f"q{n:04d}" * 200),
            "body": "\x01" * 5000,
            "product_area": area,
            "case_type": "bug",
        }
        return f"t{n}".encode(), orjson.dumps(doc)

    stack.create_topics()
    worker = stack.start_worker()
    for start in range(0, 500, 25):  # in many batches: the watch's word counts fill up to their bound
        stack.send([ticket(n) for n in range(start, start + 25)])
        time.sleep(0.5)
    expected = {(window, area): 250, (window + 3600, area): 250}
    assert stack.wait_for_counts(expected) == expected
    time.sleep(5)
    assert worker.poll() is None, stack.worker_logs()
