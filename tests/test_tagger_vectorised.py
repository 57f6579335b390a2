"""The tagger's batch path (dense counts, one sparse product a field) predicts as the per-ticket loop it replaced."""

from __future__ import annotations

import copy
import pickle
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from pipeline.tagging.features import BatchWords
from pipeline.tagging.naive_bayes import AlignedMultinomialNB
from pipeline.tagging.quality import margin_bins
from pipeline.tagging.tagger import FEATURE_BUCKETS, FIELDS, TicketTagger
from pipeline.testbed.generator import TicketGenerator
from pipeline.text.cleaning import document_reading


def _reference_proba(model: AlignedMultinomialNB, x: Iterable[Any]) -> tuple[list[Any], np.ndarray]:
    """One ticket's class probabilities by the per-word, per-class loop of the code before the dense counts."""
    classes = sorted(c for c in model.class_totals if model.class_counts.get(c, 0) > 0)
    if not classes:
        return [], np.zeros(0)
    priors = np.array([model.class_counts[c] for c in classes], dtype=float)
    totals = np.array([model.class_totals[c] for c in classes], dtype=float)
    jll = np.log(priors / priors.sum())
    for f in x:
        per_class = model.feature_counts.get(f)
        if per_class:
            counts = np.array([per_class.get(c, 0) for c in classes], dtype=float)
            jll += np.log(counts + model.alpha) - np.log(totals + model.alpha * model.n_terms)
    jll -= jll.max()
    proba = np.exp(jll)
    return classes, proba / proba.sum()


def _reference_process_many(tagger: TicketTagger, tickets: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``process_many`` as it was: each ticket predicted by the loop above, scored, then learned, one by one."""
    results = []
    for ticket in tickets:
        x = tagger.features(document_reading(ticket))
        predicted: dict[str, dict[str, Any]] = {}
        bins: dict[str, int] = {}
        for name, model in tagger.models.items():
            if not tagger.learned[name]:
                predicted[name] = {"label": None, "confidence": 0.0, "uncertain": True}
                continue
            classes, proba = _reference_proba(model, x)
            label, confidence = (classes[int(proba.argmax())], float(proba.max())) if classes else (None, 0.0)
            if len(classes) > 1:
                bins[name] = int(margin_bins(proba[None, :])[0])
                if tagger.calibrate:
                    calibrated = tagger.calibration[name].confidence(np.array([bins[name]]), np.array([confidence]))
                    confidence = float(calibrated[0])
            uncertain = label is None or tagger.learned[name] < tagger.min_labels or confidence < tagger.min_confidence
            predicted[name] = {"label": label, "confidence": round(confidence, 4), "uncertain": uncertain}
        for name, label in tagger._new_labels(ticket).items():
            guess = predicted[name]["label"]
            tagger.quality[name].add(label, guess)
            if guess is not None and name in bins:
                tagger.calibration[name].add(bins[name], guess == label)
            tagger._learn(name, [x], [label])
        results.append(predicted)
    return results


def _tickets(n: int, seed: int) -> list[dict[str, Any]]:
    """Generated tickets, with what a helpdesk sends besides: re-sends, corrections of an earlier
    label (one to a class no other ticket has, taken back later), labels on tickets sent before
    without any, and empty tickets."""
    rng = random.Random(seed)
    rows = [t.payload for t in TicketGenerator(datetime(2026, 3, 2, tzinfo=UTC), days=1, seed=seed, scale=1).tickets()]
    out: list[dict[str, Any]] = []
    for row in rows[:n]:
        out.append(row)
        roll = rng.random()
        if out and roll < 0.05:
            out.append(dict(rng.choice(out)))  # a re-send
        elif roll < 0.10:
            earlier = rng.choice(out)
            name = rng.choice(FIELDS)
            if earlier.get(name):
                out.append({**earlier, name: rng.choice(["bug", "billing", "low", "urgent", "reports"])})
        elif roll < 0.12:
            out.append({"id": f"E{len(out)}", "subject": "", "body": "", "case_type": "bug"})
    out.insert(len(out) // 3, {**rows[0], "severity": "only-once"})  # a class of one example
    out.insert(2 * len(out) // 3, {**rows[0], "severity": "normal"})  # corrected: the class goes again
    return out


def _batches(tickets: list[dict[str, Any]], rng: random.Random) -> Iterable[list[dict[str, Any]]]:
    start = 0
    while start < len(tickets):
        size = rng.choice([1, 2, 7, 50, 120, 500])
        yield tickets[start : start + size]
        start += size


@pytest.mark.parametrize(
    ("feature_buckets", "remembered"),
    [(FEATURE_BUCKETS, 1_000_000), (64, 1_000_000), (None, 1_000_000), (FEATURE_BUCKETS, 7)],
)
def test_process_many_predicts_scores_and_learns_as_the_per_ticket_loop(
    feature_buckets: int | None, remembered: int
) -> None:
    """``remembered`` 7: ids forgotten within a batch, so that a re-send is learned again, unforeseen."""
    tickets = _tickets(400, seed=5)
    assert len(tickets) > 420  # re-sends, corrections and empty tickets among them
    ours, reference = TicketTagger(feature_buckets=feature_buckets), TicketTagger(feature_buckets=feature_buckets)
    ours.max_remembered = reference.max_remembered = remembered
    rng = random.Random(1)
    got, expected = [], []
    for batch in _batches(tickets, rng):
        got.extend(ours.process_many(batch))
        expected.extend(_reference_process_many(reference, batch))
    assert len(got) == len(expected) == len(tickets)
    for row, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
        for name in FIELDS:
            assert mine[name]["label"] == theirs[name]["label"], (row, name)
            assert mine[name]["uncertain"] == theirs[name]["uncertain"], (row, name)
            assert mine[name]["confidence"] == pytest.approx(theirs[name]["confidence"], abs=1e-9), (row, name)
    assert sum(p["severity"]["label"] == "only-once" for p in got) == 0  # learned once, never the most likely
    assert ours.corrections == reference.corrections > 0
    assert ours._taught == reference._taught
    for name in FIELDS:
        assert ours.learned[name] == reference.learned[name] > 100
        assert list(ours.quality[name].pairs) == list(reference.quality[name].pairs)
        assert ours.calibration[name] == reference.calibration[name]
        mine_nb, theirs_nb = ours.models[name], reference.models[name]
        assert mine_nb.class_counts == theirs_nb.class_counts and mine_nb.class_totals == theirs_nb.class_totals
        assert mine_nb.feature_counts == theirs_nb.feature_counts
    if remembered > len(tickets) * len(FIELDS):  # else the correction may come after its ticket's id went
        assert "only-once" not in ours.models["severity"].class_counts  # forgotten with its only example


def test_a_batch_learned_row_by_row_has_the_per_ticket_probabilities_within_1e_9() -> None:
    """``predict_proba_learning``: each row as the loop predicts it after learning the rows before it."""
    tagger = TicketTagger()
    tickets = _tickets(300, seed=8)
    xs = [tagger.features(document_reading(t)) for t in tickets]
    rng = random.Random(3)
    ours, reference = AlignedMultinomialNB(), AlignedMultinomialNB()
    compared = new_classes_mid_batch = 0
    start = 0
    while start < len(xs):
        size = rng.choice([1, 5, 40, 90])
        rows, labels = xs[start : start + size], [t.get("product_area") for t in tickets[start : start + size]]
        if rng.random() < 0.3:  # a class no row learned before
            labels = [f"area-{start}" if y and rng.random() < 0.2 else y for y in labels]
        classes, proba, n_classes = ours.predict_proba_learning(BatchWords(rows), labels)
        for k, (x, y) in enumerate(zip(rows, labels, strict=True)):
            want_classes, want = _reference_proba(reference, x)
            assert n_classes[k] == len(want_classes)
            got = dict(zip(classes, proba[k].tolist(), strict=True))
            for c, p in zip(want_classes, want.tolist(), strict=True):
                assert got.pop(c) == pytest.approx(p, abs=1e-9, rel=0)
            assert all(p == 0.0 for p in got.values())  # classes the model learns only after this row
            new_classes_mid_batch += bool(got)
            compared += 1
            if y is not None:
                reference.learn_present([x], [y])
        # learned three ways: the batch's index at once, word by word, or through River's learn_one
        way = rng.choice(["indexed", "present", "river"])
        if way == "indexed":
            ours.learn_indexed(BatchWords(rows), rows, labels)
        else:
            for x, y in zip(rows, labels, strict=True):
                if y is not None:
                    ours.learn_present([x], [y]) if way == "present" else ours.learn_one(dict.fromkeys(x, 1), y)
        start += size
    assert compared == len(xs) and new_classes_mid_batch > 0
    assert ours.feature_counts == reference.feature_counts


def _probabilities(model: AlignedMultinomialNB, xs: Sequence[Mapping[Any, float]]) -> dict[Any, list[float]]:
    classes, proba = model.predict_proba_present(xs)
    return dict(zip(classes, proba.T.tolist(), strict=True))


def _same(these: dict[Any, list[float]], those: dict[Any, list[float]], tolerance: float = 1e-12) -> bool:
    return these.keys() == those.keys() and all(np.allclose(these[c], those[c], rtol=0, atol=tolerance) for c in these)


def test_dense_counts_follow_what_the_dicts_learn_forget_and_load() -> None:
    tagger = TicketTagger(feature_buckets=2**12)
    tickets = _tickets(200, seed=11)
    tagger.process_many(tickets[:150])
    model = tagger.models["case_type"]
    xs = [tagger.features(document_reading(t)) for t in tickets[150:]]
    before = _probabilities(model, xs)
    expected = {c: [] for c in before}
    for x in xs:
        classes, proba = _reference_proba(model, x)
        for c, p in zip(classes, proba.tolist(), strict=True):
            expected[c].append(p)
    assert before.keys() == expected.keys()
    for c in before:
        assert before[c] == pytest.approx(expected[c], abs=1e-9, rel=0)

    # pickled without the dense counts (the checkpoint as before): made again when loaded
    assert "_dense" not in model.__getstate__()
    loaded = pickle.loads(pickle.dumps(model))  # the bytes just made
    assert loaded._dense is None
    assert _same(_probabilities(loaded, xs), before)

    # counts changed behind the model's back (counts, not presence, through River): still in step
    behind = copy.deepcopy(model)
    word = next(iter(xs[0]))
    behind.learn_one({word: 3.0}, "bug")
    behind.feature_counts[word]["bug"] += 2
    behind.class_totals["bug"] += 2
    reference = copy.deepcopy(behind)
    reference._dense = None
    assert _same(_probabilities(behind, xs), _probabilities(reference, xs))
    dense = behind.dense_counts()
    # the array holds the logs alone (the counts stay in the dicts): the log of the count read back
    count = behind.feature_counts[word]["bug"]
    assert dense.logs[dense.row_of[word], dense.col_of["bug"]] == np.log(count + behind.alpha)
    assert behind.feature_counts[word]["bug"] == model.feature_counts[word]["bug"] + 5

    # a correction forgets an example's counts: the rows it touched are read again
    corrected = {**tickets[10], "case_type": "feature_gap" if tickets[10].get("case_type") != "feature_gap" else "bug"}
    if tickets[10].get("case_type"):
        tagger.process_many([corrected])
        model = tagger.models["case_type"]
        fresh = copy.deepcopy(model)
        fresh._dense = None
        assert _same(_probabilities(model, xs), _probabilities(fresh, xs))


def test_dense_rows_grow_by_doubling_but_never_past_the_features_a_model_can_hold() -> None:
    buckets = 3000
    rng = random.Random(3)
    xs = [[rng.randrange(buckets) for _ in range(20)] for _ in range(1200)]
    ys = [rng.choice(["bug", "billing", "ux_confusion"]) for _ in xs]
    model = AlignedMultinomialNB()
    model.max_features = buckets
    model.learn_present(xs[:100], ys[:100])
    rows = []
    for start in range(100, len(xs), 100):
        batch = BatchWords(xs[start : start + 100])
        model.predict_proba_learning(batch, ys[start : start + 100])  # the first: the array read from the dicts
        model.learn_indexed(batch, xs[start : start + 100], ys[start : start + 100])
        rows.append(model.dense_counts().logs.shape[0])
    assert len(model.feature_counts) > 2900
    # read whole at the features of 100 tickets (1,455 rows), doubled (2,910), then to the buckets (not 5,820)
    assert rows[0] < buckets and rows[-1] == buckets == max(rows)
    fresh = copy.deepcopy(model)
    fresh._dense = None
    assert _same(_probabilities(model, xs[:50]), _probabilities(fresh, xs[:50]))


def test_the_tagger_bounds_its_models_dense_rows_by_its_buckets_also_when_loaded() -> None:
    tagger = TicketTagger(feature_buckets=1500)
    assert {m.max_features for m in tagger.models.values()} == {1500}
    loaded = pickle.loads(pickle.dumps(tagger))  # the bytes just made
    assert {m.max_features for m in loaded.models.values()} == {1500}
    words = TicketTagger(feature_buckets=None)
    assert {m.max_features for m in words.models.values()} == {None}
    words.hash_features(2**12)
    assert {m.max_features for m in words.models.values()} == {2**12}


def test_counts_not_whole_are_read_from_the_dicts_and_predict_as_the_loop() -> None:
    """River's ``learn_one`` takes counts, not presence: a half count cannot be read back from its log."""
    tagger = TicketTagger()
    tickets = _tickets(200, seed=9)
    xs = [tagger.features(document_reading(t)) for t in tickets]
    labels = [t.get("product_area") for t in tickets]
    ours, reference = AlignedMultinomialNB(), AlignedMultinomialNB()
    for model in (ours, reference):
        model.learn_present(xs[:20], ["reports"] * 20)
    ours.predict_proba_present(xs[:10])  # the dense counts made, whole numbers so far
    assert ours.dense_counts().integral
    half = dict.fromkeys(list(xs[0])[:3], 0.5)
    for model in (ours, reference):
        model.learn_one(half, "reports")
    for start in range(20, len(xs), 60):
        rows, ys = xs[start : start + 60], labels[start : start + 60]
        classes, proba, _ = ours.predict_proba_learning(BatchWords(rows), ys)
        for k, (x, y) in enumerate(zip(rows, ys, strict=True)):
            want_classes, want = _reference_proba(reference, x)
            got = dict(zip(classes, proba[k].tolist(), strict=True))
            for c, p in zip(want_classes, want.tolist(), strict=True):
                assert got.pop(c) == pytest.approx(p, abs=1e-9, rel=0)
            if y is not None:
                reference.learn_present([x], [y])
        ours.learn_indexed(BatchWords(rows), rows, ys)
    assert not ours.dense_counts().integral
    assert ours.feature_counts == reference.feature_counts
    fresh = copy.deepcopy(ours)
    fresh._dense = None
    assert _same(_probabilities(ours, xs[:50]), _probabilities(fresh, xs[:50]))
