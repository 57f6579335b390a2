"""The benchmark contract other tools call (issue #27): ``benchmarks/bench_pipeline.py --tickets FILE --json``.

Not timed: a tiny file, one worker, and what the last line says about it.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from pipeline.testbed.generator import TicketGenerator

pytestmark = pytest.mark.integration

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
