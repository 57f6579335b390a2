"""Every query of every dashboard, run against a real InfluxDB filled by the real pipeline."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from pipeline.generator import TicketGenerator

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2026, 3, 2, tzinfo=UTC)


def dashboard_queries() -> list[tuple[str, str, str]]:
    """``(dashboard, panel title, InfluxQL)`` for every target of every provisioned dashboard."""
    out = []
    for path in sorted((ROOT / "deploy/grafana/dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            assert panel.get("title") and panel.get("description"), f"{path.name}: panel without title/description"
            for target in panel["targets"]:
                out.append((path.name, panel["title"], target["query"]))
        for var in board.get("templating", {}).get("list", []):
            out.append((path.name, f"variable {var['name']}", var["query"]))
    return out


def grafana_macros(query: str, start: int, end: int) -> str:
    """What Grafana substitutes before sending an InfluxQL query (All selected for $area)."""
    return (
        query.replace("$timeFilter", f"time >= {start}s AND time < {end}s")
        .replace("/^$area$/", "/.*/")
        .replace("$__interval", "1h")
    )


def test_every_dashboard_query_returns_the_series_its_panel_needs(stack) -> None:
    gen = TicketGenerator(START, days=1, seed=21)
    truth = gen.truth(3600)
    stack.create_topics()
    stack.start_worker()
    stack.send([(str(t.payload["id"]).encode(), orjson.dumps(t.payload)) for t in gen.tickets()])
    assert stack.wait_for_counts(dict(truth)) == dict(truth), stack.worker_logs()

    firsts = {t.payload["id"]: t.payload for t in gen.tickets()}
    per_area = Counter()
    per_area_case = Counter()
    for (_, area), n in truth.items():
        per_area[area] += n
    for p in firsts.values():
        per_area_case[(p.get("product_area") or "unassigned", p.get("case_type") or "unassigned")] += 1

    start, end = int(START.timestamp()), int(START.timestamp()) + 86400
    queries = dashboard_queries()
    assert len(queries) >= 4
    for board, title, query in queries:
        series = stack.query(grafana_macros(query, start, end))
        assert series, f"{board} / {title}: no series for {query}"
        if title.startswith("Tickets per hour"):
            got = {s["tags"]["area"]: sum(v for _, v in s["values"]) for s in series}
            assert got == dict(per_area)
            assert all(len(s["values"]) == 24 for s in series)  # fill(0): one bucket per hour
        elif title.startswith("Distinct customers"):
            for s in series:
                hours = dict((t, v) for t, v in s["values"])
                assert all(0 <= hours[t] <= truth[(t, s["tags"]["area"])] for t in hours)
                assert sum(hours.values()) > 0
        elif title.startswith("Case-type mix"):
            got = {(s["tags"]["area"], s["tags"]["case_type"]): s["values"][0][1] for s in series}
            assert got == dict(per_area_case)
        elif title == "variable area":
            assert {v for _, v in series[0]["values"]} == set(per_area)
