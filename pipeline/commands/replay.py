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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from detectors import VolumeWatch
from pipeline.counting.volume import window_start
from pipeline.ingest.schema import UNASSIGNED, TicketError, parse_ticket
from pipeline.patterns.nearchurn import near_churn
from pipeline.patterns.semantic import SemanticGrouper
from pipeline.patterns.watch import merge_threshold_for
from pipeline.tagging.tagger import FEATURE_BUCKETS, FIELDS, TicketTagger
from pipeline.text.embedding import shared_encoder

__all__ = ["replay"]


def backtest_spikes(volumes: dict[tuple[int, str], dict[str, Any]], window_seconds: int) -> list[dict[str, Any]]:
    """The spike episodes the worker would have raised on this history (same detector code)."""
    episodes: list[dict[str, Any]] = []
    areas = sorted({area for _, area in volumes})
    for area in areas:
        windows = sorted(w for w, a in volumes if a == area)
        watch = VolumeWatch(area, window_seconds, keep_baselines=False)  # episodes only
        for w in range(windows[0], windows[-1] + window_seconds, window_seconds):
            cell = volumes.get((w, area))
            events = watch.update(w, len(cell["ids"]), len(cell["customers"])) if cell is not None else []
            for event in events + watch.advance(w):
                if event.event == "opened":
                    episodes.append(
                        {
                            "area": area,
                            "episode_id": event.episode_id,
                            "window_start": datetime.fromtimestamp(event.window_start, UTC).isoformat(),
                            "customers": event.customers,
                            "expected": event.expected,
                            "score": event.score,
                        }
                    )
    return episodes


def replay(
    source: Path,
    output: Path,
    save_model: Path | None = None,
    progress: bool = True,
    window_seconds: int = 3600,
    feature_buckets: int | None = FEATURE_BUCKETS,
    pattern_threshold: float = 0.5,
) -> dict[str, Any]:
    """Run the tagger over ``source``; write predictions to ``output``; return the summary.

    ``feature_buckets``: the tagger's (``TICKETPULSE_TAGGER_FEATURE_BUCKETS``), which a
    worker warm-started from ``save_model`` must share. ``pattern_threshold``: the
    worker's (``TICKETPULSE_PATTERN_THRESHOLD``).

    The summary also backtests spike detection on the history: the alert episodes the
    worker would have opened, per product area (the helpdesk's own, or ``unassigned``).
    """
    tagger = TicketTagger(feature_buckets=feature_buckets)
    encoder = shared_encoder()
    groupers: dict[str, SemanticGrouper] = {}
    volumes: dict[tuple[int, str], dict[str, Any]] = {}
    tickets = rejected = 0
    started = time.perf_counter()
    with source.open("rb") as fh, output.open("wb") as out:
        lines = tqdm(fh, unit="ticket", disable=not progress, file=sys.stderr, mininterval=0.5)
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                ticket = parse_ticket(raw.rstrip(b"\r\n"))
            except TicketError as exc:
                rejected += 1
                out.write(orjson.dumps({"id": None, "line": number, "error": str(exc)}) + b"\n")
                continue
            doc: dict[str, Any] = {"id": ticket.id, "subject": ticket.subject, "body": ticket.body}
            doc.update({f: getattr(ticket, f) for f in FIELDS})
            (predicted,) = tagger.process_many([doc])
            churn = near_churn(ticket.subject, ticket.body)
            area = ticket.product_area or UNASSIGNED
            grouper = groupers.get(area)
            if grouper is None:
                grouper = groupers[area] = SemanticGrouper(
                    encoder, threshold=pattern_threshold, merge_threshold=merge_threshold_for(pattern_threshold)
                )
            pattern = grouper.add(
                {**doc, "customer_id": ticket.customer_id, "created_at": ticket.created_at.isoformat()}, churn
            )
            tickets += 1
            cell = volumes.setdefault(
                (window_start(ticket.created_ts, window_seconds), ticket.product_area or UNASSIGNED),
                {"ids": set(), "customers": set()},
            )
            cell["ids"].add(ticket.id)
            cell["customers"].add(ticket.customer_id)
            line = {
                "id": ticket.id,
                "predicted": predicted,
                "pattern": {"id": pattern.id, "name": pattern.name},
                "near_churn": churn,
            }
            out.write(orjson.dumps(line) + b"\n")
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
        "spike_episodes": backtest_spikes(volumes, window_seconds) if volumes else [],
        "patterns": sum(len(g.patterns) for g in groupers.values()),
        "near_churn": sum(p.near_churn for g in groupers.values() for p in g.patterns.values()),
    }
