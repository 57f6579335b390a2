"""Product events: releases, fixes and docs changes stored as ``product_event`` and told to the spike watch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.ingest.schema import TicketError, parse_product_event
from pipeline.messages import AreaProductEvent
from pipeline.outputs.series import product_event_point
from pipeline.outputs.sinks import InfluxSink
from pipeline.runtime.dead_letters import dead_letter_record
from pipeline.runtime.outbox import Outbox
from pipeline.runtime.partitioning import KeyPartitioner
from pipeline.runtime.stats import PipelineStats
from pipeline.settings import Settings

__all__ = ["ProductEvents"]


class ProductEvents:
    """Reads ``product-events``: a bad one is dead-lettered, a good one stored and sent to its area's watch
    (alerts list the area's events of the week before)."""

    def __init__(self, settings: Settings, topics: dict[str, Any], stats: PipelineStats, sink: InfluxSink) -> None:
        self.topics = topics
        self.stats = stats
        self.sink = sink
        self.partition_of = KeyPartitioner(settings.partitions)

    async def on_batch(self, events: Sequence[Any]) -> None:
        """Store a batch of product events (Faust events, values raw), then tell the watch."""
        points = []
        forward: list[tuple[int, dict[str, Any]]] = []
        out = Outbox()
        for event in events:
            try:
                product_event = parse_product_event(event.value)
            except TicketError as exc:
                self.stats.dead_letters += 1
                record = dead_letter_record(event.value, event.key, str(exc), event.message)
                await out.send(self.topics["dead_letter"], value=record)
                continue
            points.append(product_event_point(product_event))
            forward.append((self.partition_of(product_event["area"].encode()), product_event))
        await self.sink.write(points)
        for partition, product_event in forward:
            await out.send_parts(self.topics["area_volumes"], partition, AreaProductEvent(product_event), [])
        await out.delivered()
