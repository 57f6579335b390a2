"""The benchmark contract other tools call (issue #27): ``benchmarks/bench_pipeline.py --tickets FILE --json``.

Not timed: a tiny file, one worker, and what the last line says about it.
"""

from __future__ import annotations

import gzip
import importlib.util
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.settings import Settings
from pipeline.testbed.generator import TicketGenerator

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pipeline.py"

KEYS = {
    "tickets",
    "messages",
    "workers",
    "seconds",
    "tickets_per_second",
    "worker_cpu_seconds",
    "tickets_per_worker_cpu_second",
    "transport_messages_per_second",
    "p50_latency_ms",
    "p99_latency_ms",
    "exact",
}


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_pipeline", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _ticket(ticket_id: str, created_at: str, area: str | None = "billing") -> bytes:
    doc = {"id": ticket_id, "created_at": created_at, "customer_id": "c-1", "subject": "s", "body": "b"}
    return orjson.dumps(doc | ({"product_area": area} if area else {}))


def test_the_expected_counts_are_the_valid_tickets_per_area_and_window_and_a_difference_is_named() -> None:
    bench = _bench()
    raws = [
        _ticket("a", "2026-03-02T10:05:00Z"),
        _ticket("a", "2026-03-02T12:00:00Z"),  # a re-send: counted once, in its first copy's window
        b'{"id": "broken"',
        _ticket("b", "2026-03-02T09:59:00Z", area=None),  # behind the newest window by one
        _ticket("c", "2099-01-01T00:00:00Z"),  # far ahead of the clock: a dead letter
    ]
    expected = bench.expected_counts(raws, Settings())
    ten, nine = 1772445600, 1772442000
    assert dict(expected.counts) == {("billing", ten): 1, ("unassigned", nine): 1}
    assert (expected.rejected, expected.without_area, expected.lateness_seconds) == (2, 1, 3 * 3600)
    assert expected.ids == ["a", "a", None, "b", None]
    # read back with the unassigned ticket under a predicted area: exact per window only
    read = {("billing", ten): 1, ("reports", nine): 1}
    assert "differences" in bench._check_counts(expected, read, by_window=False)
    assert bench._check_counts(expected, read, by_window=True) == {"counted": 2, "exact_by": "window"}
    wrong = bench._check_counts(expected, {("billing", ten): 2}, by_window=False)["differences"]
    assert wrong == [
        {"area": "billing", "window": "2026-03-02T10:00:00+00:00", "expected": 1, "read": 2},
        {"area": "unassigned", "window": "2026-03-02T09:00:00+00:00", "expected": 1, "read": 0},
    ]


@pytest.mark.integration
def test_a_tiny_file_played_at_a_rate_gives_every_key_and_exact_counts(tmp_path: Path) -> None:
    # every generated ticket with its area, so the counts are checked per area and window
    gen = TicketGenerator(datetime(2026, 3, 2, tzinfo=UTC), days=1, scale=2, seed=3, label_rate=1.0)
    lines = [orjson.dumps(t.payload) for t in gen.tickets()][:200]
    distinct = len({orjson.loads(line)["id"] for line in lines})  # re-sends on update count once
    # two rows that are not tickets, in the middle: dead letters, not a break in the counts
    lines[100:100] = [b'{"id": "broken-a", "created_at": ', b'{"id": "broken-b", "customer_id": "c"}']
    path = tmp_path / "tickets.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))

    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tickets", str(path), "--workers", "1", "--rate", "400", "--json"],
        capture_output=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    result = orjson.loads(done.stdout.splitlines()[-1])
    assert KEYS <= set(result), result
    assert result["exact"] is True, result
    assert result["exact_by"] == "area and window"
    assert (result["messages"], result["tickets"], result["workers"]) == (202, distinct, 1)
    assert (result["rejected"], result["dead_letters"], result["counted"]) == (2, 2, distinct)
    assert result["latency_tickets"] == distinct
    assert 0 < result["p50_latency_ms"] <= result["p99_latency_ms"]
    assert result["worker_cpu_seconds"] > 0 and result["transport_messages_per_second"] > 0
