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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from pipeline.runtime.kafka import read_values
from pipeline.settings import Settings
from pipeline.testbed.generator import Spike, TicketGenerator
from pipeline.testbed.services import EmbeddedBroker, EmbeddedInflux

__all__ = ["Playlist", "export_playlist", "generated_playlist", "run_demo"]

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


def _plot(volumes: dict[str, dict[int, int]], spike: Spike | None, path: Path) -> bool:
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
    if spike is not None:
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


@dataclass
class Playlist:
    """What the demo plays: messages in order, and what an exact pipeline counts of them."""

    #: ``(line, ticket JSON, event time)`` in the order they are sent
    messages: list[tuple[int, bytes, float]]
    #: distinct tickets an exact pipeline counts
    unique: int
    #: first hour of the volumes shown, and how many hours
    start: datetime
    hours: int
    description: str
    spike: Spike | None = None
    rejected: list[tuple[int, str]] = field(default_factory=list)


def generated_playlist(days: float, scale: float, seed: int, window_seconds: int) -> Playlist:
    """Generated days of a helpdesk, with a 4x spike in reports on the second day."""
    # on the fourth day: a new area is not alerted before it has 72 hours of history (detectors.VolumeWatch)
    spike = Spike("reports", DEMO_START + timedelta(days=3, hours=10), hours=2, factor=4)
    gen = TicketGenerator(
        DEMO_START, days=days, seed=seed, scale=scale, spikes=[spike], customers=20000, near_churn_every=40
    )
    tickets = list(gen.tickets())
    unique = sum(gen.truth(window_seconds).values())
    messages = [(n, orjson.dumps(t.payload), 0.0) for n, t in enumerate(tickets, 1)]
    text = (
        f"playing {days:g} days of generated tickets: {len(tickets)} messages, {unique} distinct tickets, "
        f"{len(BROKEN)} broken messages, a {spike.factor:g}x spike in '{spike.area}' at {spike.start:%a %H:%M}"
    )
    return Playlist(messages, unique, DEMO_START, int(days * 24), text, spike)


def export_playlist(path: Path, fmt: str, settings: Settings) -> Playlist:
    """A helpdesk's own export (the importer's formats), in event-time order; rows that are not tickets set aside."""
    from pipeline.ingest.importer import read_export
    from pipeline.ingest.schema import TicketError, parse_ticket

    good: list[tuple[int, bytes, float]] = []
    rejected: list[tuple[int, str]] = []
    ids: set[str] = set()
    for line, record in read_export(path, fmt):
        if not isinstance(record, bytes):
            rejected.append((line, record))
            continue
        try:
            ticket = parse_ticket(record, settings.max_ticket_bytes)
        except TicketError as exc:
            rejected.append((line, str(exc)))
            continue
        ids.add(ticket.id)
        good.append((line, record, ticket.created_ts))
    good.sort(key=lambda m: m[2])
    first = good[0][2] if good else DEMO_START.timestamp()
    last = good[-1][2] if good else first
    start = datetime.fromtimestamp(first - first % 3600, UTC)
    text = f"playing {path.name}: {len(good)} tickets, {len(ids)} distinct, {len(rejected)} rows that are not tickets"
    return Playlist(good, len(ids), start, int((last - first) // 3600) + 1, text, rejected=rejected)


class Demo:
    """The demo's steps: services up, a worker, the messages played, the counts watched, what it found."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Any] = []
        self.worker: subprocess.Popen[bytes] | None = None
        self.influx: EmbeddedInflux | None = None
        self.series_file = Path.cwd() / "ticketpulse-series.lp"

    def start(self) -> Settings:
        """The embedded broker, InfluxDB where installed, the topics and a worker; the worker's settings."""
        print("starting the embedded broker (Tansu) ...", flush=True)
        broker = EmbeddedBroker()
        broker.start()
        self.started.append(broker)
        if EmbeddedInflux.available():
            print("starting a throwaway InfluxDB (influxd) ...", flush=True)
            self.influx = EmbeddedInflux()
            self.influx.start()
            self.started.append(self.influx)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TICKETPULSE_")},
            "TICKETPULSE_BROKER_URL": broker.url,
            "TICKETPULSE_APP_ID": "ticketpulse-demo",
            "TICKETPULSE_DATA_DIR": str(self.workdir),
            "TICKETPULSE_WEB_ENABLED": "false",
            "TICKETPULSE_LOG_LEVEL": "warning",
            "TICKETPULSE_SERIES_FILE": str(self.series_file),
        }
        if self.influx is not None:
            env["TICKETPULSE_INFLUX_URL"] = self.influx.url
        else:
            self.series_file.unlink(missing_ok=True)
            print(f"influxd is not installed: series go to {self.series_file} as line protocol", flush=True)
        settings = Settings.model_validate(
            {k.removeprefix("TICKETPULSE_").lower(): v for k, v in env.items() if k.startswith("TICKETPULSE_")}
        )
        from pipeline.runtime.kafka import ensure_topics

        ensure_topics(settings)
        log = (self.workdir / "worker.log").open("wb")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "pipeline.commands.cli", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return settings

    def worker_ready(self, settings: Settings) -> bool:
        """Send the broken messages; the worker is up once they are in the dead-letter topic."""
        from pipeline.ingest.produce import produce

        produce(settings, [(0, raw) for _, raw in BROKEN], validate=False, progress=False)
        print("waiting for the worker to join the group ...", flush=True)
        ready_by = time.monotonic() + 120
        worker = self._worker()
        while _count_dead_letters(settings) < len(BROKEN):
            if worker.poll() is not None or time.monotonic() > ready_by:
                log = self.workdir / "worker.log"
                print(f"the worker did not start reading (exit code {worker.poll()}); its log: {log}")
                return False
            time.sleep(0.5)
        return True

    def play(self, settings: Settings, playlist: Playlist, speedup: float | None) -> None:
        """Send the messages: at once, or ``speedup`` times faster than they happened."""
        from pipeline.ingest.produce import produce

        t0 = time.perf_counter()
        if speedup is None or not playlist.messages:
            summary = produce(settings, [(n, raw) for n, raw, _ in playlist.messages], progress=False)
            sent = summary.sent
        else:
            first, sent, at = playlist.messages[0][2], 0, 0
            while at < len(playlist.messages):
                due = first + (time.perf_counter() - t0) * speedup
                batch = []
                while at < len(playlist.messages) and playlist.messages[at][2] <= due:
                    batch.append(playlist.messages[at][:2])
                    at += 1
                if batch:
                    sent += produce(settings, batch, progress=False).sent
                time.sleep(0.2)
        print(f"sent {sent} messages in {time.perf_counter() - t0:.1f} s; the worker counts them:", flush=True)

    def watch_counts(self, settings: Settings, unique: int, t0: float) -> tuple[dict[str, dict[int, int]], int, int]:
        """Show the counts until every ticket is counted (or five minutes); the volumes, counted, dead letters."""
        reader = _Volumes(self.influx, self.series_file, settings.influx_database)
        counted, volumes, dead = 0, {}, 0
        deadline = time.monotonic() + 300
        worker = self._worker()
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                log = self.workdir / "worker.log"
                raise RuntimeError(f"the worker stopped (exit {worker.returncode}); its log: {log}")
            volumes = reader.read()
            counted = sum(sum(v.values()) for v in volumes.values())
            dead = _count_dead_letters(settings)
            per_area = "  ".join(f"{a}={sum(v.values())}" for a, v in sorted(volumes.items()))
            print(
                f"  [{time.perf_counter() - t0:5.1f}s] counted {counted}/{unique} "
                f"({100 * counted / max(1, unique):5.1f}%)  dead-letter={dead}  {per_area}",
                flush=True,
            )
            if counted >= unique and dead >= len(BROKEN):
                break
            time.sleep(1.0)
        return volumes, counted, dead

    def show_alerts(self, settings: Settings) -> None:
        """The spike alerts, once the watch has resolved them (or two minutes)."""
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
            print(f"  (the spike watch had not resolved the spike after 120 s; its log: {self.workdir / 'worker.log'})")
        for a in spikes:
            what = f"area={a['area']}" + (f" case_type={a['case_type']}" if a.get("case_type") else "")
            what += f" pattern='{a['pattern']['name']}'" if "pattern" in a else ""
            print(
                f"  {a['event']:<8} {a['level']:<8} {what} window={a['window_start']} "
                f"customers={a['customers']} expected={a['expected']:.1f} score={a['score']} episode={a['episode_id']}"
            )
            if a["event"] == "opened":
                print(f"           {a.get('evidence', '')}; top terms: {', '.join(a['top_terms'])}")
                for text in a["example_tickets"][:3]:
                    print(f"           > {text[:110]}")

    def _worker(self) -> subprocess.Popen[bytes]:
        if self.worker is None:
            raise RuntimeError("the worker was not started")
        return self.worker

    def stop(self) -> None:
        """Stop the worker and every service the demo started."""
        worker = self.worker
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        for service in reversed(self.started):
            service.stop()


def _print_volumes(playlist: Playlist, volumes: dict[str, dict[int, int]]) -> None:
    print()
    print(f"{'area':<14} {'tickets':>8}  tickets per hour, {playlist.start:%a %d %b} onwards")
    step = max(1, playlist.hours // 96)  # a line of a terminal: longer histories in coarser steps
    hours = [int((playlist.start + timedelta(hours=h)).timestamp()) for h in range(playlist.hours)]
    for area in sorted(volumes, key=lambda a: -sum(volumes[a].values()))[:15]:
        series = [volumes[area].get(h, 0) for h in hours]
        coarse = [sum(series[i : i + step]) for i in range(0, len(series), step)]
        print(f"{area:<14} {sum(series):>8}  {_sparkline(coarse)}")
    print()


def run_demo(
    days: float = 4.0,
    scale: float = 20.0,
    seed: int = 1,
    output: Path | None = None,
    export: Path | None = None,
    export_format: str = "jsonl",
    speedup: float | None = None,
) -> int:
    """Run the demo (generated days, or ``export``: a helpdesk's own file); returns the exit code."""
    demo = Demo(Path(tempfile.mkdtemp(prefix="ticketpulse-demo-")))

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C (SIGINT) and SIGTERM both stop everything the demo started; SIGINT set
    # explicitly, as a shell may start a background demo with SIGINT ignored.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    try:
        settings = demo.start()
        if export is not None:
            playlist = export_playlist(export, export_format, settings)
        else:
            playlist = generated_playlist(days, scale, seed, settings.window_seconds)
        print(playlist.description, flush=True)
        for line, reason in playlist.rejected[:20]:
            print(f"  not sent: line {line}: {reason}")
        if not demo.worker_ready(settings):
            return 1
        t0 = time.perf_counter()
        demo.play(settings, playlist, speedup)
        volumes, counted, dead = demo.watch_counts(settings, playlist.unique, t0)
        elapsed = time.perf_counter() - t0
        ok = counted == playlist.unique and dead == len(BROKEN)
        _print_volumes(playlist, volumes)
        n = len(playlist.messages)
        print(
            f"{'exact' if ok else 'NOT exact'}: {counted} distinct tickets counted (expected {playlist.unique}), "
            f"{dead} dead letters (expected {len(BROKEN)}); {n} messages end to end "
            f"in {elapsed:.1f} s = {n / elapsed:.0f} messages/s ({playlist.unique / elapsed:.0f} tickets/s)"
        )
        demo.show_alerts(settings)
        if demo.influx is not None:
            _print_patterns(demo.influx, settings.influx_database)
        png = output or Path.cwd() / "ticketpulse-demo.png"
        if _plot(volumes, playlist.spike, png):
            print(f"plot of the volumes: {png}")
        if demo.influx is None:
            print(f"series (line protocol): {demo.series_file}")
        return 0 if ok else 1
    except RuntimeError as exc:
        print(exc)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything the demo started", flush=True)
        return 130
    finally:
        demo.stop()
