"""The spike watch: each area's and case type's window totals judged by a :class:`detectors.VolumeWatch`.

Alerts go to ``ticket-alerts`` (one incident, one alert: :class:`detectors.AlertGate`),
spikes and the normal band to ``ticket_spike`` and ``ticket_baseline``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson

from detectors import AlertGate, SpikeEvent, VolumeWatch
from detectors import key_watch as new_key_watch
from pipeline.alerts.payloads import alert_payload
from pipeline.counting.count import WATERMARKS
from pipeline.counting.volume import ALL
from pipeline.ingest.schema import UNASSIGNED
from pipeline.messages import AreaContext, AreaMessage, AreaProductEvent, Codec
from pipeline.outputs.lineprotocol import Point
from pipeline.outputs.series import baseline_point, spike_point
from pipeline.outputs.sinks import InfluxSink
from pipeline.runtime.outbox import Outbox
from pipeline.runtime.stats import PipelineStats
from pipeline.runtime.tables import PartitionedTable, freeze, thaw
from pipeline.runtime.watermarks import hear, low_watermark
from pipeline.settings import Settings

__all__ = ["ALERT_GATE", "Watch"]

logger = logging.getLogger("pipeline.worker")

#: Watch table key suffix of the partition's :class:`detectors.AlertGate`.
ALERT_GATE = "__alert_gate__"

#: A spike of a watch: (partition, area, case type, event).
Spike = tuple[int, str, str, SpikeEvent]


class Watch:
    """Judges the merged window totals of ``<app>-area-volumes``.

    ``watches``: ``"<partition>/[area, case type]"`` -> a pickled :class:`VolumeWatch`,
    ``"<partition>/__watermarks__"`` -> the merging partitions' watermarks, and
    ``"<partition>/__alert_gate__"``.
    """

    def __init__(
        self,
        settings: Settings,
        topics: dict[str, Any],
        stats: PipelineStats,
        sink: InfluxSink,
        watches: PartitionedTable,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.stats = stats
        self.sink = sink
        self.watches = watches
        self.codec = Codec(AreaMessage)
        # The state this worker last wrote, thawed: table key -> (the text written, its object).
        # Every batch advances every watch of its partitions; unpickling them all again was
        # the agent's main cost. An object is reused only while the table holds the very text
        # it was frozen to (recovery and rebalances bring other texts), and the cache is
        # emptied when a batch fails before its state is written.
        self.thawed: dict[str, tuple[str, Any]] = {}

    @staticmethod
    def key(partition: int, area: str, case_type: str) -> str:
        """The table key of the watch of an area (``case_type`` ALL) or of one case type in it."""
        return f"{partition}/" + orjson.dumps([area, case_type]).decode()

    def stored(self, table_key: str) -> Any:
        """The table's value at ``table_key``, thawed (``None`` if there is none)."""
        text = self.watches.get(table_key)
        if not text:
            return None
        hit = self.thawed.get(table_key)
        if hit is not None and hit[0] == text:
            return hit[1]
        return thaw(text)

    def watch_of(self, touched: dict[str, Any], partition: int, area: str, case_type: str = ALL) -> VolumeWatch:
        """The watch of an area or of a case type in it: already in this batch, else from the table, else new."""
        table_key = self.key(partition, area, case_type)
        key_watch = touched.get(table_key) or self.stored(table_key)
        if key_watch is None:
            settings = self.settings
            key_watch = new_key_watch(
                area,
                case_type,
                settings.window_seconds,
                settings.spike_min_customers,
                settings.case_type_spike_min_customers,
                ALL,
                alert_score=settings.spike_alert_score,
            )
        touched[table_key] = key_watch
        return key_watch

    async def on_batch(self, events: Sequence[Any]) -> None:
        """One batch: window totals, context and product events in; spikes out."""
        try:
            await self._on_batch(events)
        except BaseException:
            self.thawed.clear()  # objects of this batch may be ahead of the table
            raise

    async def _on_batch(self, events: Sequence[Any]) -> None:
        touched: dict[str, Any] = {}
        spikes, partitions = self._hear_batch(events, touched)
        spikes += self._advance(partitions, touched)
        logger.info(
            "agent=watch messages=%d partitions=%s watermarks=%s spike_events=%d",
            len(events),
            ",".join(str(p) for p in sorted(partitions)),
            ";".join(f"{p}:{touched[f'{p}/{WATERMARKS}']}" for p in sorted(partitions)),
            len(spikes),
        )
        # Effects first (alerts, points), then the state that has judged them.
        # in window order, an area's roll-up before its case types (AlertGate); stable:
        # each key's events keep their order
        spikes.sort(key=lambda s: (s[3].window_start, s[2] != ALL))
        out = Outbox()
        await self._alert(spikes, touched, out)
        window_tag = self.settings.window_label
        points = [spike_point(spike, window_tag, area, case_type) for _, area, case_type, spike in spikes]
        await self.sink.write(points + self._baselines(touched))
        await out.delivered()
        for table_key, value in touched.items():
            text = self.watches[table_key] = freeze(value)
            if not isinstance(value, dict):  # watermarks are copied, not reused
                self.thawed[table_key] = (text, value)
        await self.watches.delivered()

    def _hear_batch(self, events: Sequence[Any], touched: dict[str, Any]) -> tuple[list[Spike], set[int]]:
        """Each message's rows, context or product event, given to its watches."""
        spikes: list[Spike] = []
        partitions: set[int] = set()
        for event in events:
            partition = event.message.partition
            message = self.codec.decode(event.value)
            if isinstance(message, AreaProductEvent):
                product_event = dict(message.product_event)
                area = product_event.pop("area")
                self.watch_of(touched, partition, area).add_product_event(product_event)
                continue
            if isinstance(message, AreaContext):
                for context in message.context:
                    window, area, case_type, examples, terms = context
                    self.watch_of(touched, partition, area).add_context(window, examples, terms)
                    if case_type != UNASSIGNED:
                        self.watch_of(touched, partition, area, case_type).add_context(window, examples, terms)
                continue
            partitions.add(partition)
            marks_key = f"{partition}/{WATERMARKS}"
            marks = touched.get(marks_key) or dict(thaw(self.watches.get(marks_key)) or {})
            hear(marks, {str(message.source): message.watermark})
            touched[marks_key] = marks
            watermark = low_watermark(marks, self.settings.partitions)
            for row in message.rows:
                if row.case_type == UNASSIGNED:
                    continue  # tickets without a case type are no case type: their surge is the area's
                key_watch = self.watch_of(touched, partition, row.area, row.case_type)
                if key_watch.asleep and watermark is not None:
                    # back from a quiet spell it did not close window by window (see _advance):
                    # its quiet up to this row's window learned at once (never the window itself,
                    # whose total comes now), so that the window is judged as it fills
                    closed = key_watch.advance(min(watermark, row.window))
                    spikes += [(partition, row.area, row.case_type, s) for s in closed]
                news = key_watch.update(row.window, row.tickets, row.customers, at=row.newest or None)
                spikes += [(partition, row.area, row.case_type, spike) for spike in news]
        return spikes, partitions

    def _advance(self, partitions: set[int], touched: dict[str, Any]) -> list[Spike]:
        """Close, in every watch of the partitions heard from, the windows the watermark has passed."""
        spikes: list[Spike] = []
        for partition in partitions:
            watermark = low_watermark(touched[f"{partition}/{WATERMARKS}"], self.settings.partitions)
            if watermark is None:
                continue  # not every merging partition has spoken yet
            prefix = f"{partition}/["
            for table_key in sorted(k for k in {*self.watches.keys(), *touched} if k.startswith(prefix)):
                key_watch = touched.get(table_key) or self.stored(table_key)
                learned_through = key_watch.learned_through
                # an asleep watch (nothing open, a day without a customer) stays where it fell
                # asleep until its key has a ticket again: not advanced and written again each batch
                closed = key_watch.advance(watermark, sleep=True)
                # written when it learned a window, even one without events, so that
                # the table and the object reused from ``thawed`` stay the same state
                if closed or table_key in touched or key_watch.learned_through != learned_through:
                    touched[table_key] = key_watch
                    area, case_type = orjson.loads(table_key[len(prefix) - 1 :])
                    spikes += [(partition, area, case_type, spike) for spike in closed]
        return spikes

    async def _alert(self, spikes: list[Spike], touched: dict[str, Any], out: Outbox) -> None:
        """Each spike event logged; the ones its partition's gate admits sent to ``ticket-alerts``."""
        for partition, area, case_type, spike in spikes:
            self.stats.spike_events += 1
            gate_key = f"{partition}/{ALERT_GATE}"
            gate = touched.get(gate_key) or self.stored(gate_key) or AlertGate()
            touched[gate_key] = gate
            # one incident of an area, seen by its watch and its case types', is one alert
            published = gate.admit(area, spike)
            logger.warning(
                "agent=watch event=%s episode=%s area=%s case_type=%s customers=%d expected=%.1f score=%.3f alert=%s",
                spike.event,
                spike.episode_id,
                area,
                case_type,
                spike.customers,
                spike.expected,
                spike.score,
                "sent" if published else "muted",
            )
            if published:
                if case_type != ALL:  # the area's releases and fixes, which the area's watch holds
                    area_watch = self.watch_of(touched, partition, area)
                    spike = replace(spike, recent_product_events=area_watch.recent_product_events(spike.window_start))
                await out.send(self.topics["alerts"], key=area.encode(), value=alert_payload(spike, area, case_type))

    def _baselines(self, touched: dict[str, Any]) -> list[Point]:
        """``ticket_baseline`` points of the windows the touched watches closed."""
        baselines = []
        window_tag = self.settings.window_label
        for table_key, value in touched.items():
            if isinstance(value, VolumeWatch):
                area, case_type = orjson.loads(table_key.split("/", 1)[1])
                baselines += [
                    baseline_point(area, case_type, window_tag, window, c, e, u)
                    for window, c, e, u in value.drain_baselines()
                ]
        return baselines
