"""InfluxDB goes away in the middle of a run and comes back: no count is lost or doubled."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import orjson
import pytest

from pipeline.testbed.generator import TicketGenerator
from pipeline.testbed.services import EmbeddedInflux

pytestmark = pytest.mark.integration


def test_influxdb_outage_mid_run_ends_with_exact_counts(stack_factory, broker, tmp_path) -> None:
    own_influx = EmbeddedInflux().start()  # this test stops it: not the session's
    try:
        stack = stack_factory()
        stack.influx = own_influx
        stack.env_overrides["TICKETPULSE_INFLUX_URL"] = own_influx.url
        gen = TicketGenerator(datetime(2026, 3, 2, tzinfo=UTC), days=3, seed=17, scale=3)
        truth = gen.truth(3600)
        messages = [(str(t.payload["id"]).encode(), orjson.dumps(t.payload)) for t in gen.tickets()]
        stack.create_topics()
        stack.start_worker()
        half = len(messages) // 2
        stack.send(messages[:half])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(stack.area_counts().values()) == 0:
            time.sleep(0.3)
        assert sum(stack.area_counts().values()) > 0
        own_influx.halt()  # down: the worker must hold on and retry, not drop or double
        stack.send(messages[half:])
        time.sleep(6)
        own_influx.start()
        got = stack.wait_for_counts(dict(truth), timeout=120)
        assert got == dict(truth), stack.worker_logs()
        assert "sink=influx_v1" in stack.worker_logs() and "retry_in=" in stack.worker_logs()
    finally:
        own_influx.stop()


def test_worker_stopped_while_influxdb_is_down_shuts_down_cleanly(stack_factory, tmp_path) -> None:
    """SIGTERM while a batch's write is being retried: the worker stops without a crash."""
    own_influx = EmbeddedInflux().start()
    try:
        stack = stack_factory()
        stack.influx = own_influx
        stack.env_overrides["TICKETPULSE_INFLUX_URL"] = own_influx.url
        gen = TicketGenerator(datetime(2026, 3, 2, tzinfo=UTC), days=1, seed=5)
        messages = [(str(t.payload["id"]).encode(), orjson.dumps(t.payload)) for t in gen.tickets()]
        stack.create_topics()
        worker = stack.start_worker()
        stack.send(messages[:10])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(stack.area_counts().values()) == 0:
            time.sleep(0.3)
        own_influx.halt()
        stack.send(messages[10:])
        # a batch of the stream (not the 1-3 points of the stats timer) retrying its write
        batch_retrying = re.compile(r"sink=influx_v1 points=(\d{2,}) attempt=2 ")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not batch_retrying.search(stack.worker_logs()):
            time.sleep(0.3)
        assert batch_retrying.search(stack.worker_logs()), stack.worker_logs()
        stopping = time.monotonic()
        stack.stop_workers()
        # stop_workers kills with SIGKILL (-9) after 30 s: the batch holds the stop for
        # TICKETPULSE_STOP_WAIT_SECONDS (10) at most
        assert worker.returncode == 0 and time.monotonic() - stopping < 20, stack.worker_logs()
        assert stack.crashes() == [] and "Traceback" not in stack.worker_logs(), stack.worker_logs()
        # the teardown of stack_factory asserts that no agent crashed
        assert stack.crashes() == [], stack.crashes()
    finally:
        own_influx.stop()
