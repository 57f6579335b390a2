"""The main job, as a newcomer runs it: `ticketpulse demo`."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import TICKETPULSE

pytestmark = pytest.mark.integration


def _children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            child = int(stat.parent.name)
            out += [child, *_children_of(child)]
    return out


def test_demo_counts_exactly_and_reports_the_spike(tmp_path: Path) -> None:
    r = subprocess.run(
        [TICKETPULSE, "demo", "--days", "4", "--scale", "3"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "exact: 6518 distinct tickets counted (expected 6518), 3 dead letters (expected 3)" in r.stdout
    assert "opened" in r.stdout and "area=reports window=2026-03-05T10:00:00+00:00" in r.stdout, r.stdout[-4000:]
    assert (tmp_path / "ticketpulse-demo.png").stat().st_size > 10_000


def test_ctrl_c_stops_everything_the_demo_started(tmp_path: Path) -> None:
    demo = subprocess.Popen([TICKETPULSE, "demo"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    started: list[int] = []
    while time.monotonic() < deadline and len(started) < 3:  # broker, influxd, worker
        started = _children_of(demo.pid)
        time.sleep(0.2)
    assert len(started) >= 3, started
    time.sleep(1)
    demo.send_signal(signal.SIGINT)
    out, _ = demo.communicate(timeout=60)
    assert b"interrupted: stopping everything the demo started" in out
    assert demo.returncode == 130
    alive = [pid for pid in started if Path(f"/proc/{pid}").exists()]
    for pid in alive:  # do not leave them behind even if the test fails
        os.kill(pid, signal.SIGKILL)
    assert alive == []
