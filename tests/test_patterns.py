"""Patterns and near-churn: grouping, tiers, concentration, decisions; the flag's precision on a labelled sample."""

from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from pipeline.patterns import nearchurn
from pipeline.patterns.grouper import PatternGrouper, suggest_decision
from pipeline.patterns.nearchurn import near_churn_reason

FIXTURES = Path(__file__).parent / "fixtures"

EXPORT = [
    ("CSV export times out", "the export of the sales report never finishes"),
    ("Export to CSV timing out", "exporting the sales report to csv never finishes"),
    ("Sales report export never finishes", "csv export of the report times out after a minute"),
]
BILLING = ("Charged twice for March", "my card was charged twice, please refund the duplicate invoice")


def test_paraphrases_join_one_pattern_and_other_problems_do_not() -> None:
    g = PatternGrouper()
    ids = [
        g.add({"id": f"e{i}", "customer_id": f"c{i}", "subject": s, "body": b}).id for i, (s, b) in enumerate(EXPORT)
    ]
    other = g.add({"id": "b1", "customer_id": "c9", "subject": BILLING[0], "body": BILLING[1]})
    assert len(set(ids)) == 1 and other.id != ids[0]
    pattern = g.patterns[ids[0]]
    assert pattern.tickets == 3 and len(pattern.customers) == 3
    assert "export" in pattern.name.split()


def test_a_resent_ticket_counts_once_and_examples_span_customers() -> None:
    g = PatternGrouper()
    for i in range(12):
        s, b = EXPORT[i % 3]
        g.add({"id": f"e{i}", "customer_id": f"c{i % 4}", "subject": s, "body": b + " call me at +1 415 555 0100"})
    g.add({"id": "e0", "customer_id": "c0", "subject": EXPORT[0][0], "body": EXPORT[0][1]})  # a re-send
    (pattern,) = g.patterns.values()
    assert pattern.tickets == 12 and len(pattern.customers) == 4
    assert [e["customer"] for e in pattern.examples] == ["c0", "c1", "c2", "c3"]
    assert all("555" not in e["text"] for e in pattern.examples)  # personal data masked


def test_tiers_count_distinct_customers_and_concentration_shows_a_loud_user() -> None:
    g = PatternGrouper()
    for i in range(20):  # one customer, twenty tickets
        g.add({"id": f"l{i}", "customer_id": "loud", "subject": BILLING[0], "body": BILLING[1], "case_type": "billing"})
    for i in range(12):  # twelve customers
        s, b = EXPORT[i % 3]
        g.add({"id": f"e{i}", "customer_id": f"c{i}", "subject": s, "body": b, "case_type": "bug"})
    loud = g.pattern_of("l0").summary()
    export = g.pattern_of("e0").summary(pattern_customers=10, roadmap_customers=50)
    assert (loud["tier"], loud["concentration"], loud["tickets"]) == ("anecdote", 1.0, 20)
    assert (export["tier"], export["customers"], export["concentration"]) == ("pattern", 12, round(1 / 12, 3))
    assert g.pattern_of("e0").tier(pattern_customers=5, roadmap_customers=12) == "roadmap"
    assert suggest_decision(loud)[0] == "do nothing"
    assert suggest_decision(export) == ("fix the bug", "mostly bug reports (100%) across 12 customers")


def test_same_input_same_patterns() -> None:
    def run() -> list[str]:
        g = PatternGrouper()
        return [
            g.add({"id": f"x{i}", "customer_id": "c", "subject": s, "body": b}).id
            for i, (s, b) in enumerate(EXPORT * 3)
        ]

    assert run() == run()


GROUP_IN_A_PROCESS = """
import hashlib, json, random
from pipeline.patterns.grouper import PatternGrouper
rng = random.Random(7)
vocab = [f"word{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}x" for i in range(400)]
g = PatternGrouper(max_terms=200)  # fewer than the words: the document frequencies are trimmed too
ids = []
for i in range(2000):
    words = rng.choices(vocab, weights=[1 / (k + 1) for k in range(len(vocab))], k=25)
    ticket = {"id": str(i), "customer_id": str(i % 50), "subject": " ".join(words[:5]), "body": " ".join(words[5:])}
    ids.append(g.add(ticket).id)
print(len(set(ids)), hashlib.sha256(json.dumps([ids, sorted(g.df.items())]).encode()).hexdigest())
"""


def test_workers_with_different_hash_seeds_group_alike() -> None:
    # Every worker groups every ticket and they must agree; string hashing differs from
    # process to process, and with it the order of a set: many patterns sharing a
    # ticket's words equally once picked different candidates in different workers.
    root = Path(__file__).parent.parent
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", GROUP_IN_A_PROCESS], cwd=root, env=env, capture_output=True, text=True, check=True
        )
        outputs.add(done.stdout.strip())
    assert len(outputs) == 1, outputs
    patterns = int(outputs.pop().split()[0])
    assert 20 < patterns < 2000  # tickets were grouped, not each alone or all in one


def test_a_long_ticket_is_as_similar_to_a_pattern_as_the_cosine_says() -> None:
    g = PatternGrouper()
    short = {"id": "s", "customer_id": "c1", "subject": "export csv report", "body": "export fails at midnight"}
    pattern = g.add(short)
    words = " ".join(f"filler{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(120))
    long_ticket = Counter({"export": 2, "csv": 1, "report": 1, "midnight": 1, **dict.fromkeys(words.split(), 1)})
    vec = g._vector(long_ticket)
    assert len(vec) > len(pattern.centroid)  # the branch that walks the centroid
    found, similarity = g._best(vec)
    norm = math.sqrt(sum(v * v for v in pattern.centroid.values()))
    cosine = sum(w * pattern.centroid.get(t, 0.0) for t, w in vec.items()) / norm
    assert found is pattern and similarity == cosine


def test_a_grouper_saved_before_norms_were_kept_loads_and_groups() -> None:
    g = PatternGrouper()
    for i, (s, b) in enumerate(EXPORT[:2]):
        g.add({"id": f"e{i}", "customer_id": f"c{i}", "subject": s, "body": b})
    state = dict(g.__dict__)
    del state["_norms"]
    old = PatternGrouper.__new__(PatternGrouper)
    old.__setstate__(state)
    joined = old.add({"id": "e2", "customer_id": "c2", "subject": EXPORT[2][0], "body": EXPORT[2][1]})
    assert joined.tickets == 3


def test_near_churn_words_are_quoted_as_the_customer_wrote_them() -> None:
    assert near_churn_reason("Export\n\nWe were  ABOUT TO\tCancel today") == "ABOUT TO Cancel"
    # 'İ' lower-cases to two characters: the match must not shift
    assert near_churn_reason("İİİ office: we were ABOUT TO CANCEL") == "ABOUT TO CANCEL"
    assert near_churn_reason("İİİ: how do I cancel an export?") is None


#: one example of each phrase of pipeline.patterns.nearchurn, in order
PHRASE_EXAMPLES = [
    "I was thinking about moving to Zendesk",
    "We seriously considered unsubscribing",
    "I will cancel our whole subscription",
    "Please terminate our contract",
    "We are migrating over to another provider",
    "We have been shopping around for another vendor",
    "Our team is evaluating a competitor",
    "We have given up on the mobile app",
    "Honestly we give up",
    "We're done with your exports",
    "Everyone here is fed up",
    "This is the last straw",
    "If this goes on I will leave",
]


def test_every_near_churn_phrase_holds_a_keyword_the_fast_path_looks_for() -> None:
    # A text without any of the keywords skips the expression: a phrase whose matches
    # can lack them would be flagged by the expression and missed by the function.
    assert len(PHRASE_EXAMPLES) == len(nearchurn._PHRASES)
    for phrase, example in zip(nearchurn._PHRASES, PHRASE_EXAMPLES, strict=True):
        match = re.search(phrase, example.lower())
        assert match is not None, (phrase, example)
        assert any(word in match.group(0) for word in nearchurn._KEYWORDS), match.group(0)
        assert near_churn_reason(f"Export page. {example}.") is not None


def test_near_churn_precision_and_recall_on_the_labelled_sample() -> None:
    rows = [json.loads(line) for line in (FIXTURES / "near_churn.jsonl").read_text().splitlines()]
    flagged = {i for i, r in enumerate(rows) if near_churn_reason(r["text"])}
    truth = {i for i, r in enumerate(rows) if r["near_churn"]}
    assert len(rows) == 50 and len(truth) == 22
    precision = len(flagged & truth) / len(flagged)
    recall = len(flagged & truth) / len(truth)
    # built by hand, including support's everyday "cancel" and "switch" that are not churn
    assert precision == 1.0 and recall == 1.0, sorted(flagged ^ truth)


def test_document_frequencies_stay_bounded_and_a_recurring_problem_still_groups() -> None:
    rng = random.Random(9)
    g = PatternGrouper(max_terms=500)
    joined = []
    for i in range(3_000):
        # every ticket brings four words never seen before (names, codes, typos)
        noise = " ".join(f"n{rng.randrange(10**9)}" for _ in range(4))
        if i % 10 == 0:
            subject, body = EXPORT[i // 10 % len(EXPORT)]
            joined.append(g.add({"id": f"e{i}", "customer_id": f"c{i}", "subject": subject, "body": f"{body} {noise}"}))
        else:
            g.add({"id": f"t{i}", "customer_id": f"c{i}", "subject": f"question {noise}", "body": noise})
        assert len(g.df) <= 500 + 500 // 4
    assert g.documents == 3_000
    # frequent terms keep their exact counts; the export problem is one pattern all along
    assert g.df["question"] == 2_700
    assert len({p.id for p in joined[5:]}) == 1 and joined[-1].tickets >= 295
