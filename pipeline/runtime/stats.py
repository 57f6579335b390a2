"""A worker's counters: logged, and written as ``pipeline_stats`` and ``ticket_tags`` points."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.outputs.series import stats_point, tags_point
from pipeline.outputs.sinks import InfluxSink
from pipeline.tagging.tagger import FIELDS

__all__ = ["PipelineStats", "StatsWriter", "worker_tag"]


def worker_tag() -> str:
    """This worker process's name in the series (host and process id)."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class PipelineStats:
    """Counters a worker keeps and logs (``key=value``) once per batch."""

    received: int = 0
    dead_letters: int = 0
    counted: int = 0
    duplicates: int = 0
    too_late: int = 0
    #: tickets counted but too old for the pattern grouper (its lateness is from the watermark)
    patterns_too_late: int = 0
    points_written: int = 0
    spike_events: int = 0
    newest_created: float | None = None
    tagged: int = 0
    #: per field, predictions marked uncertain: the tickets that need a human tag
    uncertain: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIELDS, 0))
    labels_joined: int = 0
    labels_expired: int = 0

    def count_uncertain(self, predictions: list[dict[str, dict[str, Any]]]) -> None:
        """Count a batch's predictions, and per field the uncertain ones."""
        self.tagged += len(predictions)
        for predicted in predictions:
            for name, guess in predicted.items():
                if guess["uncertain"]:
                    self.uncertain[name] += 1


class StatsWriter:
    """Writes a worker's counters every stats interval (``TICKETPULSE_STATS_SECONDS``).

    ``extra``: counters kept elsewhere (alerts delivered, tagger corrections), read at
    each write.
    """

    def __init__(
        self,
        stats: PipelineStats,
        sink: InfluxSink,
        app_id: str,
        extra: Callable[[], dict[str, int]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stats = stats
        self.sink = sink
        self.app_id = app_id
        self.extra = extra
        self.clock = clock
        self.worker = worker_tag()
        self._reported_tagging: dict[str, int] = {}
        self._tagging: dict[str, int] = {}

    def points(self) -> list[Any]:
        """The ``pipeline_stats`` point, and a ``ticket_tags`` point when tickets were tagged since the last."""
        stats, now = self.stats, int(self.clock())
        fields: dict[str, int | float] = {
            "received": stats.received,
            "dead_letters": stats.dead_letters,
            "counted": stats.counted,
            "duplicates": stats.duplicates,
            "too_late": stats.too_late,
            "patterns_too_late": stats.patterns_too_late,
            "spike_events": stats.spike_events,
            "tagged": stats.tagged,
            **{f"uncertain_{name}": n for name, n in stats.uncertain.items()},
            "labels_joined": stats.labels_joined,
            "labels_expired": stats.labels_expired,
            **self.extra(),
        }
        if stats.newest_created is not None:
            fields["lag_seconds"] = round(max(0.0, now - stats.newest_created), 1)
        points = [stats_point(self.worker, self.app_id, fields, now)]
        # Tickets tagged since the last point, and how many of them were uncertain per
        # field: summed over workers, the share of tickets that need a human tag.
        tagging = {"tagged": stats.tagged, **{f"uncertain_{n}": v for n, v in stats.uncertain.items()}}
        delta = {name: value - self._reported_tagging.get(name, 0) for name, value in tagging.items()}
        if delta["tagged"] > 0:
            points.append(tags_point(self.worker, delta, now))
        self._tagging = tagging
        return points

    async def write(self) -> None:
        """Write the points of :meth:`points`."""
        await self.sink.write(self.points())
        self._reported_tagging = self._tagging  # once written: a failed write reports its tickets later
