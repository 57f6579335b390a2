"""Patterns and near-churn: grouping, tiers, concentration, decisions; the flag's precision on a labelled sample."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.nearchurn import near_churn_reason
from pipeline.patterns import PatternGrouper, suggest_decision

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


def test_near_churn_words_are_quoted_as_the_customer_wrote_them() -> None:
    assert near_churn_reason("Export\n\nWe were  ABOUT TO\tCancel today") == "ABOUT TO Cancel"
    # 'İ' lower-cases to two characters: the match must not shift
    assert near_churn_reason("İİİ office: we were ABOUT TO CANCEL") == "ABOUT TO CANCEL"
    assert near_churn_reason("İİİ: how do I cancel an export?") is None


def test_near_churn_precision_and_recall_on_the_labelled_sample() -> None:
    rows = [json.loads(line) for line in (FIXTURES / "near_churn.jsonl").read_text().splitlines()]
    flagged = {i for i, r in enumerate(rows) if near_churn_reason(r["text"])}
    truth = {i for i, r in enumerate(rows) if r["near_churn"]}
    assert len(rows) == 50 and len(truth) == 22
    precision = len(flagged & truth) / len(flagged)
    recall = len(flagged & truth) / len(truth)
    # built by hand, including support's everyday "cancel" and "switch" that are not churn
    assert precision == 1.0 and recall == 1.0, sorted(flagged ^ truth)
