"""Every topic ticketpulse reads or writes, declared once: its name, key, value and partitioning.

The worker makes its Faust topics from this (:mod:`pipeline.worker`), the commands
create and check topics from it (:mod:`pipeline.runtime.kafka`), and the tests and
docs/architecture.md read it. Public topics are named by settings; the worker's own are
``<app id>-<suffix>``, with messages typed in :mod:`pipeline.messages`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline import messages
from pipeline.settings import Settings

__all__ = ["INTERNAL_SUFFIXES", "TopicSpec", "internal_topic_name", "topology", "training_partition", "training_topic"]


@dataclass(frozen=True)
class TopicSpec:
    """One topic: what a message's key and value are, and which partition a message goes to."""

    #: the topic's name on the broker
    name: str
    #: what the key is (``None``: no key)
    key: str | None
    #: what the value is: a type of :mod:`pipeline.messages`, or a description of public JSON
    value: Any
    #: which partition a message goes to
    partitioning: str
    #: one of the worker's own topics (``<app id>-...``), not a contract with other tools
    internal: bool = False
    #: extra topic configs it is created with (beyond the broker's defaults)
    configs: tuple[tuple[str, str], ...] = ()
    #: its partitions, when not ``TICKETPULSE_PARTITIONS``
    partitions: int | None = None


#: Apache Kafka's default retention (``log.retention.hours=168``), in milliseconds.
KAFKA_DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000

#: The worker's own topics, by role: the suffix of ``<app id>-<suffix>``.
INTERNAL_SUFFIXES = {
    "by_customer": "tickets-by-customer",
    "partials": "volume-partials",
    "area_volumes": "area-volumes",
    "training": "tagger-training",
    "training_ordered": "tagger-training-ordered",
    "pattern_tickets": "pattern-tickets",
    "ticket_patterns": "ticket-patterns",
    "texts_to_join": "texts-to-join",
}


def internal_topic_name(settings: Settings, role: str) -> str:
    """The name of one of the worker's own topics (``role``: a key of :data:`INTERNAL_SUFFIXES`).

    >>> internal_topic_name(Settings(app_id="tp"), "texts_to_join")
    'tp-texts-to-join'
    """
    return f"{settings.app_id}-{INTERNAL_SUFFIXES[role]}"


def training_topic(settings: Settings) -> tuple[str, int]:
    """The training topic of the tagger ``settings`` runs, and its partitions.

    The linear tagger's weights depend on the order of the labels, so its topic has one
    partition: one order that every worker reads (each worker's label join appends to it).
    Naive Bayes' counts do not: its topic has ``TICKETPULSE_PARTITIONS``, as before.

    >>> training_topic(Settings(app_id="tp")), training_topic(Settings(app_id="tp", tagger="words"))
    (('tp-tagger-training-ordered', 1), ('tp-tagger-training', 4))
    """
    if settings.tagger == "linear":
        return internal_topic_name(settings, "training_ordered"), 1
    return internal_topic_name(settings, "training"), settings.partitions


def training_partition(settings: Settings, partition: int) -> int:
    """The training partition of a ticket whose id's partition (of ``TICKETPULSE_PARTITIONS``) is ``partition``.

    >>> training_partition(Settings(), 3), training_partition(Settings(tagger="words"), 3)
    (0, 3)
    """
    return partition % training_topic(settings)[1]


def _texts_retention(settings: Settings) -> tuple[tuple[str, str], ...]:
    # where the label join finds its kept texts again after a restart: for the whole label
    # horizon and a day more (a worker down a while), never less than Kafka's default week
    horizon_ms = int((settings.label_horizon_hours + 24) * 3600 * 1000)
    return (("retention.ms", str(max(horizon_ms, KAFKA_DEFAULT_RETENTION_MS))),)


def topology(settings: Settings) -> dict[str, TopicSpec]:
    """Every topic of an app with ``settings``, by role, in the data path's order.

    >>> roles = topology(Settings(app_id="tp"))
    >>> roles["tickets"].name, roles["by_customer"].name, roles["by_customer"].value.__name__
    ('tickets', 'tp-tickets-by-customer', 'CountingBatch')
    """

    def own(role: str, key: str | None, value: Any, partitioning: str, **more: Any) -> TopicSpec:
        return TopicSpec(internal_topic_name(settings, role), key, value, partitioning, internal=True, **more)

    by_area = "Kafka's partitioner of the area"
    return {
        "tickets": TopicSpec(settings.topic_tickets, "ticket id", "a ticket (JSON)", "the producer's (ticket id)"),
        "dead_letter": TopicSpec(
            settings.topic_dead_letter, None, "the raw bytes, the error, source topic, partition, offset", "any"
        ),
        "by_customer": own("by_customer", None, messages.CountingBatch, "Kafka's partitioner of the customer id"),
        "partials": own("partials", None, messages.VolumePartials, "Kafka's partitioner of the volume key"),
        "area_volumes": own("area_volumes", None, messages.AreaMessage, by_area),
        "alerts": TopicSpec(settings.topic_alerts, "area", "a spike alert (JSON)", "the producer's (area)"),
        "product_events": TopicSpec(
            settings.topic_product_events, "area", "a release, fix or docs change (JSON)", "the producer's (area)"
        ),
        "classified": TopicSpec(
            settings.topic_classified, "ticket id", "the ticket, its predictions, the model version", "ticket id"
        ),
        "texts_to_join": own(
            "texts_to_join",
            None,
            "{'texts': [{id, reading, predicted}]}",
            "Kafka's partitioner of the ticket id",
            configs=_texts_retention(settings),
        ),
        "labels": TopicSpec(settings.topic_labels, "ticket id", "a human tag or correction (JSON)", "ticket id"),
        "training": TopicSpec(
            training_topic(settings)[0],
            None,
            messages.TrainingBatch,
            "one partition (linear tagger), else Kafka's partitioner of the ticket id",
            internal=True,
            partitions=training_topic(settings)[1],
        ),
        "pattern_tickets": own("pattern_tickets", None, messages.PatternTickets, by_area),
        "ticket_patterns": own("ticket_patterns", None, messages.TicketPatterns, "that of the pattern's area"),
    }
