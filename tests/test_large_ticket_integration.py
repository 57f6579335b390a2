"""A ticket as large as the settings allow goes through the whole stream."""

from __future__ import annotations

import orjson
import pytest

pytestmark = pytest.mark.integration


def test_a_ticket_as_large_as_allowed_is_counted_and_classified(stack) -> None:
    small = {
        "id": "T-small",
        "created_at": "2026-03-02T10:05:00Z",
        "customer_id": "c-1",
        "subject": "Export fails",
        "body": "The CSV export fails.",
        "product_area": "reports",
    }
    large = {**small, "id": "T-large", "customer_id": "c-2"}
    limit = stack.settings.max_ticket_bytes
    # the body fills the ticket to its last allowed byte
    large["body"] = "x" * (limit - len(orjson.dumps({**large, "body": ""})))
    assert len(orjson.dumps(large)) == limit
    stack.create_topics()
    stack.start_worker()
    stack.send([(t["id"].encode(), orjson.dumps(t)) for t in (large, small)])
    window = 1772445600  # 2026-03-02T10:00:00Z
    assert stack.wait_for_counts({(window, "reports"): 2}) == {(window, "reports"): 2}, stack.worker_logs()
    classified = {c["id"]: c for c in stack.read_topic(stack.settings.topic_classified, expected=2)}
    assert set(classified) == {"T-small", "T-large"}, stack.worker_logs()


def test_a_batch_of_long_tickets_in_a_script_of_three_bytes_a_character_goes_through(stack) -> None:
    """Internal messages are one per batch and partition: 2,000 tickets whose kept words are
    2,000 Japanese characters (6 KB in UTF-8) make 12 MB for one partition, over the broker's
    1 MB a message. They are split by size, and every ticket is counted and classified."""
    stack.env_overrides["TICKETPULSE_PARTITIONS"] = "1"
    stack.create_topics()
    body = "エクスポートが失敗します。" * 160  # 2,080 characters, 6,240 bytes
    tickets = [
        {
            "id": f"T-{i}",
            "created_at": "2026-03-02T10:05:00Z",
            "customer_id": f"c-{i}",
            "subject": "エクスポートが失敗する",
            "body": body,
            "product_area": "reports",
            "case_type": "bug",
        }
        for i in range(2000)
    ]
    # all in the topic before the worker reads: its first batch is a full one
    stack.send([(t["id"].encode(), orjson.dumps(t)) for t in tickets])
    stack.start_worker()
    window = 1772445600  # 2026-03-02T10:00:00Z
    counts = stack.wait_for_counts({(window, "reports"): 2000}, timeout=120)
    assert counts == {(window, "reports"): 2000}, stack.worker_logs()
    classified = stack.read_topic(stack.settings.topic_classified, expected=2000, timeout=60)
    assert len({c["id"] for c in classified}) == 2000
