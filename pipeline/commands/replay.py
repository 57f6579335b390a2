"""``ticketpulse replay``: the tagger over a helpdesk's history, with no broker.

A contract other tools call: it reads tickets (JSONL in the ticket schema, in file
order) and, for each, first predicts, then learns from the labels the ticket carries,
exactly as the worker's tagger does; it also groups it into a pattern of its product
area on its meaning, as the worker does (:mod:`pipeline.patterns.semantic`, one grouper
per area, ``TICKETPULSE_PATTERN_THRESHOLD``), and flags near-churn
(:mod:`pipeline.patterns.nearchurn`). A line's pattern is the one the ticket joined
when it was read; patterns that converge later merge, and the summary's ``patterns``
counts those that remain. One JSON
line per input line goes to the output
(``{"id", "predicted", "pattern": {"id", "name"}, "near_churn"}``);
a JSON summary goes to the last line of standard output.
"""

from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from detectors.backtest import ALL_CASE_TYPES, SpikeBacktest
from pipeline.ingest.schema import UNASSIGNED, Ticket, TicketError, parse_ticket
from pipeline.patterns.nearchurn import near_churn
from pipeline.patterns.semantic import SemanticGrouper
from pipeline.patterns.watch import grouping_key, merge_threshold_for
from pipeline.tagging.choice import make_tagger
from pipeline.tagging.tagger import FEATURE_BUCKETS, FIELDS
from pipeline.text.embedding import shared_encoder

__all__ = ["replay"]


def backtest_spikes(
    tickets: list[tuple[float, str, str | None, str, str]], window_seconds: int
) -> list[dict[str, Any]]:
    """The spike alerts the worker would have sent on this history (same watch code, every scale).

    ``tickets``: ``(created_ts, area, case_type, id, customer_id)``, in any order (taken in
    time order, ties in file order). One dict per alerted episode (an incident seen by an
    area and its case types is one alert, as :class:`detectors.AlertGate` decides):
    ``area``, ``case_type`` (None for the whole area), ``episode_id``, ``scale`` (seconds),
    ``window_start`` (the start of the span at that scale), ``detected_at`` (event time of
    the ticket that tipped it), ``customers`` and ``expected`` (over the span), ``score``,
    ``peak_score`` and ``resolved_at`` (None while open at the end of the history).
    """
    backtest = SpikeBacktest(window_seconds)
    ordered = sorted(tickets, key=lambda t: t[0])
    for created, area, case_type, ticket_id, customer in ordered:
        backtest.add(created, area, case_type, ticket_id, customer)
    if ordered:
        backtest.finish(ordered[-1][0] + window_seconds)
    episodes = []
    for episode in backtest.episodes:
        if not episode.pop("alerted"):
            continue
        if episode["case_type"] == ALL_CASE_TYPES:
            episode["case_type"] = None
        episodes.append(episode)
    return episodes


#: Tickets tagged in one :meth:`process_many` (the same predictions as one at a time, in one encoding).
REPLAY_CHUNK = 256


def replay(
    source: Path,
    output: Path,
    save_model: Path | None = None,
    progress: bool = True,
    window_seconds: int = 3600,
    feature_buckets: int | None = FEATURE_BUCKETS,
    pattern_threshold: float = 0.5,
    tagger_kind: str = "linear",
    pattern_by_locale: bool = True,
) -> dict[str, Any]:
    """Run the tagger over ``source``; write predictions to ``output``; return the summary.

    ``tagger_kind``: the worker's ``TICKETPULSE_TAGGER`` (a warm-start model must be of
    the worker's kind); ``feature_buckets``: the words tagger's
    (``TICKETPULSE_TAGGER_FEATURE_BUCKETS``), which a worker warm-started from
    ``save_model`` must share. ``pattern_threshold``, ``pattern_by_locale``: the worker's
    (``TICKETPULSE_PATTERN_THRESHOLD``, ``TICKETPULSE_PATTERN_BY_LOCALE``).

    The summary also backtests spike detection on the history (``spike_episodes``, see
    :func:`backtest_spikes`): the alerts the worker would have sent, per product area
    (the helpdesk's own, or ``unassigned``) and per case type in it (the ticket's own).
    """
    tagger = make_tagger(tagger_kind, feature_buckets)
    encoder = shared_encoder()
    groupers: dict[str, SemanticGrouper] = {}
    counted: list[tuple[float, str, str | None, str, str]] = []
    tickets = rejected = 0
    started = time.perf_counter()
    # in file order: a rejected line (its number, the error) or a ticket and what the tagger reads of it
    pending: list[tuple[int, str] | tuple[Ticket, dict[str, Any]]] = []

    def write_pending(out: Any) -> None:
        nonlocal tickets
        docs = [entry[1] for entry in pending if isinstance(entry[0], Ticket)]
        predictions = iter(tagger.process_many(docs))  # each predicted before its labels are learned
        for first, second in pending:
            if not isinstance(first, Ticket):
                out.write(orjson.dumps({"id": None, "line": first, "error": second}) + b"\n")
                continue
            ticket, doc = first, second
            assert isinstance(doc, dict)  # noqa: S101 - a ticket's entry holds its document
            predicted = next(predictions)
            churn = near_churn(ticket.subject, ticket.body)
            key = grouping_key(ticket.product_area or UNASSIGNED, ticket.locale, pattern_by_locale)
            grouper = groupers.get(key)
            if grouper is None:
                grouper = groupers[key] = SemanticGrouper(
                    encoder, threshold=pattern_threshold, merge_threshold=merge_threshold_for(pattern_threshold)
                )
            pattern = grouper.add(
                {**doc, "customer_id": ticket.customer_id, "created_at": ticket.created_at.isoformat()}, churn
            )
            tickets += 1
            counted.append(
                (
                    ticket.created_ts,
                    ticket.product_area or UNASSIGNED,
                    ticket.case_type,  # none: the area's alone (no "unassigned" case type is watched)
                    str(ticket.id),
                    str(ticket.customer_id),
                )
            )
            line = {
                "id": ticket.id,
                "predicted": predicted,
                "pattern": {"id": pattern.id, "name": pattern.name},
                "near_churn": churn,
            }
            out.write(orjson.dumps(line) + b"\n")
        pending.clear()

    with source.open("rb") as fh, output.open("wb") as out:
        lines = tqdm(fh, unit="ticket", disable=not progress, file=sys.stderr, mininterval=0.5)
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                ticket = parse_ticket(raw.rstrip(b"\r\n"))
            except TicketError as exc:
                rejected += 1
                pending.append((number, str(exc)))
                continue
            doc: dict[str, Any] = {"id": ticket.id, "subject": ticket.subject, "body": ticket.body}
            doc.update({f: getattr(ticket, f) for f in FIELDS})
            pending.append((ticket, doc))
            if len(pending) >= REPLAY_CHUNK:
                write_pending(out)
        write_pending(out)
    seconds = time.perf_counter() - started
    if save_model is not None:
        save_model.write_bytes(pickle.dumps(tagger))
    return {
        "tickets": tickets,
        "rejected": rejected,
        "seconds": round(seconds, 3),
        "tickets_per_second": round(tickets / seconds, 1) if seconds > 0 else None,
        "prequential": {f: tagger.quality[f].summary() for f in FIELDS},
        "model_version": tagger.version,
        "spike_episodes": backtest_spikes(counted, window_seconds),
        "patterns": sum(len(g.patterns) for g in groupers.values()),
        "near_churn": sum(p.near_churn for g in groupers.values() for p in g.patterns.values()),
    }
