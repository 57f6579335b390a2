"""The spike episodes the worker's watches would have raised on a history of tickets, offline.

The same objects as the stream's (:class:`VolumeWatch` per area and per case type in
it, :class:`AlertGate` per area), fed as the worker feeds them: each ticket's window
totals as they grow (distinct customers), the event-time watermark as the tickets'
times pass. ``ticketpulse replay`` and ``benchmarks/sumo_spikes.py`` use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .watch import AlertGate, SpikeEvent, VolumeWatch, key_watch

__all__ = ["ALL_CASE_TYPES", "SpikeBacktest"]

#: The case type of an area's own watch (all its tickets), as the worker names it.
ALL_CASE_TYPES = "all"


@dataclass
class _Cell:
    tickets: set[str] = field(default_factory=set)
    customers: set[str] = field(default_factory=set)


class SpikeBacktest:
    """Feed tickets in time order (:meth:`add`); read :attr:`episodes` after :meth:`finish`.

    Parameters
    ----------
    window_seconds
        The watches' window (the worker's ``TICKETPULSE_WINDOW_SECONDS``).
    min_customers, case_type_min_customers
        Of the area watches and of the case-type watches (the worker's settings).
    watch_options
        Further :class:`VolumeWatch` arguments (scales, ``min_ratio``, ...), for tuning.

    Examples
    --------
    >>> bt = SpikeBacktest(3600)
    >>> day = 86400
    >>> for i in range(14 * 24):  # two weeks of one question an hour, then one a minute
    ...     bt.add(1772409600 + i * 3600 + 60, "sync", None, f"t{i}", f"c{i}")
    >>> for i in range(40):
    ...     bt.add(1772409600 + 14 * day + 60 * i, "sync", None, f"s{i}", f"s{i}")
    >>> bt.finish(1772409600 + 15 * day)
    >>> [(e["area"], e["scale"], e["customers"], e["detected_at"]) for e in bt.episodes]
    [('sync', 3600, 8, '2026-03-16T00:07:00+00:00')]
    """

    def __init__(
        self,
        window_seconds: int = 3600,
        min_customers: int = 5,
        case_type_min_customers: int = 10,
        **watch_options: Any,
    ) -> None:
        self.window_seconds = window_seconds
        self.min_customers = min_customers
        self.case_type_min_customers = case_type_min_customers
        self.watch_options = watch_options
        self.watches: dict[tuple[str, str], VolumeWatch] = {}
        self.gates: dict[str, AlertGate] = {}
        self.cells: dict[tuple[str, str, int], _Cell] = {}
        #: one dict per episode, in the order they opened (see :meth:`_record`)
        self.episodes: list[dict[str, Any]] = []
        self._open: dict[str, dict[str, Any]] = {}
        self._day: int | None = None

    def _watch(self, area: str, case_type: str) -> VolumeWatch:
        watch = self.watches.get((area, case_type))
        if watch is None:
            watch = self.watches[(area, case_type)] = key_watch(
                area,
                case_type,
                self.window_seconds,
                self.min_customers,
                self.case_type_min_customers,
                ALL_CASE_TYPES,
                keep_baselines=False,
                **self.watch_options,
            )
        return watch

    def add(self, at: float, area: str, case_type: str | None, ticket_id: str, customer_id: str) -> None:
        """One ticket (``at``: its event time, epoch seconds; not older than the tickets before)."""
        now = int(at)
        day = now // 86400
        if self._day is not None and day > self._day:
            # quiet watches close their windows too (episodes end); one asleep (nothing open,
            # a day without a customer) waits for its next ticket, then learns the quiet at once
            self._advance_all(day * 86400, sleep=True)
        self._day = day
        window = now - now % self.window_seconds
        keys = [ALL_CASE_TYPES] + ([case_type] if case_type and case_type != ALL_CASE_TYPES else [])
        for kind in keys:
            watch = self._watch(area, kind)
            self._hear(area, kind, watch.advance(now))
            cell = self.cells.setdefault((area, kind, window), _Cell())
            cell.tickets.add(ticket_id)
            cell.customers.add(customer_id)
            self._hear(area, kind, watch.update(window, len(cell.tickets), len(cell.customers), at=now))
        for key in [k for k in self.cells if k[2] < window - 2 * self.window_seconds]:
            del self.cells[key]

    def finish(self, watermark: float) -> None:
        """Close every window that ended by ``watermark`` (the end of the history)."""
        self._advance_all(int(watermark))

    def _advance_all(self, watermark: int, sleep: bool = False) -> None:
        for (area, kind), watch in self.watches.items():
            self._hear(area, kind, watch.advance(watermark, sleep=sleep))

    def _hear(self, area: str, case_type: str, events: list[SpikeEvent]) -> None:
        gate = self.gates.setdefault(area, AlertGate())
        for event in events:
            alerted = gate.admit(area, event)
            self._record(area, case_type, event, alerted)

    def _record(self, area: str, case_type: str, event: SpikeEvent, alerted: bool) -> None:
        def iso(t: int) -> str:
            return datetime.fromtimestamp(t, UTC).isoformat()

        if event.event == "opened":
            episode = {
                "area": area,
                "case_type": case_type,
                "episode_id": event.episode_id,
                "scale": event.scale,
                "window_start": iso(event.span_start),
                "detected_at": iso(event.detected_at if event.detected_at is not None else event.window_end),
                "customers": event.customers,
                "expected": event.expected,
                "score": event.score,
                "alerted": alerted,
                "peak_score": event.score,
                "resolved_at": None,
            }
            self.episodes.append(episode)
            self._open[event.episode_id] = episode
            return
        opened = self._open.get(event.episode_id)
        if opened is None:
            return
        if event.event == "updated":
            opened["peak_score"] = max(float(opened["peak_score"]), event.score)
        elif event.event == "resolved":
            opened["resolved_at"] = iso(event.window_start)
            del self._open[event.episode_id]
