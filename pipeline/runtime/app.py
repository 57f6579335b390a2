"""The Faust app of a worker, made from the settings: clients, timeouts, batch sizes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust

from pipeline.settings import Settings

__all__ = ["PRODUCER_BATCH_BYTES", "PipelineApp", "new_app"]

logger = logging.getLogger("pipeline.worker")

#: The worker's producer batches (Faust's ``producer_max_batch_size``; its default is
#: 16 KB, 30 ``tickets-classified`` records). Each batch is a produce request with its own
#: future and response in the client's Python sender: at 16 KB the client used 4.2-4.6 us
#: of CPU a 520-byte record, at 512 KB 0.8-1.1 (a bare producer on this machine,
#: docs/benchmarks.md). Under the broker's ``message.max.bytes`` (1 MB); a batch always
#: takes its first record, so an internal message up to :data:`MAX_INTERNAL_MESSAGE_BYTES`
#: still goes in one.
PRODUCER_BATCH_BYTES = 512 * 1024


class PipelineApp(faust.App):  # type: ignore[misc]
    """A Faust app that closes its clients after its agents have stopped.

    Faust's ``on_before_shutdown`` fires before the agents are stopped: an agent still
    retrying a write to a slow InfluxDB then found its HTTP session closed under it and
    crashed. ``on_shutdown`` runs once the agents (the app's children) are gone.
    """

    def __init__(self, *args: Any, stop_wait_seconds: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closers: list[Callable[[], Awaitable[None]]] = []
        self.stop_wait_seconds = stop_wait_seconds

    async def _consumer_wait_empty(self, consumer: Any, faust_logger: Any) -> None:
        # Faust waits, when it stops or gives partitions away, for the batches in flight.
        # A batch retrying its write to an InfluxDB that is down would hold a stop until
        # the service manager kills the worker: a stop waits a while, then goes on. Those
        # batches are not committed; the next worker reads them again, and every effect
        # is idempotent (what a killed worker relies on too). A rebalance still waits.
        if not self.should_stop:
            await super()._consumer_wait_empty(consumer, faust_logger)
            return
        waiting = asyncio.ensure_future(super()._consumer_wait_empty(consumer, faust_logger))
        done, _ = await asyncio.wait({waiting}, timeout=self.stop_wait_seconds)
        if not done:
            # Faust's wait swallows cancellation: it is left to end when the consumer stops
            waiting.add_done_callback(lambda task: task.cancelled() or task.exception())
            logger.warning(
                "stop=batches_in_flight waited=%ss: left uncommitted, the next worker reads them again",
                self.stop_wait_seconds,
            )

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        for close in self.closers:
            await close()


#: The largest internal message :meth:`Outbox.send_parts` sends whole, in bytes: under


def new_app(settings: Settings) -> PipelineApp:
    """The worker's Faust app for ``settings`` (no topics, tables or agents yet)."""
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    return PipelineApp(
        settings.app_id,
        broker=settings.broker_url,
        store="memory://",
        datadir=str(Path(settings.data_dir) / f"{settings.app_id}-data"),
        topic_partitions=settings.partitions,
        table_standby_replicas=0,
        # Measured with Tansu: the defaults made a new worker wait 32 s for its first
        # message, these 5 s (../shared/architecture.md).
        broker_session_timeout=6,
        broker_rebalance_timeout=6,
        broker_heartbeat_interval=1,
        broker_commit_interval=1.0,
        producer_max_request_size=max(1_048_576, settings.max_ticket_bytes * 2),
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        consumer_max_fetch_size=max(4 * 1_048_576, settings.max_ticket_bytes * 2),
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_host=settings.web_host,
        topic_allow_declare=True,
        processing_guarantee="at_least_once",
        stop_wait_seconds=settings.stop_wait_seconds,
    )
