"""The linear tagger as the product runs it: one order of labels, checkpoints, the replay's loop (no broker)."""

from __future__ import annotations

import asyncio
import base64
import copy
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
import scipy.sparse as sp
from aiokafka import TopicPartition

from pipeline.ingest.schema import parse_ticket
from pipeline.messages import Codec, TrainingBatch, encode
from pipeline.runtime.checkpoints import load_checkpoint
from pipeline.settings import Settings
from pipeline.tagging.choice import load_any_tagger, new_tagger, save_any_tagger, tagger_checkpoint
from pipeline.tagging.learn import LearnLabels
from pipeline.tagging.linear import LinearTagger, SoftmaxModel
from pipeline.tagging.tag import tag_tickets
from pipeline.tagging.tagger import TicketTagger, predicted_labels
from pipeline.text.embedding import TicketEncoder
from pipeline.topology import topology, training_partition, training_topic

SUBJECTS = [
    ("Charged twice for my subscription", "billing", "payments"),
    ("Refund has not arrived", "billing", "payments"),
    ("Invoice shows the wrong amount", "billing", "payments"),
    ("App crashes when I open reports", "bug", "reports"),
    ("Export to CSV fails with an error", "bug", "reports"),
    ("The dashboard freezes after login", "bug", "dashboard"),
    ("Please add dark mode", "feature_gap", "dashboard"),
    ("Could you support single sign-on", "feature_gap", "login"),
    ("Cannot log in with my password", "ux_confusion", "login"),
    ("Two-factor code never arrives", "ux_confusion", "login"),
]

PROBES = [
    {"subject": "I was billed two times", "body": ""},
    {"subject": "Reports crash on open", "body": ""},
    {"subject": "Add a dark theme please", "body": ""},
    {"subject": "Password login does not work", "body": ""},
]


@pytest.fixture(scope="module")
def encoder() -> TicketEncoder:
    return TicketEncoder()


def _labels(rounds: int = 6) -> list[dict[str, Any]]:
    """Labelled tickets, then corrections of some of them (an agent re-tags), in one order."""
    out = [
        {"id": f"t{k}-{i}", "subject": s, "body": "", "case_type": c, "product_area": a}
        for k in range(rounds)
        for i, (s, c, a) in enumerate(SUBJECTS)
    ]
    corrections = [
        {**out[i], "case_type": "bug" if out[i]["case_type"] != "bug" else "feature_gap"}
        for i in (3, 17, 40)
        if i < len(out)
    ]
    return out[:30] + corrections[:2] + out[30:50] + corrections[2:] + out[50:]


def _weights(tagger: LinearTagger) -> dict[str, tuple[list[str], np.ndarray, np.ndarray, np.ndarray]]:
    return {name: (m.classes, m._dense, m._sparse, m._bias) for name, m in tagger.models.items()}


def _same_model(a: LinearTagger, b: LinearTagger) -> None:
    for name, (classes, dense, sparse, bias) in _weights(a).items():
        other = _weights(b)[name]
        assert classes == other[0], name
        assert np.array_equal(dense, other[1]) and np.array_equal(sparse, other[2]) and np.array_equal(bias, other[3])
    assert a.learned == b.learned and a.corrections == b.corrections and a.version == b.version
    assert {n: q.summary() for n, q in a.quality.items()} == {n: q.summary() for n, q in b.quality.items()}


def _with_predictions(tagger: LinearTagger, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The training examples the worker makes: each ticket with the prediction made when it was first seen."""
    predictions, bins = tagger.predict_binned(docs)
    return [{**d, "predicted": predicted_labels(p, b)} for d, p, b in zip(docs, predictions, bins, strict=True)]


def test_taggers_fed_the_same_labels_in_other_batches_or_restored_midway_predict_identically(
    encoder: TicketEncoder, tmp_path: Path
) -> None:
    """Two workers read the training topic in batches of their own; a third is killed half-way
    and restarted from its checkpoint: all three end with the same weights and predictions."""
    examples = _with_predictions(LinearTagger(encoder), _labels())
    assert len(examples) == 63
    whole, small = LinearTagger(encoder, min_labels=5), LinearTagger(encoder, min_labels=5)
    whole.learn_batch(examples)
    at = 0
    for size in (1, 7, 16, 3, 30, 2, 4):  # the same 63 labels, in other calls
        small.learn_batch(examples[at : at + size])
        at += size
    assert at == len(examples)

    first = LinearTagger(encoder, min_labels=5)
    first.learn_batch(examples[:37])  # 37: labels are held, a step not full
    assert 0 < first.held("case_type") < first.batch
    path = tmp_path / "linear-tagger-checkpoint.pickle"
    save_any_tagger(first, {0: 37}, path)
    restarted = LinearTagger(encoder, min_labels=5)
    assert load_any_tagger(restarted, path) == {0: 37}
    restarted.learn_batch(examples[37:50])
    restarted.learn_batch(examples[50:])

    assert whole.corrections == 3 and whole.learned["case_type"] == 60 and whole.quality["case_type"].labelled == 63
    for other in (small, restarted):
        _same_model(whole, other)
        assert other.predict_many(PROBES) == whole.predict_many(PROBES)
    said = [p["case_type"]["label"] for p in whole.predict_many(PROBES)]
    assert said[1:] == ["bug", "feature_gap", "ux_confusion"]  # (one "charged twice" was corrected to a bug)


def test_a_correction_wins_over_the_label_it_replaces(encoder: TicketEncoder) -> None:
    tagger = LinearTagger(encoder, min_labels=1)
    tagger.learn_batch(_labels()[:30])
    wrong = {"id": "w", "subject": "Charged twice on my invoice", "body": "", "case_type": "bug"}
    tagger.learn_batch(_with_predictions(tagger, [wrong]))
    tagger.learn_batch(_with_predictions(tagger, [{**wrong, "case_type": "billing"}]))
    assert tagger.predict_one(wrong)["case_type"]["label"] == "billing"
    assert tagger.corrections == 1 and tagger.held("case_type") == 0  # a correction ends its step


def test_the_labels_of_a_ticket_are_remembered_for_the_label_horizon_and_no_longer(encoder: TicketEncoder) -> None:
    day = 86_400
    tagger = LinearTagger(encoder, min_labels=1, remember_seconds=2 * day)
    docs = [
        {"id": f"t{n}", "subject": s, "body": "", "case_type": c, "created": 1_700_000_000 + n * 3600 * 6}
        for n, (s, c, _) in enumerate(SUBJECTS * 4)
    ]
    tagger.learn_batch(docs)  # 40 tickets, six hours apart: ten days
    remembered = sorted(int(k[0][1:]) for k in tagger._taught)
    assert remembered == list(range(31, 40))  # two days behind the newest: the last nine (and itself)
    assert tagger.knows(docs[-1]) and not tagger.knows(docs[0])  # an old re-send would be learned again
    # a correction of a remembered ticket is still one
    tagger.learn_batch([{**docs[-2], "case_type": "billing"}])
    assert tagger.corrections == 1
    # labels joined later carry no time: they count as the newest
    tagger.learn_batch([{"id": "late", "subject": "Refund please", "body": "", "case_type": "billing"}])
    assert tagger.knows({"id": "late", "case_type": "billing"})
    # a checkpoint keeps what it remembers; how long is the loading worker's setting
    restored = LinearTagger(encoder, remember_seconds=day)
    restored.restore(pickle.loads(pickle.dumps(tagger)))
    assert restored.remember_seconds == day and restored._taught == tagger._taught


def test_process_many_predicts_as_one_ticket_at_a_time(encoder: TicketEncoder) -> None:
    """The backtest tags 500 tickets a call, the replay a chunk: the same predictions, scores and
    weights as one at a time (each ticket predicted before its own labels are learned)."""
    tickets = _labels(5)
    tickets.insert(20, {"id": "u-1", "subject": "Refund please", "body": ""})  # one without labels
    one_by_one, batched = LinearTagger(encoder, min_labels=3), LinearTagger(encoder, min_labels=3)
    expected = [one_by_one.process_many([t])[0] for t in tickets]
    assert batched.process_many(tickets[:29]) + batched.process_many(tickets[29:]) == expected
    _same_model(one_by_one, batched)
    assert [c.seen for c in one_by_one.calibration.values()] == [c.seen for c in batched.calibration.values()]
    assert expected[0]["case_type"] == {"label": None, "confidence": 0.0, "uncertain": True}
    assert expected[-1]["case_type"]["label"] is not None


def test_the_linear_tagger_learns_from_one_training_partition(encoder: TicketEncoder, tmp_path: Path) -> None:
    settings = Settings(app_id="tp", partitions=4, tagging_enabled=True, data_dir=str(tmp_path))
    assert training_topic(settings) == ("tp-tagger-training-ordered", 1)
    assert topology(settings)["training"].partitions == 1
    assert tagger_checkpoint(settings).name == "linear-tagger-checkpoint.pickle"
    assert {training_partition(settings, p) for p in range(4)} == {0}
    words = Settings(app_id="tp", partitions=4, tagger="words")
    assert training_topic(words) == ("tp-tagger-training", 4) and isinstance(new_tagger(words), TicketTagger)
    assert tagger_checkpoint(words).name == "tagger-checkpoint.pickle"

    tagger = new_tagger(settings)
    assert isinstance(tagger, LinearTagger)
    raws = [
        orjson.dumps(
            {
                "id": f"t{i}",
                "created_at": "2026-03-02T09:00:00+00:00",
                "customer_id": "c1",
                "subject": s,
                "body": "",
                "case_type": c,
            }
        )
        for i, (s, c, _) in enumerate(SUBJECTS)
    ]
    tagged = tag_tickets(tagger, [parse_ticket(r) for r in raws], settings.partitions, training_topic(settings)[1])
    assert list(tagged.labelled) == [0] and len(tagged.labelled[0]) == 10  # every id's labels in partition 0
    assert len(tagged.to_join) > 1  # the texts still by their id's partition

    learn = LearnLabels(settings, training_topic(settings)[0], tagger, _Sink(), asyncio.Event(), preloaded={})
    records = [SimpleNamespace(value=encode(TrainingBatch(tagged.labelled[0])), offset=6)]
    positions: dict[int, int] = {}
    assert learn.on_batch({TopicPartition("tp-tagger-training-ordered", 0): records}, positions) == 10
    assert positions == {0: 7} and tagger.learned["case_type"] == 10 and tagger.held("case_type") == 10
    assert [p.tags["target"] for p in learn.quality_points()] == ["case_type"]


def test_a_warm_start_or_checkpoint_of_another_kind_or_embedding_model_is_refused(
    encoder: TicketEncoder, tmp_path: Path
) -> None:
    words = tmp_path / "words.pickle"
    words.write_bytes(pickle.dumps(TicketTagger()))
    with pytest.raises(TypeError, match=r"words\.pickle \(TICKETPULSE_TAGGER_MODEL\) is a naive Bayes model"):
        load_any_tagger(LinearTagger(encoder), tmp_path / "none.pickle", str(words))

    trained = LinearTagger(encoder)
    trained.learn_batch(_labels(2))
    path = tmp_path / "linear-tagger-checkpoint.pickle"
    save_any_tagger(trained, {0: 20}, path)
    state = load_checkpoint(path.read_bytes())
    assert state["embedding_model"] == encoder.model_id and encoder.model_id.startswith("all-MiniLM-L6-v2")
    other = copy.copy(encoder)
    other.model_id = "all-MiniLM-L6-v2-static@another-build#000000000000"
    running = LinearTagger(other)
    with pytest.raises(ValueError, match=r"linear-tagger-checkpoint\.pickle was learned on the vectors of"):
        load_any_tagger(running, path)
    assert running.learned["case_type"] == 0

    saved = tmp_path / "warm.pickle"
    saved.write_bytes(pickle.dumps(trained))  # as `ticketpulse replay --save-model` writes it
    warm = LinearTagger(encoder)
    assert load_any_tagger(warm, tmp_path / "none.pickle", str(saved)) == {}
    assert warm.predict_many(PROBES) == trained.predict_many(PROBES)


class _Sink:
    async def write(self, points: list[Any]) -> None:
        pass


class _Admin:
    """The admin calls topic creation makes, over topics held in a dict (name -> partitions)."""

    def __init__(self, topics: dict[str, int]) -> None:
        self.topics = dict(topics)

    def list_topics(self) -> list[str]:
        return list(self.topics)

    def create_topics(self, new: dict[str, dict[str, Any]], timeout_ms: int) -> None:
        self.topics.update({name: spec["num_partitions"] for name, spec in new.items()})

    def describe_configs(self, resources: list[Any], config_filter: str) -> dict[str, Any]:
        return {"topic": {}}

    def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        return [{"name": n, "partitions": list(range(self.topics[n]))} for n in names]


def test_the_ordered_training_topic_is_created_with_one_partition_and_another_is_refused() -> None:
    from pipeline.runtime.kafka import BrokerError, _ensure_topics, all_topics

    settings = Settings(app_id="tp", partitions=4)
    admin = _Admin({})
    _ensure_topics(admin, settings, 1.0)  # type: ignore[arg-type]
    assert admin.topics["tp-tagger-training-ordered"] == 1 and admin.topics["tp-texts-to-join"] == 4
    assert "tp-tagger-training" not in admin.topics and set(admin.topics) == set(all_topics(settings))
    words = Settings(app_id="tp", partitions=4, tagger="words")
    _ensure_topics(admin, words, 1.0)  # type: ignore[arg-type]
    assert admin.topics["tp-tagger-training"] == 4
    # made with four partitions (by hand, or a tool that creates topics by writing to them)
    admin.topics["tp-tagger-training-ordered"] = 4
    with pytest.raises(BrokerError, match=r"'tp-tagger-training-ordered' has 4 partitions, but the linear tagger"):
        _ensure_topics(admin, settings, 1.0)  # type: ignore[arg-type]


def test_a_step_marker_makes_every_worker_learn_its_held_labels_at_one_point(
    encoder: TicketEncoder, tmp_path: Path
) -> None:
    """A field labelled rarely: its labels would wait for 16. A worker that has read every label
    and held some for TICKETPULSE_TAGGER_STEP_SECONDS sends a step marker; every worker, in
    whatever batches it reads the topic, learns the held labels where the marker is."""
    settings = Settings(app_id="tp", data_dir=str(tmp_path), tagger_step_seconds=60)
    examples = _with_predictions(LinearTagger(encoder), _labels()[:20])
    values = [
        encode(TrainingBatch(examples[:12])),
        encode(TrainingBatch([], step=True)),
        encode(TrainingBatch(examples[12:])),
    ]
    records = [SimpleNamespace(value=v, offset=k) for k, v in enumerate(values)]
    tp = TopicPartition("tp-tagger-training-ordered", 0)

    def worker(*batches: list[SimpleNamespace]) -> tuple[LearnLabels, dict[int, int]]:
        learn = LearnLabels(settings, tp.topic, LinearTagger(encoder), _Sink(), asyncio.Event(), preloaded={})
        positions: dict[int, int] = {}
        for batch in batches:
            learn.on_batch({tp: batch}, positions)
        return learn, positions

    one, positions = worker(records)
    other, _ = worker(records[:1], records[1:2], records[2:])
    assert positions == {0: 3}
    assert isinstance(one.tagger, LinearTagger) and isinstance(other.tagger, LinearTagger)
    _same_model(one.tagger, other.tagger)
    by_hand = LinearTagger(encoder)
    by_hand.learn_batch(examples[:12])
    by_hand.flush()  # the 12 held: learned at the marker
    by_hand.learn_batch(examples[12:])
    _same_model(one.tagger, by_hand)
    assert one.tagger.held("case_type") == 8  # after the marker: 8 held, under a step

    # the marker is due once this worker has read every label and held some for 60 s
    assert not one.step_due(caught_up=True, now=1000.0)  # holding from now on
    assert not one.step_due(caught_up=True, now=1059.0)
    assert not one.step_due(caught_up=False, now=1061.0)  # still reading: its steps would come early
    assert one.step_due(caught_up=True, now=1061.0)
    sent: list[bytes] = []

    async def send(marker: bytes) -> None:
        sent.append(marker)

    one.send_step, one.holding_since = send, -1e9
    asyncio.run(one.maybe_send_step(caught_up=True))
    asyncio.run(one.maybe_send_step(caught_up=True))  # not again within 60 s
    assert [orjson.loads(m) for m in sent] == [{"examples": [], "step": True}]
    words = LearnLabels(settings, tp.topic, TicketTagger(), _Sink(), asyncio.Event(), preloaded={})
    assert not words.step_due(caught_up=True, now=1e9)  # naive Bayes holds nothing


def test_a_reading_kept_from_tagging_gives_the_features_encoding_it_again_gives(encoder) -> None:
    """A labelled ticket is encoded when tagged and found again when its label is learned:
    the kept rows are the rows a fresh encoding gives, in any batch."""
    tickets = [
        {"id": f"k{i}", "reading": f"{s} (order {i})" + " and more words" * (i % 4)}
        for i, (s, _, _) in enumerate(SUBJECTS * 3)
    ]
    tagging, fresh = LinearTagger(encoder), LinearTagger(encoder)
    tagging.features(tickets[:17])  # as the tag stage would, in one batch
    dense, sparse = tagging.features(tickets[5:25])  # learned later, in another batch
    assert tagging._readings.hits == 12  # k5 to k16 were kept
    fresh_dense, fresh_sparse = fresh.features(tickets[5:25])
    assert np.array_equal(dense, fresh_dense)
    assert (sparse != fresh_sparse).nnz == 0
    # a text that changed under the same id is encoded anew
    changed = [{**tickets[5], "reading": "something else entirely"}]
    assert not np.array_equal(tagging.features(changed)[0], dense[:1])
    # nothing of it is pickled
    assert "_readings" not in pickle.loads(pickle.dumps(tagging)).__dict__


def test_a_training_example_carries_its_tokens_and_every_worker_embeds_them_alike(encoder) -> None:
    """The tag stage puts the reading's token ids on a labelled ticket's training example:
    a worker that never saw the ticket embeds them, to the features tokenizing gives; ids
    of another model, or outside the vocabulary, are not trusted (the reading is tokenized)."""
    settings = Settings(app_id="tp")
    tickets = [
        parse_ticket(
            orjson.dumps(
                {
                    "id": f"c{i}",
                    "created_at": "2026-03-02T10:00:00+00:00",
                    "customer_id": f"u{i}",
                    "subject": s,
                    "body": "since this morning",
                    "case_type": c,
                }
            )
        )
        for i, (s, c, _) in enumerate(SUBJECTS)
    ]
    tagged = tag_tickets(LinearTagger(encoder), tickets, settings.partitions, 1)
    (examples,) = tagged.labelled.values()
    assert len(examples) == len(SUBJECTS)
    assert all(e["tokens"] and e["tokens_of"] == encoder.model_id for e in examples)
    # as the training topic carries them: packed ids, base64 in the JSON
    examples = Codec(TrainingBatch).decode(encode(TrainingBatch(examples))).examples
    assert all(isinstance(e["tokens"], str) for e in examples)
    other_worker, reference = LinearTagger(encoder), LinearTagger(encoder)
    dense, sparse = other_worker.features(examples)
    plain = [{k: v for k, v in e.items() if k not in ("tokens", "tokens_of")} for e in examples]
    ref_dense, ref_sparse = reference.features(plain)
    assert np.array_equal(dense, ref_dense) and (sparse != ref_sparse).nnz == 0
    assert other_worker._readings.hits == 0  # embedded from the ids, not found already encoded
    # a worker of the version before sent the ids as a list: embedded alike
    listed = [
        {**e, "id": f"{e['id']}-listed", "tokens": encoder.unpack_tokens(base64.b64decode(e["tokens"])).tolist()}
        for e in examples
    ]
    assert np.array_equal(LinearTagger(encoder).features(listed)[0], ref_dense)
    # untrusted ids: tokenized here, the same features
    out_of_vocabulary = base64.b64encode(np.array([65535], dtype="<u2").tobytes()).decode()
    for bad in (
        {"tokens_of": "another-model@1"},
        {"tokens": [10**9]},
        {"tokens": "not ids"},
        {"tokens": out_of_vocabulary},
        {"tokens": "AA=="},  # one byte: not a whole id
    ):
        odd = [{**e, **bad, "id": f"{e['id']}-odd"} for e in examples[:2]]
        got = LinearTagger(encoder).features(odd)[0]
        assert np.array_equal(got, ref_dense[:2]), bad


def test_a_step_on_rows_of_a_batch_learns_what_a_step_on_those_rows_alone_learns(encoder: TicketEncoder) -> None:
    """The learning step reads its rows from the batch's arrays (no scipy slice): the same
    weights, to float rounding, as a step on a matrix of those rows alone."""
    tickets = [{"subject": s, "body": f"since this morning (ticket {i})"} for i, (s, _, _) in enumerate(SUBJECTS * 4)]
    labels = [case_type for _, case_type, _ in SUBJECTS * 4]
    dense, sparse = LinearTagger(encoder).features(tickets)
    by_rows, by_slices = SoftmaxModel(encoder.dims, 2**15), SoftmaxModel(encoder.dims, 2**15)
    for start in range(0, len(labels), 5):
        stop = min(start + 5, len(labels))
        by_rows.learn_rows(dense, sparse, start, stop, labels[start:stop])
        by_slices.learn(dense[start:stop], sp.csr_matrix(sparse[start:stop].toarray()), labels[start:stop])
    assert by_rows.classes == by_slices.classes
    np.testing.assert_allclose(by_rows.scores(dense, sparse), by_slices.scores(dense, sparse), atol=1e-4)
    assert by_rows.scores(dense, sparse).argmax(axis=1).tolist() == [by_rows.index[c] for c in labels]
