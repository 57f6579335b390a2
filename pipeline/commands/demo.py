"""``ticketpulse demo``: the whole path on embedded services, watched live.

Starts a Tansu broker and (where ``influxd`` is installed) a throwaway InfluxDB,
runs a real worker process, plays generated days of helpdesk traffic with a spike
and a few broken messages through it, and shows the counts per area, the
dead-letter count and the progress until every ticket is counted. Everything it
started is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from pipeline.runtime.kafka import read_values
from pipeline.settings import Settings
from pipeline.testbed.generator import Spike, TicketGenerator
from pipeline.testbed.services import EmbeddedBroker, EmbeddedInflux

__all__ = ["run_demo"]

DEMO_START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
BROKEN = [
    (b"broken-1", b'{"id": "broken-1", "created_at": '),
    (b"broken-2", b'{"id": "broken-2", "customer_id": "c9", "subject": "x", "body": "y"}'),
    (
        b"broken-3",
        b'{"id": "broken-3", "created_at": "2026-03-02T10:00:00", "customer_id": "c9", "subject": "x", "body": "y"}',
    ),
]
_BARS = " ▁▂▃▄▅▆▇█"


def _sparkline(values: list[int]) -> str:
    top = max(values) or 1
    return "".join(_BARS[min(8, round(8 * v / top))] for v in values)


class _Volumes:
    """Reads the per-area hourly counts back from where the worker wrote them."""

    def __init__(self, influx: EmbeddedInflux | None, series_file: Path, database: str) -> None:
        self.influx, self.series_file, self.database = influx, series_file, database

    def read(self) -> dict[str, dict[int, int]]:
        out: dict[str, dict[int, int]] = defaultdict(dict)
        if self.influx is not None:
            q = "SELECT tickets FROM ticket_volume WHERE case_type = 'all' GROUP BY area"
            params = urllib.parse.urlencode({"db": self.database, "q": q, "epoch": "s"})
            try:
                with urllib.request.urlopen(f"{self.influx.url}/query?{params}", timeout=5) as resp:  # noqa: S310
                    result = orjson.loads(resp.read())["results"][0]
            except OSError:
                return {}
            for series in result.get("series", []):
                for ts, value in series["values"]:
                    out[series["tags"]["area"]][int(ts)] = int(value)
        elif self.series_file.exists():
            for line in self.series_file.read_text().splitlines():
                head, fields, ts = line.rsplit(" ", 2)
                tags = dict(kv.split("=", 1) for kv in head.split(",")[1:])
                if head.startswith("ticket_volume,") and tags.get("case_type") == "all":
                    out[tags["area"]][int(ts)] = int(fields.split("tickets=")[1].split("i")[0])
        return out


def _count_dead_letters(settings: Settings) -> int:
    """The messages on the dead-letter topic, read from the start of each partition."""
    return sum(1 for _ in read_values(settings, settings.topic_dead_letter, quiet_seconds=0.3))


def _read_alerts(settings: Settings) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in read_values(settings, settings.topic_alerts, quiet_seconds=1.0)]


def _print_patterns(influx: EmbeddedInflux, database: str) -> None:
    """The largest patterns the worker found, and the near-churn tickets per area (``pattern_volume``)."""
    q = 'SELECT sum("tickets"), sum("near_churn"), last("name") FROM pattern_volume GROUP BY "pattern", "area"'
    url = f"{influx.url}/query?" + urllib.parse.urlencode({"db": database, "q": q, "epoch": "s"})
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - our own local influxd
        results = orjson.loads(resp.read())["results"][0].get("series", [])
    rows = sorted(
        ((s["values"][0][1], s["values"][0][2], s["values"][0][3], s["tags"]["area"]) for s in results),
        key=lambda r: (-r[0], r[2]),
    )
    churn: dict[str, int] = defaultdict(int)
    for _, near, _, area in rows:
        churn[area] += near
    print(f"\npatterns found by the worker: {len(rows)} (hours that have closed); the largest:")
    for tickets, near, name, area in rows[:8]:
        print(f"  {tickets:>6} tickets  {area:<14} '{name}'" + (f"  near-churn={near}" if near else ""))
    print(
        "near-churn tickets (users about to cancel, switch, or who gave up): "
        + ("  ".join(f"{a}={n}" for a, n in sorted(churn.items(), key=lambda kv: -kv[1]) if n) or "none")
    )


def _plot(volumes: dict[str, dict[int, int]], spike: Spike, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.dates import date2num
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(11, 5))
    for area in sorted(volumes, key=lambda a: -sum(volumes[a].values())):
        pts = sorted(volumes[area].items())
        ax.plot(
            [date2num(datetime.fromtimestamp(t, UTC)) for t, _ in pts], [v for _, v in pts], label=area, linewidth=1.4
        )
    ax.axvspan(
        date2num(spike.start),
        date2num(spike.start + timedelta(hours=spike.hours)),
        color="red",
        alpha=0.12,
        label=f"injected spike: {spike.area} x{spike.factor:g}",
    )
    ax.set_title("Tickets per hour and product area, as written to InfluxDB (ticket_volume)")
    ax.set_ylabel("tickets per hour")
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    ax.xaxis_date()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run_demo(days: float = 3.0, scale: float = 20.0, seed: int = 1, output: Path | None = None) -> int:
    """Run the demo; returns the exit code."""
    started: list[object] = []
    worker: subprocess.Popen[bytes] | None = None
    workdir = Path(tempfile.mkdtemp(prefix="ticketpulse-demo-"))

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C (SIGINT) and SIGTERM both stop everything the demo started; SIGINT set
    # explicitly, as a shell may start a background demo with SIGINT ignored.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    try:
        print("starting the embedded broker (Tansu) ...", flush=True)
        broker = EmbeddedBroker()
        broker.start()
        started.append(broker)
        influx: EmbeddedInflux | None = None
        if EmbeddedInflux.available():
            print("starting a throwaway InfluxDB (influxd) ...", flush=True)
            influx = EmbeddedInflux()
            influx.start()
            started.append(influx)
        series_file = Path.cwd() / "ticketpulse-series.lp"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TICKETPULSE_")},
            "TICKETPULSE_BROKER_URL": broker.url,
            "TICKETPULSE_APP_ID": "ticketpulse-demo",
            "TICKETPULSE_DATA_DIR": str(workdir),
            "TICKETPULSE_WEB_ENABLED": "false",
            "TICKETPULSE_LOG_LEVEL": "warning",
            "TICKETPULSE_SERIES_FILE": str(series_file),
        }
        if influx is not None:
            env["TICKETPULSE_INFLUX_URL"] = influx.url
        else:
            series_file.unlink(missing_ok=True)
            print(f"influxd is not installed: series go to {series_file} as line protocol", flush=True)
        settings = Settings.model_validate(
            {k.removeprefix("TICKETPULSE_").lower(): v for k, v in env.items() if k.startswith("TICKETPULSE_")}
        )
        from pipeline.runtime.kafka import ensure_topics

        ensure_topics(settings)
        log = (workdir / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "pipeline.commands.cli", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        spike = Spike("reports", DEMO_START + timedelta(days=1, hours=10), hours=2, factor=4)
        gen = TicketGenerator(
            DEMO_START, days=days, seed=seed, scale=scale, spikes=[spike], customers=20000, near_churn_every=40
        )
        tickets = list(gen.tickets())
        truth = gen.truth(settings.window_seconds)
        unique = sum(truth.values())
        print(
            f"playing {days:g} days of generated tickets: {len(tickets)} messages, {unique} distinct tickets, "
            f"{len(BROKEN)} broken messages, a {spike.factor:g}x spike in '{spike.area}' at {spike.start:%a %H:%M}",
            flush=True,
        )
        from pipeline.ingest.produce import produce

        messages = [(n, orjson.dumps(t.payload)) for n, t in enumerate(tickets, 1)]
        # The broken messages go first: once they are in the dead-letter topic the
        # worker is up and consuming, and the clock for the throughput starts.
        produce(settings, [(0, raw) for _, raw in BROKEN], validate=False, progress=False)
        print("waiting for the worker to join the group ...", flush=True)
        ready_by = time.monotonic() + 120
        while _count_dead_letters(settings) < len(BROKEN):
            if worker.poll() is not None or time.monotonic() > ready_by:
                print(
                    f"the worker did not start reading (exit code {worker.poll()}); its log: {workdir / 'worker.log'}"
                )
                return 1
            time.sleep(0.5)
        t0 = time.perf_counter()
        summary = produce(settings, messages, total=len(messages), progress=False)
        print(f"sent {summary.sent} messages in {time.perf_counter() - t0:.1f} s; the worker counts them:", flush=True)
        reader = _Volumes(influx, series_file, settings.influx_database)
        counted, volumes, deadline = 0, {}, time.monotonic() + 300
        dead = 0
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                print(f"the worker stopped (exit {worker.returncode}); its log: {workdir / 'worker.log'}")
                return 1
            volumes = reader.read()
            counted = sum(sum(v.values()) for v in volumes.values())
            dead = _count_dead_letters(settings)
            elapsed = time.perf_counter() - t0
            per_area = "  ".join(f"{a}={sum(v.values())}" for a, v in sorted(volumes.items()))
            print(
                f"  [{elapsed:5.1f}s] counted {counted}/{unique} ({100 * counted / unique:5.1f}%)  "
                f"dead-letter={dead}  {per_area}",
                flush=True,
            )
            if counted >= unique and dead >= len(BROKEN):
                break
            time.sleep(1.0)
        elapsed = time.perf_counter() - t0
        ok = counted == unique and dead == len(BROKEN)
        print()
        print(f"{'area':<14} {'tickets':>8}  tickets per hour, {DEMO_START:%a %d %b} onwards")
        hours = [int((DEMO_START + timedelta(hours=h)).timestamp()) for h in range(int(days * 24))]
        for area in sorted(volumes, key=lambda a: -sum(volumes[a].values())):
            series = [volumes[area].get(h, 0) for h in hours]
            print(f"{area:<14} {sum(series):>8}  {_sparkline(series)}")
        print()
        print(
            f"{'exact' if ok else 'NOT exact'}: {counted} distinct tickets counted (expected {unique}), "
            f"{dead} dead letters (expected {len(BROKEN)}); {len(messages)} messages end to end "
            f"in {elapsed:.1f} s = {len(messages) / elapsed:.0f} messages/s "
            f"({unique / elapsed:.0f} tickets/s)"
        )
        # The spike watch runs after the counts; give its last batches a moment.
        spikes: list[dict[str, Any]] = []
        alerts_by = time.monotonic() + 120

        def ended(alerts: list[dict[str, Any]]) -> bool:
            # the area's episode and, when the spike was also a pattern's, the pattern's
            kinds = {("pattern" in a, a["event"]) for a in alerts}
            return (False, "resolved") in kinds and ((True, "opened") not in kinds or (True, "resolved") in kinds)

        while time.monotonic() < alerts_by and not ended(spikes):
            # A read that ends on a quiet spell may have missed a slow partition (a busy
            # machine): keep the fullest read, never a shorter one.
            spikes = max(spikes, _read_alerts(settings), key=len)
            time.sleep(0.5)
        print(f"\nspike alerts on '{settings.topic_alerts}': {len(spikes)}")
        if not ended(spikes):
            print(f"  (the spike watch had not resolved the spike after 120 s; its log: {workdir / 'worker.log'})")
        for a in spikes:
            what = f"area={a['area']}" + (f" case_type={a['case_type']}" if a.get("case_type") else "")
            what += f" pattern='{a['pattern']['name']}'" if "pattern" in a else ""
            print(
                f"  {a['event']:<8} {a['level']:<8} {what} window={a['window_start']} "
                f"customers={a['customers']} expected={a['expected']:.1f} score={a['score']} episode={a['episode_id']}"
            )
            if a["event"] == "opened":
                print(f"           top terms: {', '.join(a['top_terms'])}")
                for text in a["example_tickets"][:3]:
                    print(f"           > {text[:110]}")
        if influx is not None:
            _print_patterns(influx, settings.influx_database)
        png = output or Path.cwd() / "ticketpulse-demo.png"
        if _plot(volumes, spike, png):
            print(f"plot of the volumes: {png}")
        if influx is None:
            print(f"series (line protocol): {series_file}")
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything the demo started", flush=True)
        return 130
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        for service in reversed(started):
            service.stop()  # type: ignore[attr-defined]
