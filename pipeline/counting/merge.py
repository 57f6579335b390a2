"""Merging: the counting partitions' counts summed into ``ticket_volume`` points, and fed to the spike watch."""

from __future__ import annotations

import logging
from collections import ChainMap
from collections.abc import Sequence
from typing import Any

import orjson

from pipeline.counting.count import NEXT_OFFSET, WATERMARKS
from pipeline.counting.volume import ALL, VolumeTotals
from pipeline.messages import AreaRow, AreaVolumes, Codec, VolumePartials
from pipeline.outputs.series import volume_point
from pipeline.outputs.sinks import InfluxSink
from pipeline.runtime.outbox import Outbox
from pipeline.runtime.partitioning import KeyPartitioner
from pipeline.runtime.stats import PipelineStats
from pipeline.runtime.tables import PartitionedTable
from pipeline.runtime.watermarks import hear, low_watermark
from pipeline.settings import Settings

__all__ = ["Merge"]

logger = logging.getLogger("pipeline.worker")


#: Table key part of a chunk of merged totals: ``"<partition>/~totals~/<offset>"``.
CHUNK = "~totals~"


def _window_of(volume_key: str) -> int:
    """The window of a volume key (JSON ``[window, area, case type, severity]``), without parsing it all.

    >>> _window_of('[1772445600,"reports","all","all"]')
    1772445600
    """
    return int(volume_key[1 : volume_key.index(",")])


class Merge:
    """Sums ``<app>-volume-partials`` per window and key; writes ``ticket_volume``; sends area totals on.

    The totals, ``"<partition>/<volume key>" -> {counting partition: [tickets, customers,
    newest]}`` (:class:`VolumeTotals`), are read from memory. Durable in the ``totals``
    table: each batch's changed totals as one chunk a merging partition
    (``"<partition>/~totals~/<offset>"``, keyed by the first message that changed one: a
    batch read again after a crash changes nothing already stored, so it never
    overwrites a chunk with less), and the counting partitions' watermarks
    (``"<partition>/__watermarks__"``). A key per total, as before, made a changelog record
    for every area, case type, severity and hour a batch touched (52,608 for SUMO's first
    20,000 questions read as a backlog: docs/benchmarks.md), and kept every hour since the
    start. Totals of windows the allowed lateness has closed for every counting
    partition are let go, with the chunks that hold only such windows; a partial of one
    is not merged (no counting partition sends one, but a counting partition restarted
    from an older watermark may send one again). :meth:`rebuild` reads the table back
    after a recovery (and keys of the earlier layout, one a total, which expire the same way).
    """

    def __init__(
        self,
        settings: Settings,
        topics: dict[str, Any],
        stats: PipelineStats,
        sink: InfluxSink,
        totals: PartitionedTable,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.stats = stats
        self.sink = sink
        self.totals_table = totals
        self.partition_of = KeyPartitioner(settings.partitions)
        self.codec = Codec(VolumePartials)
        #: "<partition>/<volume key>" -> partials, the totals of the windows still open
        self.totals: dict[str, dict[str, list[int]]] = {}
        #: per merging partition: window -> its keys in :attr:`totals`
        self.windows: dict[int, dict[int, set[str]]] = {}
        #: table keys of stored totals (chunks, or a total of the earlier layout) -> newest window they hold
        self.stored: dict[str, int] = {}
        #: per merging partition: windows before this one are closed and let go
        self.closed_before: dict[int, int] = {}
        #: per merging partition: the offset of volume-partials recorded everything before
        self.recorded_to: dict[int, int] = {}

    async def on_batch(self, events: Sequence[Any]) -> None:
        """Merge a batch; points to InfluxDB, then totals to the watch, then the table."""
        staged: dict[str, Any] = {}
        totals = VolumeTotals(ChainMap(staged, self.totals))
        changed: set[str] = set()
        targets: set[int] = set()
        chunk_of: dict[int, str] = {}  # merging partition -> the key of its chunk in this batch
        marks: dict[int, dict[str, int]] = {}
        for event in events:
            target = event.message.partition
            targets.add(target)
            message = self.codec.decode(event.value)
            closed = self.closed_before.get(target)
            for row in message.rows:
                if closed is not None and _window_of(row.volume_key) < closed:
                    continue  # a window let go: its total was final
                table_key = f"{target}/{row.volume_key}"
                if totals.merge(table_key, row.partition, row.tickets, row.customers, row.newest):
                    changed.add(table_key)
                    chunk_of.setdefault(target, f"{target}/{CHUNK}/{event.message.offset}")
            if target not in marks:
                marks[target] = dict(self.totals_table.get(f"{target}/{WATERMARKS}") or {})
            hear(marks[target], message.watermarks)
        by_area = await self._write_points(totals, changed)
        out = Outbox()
        for target in targets:
            # the watermark of this merging partition: the oldest of every counter's
            low = low_watermark(marks[target], self.settings.partitions)
            for q in range(self.settings.partitions):
                rows = sorted(by_area.pop(q, [])) if target == min(targets) else []
                await out.send_parts(self.topics["area_volumes"], q, AreaVolumes(rows, target, low), ["rows"])
        await out.delivered()
        self._record(staged, chunk_of, marks)
        for event in events:
            target, offset = event.message.partition, event.message.offset
            if offset >= self.recorded_to.get(target, -1):
                self.recorded_to[target] = offset + 1
        for target in targets:
            self.totals_table[f"{target}/{NEXT_OFFSET}"] = self.recorded_to[target]
        await self.totals_table.delivered()
        if events:
            stats = self.stats
            logger.info(
                "agent=merge received=%d dead_letters=%d counted=%d duplicates=%d too_late=%d points=%d",
                stats.received,
                stats.dead_letters,
                stats.counted,
                stats.duplicates,
                stats.too_late,
                stats.points_written,
            )

    def start_of(self, _topic: str, partition: int) -> int | None:
        """Where a merging partition's next batch should start: everything before is recorded."""
        return self.recorded_to.get(partition)

    def _record(self, staged: dict[str, Any], chunk_of: dict[int, str], marks: dict[int, dict[str, int]]) -> None:
        """The batch's changed totals into memory and one chunk a merging partition; the watermarks;
        the closed windows let go."""
        rows: dict[int, list[list[Any]]] = {}
        for table_key, partials in staged.items():
            partition, _, volume_key = table_key.partition("/")
            rows.setdefault(int(partition), []).append([volume_key, partials])
            self._keep(int(partition), table_key, partials)
        for target, chunk in sorted(rows.items()):
            chunk_key = chunk_of[target]
            self.totals_table[chunk_key] = chunk
            self.stored[chunk_key] = max(_window_of(volume_key) for volume_key, _ in chunk)
        for target, heard in marks.items():
            self.totals_table[f"{target}/{WATERMARKS}"] = heard
            self._let_go(target, low_watermark(heard, self.settings.partitions))

    def _keep(self, target: int, table_key: str, partials: dict[str, list[int]]) -> None:
        self.totals[table_key] = partials
        window = _window_of(table_key.split("/", 1)[1])
        self.windows.setdefault(target, {}).setdefault(window, set()).add(table_key)

    def _let_go(self, target: int, low: int | None) -> None:
        """Let go of the totals of windows closed for every counting partition, and the stored
        chunks that hold only such windows (a window more than the counters wait, to spare)."""
        if low is None:
            return
        closed = low - self.settings.allowed_lateness_seconds - self.settings.window_seconds
        if closed <= self.closed_before.get(target, closed - 1):
            return
        self.closed_before[target] = closed
        windows = self.windows.get(target, {})
        for window in [w for w in windows if w < closed]:
            for table_key in windows.pop(window):
                self.totals.pop(table_key, None)
        prefix = f"{target}/"
        for stored_key in [k for k, newest in self.stored.items() if newest < closed and k.startswith(prefix)]:
            del self.stored[stored_key]
            self.totals_table.pop(stored_key, None)

    async def rebuild(self) -> None:
        """Read the totals of the partitions this worker now owns back from the table (after a recovery)."""
        owned = self.totals_table.active_partitions
        for target in owned:
            self.closed_before.pop(target, None)
            self.recorded_to.pop(target, None)
            for table_key in [k for w in self.windows.pop(target, {}).values() for k in w]:
                self.totals.pop(table_key, None)
        self.stored = {k: w for k, w in self.stored.items() if int(k.split("/", 1)[0]) not in owned}
        totals = VolumeTotals(self.totals)
        for table_key, value in list(self.totals_table.items()):
            target_part, _, name = table_key.partition("/")
            target = int(target_part)
            if target not in owned or name == WATERMARKS:
                continue
            if name == NEXT_OFFSET:
                self.recorded_to[target] = int(value)
                continue
            # a chunk of this layout, or one total of the earlier one
            chunk = value if name.startswith(CHUNK) else [[name, value]]
            for volume_key, partials in chunk:
                key = f"{target}/{volume_key}"
                for source, partial in partials.items():
                    totals.merge(key, int(source), *partial[:3])
                self._keep(target, key, self.totals[key])
            self.stored[table_key] = max(_window_of(volume_key) for volume_key, _ in chunk)
        for target in owned:
            self._let_go(
                target, low_watermark(self.totals_table.get(f"{target}/{WATERMARKS}") or {}, self.settings.partitions)
            )
        logger.info(
            "agent=merge recovered partitions=%s totals=%d stored=%d",
            ",".join(str(p) for p in sorted(owned)) or "none",
            len(self.totals),
            len(self.stored),
        )

    async def _write_points(self, totals: VolumeTotals, changed: set[str]) -> dict[int, list[AreaRow]]:
        """``ticket_volume`` points of the changed keys; the area totals each watch partition judges."""
        points = []
        by_area: dict[int, list[AreaRow]] = {}
        window_tag = self.settings.window_label
        for table_key in changed:
            window, area, case_type, severity = orjson.loads(table_key.split("/", 1)[1])
            tickets_n, customers_n = totals.total(table_key)
            points.append(volume_point(window, area, case_type, severity, window_tag, tickets_n, customers_n))
            if severity == ALL:  # the area's roll-up and its case types: what the watch judges
                by_area.setdefault(self.partition_of(area.encode()), []).append(
                    AreaRow(window, area, case_type, tickets_n, customers_n, totals.newest(table_key))
                )
        await self.sink.write(points)
        self.stats.points_written += len(points)
        return by_area
