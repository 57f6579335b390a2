"""A worker whose broker is lost, or comes back empty, exits with one line; a stop never hangs (real broker)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from pipeline.runtime.liveness import EXIT_BROKER_LOST
from pipeline.testbed.generator import TicketGenerator
from pipeline.testbed.services import EmbeddedBroker

from .conftest import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def own_stack(stack_factory: Callable[..., Stack]) -> Iterator[tuple[Stack, EmbeddedBroker]]:
    """A stack on a broker of its own (these tests stop it), with a worker counting a few tickets."""
    own_broker = EmbeddedBroker().start()
    stack = stack_factory()
    stack.broker = own_broker
    stack.env_overrides["TICKETPULSE_BROKER_URL"] = own_broker.url
    try:
        yield stack, own_broker
    finally:
        for proc in stack.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        own_broker.stop()


def _running_worker(stack: Stack, **extra: str) -> Any:
    from datetime import UTC, datetime

    stack.create_topics()
    worker = stack.start_worker(**extra)
    gen = TicketGenerator(datetime(2026, 3, 2, tzinfo=UTC), days=0.25, seed=3, scale=1)
    stack.send([(str(t.payload["id"]).encode(), orjson.dumps(t.payload)) for t in gen.tickets()])
    truth = dict(gen.truth(3600))
    assert stack.wait_for_counts(truth) == truth, stack.worker_logs()  # up and counting
    return worker


def _wait_exit(worker: Any, seconds: float) -> tuple[int | None, float]:
    started = time.monotonic()
    try:
        return worker.wait(timeout=seconds), time.monotonic() - started
    except Exception:
        return None, time.monotonic() - started


def test_a_worker_without_its_broker_exits_with_one_line_saying_so(own_stack: tuple[Stack, EmbeddedBroker]) -> None:
    stack, broker = own_stack
    worker = _running_worker(stack, TICKETPULSE_BROKER_LOST_SECONDS="6")
    lines_before = len(stack.worker_logs().splitlines())
    broker.halt()
    code, waited = _wait_exit(worker, 60)
    assert code == EXIT_BROKER_LOST, stack.worker_logs()
    assert waited < 6 + 5 + 15  # the setting, a check interval, the check's own timeout
    log = (stack.tmp_path / "worker-w1.log").read_text(errors="replace")
    (last_word,) = [line for line in log.splitlines() if "broker=lost" in line]
    assert "TICKETPULSE_BROKER_LOST_SECONDS" in last_word
    # the Kafka client's complaints are held back: lines, not hundreds a second
    assert len(log.splitlines()) - lines_before < 150, log[-3000:]


def test_a_broker_that_comes_back_without_its_topics_is_refused_loudly(own_stack: tuple[Stack, EmbeddedBroker]) -> None:
    stack, broker = own_stack
    worker = _running_worker(stack)
    broker.halt()  # its topics are in memory: gone
    broker.start()  # the same port, empty
    code, _ = _wait_exit(worker, 60)
    assert code == EXIT_BROKER_LOST, stack.worker_logs()
    log = (stack.tmp_path / "worker-w1.log").read_text(errors="replace")
    assert any("broker=lost_topics" in line and stack.settings.topic_tickets in line for line in log.splitlines())


def test_sigterm_stops_a_worker_whose_broker_is_gone_within_the_stop_wait(
    own_stack: tuple[Stack, EmbeddedBroker],
) -> None:
    stack, broker = own_stack
    worker = _running_worker(stack, TICKETPULSE_STOP_WAIT_SECONDS="1")
    broker.halt()
    time.sleep(2)
    os.killpg(worker.pid, signal.SIGTERM)
    code, waited = _wait_exit(worker, 60)
    assert code is not None and waited < 1 + 10 + 5, stack.worker_logs()
