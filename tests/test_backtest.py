"""``ticketpulse backtest``: a generated export with a known surge, pattern, near-churn, fix and broken rows."""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from .conftest import TICKETPULSE
from .test_report import FIX, START, _history, churn_tickets, open_in_chromium

BROKEN = [b"{not json", b'{"id": "x1", "subject": "no date", "body": "b", "customer_id": "c"}', b"[1, 2]"]


def _export(tmp_path: Path) -> tuple[Path, dict[tuple[int, str], int], int]:
    """The export (file order: as the helpdesk sent them, re-sends included), its truth, its distinct tickets."""
    gen = _history()
    truth = dict(gen.truth(3600))
    churn = churn_tickets()
    for c in churn:
        hour = int(datetime.fromisoformat(c["created_at"]).timestamp()) // 3600 * 3600
        truth[(hour, "reports")] = truth.get((hour, "reports"), 0) + 1
    lines = [orjson.dumps(t.payload) for t in gen.tickets()] + [orjson.dumps(c) for c in churn]
    lines[100:100] = BROKEN  # lines 101-103
    path = tmp_path / "export.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    distinct = len({t.payload["id"] for t in gen.tickets()}) + len(churn)
    return path, truth, distinct


def test_the_backtest_of_an_export_finds_the_surge_the_pattern_and_the_fix(tmp_path: Path) -> None:
    export, truth, distinct = _export(tmp_path)
    events = tmp_path / "events.jsonl"
    events.write_bytes(orjson.dumps(FIX) + b"\n")
    out = tmp_path / "review.html"
    run = subprocess.run(
        [TICKETPULSE, "backtest", str(export), "--output", str(out), "--events", str(events)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = orjson.loads(run.stdout.strip().splitlines()[-1])
    assert (summary["tickets"], summary["rejected"]) == (distinct, len(BROKEN))
    assert [f"rejected line {n}" in run.stderr for n in (101, 102, 103)] == [True] * 3
    # the burst: 12x for two hours from Wednesday 10:00 of the second week, alerted within its first hour
    burst = START + timedelta(days=9, hours=10)
    reports = [e for e in summary["spike_episodes"] if e["area"] == "reports" and e["alerted"]]
    fired = [datetime.fromisoformat(e["detected_at"]) for e in reports]
    assert any(burst <= at <= burst + timedelta(hours=1) for at in fired), summary["spike_episodes"]
    # billing as a whole never surged: its daily and weekly peaks are normal, not incidents
    assert not [e for e in summary["spike_episodes"] if e["area"] == "billing" and e["case_type"] == "all"]
    assert summary["near_churn"] == 12 and summary["effects"] == 1

    page = out.read_text()
    for area in ("reports", "billing"):
        total = sum(n for (_, a), n in truth.items() if a == area)
        assert f"<td>{area}</td><td><span class='num'>{total}</span></td>" in page
    # the near-churn pattern: its customers exact, a decision, their words with personal data masked
    assert "12 tickets from 12 customers" in page and "Suggested: fix the bug" in page
    for personal in ("555 01", "@corp.example"):
        assert personal not in page
    # the surge where it would have fired, the fix measured, the tags' quality, the refused rows
    assert "would have fired" in page and burst.strftime("%Y-%m-%d 1") in page
    assert re.search(r"<td>reports</td><td>fix</td><td>fix-123</td>", page)
    assert "How well the tags held" in page and "<td>101</td><td>not valid JSON" in page
    assert "<script" not in page and "http://" not in page

    dom, shot = open_in_chromium(out, tmp_path / "review.png")
    assert "ticketpulse backtest" in dom and "Rows refused" in dom
    assert shot.stat().st_size > 20_000


def test_a_backtest_of_nothing_says_so(tmp_path: Path) -> None:
    export = tmp_path / "empty.jsonl"
    export.write_bytes(BROKEN[0] + b"\n")
    out = tmp_path / "review.html"
    run = subprocess.run(
        [TICKETPULSE, "backtest", str(export), "--output", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    summary = orjson.loads(run.stdout.strip().splitlines()[-1])
    assert (summary["tickets"], summary["rejected"], summary["spike_episodes"]) == (0, 1, [])
    assert "Rows refused" in out.read_text()
