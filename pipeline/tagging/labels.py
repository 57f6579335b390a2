"""Human tags that arrive later: joined to the text of the ticket they name.

Agents tag or correct a ticket in the helpdesk hours after it arrived; the tag
reaches ``ticket-labels`` with only the ticket's id. To learn from it the worker
needs the ticket's words, so it keeps them, for a configurable horizon, with the
prediction made when the ticket was first seen: only what the tagger reads
(:func:`pipeline.tagging.tagger.reading_text`, the cleaned subject and opening, a few hundred
characters with addresses and numbers already out), not the raw body. Tickets and labels are both
keyed by ticket id, and ``validate`` sends each ticket's words (one message per batch
and partition) to the partition of its id of ``<app>-texts-to-join``, which Faust
assigns together with the same partition of ``ticket-labels`` (topics of one partition
count are co-partitioned): the worker that joins a ticket's labels holds its words.
The join is local.
A label that comes before its ticket waits (within the horizon too); one whose ticket
never comes within the horizon is given back as expired, for the dead-letter topic:
nothing is dropped silently.

Where the words are after a restart: ``<app>-texts-to-join`` itself, which keeps them
(its retention is set to outlast the horizon, :func:`pipeline.runtime.kafka.topic_configs`).
The join keeps the texts in memory and records, in its changelogged table, only which
offsets of each partition hold them and the labels that wait; a worker that starts, or
takes a partition over, reads those offsets again. Until 2026-12-01 every text was also
written to the table's changelog: the same bytes twice on the broker, and about 6 us a
ticket in the worker (docs/benchmarks.md).

The joined example goes to the training topic that every worker's models read
(:mod:`pipeline.tagging.tagger`), where a correction replaces the earlier tag.

The store is any mutable mapping (a Faust table in the worker, a dict in tests),
and the clock is injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any

import orjson

from pipeline.ingest.schema import LABEL_FIELDS
from pipeline.text.cleaning import document_reading

__all__ = ["TEXTS_MARK", "ChunkedStore", "LabelJoin", "entry_chars", "texts_of_message"]

#: The store's key, after ``"<partition>/"``, of the offsets that hold a partition's kept
#: texts: it starts with a space, which no ticket id does (ids are stripped).
TEXTS_MARK = " texts"


class LabelJoin:
    """Ticket texts kept for ``horizon_seconds``; labels joined to them.

    Two kinds of state, kept apart because they differ in size and in where they can be
    found again after a restart:

    - the **texts**, one per ticket for hours (millions), in memory only, by partition:
      each came in a ``<app>-texts-to-join`` message that the topic still holds, so a
      worker that starts, or takes the partition over, reads them again from there
      (:meth:`reread_from`, :meth:`restore`) rather than each being written a second
      time to a changelog;
    - the **store** (durable: a changelogged table in the worker): labels waiting for
      their ticket, and for each partition the offsets of ``<app>-texts-to-join`` that
      hold its kept texts (a few bytes a batch).

    Parameters
    ----------
    store
        Durable: waiting labels keyed ``"<partition>/<ticket id>"``, and each partition's
        offsets keyed ``"<partition>/ texts"`` (:data:`TEXTS_MARK`).
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
        #: partition -> ticket id -> kept text, the least recently sent first (what expires is at the front)
        self.texts: dict[int, dict[str, dict[str, Any]]] = {}
        # partition -> offset of a texts-to-join message -> how many kept texts it first brought
        # (their first prediction is in it: a restart reads the topic again from the smallest)
        self._firsts: dict[int, dict[int, int]] = {}

    @staticmethod
    def _example(text: dict[str, Any], label: dict[str, Any]) -> dict[str, Any]:
        example = dict(text)
        example.update({name: label[name] for name in LABEL_FIELDS if label.get(name)})
        return example

    @staticmethod
    def _split(key: str) -> tuple[int, str]:
        partition, _, ticket_id = key.partition("/")
        return int(partition), ticket_id

    @staticmethod
    def _text(entry: dict[str, Any] | None) -> dict[str, Any] | None:
        """The kept text of an entry, as a training example starts (``None`` if only labels wait)."""
        if entry is None:
            return None
        if "reading" in entry:
            return {"id": entry["id"], "reading": entry["reading"], "predicted": orjson.loads(entry["predicted"])}
        # nested, as tables kept texts before 2026-12-01
        text: dict[str, Any] | None = entry.get("text")
        return text

    def _stored_text(self, key: str) -> dict[str, Any] | None:
        """A text that a worker of an earlier version kept in the store (read until it expires)."""
        entry = self.store.get(key)
        return entry if entry is not None and ("reading" in entry or entry.get("text")) else None

    def _keep(self, key: str, doc: dict[str, Any], at: float, offset: int | None) -> dict[str, Any]:
        """Keep ``doc``'s reading under ``key``, with the first prediction made for its ticket."""
        partition, ticket_id = self._split(key)
        texts = self.texts.setdefault(partition, {})
        # popped and put back: a re-sent text moves to the newest end, and expires from there
        earlier = texts.pop(ticket_id, None)
        if earlier is not None:
            predicted, first = earlier["predicted"], earlier["first"]
        else:
            predicted, first = doc.get("predicted"), offset
            if not isinstance(predicted, str):
                predicted = orjson.dumps(predicted).decode()
            if offset is not None:
                firsts = self._firsts.setdefault(partition, {})
                firsts[offset] = firsts.get(offset, 0) + 1
        # what the tagger reads, carried by ``doc`` or made from its subject and body
        kept = {"at": at, "id": doc["id"], "reading": document_reading(doc), "predicted": predicted, "first": first}
        texts[ticket_id] = kept
        return kept

    def remember(self, key: str, doc: dict[str, Any], offset: int | None = None) -> list[dict[str, Any]]:
        """Keep a ticket's words; return the examples of labels that were waiting for it.

        The first prediction is kept on a re-send: it is the one made before any of the
        ticket's labels were learned (prequential scoring). ``doc["predicted"]`` is the
        prediction's labels (:func:`pipeline.tagging.tagger.predicted_labels`), or their JSON text.
        ``offset``: of the ``<app>-texts-to-join`` message that carried ``doc``.

        A text is kept flat, its prediction as JSON text: a dict of strings and numbers,
        which Python's collector does not track. Nested, a kept text was six objects that
        every collection of the hours of kept texts walked (for 200,000 real ones, 240 ms
        a full collection against 18 ms flat: ``benchmarks/bench_label_join.py``,
        docs/benchmarks.md).
        """
        entry = self.store.get(key)  # labels waiting for it, or an earlier version's text
        if entry is not None and ("reading" in entry or entry.get("text")):
            # kept by an earlier version's worker in the (durable) store: it stays there, as it was
            text = self._text(entry)
            predicted = orjson.dumps(text["predicted"] if text else None).decode()
            reading = document_reading(doc)
            self.store[key] = {"at": self.clock(), "id": doc["id"], "reading": reading, "predicted": predicted}
            return []
        kept = self._keep(key, doc, self.clock(), offset)
        if entry is None:
            return []
        del self.store[key]  # its waiting labels join now
        text = {"id": kept["id"], "reading": kept["reading"], "predicted": orjson.loads(kept["predicted"])}
        return [self._example(text, label) for label in entry.get("waiting", [])]

    def remember_message(self, partition: int, offset: int, docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Keep the texts of one ``<app>-texts-to-join`` message (its ``partition`` and
        ``offset``); return the examples of labels that were waiting for them.

        The store records which offsets hold the partition's kept texts, for
        :meth:`reread_from` after a restart or a rebalance.
        """
        examples: list[dict[str, Any]] = []
        for doc in docs:
            examples += self.remember(f"{partition}/{doc['id']}", doc, offset)
        self._mark(partition, newest=offset)
        return examples

    def _mark(self, partition: int, newest: int | None = None) -> None:
        """Record in the store which offsets of ``partition`` hold its kept texts."""
        key = f"{partition}/{TEXTS_MARK}"
        mark = self.store.get(key)
        last = mark["to"] if mark is not None else None
        if newest is not None and (last is None or newest > last):
            last = newest
        if last is None:
            return
        firsts = self._firsts.get(partition)
        if newest is not None and mark is not None and mark["from"] <= mark["to"] and firsts:
            # a new message moves only the end: the start moves when texts expire, and a
            # min over every message of the horizon per batch would grow with the horizon
            first = mark["from"]
        else:
            first = min(firsts) if firsts else last + 1  # none kept: nothing to read again
        if mark is None or (mark["from"], mark["to"]) != (first, last):
            self.store[key] = {"at": self.clock(), "from": first, "to": last}

    def reread_from(self, partition: int) -> tuple[int, int] | None:
        """The offsets of ``<app>-texts-to-join`` (first and last, both included) that hold
        ``partition``'s kept texts, as the store records them; ``None`` if there are none."""
        mark = self.store.get(f"{partition}/{TEXTS_MARK}")
        if mark is None or mark["from"] > mark["to"]:
            return None
        return int(mark["from"]), int(mark["to"])

    def restore(self, partition: int, offset: int, docs: Iterable[dict[str, Any]], at: float) -> None:
        """Keep again the texts of a message read back from ``<app>-texts-to-join``
        (``at``: its timestamp), in the order of their offsets; :meth:`expire` then
        forgets those past the horizon.

        Unlike :meth:`remember`, no waiting label joins: the store says which labels
        still wait, and those that joined these texts did so when they were first kept.
        """
        for doc in docs:
            key = f"{partition}/{doc['id']}"
            if self._stored_text(key) is None:
                self._keep(key, doc, at, offset)

    def holds(self) -> set[int]:
        """The partitions whose texts are in memory (kept, or read again)."""
        return set(self.texts)

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget the texts of ``partitions`` (another worker joins their labels now)."""
        for partition in partitions:
            self.texts.pop(partition, None)
            self._firsts.pop(partition, None)

    def label(self, key: str, label: dict[str, Any]) -> list[dict[str, Any]]:
        """The training example of ``label`` if its ticket's words are at hand; else it waits."""
        partition, ticket_id = self._split(key)
        kept = self.texts.get(partition, {}).get(ticket_id) or self._stored_text(key)
        text = self._text(kept)
        if text is not None:
            return [self._example(text, label)]
        entry = self.store.get(key)
        waiting = list(entry.get("waiting", [])) if entry is not None else []
        waiting.append(label)
        self.store[key] = {"at": self.clock() if entry is None else entry["at"], "waiting": waiting}
        return []

    def expire(self) -> list[dict[str, Any]]:
        """Forget what is older than the horizon; return the labels whose ticket never came."""
        oldest = self.expire_texts()
        marks = f"/{TEXTS_MARK}"
        stale = [key for key, entry in list(self.store.items()) if entry["at"] < oldest and not key.endswith(marks)]
        expired: list[dict[str, Any]] = []
        for key in stale:
            expired.extend(self.store.pop(key).get("waiting", []))
        return expired

    def expire_texts(self) -> float:
        """Forget the texts older than the horizon (not the waiting labels: :meth:`expire`
        gives those back); return the horizon's start."""
        oldest = self.clock() - self.horizon_seconds
        for partition, texts in self.texts.items():
            firsts = self._firsts.get(partition, {})
            while texts:  # the least recently sent first: stop at the first still within the horizon
                ticket_id = next(iter(texts))
                first = texts[ticket_id]["first"]
                if texts[ticket_id]["at"] >= oldest:
                    break
                del texts[ticket_id]
                if first in firsts:
                    firsts[first] -= 1
                    if not firsts[first]:
                        del firsts[first]
            self._mark(partition)
        return oldest


def texts_of_message(raw: bytes | None) -> list[dict[str, Any]]:
    """The texts one ``<app>-texts-to-join`` message carries, or ``ValueError`` naming what
    is wrong with it.

    The topic is our own, written by ``validate``; a message something else wrote there
    (a tool, a bug) is named and set aside by the join, not a join that stops.

    >>> texts_of_message(b'{"texts": [{"id": "T-1", "reading": "app crashes"}]}')
    [{'id': 'T-1', 'reading': 'app crashes'}]
    >>> texts_of_message(b'{"texts": [{"reading": "app crashes"}]}')
    Traceback (most recent call last):
    ...
    ValueError: text 0 of the message is not an object with an 'id'
    """
    try:
        value = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"a JSON {type(value).__name__}, not an object with 'texts'")
    docs = value["texts"] if "texts" in value else [value]  # one text a message before 2026-11-30
    if not isinstance(docs, list):
        raise ValueError(f"'texts' is a JSON {type(docs).__name__}, not a list")
    for n, doc in enumerate(docs):
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str | int):
            raise ValueError(f"text {n} of the message is not an object with an 'id'")
    return docs


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

    The label join's table changes with every batch (each partition's offsets, the
    labels that wait); when it held every ticket's words, one table record (one changelog
    message) per ticket cost a fifth of the worker. Changes wait in memory
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

    def get(self, key: str, default: Any = None) -> Any:
        # the label join asks for every ticket, and most are not here: no KeyError raised and caught
        return self._entries.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

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
