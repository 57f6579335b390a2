"""Labels that arrive later: parsing, and the join to the ticket's words (no broker)."""

from __future__ import annotations

import pytest

from pipeline.labels import LabelJoin
from pipeline.schema import TicketError, parse_label


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"{", "not valid JSON"),
        (b"[1]", "a label must be a JSON object, got list"),
        (b'{"case_type": "bug"}', "missing required field 'id'"),
        (b'{"id": "1", "labelled_by": "ana"}', "a label sets none of case_type, product_area, severity"),
        (b'{"id": "1", "case_type": "bugs"}', "field 'case_type' is 'bugs', not one of"),
        (b'{"id": "1", "severity": 3}', "field 'severity' must be a non-empty string"),
        (None, "empty message"),
    ],
)
def test_bad_labels_say_what_is_wrong(raw: bytes | None, error: str) -> None:
    with pytest.raises(TicketError, match=error):
        parse_label(raw)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _doc(ticket_id: str, label: str | None = None) -> dict:
    return {"id": ticket_id, "subject": "Charged twice", "body": "refund", "predicted": {"case_type": label}}


def test_a_label_joins_the_words_of_its_ticket_with_the_first_prediction() -> None:
    clock = Clock()
    join = LabelJoin({}, horizon_seconds=3600, clock=clock)
    assert join.remember("1/a", _doc("a", "bug")) == []
    assert join.remember("1/a", _doc("a", "billing")) == []  # a re-send: the first prediction stays
    clock.now += 3000
    (example,) = join.label("1/a", {"id": "a", "case_type": "billing", "labelled_by": "ana"})
    assert example == {**_doc("a", "bug"), "case_type": "billing"}  # who labelled is not a feature


def test_a_label_before_its_ticket_waits_for_it() -> None:
    join = LabelJoin({}, horizon_seconds=3600, clock=Clock())
    assert join.label("0/b", {"id": "b", "severity": "high"}) == []
    assert join.label("0/b", {"id": "b", "severity": "urgent"}) == []  # a correction, in order
    examples = join.remember("0/b", _doc("b"))
    assert [e["severity"] for e in examples] == ["high", "urgent"]
    assert join.label("0/b", {"id": "b", "product_area": "payments"})[0]["product_area"] == "payments"


def test_texts_and_waiting_labels_expire_after_the_horizon() -> None:
    clock = Clock()
    store: dict = {}
    join = LabelJoin(store, horizon_seconds=3600, clock=clock)
    join.remember("0/old", _doc("old"))
    join.label("2/ghost", {"id": "ghost", "case_type": "bug"})
    clock.now += 1800
    join.remember("3/new", _doc("new"))
    assert join.expire() == [] and len(store) == 3
    clock.now += 1801
    assert join.expire() == [{"id": "ghost", "case_type": "bug"}]
    assert set(store) == {"3/new"}
    # the ticket's words are gone: a label for it now waits, and expires in its turn
    assert join.label("0/old", {"id": "old", "case_type": "bug"}) == []
    clock.now += 3601
    assert [label["id"] for label in join.expire()] == ["old"]
