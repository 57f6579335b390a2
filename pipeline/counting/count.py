"""Counting: each ticket id once, in the window of its ``created_at``.

Why it stays exact under at-least-once delivery, rebalances and SIGKILL:
:mod:`pipeline.counting.volume`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from pipeline.counting.volume import COUNTED, DUPLICATE, PartitionVolume, volume_keys
from pipeline.messages import Codec, CountingBatch, Fact, PartialRow, PatternTicket, PatternTickets, VolumePartials
from pipeline.runtime.outbox import Outbox
from pipeline.runtime.partitioning import KeyPartitioner
from pipeline.runtime.stats import PipelineStats
from pipeline.runtime.tables import PartitionedTable
from pipeline.runtime.watermarks import hear
from pipeline.settings import Settings

__all__ = ["NEXT_OFFSET", "WATERMARKS", "Count"]

logger = logging.getLogger("pipeline.worker")

#: Table key suffix of the watermarks a partition has heard (count, merge and watch).
WATERMARKS = "__watermarks__"

#: Table key suffix of the offset of the input partition a stage has recorded everything
#: before (count and merge): where its next batch should start, read again if Faust skips it.
NEXT_OFFSET = "__next_offset__"

#: One batch's message of a counting partition: ``(partition, offset, message)``.
Item = tuple[int, int, CountingBatch]


class Count:
    """Counts the facts of ``<app>-tickets-by-customer``; sends counts to merging and tickets to patterns.

    Durable state is one fact per ticket, in chunks (``first_seen``:
    ``"<partition>/<offset>" -> [fact, ...]``, and ``"<partition>/__watermarks__"`` -> that
    counting partition's watermarks); the counts are derived from it
    (:class:`PartitionVolume`), and every effect is sent before the state that records it.
    """

    def __init__(
        self, settings: Settings, topics: dict[str, Any], stats: PipelineStats, first_seen: PartitionedTable
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.stats = stats
        self.first_seen = first_seen
        self.partition_of = KeyPartitioner(settings.partitions)
        self.codec = Codec(CountingBatch)
        self.volumes: dict[int, PartitionVolume] = {}
        # counting partition -> {tickets partition: newest window seen}; kept in first_seen with
        # the facts, since after a restart a tickets partition may never be heard from again
        # (a stream that has ended) and its watermark would then hold every window open.
        self.source_marks: dict[int, dict[str, int]] = {}
        # counting partition -> the offset of tickets-by-customer recorded everything before
        # (durable: a restarted worker reads again what Faust skips after it)
        self.recorded_to: dict[int, int] = {}

    def heard_windows(self) -> list[int]:
        """Every window the counting partitions here have heard from any tickets partition."""
        return [w for heard in self.source_marks.values() for w in heard.values()]

    def volume(self, partition: int) -> PartitionVolume:
        """The counts of a counting partition (fed by every tickets partition)."""
        vol = self.volumes.get(partition)
        if vol is None:
            vol = self.volumes[partition] = PartitionVolume(
                self.settings.window_seconds, self.settings.allowed_lateness_seconds, sources=self.settings.partitions
            )
        return vol

    async def on_batch(self, events: Sequence[Any]) -> None:
        """Count a batch of ``tickets-by-customer`` messages (Faust events, values raw)."""
        # (counting partition, offset) -> the new facts of that message: one durable chunk a
        # message, so that a chunk is never larger than the message it came in (a backlog's
        # batch holds many messages of a partition: one chunk of them all outgrew the
        # producer's largest request and stopped the worker)
        chunks: dict[tuple[int, int], list[Fact]] = {}
        touched: dict[int, set[tuple[int, tuple[str, str, str]]]] = {}
        heard: set[int] = set()
        # in offset order per partition (the batch, with any message Faust skipped read
        # again: pipeline.runtime.batching.SkippedMessages)
        events_read: list[Item] = sorted(
            ((e.message.partition, e.message.offset, self.codec.decode(e.value)) for e in events),
            key=lambda item: (item[0], item[1]),
        )
        # counting partition -> pattern partition -> newly counted tickets with their words
        for_patterns: dict[int, dict[int, list[PatternTicket]]] = {}
        # the embedding model whose token ids go on with the tickets: the first message's
        # (a rolling upgrade can mix two; the others' tickets go on without ids)
        tokens_of = next((m.tokens_of for _, _, m in events_read if m.texts and m.tokens_of), None)
        for partition, offset, message in events_read:
            vol = self.volume(partition)
            texts = message.texts
            keep_tokens = message.tokens_of == tokens_of
            for n, fact in enumerate(message.facts):
                outcome = vol.add(fact)
                if outcome == COUNTED:
                    if texts:
                        by_target = for_patterns.setdefault(partition, {})
                        words = texts[n]
                        ticket = PatternTicket(
                            fact.ticket_id,
                            fact.window,
                            fact.area,
                            fact.case_type,
                            fact.customer_id,
                            words.created_at,
                            words.subject,
                            words.body,
                            words.tokens if keep_tokens else None,
                            words.locale,
                        )
                        by_target.setdefault(self.partition_of(fact.area.encode()), []).append(ticket)
                    # keyed by its message: a replay after a crash never overwrites a chunk
                    # that made it (its facts are duplicates then; pipeline.counting.volume)
                    chunks.setdefault((partition, offset), []).append(fact)
                    part_touched = touched.setdefault(partition, set())
                    for key in volume_keys(fact.area, fact.case_type, fact.severity):
                        part_touched.add((fact.window, key))
                elif outcome == DUPLICATE:
                    self.stats.duplicates += 1
                else:
                    self.stats.too_late += 1
            # How far the tickets partitions have got, heard after the message's own facts: a
            # batch may hold days of one partition, and its newest window must not make its
            # older tickets late (the line is what came before).
            if hear(self.source_marks.setdefault(partition, {}), message.watermarks):
                heard.add(partition)
            vol.hear(self.source_marks[partition])
        # Effects first, then the state that records them (see pipeline.counting.volume): the
        # words are not kept in the facts, so they must be on the broker before the facts
        # that say they were counted (a replay would not send them again).
        out = Outbox()
        for partition in heard | set(touched):
            await self.send_partials(partition, touched.get(partition, ()), out)
            if self.settings.patterns_enabled:
                await self.send_pattern_tickets(partition, for_patterns.get(partition, {}), out, tokens_of)
        await out.delivered()
        self._record(heard, chunks)
        for partition, offset, _ in events_read:
            if offset >= self.recorded_to.get(partition, -1):
                self.recorded_to[partition] = offset + 1
        for partition in {partition for partition, _, _ in events_read}:
            self.first_seen[f"{partition}/{NEXT_OFFSET}"] = self.recorded_to[partition]
        await self.first_seen.delivered()  # before the batch is acknowledged (DurableTable)

    def start_of(self, _topic: str, partition: int) -> int | None:
        """Where a counting partition's next batch should start: everything before is recorded."""
        return self.recorded_to.get(partition)

    def _record(self, heard: set[int], chunks: dict[tuple[int, int], list[Fact]]) -> None:
        """The batch's durable state: watermarks heard, the new facts; chunks of closed windows deleted."""
        for partition in heard:
            self.first_seen[f"{partition}/{WATERMARKS}"] = dict(self.source_marks[partition])
        for (partition, offset), facts in chunks.items():
            self.stats.counted += len(facts)
            chunk_key = f"{partition}/{offset}"
            self.first_seen[chunk_key] = [list(fact) for fact in facts]  # as JSON arrays, as they came
            self.volumes[partition].record_chunk(chunk_key, facts)
        for partition in sorted({partition for partition, _ in chunks}):
            vol = self.volumes[partition]
            if vol.close_windows():
                for expired in vol.expired_chunks():
                    self.first_seen.pop(expired, None)

    async def send_partials(
        self, partition: int, touched: Iterable[tuple[int, tuple[str, str, str]]], out: Outbox
    ) -> None:
        """The counts of ``touched`` windows and keys to their merging partitions, with the watermark."""
        vol = self.volume(partition)
        by_window: dict[int, tuple[dict[tuple[str, str, str], tuple[int, int]], dict[tuple[str, str, str], int]]] = {}
        rows: list[PartialRow] = []
        for window, key in touched:
            counts = by_window.get(window)
            if counts is None:
                counts = by_window[window] = (vol.counts(window), vol.newest(window))
            tickets_n, customers_n = counts[0][key]
            volume_key = orjson.dumps([window, *key]).decode()
            rows.append(PartialRow(volume_key, partition, tickets_n, customers_n, counts[1][key]))
        by_target: dict[int, list[PartialRow]] = {}
        targets = self.partition_of.many([row.volume_key.encode() for row in rows])
        for row, target in zip(rows, targets, strict=True):
            by_target.setdefault(target, []).append(row)
        # Every merging partition hears this counting partition's watermark (the oldest
        # of the tickets partitions' newest windows), even with no rows for it.
        watermark = {str(partition): vol.sources_watermark}
        for target in range(self.settings.partitions):
            message = VolumePartials(by_target.get(target, []), watermark)
            await out.send_parts(self.topics["partials"], target, message, ["rows"])

    async def send_pattern_tickets(
        self, partition: int, by_target: dict[int, list[PatternTicket]], out: Outbox, tokens_of: str | None = None
    ) -> None:
        """Newly counted tickets to their pattern partitions; every one hears the watermark."""
        low = self.volume(partition).sources_watermark
        for target in range(self.settings.partitions):
            tickets = by_target.get(target, [])
            message = PatternTickets(tickets, {str(partition): low}, tokens_of if tickets else None)
            await out.send_parts(self.topics["pattern_tickets"], target, message, ["tickets"])

    async def rebuild(self) -> None:
        """Derive the counts of the partitions this worker now owns from the durable facts."""
        self.volumes.clear()
        self.recorded_to.clear()
        owned = self.first_seen.active_partitions
        for chunk_key, facts in self.first_seen.items():
            partition_part, _, name = chunk_key.partition("/")
            partition = int(partition_part)
            if partition not in owned:
                continue
            if name == WATERMARKS:
                hear(self.source_marks.setdefault(partition, {}), facts)
            elif name == NEXT_OFFSET:
                self.recorded_to[partition] = int(facts)
            else:
                self.volume(partition).restore(chunk_key, facts)
        out = Outbox()
        for partition in owned:
            vol = self.volume(partition)
            vol.hear(self.source_marks.get(partition, {}))
            vol.close_windows()
            # Publishing every open count again, and the watermark to the pattern grouper,
            # is idempotent, and cheap insurance (effects are delivered before the state
            # that records them, but a rebalance may bring state another worker made).
            await self.send_partials(partition, [(w, key) for w in vol.windows() for key in vol.counts(w)], out)
            if self.settings.patterns_enabled:
                await self.send_pattern_tickets(partition, {}, out)
        await out.delivered()
        logger.info(
            "agent=count recovered partitions=%s windows=%d tickets=%d chunks=%d",
            ",".join(str(p) for p in sorted(owned)) or "none",
            sum(len(v.windows()) for v in self.volumes.values()),
            sum(v.open_tickets for v in self.volumes.values()),
            len(self.first_seen),
        )
