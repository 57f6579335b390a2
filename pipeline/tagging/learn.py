"""Learning: every worker's models learn every label from the training topic, checkpointed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pipeline.messages import Codec, TrainingBatch, encode
from pipeline.outputs.series import quality_point
from pipeline.outputs.sinks import InfluxSink
from pipeline.runtime.checkpoints import CheckpointWriter
from pipeline.runtime.consumers import groupless_consumer, read_partitions
from pipeline.runtime.stats import worker_tag
from pipeline.settings import Settings
from pipeline.tagging.choice import Tagger, load_any_tagger, save_any_tagger, tagger_checkpoint, tagger_state
from pipeline.tagging.linear import LinearTagger
from pipeline.tagging.tagger import FIELDS
from pipeline.topology import training_topic

__all__ = ["LearnLabels", "tagger_checkpoint"]

logger = logging.getLogger("pipeline.worker")


class LearnLabels:
    """Every worker reads every label from the training topic, resuming from its checkpoint.

    Broadcast, not a consumer group: each worker's models learn all labels. The linear
    tagger's weights depend on the order of the labels: its training topic has one
    partition (``<app>-tagger-training-ordered``), so every worker reads them in one
    order, and it learns in steps of a fixed number of labels (held labels are in the
    checkpoint), so how the consumer batches them does not matter: workers that have read
    the same labels, a restarted one included, hold the same weights. Naive Bayes' counts
    (``TICKETPULSE_TAGGER=words``) do not depend on the order: its topic has
    ``TICKETPULSE_PARTITIONS`` partitions. Either way a ticket's labels and corrections
    share a partition, so they are read in the order they were sent (the label join of a
    ticket is on one worker), and a correction replaces the earlier tag. The
    models are saved every ``TICKETPULSE_TAGGER_CHECKPOINT_SECONDS`` with the offset of
    every training partition they include: a restarted worker loads them and reads on
    from there, so it neither starts from zero nor learns a label twice. Without a
    checkpoint it starts from ``TICKETPULSE_TAGGER_MODEL`` (a warm start) or empty, and
    reads the topic from its beginning. Faust's GlobalTable is documented to loop in
    recovery with several workers, hence a plain consumer.

    ``preloaded``: the training positions of a tagger ``ticketpulse worker`` already
    loaded (and checked) before it started; ``ready`` is set once the models are loaded,
    and no ticket is predicted before.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        tagger: Tagger,
        sink: InfluxSink,
        ready: asyncio.Event,
        preloaded: dict[int, int] | None = None,
        clock: Callable[[], float] = time.time,
        send_step: Callable[[bytes], Awaitable[Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.tagger = tagger
        self.sink = sink
        self.ready = ready
        self.preloaded = preloaded
        self.clock = clock
        self.checkpoint = tagger_checkpoint(settings)
        self.codec = Codec(TrainingBatch)
        self.worker = worker_tag()
        self.send_step = send_step
        #: since when (monotonic seconds) the linear tagger holds labels; when this worker last sent a step marker
        self.holding_since: float | None = None
        self.step_sent = -float("inf")

    def load(self) -> dict[int, int]:
        """The training positions the models include (loading them unless ``ticketpulse worker`` did)."""
        if self.preloaded is not None:
            positions, self.preloaded = self.preloaded, None  # a restarted task loads the checkpoint
            return dict(positions)
        return load_any_tagger(self.tagger, self.checkpoint, self.settings.tagger_model)

    def on_batch(self, batch: dict[Any, list[Any]], positions: dict[int, int]) -> int:
        """Learn a batch of training records (by partition); advance ``positions``; how many examples.

        A step marker (:class:`~pipeline.messages.TrainingBatch` ``step``) makes the linear
        tagger learn the labels it holds, after the examples before it (naive Bayes holds none).
        """
        examples: list[dict[str, Any]] = []
        learned = 0
        for records in batch.values():
            for record in records:
                message = self.codec.decode(record.value)
                examples += message.examples
                if message.step and isinstance(self.tagger, LinearTagger):
                    learned += len(examples)
                    self.tagger.learn_batch(examples)
                    self.tagger.step_held()
                    examples = []
        if examples:
            learned += len(examples)
            self.tagger.learn_batch(examples)
        for tp, records in batch.items():
            if records:
                positions[tp.partition] = records[-1].offset + 1
        return learned

    def step_due(self, caught_up: bool, now: float) -> bool:
        """Whether to send a step marker now: the linear tagger has held labels for
        ``TICKETPULSE_TAGGER_STEP_SECONDS`` and this worker has read every label (``caught_up``;
        one catching up would step early), and sent no marker for as long."""
        tagger = self.tagger
        holding = isinstance(tagger, LinearTagger) and any(tagger.held(name) for name in tagger.fields)
        if not holding:
            self.holding_since = None
            return False
        if self.holding_since is None:
            self.holding_since = now
        wait = self.settings.tagger_step_seconds
        return caught_up and now - self.holding_since >= wait and now - self.step_sent >= wait

    async def maybe_send_step(self, caught_up: bool) -> None:
        """Send a step marker to the training topic when :meth:`step_due` (every worker may: a
        second marker finds nothing held, or a step's first labels, the same on every worker)."""
        now = time.monotonic()
        if self.send_step is not None and self.step_due(caught_up, now):
            self.step_sent = now
            await self.send_step(encode(TrainingBatch([], step=True)))
            logger.info("tagger step_marker=sent held_since=%.0fs", now - (self.holding_since or now))

    def quality_points(self) -> list[Any]:
        """``classifier_quality`` of each field with labels."""
        now = int(self.clock())
        tagger = self.tagger
        return [
            quality_point(target, self.worker, tagger.quality[target].summary(), tagger.learned[target], now)
            for target in FIELDS
            if tagger.quality[target].labelled
        ]

    async def run(self) -> None:
        """Learn until the worker stops; the last checkpoint written in place at the stop."""
        positions = self.load()
        self.ready.set()
        consumer = await groupless_consumer(self.settings)
        await read_partitions(consumer, self.topic, set(range(training_topic(self.settings)[1])), positions)
        checkpoints = CheckpointWriter(self.checkpoint, "tagger")
        try:
            last_written = last_saved = time.monotonic()
            saved_version = self.tagger.version
            while True:
                checkpoints.busy()  # a checkpoint written meanwhile is reaped (and logged) at once
                batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
                learned = self.on_batch(batch, positions)
                await self.maybe_send_step(caught_up=not any(batch.values()))
                if (
                    time.monotonic() - last_saved >= self.settings.tagger_checkpoint_seconds
                    and (self.tagger.version != saved_version or learned)
                    and checkpoints.save(
                        tagger_state(self.tagger, positions),
                        version=self.tagger.version,
                        positions=dict(positions),
                    )
                ):
                    last_saved, saved_version = time.monotonic(), self.tagger.version
                if time.monotonic() - last_written >= self.settings.stats_seconds and any(self.tagger.learned.values()):
                    last_written = time.monotonic()
                    await self.sink.write(self.quality_points())
        finally:
            checkpoints.wait()  # then the last one, in place: no child writes after it
            save_any_tagger(self.tagger, positions, self.checkpoint)
            await consumer.stop()
