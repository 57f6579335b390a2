"""Human tags that arrive later: joined to the text of the ticket they name.

Agents tag or correct a ticket in the helpdesk hours after it arrived; the tag
reaches ``ticket-labels`` with only the ticket's id. To learn from it the worker
needs the ticket's words, so it keeps them, for a configurable horizon, in a table,
with the prediction made when the ticket was first seen: only what the tagger reads
(:func:`pipeline.tagger.reading_text`, the cleaned subject and opening, a few hundred
characters with addresses and numbers already out), not the raw body. Tickets and labels are both
keyed by ticket id, and ``validate`` sends each ticket's words (one message per batch
and partition) to the partition of its id of ``<app>-texts-to-join``, which Faust
assigns together with the same partition of ``ticket-labels`` (topics of one partition
count are co-partitioned): the worker that joins a ticket's labels holds its words.
The join is local.
A label that comes before its ticket waits (within the horizon too); one whose ticket
never comes within the horizon is given back as expired, for the dead-letter topic:
nothing is dropped silently.

The joined example goes to the training topic that every worker's models read
(:mod:`pipeline.tagger`), where a correction replaces the earlier tag.

The store is any mutable mapping (a Faust table in the worker, a dict in tests),
and the clock is injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any

import orjson

from .schema import LABEL_FIELDS
from .tagger import document_reading

__all__ = ["ChunkedStore", "LabelJoin", "entry_chars"]


class LabelJoin:
    """Ticket texts kept for ``horizon_seconds``; labels joined to them.

    Parameters
    ----------
    store
        Where texts and waiting labels live, keyed ``"<partition>/<ticket id>"``.
    horizon_seconds
        How long a text (or a label waiting for its ticket) is kept.
    clock
        Seconds since the epoch (``time.time``); injected so tests control it.

    Examples
    --------
    >>> now = [1000.0]
    >>> join = LabelJoin({}, horizon_seconds=3600, clock=lambda: now[0])
    >>> join.remember("0/t1", {"id": "t1", "subject": "Charged twice", "body": "Refund me", "predicted": {}})
    []
    >>> join.label("0/t1", {"id": "t1", "case_type": "billing", "labelled_by": "ana"})
    [{'id': 't1', 'reading': 'charged twice charged twice refund me', 'predicted': {}, 'case_type': 'billing'}]
    >>> join.label("0/t2", {"id": "t2", "case_type": "bug"})  # its ticket has not come yet: it waits
    []
    >>> now[0] += 7200
    >>> [label["id"] for label in join.expire()]  # never came within the horizon
    ['t2']
    """

    def __init__(
        self, store: MutableMapping[str, Any], horizon_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.horizon_seconds = horizon_seconds
        self.clock = clock

    @staticmethod
    def _example(text: dict[str, Any], label: dict[str, Any]) -> dict[str, Any]:
        example = dict(text)
        example.update({name: label[name] for name in LABEL_FIELDS if label.get(name)})
        return example

    @staticmethod
    def _text(entry: dict[str, Any] | None) -> dict[str, Any] | None:
        """The kept text of an entry, as a training example starts (``None`` if only labels wait)."""
        if entry is None:
            return None
        if "reading" in entry:
            return {"id": entry["id"], "reading": entry["reading"], "predicted": orjson.loads(entry["predicted"])}
        text: dict[str, Any] | None = entry.get("text")  # as kept before 2026-12-01, still in changelogs
        return text

    def remember(self, key: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
        """Keep a ticket's words; return the examples of labels that were waiting for it.

        The first prediction is kept on a re-send: it is the one made before any of the
        ticket's labels were learned (prequential scoring). ``doc["predicted"]`` is the
        prediction's labels (:func:`pipeline.tagger.predicted_labels`), or their JSON text.

        An entry is kept flat, its prediction as JSON text: a dict of strings and numbers,
        which Python's collector does not track. Nested, a kept text was six objects that
        every collection of the hours of kept texts walked (for 200,000 real ones, 240 ms
        a full collection against 18 ms flat, and 1,832 bytes each against 1,184:
        ``benchmarks/bench_label_join.py``, docs/benchmarks.md).
        """
        entry = self.store.get(key)
        if entry is not None and "reading" in entry:
            predicted = entry["predicted"]
        elif entry is not None and entry.get("text") is not None:
            predicted = orjson.dumps(entry["text"].get("predicted")).decode()
        else:
            predicted = doc.get("predicted")
            if not isinstance(predicted, str):
                predicted = orjson.dumps(predicted).decode()
        # what the tagger reads, carried by ``doc`` or made from its subject and body
        reading = document_reading(doc)
        self.store[key] = {"at": self.clock(), "id": doc["id"], "reading": reading, "predicted": predicted}
        waiting = entry.get("waiting", []) if entry is not None else []
        if not waiting:
            return []
        text = {"id": doc["id"], "reading": reading, "predicted": orjson.loads(predicted)}
        return [self._example(text, label) for label in waiting]

    def label(self, key: str, label: dict[str, Any]) -> list[dict[str, Any]]:
        """The training example of ``label`` if its ticket's words are at hand; else it waits."""
        entry = self.store.get(key)
        text = self._text(entry)
        if text is not None:
            return [self._example(text, label)]
        waiting = list(entry.get("waiting", [])) if entry is not None else []
        waiting.append(label)
        self.store[key] = {"at": self.clock() if entry is None else entry["at"], "waiting": waiting}
        return []

    def expire(self) -> list[dict[str, Any]]:
        """Forget what is older than the horizon; return the labels whose ticket never came."""
        oldest = self.clock() - self.horizon_seconds
        stale = [key for key, entry in list(self.store.items()) if entry["at"] < oldest]
        expired: list[dict[str, Any]] = []
        for key in stale:
            expired.extend(self.store.pop(key).get("waiting", []))
        return expired


def entry_chars(entry: dict[str, Any]) -> int:
    """About how many characters a :class:`LabelJoin` entry takes as JSON (no serialising)."""
    if "reading" in entry:
        return len(entry["reading"]) + len(entry["predicted"]) + len(entry["id"]) + 80  # and the keys
    text = entry.get("text")
    if text is not None:
        return sum(len(v) for v in text.values() if isinstance(v, str)) + 400  # the words, a prediction, keys
    return 200 * len(entry.get("waiting", ())) + 50


class ChunkedStore(MutableMapping[str, Any]):
    """A mapping of ``"<partition>/<key>"`` kept in a table as one record per batch and partition.

    The label join keeps the words of every ticket for hours; one table record (one
    changelog message) per ticket cost a fifth of the worker. Changes wait in memory
    until :meth:`flush` (once per batch), which writes each partition's changes as one
    chunk, ``"<partition>/~<sequence>"``; a chunk whose keys have all been written again
    or deleted since is deleted from the table. :meth:`rebuild` reads the chunks back,
    in the order they were written, after the table's recovery.

    Parameters
    ----------
    table
        Where the chunks live (a Faust table in the worker; any mapping in tests).
    max_chunk_chars
        A chunk is closed when its values reach about this many characters (a
        changelog message must stay under the broker's 1 MB).
    size_of
        The characters a value takes, about (:func:`entry_chars` for the label join's).

    Examples
    --------
    >>> table = {}
    >>> store = ChunkedStore(table)
    >>> store["0/t1"] = {"at": 1, "text": "charged twice"}
    >>> store["0/t2"] = {"at": 1, "text": "app crashes"}
    >>> store.flush()
    >>> sorted(table)  # one record for the batch
    ['0/~00000000000000000001']
    >>> store["0/t1"] = {"at": 2, "text": "charged twice, refund"}
    >>> del store["0/t2"]
    >>> store.flush()
    >>> sorted(table)  # the first chunk held nothing still current
    ['0/~00000000000000000002']
    >>> again = ChunkedStore(table)
    >>> again.rebuild({0})
    >>> dict(again)
    {'0/t1': {'at': 2, 'text': 'charged twice, refund'}}
    """

    def __init__(
        self,
        table: MutableMapping[str, Any],
        max_chunk_chars: int = 400_000,
        size_of: Callable[[Any], int] = lambda value: len(str(value)),
    ) -> None:
        self.table = table
        self.max_chunk_chars = max_chunk_chars
        self.size_of = size_of
        self._entries: dict[str, Any] = {}
        self._pending: dict[int, dict[str, Any]] = {}
        self._chunk_of: dict[str, str] = {}  # key -> the chunk holding its current value
        self._live: dict[str, set[str]] = {}  # chunk -> its keys still current
        self._sequence = 0

    @staticmethod
    def _partition(key: str) -> int:
        return int(key.split("/", 1)[0])

    def __getitem__(self, key: str) -> Any:
        return self._entries[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._entries[key] = value
        self._pending.setdefault(self._partition(key), {})[key] = value

    def __delitem__(self, key: str) -> None:
        del self._entries[key]
        pending = self._pending.get(self._partition(key))
        if pending is not None:
            pending.pop(key, None)
        self._supersede(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def _supersede(self, key: str) -> None:
        """``key``'s value in its chunk is no longer current; a chunk with none left goes."""
        chunk = self._chunk_of.pop(key, None)
        if chunk is None:
            return
        live = self._live[chunk]
        live.discard(key)
        if not live:
            del self._live[chunk]
            self.table.pop(chunk, None)

    def _new_chunk_key(self, partition: int) -> str:
        self._sequence += 1
        return f"{partition}/~{self._sequence:020d}"

    def flush(self) -> None:
        """Write the changes made since the last flush: one record per partition (or a few, if large)."""
        pending, self._pending = self._pending, {}
        for partition, changes in pending.items():
            chunk: dict[str, Any] = {}
            size = 0
            for key, value in changes.items():
                chunk[key] = value
                size += self.size_of(value)
                if size >= self.max_chunk_chars:
                    self._write(partition, chunk)
                    chunk, size = {}, 0
            if chunk:
                self._write(partition, chunk)

    def _write(self, partition: int, chunk: dict[str, Any]) -> None:
        chunk_key = self._new_chunk_key(partition)
        for key in chunk:
            self._supersede(key)
            self._chunk_of[key] = chunk_key
        self._live[chunk_key] = set(chunk)
        self.table[chunk_key] = chunk

    def rebuild(self, partitions: Iterable[int] | None = None) -> None:
        """Read the table's chunks of ``partitions`` (all if ``None``) back, oldest first.

        Changes not flushed yet are kept; what other partitions held is forgotten
        (they belong to another worker now).
        """
        pending = self._pending
        self._entries, self._chunk_of, self._live, self._pending = {}, {}, {}, {}
        chunks = sorted(
            (int(k.split("~", 1)[1]), k)
            for k in list(self.table.keys())
            if partitions is None or self._partition(k) in partitions
        )
        for sequence, chunk_key in chunks:
            self._sequence = max(self._sequence, sequence)
            chunk = self.table.get(chunk_key) or {}
            for key in chunk:
                self._supersede(key)
                self._chunk_of[key] = chunk_key
            self._live[chunk_key] = set(chunk)
            self._entries.update(chunk)
        for chunk_key, live in list(self._live.items()):
            if not live:  # superseded by later chunks while this worker was away
                del self._live[chunk_key]
                self.table.pop(chunk_key, None)
        for partition, changes in pending.items():
            if partitions is None or partition in partitions:
                for key, value in changes.items():
                    self[key] = value
