"""Real services for the whole test session, started by the tests themselves.

One Tansu broker, one InfluxDB 1.x (Debian's ``influxd``) and one VictoriaMetrics
(Debian's ``victoria-metrics``, the InfluxDB 2.x write API) on free loopback ports,
data in temporary folders, stopped at the end. Each test gets its own topics (an app
id and topic names of its own) and its own InfluxDB database, so tests do not see
each other's data.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.settings import Settings
from pipeline.testbed.generator import Area, Spike, TicketGenerator
from pipeline.testbed.services import EmbeddedBroker, EmbeddedInflux, EmbeddedVictoria

TICKETPULSE = str(Path(sys.executable).with_name("ticketpulse"))


#: Worker log lines that tell what happened to the counts: recoveries, holes read again, errors.
_TELLING = ("recovered", "loaded=", "skipped=", "read_again", "ERROR", "Crashed", "commit=failed", "stop=")


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as service:
        yield service  # type: ignore[misc]


@pytest.fixture(scope="session")
def influx() -> Iterator[EmbeddedInflux]:
    if not EmbeddedInflux.available():
        pytest.fail("influxd is not installed: run `make test`, which installs Debian's influxdb")
    with EmbeddedInflux() as service:
        yield service  # type: ignore[misc]


@pytest.fixture(scope="session")
def victoria() -> Iterator[EmbeddedVictoria]:
    if not EmbeddedVictoria.available():
        pytest.fail("victoria-metrics is not installed: run `make test`, which installs it")
    with EmbeddedVictoria() as service:
        yield service  # type: ignore[misc]


def influx_query(url: str, database: str, query: str) -> list[dict[str, Any]]:
    """Run InfluxQL; return the series of the first statement (raises on an error)."""
    params = urllib.parse.urlencode({"db": database, "q": query, "epoch": "s"})
    with urllib.request.urlopen(f"{url}/query?{params}", timeout=10) as resp:
        body = orjson.loads(resp.read())
    result = body["results"][0]
    if "error" in result:
        raise AssertionError(f"InfluxQL error for {query!r}: {result['error']}")
    return list(result.get("series", []))


class Stack:
    """One test's view of the services: its settings, its workers, its helpers."""

    def __init__(self, broker: EmbeddedBroker, influx: EmbeddedInflux, tmp_path: Path, **overrides: Any) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.tmp_path = tmp_path
        self.broker = broker
        self.influx = influx
        self.env_overrides: dict[str, str] = {
            "TICKETPULSE_BROKER_URL": broker.url,
            "TICKETPULSE_APP_ID": f"tp-{self.run_id}",
            "TICKETPULSE_TOPIC_TICKETS": f"tickets-{self.run_id}",
            "TICKETPULSE_TOPIC_DEAD_LETTER": f"dead-{self.run_id}",
            "TICKETPULSE_TOPIC_LABELS": f"labels-{self.run_id}",
            "TICKETPULSE_TOPIC_CLASSIFIED": f"classified-{self.run_id}",
            "TICKETPULSE_TOPIC_ALERTS": f"alerts-{self.run_id}",
            "TICKETPULSE_TOPIC_PRODUCT_EVENTS": f"events-{self.run_id}",
            "TICKETPULSE_INFLUX_URL": influx.url,
            "TICKETPULSE_INFLUX_DATABASE": f"db_{self.run_id}",
            "TICKETPULSE_WEB_ENABLED": "false",
            "TICKETPULSE_BATCH_SECONDS": "0.2",
            "TICKETPULSE_LOG_LEVEL": "warning",
            # Counting under predicted tags depends on what the models knew at the time;
            # tests that compare counts with the generator's truth count the helpdesk's
            # tags only (tests/test_labels_integration.py covers the default).
            "TICKETPULSE_COUNT_PREDICTED_TAGS": "false",
        }
        self.env_overrides.update({f"TICKETPULSE_{k.upper()}": str(v) for k, v in overrides.items()})
        self.workers: list[subprocess.Popen[bytes]] = []

    @property
    def settings(self) -> Settings:
        kwargs = {k.removeprefix("TICKETPULSE_").lower(): v for k, v in self.env_overrides.items()}
        return Settings(**kwargs)

    @property
    def database(self) -> str:
        return self.env_overrides["TICKETPULSE_INFLUX_DATABASE"]

    def env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("TICKETPULSE_")}
        return {**base, **self.env_overrides, **extra}

    def start_worker(self, name: str = "w1", **extra: str) -> subprocess.Popen[bytes]:
        data_dir = self.tmp_path / f"worker-{name}"
        log = (self.tmp_path / f"worker-{name}.log").open("ab")
        proc = subprocess.Popen(
            [TICKETPULSE, "worker"],
            env=self.env(TICKETPULSE_DATA_DIR=str(data_dir), **extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        return proc

    def worker_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.tmp_path.glob("worker-*.log")))

    def count_mismatch(self, expected: dict[tuple[int, str], int], got: dict[tuple[int, str], int]) -> str:
        """What a failed count comparison needs to be read: the tickets missing or extra per window
        (oldest first), and every worker's lines on recovery, holes read again and errors."""
        windows = sorted({w for w, _ in expected} | {w for w, _ in got})
        diffs = []
        for window in windows:
            want = sum(n for (w, _), n in expected.items() if w == window)
            have = sum(n for (w, _), n in got.items() if w == window)
            if want != have:
                diffs.append(f"{window}:{have - want:+d}/{want}")
        keys = [line for line in self.worker_log_lines() if any(mark in line for mark in _TELLING)]
        total = sum(got.values()) - sum(expected.values())
        return (
            f"tickets {total:+d} of {sum(expected.values())}; per window (got - expected / expected): "
            + " ".join(diffs)
            + "\n"
            + "\n".join(keys[-60:])
            + "\n"
            + self.worker_logs()
        )

    def worker_log_lines(self) -> list[str]:
        logs = sorted(self.tmp_path.glob("worker-*.log"))
        return [line for log in logs for line in log.read_text(errors="replace").splitlines()]

    def crashes(self) -> list[str]:
        """Lines where Faust's supervisor restarted a crashed agent, from every worker log."""
        return [
            line
            for path in sorted(self.tmp_path.glob("worker-*.log"))
            for line in path.read_text(errors="replace").splitlines()
            if "Crashed reason=" in line
        ]

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def create_topics(self) -> None:
        from pipeline.runtime.kafka import ensure_topics

        ensure_topics(self.settings)

    def send(self, messages: list[tuple[bytes | None, bytes | None]], topic: str | None = None) -> None:
        """Send raw ``(key, value)`` messages, as a helpdesk integration would."""
        from pipeline.runtime.kafka_clients import producer

        # the producer of the commands, made to take messages larger than the settings allow
        client = producer(self.settings.model_copy(update={"max_ticket_bytes": 8 * 1024 * 1024}))
        try:
            futures = [
                client.send(topic or self.env_overrides["TICKETPULSE_TOPIC_TICKETS"], v, key=k) for k, v in messages
            ]
            client.flush()
            for future in futures:
                future.get()
        finally:
            client.close()

    def read_topic(self, topic: str, expected: int, timeout: float = 30.0, keyed: bool = False) -> list[Any]:
        """Every message of a topic (JSON values), waiting until ``expected`` have arrived.

        ``keyed``: ``(key, partition, value)`` for each message instead of the value alone.
        """

        def _item(r: Any) -> Any:
            value = orjson.loads(r.value)
            return (r.key, r.partition, value) if keyed else value

        from pipeline.runtime.kafka_clients import consumer

        client = consumer(self.settings, topics=[topic])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                for records in client.poll(timeout_ms=500).values():
                    out.extend(_item(r) for r in records)
                if len(out) >= expected:
                    # one more poll: more than expected is a failure the test must see
                    for records in client.poll(timeout_ms=1500).values():
                        out.extend(_item(r) for r in records)
                    break
        finally:
            client.close()
        return out

    def query(self, q: str) -> list[dict[str, Any]]:
        return influx_query(self.influx.url, self.database, q)

    def area_counts(self) -> dict[tuple[int, str], int]:
        """``(window start, area) -> tickets`` from the per-area roll-up points ({} before any)."""
        try:
            series = self.query(
                "SELECT tickets FROM ticket_volume WHERE case_type = 'all' AND severity = 'all' GROUP BY area"
            )
        except AssertionError as exc:
            if "database not found" in str(exc):
                return {}
            raise
        return {(int(t), s["tags"]["area"]): int(v) for s in series for t, v in s["values"]}

    def pattern_area_counts(self) -> dict[tuple[int, str], int]:
        """``(window start, area) -> tickets`` summed over the area's patterns ({} before any)."""
        try:
            series = self.query("SELECT sum(tickets) FROM pattern_volume GROUP BY time(1h), area fill(none)")
        except AssertionError as exc:
            if "database not found" in str(exc):
                return {}
            raise
        return {(int(t), s["tags"]["area"]): int(v) for s in series for t, v in s["values"]}

    def patterns(self) -> dict[tuple[int, str, str], tuple[int, int, int]]:
        """``(window, pattern, area) -> (tickets, customers, near_churn)`` from ``pattern_volume``."""
        series = self.query("SELECT tickets, customers, near_churn FROM pattern_volume GROUP BY pattern, area")
        return {
            (int(t), s["tags"]["pattern"], s["tags"]["area"]): (int(a), int(b), int(c))
            for s in series
            for t, a, b, c in s["values"]
        }

    def wait_for_counts(
        self, expected: dict[tuple[int, str], int], timeout: float = 90.0, patterns: bool = False
    ) -> dict[tuple[int, str], int]:
        """Poll InfluxDB until the counts equal ``expected`` or time runs out; return the last read.

        ``patterns=True`` reads the counts summed over patterns (``pattern_volume``).
        """
        deadline = time.monotonic() + timeout
        got: dict[tuple[int, str], int] = {}
        while time.monotonic() < deadline:
            try:
                got = self.pattern_area_counts() if patterns else self.area_counts()
            except (OSError, AssertionError):
                got = {}
            if got == expected:
                return got
            for proc in self.workers:
                if proc.poll() is not None and proc.returncode not in (0, -9, -15):
                    raise AssertionError(f"worker exited with {proc.returncode}:\n{self.worker_logs()}")
            time.sleep(1.0)
        return got


def closed_windows(truth: dict[tuple[int, str], int]) -> dict[tuple[int, str], int]:
    """The counts of every window but the newest: patterns group a window once it has closed."""
    newest = max(window for window, _ in truth)
    return {key: n for key, n in truth.items() if key[0] < newest}


@pytest.fixture
def stack_factory(broker: EmbeddedBroker, influx: EmbeddedInflux, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(**overrides: Any) -> Stack:
        stack = Stack(broker, influx, tmp_path / f"stack{len(stacks)}", **overrides)
        stack.tmp_path.mkdir(parents=True)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop_workers()
    for stack in stacks:
        # an agent that crashed and was restarted by Faust's supervisor is a defect,
        # even when the counts came out right
        assert stack.crashes() == []


@pytest.fixture
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    return stack_factory()


class Receiver:
    """A webhook receiver on a free loopback port; answers from a script of status codes."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.script: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, dict(self.headers), body))
                status = receiver.script.pop(0) if receiver.script else 200
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def posts(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for p, h, b in self.requests if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


#: The history the spike tests share: ten days of two areas, a 5x spike in 'reports'
#: on the second Tuesday at 10:00 for two hours.
HISTORY_START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
SPIKE = Spike("reports", HISTORY_START + timedelta(days=8, hours=10), hours=2, factor=5)


def spike_history(label_rate: float = 1.0) -> TicketGenerator:
    return TicketGenerator(
        HISTORY_START,
        days=10,
        areas=[Area("reports", 8.0), Area("billing", 8.0)],
        spikes=[SPIKE],
        seed=8,
        label_rate=label_rate,
        customers=5000,
        near_churn_every=40,
    )


#: A release of the 'reports' area an hour before the spike: alerts and annotations show it.
RELEASE = {
    "kind": "release",
    "area": "reports",
    "at": (SPIKE.start - timedelta(hours=1)).isoformat(),
    "ref": "v4.2.0",
    "note": "new export engine",
}
