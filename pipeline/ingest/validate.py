"""Validation, the first stage: good tickets on to counting and tagging, bad ones to the dead-letter topic.

Bytewax's Kafka operators split good and bad messages into two streams; so does this:
a ticket that does not parse goes to ``tickets-dead-letter`` with the reason, its
partition and offset, and the batch goes on.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pipeline.counting.volume import window_start
from pipeline.ingest.schema import UNASSIGNED, Ticket, TicketError, parse_ticket
from pipeline.messages import AreaContext, CountingBatch, Fact, TicketWords, TrainingBatch, WindowContext
from pipeline.runtime.dead_letters import dead_letter_record
from pipeline.runtime.outbox import Outbox
from pipeline.runtime.partitioning import KeyPartitioner
from pipeline.runtime.stats import PipelineStats
from pipeline.settings import Settings
from pipeline.tagging.choice import Tagger
from pipeline.tagging.tag import TaggedBatch, tag_tickets
from pipeline.text.privacy import mask_personal
from pipeline.text.terms import subject_terms
from pipeline.topology import training_topic

__all__ = ["PATTERN_BODY_CHARS", "Validate"]

#: Characters of a ticket's body that pattern grouping reads (the problem is said early).
PATTERN_BODY_CHARS = 2000

#: The tagger's fields in the order of a fact's tags (area, case type, severity).
FIELDS_BY_TAG = ("product_area", "case_type", "severity")

#: Example tickets an alert shows per window and key.
EXAMPLES_PER_WINDOW = 2

#: Characters of an example ticket's masked text kept (the watch's state holds a few per
#: open window: bounded by construction, whatever the tickets' length).
EXAMPLE_CHARS = 1000


class Validate:
    """Parses a batch of ``tickets`` records; tags the good ones and sends them on.

    Parameters
    ----------
    settings
        The worker's settings.
    topics
        The Faust topics by role (:func:`pipeline.topology.topology`): ``dead_letter``,
        ``by_customer``, ``training``, ``texts_to_join``, ``area_volumes``.
    stats
        The worker's counters.
    tagger
        The worker's models (predictions for tickets the helpdesk left untagged).
    producer
        Returns the worker's started Kafka producer (``app.maybe_start_producer``), for
        ``tickets-classified``: a record per ticket, sent as whole batches.
    clock
        Seconds since the epoch (a ticket dated too far ahead of it is refused).
    """

    def __init__(
        self,
        settings: Settings,
        topics: dict[str, Any],
        stats: PipelineStats,
        tagger: Tagger,
        producer: Callable[[], Awaitable[Any]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.stats = stats
        self.tagger = tagger
        self.producer = producer
        self.clock = clock
        self.partition_of = KeyPartitioner(settings.partitions)

    async def on_batch(self, records: Sequence[Any]) -> dict[str, int]:
        """Split good tickets from bad; pass the good ones on, grouped by customer partition.

        ``records``: a batch of ``tickets`` as Kafka records (``value``, ``key``, ``topic``,
        ``partition``, ``offset``). Returns the newest window of the batch's good tickets
        per tickets partition (the watermarks it sent).
        """
        out = Outbox()
        good = await self._parse(records, out)
        tagged = self._tag([ticket for ticket, _ in good])
        by_partition: dict[int, list[Fact]] = {}
        texts: dict[int, list[TicketWords]] = {}
        marks: dict[str, int] = {}
        # (window, area, case type) -> examples, subject words: for the area's and the case type's watch
        context: dict[tuple[int, str, str], tuple[list[list[str]], Counter[str]]] = {}
        # Kafka's partition of each customer, for the batch at once
        customer_partitions = self.partition_of.many([ticket.customer_id.encode() for ticket, _ in good])
        for n, (ticket, source_partition) in enumerate(good):
            fact = self._fact(ticket, tagged.predictions[n] if tagged.predictions else None)
            customer_partition = customer_partitions[n]
            by_partition.setdefault(customer_partition, []).append(fact)
            if self.settings.patterns_enabled:
                # the words travel with the fact: what ``count`` counts, patterns group
                tokens = tagged.tokens[n] if tagged.tokens else None
                words = TicketWords(
                    ticket.created_at.isoformat(),
                    ticket.subject,
                    ticket.body[:PATTERN_BODY_CHARS],
                    tokens,
                    ticket.locale or "",
                )
                texts.setdefault(customer_partition, []).append(words)
            source = str(source_partition)
            if fact.window > marks.get(source, -1):
                marks[source] = fact.window
            if self.stats.newest_created is None or ticket.created_ts > self.stats.newest_created:
                self.stats.newest_created = ticket.created_ts
            _add_context(context, fact, ticket)
        self.stats.received += len(records)
        await self.send_to_counting(out, by_partition, texts, marks, tagged.tokens_of)
        await self._send_tags(out, tagged)
        await self._send_context(out, context)
        await out.delivered()
        return marks

    async def _parse(self, records: Sequence[Any], out: Outbox) -> list[tuple[Ticket, int]]:
        """The batch's tickets with their ``tickets`` partition; the others dead-lettered."""
        good: list[tuple[Ticket, int]] = []
        latest = self.clock() + self.settings.max_future_hours * 3600  # once a batch
        max_bytes = self.settings.max_ticket_bytes
        for record in records:
            raw = record.value
            try:
                good.append((parse_ticket(raw, max_bytes, latest), record.partition))
            except TicketError as exc:
                self.stats.dead_letters += 1
                await out.send(self.topics["dead_letter"], value=dead_letter_record(raw, record.key, str(exc), record))
        return good

    def _tag(self, tickets: list[Ticket]) -> TaggedBatch:
        # Tags first, in one batched prediction: a ticket the helpdesk left untagged is
        # counted under its predicted tags when the models are sure of them.
        if not self.settings.tagging_enabled:
            return TaggedBatch([], {}, {}, {})
        tagged = tag_tickets(self.tagger, tickets, self.settings.partitions, training_topic(self.settings)[1])
        self.stats.count_uncertain(tagged.predictions)
        return tagged

    def _fact(self, ticket: Ticket, guess: dict[str, dict[str, Any]] | None) -> Fact:
        """The ticket's durable fact: its window and tags (the helpdesk's, else confident predictions)."""
        tags = [ticket.product_area, ticket.case_type, ticket.severity]
        if guess is not None and self.settings.count_predicted_tags:
            tags = [
                given or (None if guess[name]["uncertain"] else guess[name]["label"])
                for given, name in zip(tags, FIELDS_BY_TAG, strict=True)
            ]
        return Fact(
            ticket.id,
            window_start(ticket.created_ts, self.settings.window_seconds),
            tags[0] or UNASSIGNED,
            tags[1] or UNASSIGNED,
            tags[2] or UNASSIGNED,
            ticket.customer_id,
            int(ticket.created_ts),
        )

    async def send_to_counting(
        self,
        out: Outbox,
        by_partition: dict[int, list[Fact]],
        texts: dict[int, list[TicketWords]],
        marks: dict[str, int],
        tokens_of: str | None = None,
    ) -> None:
        """Facts (and their words) to their counting partitions, with the tickets partitions' watermarks.

        One message per partition and batch: all tickets of a customer land in the same
        partition, as if each had been sent keyed by its customer id. Every counting
        partition also hears how far in event time each tickets partition has got (its
        newest window): the watermark windows close by is the oldest of those.
        """
        patterns = self.settings.patterns_enabled
        for partition in range(self.settings.partitions):
            facts = by_partition.get(partition, [])
            if facts or marks:
                words = texts.get(partition, []) if patterns else None
                message = CountingBatch(facts, marks, words, tokens_of if words else None)
                await out.send_parts(self.topics["by_customer"], partition, message, ["facts", "texts"])

    async def _send_tags(self, out: Outbox, tagged: TaggedBatch) -> None:
        # The ticket with its predictions to tickets-classified, its reading to the label
        # join, its labels (fields the helpdesk filled in) to every worker's model.
        if tagged.classified:
            producer = await self.producer()
            for partition, records in tagged.classified.items():
                await out.send_records(producer, self.settings.topic_classified, partition, records)
        for partition, examples in tagged.labelled.items():
            await out.send_parts(self.topics["training"], partition, TrainingBatch(examples), ["examples"])
        for partition, kept_texts in tagged.to_join.items():
            await out.send_parts(self.topics["texts_to_join"], partition, {"texts": kept_texts}, ["texts"])

    async def _send_context(
        self, out: Outbox, context: dict[tuple[int, str, str], tuple[list[list[str]], Counter[str]]]
    ) -> None:
        # Examples and words travel straight to the spike watch: alerts show them.
        by_area_partition: dict[int, list[WindowContext]] = {}
        for (window, area, case_type), (examples, terms) in context.items():
            by_area_partition.setdefault(self.partition_of(area.encode()), []).append(
                WindowContext(window, area, case_type, examples, dict(terms.most_common(20)))
            )
        for partition, items in by_area_partition.items():
            await out.send_parts(self.topics["area_volumes"], partition, AreaContext(items), ["context"])


def _add_context(
    context: dict[tuple[int, str, str], tuple[list[list[str]], Counter[str]]], fact: Fact, ticket: Ticket
) -> None:
    """A ticket's subject words, and the ticket as an example of its window (two customers at most)."""
    examples, terms = context.setdefault((fact.window, fact.area, fact.case_type), ([], Counter()))
    terms.update(subject_terms(ticket.subject))
    if len(examples) < EXAMPLES_PER_WINDOW and all(e[1] != ticket.customer_id for e in examples):
        # masked whole, then cut: a cut first could leave half an address the mask no longer sees
        text = mask_personal(f"{ticket.subject}: {ticket.body}")[:EXAMPLE_CHARS]
        examples.append([ticket.id, ticket.customer_id, text])
