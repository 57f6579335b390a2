"""Labels that arrive later: parsing, and the join to the ticket's words (no broker)."""

from __future__ import annotations

import gc

import orjson
import pytest

from pipeline.ingest.schema import TicketError, parse_label
from pipeline.tagging.labels import ChunkedStore, LabelJoin, entry_chars


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
    join.remember("0/again", _doc("again"))
    join.label("2/ghost", {"id": "ghost", "case_type": "bug"})
    clock.now += 1800
    join.remember("3/new", _doc("new"))
    join.remember("0/again", _doc("again"))  # re-sent: kept from now on, with its first prediction
    assert join.expire() == []
    assert {p: list(texts) for p, texts in join.texts.items()} == {0: ["old", "again"], 3: ["new"]}
    clock.now += 1801
    assert join.expire() == [{"id": "ghost", "case_type": "bug"}]
    assert store == {}
    assert {p: list(texts) for p, texts in join.texts.items()} == {0: ["again"], 3: ["new"]}
    # the ticket's words are gone: a label for it now waits, and expires in its turn
    assert join.label("0/old", {"id": "old", "case_type": "bug"}) == []
    clock.now += 3601
    assert [label["id"] for label in join.expire()] == ["old"]


def _topic_message(join: LabelJoin, topic: dict, partition: int, docs: list[dict]) -> list[dict]:
    """Send ``docs`` as one ``texts-to-join`` message (kept in ``topic``) and keep them, as
    ``validate`` and ``join_labels`` do; the message's timestamp is the join's clock."""
    messages = topic.setdefault(partition, [])
    messages.append((join.clock(), orjson.dumps({"texts": docs})))
    return join.remember_message(partition, len(messages) - 1, orjson.loads(messages[-1][1])["texts"])


def _read_again(join: LabelJoin, topic: dict, partitions: set[int]) -> int:
    """What the worker does when it starts or takes partitions over: read back the
    offsets the store names from the topic."""
    kept = 0
    for partition in partitions:
        offsets = join.reread_from(partition)
        if offsets is None:
            continue
        first, last = offsets
        for offset in range(first, last + 1):
            at, value = topic[partition][offset]
            docs = orjson.loads(value)["texts"]
            join.restore(partition, offset, docs, at)
            kept += len(docs)
    join.expire_texts()  # what was read back from past the horizon
    return kept


def test_the_table_holds_where_the_texts_are_and_a_restarted_worker_reads_them_again() -> None:
    """The words are not written a second time to the changelog: the table holds which
    offsets of texts-to-join keep them, and the labels waiting; a restarted worker (or one
    that takes the partition over) reads those offsets back."""
    clock = Clock()
    table: dict = {}
    topic: dict = {}
    store = ChunkedStore(table, size_of=entry_chars)
    join = LabelJoin(store, horizon_seconds=3600, clock=clock)
    for batch in range(3):
        for partition in range(3):
            docs = [_doc(f"t{i}", "bug") for i in range(batch * 300 + partition, (batch + 1) * 300, 3)]
            assert _topic_message(join, topic, partition, docs) == []
        clock.now += 60
    assert join.label("1/early", {"id": "early", "case_type": "bug"}) == []  # waits for its ticket
    store.flush()
    held = orjson.dumps(table).decode()
    assert "charged" not in held and len(held) < 1000  # no words: three offsets ranges and a label
    assert join.reread_from(0) == (0, 2)

    # a restarted worker that owns partitions 0 and 1 reads them back, and nothing else
    restarted = ChunkedStore(table, size_of=entry_chars)
    restarted.rebuild({0, 1})
    clock.now += 600
    rejoin = LabelJoin(restarted, horizon_seconds=3600, clock=clock)
    assert _read_again(rejoin, topic, {0, 1}) == 600
    assert rejoin.holds() == {0, 1}
    assert rejoin.label("0/t3", {"id": "t3", "case_type": "billing"}) == [
        {
            "id": "t3",
            "reading": "charged twice charged twice refund",
            "predicted": {"case_type": "bug"},
            "case_type": "billing",
        }
    ]
    # the label that waited joins when its ticket comes, once; read back, no label joins twice
    assert [e["id"] for e in _topic_message(rejoin, topic, 1, [_doc("early")])] == ["early"]
    assert rejoin.label("2/t2", {"id": "t2", "case_type": "bug"}) == []  # partition 2 is not this worker's
    # what it keeps from here on is recorded for the next restart, as before
    assert rejoin.reread_from(1) == (0, 3)


def test_texts_read_back_keep_their_first_prediction_and_leave_out_what_expired() -> None:
    clock = Clock()
    topic: dict = {}
    join = LabelJoin({}, horizon_seconds=3600, clock=clock)
    _topic_message(join, topic, 0, [_doc("a", "bug"), _doc("b", "bug")])
    clock.now += 2000
    _topic_message(join, topic, 0, [_doc("a", "billing"), _doc("c", "other")])  # a is re-sent
    clock.now += 2000  # the first message is past the horizon now; a's re-send is not
    assert join.expire() == []
    # the first message is read again: it holds a's first prediction
    assert join.reread_from(0) == (0, 1)
    again = LabelJoin(join.store, horizon_seconds=3600, clock=clock)
    assert _read_again(again, topic, {0}) == 4
    assert list(again.texts[0]) == ["a", "c"]  # b is past the horizon
    assert again.label("0/b", {"id": "b", "case_type": "bug"}) == []
    (example,) = again.label("0/a", {"id": "a", "case_type": "bug"})
    assert example["predicted"] == {"case_type": "bug"}  # the first prediction, not the re-send's
    clock.now += 3601  # everything is past the horizon: nothing left to read again
    assert [label["id"] for label in again.expire()] == ["b"]
    assert again.texts == {0: {}} and again.reread_from(0) is None


def test_reading_texts_back_forgets_old_texts_but_gives_no_waiting_label_away() -> None:
    """After reading back, the texts past the horizon go (``expire_texts``); a label that
    waited past it is given back only by ``expire``, which dead-letters it: none is lost."""
    clock = Clock()
    join = LabelJoin({}, horizon_seconds=3600, clock=clock)
    join.label("0/never", {"id": "never", "case_type": "bug"})
    join.remember("0/old", _doc("old"))
    clock.now += 3601
    join.expire_texts()
    assert join.texts == {0: {}} and "0/never" in join.store
    assert [label["id"] for label in join.expire()] == ["never"]


def test_a_worker_forgets_the_texts_of_partitions_that_went_elsewhere() -> None:
    topic: dict = {}
    join = LabelJoin({}, horizon_seconds=3600, clock=Clock())
    _topic_message(join, topic, 0, [_doc("a")])
    _topic_message(join, topic, 1, [_doc("b")])
    join.drop({1})
    assert join.holds() == {0}
    assert join.label("1/b", {"id": "b", "case_type": "bug"}) == []
    assert join.reread_from(1) == (0, 0)  # the next owner reads it from there
    _topic_message(join, topic, 0, [_doc("c")])
    assert join.reread_from(0) == (0, 1)


def test_kept_texts_are_flat_so_the_collector_does_not_walk_them() -> None:
    """Hours of kept texts: each one a dict of strings and numbers, which Python's collector
    leaves untracked, also as read back from their topic; nested, each was six tracked
    objects that every collection walked again."""
    topic: dict = {}
    join = LabelJoin({}, horizon_seconds=3600, clock=Clock())
    prediction = {"case_type": ["bug", 4], "product_area": ["reports", 6], "severity": [None, None]}
    _topic_message(join, topic, 0, [{**_doc("a"), "predicted": prediction}])
    join.remember("0/b", {**_doc("b"), "predicted": orjson.dumps(prediction).decode()})  # JSON text: the same
    again = LabelJoin(join.store, horizon_seconds=3600, clock=Clock())
    _read_again(again, topic, {0})
    again.remember("0/b", {**_doc("b"), "predicted": orjson.dumps(prediction).decode()})
    for kept in (join, again):
        assert [gc.is_tracked(kept.texts[0][key]) for key in ("a", "b")] == [False, False]
        for ticket_id in ("a", "b"):
            (example,) = kept.label(f"0/{ticket_id}", {"id": ticket_id, "case_type": "billing"})
            assert example["predicted"] == prediction  # scored against the first prediction, as it was


@pytest.mark.parametrize(
    "kept",
    [
        # nested, as tables kept texts until 2026-12-01
        {"at": 1_000_000.0, "text": {"id": "a", "reading": "charged twice", "predicted": {"case_type": ["bug", 4]}}},
        # flat, as tables kept them on 2026-12-01 (stop 20)
        {"at": 1_000_000.0, "id": "a", "reading": "charged twice", "predicted": '{"case_type":["bug",4]}'},
    ],
)
def test_texts_a_table_kept_before_are_still_joined(kept: dict) -> None:
    """A changelog written by an earlier version (texts in the table) is read as it was."""
    store: dict = {"0/a": kept}
    join = LabelJoin(store, horizon_seconds=3600, clock=Clock())
    text = {"id": "a", "reading": "charged twice", "predicted": {"case_type": ["bug", 4]}}
    (example,) = join.label("0/a", {"id": "a", "case_type": "billing"})
    assert example == {**text, "case_type": "billing"}
    join.remember("0/a", _doc("a", "other"))  # a re-send keeps the first prediction, in the table still
    assert store["0/a"]["reading"] == "charged twice charged twice refund" and join.texts == {}
    (example,) = join.label("0/a", {"id": "a", "case_type": "billing"})
    assert example["predicted"] == {"case_type": ["bug", 4]}
    assert entry_chars(kept) > len("charged twice")
    store["0/z"] = dict(kept, at=0.0)
    assert join.expire() == [] and list(store) == ["0/a"]  # and expires as before


def test_records_no_longer_current_leave_the_table() -> None:
    clock = Clock()
    table: dict = {}
    store = ChunkedStore(table, size_of=entry_chars)
    join = LabelJoin(store, horizon_seconds=3600, clock=clock)
    join.label("0/a", {"id": "a", "case_type": "bug"})
    join.label("0/b", {"id": "b", "case_type": "bug"})
    store.flush()
    first = set(table)
    clock.now += 1800
    join.label("0/c", {"id": "c", "case_type": "bug"})
    assert len(join.remember("0/a", _doc("a"))) == 1  # a's label joins: it waits no more
    store.flush()
    assert len(table) == 2
    clock.now += 1801  # b waited past the horizon, c has not
    assert [label["id"] for label in join.expire()] == ["b"]
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
        join.label(f"0/t{i}", {"id": f"t{i}", "case_type": "bug", "note": "x" * 500})
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
    from pipeline.tagging.tagger import FeatureMemo, ticket_features

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
    held = orjson.dumps(join.texts, option=orjson.OPT_NON_STR_KEYS).decode() + orjson.dumps(store).decode()
    assert "ana.berg" not in held and "4155550199" not in held and "Log line" not in held
    assert FeatureMemo().features([example])[0] == ticket_features("Export broken", body)
