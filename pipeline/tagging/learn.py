"""Learning: every worker's models learn every label from the training topic, checkpointed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from pipeline.messages import Codec, TrainingBatch
from pipeline.outputs.series import quality_point
from pipeline.outputs.sinks import InfluxSink
from pipeline.runtime.checkpoints import CheckpointWriter
from pipeline.runtime.consumers import groupless_consumer, read_partitions
from pipeline.runtime.stats import worker_tag
from pipeline.settings import Settings
from pipeline.tagging.choice import Tagger, load_any_tagger, save_any_tagger, tagger_checkpoint, tagger_state
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

    def load(self) -> dict[int, int]:
        """The training positions the models include (loading them unless ``ticketpulse worker`` did)."""
        if self.preloaded is not None:
            positions, self.preloaded = self.preloaded, None  # a restarted task loads the checkpoint
            return dict(positions)
        return load_any_tagger(self.tagger, self.checkpoint, self.settings.tagger_model)

    def on_batch(self, batch: dict[Any, list[Any]], positions: dict[int, int]) -> int:
        """Learn a batch of training records (by partition); advance ``positions``; how many examples."""
        examples = [e for records in batch.values() for r in records for e in self.codec.decode(r.value).examples]
        if examples:
            self.tagger.learn_batch(examples)
        for tp, records in batch.items():
            if records:
                positions[tp.partition] = records[-1].offset + 1
        return len(examples)

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
