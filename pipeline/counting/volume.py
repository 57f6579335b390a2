"""Ticket volume per window and key: the state design behind exact counts.

How a ticket is counted exactly once, with at-least-once delivery and any number
of workers:

1. ``tickets`` is keyed by ticket id; the validating agent re-keys every good
   ticket by customer id onto an internal topic. All copies of one ticket, and all
   tickets of one customer, then live in one partition, owned by one worker.
2. The counting agent keeps one durable fact per ticket, "ticket X was first seen,
   in window W, with key K, from customer C", in a table whose key carries its
   partition. Counts are *derived* from those facts (:class:`PartitionVolume`),
   never incremented in durable state: replaying a ticket after a crash finds the
   fact already there and changes nothing, and a recovered worker rebuilds the same
   counts from the changelog. Distinct customers add up across partitions, because a
   customer lives in exactly one.
3. Each partition publishes its counts per window and key (a "partial"); the
   merging agent keeps, per window and key, the latest partial of every partition
   (counts of a partition only grow, so it keeps the largest: replays and reordering
   change nothing) and writes the sum to InfluxDB as one point stamped at the window
   start, so rewriting a window replaces the point.

Every effect (a send, an InfluxDB write) happens before the state that records it,
and offsets are committed after both: a crash in between repeats an idempotent
effect, never skips one.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.messages import Fact
from pipeline.runtime.watermarks import low_watermark

__all__ = [
    "ALL",
    "COUNTED",
    "DUPLICATE",
    "TOO_LATE",
    "Fact",
    "IdleSources",
    "PartitionVolume",
    "VolumeKey",
    "VolumeTotals",
    "volume_keys",
    "window_start",
]

#: Tag value of the roll-ups: ``case_type=all,severity=all`` counts every ticket of the
#: area once, with its distinct customers; ``case_type=bug,severity=all`` every bug of it.
ALL = "all"

#: ``(area, case_type, severity)``
VolumeKey = tuple[str, str, str]


def window_start(ts: float, window_seconds: int) -> int:
    """Start (epoch seconds) of the window holding ``ts``; windows are aligned to the epoch.

    >>> window_start(7199.9, 3600), window_start(7200, 3600)
    (3600, 7200)
    """
    return int(ts // window_seconds) * window_seconds


def volume_keys(area: str, case_type: str, severity: str) -> tuple[VolumeKey, VolumeKey, VolumeKey]:
    """The keys one ticket counts under: its area's roll-up, its area and case type, its full key.

    The roll-ups carry their distinct customers (which do not add up from the finer
    keys); the spike watch runs on the first two.

    >>> volume_keys("billing", "bug", "high")
    (('billing', 'all', 'all'), ('billing', 'bug', 'all'), ('billing', 'bug', 'high'))
    """
    return (area, ALL, ALL), (area, case_type, ALL), (area, case_type, severity)


@dataclass
class _Count:
    tickets: int = 0
    customers: set[str] = field(default_factory=set)
    #: event time of the newest ticket counted (0: not known, a fact stored before it was kept)
    newest: int = 0


#: What :meth:`PartitionVolume.add` made of a ticket.
COUNTED, DUPLICATE, TOO_LATE = "counted", "duplicate", "too_late"


class PartitionVolume:
    """Counts of one partition, derived from the tickets first seen in it.

    It knows which ticket ids it has counted (so a re-sent or replayed ticket is a
    duplicate), and which durable chunk holds each fact (so a chunk can be deleted
    once all its windows are closed).

    Parameters
    ----------
    window_seconds
        Window size.
    allowed_lateness_seconds
        A ticket whose window starts more than this before the watermark is too late:
        it no longer changes counts, and the windows behind that line are closed (their
        tickets can be forgotten).
    sources
        How many source partitions (of ``tickets``) feed this one. With it, the
        watermark is the oldest of their newest windows (:meth:`hear`), and none is
        known until every source has been heard: a consumer reads partitions at
        different speeds, and a backlog read faster on one partition than on another
        must not make the slower one's tickets too late (a benchmark run lost a quarter
        of three days' tickets so, docs/benchmarks.md). Without it (``None``), the
        watermark is the newest window counted here (one source, or a test).

    Examples
    --------
    >>> v = PartitionVolume(3600, 3600)
    >>> v.add(Fact("t1", 0, "billing", "bug", "high", "c1"))
    'counted'
    >>> v.add(Fact("t2", 0, "billing", "other", "low", "c1")), v.add(Fact("t1", 0, "billing", "bug", "high", "c1"))
    ('counted', 'duplicate')
    >>> v.counts(0)[("billing", "all", "all")]
    (2, 1)
    >>> v.add(Fact("t3", 3 * 3600, "billing", "bug", "high", "c2"))  # moves the watermark
    'counted'
    >>> v.is_too_late(0), v.add(Fact("t4", 0, "billing", "bug", "high", "c3"))
    (True, 'too_late')
    >>> v.close_windows()
    [0]

    Fed by two source partitions, the one behind sets the line:

    >>> v = PartitionVolume(3600, 3600, sources=2)
    >>> v.add(Fact("a", 10 * 3600, "billing", "bug", "high", "c1"))
    'counted'
    >>> v.hear({"0": 10 * 3600})  # source 1 not heard yet: no line
    >>> v.add(Fact("b", 0, "billing", "bug", "high", "c2"))
    'counted'
    >>> v.hear({"0": 10 * 3600, "1": 3 * 3600})
    >>> v.is_too_late(2 * 3600), v.is_too_late(1 * 3600), v.close_windows()
    (False, True, [0])
    """

    def __init__(self, window_seconds: int, allowed_lateness_seconds: int, sources: int | None = None) -> None:
        self.window_seconds = window_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds
        self.sources = sources
        self.watermark: int | None = None  # the newest window counted here
        self.sources_watermark: int | None = None  # the oldest of the sources' newest windows
        self._windows: dict[int, dict[VolumeKey, _Count]] = defaultdict(dict)
        self._ids: dict[int, list[str]] = defaultdict(list)
        self._seen: set[str] = set()
        self._chunks: dict[str, int] = {}  # durable chunk key -> newest window in it

    def hear(self, marks: Mapping[str, int]) -> None:
        """How far each source partition has got (its newest window): the watermark, with ``sources``.

        It only rises: a source heard later at an older window changes nothing.
        """
        if self.sources is None:
            return
        low = low_watermark(marks, self.sources)
        if low is not None and (self.sources_watermark is None or low > self.sources_watermark):
            self.sources_watermark = low

    def is_too_late(self, window: int) -> bool:
        """Whether a ticket of ``window`` arrives after its window was closed."""
        mark = self.watermark if self.sources is None else self.sources_watermark
        return mark is not None and window < mark - self.allowed_lateness_seconds

    def add(self, fact: Fact) -> str:
        """Count a ticket unless it is a duplicate or too late; say which (``COUNTED``, ...)."""
        ticket_id, window, area, case_type, severity, customer, created = fact
        if ticket_id in self._seen:
            return DUPLICATE
        if self.is_too_late(window):
            return TOO_LATE
        if self.watermark is None or window > self.watermark:
            self.watermark = window
        self._count(ticket_id, window, area, case_type, severity, customer, created)
        return COUNTED

    def _count(
        self, ticket_id: str, window: int, area: str, case_type: str, severity: str, customer: str, created: int
    ) -> None:
        keys = self._windows[window]
        for key in volume_keys(area, case_type, severity):
            count = keys.get(key)
            if count is None:
                count = keys[key] = _Count()
            count.tickets += 1
            count.customers.add(customer)
            if created > count.newest:
                count.newest = created
        self._ids[window].append(ticket_id)
        self._seen.add(ticket_id)

    def record_chunk(self, chunk_key: str, facts: list[Fact]) -> None:
        """Note that ``facts`` (counted by :meth:`add`) are stored under ``chunk_key``."""
        self._chunks[chunk_key] = max(f.window for f in facts)

    def restore(self, chunk_key: str, rows: Iterable[Iterable[Any]]) -> None:
        """Count a chunk recovered from durable state (its facts as JSON arrays), in any order (no lateness check)."""
        facts = [Fact(*row) for row in rows]
        for ticket_id, window, area, case_type, severity, customer, created in facts:
            if ticket_id not in self._seen:
                self._count(ticket_id, window, area, case_type, severity, customer, created)
                if self.watermark is None or window > self.watermark:
                    self.watermark = window
        self.record_chunk(chunk_key, facts)

    def counts(self, window: int) -> dict[VolumeKey, tuple[int, int]]:
        """``{key: (tickets, distinct customers)}`` of one window."""
        return {key: (c.tickets, len(c.customers)) for key, c in self._windows.get(window, {}).items()}

    def newest(self, window: int) -> dict[VolumeKey, int]:
        """``{key: event time of the newest ticket}`` of one window (when an alert would have fired)."""
        return {key: c.newest for key, c in self._windows.get(window, {}).items()}

    @property
    def open_tickets(self) -> int:
        """How many tickets the open windows hold."""
        return len(self._seen)

    def windows(self) -> list[int]:
        """The open windows, oldest first."""
        return sorted(self._windows)

    def close_windows(self) -> list[int]:
        """Forget the windows behind the lateness line; return them (oldest first)."""
        closed = sorted(w for w in self._windows if self.is_too_late(w))
        for window in closed:
            del self._windows[window]
            self._seen.difference_update(self._ids.pop(window, []))
        return closed

    def expired_chunks(self) -> list[str]:
        """Durable chunks whose every window is closed: delete them, then forget them here."""
        expired = [key for key, newest in self._chunks.items() if self.is_too_late(newest)]
        for key in expired:
            del self._chunks[key]
        return expired


class IdleSources:
    """The tickets partitions a worker reads that have gone quiet, so that they stop holding windows open.

    Windows close by the oldest of the tickets partitions' newest windows
    (:meth:`PartitionVolume.hear`): a partition that brings no ticket for hours (a
    quiet helpdesk, more partitions than tickets an hour) would hold every window open
    for as long, and with them the spike watch's learning and the episodes' end. A
    partition read to its end that has brought nothing for ``idle_seconds`` is idle:
    its watermark follows the newest window any partition is known to have reached:
    this worker's, or another worker's as ``heard`` (:meth:`marks`) tells (as Flink's
    ``withIdleness``). A ticket it brings later counts as any other, unless
    it is later than the lateness behind every partition.

    Parameters
    ----------
    idle_seconds
        Quiet time (``clock`` seconds) after which a partition read to its end is idle;
        ``0`` never.
    clock
        Monotonic seconds (injected in tests).

    Examples
    --------
    >>> now = [0.0]
    >>> idle = IdleSources(60, clock=lambda: now[0])
    >>> idle.assign([0, 1])
    >>> idle.heard(0, 7200)
    >>> now[0] = 59.0
    >>> idle.quiet()
    []
    >>> now[0] = 61.0
    >>> idle.quiet()  # partition 0 was heard at 0.0 too
    [0, 1]
    >>> idle.marks(caught_up=[1])  # partition 1 is at its end: it follows partition 0
    {'1': 7200}
    >>> idle.marks(caught_up=[1])  # said once, until the front moves
    {}
    >>> idle.marks(caught_up=[0, 1], heard=[10800])  # another worker's partition is at 10800
    {'0': 10800, '1': 10800}
    """

    def __init__(self, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._last_heard: dict[int, float] = {}  # partition -> when it last brought a message
        self._newest: dict[int, int] = {}  # partition -> the newest window read on it
        self._reported: dict[int, int] = {}  # partition -> the watermark said for it while idle

    def assign(self, partitions: Iterable[int]) -> None:
        """The partitions this worker reads now; a new one's quiet time starts now."""
        owned = set(partitions)
        now = self.clock()
        for held in (self._last_heard, self._newest, self._reported):
            for partition in [p for p in held if p not in owned]:
                del held[partition]
        for partition in owned:
            self._last_heard.setdefault(partition, now)

    def heard(self, partition: int, window: int | None = None) -> None:
        """``partition`` brought messages; ``window``: the newest window of its good tickets."""
        self._last_heard[partition] = self.clock()
        if window is not None and window > self._newest.get(partition, -math.inf):
            self._newest[partition] = window

    def quiet(self) -> list[int]:
        """Partitions that have brought nothing for ``idle_seconds``: ask whether they are at their end."""
        if self.idle_seconds <= 0:
            return []
        now = self.clock()
        return sorted(p for p, heard in self._last_heard.items() if now - heard >= self.idle_seconds)

    def marks(self, caught_up: Iterable[int], heard: Iterable[int] = ()) -> dict[str, int]:
        """Watermarks to send for the quiet partitions in ``caught_up`` (read to their end), each once.

        ``heard``: windows other workers' partitions are known to have reached (the marks
        the counting partitions of this worker heard): with several workers, one whose
        partitions are all quiet follows the others.
        """
        fronts = [*self._newest.values(), *heard]
        if not fronts:
            return {}
        front = max(fronts)
        quiet = set(self.quiet())
        marks: dict[str, int] = {}
        for partition in sorted(set(caught_up) & quiet):
            if max(self._newest.get(partition, -math.inf), self._reported.get(partition, -math.inf)) >= front:
                continue
            marks[str(partition)] = self._reported[partition] = front
        return marks


class VolumeTotals:
    """Totals per window and key, merged from the partials of every partition.

    A partial is ``(partition, tickets, customers)`` for one window and key. A
    partition's counts only grow, so the largest partial seen wins: a replayed or
    reordered partial changes nothing. The partials live in ``store`` (the merging
    agent passes its durable table), as ``{key: {"partition": [tickets, customers]}}``.

    >>> t = VolumeTotals({})
    >>> t.merge("k", 1, 5, 3), t.merge("k", 2, 2, 2)
    (True, True)
    >>> t.merge("k", 1, 4, 3)  # an older partial, replayed
    False
    >>> t.total("k")
    (7, 5)
    """

    def __init__(self, store: MutableMapping[str, dict[str, list[int]]]) -> None:
        self.store = store

    def merge(self, key: str, partition: int, tickets: int, customers: int, newest: int = 0) -> bool:
        """Record a partial; ``True`` if it changed the total (the caller then stores it).

        ``newest``: the event time of the partition's newest ticket of the key (a partial
        stored before it was kept has none).
        """
        partials = self.store.get(key) or {}
        old = partials.get(str(partition), [0, 0, 0])
        new = [max(old[0], tickets), max(old[1], customers), max(old[2] if len(old) > 2 else 0, newest)]
        if new == old:
            return False
        # A new dict, assigned back, so a durable store sees (and logs) the change.
        self.store[key] = {**partials, str(partition): new}
        return True

    def total(self, key: str) -> tuple[int, int]:
        """``(tickets, customers)`` summed over partitions."""
        partials = self.store.get(key) or {}
        return sum(p[0] for p in partials.values()), sum(p[1] for p in partials.values())

    def newest(self, key: str) -> int:
        """The event time of the newest ticket of ``key`` in any partition (0: not known)."""
        return max((p[2] for p in (self.store.get(key) or {}).values() if len(p) > 2), default=0)
