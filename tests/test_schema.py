from __future__ import annotations

import orjson
import pytest

from pipeline.ingest.schema import Ticket, TicketError, parse_ticket

GOOD = {
    "id": "T1",
    "created_at": "2026-01-05T10:00:00+02:00",
    "customer_id": 42,
    "subject": "Export fails",
    "body": "Hi, the CSV export fails.",
}


def test_an_id_as_long_as_the_limit_is_a_ticket_id() -> None:
    assert parse_ticket(orjson.dumps({**GOOD, "id": "T" * 256, "customer_id": " " + "c" * 256})).id == "T" * 256


def test_valid_ticket_keeps_labels_and_ignores_unknown_fields() -> None:
    t = parse_ticket(orjson.dumps({**GOOD, "product_area": " reports ", "severity": "high", "zendesk_x": 1}))
    assert isinstance(t, Ticket)
    assert (t.id, t.customer_id, t.product_area, t.severity, t.case_type) == ("T1", "42", "reports", "high", None)
    assert t.created_ts == 1767600000.0  # 08:00 UTC


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": None}, "missing required field 'id'"),
        ({"id": ""}, "field 'id' is empty"),
        ({"id": True}, "field 'id' must be a string or an integer, got bool"),
        ({"id": "T" * 257}, "field 'id' is 257 characters long, over the limit of 256 (it starts 'TTTT"),
        ({"customer_id": "c" * 5000}, "field 'customer_id' is 5,000 characters long, over the limit of 256"),
        ({"created_at": "yesterday"}, "field 'created_at' is not an ISO 8601 date-time: 'yesterday'"),
        ({"created_at": 1767600000}, "field 'created_at' must be an ISO 8601 string, got int"),
        ({"created_at": "2026-01-05T10:00:00"}, "field 'created_at' has no time zone"),
        ({"body": None}, "missing required field 'body'"),
        ({"subject": ["a"]}, "field 'subject' must be a string, got list"),
        ({"severity": 3}, "field 'severity' must be a string or null, got int"),
        ({"case_type": "Bug"}, "field 'case_type' is 'Bug', not one of billing, bug, compatibility"),
    ],
)
def test_invalid_tickets_name_the_problem(change: dict[str, object], reason: str) -> None:
    doc = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(TicketError) as info:
        parse_ticket(orjson.dumps(doc))
    assert str(info.value).startswith(reason)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b'{"id": "\xff"}', "not valid JSON"),
        (b"[1, 2]", "a ticket must be a JSON object, got list"),
        (None, "empty message (no value)"),
    ],
)
def test_unparseable_messages(raw: bytes, reason: str) -> None:
    with pytest.raises(TicketError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_ticket(raw)


def test_size_limit_is_checked_before_parsing() -> None:
    raw = orjson.dumps({**GOOD, "body": "x" * 5000})
    with pytest.raises(TicketError, match=f"message of {len(raw)} bytes is over the limit of 4096 bytes"):
        parse_ticket(raw, max_bytes=4096)
    assert parse_ticket(raw, max_bytes=len(raw)).id == "T1"


def test_a_ticket_dated_after_the_latest_accepted_is_refused_with_how_far_ahead() -> None:
    from datetime import UTC, datetime

    from pipeline.ingest.schema import TicketError, parse_ticket

    raw = b'{"id": "1", "created_at": "2026-03-03T12:00:00Z", "customer_id": "c", "subject": "s", "body": "b"}'
    latest = datetime(2026, 3, 2, 12, tzinfo=UTC).timestamp()
    with pytest.raises(TicketError, match=r"^field 'created_at' is '2026-03-03T12:00:00Z', 24 h ahead of this"):
        parse_ticket(raw, latest=latest)
    assert parse_ticket(raw, latest=latest + 86400).id == "1"  # at the limit: accepted
    assert parse_ticket(raw).id == "1"  # no clock given (offline replay of a history): no limit
