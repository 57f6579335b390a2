"""Human tags that arrive later: joined to the text of the ticket they name.

Agents tag or correct a ticket in the helpdesk hours after it arrived; the tag
reaches ``ticket-labels`` with only the ticket's id. To learn from it the worker
needs the ticket's words, so it keeps them, for a configurable horizon, in a table,
with the prediction made when the ticket was first seen. Tickets and labels are both
keyed by ticket id, so a ticket and its labels land in the same partition number, and
topics of one partition count are assigned together: the worker that validates a
ticket owns its labels' partition too, and keeps the words as it validates the ticket,
without reading them back from ``tickets-classified`` (a ticket that a producer put in
another partition is forwarded to the partition of its id first). The join is local.
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
from collections.abc import Callable, MutableMapping
from typing import Any

from .schema import LABEL_FIELDS

__all__ = ["LabelJoin"]

#: Characters of a ticket's body kept for learning (a 10 MB log paste teaches nothing more).
KEEP_BODY_CHARS = 8000


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
    >>> join.remember("0/t1", {"id": "t1", "subject": "Charged twice", "body": "refund", "predicted": {}})
    []
    >>> join.label("0/t1", {"id": "t1", "case_type": "billing", "labelled_by": "ana"})
    [{'id': 't1', 'subject': 'Charged twice', 'body': 'refund', 'predicted': {}, 'case_type': 'billing'}]
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

    def remember(self, key: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
        """Keep a ticket's words; return the examples of labels that were waiting for it.

        The first prediction is kept on a re-send: it is the one made before any of the
        ticket's labels were learned (prequential scoring).
        """
        entry = self.store.get(key)
        predicted = doc.get("predicted")
        if entry is not None and entry.get("text") is not None:
            predicted = entry["text"].get("predicted", predicted)
        text = {
            "id": doc["id"],
            "subject": doc.get("subject", ""),
            "body": str(doc.get("body", ""))[:KEEP_BODY_CHARS],
            "predicted": predicted,
        }
        waiting = entry.get("waiting", []) if entry is not None else []
        self.store[key] = {"at": self.clock(), "text": text}
        return [self._example(text, label) for label in waiting]

    def label(self, key: str, label: dict[str, Any]) -> list[dict[str, Any]]:
        """The training example of ``label`` if its ticket's words are at hand; else it waits."""
        entry = self.store.get(key)
        if entry is not None and entry.get("text") is not None:
            return [self._example(entry["text"], label)]
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
