"""Event-time watermarks: the one rule every stage closes windows by.

A stage hears, from each of its sources (the partitions upstream of it), how far that
source has got in event time: its newest window. The stage's watermark is the oldest of
those, known only once every source has spoken, and it only rises. Partitions are read at
different speeds: a backlog read fast on one partition must not close the windows of a
slower one (a benchmark run lost a quarter of three days' tickets so before this rule).

Used by counting (:class:`pipeline.counting.volume.PartitionVolume`), merging and the
spike watch (:mod:`pipeline.counting.merge`, :mod:`pipeline.alerts.watch`) and pattern
grouping (:class:`pipeline.patterns.watch.PatternWatch`).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

__all__ = ["hear", "low_watermark"]


def hear(marks: MutableMapping[str, int], heard: Mapping[str, int | None]) -> bool:
    """Raise ``marks`` (source -> newest window) to what was ``heard``; ``True`` if any moved.

    A source heard later at an older window, or with no window yet (``None``), changes nothing.

    >>> marks = {"0": 7200}
    >>> hear(marks, {"0": 3600, "1": 0, "2": None}), marks
    (True, {'0': 7200, '1': 0})
    >>> hear(marks, {"1": 0})
    False
    """
    moved = False
    for source, mark in heard.items():
        if mark is not None and mark > marks.get(source, -1):
            marks[source] = mark
            moved = True
    return moved


def low_watermark(marks: Mapping[str, int], sources: int) -> int | None:
    """The watermark of a stage fed by ``sources`` sources: the oldest of their newest windows,
    or ``None`` until every source has been heard.

    >>> low_watermark({"0": 7200}, sources=2) is None
    True
    >>> low_watermark({"0": 7200, "1": 3600}, sources=2)
    3600
    """
    if len(marks) < sources:
        return None
    return min(marks.values())
