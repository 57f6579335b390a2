"""The review as one self-contained HTML file (no script, plots inline): the template report and backtest share."""

from __future__ import annotations

import base64
import html
import io
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from pipeline.review.sections import ReportData

__all__ = ["render"]


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
    xs = [x(d) for d in days]  # once: a history of years has 100+ areas over 1,600 days
    for area in sorted(data.volume, key=lambda a: -sum(data.volume[a].values())):
        per_day: Counter[int] = Counter()
        for h, n in data.volume[area].items():
            per_day[h - h % 86400] += n
        ax.plot(xs, [per_day[d] for d in days], label=area, marker=".")
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
        f"<title>{_esc(data.title)} {data.since:%Y-%m-%d} to {data.until:%Y-%m-%d}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_esc(data.title)}</h1>",
        f"<p class='muted'>{_when(data.since.timestamp())} to {_when(data.until.timestamp())} UTC; "
        f"{data.tickets_read} tickets read; generated {_when(time.time())} UTC. Example tickets have personal data "
        "masked.</p>",
    ]
    parts += _areas(data)
    parts += _mix(data)
    parts += _spikes(data)
    parts += _patterns(data)
    parts += _near_churn(data)
    parts += _effects(data)
    parts += _backtest(data)
    parts.append("</body></html>")
    return "\n".join(parts)


def _areas(data: ReportData) -> list[str]:
    parts: list[str] = []
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
    return parts


def _mix(data: ReportData) -> list[str]:
    parts: list[str] = []
    parts.append("<h2 id='mix'>Case-type mix</h2>")
    case_types = sorted({c for m in data.mix.values() for c in m})
    rows = []
    for area in sorted(data.mix, key=lambda a: -sum(data.mix[a].values())):
        total = sum(data.mix[area].values()) or 1
        rows.append([_esc(area)] + [f"{data.mix[area][c]} ({data.mix[area][c] / total:.0%})" for c in case_types])
    parts.append(_table(["area", *case_types], rows) if rows else "<p>No case types yet.</p>")
    return parts


def _spikes(data: ReportData) -> list[str]:
    parts = ["<h2 id='spikes'>Spikes, with the product events around them</h2>"]
    backtest = any("detected_at" in s for s in data.spikes)
    rows = []
    for s in data.spikes:
        events = "<br>".join(
            f"{_esc(e['kind'])} {_esc(e['ref'])} ({_when(e['at'])}) {_esc(e['note'])}" for e in s["events"]
        )
        quotes = "".join(f"<blockquote>{_esc(text)}</blockquote>" for text in s.get("examples", []))
        row = [
            _esc(s["area"]) + quotes,
            _esc("all" if s["case_type"] == "all" else s["case_type"].replace("_", " ")),
            _when(s["start"]),
            _when(s["end"] + 3600),
        ]
        if backtest:
            scale = s.get("scale")
            fired = _when(s["detected_at"]) + (
                " (muted: one incident, one alert)" if not s.get("alerted", True) else ""
            )
            row += [fired, f"{scale / 3600:g} h" if scale else ""]
        row += [
            s["peak"],
            f"{s['expected']:.1f}",
            f"{s['score']:.2f}",
            events or "<span class='muted'>none in the week before</span>",
        ]
        rows.append(row)
    headers = ["area", "case type", "from", "to"]
    headers += ["would have fired", "scale"] if backtest else []
    headers += ["peak customers", "expected", "score", "product events"]
    parts.append(_table(headers, rows) if rows else "<p>No spikes in this period.</p>")
    return parts


def _patterns(data: ReportData) -> list[str]:
    parts: list[str] = []
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
    return parts


def _near_churn(data: ReportData) -> list[str]:
    parts: list[str] = []
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
    return parts


def _effects(data: ReportData) -> list[str]:
    parts: list[str] = []
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
    return parts


def _backtest(data: ReportData) -> list[str]:
    """How well the tags held, and the rows refused (a backtest's)."""
    parts: list[str] = []
    if data.quality:
        parts.append("<h2 id='tags'>How well the tags held</h2>")
        parts.append(
            "<p>Each labelled ticket was first tagged, then learned from (prequential): the accuracy of the "
            "tags the models gave before they saw the label, over the last labels.</p>"
        )
        rows = [
            [_esc(name), q.get("labelled", 0), f"{q.get('accuracy', 0):.3f}", f"{q.get('macro_f1', 0):.3f}"]
            for name, q in data.quality.items()
        ]
        parts.append(_table(["field", "labelled", "accuracy", "macro-F1"], rows))
    if data.rejected:
        parts.append("<h2 id='rejected'>Rows refused</h2>")
        parts.append(f"<p>{len(data.rejected)} rows of the export were not tickets (the first 200):</p>")
        parts.append(_table(["line", "reason"], [[n, _esc(reason)] for n, reason in data.rejected[:200]]))
    return parts
