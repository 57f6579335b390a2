"""Labels that arrive later: parsing, and the join to the ticket's words (no broker)."""

from __future__ import annotations

import gc

import orjson
import pytest

from pipeline.labels import ChunkedStore, LabelJoin, entry_chars
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
        (
            b'{"id": "%s", "case_type": "bug"}' % (b"1" * 300),
            "field 'id' is 300 characters long, over the limit of 256",
        ),
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
    # who labelled is not a feature
    expected = {"id": "a", "reading": "charged twice charged twice refund", "predicted": {"case_type": "bug"}}
    assert example == {**expected, "case_type": "billing"}


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


def test_a_batch_of_texts_is_one_table_record_per_partition_and_survives_a_restart() -> None:
    clock = Clock()
    table: dict = {}
    store = ChunkedStore(table, size_of=entry_chars)
    join = LabelJoin(store, horizon_seconds=3600, clock=clock)
    for i in range(300):
        join.remember(f"{i % 3}/t{i}", _doc(f"t{i}"))
    assert join.label("1/early", {"id": "early", "case_type": "bug"}) == []  # waits for its ticket
    assert table == {}  # nothing written before the batch ends
    store.flush()
    assert sorted(len(chunk) for chunk in table.values()) == [100, 100, 101]
    assert {key.split("/")[0] for key in table} == {"0", "1", "2"}

    # a restarted worker that owns partitions 0 and 1 reads them back, and nothing else
    restarted = ChunkedStore(table, size_of=entry_chars)
    restarted.rebuild({0, 1})
    assert len(restarted) == 201
    rejoin = LabelJoin(restarted, horizon_seconds=3600, clock=clock)
    assert rejoin.label("0/t3", {"id": "t3", "case_type": "billing"}) == [
        {
            "id": "t3",
            "reading": "charged twice charged twice refund",
            "predicted": {"case_type": None},
            "case_type": "billing",
        }
    ]
    assert [e["id"] for e in rejoin.remember("1/early", _doc("early"))] == ["early"]  # the waiting label joins
    assert rejoin.label("2/t2", {"id": "t2", "case_type": "bug"}) == []  # partition 2 is not this worker's


def test_kept_texts_are_flat_so_the_collector_does_not_walk_them() -> None:
    """Hours of kept texts: each one a dict of strings and numbers, which Python's collector
    leaves untracked, also as read back from the changelog (JSON); nested, each was six
    tracked objects that every collection walked again."""
    table: dict = {}
    store = ChunkedStore(table, size_of=entry_chars)
    join = LabelJoin(store, horizon_seconds=3600, clock=Clock())
    prediction = {"case_type": ["bug", 4], "product_area": ["reports", 6], "severity": [None, None]}
    join.remember("0/a", {**_doc("a"), "predicted": prediction})
    join.remember("0/b", {**_doc("b"), "predicted": orjson.dumps(prediction).decode()})  # JSON text: the same
    store.flush()
    restarted = ChunkedStore(orjson.loads(orjson.dumps(table)), size_of=entry_chars)
    restarted.rebuild()
    for kept in (store, restarted):
        assert [gc.is_tracked(kept[key]) for key in ("0/a", "0/b")] == [False, False]
        rejoin = LabelJoin(kept, horizon_seconds=3600, clock=Clock())
        for ticket_id in ("a", "b"):
            (example,) = rejoin.label(f"0/{ticket_id}", {"id": ticket_id, "case_type": "billing"})
            assert example["predicted"] == prediction  # scored against the first prediction, as it was


def test_texts_kept_as_before_are_still_joined() -> None:
    """A changelog written before kept texts were flat (2026-12-01) is read as it was."""
    old_entry = {
        "at": 1_000_000.0,
        "text": {"id": "a", "reading": "charged twice charged twice refund", "predicted": {"case_type": ["bug", 4]}},
    }
    store: dict = {"0/a": old_entry}
    join = LabelJoin(store, horizon_seconds=3600, clock=Clock())
    (example,) = join.label("0/a", {"id": "a", "case_type": "billing"})
    assert example == {**old_entry["text"], "case_type": "billing"}
    join.remember("0/a", _doc("a", "other"))  # a re-send keeps the first prediction
    (example,) = join.label("0/a", {"id": "a", "case_type": "billing"})
    assert example["predicted"] == {"case_type": ["bug", 4]}
    assert entry_chars(old_entry) > len(old_entry["text"]["reading"])


def test_chunks_whose_texts_are_all_replaced_or_expired_leave_the_table() -> None:
    clock = Clock()
    table: dict = {}
    store = ChunkedStore(table, size_of=entry_chars)
    join = LabelJoin(store, horizon_seconds=3600, clock=clock)
    join.remember("0/a", _doc("a"))
    join.remember("0/b", _doc("b"))
    store.flush()
    first = set(table)
    clock.now += 1800
    join.remember("0/c", _doc("c"))
    join.label("0/a", {"id": "a", "case_type": "bug"})  # joined at once: the store does not change
    store.flush()
    assert len(table) == 2
    clock.now += 1801  # a and b are past the horizon, c is not
    assert join.expire() == []
    assert set(join.store) == {"0/c"}
    assert first.isdisjoint(table) and len(table) == 1  # the first chunk is gone from the changelog
    restarted = ChunkedStore(table)
    restarted.rebuild()
    assert set(restarted) == {"0/c"}


def test_a_large_batch_is_split_into_chunks_under_the_limit() -> None:
    table: dict = {}
    store = ChunkedStore(table, max_chunk_chars=10_000, size_of=entry_chars)
    join = LabelJoin(store, horizon_seconds=3600)
    for i in range(50):
        join.remember(f"0/t{i}", {"id": f"t{i}", "subject": "s", "body": "x" * 5000, "predicted": {}})
    store.flush()
    assert len(table) > 1
    assert all(sum(entry_chars(e) for e in chunk.values()) < 10_000 + 2000 + 400 for chunk in table.values())
    restarted = ChunkedStore(table)
    restarted.rebuild({0})
    assert len(restarted) == 50


def test_changes_not_flushed_yet_are_kept_through_a_rebalance() -> None:
    table: dict = {}
    store = ChunkedStore(table)
    store["0/a"] = {"at": 1, "text": None}
    store["1/b"] = {"at": 1, "text": None}
    store.rebuild({0})  # partition 1 went to another worker
    store.flush()
    assert list(store) == ["0/a"]
    assert [list(chunk) for chunk in table.values()] == [["0/a"]]


def test_a_late_tag_teaches_the_words_the_ticket_was_predicted_from() -> None:
    from pipeline.tagger import FeatureMemo, ticket_features

    body = (
        "Since the update the export button does nothing at all. Write to ana.berg@corp.example or call "
        "4155550199.\nThanks,\nAna Berg\n" + "Log line with details. " * 2000
    )
    store: dict = {}
    join = LabelJoin(store, horizon_seconds=3600)
    join.remember("0/t1", {"id": "t1", "subject": "Export broken", "body": body, "predicted": {}})
    (example,) = join.label("0/t1", {"id": "t1", "case_type": "bug"})
    # only what the tagger reads is held for the horizon: no raw body, no address, no number
    assert sorted(example) == ["case_type", "id", "predicted", "reading"]
    assert len(example["reading"]) < 400
    held = orjson.dumps(store).decode()
    assert "ana.berg" not in held and "4155550199" not in held and "Log line" not in held
    assert FeatureMemo().features([example])[0] == ticket_features("Export broken", body)
