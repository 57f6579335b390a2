"""Tagging a batch of tickets: one batched prediction, and what goes from it to Kafka."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.ingest.schema import Ticket
from pipeline.runtime.kafka import kafka_partitions
from pipeline.tagging.choice import Tagger
from pipeline.tagging.tagger import FIELDS, predicted_labels, reading_text

__all__ = ["TaggedBatch", "tag_tickets", "tagger_document", "ticket_document"]

#: The tagger's fields, as a set: whether a ticket's reading carries labels, without a loop.
_TAGGED_FIELDS = frozenset(FIELDS)


def ticket_document(ticket: Ticket) -> dict[str, Any]:
    """A validated ticket as JSON-ready fields (the ones it has)."""
    doc: dict[str, Any] = {
        "id": ticket.id,
        "created_at": ticket.created_at.isoformat(),
        "customer_id": ticket.customer_id,
        "subject": ticket.subject,
        "body": ticket.body,
    }
    for name in ("channel", "product_area", "case_type", "severity", "plan", "locale"):
        value = getattr(ticket, name)
        if value is not None:
            doc[name] = value
    return doc


def tagger_document(doc: dict[str, Any]) -> dict[str, Any]:
    """What the tagger needs of a ticket document: its id, its reading, the tags it carries."""
    reading: dict[str, Any] = {"id": doc["id"], "reading": reading_text(doc["subject"], doc["body"])}
    for name in FIELDS:
        if name in doc:
            reading[name] = doc[name]
    return reading


@dataclass
class TaggedBatch:
    """What tagging makes of a batch of tickets, by Kafka partition of each ticket's id."""

    #: per ticket, in order: each field's label, confidence and ``uncertain``
    predictions: list[dict[str, dict[str, Any]]]
    #: ``tickets-classified`` records: the ticket with its predictions and the model version
    classified: dict[int, list[tuple[bytes, bytes]]]
    #: what the label join keeps of each ticket: its reading and first prediction
    to_join: dict[int, list[dict[str, Any]]]
    #: training examples of the tickets that carry labels this worker has not learned
    labelled: dict[int, list[dict[str, Any]]]
    #: per ticket, in order: the token ids of its reading, packed (``TicketEncoder.pack_tokens``),
    #: for the pattern stage to embed; empty when the tagger has no embedding
    tokens: list[bytes | None] = field(default_factory=list)
    #: the embedding model those ids belong to (``TicketEncoder.model_id``)
    tokens_of: str | None = None


def tag_tickets(
    tagger: Tagger, tickets: Sequence[Ticket], partitions: int, training_partitions: int | None = None
) -> TaggedBatch:
    """Predict a batch's tags in one go, and make what goes from it to Kafka.

    Each ticket's reading is made once: predicted from, kept for the label join, and
    learned from when the ticket carries labels (the fields a helpdesk filled in).

    ``training_partitions``: the training topic's (:func:`pipeline.topology.training_topic`;
    one for the linear tagger), when not ``partitions``: a labelled ticket goes to the
    partition of its id among them.
    """
    docs = [ticket_document(ticket) for ticket in tickets]
    # what the tagger reads of each: predicted from, kept for late labels, learned from
    readings = [tagger_document(doc) for doc in docs]
    predictions, margin_bins = tagger.predict_binned(readings)
    tagged = TaggedBatch(predictions, {}, {}, {})
    packed_tokens = getattr(tagger, "packed_tokens", None)
    if packed_tokens is not None:  # the linear tagger's: one tokenization a ticket, for tags and patterns
        tagged.tokens, tagged.tokens_of = [packed_tokens(r) for r in readings], tagger.model_id  # type: ignore[union-attr]
    ids = [doc["id"].encode() for doc in docs]
    id_partitions = kafka_partitions(ids, partitions)
    packed = tagged.tokens or [None] * len(tickets)
    for ticket, doc, key, id_partition, reading, predicted, bins, tokens in zip(
        tickets, docs, ids, id_partitions, readings, predictions, margin_bins, packed, strict=True
    ):
        # keyed by ticket id, in the partition Kafka's partitioner gives that key (the
        # document is this batch's own, made above: completed in place, not copied)
        doc["predicted"], doc["model_version"] = predicted, tagger.version
        tagged.classified.setdefault(id_partition, []).append((key, orjson.dumps(doc)))
        # with the prediction made before its labels are learned (prequential, calibration)
        first = predicted_labels(predicted, bins)
        # to the partition of its id, where its labels come (ticket-labels is keyed by id);
        # the prediction as it was on the wire before the join kept it flat, so that workers
        # of both versions read each other's messages during a rolling upgrade
        tagged.to_join.setdefault(id_partition, []).append(
            {"id": reading["id"], "reading": reading["reading"], "predicted": first}
        )
        # Labels this worker has learned for this id came from the training topic, so
        # every worker has them: a re-sent ticket's labels are not broadcast again.
        if not _TAGGED_FIELDS.isdisjoint(reading) and not tagger.knows(reading):
            # in the partition of its id, so that a later correction comes after it
            training = id_partition % training_partitions if training_partitions else id_partition
            # its event time: how long its labels are remembered (LinearTagger.remember_seconds)
            example = {**reading, "predicted": first, "created": int(ticket.created_ts)}
            if tokens is not None:  # the linear tagger's: no worker learning it tokenizes it again
                # packed (base64 in the JSON): a third of the size of a list of ids, and read
                # without making an int object per id
                example["tokens"] = base64.b64encode(tokens).decode("ascii")
                example["tokens_of"] = tagged.tokens_of
            tagged.labelled.setdefault(training, []).append(example)
    return tagged
