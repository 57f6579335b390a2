"""From window totals of one key to alerts: the part of spike detection the stream runs."""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from .episodes import Episode
from .poisson import poisson_sf
from .rates import SeasonalRate
from .spike import SpikeDetector

__all__ = ["DEFAULT_SCALES", "AlertGate", "SpikeEvent", "VolumeWatch", "key_watch"]


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
    #: the time scale (seconds) whose evidence this is: ``tickets``, ``customers`` and
    #: ``expected`` are of the span ``[window_end - scale, window_end)``; 0 when not known
    scale: int = 0
    #: event time (epoch seconds) at which the evidence was there: the newest ticket
    #: counted when a window still filling tipped it, else the end of the window
    detected_at: int | None = None

    @property
    def span_start(self) -> int:
        """Start of the span the evidence covers (``window_start`` when the scale is not known)."""
        return self.window_end - self.scale if self.scale else self.window_start

    @property
    def concentration(self) -> float:
        """Tickets per distinct customer: 1.0 is every ticket from someone else."""
        return round(self.tickets / self.customers, 2) if self.customers else 0.0


#: The time scales a watch judges at once (seconds): an hour, six hours, a day.
DEFAULT_SCALES = (3600, 6 * 3600, 86400)


def _below(seen: float, normal: float, phi: float) -> float:
    """``P(X <= seen)`` under the quasi-Poisson law of mean ``normal`` and dispersion ``phi``."""
    return 1.0 - poisson_sf((seen + 1.0) / phi, normal / phi)


class _Sums(NamedTuple):
    """Customers, customers up to each window's cap, tickets and expected customers of some windows."""

    customers: int
    capped: float
    tickets: int
    expected: float


#: the sums of no window
_NONE = _Sums(0, 0.0, 0, 0.0)


@dataclass(frozen=True)
class _Evidence:
    """What one scale says of the span that ends with the window judged."""

    scale: int  # windows
    customers: int  # distinct customers of each window, added over the span
    tickets: int
    expected: float
    p_value: float  # multiplied by the number of scales (Bonferroni)
    score: float


class VolumeWatch:
    """Watches the window totals of one key (an area) at several time scales; says when a spike starts and ends.

    Totals arrive as they grow, in any order, possibly more than once (at-least-once
    delivery): :meth:`update` keeps the largest seen, and judges the window with
    what it holds so far, so a spike can alert before its window ends (a window still
    filling can open or grow an episode, never end one). :meth:`advance` is told the
    event-time watermark (every counting partition has seen a ticket at least this
    recent): the windows that ended before it are closed, judged, and learned, in
    order (a window with no ticket is learned as zero). Plain data: it pickles, with
    its model and episode, into the worker's durable table.

    **Several scales at once.** Each window is judged with the spans of ``scales``
    that end with it (by default its hour, the six hours and the day up to it): the
    customers of each window of the span, added, against what the model of normal
    (:class:`detectors.SeasonalRate`) expects for the same windows. The evidence is the
    upper tail probability of that sum under a quasi-Poisson law (variance inflated by
    the dispersion each scale has shown), times the number of scales; the score is
    ``min(1, -log10(p) / max_log10)``. A scale counts when its span also holds at least
    ``min_customers`` customers and ``min_ratio`` times what it expects: the minimum
    depends on what the scale expects, so a topic with three questions a day alerts on
    twenty in six hours, and one with fifty an hour does not alert on sixty. In the
    longer spans each window counts up to the top of its normal band (``cap``), so
    that they measure sustained rises, and a one-hour burst is the hour's to report
    (and ends when the next hour is quiet).

    **One episode across scales.** The best scale of a window opens an episode, or
    updates the open one when its score has grown by ``update_step`` (or turned
    critical); the first closed window where no scale alerts and the episode's scale (the
    one it last reported) scores under ``resolve_score`` (by default half of
    ``alert_score``: volume back to normal, not merely below the alert level, so that one
    incident does not open, resolve and open again) resolves it. An episode
    that lasts ``adapt_after_seconds`` is a new level: the model takes the last day's
    level as normal and the episode resolves (alerted once). While an episode is open
    the model learns nothing; otherwise each window teaches it at most its ``cap``.

    Each closed window's baseline (customers, expected, upper) is kept for
    :meth:`drain_baselines` (the dashboards' "normal" band), unless ``keep_baselines``
    is false: a watch whose baselines nobody drains (a pattern's) would keep one per
    window for as long as it lives. A quiet run learned in one step (:meth:`advance`)
    has baselines for its last day only.

    The examples and words of open windows (:meth:`add_context`) are kept whole for the
    ``max_context_windows`` windows that close first, one example and ten words for ten times as many,
    none beyond: a backlog read in a few batches holds weeks of windows ahead of the
    watermark, and the watch's state must stay small enough for one message of the
    worker's table.

    Examples
    --------
    >>> watch = VolumeWatch("reports", 3600, SeasonalRate(min_windows=24), min_customers=5)
    >>> for h in range(24 * 7):
    ...     _ = watch.update(h * 3600, 10, 10)
    >>> watch.advance(24 * 7 * 3600)
    []
    >>> [(e.event, e.scale, e.detected_at) for e in watch.update(24 * 7 * 3600, 60, 55, at=24 * 7 * 3600 + 900)]
    [('opened', 3600, 605700)]
    >>> _ = watch.update(24 * 7 * 3600 + 3600, 3, 3)
    >>> watch.advance(24 * 7 * 3600 + 3600)  # the spike window closes: same episode, no news
    []
    >>> [(e.event, e.window_start) for e in watch.advance(24 * 7 * 3600 + 7200)]  # the next ended quiet
    [('resolved', 608400)]
    """

    #: read by instances pickled before it was an argument (they kept baselines)
    keep_baselines: bool = True
    #: read by instances pickled before it was an argument
    max_context_windows: int = 48
    #: read by instances pickled before it was an argument (``None``: half ``alert_score``)
    resolve_score: float | None = None
    #: the last window whose level the watch took from an unusual run (:meth:`_adapt`, or
    #: days unusual without alerting); read as ``None`` by instances pickled before it existed
    raised_at: int | None = None
    #: a learned level falling (:meth:`_fall_on`): days of the fall so far (0: none), their
    #: customers, and windows closed since its level was last lowered
    fall_days: int = 0
    fall_customers: float = 0.0
    fall_windows: int = 0

    def __init__(
        self,
        key: str,
        window_seconds: int,
        detector: SeasonalRate | SpikeDetector | None = None,
        alert_score: float = 0.4,
        critical_score: float = 0.8,
        min_customers: int = 5,
        keep_baselines: bool = True,
        scales: tuple[int, ...] = DEFAULT_SCALES,
        min_ratio: float = 2.0,
        max_log10: float = 10.0,
        adapt_after_seconds: int = 4 * 86400,
        update_step: float = 0.1,
        protect_p: float = 0.01,
        dormant_after_seconds: int = 28 * 86400,
        max_context_windows: int = 48,
        resolve_score: float | None = None,
    ) -> None:
        self.key = key
        self.window_seconds = window_seconds
        if not isinstance(detector, SeasonalRate):
            # a SpikeDetector (the single-scale watch's model) gives its warm-up only; alone,
            # three days: a new area's first days show its daily peaks for the first time
            detector = SeasonalRate(min_windows=detector.min_windows if detector is not None else 72)
        self.detector: SeasonalRate = detector
        self.alert_score = alert_score
        self.critical_score = critical_score
        self.min_customers = min_customers
        self.keep_baselines = keep_baselines
        self.scales = scales
        self.min_ratio = min_ratio
        self.max_log10 = max_log10
        self.adapt_after_seconds = adapt_after_seconds
        self.update_step = update_step
        self.resolve_score = resolve_score
        self.protect_p = protect_p
        #: closed windows in a row whose spans were unusual (less likely than ``protect_p``)
        self.protected_run = 0
        self.dormant_after_seconds = dormant_after_seconds
        self.max_context_windows = max_context_windows
        #: the last closed window with a customer
        self.last_busy: int | None = None
        #: closed windows in a row whose longest span was improbably low
        self.low_run = 0
        #: windows per scale, shortest first
        self.spans: list[int] = sorted({max(1, s // window_seconds) for s in scales})
        #: each scale's dispersion (variance over mean of its sums), learned outside episodes
        self.dispersion: list[float] = [1.0] * len(self.spans)
        #: the last closed windows, oldest first: ``(window, customers, sums)``, where ``sums``
        #: are running totals (since the watch began) of customers, customers up to each
        #: window's cap, tickets and expected customers: a span's sums are two subtractions
        self.recent: deque[tuple[int, int, _Sums]] = deque(maxlen=max(self.spans[-1], 24) + 1)
        self.episode: Episode | None = None
        #: scale (windows) of the evidence the open episode last reported
        self.episode_scale = 1
        self.totals: dict[int, tuple[int, int]] = {}
        self.learned_through: int | None = None
        #: ``(window, customers, expected, upper)`` of each window closed since the last
        #: :meth:`drain_baselines`: the "normal" band dashboards draw.
        self.baselines: list[tuple[int, int, float, float]] = []
        #: window -> (examples ``[id, customer, text]``, subject word counts) of open windows
        self.context: dict[int, tuple[list[list[str]], Counter[str]]] = {}
        #: releases, fixes, docs and default changes of this key, newest last (bounded)
        self.product_events: list[dict[str, Any]] = []

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "spans" in state:
            self.__dict__.update(state)
            return
        # A single-scale watch pickled by an earlier version: the same key, counts and
        # context, its level as this model's, its open episode carried on.
        old_detector, tracker = state.get("detector"), state.get("tracker")
        self.__init__(  # type: ignore[misc]
            state["key"],
            state["window_seconds"],
            alert_score=state.get("alert_score", 0.4),
            critical_score=state.get("critical_score", 0.8),
            min_customers=state.get("min_customers", 5),
            keep_baselines=state.get("keep_baselines", True),
        )
        for name in ("totals", "learned_through", "baselines", "context", "product_events"):
            if name in state:
                setattr(self, name, state[name])
        level = getattr(old_detector, "_level", None)
        if level is not None:
            self.detector.relevel_to(level, getattr(old_detector, "_n", 0))
        self.episode = getattr(tracker, "episode", None)

    # --- what the stream tells it ------------------------------------------------------

    def update(self, window: int, tickets: int, customers: int, at: int | None = None) -> list[SpikeEvent]:
        """Take a (partial or final) total of one open window; return the events it causes.

        ``at``: the event time of the newest ticket counted (the ``detected_at`` of an
        episode this total opens); without it, the window's end.
        """
        if self.learned_through is not None and window <= self.learned_through:
            return []  # a late update of a window already closed and learned
        old = self.totals.get(window, (0, 0))
        self.totals[window] = (max(old[0], tickets), max(old[1], customers))
        if self.learned_through is not None and window > self.learned_through + 2 * self.window_seconds:
            # Far ahead of the closed windows: a backlog being caught up. It is judged when
            # it closes, in order; judged now, it would stretch an open episode over the
            # windows between, which then could not end it.
            return []
        return self._judge(window, closed=False, at=at)

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
        if len(self.context) > self.max_context_windows:
            self._thin_context()

    def _thin_context(self) -> None:
        """Keep the context of the windows that close first; thin, then drop, that of the others.

        A backlog read in a few batches holds weeks of windows ahead of the watermark:
        their examples would grow the state past what one changelog message carries (the
        worker's producer refused a 2.3 MB watch and stopped). Past the first
        ``max_context_windows`` a window keeps one example and its ten most frequent words; past ten times
        as many, nothing (its alert, if any, shows no example).
        """
        windows = sorted(self.context)
        for window in windows[self.max_context_windows :]:
            kept, counts = self.context[window]
            if len(kept) > 1 or len(counts) > 10:
                self.context[window] = (kept[:1], Counter(dict(counts.most_common(10))))
        for window in windows[10 * self.max_context_windows :]:
            del self.context[window]

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

    def advance(self, watermark: int, sleep: bool = False) -> list[SpikeEvent]:
        """Close, judge and learn every window that ended at or before ``watermark``.

        A run of windows that cannot change anything (the watch :attr:`asleep` at its
        start, and no total in it) is learned in one step (:meth:`_learn_quiet_run`).
        With ``sleep``, an asleep watch with no total to come stops where it fell asleep
        instead: its owner (:class:`pipeline.patterns.watch.PatternWatch`) catches it up
        when its key is busy again. Either way the runs start where the watch fell asleep
        and end before its next total, so the result does not depend on how many windows
        one call covers.
        """
        last = watermark - self.window_seconds  # the start of the last window that ended
        if self.learned_through is not None:
            first = self.learned_through + self.window_seconds
        elif self.totals:
            first = min(self.totals)
        else:
            return []
        events: list[SpikeEvent] = []
        w = first
        while w <= last:
            if w not in self.totals and self._quiet_day():
                ahead = [t for t in self.totals if t <= last]
                if sleep and not ahead:
                    break
                end = min(ahead) - self.window_seconds if ahead else last
                self._learn_quiet_run(w, end)
                w = end + self.window_seconds
                continue
            if self.episode is None and w not in self.totals and self.detector.ready:
                self._learn_empty(w)  # judging it says nothing (see _judge)
            else:
                events += self._judge(w, closed=True)
                self._learn(w)
            w += self.window_seconds
        return events

    @property
    def asleep(self) -> bool:
        """Whether closing windows can only teach it quiet ones until a total comes.

        No open episode, no total of a window not yet learned, and no customer in the
        last ``spans[-1]`` closed windows (a day, by default): every window it closes next
        is judged as nothing (see :meth:`_judge`) and learned as a zero.

        Examples
        --------
        >>> watch = VolumeWatch("reports/odd", 3600, SeasonalRate(min_windows=24), keep_baselines=False)
        >>> _ = watch.update(0, 1, 1)
        >>> watch.advance(48 * 3600, sleep=True), watch.asleep, watch.learned_through // 3600
        ([], True, 24)
        >>> stepped = VolumeWatch("reports/odd", 3600, SeasonalRate(min_windows=24), keep_baselines=False)
        >>> _ = stepped.update(0, 1, 1)
        >>> for h in range(24 * 30):
        ...     _ = stepped.advance((h + 1) * 3600)
        >>> _ = watch.advance(24 * 30 * 3600)  # caught up: 695 quiet windows, most at once
        >>> watch.detector.learned == stepped.detector.learned == 24 * 30
        True
        >>> abs(watch.detector.expected(24 * 30 * 3600) / stepped.detector.expected(24 * 30 * 3600) - 1) < 1e-9
        True
        """
        return not self.totals and self._quiet_day()

    def _quiet_day(self) -> bool:
        """No open episode, and no customer in the last ``spans[-1]`` closed windows."""
        span = self.spans[-1]
        if self.episode is not None or self.learned_through is None or len(self.recent) < span:
            return False
        # the deque keeps one window more than the longest span: with ``span`` kept, none
        # has been let go since the sums began at zero
        before = self.recent[-1 - span][2].customers if len(self.recent) > span else 0
        return self.recent[-1][2].customers == before

    def drain_baselines(self) -> list[tuple[int, int, float, float]]:
        """The closed windows' baselines gathered so far, handed over once."""
        out, self.baselines = self.baselines, []
        return out

    @property
    def tracker(self) -> VolumeWatch:
        """This watch (it tracks its episode itself): ``watch.tracker.episode`` as before."""
        return self

    # --- the model of normal -------------------------------------------------------------

    def _cap(self, expected: float) -> float:
        # the top of a window's normal band: what one window may add to a longer span,
        # and teach the model
        return expected + 2.0 * math.sqrt(self.dispersion[0] * expected) + 1.0

    def _learn(self, window: int) -> None:
        tickets, customers = self.totals.pop(window, (0, 0))
        if self.context:
            self.context.pop(window, None)
        detector, recent = self.detector, self.recent
        expected = detector.expected(window)
        cap = expected + 2.0 * math.sqrt(self.dispersion[0] * expected) + 1.0  # _cap, inlined
        protected = False
        if detector.ready:
            if self.keep_baselines:
                upper = expected + 3.0 * math.sqrt(self.dispersion[0] * expected)
                self.baselines.append((window, customers, round(expected, 3), round(upper, 3)))
            if self.episode is None:
                protected = self._learn_dispersion(window, customers, expected, cap)
        total = recent[-1][2] if recent else _NONE
        recent.append(
            (
                window,
                customers,
                _Sums(
                    total.customers + customers,
                    total.capped + min(customers, cap),
                    total.tickets + tickets,
                    total.expected + expected,
                ),
            )
        )
        self.learned_through = window
        if customers:
            if self.last_busy is not None and window - self.last_busy > self.dormant_after_seconds:
                # back after a long silence (a topic renamed away, then reused): a new key,
                # that warms up again rather than alerting on its first questions
                self.detector = cast(SeasonalRate, self.detector.clone())
                self.dispersion = [1.0] * len(self.spans)
                self.protected_run = self.fall_days = 0
                self.raised_at = None
            self.last_busy = window
        if self.episode is not None:
            self.protected_run += 1  # an episode's windows, as unusual ones, are not normal
            return
        self._teach(window, protected, min(customers, cap) if self.detector.ready else customers)

    def _teach(self, window: int, protected: bool, taught: float) -> None:
        """After a window closed outside an episode: a new level, a fall, or ``taught`` learned."""
        # a run of unusual windows that lasts (short episodes and unusual windows between) is a new level
        self.protected_run = self.protected_run + 1 if protected else 0
        if self.protected_run * self.window_seconds >= self.adapt_after_seconds:
            # unusual for days without alerting (a rise smaller than min_ratio): the new normal
            self._relevel(window)
            self.protected_run = 0
        elif self._fell(window):
            # far below normal for a day: a surge's level taken as normal, and over (the day
            # is the level again), or a learned level that fell (down only as far as the day
            # demands), rather than weeks of numbness while the rates fade
            self._relevel(window, down=True)
        elif self.fall_days and self._fall_on(window):
            pass  # the fall went on for another day: lowered again
        elif not protected:
            self.detector.learn_count(window, taught)

    def _learn_empty(self, window: int) -> None:
        """:meth:`_learn` of a window with no customer, no episode open and the model warm.

        Most windows a watch closes (87 % of them over SUMO's topics: the day after each
        question): the same steps, the same arithmetic in the same order, without what
        only a busy window or an open episode needs.
        """
        self.context.pop(window, None)
        detector, recent = self.detector, self.recent
        expected = detector.expected(window)
        cap = expected + 2.0 * math.sqrt(self.dispersion[0] * expected) + 1.0
        if self.keep_baselines:
            upper = expected + 3.0 * math.sqrt(self.dispersion[0] * expected)
            self.baselines.append((window, 0, round(expected, 3), round(upper, 3)))
        protected = self._learn_dispersion(window, 0, expected, cap)
        total = recent[-1][2] if recent else _NONE
        recent.append((window, 0, _Sums(total.customers, total.capped, total.tickets, total.expected + expected)))
        self.learned_through = window
        self._teach(window, protected, 0)

    def _learn_quiet_run(self, first: int, last: int) -> None:
        """Learn the windows ``first`` to ``last`` (starts), none with a customer, as closing them one by one would.

        Called while :meth:`_quiet_day` holds and no window of the run has a total:
        judging them says nothing, and each teaches the model a zero. When the run is
        long and nothing in it can relevel the model (:meth:`_can_skip`), all but the last
        ``recent.maxlen`` windows are learned in closed form:

        - the rates exactly (:meth:`SeasonalRate.learn_quiet`);
        - each scale's dispersion approximately: stepping moves it towards the span's
          expected customers (its residual when none came) by ``rate`` a window, never
          below 1; here that target is taken to fall geometrically from what the span
          expected as the run began to what it expects at its end, which has a closed
          form (the weekdays' ups and downs between are not followed: within a few
          percent of stepping in tests/test_detectors_quiet.py);
        - ``low_run`` and ``protected_run`` stay 0 (no span is improbably low or high).

        The last windows ``recent`` keeps are taught to the rates one by one, so that
        :attr:`recent` holds them with the expected customers stepping gives them (their
        running sums go on from the windows before the run: only differences of two kept
        entries are ever read). Otherwise, and for short runs, it steps a day at a time
        and looks again.
        """
        day = max(1, 86400 // self.window_seconds)
        w = first
        while w <= last:
            windows = (last - w) // self.window_seconds + 1
            if windows > 12 and self._can_skip():  # shorter: stepping costs less
                self._skip_quiet(w, windows)
                return
            for _ in range(min(windows, day)):
                if self.detector.ready:
                    self._learn_empty(w)
                else:
                    self._learn(w)
                w += self.window_seconds

    def _skip_quiet(self, first: int, skipped: int) -> None:
        """Learn ``skipped`` quiet windows from ``first`` in closed form (see :meth:`_learn_quiet_run`)."""
        ws = self.window_seconds
        rate = 1.0 / (14 * 86400 / ws)  # as in _learn_dispersion
        newest = self.recent[-1][2].expected
        start = [newest - self.recent[-1 - span][2].expected for span in self.spans]
        # all but the last windows at once; those one by one into ``recent``, with what the
        # model expected of each as it learned it (the spans of the windows learned next read them)
        kept = min(skipped, cast(int, self.recent.maxlen))
        self.detector.learn_quiet(first, skipped - kept, ws)
        total = self.recent[-1][2]
        for window in range(first + (skipped - kept) * ws, first + skipped * ws, ws):
            expected = self.detector.expected(window)
            if self.keep_baselines:  # the normal band of the last windows (the dashboards draw a gap before)
                upper = expected + 3.0 * math.sqrt(self.dispersion[0] * expected)
                self.baselines.append((window, 0, round(expected, 3), round(upper, 3)))
            self.detector.learn_count(window, 0)
            total = total._replace(expected=total.expected + expected)
            self.recent.append((window, 0, total))
        self.learned_through = first + (skipped - 1) * ws
        newest = self.recent[-1][2].expected
        keep = 1.0 - rate
        for i, span in enumerate(self.spans):
            # the span's residual (its expected customers) falls geometrically from what it was
            # to what it is: phi' = keep * phi + rate * target, in closed form, never below 1
            # (exact while the target falls: once at 1 it stays)
            end = newest - self.recent[-1 - span][2].expected
            t0, t1 = (min(n * n / max(n, 1e-3), 25.0) for n in (start[i], end))
            fall = (t1 / t0) ** (1.0 / skipped) if t0 > 0 and t1 > 0 else 0.0
            if abs(keep - fall) > 1e-12:
                pulled = rate * t0 * (keep**skipped - fall**skipped) / (keep - fall)
            else:
                pulled = rate * t0 * skipped * keep ** (skipped - 1)
            self.dispersion[i] = max(1.0, keep**skipped * self.dispersion[i] + pulled)
        self.low_run = self.protected_run = 0
        for window in [c for c in self.context if c <= self.learned_through]:
            del self.context[window]

    def _can_skip(self) -> bool:
        """Whether the next quiet windows can be learned in closed form (:meth:`_learn_quiet_run`).

        The model is warm, no fall is going on (:meth:`_fall_on` may lower the level at
        the end of each quiet day), the recent windows are all kept (a day with no
        customer), and no span can be improbably low however long the quiet lasts: :meth:`_fell` needs a day's span to
        expect more than ``4 * phi >= 4`` customers; the windows already kept and those
        to come (each at most :meth:`SeasonalRate.quiet_ceiling`) expect less.
        """
        span = self.spans[-1]
        if not self.detector.ready or self.low_run or self.fall_days or not self._quiet_day():
            return False
        if len(self.recent) != self.recent.maxlen:
            return False
        ceiling = sorted(self.detector.quiet_ceiling(), reverse=True)
        # at most what the ``j`` windows of the run in a span can expect: a day of hours
        # visits each hour of day once, so the ``j`` highest hours; else ``j`` times the highest
        hourly = self.window_seconds == 3600 and span <= 24
        coming = [sum(ceiling[:j]) if hourly else j * ceiling[0] for j in range(span + 1)]
        # a span that ends in the run: the newest ``n`` kept windows, then ``span - n`` of the run
        newest = self.recent[-1][2].expected
        kept = [newest - self.recent[-1 - n][2].expected for n in range(span + 1)]
        return max(kept[n] + coming[span - n] for n in range(span + 1)) <= 4.0

    def _fell(self, window: int) -> bool:
        """Whether the longest span ending with ``window`` has been improbably low for a day."""
        span, recent = self.spans[-1], self.recent
        if not self.detector.ready or len(recent) < span:
            self.low_run = 0
            return False
        # the span ending with ``window``, the newest closed: two entries of the running sums
        # (as :meth:`_before` reads them; inlined: called for every window closed)
        last = recent[-1][2]
        first = recent[-1 - span][2] if span < len(recent) else _NONE
        customers, expected = last.customers - first.customers, last.expected - first.expected
        phi = self.dispersion[-1]
        low = customers < expected - 2.0 * math.sqrt(phi * expected) and (
            _below(customers, expected, phi) < self.protect_p
        )
        self.low_run = self.low_run + 1 if low else 0
        if self.low_run * self.window_seconds >= 86400:
            self.low_run = 0
            return True
        return False

    def _learn_dispersion(self, window: int, customers: int, expected: float, cap: float) -> bool:
        """Learn each scale's dispersion from the spans ending with ``window``; whether one is unusual.

        A span less likely than ``protect_p`` (and its window) teaches nothing: a surge
        that builds over days without alerting yet must not become normal on the way.
        """
        rate = 1.0 / (14 * 86400 / self.window_seconds)  # about two weeks of windows
        recent, dispersion = self.recent, self.dispersion
        kept = len(recent)
        # every window before ``window`` closed (windows close in order): each span's sums are
        # two entries of the running sums, as :meth:`_before` reads them (inlined: called for
        # every window closed, at every scale)
        in_order = self.learned_through is not None and window - self.window_seconds <= self.learned_through
        sums = []
        for i, span in enumerate(self.spans):
            if kept < span - 1:
                break
            n = min(span - 1, kept)
            if not in_order:
                before = self._before(window, span - 1)
                b_customers, b_capped, b_expected = before.customers, before.capped, before.expected
            elif n <= 0:
                b_customers, b_capped, b_expected = 0, 0.0, 0.0
            else:
                last = recent[-1][2]
                first = recent[-1 - n][2] if n < kept else _NONE
                b_customers = last.customers - first.customers
                b_capped, b_expected = last.capped - first.capped, last.expected - first.expected
            seen, normal = min(customers, cap) + b_capped, expected + b_expected
            sums.append((seen, normal))
            # only a span with as many customers as could alert: a level learned too low
            # (a topic that was nearly silent) must still learn from its next few customers
            enough = customers + b_customers >= self.min_customers
            if enough and seen > normal + math.sqrt(dispersion[i] * normal):
                phi = dispersion[i]
                if poisson_sf(seen / phi, normal / phi) < self.protect_p:
                    return True
        for i, (seen, normal) in enumerate(sums):
            phi = dispersion[i]
            if seen < normal - math.sqrt(phi * normal) and _below(seen, normal, phi) < self.protect_p:
                continue  # improbably low (a surge's level not yet let go): not this scale's noise
            resid = min((seen - normal) ** 2 / max(normal, 1e-3), 25.0)  # one odd span moves it a little
            dispersion[i] = max(1.0, phi + rate * (resid - phi))
        return False

    # --- judging -----------------------------------------------------------------------

    def _before(self, window: int, count: int) -> _Sums:
        """The sums of the ``count`` windows before ``window`` (closed, or still open)."""
        recent = self.recent
        if self.learned_through is not None and window - self.window_seconds <= self.learned_through:
            # every window before it closed (the call of each window learned, several a window):
            # two entries of the running sums
            n = min(count, len(recent))
            if n <= 0:
                return _NONE
            last = recent[-1][2]
            first = recent[-1 - n][2] if n < len(recent) else _NONE
            return _Sums(
                last.customers - first.customers,
                last.capped - first.capped,
                last.tickets - first.tickets,
                last.expected - first.expected,
            )
        customers, capped, tickets, expected = 0, 0.0, 0, 0.0
        w = window - self.window_seconds
        closed = self.learned_through if self.learned_through is not None else w - count * self.window_seconds
        while count > 0 and w > closed:  # windows still open before this one
            t, c = self.totals.get(w, (0, 0))
            e = self.detector.expected(w)
            customers, tickets, expected = customers + c, tickets + t, expected + e
            capped += min(c, self._cap(e))
            w -= self.window_seconds
            count -= 1
        n = min(count, len(self.recent))
        if n > 0:
            last = self.recent[-1][2]
            # the deque keeps one window more than the longest span: when the span takes
            # every window kept, none has been let go yet, and the totals began at zero
            first = self.recent[-1 - n][2] if n < len(self.recent) else _NONE
            customers += last.customers - first.customers
            capped += last.capped - first.capped
            tickets += last.tickets - first.tickets
            expected += last.expected - first.expected
        return _Sums(customers, capped, tickets, expected)

    def _evidence(self, window: int) -> list[_Evidence]:
        """Each scale's evidence for the spans ending with ``window`` (scales that cannot alert left out)."""
        tickets, customers = self.totals.get(window, (0, 0))
        expected = self.detector.expected(window)
        cap = self._cap(expected)
        out = []
        for i, span in enumerate(self.spans):
            before = self._before(window, span - 1)
            raw = customers + before.customers
            seen = (customers if span == 1 else min(customers, cap)) + before.capped
            normal = expected + before.expected
            if raw < self.min_customers or raw < self.min_ratio * normal:
                continue  # too few customers, or too small a rise, to matter (however unlikely)
            phi = self.dispersion[i]
            p = min(1.0, poisson_sf(seen / phi, normal / phi) * len(self.spans))
            score = 1.0 if p <= 0 else min(1.0, max(0.0, -math.log10(p) / self.max_log10))
            out.append(_Evidence(span, raw, tickets + before.tickets, round(normal, 3), p, round(score, 4)))
        return out

    def _judge(self, window: int, closed: bool, at: int | None = None) -> list[SpikeEvent]:
        if not self.detector.ready:
            return []  # warming up: a new area's first day is its normal, not a spike
        ep = self.episode
        if ep is not None and window < ep.last:
            return []  # an older window, replayed: it was judged already
        if ep is None and window not in self.totals:
            return []  # no customer in it: no span ending here holds more than the one before
        evidence = self._evidence(window)
        best = max(evidence, key=lambda e: (e.score, -e.scale), default=None)
        alerting = best is not None and best.score >= self.alert_score
        if best is not None and alerting:
            if ep is None:
                ep = self.episode = Episode(self.key, window, window, best.score, best.customers, best.expected, [])
                self.episode_scale = best.scale
                return [self._event("opened", window, best, at, closed)]
            ep.last = window
            grown = best.score >= ep.peak_score + self.update_step
            critical = best.score >= self.critical_score > ep.peak_score
            if grown or critical:
                ep.peak_score, ep.observed, ep.expected = best.score, best.customers, best.expected
                self.episode_scale = best.scale
                return [self._event("updated", window, best, at, closed)]
            if closed and window - ep.start >= self.adapt_after_seconds:
                return self._adapt(window)
            return []
        if not closed or ep is None or window <= ep.last:
            return []
        held = next((e for e in evidence if e.scale == self.episode_scale), None)
        if held is not None and held.score >= self._resolve_below():
            # the episode's own scale still well above normal, if no longer alerting: the same
            # incident goes on (resolved here, it would open again at the next busy hour: one
            # incident, two or three alerts); a burst's hour that is over ends its burst
            if window - ep.start >= self.adapt_after_seconds:
                return self._adapt(window)
            return []
        return [self._resolve(window)]

    def _resolve_below(self) -> float:
        return self.alert_score / 2 if self.resolve_score is None else self.resolve_score

    def _adapt(self, window: int) -> list[SpikeEvent]:
        # a level that has lasted: normal from now on (the last day's, this window's included)
        day = max(1, 86400 // self.window_seconds)
        windows = [(w, float(c)) for w, c, _ in list(self.recent)[-(day - 1) :]]
        windows.append((window, float(self.totals.get(window, (0, 0))[1])))
        self.detector.relevel(windows)
        self.raised_at, self.fall_days = window, 0  # a fall before it says nothing of this level
        event = self._resolve(window)
        self.recent.clear()  # their expected counts were of the old level: spans start afresh
        return [event]

    def _relevel(self, window: int, down: bool = False) -> None:
        """Take the last day's windows (closed, ``window`` the newest) as the level.

        With ``down`` (the day was improbably low, :meth:`_fell`): when the level is one the
        watch raised itself from an unusual run (:meth:`_adapt`, or days unusual without
        alerting) within the rates' memory (``hour_visits`` days), the surge is over and the
        day's count is the level again. Otherwise the level was learned over weeks, and one
        low day says it fell, not that it fell to that day's count: the level becomes the
        highest the count allows (:meth:`_fall_level`), and each next day below it lowers
        it again (:meth:`_fall_on`). A day with no question (a collection gap, a catch-all
        topic emptied for a day) taken as the level made every next ordinary day of the
        topic a spike (SUMO, 2025: a topic of 10 questions a day relevelled to 0.02, then
        alerted on 5 to 15 for ten days).
        """
        day = max(1, 86400 // self.window_seconds)
        windows = [(w, float(c)) for w, c, _ in list(self.recent)[-day:]]
        at_least = 0.0
        memory = self.detector.hour_visits * 86400
        self.fall_days = 0
        if down and (self.raised_at is None or window - self.raised_at > memory):
            self.fall_days, self.fall_customers, self.fall_windows = 1, sum(c for _, c in windows), 0
            at_least = self._fall_level()
        elif not down:
            self.raised_at = window
        self.detector.relevel(windows, at_least=at_least)
        self.recent.clear()  # their expected counts were of the old level: spans start afresh

    def _fall_level(self) -> float:
        """The highest level a day that the fall's days' customers allow (see :meth:`_relevel`).

        ``n`` days with ``S`` customers in all: the level ``L`` a day at which ``S`` is at the
        bottom of the normal band of ``n`` days, ``n L - 2 sqrt(phi n L) = S`` (``phi``: the day
        scale's dispersion): ``(sqrt(phi) + sqrt(phi + S))^2 / n``. No customer in a day keeps
        about four a day, in ten days about 0.4; eight in a day keep about sixteen.
        """
        phi = self.dispersion[-1]
        return (math.sqrt(phi) + math.sqrt(phi + self.fall_customers)) ** 2 / self.fall_days

    def _fall_on(self, window: int) -> bool:
        """Once a day of a fall: lower the level again when the day was below it; whether it did.

        The fall ends at the first day at or above its level (the level holds), or once its
        level is under ``phi`` a day (the day scale's dispersion): a day with no customer is
        then the likeliest day, and the rates learning it say the rest (a key that fell
        silent can then learn its quiet at once, :meth:`_can_skip`). A day below whose bound
        would not lower the level yet adds its evidence all the same.
        """
        self.fall_windows += 1
        day = max(1, 86400 // self.window_seconds)
        if self.fall_windows < day or len(self.recent) < day:
            return False
        self.fall_windows = 0
        windows = [(w, float(c)) for w, c, _ in list(self.recent)[-day:]]
        seen = sum(c for _, c in windows)
        expected = sum(self.detector.expected(w) for w, _ in windows)
        self.fall_days += 1
        self.fall_customers += seen
        if seen >= expected:
            self.fall_days = 0
            return False
        level = self._fall_level()
        if level < self.dispersion[-1]:
            self.fall_days = 0
        if level >= expected:
            return False
        # the spans' expected counts stay as they were (a little high, for a day): a key that
        # fell silent keeps the whole of :attr:`recent`, and so can learn its quiet at once
        self.detector.relevel(windows, at_least=level)
        return True

    def _resolve(self, window: int) -> SpikeEvent:
        before = self._before(window, self.episode_scale - 1)
        tickets, customers = self.totals.get(window, (0, 0))
        now = _Evidence(
            self.episode_scale,
            customers + before.customers,
            tickets + before.tickets,
            round(self.detector.expected(window) + before.expected, 3),
            1.0,
            0.0,
        )
        event = self._event("resolved", window, now, None, True)
        self.episode = None
        return event

    def _event(self, kind: str, window: int, evidence: _Evidence, at: int | None, closed: bool) -> SpikeEvent:
        ep = cast(Episode, self.episode)
        level = "critical" if ep.peak_score >= self.critical_score else "warning"
        examples, terms = self.context.get(window, ([], Counter()))
        end = window + self.window_seconds
        return SpikeEvent(
            event=kind,
            episode_id=ep.id,
            key=self.key,
            window_start=window,
            window_end=end,
            tickets=evidence.tickets,
            customers=evidence.customers,
            expected=evidence.expected,
            score=evidence.score,
            p_value=evidence.p_value,
            level="resolved" if kind == "resolved" else level,
            examples=tuple((ticket_id, text) for ticket_id, _, text in examples),
            top_terms=tuple(term for term, _ in terms.most_common(8)),
            recent_product_events=self.recent_product_events(window),
            scale=evidence.scale * self.window_seconds,
            detected_at=end if at is None or closed else min(max(at, window), end),
        )


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


def key_watch(
    area: str,
    case_type: str,
    window_seconds: int,
    min_customers: int,
    case_type_min_customers: int,
    whole: str = "all",
    **options: Any,
) -> VolumeWatch:
    """The watch of an area (``case_type`` ``whole``) or of one case type in it, as the worker's
    spike watch and the offline backtest both make it.

    An area is judged at every scale (a burst, a surge); a case type within it at the
    window's scale only: a case type's slow surge is its area's surge too, and on generated
    streams the case types' longer spans mostly added false alarms (a busy weekday hour of
    bugs, a day that held a burst).

    >>> key_watch("reports", "all", 3600, 5, 10).scales, key_watch("reports", "bug", 3600, 5, 10).scales
    ((3600, 21600, 86400), (3600,))
    """
    if case_type == whole:
        return VolumeWatch(area, window_seconds, min_customers=min_customers, **options)
    options.setdefault("scales", (window_seconds,))
    return VolumeWatch(f"{area}/{case_type}", window_seconds, min_customers=case_type_min_customers, **options)
