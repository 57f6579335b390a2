"""The committed embedding model, the semantic grouper and the linear tagger (no broker)."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.patterns.semantic import SemanticGrouper
from pipeline.tagging.linear import LinearTagger
from pipeline.tagging.tagger import predicted_labels
from pipeline.text.cleaning import reading_text
from pipeline.text.embedding import MODEL_DIR, TicketEncoder

FIXTURE = Path(__file__).parent / "fixtures" / "embedding_vectors.json"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def encoder() -> TicketEncoder:
    return TicketEncoder()


def _other_model(encoder: TicketEncoder) -> TicketEncoder:
    other = copy.copy(encoder)
    other.model_id = "all-MiniLM-L6-v2-static@another-build#000000000000"
    return other


# -- the model -------------------------------------------------------------------------------


def test_committed_model_gives_the_stored_vectors(encoder: TicketEncoder) -> None:
    stored = json.loads(FIXTURE.read_text())
    assert encoder.model_id == stored["model_id"]
    vectors = encoder.encode(stored["texts"])
    assert vectors.dtype == np.float32
    assert np.allclose(vectors[:, :16], stored["first_16_dims"], atol=2e-5)
    assert np.allclose(vectors @ vectors[0], stored["cosines_to_first"], atol=2e-5)
    assert not vectors[-1].any()  # the empty text: zeros, not NaN


def test_a_batch_encodes_as_its_texts_one_by_one(encoder: TicketEncoder) -> None:
    texts = ["Export to CSV times out", "", "x", "Firefox crashes on start " * 30, "[UNK] token"]
    batch = encoder.encode(texts)
    alone = np.vstack([encoder.encode([t]) for t in texts])
    assert np.allclose(batch, alone, atol=1e-6)
    assert np.allclose(np.linalg.norm(batch[[0, 2, 3]], axis=1), 1.0, atol=1e-5)


def test_a_folder_without_the_model_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"lacks model\.safetensors, tokenizer\.json, config\.json"):
        TicketEncoder(tmp_path)


def test_a_ticket_is_embedded_from_the_tagger_reading() -> None:
    enc = TicketEncoder()
    ticket = {"subject": "Sync broken", "body": "It stopped syncing yesterday.\n> quoted reply\nThanks,\nAna"}
    expected = enc.encode([reading_text(ticket["subject"], ticket["body"])])
    assert np.array_equal(enc.encode_tickets([ticket]), expected)


def test_carried_token_ids_give_the_rows_of_tokenizing_again() -> None:
    enc = TicketEncoder()
    tickets = [
        {"subject": "Firefox won't load any page", "body": "since this morning nothing opens"},
        {"subject": "Refund", "body": "charged twice for my plan"},
        {"subject": "", "body": ""},
    ]
    readings = [reading_text(t["subject"], t["body"]) for t in tickets]
    vectors, ids, lengths = enc.encode_with_tokens(readings)
    ends = np.cumsum(lengths)
    packed = [enc.pack_tokens(ids[e - n : e]) for e, n in zip(ends, lengths, strict=True)]
    # the middle one without ids: tokenized here; the others embedded from theirs
    carried = enc.encode_tickets(tickets, [packed[0], None, packed[2]])
    assert np.array_equal(carried, vectors)
    assert packed[0] is not None and len(packed[0]) == 2 * lengths[0]


def test_packed_ids_that_cannot_be_the_model_s_are_tokenized_again() -> None:
    enc = TicketEncoder()
    ticket = {"subject": "Sync broken", "body": "it stopped"}
    expected = enc.encode_tickets([ticket])
    outside = np.array([len(enc.vectors) + 5], dtype="<u2").tobytes() if len(enc.vectors) < 65530 else b"\x00"
    assert enc.unpack_tokens(b"\x01\x02\x03") is None  # not whole ids
    assert enc.unpack_tokens(outside) is None
    assert np.array_equal(enc.encode_tickets([ticket], [outside]), expected)


def _distill_python() -> str | None:
    """A Python that can distil (``DISTILL_PYTHON``, or this one if it has torch and model2vec)."""
    if os.environ.get("DISTILL_PYTHON"):
        return os.environ["DISTILL_PYTHON"]
    if importlib.util.find_spec("torch") and importlib.util.find_spec("model2vec"):
        return sys.executable
    return None


@pytest.mark.distill
@pytest.mark.skipif(
    _distill_python() is None,
    reason="no Python with deploy/distill-requirements.txt (set DISTILL_PYTHON, e.g. the venv of "
    "deploy/build-embedding-model.sh)",
)
def test_the_rebuild_gives_the_committed_vectors(tmp_path: Path, encoder: TicketEncoder) -> None:
    script = ROOT / "deploy" / "build_embedding_model.py"
    subprocess.run(
        [str(_distill_python()), str(script), str(tmp_path), "--dims", "256", "--dtype", "int8"],
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    rebuilt = TicketEncoder(tmp_path)
    texts = json.loads(FIXTURE.read_text())["texts"]
    assert rebuilt.model_id == encoder.model_id
    assert np.array_equal(rebuilt.encode(texts), encoder.encode(texts))


# -- patterns --------------------------------------------------------------------------------


def _ticket(i: int, subject: str, customer: str | None = None) -> dict[str, str]:
    return {"id": str(i), "customer_id": customer or f"c{i}", "subject": subject, "body": "", "created_at": f"t{i:03d}"}


def test_paraphrases_join_one_pattern_and_unrelated_tickets_do_not(encoder: TicketEncoder) -> None:
    grouper = SemanticGrouper(encoder)
    subjects = [
        "Firefox won't load any page",
        "No web page loads in Firefox anymore",
        "How do I import my bookmarks from Chrome?",
        "Firefox does not open any website",
        "Importing bookmarks from Chrome into Firefox",
        "YouTube videos have no sound",
        "Pages never load in Firefox",
    ]
    patterns = [p.id for p in grouper.add_many([_ticket(i, s) for i, s in enumerate(subjects)])]
    loads = {patterns[i] for i in (0, 1, 3, 6)}
    bookmarks = {patterns[i] for i in (2, 4)}
    assert len(loads) == 1 and len(bookmarks) == 1
    assert len(loads | bookmarks | {patterns[5]}) == 3
    assert grouper.patterns[patterns[0]].tickets == 4


def test_grouping_does_not_depend_on_how_tickets_are_split_into_calls(encoder: TicketEncoder) -> None:
    subjects = ["Firefox won't load any page", "Pages never load", "Sync stopped", "Sync is broken", "No sound"] * 6
    tickets = [_ticket(i, s) for i, s in enumerate(subjects)]
    together = SemanticGrouper(encoder, merge_every=4)
    one_by_one = SemanticGrouper(encoder, merge_every=4)
    a = [p.id for p in together.add_many(tickets)]
    b = [one_by_one.add(t).id for t in tickets]
    assert [together.pattern_of(t["id"]).id for t in tickets] == [one_by_one.pattern_of(t["id"]).id for t in tickets]
    assert len(a) == len(b) == 30


def _unit(*xs: float, dims: int = 256) -> np.ndarray:
    v = np.zeros(dims, dtype=np.float32)
    v[: len(xs)] = xs
    return v / np.linalg.norm(v)


def test_converging_patterns_merge_keeping_customers_and_ids_map_to_the_survivor(encoder: TicketEncoder) -> None:
    grouper = SemanticGrouper(encoder, threshold=0.8, merge_threshold=0.8, merge_every=1, center_prior=0)
    first = grouper.add(_ticket(1, "a", "alice"), vector=_unit(1, 0))
    second = grouper.add(_ticket(2, "b", "bob"), vector=_unit(1, 1))  # cosine 0.71: a pattern of its own
    assert first.id != second.id and grouper.drain_merged() == []
    # cosine 0.95 to the second, 0.89 to the first: joins the second, whose centroid reaches the first (0.81)
    third = grouper.add(_ticket(3, "c", "carol"), vector=_unit(1, 0.5))
    assert third.id == second.id  # the larger survives
    assert grouper.drain_merged() == [(first.id, second.id)]
    assert set(grouper.patterns) == {second.id}
    survivor = grouper.patterns[second.id]
    assert survivor.tickets == 3 and sorted(survivor.customers) == ["alice", "bob", "carol"]
    assert grouper.resolve(first.id) == second.id
    assert grouper.pattern_of("1") is survivor
    assert survivor.first_at == "t001"
    grouper.forget(second.id)
    assert grouper.resolve(first.id) == first.id and grouper.pattern_of("1") is None


def test_a_pattern_checkpoint_of_another_embedding_model_is_refused(encoder: TicketEncoder) -> None:
    grouper = SemanticGrouper(encoder)
    grouper.add(_ticket(1, "Firefox won't load any page"))
    loaded = pickle.loads(pickle.dumps(grouper))
    loaded.attach(encoder)  # the same model: accepted
    with pytest.raises(ValueError, match=r"learned on the vectors of embedding model all-MiniLM-L6-v2-static@m2v"):
        pickle.loads(pickle.dumps(grouper)).attach(_other_model(encoder), "patterns.pkl")


# -- tags ------------------------------------------------------------------------------------

TOY = [
    ("I was charged twice this month", "billing"),
    ("Refund the double payment on my card", "billing"),
    ("My invoice shows the wrong amount", "billing"),
    ("The app crashes when I open settings", "bug"),
    ("Error 500 when saving a report", "bug"),
    ("Export button does nothing, then the page freezes", "bug"),
    ("Please add dark mode", "feature"),
    ("It would be great to export to Excel", "feature"),
    ("Can you support single sign-on?", "feature"),
]


def _learn_toy(tagger: LinearTagger, passes: int = 5) -> None:
    for k in range(passes):
        tagger.learn_batch(
            [{"id": f"{k}-{i}", "subject": s, "body": "", "case_type": y} for i, (s, y) in enumerate(TOY)]
        )


def test_the_linear_tagger_learns_a_toy_task(encoder: TicketEncoder) -> None:
    tagger = LinearTagger(encoder, fields=("case_type",), min_labels=5)
    _learn_toy(tagger)
    asked = ["I got billed two times", "The application crashed on startup", "Would love a dark theme"]
    said = [p["case_type"]["label"] for p in tagger.predict_many([{"subject": s, "body": ""} for s in asked])]
    assert said == ["billing", "bug", "feature"]
    assert tagger.learned["case_type"] == 45


def test_taggers_that_read_the_same_labels_in_the_same_order_agree_however_batched(encoder: TicketEncoder) -> None:
    labelled = [
        {"id": f"{k}-{i}", "subject": s, "body": "", "case_type": y} for k in range(4) for i, (s, y) in enumerate(TOY)
    ]
    one_call, many_calls = (LinearTagger(encoder, fields=("case_type",), batch=8) for _ in range(2))
    one_call.learn_batch(labelled)
    at = 0
    for size in (1, 5, 3, 11, 2, 7, 7):  # the same 36 labels in calls of other sizes
        many_calls.learn_batch(labelled[at : at + size])
        at += size
    a, b = one_call.models["case_type"], many_calls.models["case_type"]
    assert a.classes == b.classes
    assert np.array_equal(a._dense, b._dense) and np.array_equal(a._sparse, b._sparse)
    asked = [{"subject": "refund please", "body": ""}]
    assert one_call.predict_many(asked) == many_calls.predict_many(asked)


def test_a_correction_replaces_the_label_and_its_calibration_outcome(encoder: TicketEncoder) -> None:
    tagger = LinearTagger(encoder, fields=("case_type",), min_labels=1)
    _learn_toy(tagger)
    ticket = {"id": "t-1", "subject": "The export to Excel is missing", "body": ""}
    (prediction,), (bins,) = tagger.predict_binned([ticket])
    first = {**ticket, "case_type": "feature", "predicted": predicted_labels(prediction, bins)}
    tagger.learn_batch([first])
    seen_before = sum(tagger.calibration["case_type"].seen)
    tagger.learn_batch([{**first, "case_type": "bug"}])  # the agent corrects it
    assert tagger.predict_one(ticket)["case_type"]["label"] == "bug"
    assert tagger.corrections == 1
    assert tagger.learned["case_type"] == 46  # a correction replaces a label: not one more
    assert sum(tagger.calibration["case_type"].seen) == seen_before  # one outcome out, one in
    assert tagger.knows({**first, "case_type": "bug"}) and not tagger.knows(first)


def test_a_tagger_checkpoint_of_another_embedding_model_is_refused(encoder: TicketEncoder) -> None:
    tagger = LinearTagger(encoder, fields=("case_type",), batch=3)
    _learn_toy(tagger, passes=1)
    loaded = pickle.loads(pickle.dumps(tagger))
    loaded.attach(encoder)
    assert loaded.predict_one({"subject": "Please add dark mode", "body": ""})["case_type"]["label"] == "feature"
    with pytest.raises(ValueError, match=r"but this worker encodes with all-MiniLM-L6-v2-static@another-build"):
        pickle.loads(pickle.dumps(tagger)).attach(_other_model(encoder), "tagger.pkl")
    # restored into a running worker's tagger (as load_tagger does): the same check
    running = LinearTagger(_other_model(encoder), fields=("case_type",))
    with pytest.raises(ValueError, match=r"tagger\.pkl was learned on the vectors of embedding model all-MiniLM"):
        running.restore(pickle.loads(pickle.dumps(tagger)), "tagger.pkl")
    assert running.learned["case_type"] == 0  # left as it was


def test_model_dir_is_in_the_package() -> None:
    assert (MODEL_DIR / "PROVENANCE.md").exists()
    assert (MODEL_DIR / "model.safetensors").stat().st_size < 10_000_000
