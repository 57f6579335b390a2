"""Patterns in the stream: grouping, counts per window and pattern, near-churn, pattern spikes.

Where it sits (see :mod:`pipeline.worker`): ``count`` counts each ticket id once and
forwards every newly counted ticket, with its words, to ``<app>-pattern-tickets``, in
the partition of its product area, together with each counting partition's event-time
watermark. One :class:`PatternWatch` per partition of that topic

- groups the tickets of each area into patterns on their meaning
  (:class:`pipeline.patterns.semantic.SemanticGrouper`, one per area: a pattern lives
  within an area, and an area within one partition; one
  :class:`pipeline.text.embedding.TicketEncoder` per process encodes for all of them);
- counts, per window and pattern, tickets, distinct customers and near-churn tickets
  (:func:`pipeline.patterns.nearchurn.near_churn`): the ``pattern_volume`` series;
- runs a :class:`detectors.VolumeWatch` on every pattern that has come back (two tickets
  or more), so that patterns spike like areas (``pattern_spike``, ``ticket-alerts``). A
  watch quiet for a day, with no episode open, sleeps (:attr:`detectors.VolumeWatch.asleep`):
  closing windows leaves it where it is, and its pattern's next ticket catches it up, its
  quiet windows learned in one step; most patterns never come back, and their watches
  then retire without having learned their empty hours one by one.

A window's tickets are grouped when the window closes (every counting partition has
passed it), in order of creation time and id: the patterns, their ids, counts and
spikes then depend on the tickets, not on how many workers counted them or in what
order their messages interleaved. Every worker runs every partition and they agree
(the design is in :mod:`pipeline.worker`, ``group_patterns``). The price is a window of
delay: ``pattern_volume`` and pattern spikes come when the window closes, where area
counts and area spikes come while it fills. A ticket that arrives after its window
closed (late) is grouped as it comes.

Patterns that converge merge (:meth:`SemanticGrouper.drain_merged`): what this partition
keeps under the absorbed id (counts per window, examples, windows, the last window) moves
to the survivor, whose counts of those windows are written again, and the absorbed id's
points are written again as zeros, so that a sum over patterns counts each ticket once.
Assignments already handed out (:meth:`PatternWatch.drain_assigned`) keep the absorbed
id; :meth:`PatternWatch.resolve` gives the survivor. Spike watches: the survivor keeps its
own (its windows from the merge on carry both patterns' tickets; windows it has learned
are not judged again, as an episode never goes back); the absorbed pattern's watch is
dropped, or, with an episode open, kept apart until that episode resolves (every opened
episode gets its ``resolved``), its events under the absorbed id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from detectors import SpikeDetector, SpikeEvent, VolumeWatch
from pipeline.outputs.lineprotocol import Point
from pipeline.outputs.series import pattern_volume_point
from pipeline.patterns.grouper import Pattern
from pipeline.patterns.nearchurn import near_churn
from pipeline.patterns.semantic import SemanticGrouper
from pipeline.runtime.watermarks import hear, low_watermark
from pipeline.text.embedding import TicketEncoder, shared_encoder
from pipeline.text.privacy import mask_personal

__all__ = ["OutdatedPatternState", "PatternRecord", "PatternWatch", "grouping_key", "merge_threshold_for"]

#: A counted ticket as ``count`` forwards it:
#: ``[id, window, area, case_type, customer_id, created_at, subject, body, tokens, locale]``
#: (``tokens``, optional: its reading's token ids packed where it was tagged,
#: ``TicketEncoder.pack_tokens``; ``locale``, optional: the ticket's, "" when it has none).
PatternRecord = Sequence[Any]


def grouping_key(area: str, locale: str | None, by_locale: bool = True) -> str:
    r"""The grouper a ticket goes to: its area's, or its area's in its language.

    The embedding model was taught in English: questions in other languages it cannot read
    land near each other whatever they ask, so an area's largest patterns were Dutch, Czech
    and Spanish questions of unrelated problems together (SUMO; docs/benchmarks.md). Per
    language (the locale's first subtag, ``pt-BR`` -> ``pt``) each is compared with its own
    language's questions only, less that language's mean. Areas are one line (the schema),
    so the separator cannot occur in one.

    >>> grouping_key("sync", "pt-BR"), grouping_key("sync", ""), grouping_key("sync", "pt-BR", by_locale=False)
    ('sync\npt', 'sync', 'sync')
    """
    language = (locale or "").replace("_", "-").split("-")[0].strip().lower() if by_locale else ""
    return f"{area}\n{language}" if language else area


class OutdatedPatternState(ValueError):
    """A pickled :class:`PatternWatch` whose patterns were grouped on words (before issue #26)."""


def merge_threshold_for(threshold: float) -> float:
    """The similarity of two centroids at which their patterns merge, for a joining ``threshold``.

    0.6, or the threshold when higher: on CLINC150 (threshold 0.3) any merge threshold from
    0.45 to 0.7 changed ARI by less than 0.01; on SUMO (threshold 0.5) 0.6 was measured
    (docs/benchmarks.md). Never below the threshold (:class:`SemanticGrouper` refuses that).

    >>> merge_threshold_for(0.3), merge_threshold_for(0.5), merge_threshold_for(0.8)
    (0.6, 0.6, 0.8)
    """
    return max(threshold, 0.6)


#: Tickets a pattern needs before the worker gives it a spike watch. Most patterns stay a
#: few tickets (anecdotes), and a watch each costs memory and an hour's judging for nothing:
#: on meaning many more patterns reach two tickets (318 watches against 94 for the first
#: 5,000 SUMO questions at 2, 29.2 against 22.7 CPU-s). A pattern's spike needs 10 customers
#: (``TICKETPULSE_PATTERN_SPIKE_MIN_CUSTOMERS``), which it cannot have with fewer than five
#: tickets, so five loses no alert.
PATTERN_WATCH_AFTER = 5


class PatternWatch:
    """The patterns of one partition of the pattern topic, their window counts and spikes.

    Parameters
    ----------
    window_seconds
        Size of a window (the same as the volume windows).
    allowed_lateness_seconds
        How long counts and ticket ids are kept after the watermark (the progress of the
        slowest counting partition): a ticket sent again within it counts once. Measured
        from the watermark, not from the newest ticket, since one counting partition can
        be days ahead of another while a backlog is read, and the slower one's tickets
        are not late.
    sources
        Counting partitions whose watermarks this partition hears; windows close when
        all have spoken, at the oldest.
    threshold
        Cosine similarity of meaning a ticket needs to join a pattern
        (:class:`SemanticGrouper`; patterns merge at :func:`merge_threshold_for` of it).
    alert_score, min_customers
        Of each pattern's spike watch (:class:`detectors.VolumeWatch`).
    watch_after
        Tickets a pattern needs before it gets a spike watch (the worker and the backtest
        use :data:`PATTERN_WATCH_AFTER`).
    warm_windows
        Windows before a pattern's first ticket that its watch learns as
        zeros (a new pattern can spike at once; see :meth:`judge`).
    retire_after_seconds
        A watch whose pattern has had no ticket for this long, and no open episode, is
        dropped; it starts afresh if the pattern comes back. A pattern itself quiet for
        this long, with fewer than ``keep_customers`` customers, is forgotten (checked
        once a day of event time): most patterns are one or two tickets that never
        come back, and kept for ever they would grow the worker's memory, its
        checkpoints and the candidates every new ticket is compared with, without end.
        A ticket like it later starts a new pattern.
    encoder
        Encodes the tickets (default: the process's shared one, :func:`shared_encoder`).
        Not pickled: a watch loaded from a checkpoint gets it back from :meth:`attach`
        (or the shared one, at its first grouping), which refuses patterns made with
        another model.
    keep_customers
        Customers that make a pattern worth keeping however long it is quiet (ten, the
        essays' line between an anecdote and a pattern): a problem that comes back
        months later rejoins it, for the monthly review.

    Examples
    --------
    >>> pw = PatternWatch(3600, 86400, sources=1)
    >>> ticket = lambda i, c: [f"t{i}", 0, "export", "bug", c, "1970-01-01T00:00:00+00:00",
    ...                        "CSV export times out", "I was about to cancel my subscription"]
    >>> pw.add([ticket(1, "c1"), ticket(2, "c2"), ticket(2, "c2")])  # t2 twice: once; window 0 open
    set()
    >>> sorted(pw.hear({"0": 3600}))  # the counting partition has passed window 0: grouped
    [(0, 'p-e5353879bd')]
    >>> point = pw.points({(0, "p-e5353879bd")}, "1h")[0]
    >>> point.tags["area"], point.fields["tickets"], point.fields["customers"], point.fields["near_churn"]
    ('export', 2, 2, 2)
    """

    def __init__(
        self,
        window_seconds: int,
        allowed_lateness_seconds: int,
        sources: int,
        threshold: float = 0.5,
        alert_score: float = 0.4,
        min_customers: int = 5,
        watch_after: int = 2,
        retire_after_seconds: int = 28 * 86400,
        warm_windows: int = 168,
        keep_customers: int = 10,
        encoder: TicketEncoder | None = None,
        keep_near_churn: bool = False,
        by_locale: bool = True,
    ) -> None:
        self.encoder: TicketEncoder | None = encoder if encoder is not None else shared_encoder()
        self.window_seconds = window_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds
        self.sources = sources
        self.threshold = threshold
        self.alert_score = alert_score
        self.min_customers = min_customers
        self.watch_after = watch_after
        self.retire_after_seconds = retire_after_seconds
        self.warm_windows = warm_windows
        self.keep_customers = keep_customers
        self.by_locale = by_locale
        #: with ``keep_near_churn``, the ids of the near-churn tickets grouped (the backtest's
        #: review lists them without reading every ticket's text again); else ``None``
        self.near_churn_ids: set[str] | None = set() if keep_near_churn else None
        #: :func:`grouping_key` -> its grouper (an area's, or an area's in one language)
        self.groupers: dict[str, SemanticGrouper] = {}
        #: pattern id -> its area
        self.area_of: dict[str, str] = {}
        #: pattern id -> the key of its grouper
        self.group_of: dict[str, str] = {}
        #: (window, pattern id) -> [tickets, distinct customers, near-churn tickets]
        self.counts: dict[tuple[int, str], tuple[int, set[str], int]] = {}
        #: (window, pattern id) -> up to three ``[id, customer, masked text]`` from different customers
        self.examples: dict[tuple[int, str], list[list[str]]] = {}
        #: pattern id -> the windows it has counts in (so a new watch hears them)
        self.windows_of: dict[str, set[int]] = {}
        #: ticket id -> window, for tickets within the allowed lateness
        self.seen: dict[str, int] = {}
        #: tickets older than the allowed lateness behind the watermark, not grouped
        self.too_late = 0
        #: ``[ticket id, pattern id]`` of the tickets grouped since :meth:`drain_assigned`
        self.assigned: list[list[str]] = []
        self.marks: dict[str, int] = {}
        self.watermark: int | None = None
        self.closed_through: int | None = None
        #: window -> tickets of that window waiting for it to close
        self.pending: dict[int, list[list[Any]]] = {}
        self.watches: dict[str, VolumeWatch] = {}
        self.last_window_of: dict[str, int] = {}
        #: the first window this partition saw a ticket of
        self.first_window: int | None = None
        #: (window, pattern id) whose count changed since :meth:`points` last gave it: not
        #: pruned before then (the watermark may pass the lateness line first)
        self.unwritten: set[tuple[int, str]] = set()
        #: patterns forgotten (quiet and small; ``retire_after_seconds``)
        self.forgotten = 0
        #: patterns merged into another
        self.merges = 0
        #: absorbed pattern id -> its spike watch, kept until its open episode resolves
        self.closing: dict[str, VolumeWatch] = {}
        #: (window, absorbed pattern id) -> (area, name): its points, written before the
        #: merge, to write again as zeros (:meth:`points`)
        self.zeroed: dict[tuple[int, str], tuple[str, str]] = {}
        self._index_windows()

    def _index_windows(self) -> None:
        # window -> the ids in ``seen`` / the patterns in ``counts`` of that window: pruning
        # visits the windows that have passed the lateness line, not every ticket of the
        # last week at every new window (each ticket was scanned ~168 times: 7.01 against
        # 0.05 ms a window with a week of 500 tickets an hour, benchmarks/bench_patterns.py).
        # Derived from ``seen`` and ``counts``, so not pickled.
        self._seen_windows: dict[int, list[str]] = {}
        for ticket_id, window in self.seen.items():
            self._seen_windows.setdefault(window, []).append(ticket_id)
        self._count_windows: dict[int, set[str]] = {}
        for window, pid in self.counts:
            self._count_windows.setdefault(window, set()).add(pid)

    #: read by watches pickled before it was an argument
    near_churn_ids: set[str] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_seen_windows", "_count_windows", "encoder")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a checkpoint of an earlier version lacks the counters added since
        state.setdefault("too_late", 0)
        state.setdefault("assigned", [])
        state.setdefault("unwritten", set())
        state.setdefault("keep_customers", 10)
        state.setdefault("forgotten", 0)
        state.setdefault("merges", 0)
        state.setdefault("closing", {})
        state.setdefault("zeroed", {})
        # grouped per area alone before languages were told apart: each pattern's grouper is its area's
        state.setdefault("by_locale", False)
        state.setdefault("group_of", dict(state.get("area_of", {})))
        state["encoder"] = None  # attach() gives it back
        # watches of earlier versions kept every closed window's baseline, never drained
        for watch in state.get("watches", {}).values():
            watch.keep_baselines = False
            watch.baselines.clear()
        self.__dict__.update(state)
        self._index_windows()

    def attach(self, encoder: TicketEncoder, what: str = "a pattern checkpoint") -> None:
        """Give a loaded watch (and each area's grouper) its encoder.

        Raises
        ------
        OutdatedPatternState
            If its patterns were grouped on words (a checkpoint of a version before
            issue #26): they cannot go on with vectors.
        ValueError
            If its patterns were made with another embedding model.
        """
        words = sorted(area for area, g in self.groupers.items() if not isinstance(g, SemanticGrouper))
        if words:
            raise OutdatedPatternState(
                f"{what} holds patterns grouped on words (areas {', '.join(words)}), from a version "
                "before patterns were grouped on meaning: they cannot go on with embeddings"
            )
        for grouper in self.groupers.values():
            grouper.attach(encoder, what)
        self.encoder = encoder

    def _encoder(self) -> TicketEncoder:
        if self.encoder is None:  # unpickled and not attached: the shared one, checked
            encoder = shared_encoder()
            self.attach(encoder)
            return encoder
        return self.encoder

    def resolve(self, pattern_id: str) -> str:
        """The live id a pattern id stands for (itself, or the pattern it was merged into)."""
        if pattern_id in self.area_of:
            return pattern_id
        for grouper in self.groupers.values():  # a handful of areas
            survivor = grouper.aliases.get(pattern_id)
            if survivor is not None:
                return survivor
        return pattern_id

    def area(self, pattern_id: str) -> str:
        """The area of a pattern, live or merged into another."""
        return self.area_of[self.resolve(pattern_id)]

    def pattern(self, pattern_id: str) -> Pattern:
        """A pattern by its id, or by an id merged into it."""
        pid = self.resolve(pattern_id)
        return self.groupers[self.group_of[pid]].patterns[pid]

    def add(self, records: Iterable[PatternRecord]) -> set[tuple[int, str]]:
        """Take newly counted tickets; the ``(window, pattern id)`` whose counts changed.

        A ticket of a window still open waits for the window to close (:meth:`hear`);
        those whose window has closed already (late) are grouped at once, in arrival order.
        """
        late: list[PatternRecord] = []
        for record in records:
            ticket_id, window = record[0], record[1]
            if ticket_id in self.seen:
                continue  # sent again after a crash
            if self._too_old(window):
                # its window's counts are let go: counting it would overwrite them with less
                self.too_late += 1
                continue
            self.seen[ticket_id] = window
            self._seen_windows.setdefault(window, []).append(ticket_id)
            if self._closed(window):
                late.append(record)
            else:
                self.pending.setdefault(window, []).append(list(record))
        return self._group_many(late)

    def _closed(self, window: int) -> bool:
        return self.watermark is not None and window + self.window_seconds <= self.watermark

    def _group_many(self, records: Sequence[PatternRecord]) -> set[tuple[int, str]]:
        """Group tickets in order (one encoding, one :meth:`SemanticGrouper.add_many` per area); the keys changed."""
        if not records:
            return set()
        tickets = [
            {
                "id": record[0],
                "customer_id": record[4],
                "subject": record[6],
                "body": record[7],
                "case_type": record[3],
                "product_area": record[2],
                "created_at": record[5],
                "locale": record[9] if len(record) > 9 else "",
            }
            for record in records
        ]
        encoder = self._encoder()
        # the token ids the tagger made of each reading, where they came with it (one tokenization a ticket)
        vectors = encoder.encode_tickets(tickets, [record[8] if len(record) > 8 else None for record in records])
        churn = [near_churn(t["subject"], t["body"]) for t in tickets]
        rows_of: dict[str, list[int]] = {}
        for i, ticket in enumerate(tickets):
            rows_of.setdefault(grouping_key(ticket["product_area"], ticket["locale"], self.by_locale), []).append(i)
        patterns: dict[int, Pattern] = {}
        touched: set[tuple[int, str]] = set()
        for key, rows in sorted(rows_of.items()):
            grouper = self.groupers.get(key)
            if grouper is None:
                grouper = self.groupers[key] = SemanticGrouper(
                    encoder, threshold=self.threshold, merge_threshold=merge_threshold_for(self.threshold)
                )
            grouped = grouper.add_many([tickets[i] for i in rows], vectors[rows], [churn[i] for i in rows], False)
            for i, pattern in zip(rows, grouped, strict=True):
                patterns[i] = pattern
                self.group_of[pattern.id] = key
            # before this batch's tickets are counted: the merges move what was kept before it
            area = tickets[rows[0]]["product_area"]
            for gone, survivor in grouper.drain_merged():
                touched |= self._merge(area, key, gone, survivor)
        for i, record in enumerate(records):
            touched.add(self._count(record, patterns[i], churn[i]))
        # a key moved to a survivor that was itself absorbed later in the batch: its last survivor
        return {key for key in ((w, self.resolve(pid)) for w, pid in touched) if key in self.counts}

    def _count(self, record: PatternRecord, pattern: Pattern, churn: bool) -> tuple[int, str]:
        """Count a grouped ticket in its window and pattern; the key changed."""
        ticket_id, window, area, _, customer, _, subject, body = record[:8]
        pid = pattern.id
        self.assigned.append([ticket_id, pid])
        if churn and self.near_churn_ids is not None:
            self.near_churn_ids.add(ticket_id)
        self.area_of[pid] = area
        if self.first_window is None or window < self.first_window:
            self.first_window = window
        tickets, customers, churned = self.counts.get((window, pid), (0, set(), 0))
        customers.add(customer)
        self.counts[(window, pid)] = (tickets + 1, customers, churned + int(churn))
        self._count_windows.setdefault(window, set()).add(pid)
        self.unwritten.add((window, pid))
        self.windows_of.setdefault(pid, set()).add(window)
        self.last_window_of[pid] = max(window, self.last_window_of.get(pid, window))
        examples = self.examples.setdefault((window, pid), [])
        if len(examples) < 3 and all(e[1] != customer for e in examples):
            # masked only when kept: masking every ticket would cost more than grouping it;
            # and once, when the pattern kept it as one of its own examples
            own = next((e["text"] for e in pattern.examples if e["id"] == ticket_id), None)
            examples.append([ticket_id, customer, own if own is not None else mask_personal(f"{subject}: {body}")])
        return window, pid

    def _merge(self, area: str, group: str, gone: str, survivor: str) -> set[tuple[int, str]]:
        """Move what is kept under an absorbed pattern to its survivor; the survivor's keys changed."""
        self.merges += 1
        touched: set[tuple[int, str]] = set()
        self.area_of.pop(gone, None)  # absent if made in this batch: then nothing is kept under it yet
        self.group_of.pop(gone, None)
        self.area_of[survivor] = area
        self.group_of[survivor] = group
        grouper = self.groupers[group]
        name = grouper.patterns[grouper.resolve(survivor)].name
        for window in sorted(self.windows_of.pop(gone, set())):
            key, into = (window, gone), (window, survivor)
            tickets, customers, churned = self.counts.pop(key)
            more, others, churned_more = self.counts.get(into, (0, set(), 0))
            self.counts[into] = (tickets + more, customers | others, churned + churned_more)
            kept = self.examples.setdefault(into, [])
            for example in self.examples.pop(key, []):
                if len(kept) < 3 and all(e[1] != example[1] for e in kept):
                    kept.append(example)
            pids = self._count_windows[window]
            pids.discard(gone)
            pids.add(survivor)
            self.windows_of.setdefault(survivor, set()).add(window)
            self.unwritten.discard(key)
            # the absorbed id's point of the window is written as zeros whether or not it was
            # written before the merge: which were depends on how batches fell, and one worker
            # and two must write the same points
            self.zeroed[key] = (area, name)
            self.unwritten.add(into)
            touched.add(into)
        last = self.last_window_of.pop(gone, None)
        if last is not None:
            self.last_window_of[survivor] = max(last, self.last_window_of.get(survivor, last))
        watch = self.watches.pop(gone, None)
        if watch is not None and watch.episode is not None:
            self.closing[gone] = watch  # its episode runs to its end, then the watch goes
        return touched

    def drain_assigned(self) -> list[list[str]]:
        """The ``[ticket id, pattern id]`` of the tickets grouped since the last call, in grouping order."""
        assigned, self.assigned = self.assigned, []
        return assigned

    def _too_old(self, window: int) -> bool:
        return self.watermark is not None and window < self.watermark - self.allowed_lateness_seconds

    def _prune(self) -> None:
        for window in sorted(w for w in self._seen_windows if self._too_old(w)):
            for ticket_id in self._seen_windows.pop(window):
                del self.seen[ticket_id]
        # a count not yet written is kept until it is: a late ticket grouped in a batch whose
        # later messages move the watermark days ahead (a backlog) would otherwise be lost
        for window in sorted(w for w in self._count_windows if self._too_old(w)):
            pids = self._count_windows[window]
            for pid in sorted(pids):
                key = (window, pid)
                if key in self.unwritten:
                    continue
                pids.discard(pid)
                del self.counts[key]
                self.examples.pop(key, None)
                windows = self.windows_of[pid]
                windows.discard(window)
                if not windows:
                    del self.windows_of[pid]
            if not pids:
                del self._count_windows[window]

    def judge(self, touched: Iterable[tuple[int, str]]) -> list[SpikeEvent]:
        """Give each changed count to its pattern's watch (starting one when a pattern comes back)."""
        events: list[SpikeEvent] = []
        # keys given out before a merge stand for the survivor's counts now
        for window, pid in sorted({(w, self.resolve(p)) for w, p in touched}):
            if pid not in self.area_of:
                continue  # forgotten since
            watch = self.watches.get(pid)
            if watch is None:
                if self.pattern(pid).tickets < self.watch_after:
                    continue
                watch = self.watches[pid] = VolumeWatch(
                    pid,
                    self.window_seconds,
                    SpikeDetector(),
                    alert_score=self.alert_score,
                    min_customers=self.min_customers,
                    keep_baselines=False,  # no series of pattern baselines: nothing drains them
                )
                self._warm(watch, min(self.windows_of[pid]))
                # every window it has counts in, oldest first (an episode never goes back)
                for w in sorted(self.windows_of[pid]):
                    tickets, customers, _ = self.counts[(w, pid)]
                    watch.add_context(w, self.examples.get((w, pid), []), {})
                    events += watch.update(w, tickets, len(customers))
                continue
            if watch.asleep and self.closed_through is not None:
                # left asleep by close(): the quiet windows before this one, in one step (a
                # late ticket's window was closed already: the windows close() has passed)
                events += watch.advance(max(window, self.closed_through))
            if (window, pid) in self.counts:
                tickets, customers, _ = self.counts[(window, pid)]
                watch.add_context(window, self.examples.get((window, pid), []), {})
                events += watch.update(window, tickets, len(customers))
        return events

    def _warm(self, watch: VolumeWatch, first: int) -> None:
        # A pattern did not exist before its first ticket: the windows this partition
        # saw before it (up to a week) had none of it. Learning them as zeros makes a new problem
        # that arrives with many customers at once, the spike most worth an alert, a spike
        # from its first hour, where an untrained detector would stay neutral for a day.
        start = max(self.first_window or first, first - self.warm_windows * self.window_seconds)
        for w in range(start, first, self.window_seconds):
            watch.detector.learn_one({"t": w, "y": 0, "customers": 0})
            watch.learned_through = w

    def hear(self, watermarks: dict[str, int | None]) -> set[tuple[int, str]]:
        """Take the counting partitions' watermarks; group the windows every one has passed.

        A closed window's tickets are grouped in one order, by creation time and id,
        whatever order they arrived in: grouping is online (a ticket joins the patterns
        that exist when it comes), so the order decides borderline cases, and this one
        does not depend on how many workers counted them or how fast.
        """
        hear(self.marks, watermarks)
        low = low_watermark(self.marks, self.sources)
        if low is None or (self.watermark is not None and low <= self.watermark):
            return set()
        self.watermark = low
        self._prune()
        closed: list[PatternRecord] = []
        for window in sorted(w for w in self.pending if self._closed(w)):
            closed += sorted(self.pending.pop(window), key=lambda r: (r[5], r[0]))
        return self._group_many(closed)

    def close(self) -> list[SpikeEvent]:
        """Close, in every pattern's watch, the windows the watermark has passed (after :meth:`judge`).

        A watch that falls asleep stops there (:meth:`detectors.VolumeWatch.advance` with
        ``sleep``); :meth:`judge` catches it up when its pattern has a ticket again. Where
        it falls asleep and where it wakes depend on the tickets only, so closing hour by
        hour or days at once gives the same episodes.
        """
        if self.watermark is None or self.watermark == self.closed_through:
            return []
        before, low = self.closed_through, self.watermark
        self.closed_through = low
        events: list[SpikeEvent] = []
        for pid in sorted(self.watches):
            watch = self.watches[pid]
            # an asleep watch (no episode, nothing to judge, a day without a customer) stays
            # where it fell asleep: a pattern that will never come back costs nothing an hour
            # until it retires, and one that does is caught up in judge()
            events += watch.advance(low, sleep=True)
            quiet = low - self.last_window_of.get(pid, low) > self.retire_after_seconds
            if quiet and watch.episode is None:
                del self.watches[pid]
        for pid in sorted(self.closing):  # merged away with an episode open: until it resolves
            watch = self.closing[pid]
            events += watch.advance(low)
            if watch.episode is None:
                del self.closing[pid]
        if before is None or low // 86400 > before // 86400:
            self._forget_quiet(low)
        return events

    def _forget_quiet(self, low: int) -> None:
        # Every worker does this at the same point of the same messages: they go on agreeing.
        for pid, last in list(self.last_window_of.items()):
            if low - last <= self.retire_after_seconds or pid in self.watches or pid in self.windows_of:
                continue
            grouper = self.groupers[self.group_of[pid]]
            if len(grouper.patterns[pid].customers) >= self.keep_customers:
                continue
            grouper.forget(pid)
            del self.area_of[pid], self.group_of[pid], self.last_window_of[pid]
            self.forgotten += 1

    def points(self, touched: Iterable[tuple[int, str]], window_tag: str) -> list[Point]:
        """``pattern_volume`` points of the changed counts (each the window's whole count: idempotent).

        Every count changed since the last call is given, ``touched`` or not.
        """
        out = []
        zeroed, self.zeroed = self.zeroed, {}
        for (window, pid), (area, name) in sorted(zeroed.items()):
            # merged into another: its tickets count there now, and once
            out.append(pattern_volume_point(pid, area, window_tag, window, 0, 0, 0, name))
        keys, self.unwritten = set(touched) | self.unwritten, set()
        for window, pid in sorted(keys):
            if (window, pid) not in self.counts:
                continue
            tickets, customers, churned = self.counts[(window, pid)]
            out.append(
                pattern_volume_point(
                    pid, self.area_of[pid], window_tag, window, tickets, len(customers), churned, self.pattern(pid).name
                )
            )
        return out

    def summary(self, pattern_id: str) -> dict[str, Any]:
        """The pattern's summary (name, counts, tier, concentration, masked examples)."""
        return self.pattern(pattern_id).summary()
