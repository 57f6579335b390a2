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
