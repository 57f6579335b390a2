"""``ticketpulse report``: the monthly review, as one self-contained HTML file.

It reads what the pipeline stored: the series in InfluxDB (``ticket_volume``,
``ticket_spike``, ``product_event``, ``pattern_volume``), for the words of the tickets
the ``tickets-classified`` topic (every ticket with its tags or predicted tags), and the
pattern the worker put each ticket in (``<app>-ticket-patterns``). From them: areas by
volume and trend with plots, the case-type mix, spikes with the releases around them,
the worker's patterns by tier, counted over the period, with example tickets and a
suggested decision,
near-churn tickets, and the measured effect of each fix or release
(:mod:`pipeline.review.effects`, also written back as ``fix_effect`` points). Plots are PNGs
inside the file and there is no script: it opens with no server and no internet.
Example tickets have personal data masked (:mod:`pipeline.text.privacy`).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from pipeline.outputs.series import InfluxReader, fix_effect_point
from pipeline.review.render import render
from pipeline.review.sections import HourCounts, ReportData, effects_of, ticket_sections
from pipeline.runtime.kafka import read_values
from pipeline.settings import Settings
from pipeline.topology import internal_topic_name

__all__ = ["ReportData", "collect", "parse_since", "render", "write_report"]

_DURATION = re.compile(r"^(\d+)([dhw])$")


def parse_since(text: str, now: datetime) -> datetime:
    """``30d``, ``12h``, ``2w`` before ``now``, or an ISO date-time (UTC when it has no zone).

    >>> parse_since("30d", datetime(2026, 4, 1, tzinfo=UTC)).isoformat()
    '2026-03-02T00:00:00+00:00'
    >>> parse_since("2026-03-02", datetime(2026, 4, 1, tzinfo=UTC)).isoformat()
    '2026-03-02T00:00:00+00:00'
    """
    match = _DURATION.match(text.strip())
    if match:
        n, unit = int(match.group(1)), match.group(2)
        return now - timedelta(**{{"d": "days", "h": "hours", "w": "weeks"}[unit]: n})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since wants 30d, 12h, 2w or a date such as 2026-03-01, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def read_classified(settings: Settings, since: float, until: float, quiet_seconds: float = 3.0) -> list[dict]:
    """Every ticket on ``tickets-classified`` created in [since, until), first version of each id."""
    tickets: dict[str, dict] = {}
    for raw in read_values(settings, settings.topic_classified, quiet_seconds):
        doc = orjson.loads(raw)
        created = datetime.fromisoformat(doc["created_at"]).timestamp()
        if since <= created < until:
            tickets.setdefault(doc["id"], doc)
    return sorted(tickets.values(), key=lambda d: d["created_at"])


def read_assignments(settings: Settings, quiet_seconds: float = 3.0) -> dict[str, str]:
    """``ticket id -> pattern id``: the pattern each ticket joined in the worker (``<app>-ticket-patterns``)."""
    assigned: dict[str, str] = {}
    for raw in read_values(settings, internal_topic_name(settings, "ticket_patterns"), quiet_seconds):
        # every worker sends the same assignments: one per ticket is kept
        assigned.update(orjson.loads(raw)["tickets"])
    return assigned


def collect(
    settings: Settings,
    since: datetime,
    until: datetime,
    tickets: Iterable[dict[str, Any]] | None = None,
    assignments: dict[str, str] | None = None,
    effect_days: int = 7,
    pattern_customers: int = 10,
    roadmap_customers: int = 50,
) -> ReportData:
    """Read the series and the classified tickets of [since, until) and derive the report's content."""
    influx = InfluxReader(settings)
    lo, hi = int(since.timestamp()), int(until.timestamp())
    span = f"time >= {lo}s AND time < {hi}s"
    data = ReportData(since, until)
    for s in influx.query(
        f"SELECT tickets, customers FROM ticket_volume WHERE case_type = 'all' AND {span} GROUP BY area"
    ):
        area = s["tags"]["area"]
        data.volume[area] = {int(t): int(n) for t, n, _ in s["values"]}
        data.customers[area] = {int(t): int(c) for t, _, c in s["values"]}
    data.hours = sorted({h for v in data.volume.values() for h in v})
    mix_q = (
        f"SELECT sum(tickets) FROM ticket_volume WHERE case_type != 'all' AND severity = 'all' AND {span} "
        "GROUP BY area, case_type"
    )
    for s in influx.query(mix_q):
        data.mix.setdefault(s["tags"]["area"], Counter())[s["tags"]["case_type"]] += int(s["values"][0][1])
    episodes: dict[str, dict[str, Any]] = {}
    spike_q = (
        f"SELECT episode, observed, expected, score, tickets FROM ticket_spike WHERE {span} "
        "GROUP BY area, case_type, level"
    )
    for s in influx.query(spike_q):
        for t, episode, observed, expected, score, n in s["values"]:
            e = episodes.setdefault(
                episode,
                {
                    "episode": episode,
                    "area": s["tags"]["area"],
                    "case_type": s["tags"].get("case_type") or "all",
                    "start": t,
                    "end": t,
                    "peak": 0,
                    "tickets": 0,
                },
            )
            e["start"], e["end"] = min(e["start"], t), max(e["end"], t)
            if observed >= e["peak"]:
                e.update(peak=observed, expected=expected, score=score)
            e["tickets"] = max(e["tickets"], n or 0)
    week = 7 * 86400
    for s in influx.query(
        f"SELECT ref, note FROM product_event WHERE time >= {lo - week}s AND time < {hi}s GROUP BY *"
    ):
        for t, ref, note in s["values"]:
            event = {"at": int(t), "area": s["tags"]["area"], "kind": s["tags"]["kind"], "ref": ref, "note": note}
            if s["tags"].get("pattern"):  # InfluxDB gives "" for a tag a point lacks
                event["pattern"] = s["tags"]["pattern"]
            data.events.append(event)
    data.events.sort(key=lambda e: e["at"])
    for e in sorted(episodes.values(), key=lambda e: e["start"]):
        near = [ev for ev in data.events if ev["area"] == e["area"] and e["start"] - week <= ev["at"] <= e["end"]]
        data.spikes.append({**e, "events": near})
    data.effects = _effects(influx, data.events, effect_days, hi)
    _write_effects(settings, data.effects)
    docs = list(tickets) if tickets is not None else read_classified(settings, lo, hi)
    # The worker's patterns (their ids are those of pattern_volume, the alerts and the
    # product events), counted over this period's tickets; a ticket whose hour has not
    # closed yet has no pattern yet.
    assigned = assignments if assignments is not None else read_assignments(settings)
    names = {
        s["tags"]["pattern"]: s["values"][0][1]
        for s in influx.query('SELECT last("name") FROM pattern_volume GROUP BY pattern')
    }
    ticket_sections(data, docs, assigned, names, pattern_customers, roadmap_customers)
    return data


def _effects(influx: InfluxReader, events: list[dict[str, Any]], days: int, until: int) -> list[dict[str, Any]]:
    """The measured effect of each product event old enough (:func:`pipeline.review.sections.effects_of`),
    from the hours around it in ``ticket_volume`` and ``pattern_volume``."""
    span = days * 86400
    areas: dict[str, HourCounts] = {}
    patterns: dict[str, HourCounts] = {}
    names: dict[str, str] = {}
    for event in events:
        at = event["at"] - event["at"] % 3600
        if at + span > until:
            continue  # not enough time has passed yet
        window = f"time >= {at - span}s AND time < {at + span}s"
        q = f"SELECT tickets, customers FROM ticket_volume WHERE {window} AND case_type = 'all' GROUP BY area"
        for s in influx.query(q):
            hours = areas.setdefault(s["tags"]["area"], {})
            hours.update({int(t): (int(n), int(c)) for t, n, c in s["values"]})
        if "pattern" in event:
            # the id is checked when the event is read (pipeline.ingest.schema): no quote can be in it
            pattern_q = f"SELECT tickets, customers, \"name\" FROM pattern_volume WHERE {window} AND pattern = '%s'"
            for s in influx.query(pattern_q % event["pattern"]):
                hours = patterns.setdefault(event["pattern"], {})
                for t, n, c, pattern_name in s["values"]:
                    hours[int(t)] = (int(n), int(c))
                    names[event["pattern"]] = pattern_name  # the newest name: a pattern's words settle as it grows
    return effects_of(events, areas, patterns, days, until, names)


def _write_effects(settings: Settings, effects: list[dict[str, Any]]) -> None:
    """``fix_effect`` points, stamped at the event: a rerun replaces them (idempotent)."""
    if not effects:
        return
    from pipeline.outputs.sinks import create_sink

    points = [fix_effect_point(e) for e in effects]

    async def _write() -> None:
        sink = create_sink(settings)
        await sink.setup()
        try:
            await sink.write(points)
        finally:
            await sink.close()

    asyncio.run(_write())


def write_report(settings: Settings, since: datetime, until: datetime, output: str) -> ReportData:
    data = collect(settings, since, until)
    with open(output, "w", encoding="utf-8") as fh:
        fh.write(render(data))
    return data
