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
import base64
import html
import io
import re
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from pipeline.ingest.schema import UNASSIGNED
from pipeline.outputs.lineprotocol import Point
from pipeline.patterns.grouper import Pattern, suggest_decision
from pipeline.patterns.nearchurn import near_churn_reason
from pipeline.review.effects import measure_effect
from pipeline.runtime.kafka import read_values
from pipeline.settings import Settings
from pipeline.text.privacy import mask_personal

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


class InfluxReader:
    """InfluxQL over HTTP: 1.x ``/query``, or 2.x through its v1 compatibility API (token)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.influx_url:
            raise ValueError("TICKETPULSE_INFLUX_URL is not set: the report reads the series from InfluxDB")
        self.settings = settings

    def query(self, q: str) -> list[dict[str, Any]]:
        s = self.settings
        params = {"db": s.influx_database if s.influx_version == 1 else s.influx_bucket, "q": q, "epoch": "s"}
        headers = {}
        if s.influx_version == 2 and s.influx_token is not None:
            headers["Authorization"] = f"Token {s.influx_token.get_secret_value()}"
        elif s.influx_username and s.influx_password is not None:
            params.update(u=s.influx_username, p=s.influx_password.get_secret_value())
        url = f"{s.influx_url}/query?{urllib.parse.urlencode(params)}"  # http(s) only: settings check it
        request = urllib.request.Request(url, headers=headers)  # noqa: S310
        with urllib.request.urlopen(request, timeout=s.influx_timeout_seconds) as resp:  # noqa: S310
            body = orjson.loads(resp.read())
        result = body["results"][0]
        if "error" in result:
            if "database not found" in result["error"]:
                return []
            raise ValueError(f"InfluxDB answered {result['error']!r} to {q!r}")
        return list(result.get("series", []))


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
    from pipeline.worker import TICKET_PATTERNS

    assigned: dict[str, str] = {}
    for raw in read_values(settings, f"{settings.app_id}-{TICKET_PATTERNS}", quiet_seconds):
        # every worker sends the same assignments: one per ticket is kept
        assigned.update(orjson.loads(raw)["tickets"])
    return assigned


def _tag(doc: dict[str, Any], name: str) -> str:
    """The helpdesk's tag, else the prediction when it is not uncertain, else unassigned."""
    given = doc.get(name)
    if given:
        return str(given)
    guess = (doc.get("predicted") or {}).get(name) or {}
    return str(guess["label"]) if guess.get("label") and not guess.get("uncertain") else UNASSIGNED


@dataclass
class ReportData:
    """Everything the report shows, collected once (render has no I/O)."""

    since: datetime
    until: datetime
    hours: list[int] = field(default_factory=list)
    volume: dict[str, dict[int, int]] = field(default_factory=dict)  # area -> hour -> tickets
    customers: dict[str, dict[int, int]] = field(default_factory=dict)
    mix: dict[str, Counter[str]] = field(default_factory=dict)  # area -> case type -> tickets
    spikes: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    effects: list[dict[str, Any]] = field(default_factory=list)
    patterns: list[dict[str, Any]] = field(default_factory=list)
    near_churn: list[dict[str, Any]] = field(default_factory=list)
    tickets_read: int = 0
    #: tickets of the period the worker has not grouped yet (their hour is still open)
    not_grouped: int = 0


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
    data.tickets_read = len(docs)
    # The worker's patterns (their ids are those of pattern_volume, the alerts and the
    # product events), counted over this period's tickets; a ticket whose hour has not
    # closed yet has no pattern yet.
    assigned = assignments if assignments is not None else read_assignments(settings)
    names = {
        s["tags"]["pattern"]: s["values"][0][1]
        for s in influx.query('SELECT last("name") FROM pattern_volume GROUP BY pattern')
    }
    patterns: dict[str, Pattern] = {}
    for doc in docs:
        reason = near_churn_reason(f"{doc.get('subject', '')}. {doc.get('body', '')}")
        tagged = {**doc, "case_type": _tag(doc, "case_type"), "product_area": _tag(doc, "product_area")}
        pattern_id = assigned.get(str(doc["id"]))
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
    return data


def _effects(influx: InfluxReader, events: list[dict[str, Any]], days: int, until: int) -> list[dict[str, Any]]:
    """The measured effect of each product event once ``days`` have passed after it.

    An event of an area is measured on the area's tickets; one that names a pattern, on
    that pattern's (``pattern_volume``); both against all tickets.
    """
    out = []
    span = days * 86400
    for event in events:
        at = event["at"] - event["at"] % 3600  # whole hours on both sides
        if at + span > until:
            continue  # not enough time has passed yet
        window = f"time >= {at - span}s AND time < {at + span}s"
        series = influx.query(
            f"SELECT tickets, customers FROM ticket_volume WHERE {window} AND case_type = 'all' GROUP BY area"
        )
        sums: dict[str, list[int]] = {"target": [0, 0, 0, 0], "all": [0, 0, 0, 0]}
        for s in series:
            for t, n, c in s["values"]:
                after = int(t) >= at
                target = "pattern" not in event and s["tags"]["area"] == event["area"]
                for key in ("all", "target") if target else ("all",):
                    sums[key][2 * after] += int(n)
                    sums[key][2 * after + 1] += int(c)
        name = None
        if "pattern" in event:
            # the id is checked when the event is read (pipeline.ingest.schema): no quote can be in it
            pattern_q = f"SELECT tickets, customers, \"name\" FROM pattern_volume WHERE {window} AND pattern = '%s'"
            for s in influx.query(pattern_q % event["pattern"]):
                for t, n, c, pattern_name in s["values"]:
                    after = int(t) >= at
                    sums["target"][2 * after] += int(n)
                    sums["target"][2 * after + 1] += int(c)
                    name = pattern_name  # the newest name: a pattern's words settle as it grows
        (ab, acb, aa, aca), (tb, tcb, ta, tca) = sums["target"], sums["all"]
        if not (tb and ta):
            continue
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


def _write_effects(settings: Settings, effects: list[dict[str, Any]]) -> None:
    """``fix_effect`` points, stamped at the event: a rerun replaces them (idempotent)."""
    if not effects:
        return
    from pipeline.outputs.sinks import create_sink

    points = [
        Point(
            "fix_effect",
            {
                "area": e["area"],
                "kind": e["kind"],
                "ref": e["ref"],
                **({"pattern": e["pattern"]} if "pattern" in e else {}),
            },
            {
                "ratio": e["tickets"]["ratio"],
                "ratio_low": e["tickets"]["ratio_low"],
                "ratio_high": e["tickets"]["ratio_high"],
                "change": e["tickets"]["change"],
                "customers_ratio": e["customers"]["ratio"],
                "days": e["days"],
            },
            e["at"],
        )
        for e in effects
    ]

    async def _write() -> None:
        sink = create_sink(settings)
        await sink.setup()
        try:
            await sink.write(points)
        finally:
            await sink.close()

    asyncio.run(_write())


# --- rendering ---------------------------------------------------------------------------


def _png(figure: Any) -> str:
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _volume_plot(data: ReportData) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import dates

    def x(ts: float) -> float:
        return float(dates.date2num(datetime.fromtimestamp(ts, UTC)))

    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.xaxis_date()
    days = sorted({h - h % 86400 for h in data.hours})
    for area in sorted(data.volume, key=lambda a: -sum(data.volume[a].values())):
        per_day: Counter[int] = Counter()
        for h, n in data.volume[area].items():
            per_day[h - h % 86400] += n
        ax.plot([x(d) for d in days], [per_day[d] for d in days], label=area, marker=".")
    for s in data.spikes:
        ax.axvspan(
            x(s["start"]),
            x(s["end"] + 3600),
            color="red",
            alpha=0.15,
        )
    for e in data.events:
        ax.axvline(x(e["at"]), color="grey", linestyle=":", linewidth=1)
    ax.set_ylabel("tickets per day")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Tickets per day by product area (red: spikes, dotted: product events)")
    fig.autofmt_xdate()
    return _png(fig)


def _pattern_plot(patterns: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = patterns[:12][::-1]
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(top) + 1))
    ax.barh([p["name"] for p in top], [p["customers"] for p in top], color="#4477aa", label="customers")
    ax.barh(
        [p["name"] for p in top],
        [p["tickets"] - p["customers"] for p in top],
        left=[p["customers"] for p in top],
        color="#bbccee",
        label="more tickets from the same customers",
    )
    ax.set_xlabel("tickets (dark: distinct customers)")
    ax.legend(fontsize=8)
    ax.set_title("Largest patterns")
    return _png(fig)


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list[Any]] | list[list[str]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{margin-bottom:0}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;width:100%}th,td{border:1px solid #ddd;padding:.3em .5em;
text-align:left;vertical-align:top;font-size:.92em}th{background:#f4f4f4}.num{text-align:right}
.tier-roadmap{background:#fde2e2}.tier-pattern{background:#fff4d6}blockquote{margin:.3em 0;color:#444;
border-left:3px solid #ccc;padding-left:.6em;font-size:.9em}img{max-width:100%}.muted{color:#777}
"""


def render(data: ReportData) -> str:
    """The report as one HTML document (no script, images inline)."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>ticketpulse monthly review {data.since:%Y-%m-%d} to {data.until:%Y-%m-%d}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>ticketpulse monthly review</h1>",
        f"<p class='muted'>{_when(data.since.timestamp())} to {_when(data.until.timestamp())} UTC; "
        f"{data.tickets_read} tickets read; generated {_when(time.time())} UTC. Example tickets have personal data "
        "masked.</p>",
    ]
    # areas
    totals = {a: sum(v.values()) for a, v in data.volume.items()}
    parts.append("<h2 id='areas'>Areas by volume and trend</h2>")
    if data.hours:
        parts.append(f"<img alt='tickets per day by area' src='{_volume_plot(data)}'>")
        middle = data.hours[0] + (data.hours[-1] - data.hours[0]) / 2
        rows: list[list[Any]] = []
        for area in sorted(totals, key=lambda a: (-totals[a], a)):
            first = sum(n for h, n in data.volume[area].items() if h < middle)
            second = totals[area] - first
            trend = f"{(second - first) / first:+.0%}" if first else "new"
            customers = sum(data.customers[area].values())
            rows.append([_esc(area), f"<span class='num'>{totals[area]}</span>", customers, trend])
        parts.append(_table(["area", "tickets", "customer-hours", "second half vs first"], rows))
    else:
        parts.append("<p>No ticket volume in this period.</p>")
    # mix
    parts.append("<h2 id='mix'>Case-type mix</h2>")
    case_types = sorted({c for m in data.mix.values() for c in m})
    rows = []
    for area in sorted(data.mix, key=lambda a: -sum(data.mix[a].values())):
        total = sum(data.mix[area].values()) or 1
        rows.append([_esc(area)] + [f"{data.mix[area][c]} ({data.mix[area][c] / total:.0%})" for c in case_types])
    parts.append(_table(["area", *case_types], rows) if rows else "<p>No case types yet.</p>")
    # spikes
    parts.append("<h2 id='spikes'>Spikes, with the product events around them</h2>")
    rows = []
    for s in data.spikes:
        events = "<br>".join(
            f"{_esc(e['kind'])} {_esc(e['ref'])} ({_when(e['at'])}) {_esc(e['note'])}" for e in s["events"]
        )
        rows.append(
            [
                _esc(s["area"]),
                _esc("all" if s["case_type"] == "all" else s["case_type"].replace("_", " ")),
                _when(s["start"]),
                _when(s["end"] + 3600),
                s["peak"],
                f"{s['expected']:.1f}",
                f"{s['score']:.2f}",
                events or "<span class='muted'>none in the week before</span>",
            ]
        )
    headers = ["area", "case type", "from", "to", "peak customers/hour", "expected", "score", "product events"]
    parts.append(_table(headers, rows) if rows else "<p>No spikes in this period.</p>")
    # patterns
    parts.append("<h2 id='patterns'>Patterns, by tier</h2>")
    parts.append(
        "<p class='muted'>The worker's patterns, counted over this period; the id in brackets is the one "
        "<code>pattern_volume</code>, the alerts and a product event for that pattern use."
        + (
            f" {data.not_grouped} tickets are in no pattern yet: their hour had not closed in the worker."
            if data.not_grouped
            else ""
        )
        + "</p>"
    )
    if data.patterns:
        parts.append(f"<img alt='largest patterns' src='{_pattern_plot(data.patterns)}'>")
        for p in data.patterns[:40]:
            mix = ", ".join(f"{_esc(k)} {v}" for k, v in p["case_types"].items())
            areas = ", ".join(f"{_esc(k)} {v}" for k, v in p["areas"].items())
            quotes = "".join(f"<blockquote>{_esc(e['text'])}</blockquote>" for e in p["examples"][:3])
            parts.append(
                f"<div class='tier-{p['tier']}'><h3>{_esc(p['name'])} <span class='muted'>({p['tier']}, "
                f"{p['id']})</span></h3><p>{p['tickets']} tickets from {p['customers']} customers; top customer "
                f"{p['concentration']:.0%} of them; areas: {areas}; case types: {mix}; near-churn: {p['near_churn']}."
                f"</p><p><b>Suggested: {_esc(p['decision'])}</b> ({_esc(p['evidence'])})</p>{quotes}</div>"
            )
    else:
        parts.append("<p>No pattern of two or more tickets.</p>")
    # near churn
    parts.append("<h2 id='near-churn'>Users who almost gave up</h2>")
    rows = [
        [
            _when(datetime.fromisoformat(n["created_at"]).timestamp()),
            _esc(n["area"]),
            _esc(n["pattern"]),
            f"<blockquote>{_esc(n['text'])}</blockquote>",
        ]
        for n in data.near_churn[:100]
    ]
    parts.append(
        f"<p>{len(data.near_churn)} tickets said the user was about to cancel, switch or gave up.</p>"
        + (_table(["created", "area", "pattern", "in their words"], rows) if rows else "")
    )
    # effects
    parts.append("<h2 id='effects'>Did the fix work?</h2>")
    rows = []
    for e in data.effects:
        t, c = e["tickets"], e["customers"]
        what = _esc(e["area"])
        if "pattern" in e:
            what += f"<br><span class='muted'>pattern '{_esc(e['pattern_name'])}'</span>"
        rows.append(
            [
                what,
                _esc(e["kind"]),
                _esc(e["ref"]),
                _when(e["at"]),
                t["before"],
                t["after"],
                f"{t['expected_after']:.0f}",
                f"{t['change']:+.0f} ({t['change_low']:+.0f} to {t['change_high']:+.0f})",
                f"{t['ratio']:.2f} ({t['ratio_low']:.2f}-{t['ratio_high']:.2f})",
                f"{c['ratio']:.2f}",
                _esc(t["verdict"]),
            ]
        )
    parts.append(
        f"<p>Tickets in the {data.effects[0]['days'] if data.effects else 7} days after each product event against "
        "the same days before, adjusted for the overall volume (whole weeks: hour and weekday seasonality cancel); "
        "95% intervals.</p>"
        + (
            _table(
                [
                    "area",
                    "kind",
                    "ref",
                    "at",
                    "tickets before",
                    "after",
                    "expected after",
                    "change in tickets",
                    "ratio (95%)",
                    "customer ratio",
                    "verdict",
                ],
                rows,
            )
            if rows
            else "<p>No product event is old enough to measure yet.</p>"
        )
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(settings: Settings, since: datetime, until: datetime, output: str) -> ReportData:
    data = collect(settings, since, until)
    with open(output, "w", encoding="utf-8") as fh:
        fh.write(render(data))
    return data
