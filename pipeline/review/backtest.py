"""``ticketpulse backtest``: what ticketpulse would have told a team, from its own export, offline.

The worker's own stage code over the export, in event-time order, with no broker and no
InfluxDB: validation (:func:`pipeline.ingest.schema.parse_ticket`, each refused row named
by its line), tags (``TICKETPULSE_TAGGER``: :class:`pipeline.tagging.linear.LinearTagger`, learning from the labels
the tickets carry, prequentially), counts (a re-sent ticket once), spikes at every scale
(:class:`detectors.backtest.SpikeBacktest`: the worker's watches and alert gate, fed as
the worker feeds them), patterns (:class:`pipeline.patterns.watch.PatternWatch`), near-churn
and fix effects. The review it writes is the monthly review's template
(:mod:`pipeline.review.render`) over the same sections (:mod:`pipeline.review.sections`).
"""

from __future__ import annotations

import sys
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tqdm import tqdm

from detectors.backtest import SpikeBacktest
from pipeline.counting.volume import window_start
from pipeline.ingest.schema import UNASSIGNED, Ticket, TicketError, parse_ticket
from pipeline.messages import PatternTicket
from pipeline.patterns.watch import PATTERN_WATCH_AFTER, PatternWatch
from pipeline.review.sections import HourCounts, ReportData, effects_of, predicted_or_given, ticket_sections
from pipeline.settings import Settings
from pipeline.tagging.choice import new_tagger
from pipeline.tagging.tagger import FIELDS
from pipeline.text.cleaning import reading_text
from pipeline.text.privacy import mask_personal

__all__ = ["Backtest", "backtest"]

#: Tickets tagged together (the worker's batches are of this order too).
BATCH = 500


@dataclass
class _Hours:
    """Distinct tickets and customers per hour of one key."""

    tickets: dict[int, set[str]] = field(default_factory=dict)
    customers: dict[int, set[str]] = field(default_factory=dict)

    def add(self, hour: int, ticket_id: str, customer: str) -> None:
        self.tickets.setdefault(hour, set()).add(ticket_id)
        self.customers.setdefault(hour, set()).add(customer)

    def counts(self) -> HourCounts:
        return {h: (len(ids), len(self.customers[h])) for h, ids in self.tickets.items()}


def parse_rows(
    rows: Iterable[tuple[int, bytes | str]], settings: Settings, latest: float | None = None
) -> tuple[list[Ticket], list[tuple[int, str]], int]:
    """The export's tickets in event-time order, each id once (its first row, as the worker counts it);
    the rows refused ``(line, reason)``; how many rows repeated a ticket already read."""
    latest = latest if latest is not None else time.time() + settings.max_future_hours * 3600
    tickets: dict[str, Ticket] = {}
    rejected: list[tuple[int, str]] = []
    repeated = 0
    for line, record in rows:
        if not isinstance(record, bytes):
            rejected.append((line, record))
            continue
        try:
            ticket = parse_ticket(record, settings.max_ticket_bytes, latest)
        except TicketError as exc:
            rejected.append((line, str(exc)))
            continue
        if ticket.id in tickets:
            repeated += 1
            continue
        tickets[ticket.id] = ticket
    return sorted(tickets.values(), key=lambda t: (t.created_ts, t.id)), rejected, repeated


def _confident(predicted: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The confident labels of a prediction, all the review reads of it (kept per ticket: small)."""
    return {
        name: {"label": guess["label"]}
        for name, guess in predicted.items()
        if guess.get("label") and not guess.get("uncertain")
    }


class Backtest:
    """The worker's stages over tickets in event-time order (:meth:`run`); the review's sections after."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.window = settings.window_seconds
        self.tagger = new_tagger(settings)
        self.spikes = SpikeBacktest(
            self.window,
            min_customers=settings.spike_min_customers,
            case_type_min_customers=settings.case_type_spike_min_customers,
            alert_score=settings.spike_alert_score,
        )
        self.patterns = PatternWatch(
            self.window,
            settings.allowed_lateness_seconds,
            sources=1,
            threshold=settings.pattern_threshold,
            alert_score=settings.spike_alert_score,
            min_customers=settings.pattern_spike_min_customers,
            watch_after=PATTERN_WATCH_AFTER,
            keep_near_churn=True,
            by_locale=settings.pattern_by_locale,
        )
        self.areas: dict[str, _Hours] = {}
        self.mix: dict[str, Counter[str]] = {}
        self.docs: list[dict[str, Any]] = []
        #: each doc's window start, in the docs' order (event time: sorted), to find a span's docs
        self.doc_hours: list[int] = []
        self.assigned: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.pattern_hours: dict[str, HourCounts] = {}
        self.pattern_episodes = 0

    def run(self, tickets: Sequence[Ticket], progress: bool = True) -> None:
        """Tag, count, watch and group every ticket (``tickets`` in event-time order)."""
        bar = tqdm(total=len(tickets), unit="ticket", disable=not progress, file=sys.stderr, mininterval=0.5)
        for start in range(0, len(tickets), BATCH):
            batch = tickets[start : start + BATCH]
            self.run_batch(batch)
            bar.update(len(batch))
        bar.close()
        if tickets:
            end = window_start(tickets[-1].created_ts, self.window) + self.window
            self.spikes.finish(end)
            self._hear_patterns(end + self.window)

    def run_batch(self, batch: Sequence[Ticket]) -> None:
        """One batch of :meth:`run` (event-time order, after the batches before): tagged, counted,
        watched, grouped; the windows before its last ticket's closed."""
        docs = [self._document(t) for t in batch]
        tokens: list[bytes | None] = [None] * len(docs)
        if self.settings.tagging_enabled:
            for doc in docs:  # made once: the tagger reads it, and finds its tokens by it
                doc["reading"] = reading_text(doc["subject"], doc["body"])
            for doc, predicted in zip(docs, self.tagger.process_many(docs), strict=True):
                doc["predicted"] = _confident(predicted)
            packed = getattr(self.tagger, "packed_tokens", None)
            if packed is not None:  # the grouper embeds the tagger's token ids, as in the worker
                tokens = [packed(doc) for doc in docs]
            for doc in docs:
                del doc["reading"]
        records = [self._count(ticket, doc, t) for ticket, doc, t in zip(batch, docs, tokens, strict=True)]
        self.patterns.add(records)
        # the windows before the batch's last have closed: grouped in one encoding, as the
        # worker groups what a batch of watermarks closed
        self._hear_patterns(window_start(batch[-1].created_ts, self.window))

    def _document(self, ticket: Ticket) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": ticket.id,
            "created_at": ticket.created_at.isoformat(),
            "customer_id": ticket.customer_id,
            "subject": ticket.subject,
            "body": ticket.body,
        }
        doc.update({f: getattr(ticket, f) for f in FIELDS})
        return doc

    def _tag(self, doc: dict[str, Any], name: str) -> str:
        if self.settings.count_predicted_tags:
            return predicted_or_given(doc, name)
        return str(doc.get(name) or UNASSIGNED)

    def _count(self, ticket: Ticket, doc: dict[str, Any], tokens: bytes | None = None) -> PatternTicket:
        """One ticket through counting and the spike watches; its record for pattern grouping."""
        area, case_type = self._tag(doc, "product_area"), self._tag(doc, "case_type")
        hour = window_start(ticket.created_ts, self.window)
        self.areas.setdefault(area, _Hours()).add(hour, ticket.id, ticket.customer_id)
        self.mix.setdefault(area, Counter())[case_type] += 1
        # tickets without a case type are no case type: their surge is the area's (as in the worker)
        watched_case = None if case_type == UNASSIGNED else case_type
        self.spikes.add(ticket.created_ts, area, watched_case, ticket.id, ticket.customer_id)
        doc["hour"] = hour
        self.docs.append(doc)
        self.doc_hours.append(hour)
        return PatternTicket(
            ticket.id,
            hour,
            area,
            case_type,
            ticket.customer_id,
            doc["created_at"],
            ticket.subject,
            ticket.body,
            tokens,
            ticket.locale or "",
        )

    def _hear_patterns(self, watermark: int) -> None:
        touched = self.patterns.hear({"0": watermark})
        self.pattern_episodes += sum(e.event == "opened" for e in self.patterns.judge(touched) + self.patterns.close())
        for ticket_id, pattern_id in self.patterns.drain_assigned():
            self.assigned[ticket_id] = pattern_id
            if pattern_id not in self.names:
                self.names[pattern_id] = self.patterns.pattern(pattern_id).name
        # the counts are handed over as the worker writes them: the watch then lets old windows go
        self.patterns.points(touched, self.settings.window_label)
        for window, pid in sorted(touched):
            tickets, customers, _ = self.patterns.counts[(window, pid)]
            self.pattern_hours.setdefault(pid, {})[window] = (tickets, len(customers))
            self.names[pid] = self.patterns.pattern(pid).name  # the newest name: its words settle as it grows

    def review(
        self, since: float, until: float, events: list[dict[str, Any]], rejected: list[tuple[int, str]]
    ) -> ReportData:
        """The review's sections over ``[since, until)`` (epoch seconds)."""
        data = ReportData(
            datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(until, UTC), title="ticketpulse backtest"
        )
        for area, hours in self.areas.items():
            counts = {h: c for h, c in hours.counts().items() if since <= h < until}
            if counts:
                data.volume[area] = {h: n for h, (n, _) in counts.items()}
                data.customers[area] = {h: c for h, (_, c) in counts.items()}
        data.hours = sorted({h for v in data.volume.values() for h in v})
        data.mix = {area: mix for area, mix in self.mix.items() if area in data.volume}
        data.events = [e for e in events if since - 7 * 86400 <= e["at"] < until]
        data.spikes = [s for s in self._episodes(data.events) if since <= s["start"] < until]
        areas = {area: hours.counts() for area, hours in self.areas.items()}
        data.effects = effects_of(events, areas, self.pattern_hours, 7, int(until), self.names)
        in_span = [d for d in self.docs if since <= d["hour"] < until]
        # a ticket of a pattern merged into another since it was grouped: in the survivor
        assigned = {ticket_id: self.patterns.resolve(pid) for ticket_id, pid in self.assigned.items()}
        ticket_sections(data, in_span, assigned, self.names, near_churn_ids=self.patterns.near_churn_ids)
        data.rejected = rejected
        data.quality = {f: self.tagger.quality[f].summary() for f in FIELDS if self.tagger.quality[f].labelled}
        return data

    def _episodes(self, events: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """The spike episodes as the review's rows: when each would have fired, at which scale, with examples."""
        for e in self.spikes.episodes:
            start = int(datetime.fromisoformat(e["window_start"]).timestamp())
            end = int(datetime.fromisoformat(e["resolved_at"]).timestamp()) if e["resolved_at"] else start
            near = [ev for ev in events if ev["area"] == e["area"] and start - 7 * 86400 <= ev["at"] <= end]
            yield {
                "episode": e["episode_id"],
                "area": e["area"],
                "case_type": e["case_type"],
                "start": start,
                "end": max(start, end - self.window),
                "peak": e["customers"],
                "expected": e["expected"],
                "score": e["score"],
                "tickets": e["customers"],
                "detected_at": int(datetime.fromisoformat(e["detected_at"]).timestamp()),
                "scale": e["scale"],
                "alerted": e["alerted"],
                "events": near,
            }

    def examples(self, area: str, start: int, end: int, keep: int = 3) -> list[str]:
        """A few tickets of an area in ``[start, end)``, from different customers, personal data masked."""
        out, customers = [], set()
        first, last = bisect_left(self.doc_hours, start), bisect_left(self.doc_hours, end)
        for doc in self.docs[first:last]:
            if self._tag(doc, "product_area") == area:
                if doc["customer_id"] not in customers:
                    customers.add(doc["customer_id"])
                    out.append(mask_personal(f"{doc['subject']}: {doc['body']}", limit=300))
                if len(out) >= keep:
                    break
        return out


def backtest(
    rows: Iterable[tuple[int, bytes | str]],
    settings: Settings,
    events: list[dict[str, Any]] | None = None,
    since: float | None = None,
    until: float | None = None,
    progress: bool = True,
) -> tuple[ReportData, dict[str, Any]]:
    """Run the worker's stages over an export's rows (``(line, ticket JSON or reason)``, as
    :func:`pipeline.ingest.importer.read_export` gives them); the review and the summary."""
    started = time.perf_counter()
    tickets, rejected, repeated = parse_rows(rows, settings)
    run = Backtest(settings)
    run.run(tickets, progress)
    first = window_start(tickets[0].created_ts, 86400) if tickets else 0
    last = window_start(tickets[-1].created_ts, 86400) + 86400 if tickets else 0  # whole days, as the review shows
    lo = since if since is not None else first
    hi = until if until is not None else last
    data = run.review(lo, hi, sorted(events or [], key=lambda e: e["at"]), rejected)
    for spike in data.spikes:
        spike["examples"] = run.examples(spike["area"], spike["start"], spike["end"] + settings.window_seconds)
    summary = {
        "tickets": len(tickets),
        "rejected": len(rejected),
        "repeated": repeated,
        "spike_episodes": [
            {
                "episode_id": s["episode"],
                "area": s["area"],
                "case_type": s["case_type"],
                "scale": s["scale"],
                "window_start": datetime.fromtimestamp(s["start"], UTC).isoformat(),
                "detected_at": datetime.fromtimestamp(s["detected_at"], UTC).isoformat(),
                "customers": s["peak"],
                "expected": s["expected"],
                "score": s["score"],
                "alerted": s["alerted"],
            }
            for s in data.spikes
        ],
        # per field, the tags' prequential accuracy and macro-F1 over the last 1,000 labels
        "tags": {"tagger": settings.tagger, **data.quality},
        "pattern_episodes": run.pattern_episodes,
        "patterns": len(data.patterns),
        "near_churn": len(data.near_churn),
        "effects": len(data.effects),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return data, summary
