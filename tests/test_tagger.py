from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from river import naive_bayes

from pipeline.tagging.tagger import (
    FEATURE_BUCKETS,
    FIELDS,
    FeatureBuckets,
    FeatureMemo,
    TicketTagger,
    clean_text,
    load_tagger,
    predicted_labels,
    reading_features,
    reading_text,
    save_tagger,
    ticket_features,
)

from .conftest import TICKETPULSE

TRAIN = [
    ("Charged twice", "my card was charged twice, please refund", "billing", "payments", "high"),
    ("Refund request", "I want a refund for the invoice", "billing", "payments", "normal"),
    ("App crashes on start", "error 500 when I open the dashboard", "bug", "dashboard", "high"),
    ("Dashboard broken", "the chart shows an error and crashes", "bug", "dashboard", "urgent"),
    ("How do I export?", "where is the export button, I cannot find it", "ux_confusion", "reports", "low"),
    ("Where is the CSV export", "how do I find the export setting", "ux_confusion", "reports", "low"),
]


def _ticket(i: int, subject: str, body: str, case: str | None, area: str | None, sev: str | None) -> dict:
    return {"id": f"T{i}", "subject": subject, "body": body, "case_type": case, "product_area": area, "severity": sev}


def test_clean_text_drops_code_quotes_traces_signatures_and_contacts() -> None:
    body = (
        "The export fails.\n```\nSELECT * FROM t;\n```\n> On Monday you wrote: try again\n"
        'Traceback (most recent call last):\n  File "x.py", line 3\n    at Foo.bar(Foo.java:12)\n'
        "See https://example.com/x?y=1 for more.\nThanks,\nAna\nana@example.com"
    )
    assert clean_text("Export", body) == "export export the export fails. see for more."


@pytest.mark.parametrize(
    ("body", "cleaned"),
    [
        ("Mail ana.b@corp.example now", "mail now"),
        ("### Steps to reproduce\nclick export", "click export"),
        ("real text\n> quoted reply", "real text"),
        ("see http://x.io/a?b=1 here", "see here"),
        ("version 2.3.1 and 42 rows", "version and rows"),
        ("before\n```\ncode\n```\nafter", "before after"),
        ("no marker of any kind", "no marker of any kind"),
    ],
)
def test_each_cleaning_pass_runs_when_its_text_is_there(body: str, cleaned: str) -> None:
    # every pass is skipped when the text lacks what all its matches contain: never otherwise
    assert clean_text("", body) == cleaned


def _clean_text_whole(subject: str, body: str, body_chars: int) -> str:
    """clean_text as it was before it read only the opening: every pass over the whole body."""
    from pipeline.text.cleaning import _CODE_BLOCK, _PASSES, _SIGNATURE

    text = _SIGNATURE.sub("\n", _CODE_BLOCK.sub(" ", body))
    for pattern, _ in _PASSES:
        text = pattern.sub(" ", text)
    text = " ".join(text.split())
    if len(text) > body_chars:
        text = text[: body_chars + 1].rsplit(" ", 1)[0]
    return " ".join(f"{subject} {subject} {text}".lower().split())


_TRICKY_LINES = [
    "```", "````", "`", "```python", "code()```", "> quoted", "  > quoted too", ">", "", "   ", "\t",
    "Thanks,", "thanks!", "Regards", "--", "-- ", "    at com.x.Foo.bar(Foo.java:12)", 'File "x.py", line 3',
    "Traceback (most recent call last):", "foo.bar.BazError: boom", "### Steps", "#notaheading",
    "see http://x.io/a?b=1 now", "mail ana.b@corp.example now", "version 2.3.1 and 42 rows",
]  # fmt: skip


def test_reading_the_opening_cleans_as_reading_the_whole_body() -> None:
    # the reading cleans only an opening of the body when that gives enough words: the
    # same text as cleaning all of it, on bodies made of every pass's hard cases
    rng = random.Random(5)
    words = "export fails when the report opens slowly after login and billing page".split()
    for _ in range(3_000):
        lines = []
        for _ in range(rng.randrange(1, 40)):
            if rng.random() < 0.4:
                lines.append(rng.choice(_TRICKY_LINES) + rng.choice(["", " ", "  "]))
            else:
                lines.append(" ".join(rng.choices(words, k=rng.randrange(1, 12))))
        body = rng.choice(["\n", "\n\n", "\r\n"]).join(lines)
        body_chars = rng.choice([5, 20, 60, 300])
        assert clean_text("Subject", body, body_chars) == _clean_text_whole("Subject", body, body_chars), body


def test_code_blocks_are_found_as_the_regular_expression_finds_them() -> None:
    from pipeline.text.cleaning import _CODE_BLOCK, _without_code_blocks

    rng = random.Random(8)
    for _ in range(5_000):
        text = "".join(rng.choices(["`", "``", "```", "a", "\n", " "], k=rng.randrange(0, 30)))
        assert _without_code_blocks(text) == _CODE_BLOCK.sub(" ", text), text


def test_a_label_never_helps_predict_its_own_ticket() -> None:
    tagger = TicketTagger(min_labels=1)
    for i, row in enumerate(TRAIN * 3):
        tagger.process_many([_ticket(i, *row)])
    novel = _ticket(999, "Quantum flux capacitor", "zorblax wibble", "compatibility", "hardware", "low")
    (predicted,) = tagger.process_many([novel])
    assert predicted["case_type"]["label"] != "compatibility"  # never seen before this ticket
    assert predicted["product_area"]["label"] != "hardware"
    assert ("compatibility", predicted["case_type"]["label"]) == tagger.quality["case_type"].pairs[-1]
    # ... and after learning it, a ticket in the same words gets it
    (again,) = tagger.process_many([_ticket(1000, "Quantum flux capacitor", "zorblax wibble", None, None, None)])
    assert again["case_type"]["label"] == "compatibility"


def test_resent_ticket_is_learned_once_and_a_correction_is_learned() -> None:
    tagger = TicketTagger()
    t = _ticket(1, *TRAIN[0])
    tagger.process_many([t, t, t])
    assert tagger.learned == {"case_type": 1, "product_area": 1, "severity": 1}
    assert tagger.quality["case_type"].labelled == 1
    tagger.process_many([{**t, "severity": "urgent"}])  # an agent corrects the severity
    assert tagger.learned == {"case_type": 1, "product_area": 1, "severity": 1}
    assert tagger.corrections == 1


def test_a_correction_replaces_the_earlier_tag() -> None:
    corrected = TicketTagger(min_labels=1)
    never_wrong = TicketTagger(min_labels=1)
    for i, row in enumerate(TRAIN * 2):
        corrected.learn_batch([_ticket(i, *row)])
        never_wrong.learn_batch([_ticket(i, *row)])
    wrong = _ticket(100, "Charged twice", "my card was charged twice", "bug", "dashboard", "low")
    # as the worker's examples: with the prediction made when the ticket came, which the
    # label join keeps for its later labels (the same in both taggers, which agree so far)
    predictions, bins = corrected.predict_binned([wrong])
    wrong["predicted"] = predicted_labels(predictions[0], bins[0])
    corrected.learn_batch([wrong])
    corrected.learn_batch([{**wrong, "case_type": "billing", "product_area": "payments", "severity": "high"}])
    never_wrong.learn_batch([{**wrong, "case_type": "billing", "product_area": "payments", "severity": "high"}])
    probe = [{"subject": "Charged twice", "body": "refund my card"}, {"subject": "App crashes", "body": "error 500"}]
    assert corrected.predict_many(probe) == never_wrong.predict_many(probe)
    # the wrong tag's outcome left the calibration too: its counts are the never-wrong tagger's
    assert corrected.calibration == never_wrong.calibration
    assert sum(corrected.calibration["case_type"].seen) > 0
    model, reference = corrected.models["case_type"], never_wrong.models["case_type"]
    assert model.class_counts == reference.class_counts
    assert +model.class_totals == +reference.class_totals
    assert corrected.learned == never_wrong.learned and corrected.corrections == 3


def test_the_batch_path_learns_and_predicts_as_rivers_own_per_example_path() -> None:
    """The worker's batch path (learn_batch, predict_many) is an optimisation, not another model."""
    from pipeline.testbed.generator import TicketGenerator

    rows = [t.payload for t in TicketGenerator(datetime(2026, 3, 2, tzinfo=UTC), days=1, seed=5, scale=2).tickets()]
    train, probe = rows[:600], rows[600:800]
    # the models' own probabilities: calibration is on top of them (test_confidence_is_how_often...)
    batched = TicketTagger(min_labels=1, calibrate=False)
    # River's own class: its learn_one and predict_proba_one, ticket by ticket
    one_by_one = TicketTagger(min_labels=1, model_factory=lambda: naive_bayes.MultinomialNB(alpha=1.0))
    for i in range(0, len(train), 50):
        batched.learn_batch(train[i : i + 50])
    one_by_one.process_many(train)
    assert batched.learned == one_by_one.learned and sum(batched.learned.values()) > 500
    for name in FIELDS:
        mine, river = batched.models[name], one_by_one.models[name]
        assert mine.class_counts == river.class_counts and +mine.class_totals == +river.class_totals
        assert {f: +c for f, c in mine.feature_counts.items()} == {f: +c for f, c in river.feature_counts.items()}
    fast = batched.predict_many(probe)
    assert [batched.predict_one(t) for t in probe] == fast  # the replay's path, one ticket at a time
    for got, ticket in zip(fast, probe, strict=True):
        x = batched.features(reading_text(str(ticket["subject"]), str(ticket["body"])))
        for name in FIELDS:
            river = one_by_one.models[name]
            # River's predict_proba_one over the words the model knows (unseen words are left out)
            proba = river.predict_proba_one({f: v for f, v in x.items() if f in river.feature_counts})
            label, confidence = max(proba.items(), key=lambda kv: kv[1])
            assert got[name]["label"] == label
            assert got[name]["confidence"] == pytest.approx(confidence, abs=1e-4)


def test_words_never_seen_do_not_push_a_ticket_to_the_smallest_area() -> None:
    # a large area and a small one; then a new problem of the large area, in mostly new words
    tagger = TicketTagger(min_labels=1, calibrate=False)  # the model's own probability
    tickets = [
        {
            "id": f"r{i}",
            "subject": "PDF report broken",
            "body": f"the PDF report shows error {i}",
            "product_area": "reports",
        }
        for i in range(200)
    ] + [
        {"id": f"n{i}", "subject": "Email digest", "body": "the digest email is late", "product_area": "notifications"}
        for i in range(5)
    ]
    tagger.learn_batch(tickets)
    new_problem = {
        "subject": "Since the last release the PDF report fails",
        "body": "Ever since yesterday's upgrade, rendering hangs forever, spinner spins, nothing downloads whatsoever",
    }
    predicted = tagger.predict_many([new_problem])[0]["product_area"]
    assert predicted["label"] == "reports" and predicted["confidence"] > 0.9, predicted


def test_forgetting_the_last_example_of_a_class_removes_the_class() -> None:
    tagger = TicketTagger(min_labels=1)
    tagger.learn_batch([_ticket(1, *TRAIN[0]), _ticket(2, *TRAIN[2])])
    tagger.learn_batch([{**_ticket(2, *TRAIN[2]), "severity": "high"}])  # "urgent" had only this ticket
    assert "urgent" not in tagger.models["severity"].class_counts
    assert tagger.predict_one({"subject": "Dashboard", "body": "crash"})["severity"]["label"] == "high"


def test_checkpoint_round_trip_and_warm_start(tmp_path: Path) -> None:
    tagger = TicketTagger(min_labels=1)
    tagger.learn_batch([_ticket(i, *row) for i, row in enumerate(TRAIN)])
    path = tmp_path / "ckpt" / "tagger.pickle"
    save_tagger(tagger, {0: 12, 3: 7}, path)
    restored = TicketTagger()
    assert load_tagger(restored, path) == {0: 12, 3: 7}
    probe = [{"subject": "Charged twice", "body": "refund"}]
    assert restored.predict_many(probe) == tagger.predict_many(probe)
    assert restored.learn_batch([_ticket(0, *TRAIN[0])]) == 0  # learned before the checkpoint: not twice
    model = tmp_path / "model.pkl"
    model.write_bytes(pickle.dumps(tagger))
    warm = TicketTagger()
    assert load_tagger(warm, tmp_path / "none.pickle", str(model)) == {}
    assert warm.predict_many(probe) == tagger.predict_many(probe)
    (tmp_path / "junk.pkl").write_bytes(pickle.dumps({"not": "a model"}))
    with pytest.raises(TypeError, match="not a model saved by `ticketpulse replay --save-model`"):
        load_tagger(TicketTagger(), tmp_path / "none.pickle", str(tmp_path / "junk.pkl"))


def test_predictions_are_uncertain_until_enough_labels_and_confident() -> None:
    tagger = TicketTagger(min_labels=6, min_confidence=0.5)
    for i, row in enumerate(TRAIN[:4]):
        tagger.process_many([_ticket(i, *row)])
    early = tagger.predict_one({"subject": "Charged twice", "body": "refund"})
    assert early["case_type"]["label"] == "billing" and early["case_type"]["uncertain"] is True
    for i, row in enumerate(TRAIN * 2, start=10):
        tagger.process_many([_ticket(i, *row)])
    late = tagger.predict_one({"subject": "Charged twice", "body": "refund my card"})
    assert late["case_type"] == {"label": "billing", "confidence": late["case_type"]["confidence"], "uncertain": False}
    assert late["case_type"]["confidence"] >= 0.5
    vague = tagger.predict_one({"subject": "hello", "body": "something"})
    assert all(vague[f]["uncertain"] for f in FIELDS if vague[f]["confidence"] < 0.5)


def test_replay_contract(tmp_path: Path) -> None:
    lines = [
        orjson.dumps({"created_at": "2026-01-05T10:00:00Z", "customer_id": "c", **_ticket(i, *row)})
        for i, row in enumerate(TRAIN * 4)
    ]
    lines.insert(3, b'{"id": "broken"')
    source = tmp_path / "history.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "predictions.jsonl"
    model = tmp_path / "tagger.pkl"
    r = subprocess.run(
        [TICKETPULSE, "replay", str(source), "--output", str(out), "--save-model", str(model)],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = orjson.loads(r.stdout.strip().splitlines()[-1])
    assert summary["tickets"] == 24 and summary["rejected"] == 1
    assert summary["tickets_per_second"] > 0
    assert set(summary["prequential"]) == set(FIELDS)
    assert summary["prequential"]["case_type"]["labelled"] == 24
    rows = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert len(rows) == len(lines)
    assert rows[3] == {"id": None, "line": 4, "error": rows[3]["error"]} and "not valid JSON" in rows[3]["error"]
    first = rows[0]
    assert first["id"] == "T0"
    assert first["predicted"]["case_type"] == {"label": None, "confidence": 0.0, "uncertain": True}
    assert set(first["predicted"]) == set(FIELDS)
    assert rows[-1]["predicted"]["case_type"]["label"] == TRAIN[-1][2]
    assert model.stat().st_size > 0
    # patterns: the same words join the same pattern; different problems do not
    good = [r for r in rows if r["id"] is not None]
    assert [r["pattern"]["id"] for r in good[:6]] == [r["pattern"]["id"] for r in good[6:12]]
    assert good[0]["pattern"]["id"] != good[2]["pattern"]["id"]  # charged twice vs app crashes
    assert "charged" in good[6]["pattern"]["name"]
    assert summary["patterns"] == len({r["pattern"]["id"] for r in good}) and summary["near_churn"] == 0
    assert not any(r["near_churn"] for r in good)


def test_replay_flags_near_churn(tmp_path: Path) -> None:
    base = {"created_at": "2026-01-05T10:00:00Z", "customer_id": "c"}
    lines = [
        {**base, "id": "1", "subject": "Export", "body": "I was about to cancel our subscription, then found it"},
        {**base, "id": "2", "subject": "Cancel export", "body": "How do I cancel an export job?"},
    ]
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_bytes(b"\n".join(orjson.dumps(x) for x in lines))
    r = subprocess.run(
        [TICKETPULSE, "replay", str(source), "--output", str(out), "--quiet"], capture_output=True, check=True
    )
    assert [orjson.loads(x)["near_churn"] for x in out.read_bytes().splitlines()] == [True, False]
    assert orjson.loads(r.stdout.splitlines()[-1])["near_churn"] == 1


def test_knows_a_resent_ticket_but_not_a_correction() -> None:
    tagger = TicketTagger()
    t = _ticket(1, *TRAIN[0])
    assert tagger.knows(t) is False
    tagger.process_many([t])
    assert tagger.knows(t) is True
    assert tagger.knows({**t, "severity": "urgent"}) is False  # a correction is news
    assert tagger.knows({**t, "id": "T2"}) is False


def test_a_label_is_scored_against_the_prediction_it_carries_labels_alone_or_whole() -> None:
    # the training topic carries labels alone since stop 16; examples written before carry
    # whole predictions (label, confidence, uncertain), and both must score alike
    whole = {"case_type": {"label": "billing", "confidence": 0.91, "uncertain": False}}
    assert predicted_labels(whole) == {"case_type": "billing"}
    tagger = TicketTagger(min_labels=1)
    learned = tagger.learn_batch(
        [
            {"id": "a", "reading": "refund my card", "case_type": "bug", "predicted": whole},
            {"id": "b", "reading": "app crashes", "case_type": "bug", "predicted": predicted_labels(whole)},
            {"id": "c", "reading": "app crashes", "case_type": "bug", "predicted": {"case_type": "bug"}},
            {"id": "d", "reading": "app crashes", "case_type": "bug", "predicted": {"case_type": None}},
        ]
    )
    assert learned == 4
    assert list(tagger.quality["case_type"].pairs) == [
        ("bug", "billing"),
        ("bug", "billing"),
        ("bug", "bug"),
        ("bug", None),
    ]
    assert tagger.quality["case_type"].accuracy() == 0.25


def test_a_prediction_carried_as_json_text_scores_as_the_same_prediction() -> None:
    """The label join keeps a ticket's first prediction as JSON text (2026-12-01); a worker of
    the version before joins a label to it as it is, and every worker must learn that example."""
    as_dict = {"case_type": ["billing", 3]}
    tagger = TicketTagger(min_labels=1)
    learned = tagger.learn_batch(
        [
            {"id": "a", "reading": "refund my card", "case_type": "bug", "predicted": as_dict},
            {"id": "b", "reading": "refund my card", "case_type": "bug", "predicted": orjson.dumps(as_dict).decode()},
            {"id": "c", "reading": "refund my card", "case_type": "bug", "predicted": "not json"},
        ]
    )
    assert learned == 3
    assert list(tagger.quality["case_type"].pairs) == [("bug", "billing"), ("bug", "billing"), ("bug", None)]
    calibration = tagger.calibration["case_type"]
    assert (calibration.seen[3], calibration.right[3]) == (2, 0)  # c carried no margin bin
    # a correction takes back the outcome counted under that bin, and counts its own
    correction = {"id": "b", "reading": "refund my card", "case_type": "billing"}
    assert tagger.learn_batch([{**correction, "predicted": orjson.dumps(as_dict).decode()}]) == 1
    assert (calibration.seen[3], calibration.right[3]) == (2, 1)


def test_the_feature_memo_keeps_the_newest_texts_and_lets_the_oldest_go() -> None:
    computed: list[str] = []

    def featurize(text: str) -> dict[Any, float]:
        computed.append(text)
        return reading_features(text)

    memo = FeatureMemo(size=3, featurize=featurize)
    tickets = [{"id": str(i), "reading": f"text {i}"} for i in range(5)]
    for ticket in tickets:
        memo.features([ticket])
    assert len(memo._memo) == 3
    computed.clear()
    memo.features(tickets[2:])  # the newest three: at hand
    assert computed == []
    memo.features(tickets[:1])  # the oldest: gone, computed again (and ticket 2 now goes)
    assert computed == ["text 0"]
    memo.features(tickets[2:3])
    assert computed == ["text 0", "text 2"]


def test_a_ticket_predicted_then_learned_is_tokenised_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    featurize = TicketTagger.features

    def counted(self: TicketTagger, text: str) -> dict[object, float]:
        calls.append(text)
        return featurize(self, text)

    monkeypatch.setattr(TicketTagger, "features", counted)
    tagger = TicketTagger(min_labels=1)
    doc = {"id": "t1", "reading": reading_text("Export fails", "the export to CSV fails with an error")}
    predicted = tagger.predict_many([doc])[0]
    assert tagger.learn_batch([{**doc, "case_type": "bug", "predicted": predicted}]) == 1
    assert calls == [doc["reading"]]
    # a changed text is computed anew
    tagger.learn_batch([{**doc, "reading": "export fails", "case_type": "billing"}])
    assert calls == [doc["reading"], "export fails"]
    # the memo is this process's cache, not part of the model
    copy = pickle.loads(pickle.dumps(tagger))
    assert copy.predict_many([doc]) == tagger.predict_many([doc])
    assert "_memo" not in tagger.__getstate__()


def test_an_example_with_its_reading_teaches_what_its_subject_and_body_teach() -> None:
    # the worker sends readings; examples written by earlier versions carry subject and body
    with_text, with_reading = TicketTagger(min_labels=1), TicketTagger(min_labels=1)
    texts = [_ticket(i, *row) for i, row in enumerate(TRAIN)]
    readings = [
        {
            **{k: v for k, v in t.items() if k not in ("subject", "body")},
            "reading": reading_text(t["subject"], t["body"]),
        }
        for t in texts
    ]
    assert with_text.learn_batch(texts) == with_reading.learn_batch(readings) == 18
    for name in FIELDS:
        assert with_text.models[name].feature_counts == with_reading.models[name].feature_counts
    probe = {"id": "p", "subject": "Refund", "body": "charged twice on my card"}
    assert with_text.predict_many([probe]) == with_reading.predict_many(
        [{"id": "p", "reading": reading_text(probe["subject"], probe["body"])}]
    )


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        ("Export fails", "The CSV-export fails: naïve users see «Fehler» twice, twice."),
        ("", ""),
        ("a", "x y z ab-cd -- e_f 12 ünïcödé 日本語 テスト"),
        ("Login", "Can't log in since v2.3; see https://x.io/a?b=1 and ana@x.io\n```\ncode\n```\nThanks,\nAna"),
    ],
)
def test_features_are_rivers_bag_of_words_and_pairs(subject: str, body: str) -> None:
    from pipeline.tagging.features import _DEFAULT_EXTRACTOR
    from pipeline.text.cleaning import OPENING_CHARS

    rivers = dict.fromkeys(_DEFAULT_EXTRACTOR.transform_one(clean_text(subject, body, OPENING_CHARS)), 1)
    assert ticket_features(subject, body) == rivers


def test_taggers_that_learned_the_same_labels_in_another_order_predict_alike_ties_included() -> None:
    # Every worker learns every label, but the training topic's partitions reach them
    # interleaved differently; a tie (a ticket in words no model knows, classes seen
    # equally often) was broken by the order classes were first learned.
    first = {"id": "1", "subject": "Refund my card", "body": "charged twice", "case_type": "billing"}
    second = {"id": "2", "subject": "Dark mode please", "body": "would love it", "case_type": "feature_gap"}
    a, b = TicketTagger(min_labels=1), TicketTagger(min_labels=1)
    a.learn_batch([first, second])
    b.learn_batch([second, first])
    probes = [
        {"id": "3", "subject": "Zzz qqq", "body": "xxyy"},  # no word known: the priors, equal
        {"id": "4", "subject": "Refund dark mode", "body": "card please"},
    ]
    assert a.predict_many(probes) == b.predict_many(probes)
    assert a.predict_many(probes)[0]["case_type"]["label"] == "billing"  # among equals, the first by name
    assert [a.predict_one(p) for p in probes] == [b.predict_one(p) for p in probes]


def _new_words_tickets(n: int, seed: int) -> list[dict]:
    """Tickets in words never used before (as a helpdesk's vocabulary keeps growing)."""
    rng = random.Random(seed)
    tickets = []
    for i in range(n):
        words = " ".join(f"w{rng.randrange(10**9)}" for _ in range(12))
        row = TRAIN[i % len(TRAIN)]
        tickets.append(_ticket(i, row[0], f"{row[1]} {words}", *row[2:]))
    return tickets


def test_a_model_holds_no_more_features_than_its_buckets_however_much_it_learns() -> None:
    tickets = _new_words_tickets(4_000, seed=3)
    bounded, words = TicketTagger(feature_buckets=1024), TicketTagger(feature_buckets=None)
    sizes = []
    for half in (tickets[:2_000], tickets[2_000:]):
        for tagger in (bounded, words):
            for i in range(0, len(half), 500):
                tagger.learn_batch(half[i : i + 500])
        sizes.append((len(pickle.dumps(bounded)), len(pickle.dumps(words))))
        assert all(len(model.feature_counts) <= 1024 for model in bounded.models.values())
    assert bounded.learned == words.learned == dict.fromkeys(FIELDS, 4_000)
    # the words themselves: 12 new words and 11 new pairs a ticket, every one kept
    assert len(words.models["case_type"].feature_counts) > 80_000
    (bounded_half, words_half), (bounded_all, words_all) = sizes
    assert words_all > 1.8 * words_half
    # what grows is the record of which labels were learned for which ticket id, not the models
    assert bounded_all - bounded_half < 0.1 * (words_all - words_half)
    # the buckets still tell the cases apart
    probe = [{"subject": s, "body": b} for s, b, *_ in TRAIN]
    assert [p["case_type"]["label"] for p in bounded.predict_many(probe)] == [row[2] for row in TRAIN]


def test_features_fall_in_the_same_buckets_in_every_process() -> None:
    # River's FeatureHasher, seeded: not Python's hash, which differs between processes
    text = "export fails since 2.3"
    script = f"from pipeline.tagging.tagger import TicketTagger; print(sorted(TicketTagger().features('{text}')))"
    seen = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in (1, 2, 3)
    }
    assert seen == {str(sorted(TicketTagger().features(text)))}


def test_buckets_are_the_hashers_own_also_after_forgetting() -> None:
    # every reading's features through River's hasher, one ticket at a time, against the
    # buckets found in one call; one feature's bucket from a memory far smaller than the
    # stream's features (so it is emptied often)
    buckets = FeatureBuckets(FEATURE_BUCKETS, remembered=500)
    rows = [(s, b) for s, b, *_ in TRAIN] * 20 + [(t["subject"], t["body"]) for t in _new_words_tickets(400, seed=9)]
    rng = random.Random(4)
    rng.shuffle(rows)
    held = []
    for subject, body in rows:
        text = reading_text(subject, body)
        features = reading_features(text)
        expected = dict.fromkeys(buckets.hasher.transform_one(features), 1)
        assert buckets.features(text) == expected, text
        assert {buckets.bucket(f) for f in features} == set(expected), text
        held.append(len(buckets._bucket_of))
    assert max(held) <= 500
    assert held.index(max(held)) < len(held) - 1 and min(held[100:]) < 100  # it was emptied, and filled again
    # and the tagger reads its features through them: the words' buckets, each present once
    assert TicketTagger().features("export fails export") == {**buckets.features("export fails export")}


def _saved_before_hashing(tickets: list[dict]) -> TicketTagger:
    """A tagger as checkpoints before buckets held it: words as features, no hasher in its state."""
    old = TicketTagger(min_labels=1, feature_buckets=None)
    old.learn_batch(tickets)
    del old.feature_buckets, old.buckets
    return old


def test_a_checkpoint_saved_before_hashing_is_moved_into_buckets(tmp_path: Path) -> None:
    tickets = [_ticket(i, *row) for i, row in enumerate(TRAIN * 3)] + _new_words_tickets(300, seed=5)
    save_tagger(_saved_before_hashing(tickets), {0: 42}, tmp_path / "checkpoint.pickle")
    loaded = TicketTagger(min_labels=1)
    assert load_tagger(loaded, tmp_path / "checkpoint.pickle") == {0: 42}
    hashed_from_the_start = TicketTagger(min_labels=1)
    hashed_from_the_start.learn_batch(tickets)
    assert loaded.feature_buckets == FEATURE_BUCKETS
    for name in FIELDS:
        assert loaded.models[name].feature_counts == hashed_from_the_start.models[name].feature_counts
        assert loaded.models[name].class_totals == hashed_from_the_start.models[name].class_totals
    probe = [{"subject": s, "body": b} for s, b, *_ in TRAIN] + tickets[-20:]
    assert loaded.predict_many(probe) == hashed_from_the_start.predict_many(probe)
    # and it goes on learning in its buckets
    loaded.learn_batch(_new_words_tickets(50, seed=6))
    assert all(isinstance(f, int) for f in loaded.models["case_type"].feature_counts)


def test_models_over_other_buckets_are_refused_with_both_numbers(tmp_path: Path) -> None:
    small = TicketTagger(min_labels=1, feature_buckets=4096)
    small.learn_batch([_ticket(i, *row) for i, row in enumerate(TRAIN)])
    save_tagger(small, {0: 6}, tmp_path / "checkpoint.pickle")
    with pytest.raises(ValueError, match=r"checkpoint.pickle holds models over 4096 feature buckets, .* set to 262144"):
        load_tagger(TicketTagger(), tmp_path / "checkpoint.pickle")
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(small))
    with pytest.raises(ValueError, match=r"model.pkl holds models over 4096 feature buckets"):
        load_tagger(TicketTagger(), tmp_path / "none.pickle", str(tmp_path / "model.pkl"))
    assert load_tagger(TicketTagger(feature_buckets=4096), tmp_path / "checkpoint.pickle") == {0: 6}


def test_the_worker_refuses_at_start_a_checkpoint_over_other_buckets(tmp_path: Path) -> None:
    small = TicketTagger(feature_buckets=4096)
    save_tagger(small, {}, tmp_path / "tagger-checkpoint.pickle")
    env = {
        **os.environ,
        "TICKETPULSE_DATA_DIR": str(tmp_path),
        "TICKETPULSE_TAGGER": "words",
        "TICKETPULSE_TAGGER_FEATURE_BUCKETS": "262144",
    }
    # no broker is needed to find this out: the worker stops before it looks for one
    done = subprocess.run([TICKETPULSE, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "holds models over 4096 feature buckets, but this worker is set to 262144" in done.stderr


def test_the_number_pattern_matches_what_a_word_boundary_and_a_digit_would() -> None:
    import re

    from pipeline.text.cleaning import _NUMBER

    by_definition = re.compile(r"\b\d[\d.,:]*\b")
    rng = random.Random(4)
    alphabet = "0123456789 .,:a_é٣\n-x"  # ٣: a digit of another script, which \d and \w also take
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40))) for _ in range(20_000)]
    texts += ["v2.3.1 and 42 rows", "x42 _7 a-9 3:45pm 1,000.5", ""]
    assert [_NUMBER.sub(" ", t) for t in texts] == [by_definition.sub(" ", t) for t in texts]


def test_a_checkpoint_written_by_the_release_before_buckets_loads_into_buckets(tmp_path: Path) -> None:
    # written by commit 6661a3e (words as features), from TRAIN * 3 as below, positions {0: 18, 1: 0}
    fixture = Path(__file__).parent / "fixtures" / "tagger-checkpoint-6661a3e.pickle"
    checkpoint = tmp_path / "tagger-checkpoint.pickle"
    checkpoint.write_bytes(fixture.read_bytes())
    loaded = TicketTagger(min_labels=1)
    assert load_tagger(loaded, checkpoint) == {0: 18, 1: 0}
    now = TicketTagger(min_labels=1)
    now.learn_batch([_ticket(i, *row) for i, row in enumerate(TRAIN * 3)])
    assert loaded.feature_buckets == FEATURE_BUCKETS and loaded.learned == now.learned
    for name in FIELDS:
        assert loaded.models[name].feature_counts == now.models[name].feature_counts
    probe = [{"subject": s, "body": b} for s, b, *_ in TRAIN] + [{"subject": "Refund", "body": "charged twice again"}]
    assert loaded.predict_many(probe) == now.predict_many(probe)
    # and a re-sent ticket it had learned is still known: nothing learned twice
    assert loaded.knows(_ticket(0, *TRAIN[0]))


def test_a_pickled_model_comes_back_with_the_same_counts_corrections_included() -> None:
    tagger = TicketTagger(min_labels=1)
    tagger.learn_batch([_ticket(i, *row) for i, row in enumerate(TRAIN * 2)] + _new_words_tickets(200, seed=8))
    # a correction leaves zero counts behind: they must survive too
    tagger.learn_batch([{**_ticket(0, *TRAIN[0]), "case_type": "bug"}])
    copy = pickle.loads(pickle.dumps(tagger))
    for name in FIELDS:
        mine, theirs = tagger.models[name], copy.models[name]
        assert theirs.feature_counts == mine.feature_counts and theirs.class_totals == mine.class_totals
        assert type(theirs.feature_counts) is type(mine.feature_counts)  # River's defaultdict(Counter)
        assert type(next(iter(theirs.feature_counts.values()))) is type(next(iter(mine.feature_counts.values())))
    probe = [{"subject": s, "body": b} for s, b, *_ in TRAIN]
    assert copy.predict_many(probe) == tagger.predict_many(probe)
    copy.learn_batch(_new_words_tickets(10, seed=9))  # and learns on


def test_confidence_is_how_often_predictions_with_that_margin_were_right() -> None:
    """Naive Bayes says 0.99 where it is right six times in ten; the confidence says six in ten,
    and workers that learned the same labels in another order say the same."""
    rng = random.Random(7)
    texts = {"billing": ("Charged twice", "my card was charged twice"), "bug": ("App crashes", "error 500 on start")}
    examples = []
    tagger = TicketTagger(min_labels=1)
    for i in range(400):
        kind = rng.choice(["billing", "bug"])
        # the helpdesk's tag agrees with the text six times in ten
        tag = kind if rng.random() < 0.6 else ("bug" if kind == "billing" else "billing")
        ticket = {"id": f"c{i}", "subject": texts[kind][0], "body": texts[kind][1], "case_type": tag}
        predictions, bins = tagger.predict_binned([ticket])  # as the worker: predicted when it comes
        ticket["predicted"] = predicted_labels(predictions[0], bins[0])
        tagger.learn_batch([ticket])
        examples.append(ticket)
    probe = [{"subject": texts["billing"][0], "body": texts["billing"][1]}]
    tagger.calibrate = False  # the model's own probability for the ticket: near certain
    probability = tagger.predict_many(probe)[0]["case_type"]["confidence"]
    tagger.calibrate = True
    assert probability > 0.9
    (guess,), (bins,) = tagger.predict_binned(probe)
    calibration = tagger.calibration["case_type"]
    # every label counted once, against the prediction its ticket carried, where it had a margin
    # (not before two classes were known)
    with_margin = sum(isinstance(e["predicted"]["case_type"], list) for e in examples)
    assert sum(calibration.seen) == with_margin > 390
    seen, right = calibration.seen[bins["case_type"]], calibration.right[bins["case_type"]]
    assert seen >= 100 and 0.45 < right / seen < 0.75
    assert guess["case_type"]["confidence"] == pytest.approx((right + 2 * probability) / (seen + 2), abs=1e-3)
    assert guess["case_type"]["confidence"] < 0.75
    # another worker: the same examples (each with the prediction it carried) in another order
    other = TicketTagger(min_labels=1)
    shuffled = examples[:]
    rng.shuffle(shuffled)
    for start in range(0, len(shuffled), 37):
        other.learn_batch(shuffled[start : start + 37])
    assert other.calibration == tagger.calibration
    assert other.predict_many(probe) == tagger.predict_many(probe)


def test_a_batch_is_tagged_once_and_each_ticket_goes_where_its_id_is_partitioned() -> None:
    """``validate``'s tagging step: each ticket's record for tickets-classified, its reading
    for the label join, and its labels for every worker's models, by its id's partition."""
    from pipeline.ingest.schema import parse_ticket
    from pipeline.runtime.kafka import kafka_partitions
    from pipeline.tagging.labels import LabelJoin
    from pipeline.tagging.tag import tag_tickets

    def ticket(ticket_id: str, subject: str, **labels: str) -> Any:
        payload = {"id": ticket_id, "created_at": "2026-03-02T10:00:00+00:00", "customer_id": "c1"}
        return parse_ticket(orjson.dumps({**payload, "subject": subject, "body": "Please help. " * 3, **labels}))

    tagger = TicketTagger()
    tagger.process_many(
        [{"subject": f"charged twice {i}", "body": "refund", "case_type": "billing"} for i in range(5)]
        + [{"subject": f"export crashes {i}", "body": "error", "case_type": "bug"} for i in range(5)]
    )
    batch = [ticket("a", "Charged twice for May"), ticket("b", "Export crashes", case_type="bug")]
    tagged = tag_tickets(tagger, batch, 4)
    partition_of = dict(zip(["a", "b"], kafka_partitions([b"a", b"b"], 4), strict=True))

    records = {key.decode(): (p, orjson.loads(value)) for p, rs in tagged.classified.items() for key, value in rs}
    assert set(records) == {"a", "b"}
    for ticket_id, (partition, record) in records.items():
        assert partition == partition_of[ticket_id]
        assert record["model_version"] == tagger.version
        assert set(record["predicted"]) == {"case_type", "product_area", "severity"}
    assert records["a"][1]["predicted"]["case_type"]["label"] == "billing"
    assert records["b"][1]["case_type"] == "bug"  # the helpdesk's tag is kept as it is
    assert [p["case_type"]["label"] for p in tagged.predictions] == ["billing", "bug"]

    kept = {doc["id"]: (p, doc) for p, docs in tagged.to_join.items() for doc in docs}
    assert {ticket_id: p for ticket_id, (p, _) in kept.items()} == partition_of
    assert kept["a"][1]["reading"] == reading_text("Charged twice for May", "Please help. " * 3)
    # the label join keeps it as sent, and a later tag is scored against this first prediction
    join = LabelJoin({}, horizon_seconds=3600)
    join.remember("0/a", kept["a"][1])
    (example,) = join.label("0/a", {"id": "a", "case_type": "bug"})
    assert example["predicted"]["case_type"][0] == "billing"  # with its margin bin
    assert example["predicted"] == kept["a"][1]["predicted"]

    # only b carries a label; once every worker has learned it, a re-send does not broadcast it again
    assert [(p, [e["id"] for e in examples]) for p, examples in tagged.labelled.items()] == [(partition_of["b"], ["b"])]
    assert tagger.learn_batch(tagged.labelled[partition_of["b"]]) == 1
    assert tag_tickets(tagger, batch, 4).labelled == {}
