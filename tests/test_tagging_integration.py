"""Tagging in the stream: predictions on tickets-classified, labels learned by every worker."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka.partitioner import murmur2

from pipeline.tagging.tagger import FIELDS
from pipeline.testbed.generator import TicketGenerator

pytestmark = pytest.mark.integration


def test_two_workers_tag_every_ticket_and_agree_once_they_have_the_same_labels(stack) -> None:
    gen = TicketGenerator(datetime(2026, 3, 2, tzinfo=UTC), days=2, seed=12, scale=2, customers=3000)
    messages = [(str(t.payload["id"]).encode(), orjson.dumps(t.payload)) for t in gen.tickets()]
    stack.env_overrides["TICKETPULSE_STATS_SECONDS"] = "1"
    stack.create_topics()
    stack.start_worker("a")
    stack.start_worker("b")
    time.sleep(8)  # both in the group before the stream flows
    stack.send(messages)
    truth = gen.truth(3600)
    assert stack.wait_for_counts(dict(truth)) == dict(truth), stack.worker_logs()

    records = stack.read_topic(stack.settings.topic_classified, expected=len(messages), keyed=True)
    assert len(records) == len(messages)  # every message, re-sends included, tagged
    # keyed by ticket id, in the partition any Kafka client would choose for that key
    partitions = stack.settings.partitions
    assert all(key == value["id"].encode() for key, _, value in records)
    assert all(partition == (murmur2(key) & 0x7FFFFFFF) % partitions for key, partition, _ in records)
    assert len({partition for _, partition, _ in records}) == partitions
    classified = [value for _, _, value in records]
    by_id = {c["id"]: c for c in classified}
    originals = {t.payload["id"]: t.payload for t in gen.tickets()}
    assert set(by_id) == set(originals)
    for ticket_id, c in by_id.items():
        assert set(c["predicted"]) == set(FIELDS)
        assert c.get("product_area") == originals[ticket_id].get("product_area")  # labels kept as they are

    # every worker reads every label, each once (re-sent tickets carry them again)
    distinct = {f: sum(1 for p in originals.values() if p.get(f)) for f in FIELDS}
    deadline = time.monotonic() + 90
    labelled: dict[tuple[str, str], int] = {}
    while time.monotonic() < deadline:
        quality = stack.query("SELECT last(labelled) FROM classifier_quality GROUP BY target, worker")
        labelled = {(s["tags"]["worker"], s["tags"]["target"]): s["values"][0][1] for s in quality}
        if len(labelled) == 2 * len(FIELDS) and all(v == distinct[t] for (_, t), v in labelled.items()):
            break
        time.sleep(1)
    assert len({w for w, _ in labelled}) == 2 and all(v == distinct[t] for (_, t), v in labelled.items()), labelled
    probe = next(t.payload for t in gen.tickets() if t.payload.get("product_area") == "reports")
    probes = [
        {**probe, "id": f"probe-{i}", "product_area": None, "case_type": None, "severity": None} for i in range(12)
    ]  # ids that land on every partition, so both workers answer
    stack.send([(p["id"].encode(), orjson.dumps({k: v for k, v in p.items() if v is not None})) for p in probes])
    answers = [
        c
        for c in stack.read_topic(stack.settings.topic_classified, expected=len(messages) + 12)
        if c["id"].startswith("probe-")
    ]
    assert len(answers) == 12
    predicted = {orjson.dumps(a["predicted"]) for a in answers}
    assert len(predicted) == 1, predicted  # two workers, one model
    area = answers[0]["predicted"]["product_area"]
    assert area["label"] == "reports" and area["uncertain"] is False
