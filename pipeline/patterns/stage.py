"""Pattern grouping in the worker: counted tickets into patterns; ``pattern_volume``, ``pattern_spike``, alerts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from detectors import SpikeEvent
from pipeline.alerts.payloads import pattern_alert_payload
from pipeline.messages import Codec, PatternTickets, TicketPatterns
from pipeline.outputs.lineprotocol import Point
from pipeline.outputs.series import pattern_spike_point
from pipeline.outputs.sinks import InfluxSink
from pipeline.patterns.watch import PATTERN_WATCH_AFTER, OutdatedPatternState, PatternWatch
from pipeline.runtime.checkpoints import CheckpointWriter, load_checkpoint, write_checkpoint
from pipeline.runtime.consumers import groupless_consumer, read_partitions
from pipeline.runtime.outbox import Outbox
from pipeline.runtime.stats import PipelineStats
from pipeline.settings import Settings
from pipeline.text.embedding import TicketEncoder, shared_encoder

__all__ = ["ASSIGNMENTS_PER_MESSAGE", "GroupPatterns"]

logger = logging.getLogger("pipeline.worker")

#: ``[ticket id, pattern id]`` pairs per ``<app>-ticket-patterns`` message (about 30 bytes
#: each: well under the broker's 1 MB).
ASSIGNMENTS_PER_MESSAGE = 10_000


class GroupPatterns:
    """Groups counted tickets into patterns, one :class:`PatternWatch` per partition of ``<app>-pattern-tickets``.

    A worker reads the partitions of ``<app>-pattern-tickets`` whose numbers are those of
    the counting partitions it owns (``owned``), so a second worker takes half of the
    grouping rather than repeating it. A partition holds whole areas and is read in
    order, and grouping depends on nothing else: whoever reads a partition from the
    same position forms the same patterns with the same ids and counts, and writes the
    same points (idempotent). So ownership can move without handing state over: a
    worker given a partition reads it on from where its own watch of it stopped (its
    checkpoint, or the moment it last let the partition go), or from the beginning of
    the topic when it never read it; the watch it let go is kept, stale, in case the
    partition comes back. Alerts are those of the partitions it reads, deduplicated by
    episode downstream (a partition read again after a move repeats its episodes).
    Checkpoints as the tagger's: the watches and the next offset per partition, every
    ``TICKETPULSE_PATTERN_CHECKPOINT_SECONDS`` and at shutdown.

    ``owned``: the counting partitions this worker owns now, ``None`` before the first
    assignment.
    """

    def __init__(
        self,
        settings: Settings,
        topics: dict[str, Any],
        stats: PipelineStats,
        sink: InfluxSink,
        owned: Callable[[], set[int] | None],
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.stats = stats
        self.sink = sink
        self.owned = owned
        self.checkpoint = Path(settings.data_dir) / "patterns-checkpoint.pickle"
        self.codec = Codec(PatternTickets)
        self.watches: dict[int, PatternWatch] = {}
        self.positions: dict[int, int] = {}
        #: the process's one encoder, shared by every partition's watch and area's grouper
        self.encoder: TicketEncoder = shared_encoder()

    def new_watch(self) -> PatternWatch:
        """The watch of a partition seen for the first time."""
        settings = self.settings
        return PatternWatch(
            settings.window_seconds,
            settings.allowed_lateness_seconds,
            sources=settings.partitions,
            threshold=settings.pattern_threshold,
            alert_score=settings.spike_alert_score,
            min_customers=settings.pattern_spike_min_customers,
            encoder=self.encoder,
            watch_after=PATTERN_WATCH_AFTER,
            by_locale=settings.pattern_by_locale,
        )

    def load(self) -> None:
        """The watches and positions of the last checkpoint, if there is one.

        Each watch gets the process's encoder back (:meth:`PatternWatch.attach`). A
        checkpoint whose patterns were made with another embedding model is refused
        (``ValueError`` naming both models: the worker stops rather than group new
        tickets against centroids that mean nothing). One from a version that grouped
        on words is let go with one log line: the stage starts anew, as a worker with
        no checkpoint does, from the beginning of the pattern topic, so that every worker
        (each upgraded from its own checkpoint, at its own offsets) again forms the same
        patterns from the same tickets.

        Raises
        ------
        ValueError
            If the checkpoint was learned on another embedding model's vectors.
        """
        if not self.checkpoint.exists():
            return
        state = load_checkpoint(self.checkpoint.read_bytes())
        watches, positions = state["watches"], state["positions"]
        try:
            for watch in watches.values():
                watch.attach(self.encoder, f"the pattern checkpoint {self.checkpoint}")
                # the setting, not the checkpoint, says how tickets are grouped from now on
                watch.by_locale = self.settings.pattern_by_locale
        except OutdatedPatternState as exc:
            logger.warning(
                "agent=patterns checkpoint=refused path=%s reason=%s: patterns start anew from the beginning of "
                "the topic",
                self.checkpoint,
                exc,
            )
            return
        self.watches, self.positions = watches, positions
        logger.info("agent=patterns loaded=checkpoint path=%s positions=%s", self.checkpoint, self.positions)

    def group(self, batch: dict[Any, list[Any]]) -> tuple[list[Point], list[tuple[int, SpikeEvent]]]:
        """Group a batch of records (by partition); the ``pattern_volume`` points and spike events it makes."""
        points: list[Point] = []
        events: list[tuple[int, SpikeEvent]] = []
        for tp, records in batch.items():
            if not records:
                continue
            pw = self.watches.get(tp.partition)
            if pw is None:
                pw = self.watches[tp.partition] = self.new_watch()
            touched: set[tuple[int, str]] = set()
            for record in records:
                message = self.codec.decode(record.value)
                tickets = message.tickets
                if message.tokens_of != self.encoder.model_id:  # none, or ids of another model: tokenized here
                    tickets = [t._replace(tokens=None) if t.tokens is not None else t for t in tickets]
                changed = pw.add(tickets) | pw.hear(message.watermarks)
                touched |= changed
                events += [(tp.partition, e) for e in pw.judge(changed) + pw.close()]
            self.positions[tp.partition] = records[-1].offset + 1
            points += pw.points(touched, self.settings.window_label)
        return points, events

    async def on_batch(self, batch: dict[Any, list[Any]]) -> None:
        """Group a batch; the points, assignments and alerts delivered before the next checkpoint."""
        points, events = self.group(batch)
        out = Outbox()
        # Which pattern each ticket joined (a partition read again after a move says it again,
        # the same: the report keeps one per ticket), on the broker before the checkpoint says so.
        for partition, pw in sorted(self.watches.items()):
            assigned = pw.drain_assigned()
            for start in range(0, len(assigned), ASSIGNMENTS_PER_MESSAGE):
                message = TicketPatterns(assigned[start : start + ASSIGNMENTS_PER_MESSAGE])
                await out.send_parts(self.topics["ticket_patterns"], partition, message, [])
        points += await self._alert(events, out)
        # the points and alerts first, then the checkpoint that says they were made
        await self.sink.write(points)
        await out.delivered()
        if batch:
            self.stats.patterns_too_late = sum(pw.too_late for pw in self.watches.values())
            logger.info(
                "agent=patterns messages=%d points=%d spike_events=%d too_late=%d patterns=%s forgotten=%d merged=%d",
                sum(len(r) for r in batch.values()),
                len(points),
                len(events),
                self.stats.patterns_too_late,
                ";".join(f"{p}:{len(pw.area_of)}" for p, pw in sorted(self.watches.items())),
                sum(pw.forgotten for pw in self.watches.values()),
                sum(pw.merges for pw in self.watches.values()),
            )

    async def _alert(self, events: list[tuple[int, SpikeEvent]], out: Outbox) -> list[Point]:
        """``pattern_spike`` points of the events; alerts of those of the partitions this worker owns."""
        points = []
        owned = self.owned() or set()
        for partition, spike in events:
            pw = self.watches[partition]
            pattern = pw.summary(spike.key)
            area = pw.area(spike.key)  # the key may be a pattern merged away since its episode opened
            points.append(pattern_spike_point(spike, area, pattern["name"], self.settings.window_label))
            if partition not in owned:
                continue
            self.stats.spike_events += 1
            payload = pattern_alert_payload(spike, area, pattern)
            logger.warning(
                "agent=patterns event=%s episode=%s pattern=%s area=%s customers=%d score=%.3f",
                spike.event,
                spike.episode_id,
                spike.key,
                payload["area"],
                spike.customers,
                spike.score,
            )
            await out.send(self.topics["alerts"], key=payload["area"].encode(), value=payload)
        return points

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds."""
        return {"watches": self.watches, "positions": self.positions}

    async def run(self) -> None:
        """Group until the worker stops; the last checkpoint written in place at the stop."""
        self.load()
        checkpoints = CheckpointWriter(self.checkpoint, "agent=patterns")
        topic = self.topics["pattern_tickets"].get_topic_name()
        consumer = await groupless_consumer(self.settings)
        reading: set[int] = set()
        try:
            last_saved = time.monotonic()
            while True:
                owned = self.owned()  # None until the first assignment, then whatever it is now
                if owned is not None and owned != reading:
                    await read_partitions(consumer, topic, owned, self.positions)
                    logger.info(
                        "agent=patterns reading partitions=%s positions=%s",
                        ",".join(map(str, sorted(owned))) or "none",
                        self.positions,
                    )
                    reading = set(owned)
                if not reading:
                    await asyncio.sleep(0.2)
                    continue
                batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
                await self.on_batch(batch)
                checkpoints.busy()  # a checkpoint written meanwhile is reaped (and logged) at once
                if (
                    batch
                    and time.monotonic() - last_saved >= self.settings.pattern_checkpoint_seconds
                    and checkpoints.save(self.state(), positions=dict(self.positions))
                ):
                    last_saved = time.monotonic()
        finally:
            checkpoints.wait()  # then the last one, in place: no child writes after it
            write_checkpoint(self.state(), self.checkpoint)
            await consumer.stop()
