"""Merging: the counting partitions' counts summed into ``ticket_volume`` points, and fed to the spike watch."""

from __future__ import annotations

import logging
from collections import ChainMap
from collections.abc import Sequence
from typing import Any

import orjson

from pipeline.counting.count import WATERMARKS
from pipeline.counting.volume import ALL, VolumeTotals
from pipeline.messages import AreaRow, AreaVolumes, Codec, VolumePartials
from pipeline.outputs.series import volume_point
from pipeline.outputs.sinks import InfluxSink
from pipeline.runtime.outbox import Outbox
from pipeline.runtime.partitioning import KeyPartitioner
from pipeline.runtime.stats import PipelineStats
from pipeline.runtime.tables import DurableTable
from pipeline.runtime.watermarks import hear, low_watermark
from pipeline.settings import Settings

__all__ = ["Merge"]

logger = logging.getLogger("pipeline.worker")


class Merge:
    """Sums ``<app>-volume-partials`` per window and key; writes ``ticket_volume``; sends area totals on.

    ``totals``: the merge table, ``"<partition>/<volume key>" -> {counting partition: [tickets,
    customers]}`` and ``"<partition>/__watermarks__"`` (:class:`VolumeTotals`).
    """

    def __init__(
        self,
        settings: Settings,
        topics: dict[str, Any],
        stats: PipelineStats,
        sink: InfluxSink,
        totals: DurableTable,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.stats = stats
        self.sink = sink
        self.totals_table = totals
        self.partition_of = KeyPartitioner(settings.partitions)
        self.codec = Codec(VolumePartials)

    async def on_batch(self, events: Sequence[Any]) -> None:
        """Merge a batch; points to InfluxDB, then totals to the watch, then the table."""
        staged: dict[str, Any] = {}
        view = ChainMap(staged, self.totals_table)
        totals = VolumeTotals(view)
        changed: set[str] = set()
        targets: set[int] = set()
        for event in events:
            target = event.message.partition
            targets.add(target)
            message = self.codec.decode(event.value)
            for row in message.rows:
                table_key = f"{target}/{row.volume_key}"
                if totals.merge(table_key, row.partition, row.tickets, row.customers, row.newest):
                    changed.add(table_key)
            marks_key = f"{target}/{WATERMARKS}"
            marks = dict(view.get(marks_key) or {})
            hear(marks, message.watermarks)
            staged[marks_key] = marks
        by_area = await self._write_points(totals, changed)
        out = Outbox()
        for target in targets:
            # the watermark of this merging partition: the oldest of every counter's
            low = low_watermark(view[f"{target}/{WATERMARKS}"], self.settings.partitions)
            for q in range(self.settings.partitions):
                rows = sorted(by_area.pop(q, [])) if target == min(targets) else []
                await out.send_parts(self.topics["area_volumes"], q, AreaVolumes(rows, target, low), ["rows"])
        await out.delivered()
        for table_key, value in staged.items():
            self.totals_table[table_key] = value
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
