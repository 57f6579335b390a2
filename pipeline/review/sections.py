"""The review's sections, one set for both: ``ticketpulse report`` (the running system) and ``ticketpulse backtest``.

:class:`ReportData` is everything a review shows; the report fills it from InfluxDB and
the topics (:mod:`pipeline.review.report`), the backtest from an offline run of the
worker's code over an export (:mod:`pipeline.review.backtest`); :mod:`pipeline.review.render`
draws it. The derivations both share are here, with no I/O: patterns by tier and
near-churn tickets from the tickets' words, and fix effects from hourly counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.ingest.schema import UNASSIGNED
from pipeline.patterns.grouper import Pattern, suggest_decision
from pipeline.patterns.nearchurn import near_churn_reason
from pipeline.review.effects import measure_effect
from pipeline.text.privacy import mask_personal

__all__ = ["HourCounts", "ReportData", "effects_of", "predicted_or_given", "ticket_sections"]

#: hour -> (tickets, customers)
HourCounts = dict[int, tuple[int, int]]


@dataclass
class ReportData:
    """Everything a review shows, collected once (rendering has no I/O)."""

    since: datetime
    until: datetime
    hours: list[int] = field(default_factory=list)
    volume: dict[str, dict[int, int]] = field(default_factory=dict)  # area -> hour -> tickets
    customers: dict[str, dict[int, int]] = field(default_factory=dict)
    mix: dict[str, Counter[str]] = field(default_factory=dict)  # area -> case type -> tickets
    #: spike episodes: area, case_type, start, end, peak, expected, score, tickets, events, and
    #: from a backtest also detected_at (when it would have fired), scale (s) and alerted
    spikes: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    effects: list[dict[str, Any]] = field(default_factory=list)
    patterns: list[dict[str, Any]] = field(default_factory=list)
    near_churn: list[dict[str, Any]] = field(default_factory=list)
    tickets_read: int = 0
    #: tickets of the period the worker has not grouped yet (their hour is still open)
    not_grouped: int = 0
    #: what kind of review: the running system's, or a backtest of an export
    title: str = "ticketpulse monthly review"
    #: a backtest's rows refused, ``(line, reason)``
    rejected: list[tuple[int, str]] = field(default_factory=list)
    #: how well the tags held, per field: prequential accuracy, macro-F1, labelled
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)


def predicted_or_given(doc: Mapping[str, Any], name: str) -> str:
    """The helpdesk's tag, else the prediction when it is not uncertain, else unassigned."""
    given = doc.get(name)
    if given:
        return str(given)
    guess = (doc.get("predicted") or {}).get(name) or {}
    return str(guess["label"]) if guess.get("label") and not guess.get("uncertain") else UNASSIGNED


def ticket_sections(
    data: ReportData,
    docs: Iterable[Mapping[str, Any]],
    assigned: Mapping[str, str],
    names: Mapping[str, str],
    pattern_customers: int = 10,
    roadmap_customers: int = 50,
    near_churn_ids: Collection[str] | None = None,
) -> None:
    """Patterns by tier (counted over ``docs``, the period's tickets) and near-churn tickets, into ``data``.

    ``assigned``: ticket id -> the pattern the worker put it in; ``names``: pattern id -> name.
    ``near_churn_ids``: the grouped tickets found near-churn when grouped (the backtest's
    :class:`PatternWatch` keeps them): only those, and tickets not grouped, are read again.
    """
    patterns: dict[str, Pattern] = {}
    for doc in docs:
        data.tickets_read += 1
        ticket_id = str(doc["id"])
        if near_churn_ids is None or ticket_id not in assigned or ticket_id in near_churn_ids:
            reason = near_churn_reason(f"{doc.get('subject', '')}. {doc.get('body', '')}")
        else:
            reason = None  # read when grouped: not near-churn
        tagged = {
            **doc,
            "case_type": predicted_or_given(doc, "case_type"),
            "product_area": predicted_or_given(doc, "product_area"),
        }
        pattern_id = assigned.get(ticket_id)
        pattern = None
        if pattern_id is not None:
            pattern = patterns.get(pattern_id)
            if pattern is None:
                pattern = patterns[pattern_id] = Pattern(pattern_id, label=names.get(pattern_id, pattern_id))
            pattern.record(tagged, near_churn=reason is not None)
        else:
            data.not_grouped += 1
        if reason is not None:
            text = mask_personal(f"{doc.get('subject', '')}: {doc.get('body', '')}", limit=400)
            data.near_churn.append(
                {
                    "id": doc["id"],
                    "created_at": doc["created_at"],
                    "area": tagged["product_area"],
                    "reason": reason,
                    "text": text,
                    "pattern": pattern.name if pattern else "",
                }
            )
    summaries = [p.summary(pattern_customers, roadmap_customers) for p in patterns.values() if p.tickets >= 2]
    for summary in summaries:
        summary["decision"], summary["evidence"] = suggest_decision(summary)
    rank = {"roadmap": 0, "pattern": 1, "anecdote": 2}
    data.patterns = sorted(summaries, key=lambda p: (rank[p["tier"]], -p["customers"], -p["tickets"], p["id"]))


def effects_of(
    events: Iterable[Mapping[str, Any]],
    areas: Mapping[str, HourCounts],
    patterns: Mapping[str, HourCounts],
    days: int,
    until: int,
    pattern_names: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The measured effect of each product event once ``days`` have passed after it.

    An event of an area is measured on the area's tickets (``areas``: area -> hour ->
    tickets, customers); one that names a pattern, on that pattern's (``patterns``); both
    against all tickets.
    """
    out = []
    span = days * 86400
    for event in events:
        at = event["at"] - event["at"] % 3600  # whole hours on both sides
        if at + span > until:
            continue  # not enough time has passed yet
        total = [0, 0, 0, 0]  # tickets before, customers before, tickets after, customers after
        target = [0, 0, 0, 0]
        for area, hours in areas.items():
            _add(total, hours, at, span)
            if "pattern" not in event and area == event["area"]:
                _add(target, hours, at, span)
        if "pattern" in event:
            _add(target, patterns.get(event["pattern"], {}), at, span)
        (ab, acb, aa, aca), (tb, tcb, ta, tca) = target, total
        if not (tb and ta):
            continue
        name = (pattern_names or {}).get(event.get("pattern", ""))
        out.append(
            {
                **event,
                **({"pattern_name": name or event["pattern"]} if "pattern" in event else {}),
                "days": days,
                "tickets": measure_effect(ab, tb, aa, ta).as_dict(),
                "customers": measure_effect(acb, tcb, aca, tca).as_dict(),
            }
        )
    return out


def _add(sums: list[int], hours: HourCounts, at: int, span: int) -> None:
    """Tickets and customers of the hours within ``span`` before and after ``at``, into ``sums``."""
    for t, (n, c) in hours.items():
        if at - span <= t < at + span:
            after = t >= at
            sums[2 * after] += n
            sums[2 * after + 1] += c
