"""The worker: the Faust app's topics, tables and agents, each agent wired to its stage.

Where a ticket goes (each stage is a class in the folder of its step; docs/architecture.md):

``POST /webhooks/{source}`` (:mod:`pipeline.ingest.web`) -> ``tickets`` (key: ticket id)
    -> :class:`~pipeline.ingest.reader.TicketReader` (batches straight from the Kafka client)
    -> :class:`~pipeline.ingest.validate.Validate` -> bad input to ``tickets-dead-letter``
    -> ``<app>-tickets-by-customer`` -> :class:`~pipeline.counting.count.Count` (each id once)
    -> ``<app>-volume-partials`` -> :class:`~pipeline.counting.merge.Merge` -> ``ticket_volume``
    -> ``<app>-area-volumes`` -> :class:`~pipeline.alerts.watch.Watch` -> ``ticket-alerts``,
       ``ticket_spike``, ``ticket_baseline`` -> ``deliver`` (Slack, signed webhook)
``Validate`` also tags (:mod:`pipeline.tagging.tag`): ``tickets-classified``, the reading to
``<app>-texts-to-join`` -> :class:`~pipeline.tagging.join.JoinLabels` (with ``ticket-labels``)
-> ``<app>-tagger-training-ordered`` (one partition; ``<app>-tagger-training`` with
``TICKETPULSE_TAGGER=words``) -> :class:`~pipeline.tagging.learn.LearnLabels` (every worker).
``Count`` sends newly counted tickets to ``<app>-pattern-tickets`` ->
:class:`~pipeline.patterns.stage.GroupPatterns` -> ``pattern_volume``, ``pattern_spike``, alerts.
``product-events`` -> :class:`~pipeline.alerts.product_events.ProductEvents` -> ``product_event``.

The topics are declared in :mod:`pipeline.topology`, their messages in :mod:`pipeline.messages`,
the series in :mod:`pipeline.outputs.series`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP

from pipeline.alerts.deliver import add_delivery
from pipeline.alerts.product_events import ProductEvents
from pipeline.alerts.watch import Watch
from pipeline.counting.count import Count
from pipeline.counting.merge import Merge
from pipeline.ingest.reader import TicketReader
from pipeline.ingest.validate import Validate
from pipeline.ingest.web import add_web_views
from pipeline.outputs.sinks import InfluxSink, create_sink
from pipeline.patterns.stage import GroupPatterns
from pipeline.runtime.app import new_app
from pipeline.runtime.batching import SkippedMessages
from pipeline.runtime.kafka import broker_reachable
from pipeline.runtime.liveness import BrokerWatchdog, RepeatFilter
from pipeline.runtime.stats import PipelineStats, StatsWriter
from pipeline.runtime.tables import PartitionedTable
from pipeline.settings import Settings
from pipeline.tagging.choice import Tagger, new_tagger, tagger_checkpoint
from pipeline.tagging.join import JoinLabels
from pipeline.tagging.learn import LearnLabels
from pipeline.topology import topology

__all__ = ["Pipeline", "build_pipeline", "tagger_checkpoint"]


@dataclass
class Pipeline:
    """The app and everything registered on it."""

    app: faust.App
    settings: Settings
    sink: InfluxSink
    stats: PipelineStats
    #: the Faust topics by role (:func:`pipeline.topology.topology`)
    topics: dict[str, Any]
    #: the stages by name
    stages: dict[str, Any]


def faust_topics(app: faust.App, settings: Settings) -> dict[str, Any]:
    """The Faust topics of every role this worker reads or sends to with Faust.

    Values are raw (the stages decode their typed messages) but dead letters' and alerts' (JSON).
    """
    json_values = {"dead_letter", "alerts"}
    topics = {}
    for role, spec in topology(settings).items():
        if role == "classified":
            continue  # sent as whole record batches through the Kafka client (Outbox.send_records)
        topics[role] = app.topic(
            spec.name,
            key_serializer="raw",
            value_serializer="json" if role in json_values else "raw",
            partitions=spec.partitions or settings.partitions,
            internal=spec.internal,
        )
    return topics


def _tagger(settings: Settings, loaded: tuple[Tagger, dict[int, int]] | None) -> tuple[Tagger, dict[int, int] | None]:
    if loaded is not None:
        return loaded[0], dict(loaded[1])
    return new_tagger(settings), None  # TICKETPULSE_TAGGER


def build_pipeline(
    settings: Settings, sink: InfluxSink | None = None, loaded_tagger: tuple[Tagger, dict[int, int]] | None = None
) -> Pipeline:
    """Create the Faust app with its topics, tables and agents for ``settings``.

    ``loaded_tagger``: the tagger and the training positions it includes, already loaded
    (``ticketpulse worker`` loads its checkpoint to check it before it starts; a large
    one takes seconds, not to be paid twice). Without it, the worker loads them itself.
    """
    app = new_app(settings)
    sink = sink or create_sink(settings)
    stats = PipelineStats()
    topics = faust_topics(app, settings)
    stages: dict[str, Any] = {}
    tagger, preloaded = _tagger(settings, loaded_tagger)
    # set once the tagger's checkpoint (or warm start) is loaded: no ticket is predicted before
    tagger_ready = asyncio.Event()
    if not settings.tagging_enabled:
        tagger_ready.set()

    def table(name: str, kind: type = PartitionedTable) -> Any:
        made = kind(app, name=name, key_type=str, partitions=settings.partitions)
        app.tables.add(made)
        return made

    guards: list[SkippedMessages] = []

    def read_on_from_committed(_app: Any, /, *_args: Any, signal: Any, **_kwargs: Any) -> None:
        # a rebalance: partitions are read on from their committed offsets
        for guard in guards:
            guard.forget()

    app.on_partitions_revoked.connect(read_on_from_committed)

    def started_at(topic: str, partition: int) -> int | None:
        # the committed offset Faust's consumer seeked the partition to at its assignment
        # (Faust keeps it in a private mapping, updated by each commit: read before the
        # partition's first batch is acknowledged, it is still where the stream started)
        offsets = getattr(app.consumer, "_committed_offset", None)
        return None if offsets is None else offsets.get(TP(topic, partition))

    def batches(topic: Any, name: str, on_batch: Any, start_of: Any = None) -> None:
        # an agent that hands its stage whole batches (the per-ticket work is a dict lookup
        # and a few additions; sends and writes happen once per batch), with every message
        # Faust acknowledged without handing it over read again (SkippedMessages)
        # a stage that records how far it got says where its next batch starts; the others,
        # where Faust's consumer was seeked to
        guard = SkippedMessages(settings.bootstrap_servers, name, start_of=start_of or started_at)
        guards.append(guard)

        async def agent(stream: Any) -> None:
            async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
                await on_batch(await guard.complete(events))

        agent.__name__ = agent.__qualname__ = name
        app.agent(topic, name=name)(agent)

    validate = stages["validate"] = Validate(settings, topics, stats, tagger, app.maybe_start_producer)
    count = stages["count"] = Count(settings, topics, stats, table("tickets-first-seen"))
    count.first_seen.on_recover(count.rebuild)
    reader = stages["read_tickets"] = TicketReader(settings, validate, tagger_ready, count.heard_windows)
    app.task(reader.run)
    batches(topics["by_customer"], "count", count.on_batch, count.start_of)
    merge = stages["merge"] = Merge(settings, topics, stats, sink, table("volume-totals"))
    merge.totals_table.on_recover(merge.rebuild)
    batches(topics["partials"], "merge", merge.on_batch, merge.start_of)
    watch = stages["watch"] = Watch(settings, topics, stats, sink, table("volume-watch"))
    batches(topics["area_volumes"], "watch", watch.on_batch)
    deliverer = stages["deliver"] = add_delivery(app, settings, topics["alerts"])
    add_web_views(app, settings, topics["tickets"])
    product_events = stages["product_events"] = ProductEvents(settings, topics, stats, sink)
    batches(topics["product_events"], "product_events", product_events.on_batch)
    # the HTTP clients of the sink and the alert delivery, closed once no agent uses them
    app.closers += [sink.close, deliverer.close]

    join = stages["join_labels"] = JoinLabels(settings, topics, stats, table("label-texts"))

    async def send_step(marker: bytes) -> None:  # the linear tagger's step marker, to its one partition
        await topics["training"].send(partition=0, value=marker, value_serializer="raw")

    learn = stages["learn_labels"] = LearnLabels(
        settings, topics["training"].get_topic_name(), tagger, sink, tagger_ready, preloaded, send_step=send_step
    )
    if settings.tagging_enabled:
        labels_in = app.topic(
            topics["texts_to_join"].get_topic_name(),
            settings.topic_labels,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )
        batches(labels_in, "join_labels", join.on_batch)
        # often enough that an expired label is reported within a quarter of the horizon
        app.timer(interval=min(60.0, settings.label_horizon_hours * 900), name="expire_label_texts")(join.expire)
        app.task(learn.run)

    counting_topic = topics["by_customer"].get_topic_name()

    def owned() -> set[int] | None:
        assigned = app.assignor.assigned_actives()
        return {tp.partition for tp in assigned if tp.topic == counting_topic} if assigned else None

    group = stages["group_patterns"] = GroupPatterns(settings, topics, stats, sink, owned)
    if settings.patterns_enabled:
        app.task(group.run)

    def extra() -> dict[str, int]:
        return {
            "alerts_delivered": deliverer.sent,
            "alerts_undelivered": deliverer.failed,
            "corrections": tagger.corrections,
        }

    watchdog = stages["broker_watchdog"] = BrokerWatchdog(
        functools.partial(broker_reachable, settings),
        [spec.name for spec in topology(settings).values()],
        settings.broker_url,
        settings.broker_lost_seconds,
    )
    app.task(_watch_broker(watchdog))

    stats_writer = stages["stats"] = StatsWriter(stats, sink, settings.app_id, extra)
    app.timer(interval=settings.stats_seconds, name="write_stats")(stats_writer.write)
    return Pipeline(app=app, settings=settings, sink=sink, stats=stats, topics=topics, stages=stages)


def _watch_broker(watchdog: BrokerWatchdog) -> Any:
    async def watch_broker() -> None:
        """The broker watchdog; and, once the worker's logging is set up, repeated lines held back."""
        for handler in logging.getLogger().handlers:
            handler.addFilter(RepeatFilter())
        await watchdog.run()

    return watch_broker
