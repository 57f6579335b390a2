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


# --- issue #29, item 1: bounds on every field that becomes state, a key or a tag --------------

from pipeline.ingest.schema import parse_label, parse_product_event  # noqa: E402

# the limits as numbers, so that these tests fail (not error) on code without them
MAX_LABEL_CHARS, MAX_SUBJECT_CHARS, MAX_BODY_CHARS = 128, 1000, 5000


def test_the_limits_are_the_documented_ones() -> None:
    from pipeline.ingest import schema

    assert (schema.MAX_LABEL_CHARS, schema.MAX_SUBJECT_CHARS, schema.MAX_BODY_CHARS) == (128, 1000, 5000)


def test_a_poison_product_area_is_refused_naming_the_field_and_its_length() -> None:
    """The probe's ticket: a 990,000-character area, under the 1 MB ticket limit, became one
    2-4 MB state record and crashed the worker at every start."""
    raw = orjson.dumps({**GOOD, "product_area": "a" * 990_000})
    assert len(raw) < 1_000_000
    with pytest.raises(TicketError) as info:
        parse_ticket(raw)
    assert str(info.value) == (
        f"field 'product_area' is 990,000 characters long, over the limit of {MAX_LABEL_CHARS} (it starts '{'a' * 40}')"
    )


def test_a_subject_of_one_500000_character_word_is_refused_naming_the_field() -> None:
    raw = orjson.dumps({**GOOD, "subject": "w" * 500_000})
    with pytest.raises(TicketError, match=r"^field 'subject' is 500,000 characters long, over the limit of 1000 "):
        parse_ticket(raw)
    assert parse_ticket(orjson.dumps({**GOOD, "subject": "w" * MAX_SUBJECT_CHARS})).subject == "w" * MAX_SUBJECT_CHARS


@pytest.mark.parametrize("name", ["channel", "product_area", "case_type", "severity", "plan", "locale"])
def test_every_label_is_bounded(name: str) -> None:
    with pytest.raises(TicketError, match=rf"^field '{name}' is 129 characters long, over the limit of 128"):
        parse_ticket(orjson.dumps({**GOOD, name: "b" * 129}))
    if name != "case_type":  # a case type is one of six names
        assert getattr(parse_ticket(orjson.dumps({**GOOD, name: " " + "b" * 128 + " "})), name) == "b" * 128


@pytest.mark.parametrize(("value", "code"), [("billing\nreports", "000A"), ("a\rb", "000D"), ("tab\there", "0009")])
def test_a_label_with_a_line_break_is_refused(value: str, code: str) -> None:
    """InfluxDB's line protocol cannot write a line break in a tag (influxd keeps the escape's
    backslash, VictoriaMetrics drops the point): refused at the door, with where it is."""
    with pytest.raises(
        TicketError, match=rf"^field 'product_area' holds a line break or another control character \(U\+{code}"
    ):
        parse_ticket(orjson.dumps({**GOOD, "product_area": value}))


def test_a_long_body_is_cut_and_the_ticket_still_counts() -> None:
    """A pasted log is a real ticket: kept to MAX_BODY_CHARS, never refused for its length."""
    body = "log line\n" * 90_000
    ticket = parse_ticket(orjson.dumps({**GOOD, "body": body}))
    assert ticket.body == body[:MAX_BODY_CHARS] and ticket.id == "T1"


def test_labels_and_product_events_have_the_same_bounds() -> None:
    with pytest.raises(TicketError, match=r"^field 'product_area' is 990,000 characters long"):
        parse_label(orjson.dumps({"id": "1", "product_area": "a" * 990_000}))
    with pytest.raises(TicketError, match=r"^field 'severity' holds a line break"):
        parse_label(orjson.dumps({"id": "1", "severity": "hi\ngh"}))
    event = {"kind": "release", "area": "reports", "at": "2026-03-10T09:00:00Z", "ref": "v4.2"}
    with pytest.raises(TicketError, match=r"^field 'area' is 990,000 characters long"):
        parse_product_event(orjson.dumps({**event, "area": "a" * 990_000}))
    with pytest.raises(TicketError, match=r"^field 'note' is 500,000 characters long, over the limit of 1000"):
        parse_product_event(orjson.dumps({**event, "note": "n" * 500_000}))
    with pytest.raises(TicketError, match=r"^field 'ref' is 300 characters long, over the limit of 256"):
        parse_product_event(orjson.dumps({**event, "ref": "r" * 300}))
