"""From window totals of one key to alerts: the part of spike detection the stream runs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from .episodes import EpisodeTracker
from .spike import SpikeDetector

__all__ = ["AlertGate", "SpikeEvent", "VolumeWatch"]


@dataclass(frozen=True)
class SpikeEvent:
    """An episode opened, grew, or ended, with what the person paged needs to see why."""

    event: str  # "opened", "updated" or "resolved"
    episode_id: str
    key: str
    window_start: int
    window_end: int
    tickets: int
    customers: int
    expected: float
    score: float
    p_value: float
    level: str
    #: ``(ticket id, masked text)`` of a few tickets of the window, from different customers
    examples: tuple[tuple[str, str], ...] = ()
    #: the window's most frequent subject words
    top_terms: tuple[str, ...] = ()
    #: product events of the key in the days before (and during) the window
    recent_product_events: tuple[dict[str, Any], ...] = ()

    @property
    def concentration(self) -> float:
        """Tickets per distinct customer: 1.0 is every ticket from someone else."""
        return round(self.tickets / self.customers, 2) if self.customers else 0.0


class VolumeWatch:
    """Watches the window totals of one key (an area) and says when a spike starts and ends.

    Totals arrive as they grow, in any order, possibly more than once (at-least-once
    delivery): :meth:`update` keeps the largest seen, and judges the window with
    what it holds so far, so a spike can alert before its window ends (a window still
    filling can open or grow an episode, never end one). :meth:`advance` is told the
    event-time watermark (every counting partition has seen a ticket at least this
    recent): the windows that ended before it are closed, judged, and learned, in
    order (a window with no ticket is learned as zero). Plain data: it pickles, with
    its detector and episode, into the worker's durable table.

    Each closed window's baseline (customers, expected, upper) is kept for
    :meth:`drain_baselines` (the dashboards' "normal" band), unless ``keep_baselines``
    is false: a watch whose baselines nobody drains (a pattern's) would keep one per
    window for as long as it lives.

    Examples
    --------
    >>> watch = VolumeWatch("reports", 3600, SpikeDetector(min_windows=24), min_customers=5)
    >>> for h in range(24 * 7):
    ...     _ = watch.update(h * 3600, 10, 10)
    >>> watch.advance(24 * 7 * 3600)
    []
    >>> [e.event for e in watch.update(24 * 7 * 3600, 60, 55)]  # while the window fills
    ['opened']
    >>> _ = watch.update(24 * 7 * 3600 + 3600, 3, 3)
    >>> watch.advance(24 * 7 * 3600 + 3600)  # the spike window closes: same episode, no news
    []
    >>> [(e.event, e.window_start) for e in watch.advance(24 * 7 * 3600 + 7200)]  # the next ended quiet
    [('resolved', 608400)]
    """

    #: read by instances pickled before it was an argument (they kept baselines)
    keep_baselines: bool = True

    def __init__(
        self,
        key: str,
        window_seconds: int,
        detector: SpikeDetector | None = None,
        alert_score: float = 0.4,
        critical_score: float = 0.8,
        min_customers: int = 5,
        keep_baselines: bool = True,
    ) -> None:
        self.key = key
        self.window_seconds = window_seconds
        self.detector = detector or SpikeDetector()
        self.alert_score = alert_score
        self.critical_score = critical_score
        self.min_customers = min_customers
        self.keep_baselines = keep_baselines
        self.tracker = EpisodeTracker(key, alert_score=alert_score, min_customers=min_customers)
        self.totals: dict[int, tuple[int, int]] = {}
        self.learned_through: int | None = None
        #: ``(window, customers, expected, upper)`` of each window closed since the last
        #: :meth:`drain_baselines`: the "normal" band dashboards draw.
        self.baselines: list[tuple[int, int, float, float]] = []
        #: window -> (examples ``[id, customer, text]``, subject word counts) of open windows
        self.context: dict[int, tuple[list[list[str]], Counter[str]]] = {}
        #: releases, fixes, docs and default changes of this key, newest last (bounded)
        self.product_events: list[dict[str, Any]] = []

    def update(self, window: int, tickets: int, customers: int) -> list[SpikeEvent]:
        """Take a (partial or final) total of one open window; return the events it causes."""
        if self.learned_through is not None and window <= self.learned_through:
            return []  # a late update of a window already closed and learned
        old = self.totals.get(window, (0, 0))
        self.totals[window] = (max(old[0], tickets), max(old[1], customers))
        if self.learned_through is not None and window > self.learned_through + 2 * self.window_seconds:
            # Far ahead of the closed windows: a backlog being caught up. It is judged when
            # it closes, in order; judged now, it would stretch an open episode over the
            # windows between, which then could not end it.
            return []
        return self._judge(window, closed=False)

    def add_context(self, window: int, examples: list[list[str]], terms: dict[str, int], keep: int = 5) -> None:
        """Remember a few example tickets (distinct customers) and word counts of an open window."""
        if self.learned_through is not None and window <= self.learned_through:
            return
        kept, counts = self.context.setdefault(window, ([], Counter()))
        for ticket_id, customer, text in examples:
            if len(kept) < keep and all(k[0] != ticket_id and k[1] != customer for k in kept):
                kept.append([ticket_id, customer, text])
        counts.update(terms)
        if len(counts) > 200:  # bounded: keep the most frequent
            self.context[window] = (kept, Counter(dict(counts.most_common(100))))

    def add_product_event(self, event: dict[str, Any], keep: int = 50) -> None:
        """Remember a product event (``{"kind", "at", "ref", "note"}``), once."""
        if event not in self.product_events:
            self.product_events.append(event)
            self.product_events.sort(key=lambda e: e["at"])
            del self.product_events[:-keep]

    def recent_product_events(self, window: int, days: int = 7) -> tuple[dict[str, Any], ...]:
        """The product events of the ``days`` before ``window``, and of the window itself."""
        since, until = window - days * 86400, window + self.window_seconds
        return tuple(e for e in self.product_events if since <= e["at"] < until)

    def advance(self, watermark: int) -> list[SpikeEvent]:
        """Close, judge and learn every window that ended at or before ``watermark``."""
        last = watermark - self.window_seconds  # the start of the last window that ended
        if self.learned_through is not None:
            first = self.learned_through + self.window_seconds
        elif self.totals:
            first = min(self.totals)
        else:
            return []
        events: list[SpikeEvent] = []
        for w in range(first, last + 1, self.window_seconds):
            events += self._judge(w, closed=True)
            tickets, customers = self.totals.pop(w, (0, 0))
            self.context.pop(w, None)
            if self.keep_baselines and self.detector.ready:
                expected = self.detector.expected(w)
                self.baselines.append((w, customers, round(expected, 3), round(self.detector.upper(w), 3)))
            self.detector.learn_one({"t": w, "y": tickets, "customers": customers})
            self.learned_through = w
        return events

    def drain_baselines(self) -> list[tuple[int, int, float, float]]:
        """The closed windows' baselines gathered so far, handed over once."""
        out, self.baselines = self.baselines, []
        return out

    def _judge(self, window: int, closed: bool) -> list[SpikeEvent]:
        tickets, customers = self.totals.get(window, (0, 0))
        if self.tracker.episode is None and customers < self.tracker.min_customers:
            # nothing to open, update or resolve, whatever the score: most windows of most
            # patterns' watches (one ticket, then quiet), not scored for nothing
            return []
        x: dict[str, Any] = {"t": window, "y": tickets, "customers": customers}
        why = self.detector.explain(x)
        if not closed and why["score"] < self.alert_score:
            return []  # a window still filling can raise an alert, not end one
        event, episode = self.tracker.observe(window, why["score"], customers, why["expected"], customers)
        if event is None or episode is None:
            return []
        level = "critical" if episode.peak_score >= self.critical_score else "warning"
        if event == "resolved":
            level = "resolved"
        examples, terms = self.context.get(window, ([], Counter()))
        return [
            SpikeEvent(
                event=event,
                episode_id=episode.id,
                key=self.key,
                window_start=window,
                window_end=window + self.window_seconds,
                tickets=tickets,
                customers=customers,
                expected=why["expected"],
                score=round(why["score"], 4),
                p_value=why["p_value"],
                level=level,
                examples=tuple((ticket_id, text) for ticket_id, _, text in examples),
                top_terms=tuple(term for term, _ in terms.most_common(8)),
                recent_product_events=self.recent_product_events(window),
            )
        ]


class AlertGate:
    """Which spike events become alerts: one incident of a group (an area) is one alert.

    Several watches can see one incident: a spike of bugs in reports moves the watch of
    reports and the watch of its bugs, and the two can open in either order, in one
    batch or several. An episode is muted, all its life, when it opens in a window that
    another episode of its group spans (from its first window, until the window that
    resolved it); its points are still written. The first to open carries the incident.
    The caller hands over events in window order (the watch agent sorts each batch's),
    so an episode heard in the same batch as the end of another is judged by windows.
    Plain data: it pickles into the durable table.

    Examples
    --------
    >>> def event(kind, episode, window):
    ...     return SpikeEvent(kind, episode, "k", window, window + 1, 50, 40, 5.0, 0.9, 1e-9, "warning")
    >>> gate = AlertGate()
    >>> gate.admit("reports", event("opened", "reports@1", 10))
    True
    >>> gate.admit("reports", event("opened", "reports/bug@1", 10)), gate.admit("billing", event("opened", "b@1", 10))
    (False, True)
    >>> [gate.admit("reports", event("updated", e, 11)) for e in ("reports/bug@1", "reports@1")]
    [False, True]
    >>> gate.admit("reports", event("resolved", "reports@1", 13))  # heard before a case type that opened at 12
    True
    >>> gate.admit("reports", event("opened", "reports/other@1", 12))  # within the incident: muted
    False
    >>> [gate.admit("reports", event("resolved", e, 14)) for e in ("reports/bug@1", "reports/other@1")]
    [False, False]
    >>> gate.admit("reports", event("opened", "reports/bug@2", 20))  # a new incident
    True
    >>> gate.admit("reports", event("opened", "reports/other@2", 5))  # heard late, before it: another
    True
    """

    #: resolved episodes kept per group, to judge episodes heard late
    keep_resolved = 50

    def __init__(self) -> None:
        #: group -> episode id -> [first window, window that resolved it or None, alerted]
        self.episodes: dict[str, dict[str, list[Any]]] = {}

    def admit(self, group: str, event: SpikeEvent) -> bool:
        """Whether ``event`` is alerted; remembers what it decided."""
        episodes = self.episodes.setdefault(group, {})
        known = episodes.get(event.episode_id)
        if known is None:
            window = event.window_start
            # a new "opened", or an episode that opened before this gate was kept: alerted
            busy = event.event == "opened" and any(
                start <= window and (end is None or end > window) for start, end, _ in episodes.values()
            )
            known = episodes[event.episode_id] = [window, None, not busy]
        if event.event == "resolved":
            known[1] = event.window_start
            resolved = sorted((e[1], key) for key, e in episodes.items() if e[1] is not None)
            for _, key in resolved[: -self.keep_resolved]:
                del episodes[key]
        return bool(known[2])
