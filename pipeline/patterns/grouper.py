"""Patterns: tickets that describe the same problem, grouped online.

Each ticket is a TF-IDF vector of its cleaned words (:func:`pipeline.tagging.tagger.clean_text`
without stop words; document frequencies learned as tickets arrive). It joins the
pattern whose centroid is most similar (cosine), if that similarity reaches
``threshold``; otherwise it starts a pattern. Candidates come from an inverted index
of the patterns' strongest terms, so a ticket is compared with a few patterns, not all
of them (no quadratic step). Near duplicates share most words and join easily;
paraphrases join when they share the distinctive ones.

From the essays: one ticket is an anecdote, ten similar ones (from distinct customers)
are a pattern, fifty are a roadmap item; one customer filing twenty tickets is not a
pattern, hence the customer counts and the concentration (the top customer's share).

Deterministic: the same tickets in the same order give the same patterns and ids, in
any process (nothing depends on the order of a set, which follows the hash seed).
"""

from __future__ import annotations

import hashlib
import heapq
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.text.cleaning import clean_text
from pipeline.text.privacy import mask_personal

__all__ = ["Pattern", "PatternGrouper", "suggest_decision"]

_WORD = re.compile(r"[a-z][a-z0-9_'-]+")
_STOP = frozenset(
    """a about after again all also am an and any are as at be been before being but by can cannot could did do does
    doing don't for from get gets got had has have having hello hi how i i'm if in into is it it's its just me my no not
    of on once only or our out over please so some still such than thank thanks that the their them then there these
    they this those to too very was we we're were what when where which while who why will with would you your yours
    is are able issue problem help hey team dear regards best""".split()
)


def _terms(subject: str, body: str) -> Counter[str]:
    return Counter(w for w in _WORD.findall(clean_text(subject, body)) if w not in _STOP and len(w) > 2)


@dataclass
class Pattern:
    """A group of tickets about the same problem."""

    id: str
    centroid: dict[str, float] = field(default_factory=dict)
    tickets: int = 0
    customers: Counter[str] = field(default_factory=Counter)
    case_types: Counter[str] = field(default_factory=Counter)
    areas: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, str]] = field(default_factory=list)
    near_churn: int = 0
    first_at: str = ""
    last_at: str = ""
    #: a name given from outside (the worker's, in the report); else made from the centroid
    label: str = ""

    @property
    def name(self) -> str:
        """Its most distinctive terms (the heaviest in its TF-IDF centroid), unless it was given one."""
        if self.label:
            return self.label
        top = sorted(self.centroid.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        return " ".join(term for term, _ in top)

    def record(self, ticket: Mapping[str, Any], near_churn: bool = False, max_examples: int = 5) -> None:
        """Count a ticket that joined it: customers, case types, areas, near-churn, examples."""
        customer = str(ticket.get("customer_id", ""))
        created = str(ticket.get("created_at", ""))
        self.tickets += 1
        self.customers[customer] += 1
        self.case_types[str(ticket.get("case_type") or "unassigned")] += 1
        self.areas[str(ticket.get("product_area") or "unassigned")] += 1
        self.near_churn += int(near_churn)
        self.first_at = min(self.first_at, created) if self.first_at else created
        self.last_at = max(self.last_at, created)
        if len(self.examples) < max_examples and all(e["customer"] != customer for e in self.examples):
            subject, body = str(ticket.get("subject", "")), str(ticket.get("body", ""))
            self.examples.append(
                {"id": str(ticket["id"]), "customer": customer, "text": mask_personal(f"{subject}: {body}")[:500]}
            )

    @property
    def concentration(self) -> float:
        """The share of its tickets that comes from its top customer (1.0: one loud user)."""
        return self.customers.most_common(1)[0][1] / self.tickets if self.tickets else 0.0

    def tier(self, pattern_customers: int = 10, roadmap_customers: int = 50) -> str:
        """``anecdote``, ``pattern`` or ``roadmap``, by distinct customers."""
        n = len(self.customers)
        return "roadmap" if n >= roadmap_customers else "pattern" if n >= pattern_customers else "anecdote"

    def summary(self, pattern_customers: int = 10, roadmap_customers: int = 50) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "tickets": self.tickets,
            "customers": len(self.customers),
            "tier": self.tier(pattern_customers, roadmap_customers),
            "concentration": round(self.concentration, 3),
            "case_types": dict(self.case_types.most_common()),
            "areas": dict(self.areas.most_common()),
            "near_churn": self.near_churn,
            "examples": list(self.examples),
            "first_at": self.first_at,
            "last_at": self.last_at,
        }


class PatternGrouper:
    """Online grouping of tickets into patterns.

    Parameters
    ----------
    threshold
        Cosine similarity to a pattern's centroid a ticket needs to join it.
    centroid_terms
        Terms a centroid keeps (its heaviest): bounds memory and the index.
    max_examples
        Example tickets kept per pattern, each from a different customer, personal
        data masked.
    max_terms
        Document frequencies kept: once a quarter more terms than this are known, only
        the ``max_terms`` most frequent stay (equals by the term, so every worker keeps
        the same). A term let go is weighed as one never seen, which is what it nearly
        was; without the bound every new name, typo and code adds a term for good.

    Examples
    --------
    >>> g = PatternGrouper()
    >>> a = g.add({"id": "1", "customer_id": "c1", "subject": "CSV export times out", "body": "export never ends"})
    >>> b = g.add({"id": "2", "customer_id": "c2", "subject": "Export to CSV timing out",
    ...            "body": "the export never ends"})
    >>> c = g.add({"id": "3", "customer_id": "c3", "subject": "Charged twice", "body": "refund my card"})
    >>> a.id == b.id != c.id, a.tickets, len(a.customers)
    (True, 2, 2)
    """

    def __init__(
        self, threshold: float = 0.45, centroid_terms: int = 40, max_examples: int = 5, max_terms: int = 100_000
    ) -> None:
        self.threshold = threshold
        self.centroid_terms = centroid_terms
        self.max_examples = max_examples
        self.max_terms = max_terms
        self.patterns: dict[str, Pattern] = {}
        self.df: Counter[str] = Counter()
        self.documents = 0
        self._index: dict[str, set[str]] = {}
        self._of_ticket: dict[str, str] = {}
        # each centroid's length, kept as it changes: a ticket is compared with up to 30
        self._norms: dict[str, float] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_norms", {})  # checkpoints written before the norms were kept
        state.setdefault("max_terms", 100_000)  # and before the document frequencies were bounded
        self.__dict__.update(state)

    def _vector(self, terms: Counter[str]) -> dict[str, float]:
        n = self.documents
        # smoothed IDF (as scikit-learn): a word every ticket has still weighs 1
        vec = {t: (1 + math.log(c)) * (math.log((n + 1) / (self.df[t] + 1)) + 1) for t, c in terms.items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {t: v / norm for t, v in vec.items()}

    def _best(self, vec: Mapping[str, float]) -> tuple[Pattern | None, float]:
        strongest = heapq.nlargest(8, vec, key=vec.__getitem__)  # as sorted(...)[:8]: equal weights in vec's order
        shared: Counter[str] = Counter()
        for term in strongest:
            shared.update(self._index.get(term, ()))
        best, best_sim = None, 0.0
        terms = vec.keys()
        # the 30 sharing most of them; among equals, by id: an index entry is a set, whose
        # order changes with each process's hash seed, and two workers must group alike
        for pid, _ in heapq.nsmallest(30, shared.items(), key=lambda kv: (-kv[1], kv[0])):
            pattern = self.patterns[pid]
            norm = self._norms.get(pid)
            if norm is None:
                norm = self._norms[pid] = math.sqrt(sum(v * v for v in pattern.centroid.values())) or 1.0
            centroid = pattern.centroid
            # The shared terms, found from the smaller side (a long ticket has hundreds of
            # terms, a centroid 40); a set's order follows the hash seed, so the products
            # are added with fsum, whose result (correctly rounded) does not depend on the
            # order: every worker gets the same similarity to the last bit.
            sim = math.fsum([vec[t] * centroid[t] for t in terms & centroid.keys()]) / norm
            if sim > best_sim or (sim == best_sim and best is not None and pid < best.id):
                best, best_sim = pattern, sim
        return best, best_sim

    def pattern_of(self, ticket_id: str) -> Pattern | None:
        """The pattern a ticket joined (``None`` if never seen, or if that pattern was forgotten)."""
        pid = self._of_ticket.get(ticket_id)
        return self.patterns.get(pid) if pid is not None else None

    def forget(self, pattern_id: str) -> None:
        """Drop a pattern: a ticket like it starts a new one. Its words stay in the document frequencies.

        >>> g = PatternGrouper()
        >>> first = g.add({"id": "1", "customer_id": "c1", "subject": "Charged twice", "body": "refund my card"})
        >>> g.forget(first.id)
        >>> again = g.add({"id": "2", "customer_id": "c2", "subject": "Charged twice", "body": "refund my card"})
        >>> again.id != first.id, len(g.patterns), g.pattern_of("1")
        (True, 1, None)
        """
        pattern = self.patterns.pop(pattern_id)
        for term in pattern.centroid:
            ids = self._index.get(term)
            if ids is not None:
                ids.discard(pattern_id)
                if not ids:
                    del self._index[term]
        self._norms.pop(pattern_id, None)

    def add(self, ticket: Mapping[str, Any], near_churn: bool = False, remember: bool = True) -> Pattern:
        """Group one ticket; a ticket id seen before stays in its pattern and counts once.

        ``remember=False`` keeps no per-ticket record: the caller deduplicates (the
        stream does, over its allowed lateness), so memory does not grow with every id.
        """
        ticket_id = str(ticket["id"])
        known = self.pattern_of(ticket_id)
        if known is not None:
            return known
        subject, body = str(ticket.get("subject", "")), str(ticket.get("body", ""))
        terms = _terms(subject, body)
        self.documents += 1
        self.df.update(terms.keys())
        vec = self._vector(terms)
        pattern, similarity = self._best(vec)
        if pattern is None or similarity < self.threshold:
            pid = "p-" + hashlib.sha1(ticket_id.encode(), usedforsecurity=False).hexdigest()[:10]
            pattern = self.patterns[pid] = Pattern(pid, first_at=str(ticket.get("created_at", "")))
        self._join(pattern, vec)
        if remember:
            self._of_ticket[ticket_id] = pattern.id
        pattern.record(ticket, near_churn, self.max_examples)
        if len(self.df) > self.max_terms + self.max_terms // 4:
            self.trim_terms()
        return pattern

    def trim_terms(self) -> int:
        """Keep the document frequencies of the ``max_terms`` most frequent terms; how many went.

        At the same ticket in every worker (they group the same tickets in the same
        order), so they go on agreeing; a quarter of slack makes it rare (its cost, a
        partial sort of the terms, is spread over the tickets that brought them).

        >>> g = PatternGrouper(max_terms=2)
        >>> g.df.update(["export", "export", "csv", "zeta", "alpha"])
        >>> g.trim_terms(), sorted(g.df.items())
        (2, [('alpha', 1), ('export', 2)])
        """
        before = len(self.df)
        kept = heapq.nsmallest(self.max_terms, self.df.items(), key=lambda kv: (-kv[1], kv[0]))
        self.df = Counter(dict(kept))
        return before - len(self.df)

    def _join(self, pattern: Pattern, vec: Mapping[str, float]) -> None:
        centroid = pattern.centroid
        for term, weight in vec.items():
            centroid[term] = centroid.get(term, 0.0) + weight
        if len(centroid) > self.centroid_terms:
            kept = dict(sorted(centroid.items(), key=lambda kv: (-kv[1], kv[0]))[: self.centroid_terms])
            for term in centroid.keys() - kept.keys():
                self._index.get(term, set()).discard(pattern.id)
            pattern.centroid = kept
        for term in pattern.centroid:
            self._index.setdefault(term, set()).add(pattern.id)
        self._norms.pop(pattern.id, None)  # computed again when next needed

    def add_many(self, tickets: Iterable[Mapping[str, Any]]) -> list[Pattern]:
        return [self.add(t) for t in tickets]


def suggest_decision(pattern: Mapping[str, Any], loud_share: float = 0.5, min_customers: int = 3) -> tuple[str, str]:
    """A decision from the essays for a pattern summary, and the evidence behind it.

    >>> suggest_decision({"customers": 1, "tickets": 20, "concentration": 1.0, "case_types": {"bug": 20}, "name": "x"})
    ('do nothing', 'one loud customer: 100% of 20 tickets from one customer')
    >>> suggest_decision({"customers": 30, "tickets": 40, "concentration": 0.05,
    ...                   "case_types": {"ux_confusion": 30, "bug": 10}, "name": "where export button"})
    ('improve the docs', 'mostly UX confusion (75%) across 30 customers, asking how or where')
    """
    tickets = int(pattern["tickets"])
    customers = int(pattern["customers"])
    share = float(pattern["concentration"])
    if customers < min_customers or share >= loud_share:
        return "do nothing", f"one loud customer: {share:.0%} of {tickets} tickets from one customer"
    mix = Counter({k: v for k, v in pattern["case_types"].items() if k != "unassigned"})
    if not mix:
        return "do nothing", f"no case type known yet for its {tickets} tickets: tag a few first"
    top, n = mix.most_common(1)[0]
    part = n / sum(mix.values())
    words = str(pattern.get("name", ""))
    across = f"across {customers} customers"
    if top == "ux_confusion":
        if re.search(r"\b(default|setting|settings|option|turn|off|enabled|disabled)\b", words):
            return "change a default", f"mostly UX confusion ({part:.0%}) {across}, about a setting"
        if re.search(r"\b(how|where|find|docs|documentation|guide)\b", words):
            return "improve the docs", f"mostly UX confusion ({part:.0%}) {across}, asking how or where"
        return "fix the UX", f"mostly UX confusion ({part:.0%}) {across}"
    if top == "feature_gap":
        return "add a feature", f"mostly feature requests ({part:.0%}) {across}"
    if top in ("bug", "compatibility"):
        return "fix the bug", f"mostly {top.replace('_', ' ')} reports ({part:.0%}) {across}"
    return "do nothing", f"mostly {top.replace('_', ' ')} ({part:.0%}) {across}: not a product change"
