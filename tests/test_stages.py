"""Each stage of the worker called directly, one batch at a time, without a broker.

The topics, tables and sink here are small stand-ins that record what a stage sends; the
messages are decoded with the topic's own codec (pipeline.messages), as the next stage
reads them. The same stages run against the real broker and InfluxDB in the integration
tests.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson
from aiokafka import TopicPartition

from pipeline.alerts.product_events import ProductEvents
from pipeline.alerts.watch import Watch
from pipeline.counting.count import Count
from pipeline.counting.merge import Merge
from pipeline.ingest.schema import parse_ticket
from pipeline.ingest.validate import Validate
from pipeline.messages import (
    AreaContext,
    AreaMessage,
    AreaRow,
    AreaVolumes,
    Codec,
    CountingBatch,
    PartialRow,
    PatternTicket,
    PatternTickets,
    TrainingBatch,
    VolumePartials,
    encode,
)
from pipeline.patterns.stage import GroupPatterns
from pipeline.runtime.stats import PipelineStats
from pipeline.settings import Settings
from pipeline.tagging.join import JoinLabels
from pipeline.tagging.learn import LearnLabels
from pipeline.tagging.tag import tag_tickets
from pipeline.tagging.tagger import TicketTagger

H = 3600
MONDAY = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())


class Topic:
    """Records what a stage sends to a Faust topic; each send's future is already done."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[SimpleNamespace] = []

    def get_topic_name(self) -> str:
        return self.name

    async def send(self, *, key: Any = None, value: Any = None, partition: int | None = None, **_: Any) -> Any:
        self.sent.append(SimpleNamespace(key=key, value=value, partition=partition))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def decoded(self, kind: Any) -> list[Any]:
        codec = Codec(kind)
        return [codec.decode(m.value) for m in self.sent]

    def as_events(self) -> list[SimpleNamespace]:
        """What an agent of the next stage gets: its messages with partition and offset."""
        return [
            SimpleNamespace(
                value=m.value, key=m.key, message=SimpleNamespace(topic=self.name, partition=m.partition, offset=n)
            )
            for n, m in enumerate(self.sent)
        ]


class Table(dict):
    """A Faust table's surface the stages use."""

    def __init__(self, active: Iterable[int] = (0,)) -> None:
        super().__init__()
        self.active_partitions = set(active)
        self.on_revoked: list[Any] = []
        self.on_recovered: list[Any] = []

    async def delivered(self) -> None:
        return None


class Sink:
    def __init__(self) -> None:
        self.points: list[Any] = []

    async def write(self, points: list[Any]) -> None:
        self.points += points


def _topics(settings: Settings) -> dict[str, Topic]:
    from pipeline.topology import topology

    return {role: Topic(spec.name) for role, spec in topology(settings).items()}


def _settings(**overrides: Any) -> Settings:
    return Settings(**{"partitions": 1, "app_id": "tp", "tagging_enabled": False, **overrides})


def _ticket(n: int, created: str, customer: str, body: str = "The CSV export times out") -> bytes:
    doc = {"id": f"t{n}", "created_at": created, "customer_id": customer, "subject": "Export fails", "body": body}
    return orjson.dumps({**doc, "product_area": "reports"})


def _records(raws: list[bytes]) -> list[SimpleNamespace]:
    return [SimpleNamespace(value=raw, key=None, topic="tickets", partition=0, offset=n) for n, raw in enumerate(raws)]


def test_validate_sends_good_tickets_to_counting_and_bad_ones_to_the_dead_letter_topic_with_the_reason() -> None:
    settings = _settings()
    topics, stats = _topics(settings), PipelineStats()
    validate = Validate(settings, topics, stats, TicketTagger(), producer=None, clock=lambda: MONDAY + 10 * H)  # type: ignore[arg-type]
    raws = [
        _ticket(1, "2026-03-02T09:15:00+00:00", "c1", "Export fails, write to ana@example.com"),
        b"{not json",
        _ticket(2, "2026-03-02T09:40:00+00:00", "c2"),
    ]
    marks = asyncio.run(validate.on_batch(_records(raws)))
    (dead,) = [m.value for m in topics["dead_letter"].sent]
    assert dead["offset"] == 1 and "JSON" in dead["error"] and dead["value"] == "{not json"
    (batch,) = topics["by_customer"].decoded(CountingBatch)
    assert [(f.ticket_id, f.window, f.area, f.case_type) for f in batch.facts] == [
        ("t1", MONDAY + 9 * H, "reports", "unassigned"),
        ("t2", MONDAY + 9 * H, "reports", "unassigned"),
    ]
    assert marks == batch.watermarks == {"0": MONDAY + 9 * H}
    (context,) = topics["area_volumes"].decoded(AreaMessage)
    assert isinstance(context, AreaContext)
    examples = [e for c in context.context for e in c.examples]
    assert {e[0] for e in examples} == {"t1", "t2"} and not any("ana@example.com" in e[2] for e in examples)
    assert (stats.received, stats.dead_letters) == (3, 1)


def test_validate_refuses_a_ticket_dated_far_ahead_of_the_injected_clock() -> None:
    settings = _settings()
    topics = _topics(settings)
    validate = Validate(settings, topics, PipelineStats(), TicketTagger(), producer=None, clock=lambda: MONDAY)  # type: ignore[arg-type]
    asyncio.run(validate.on_batch(_records([_ticket(1, "2026-03-09T00:00:00+00:00", "c1")])))
    (dead,) = [m.value for m in topics["dead_letter"].sent]
    assert "ahead" in dead["error"] and topics["by_customer"].sent == []


def _validated(settings: Settings, raws: list[bytes]) -> dict[str, Topic]:
    topics = _topics(settings)
    validate = Validate(settings, topics, PipelineStats(), TicketTagger(), producer=None, clock=lambda: MONDAY + 40 * H)  # type: ignore[arg-type]
    asyncio.run(validate.on_batch(_records(raws)))
    return topics


def test_count_then_merge_count_a_ticket_sent_twice_once_and_write_the_window_exactly() -> None:
    settings = _settings()
    raws = [_ticket(n, f"2026-03-02T09:{n:02d}:00+00:00", f"c{n % 3}") for n in range(10)]
    validated = _validated(settings, raws + raws[:4])  # four re-sent
    stats = PipelineStats()
    first_seen = Table()
    count = Count(settings, validated, stats, first_seen)
    asyncio.run(count.on_batch(validated["by_customer"].as_events()))
    assert (stats.duplicates, stats.counted) == (4, 10)
    assert sorted(len(facts) for key, facts in first_seen.items() if "__" not in key) == [10]
    partials = validated["partials"].decoded(VolumePartials)
    roll_up = [r for p in partials for r in p.rows if r.volume_key == f'[{MONDAY + 9 * H},"reports","all","all"]']
    assert [(r.tickets, r.customers) for r in roll_up] == [(10, 3)]
    (for_patterns,) = validated["pattern_tickets"].decoded(PatternTickets)
    assert sorted(t.ticket_id for t in for_patterns.tickets) == sorted(f"t{n}" for n in range(10))

    sink = Sink()
    merge = Merge(settings, validated, PipelineStats(), sink, Table())
    asyncio.run(merge.on_batch(validated["partials"].as_events()))
    volumes = {tuple(sorted(p.tags.items())): dict(p.fields) for p in sink.points if p.measurement == "ticket_volume"}
    key = (("area", "reports"), ("case_type", "all"), ("severity", "all"), ("window", "1h"))
    assert volumes[key] == {"tickets": 10, "customers": 3}
    (to_watch,) = [m for m in validated["area_volumes"].decoded(AreaMessage) if isinstance(m, AreaVolumes)]
    # with when its newest ticket came: when an episode it opens would have fired
    assert AreaRow(MONDAY + 9 * H, "reports", "all", 10, 3, MONDAY + 9 * H + 9 * 60) in to_watch.rows


def _partials(offset: int, rows: list[tuple[int, str, int, int, int]], marks: dict[str, int]) -> SimpleNamespace:
    """A ``volume-partials`` event of merging partition 0 (rows: window, area, source, tickets, customers)."""
    message = VolumePartials(
        [PartialRow(f'[{w},"{area}","all","all"]', p, t, c, w + 60) for w, area, p, t, c in rows], marks
    )
    return SimpleNamespace(value=encode(message), key=None, message=SimpleNamespace(partition=0, offset=offset))


def _written(sink: Sink) -> dict[tuple[int, str], tuple[int, int]]:
    """The last ``ticket_volume`` point of each (window, area), as InfluxDB keeps it."""
    return {
        (int(p.time), p.tags["area"]): (p.fields["tickets"], p.fields["customers"])
        for p in sink.points
        if p.measurement == "ticket_volume"
    }


def test_the_merge_stores_a_batch_as_one_chunk_and_a_rebuilt_merge_goes_on_from_it() -> None:
    """One durable record a batch and merging partition, not one a total (a backlog's batch
    touched thousands); rebuilt from the table (chunks, and keys of the layout before), the
    totals are the same, and a batch read again after a crash overwrites no chunk."""
    settings = _settings(partitions=2)
    areas = [f"area-{n}" for n in range(30)]
    first = [_partials(0, [(MONDAY + h * H, a, 0, 2, 1) for h in range(5) for a in areas], {"0": MONDAY})]
    table = Table()
    merge = Merge(settings, _topics(settings), PipelineStats(), Sink(), table)
    asyncio.run(merge.on_batch(first))
    assert sorted(table) == ["0/__next_offset__", "0/__watermarks__", "0/~totals~/0"]
    assert len(table["0/~totals~/0"]) == 150 and table["0/__next_offset__"] == 1  # where the next batch starts
    # the layout before: one key a total (a worker upgraded in place reads them too)
    table[f'0/[{MONDAY},"old-area","all","all"]'] = {"1": [4, 3, MONDAY]}
    restarted, sink = Merge(settings, _topics(settings), PipelineStats(), Sink(), table), Sink()
    restarted.sink = sink
    asyncio.run(restarted.rebuild())
    assert restarted.start_of("partials", 0) == 1 and restarted.start_of("partials", 1) is None
    again = _partials(1, [(MONDAY, "area-0", 1, 3, 2), (MONDAY, "old-area", 0, 1, 1)], {"0": MONDAY, "1": MONDAY})
    asyncio.run(restarted.on_batch([*first, again]))  # the first batch read again, after a crash
    assert _written(sink) == {(MONDAY, "area-0"): (5, 3), (MONDAY, "old-area"): (5, 4)}
    assert len(table["0/~totals~/0"]) == 150 and table["0/~totals~/1"] == [
        [f'[{MONDAY},"area-0","all","all"]', {"0": [2, 1, MONDAY + 60], "1": [3, 2, MONDAY + 60]}],
        [f'[{MONDAY},"old-area","all","all"]', {"1": [4, 3, MONDAY], "0": [1, 1, MONDAY + 60]}],
    ]


def test_the_merge_lets_go_of_windows_the_allowed_lateness_has_closed() -> None:
    """Totals and chunks of windows closed for every counting partition are let go: the
    merge's state is bounded by the allowed lateness, not by history; a partial of such a
    window (a counting partition restarted from an older watermark) is not merged."""
    settings = _settings(partitions=2, allowed_lateness_seconds=2 * H)
    table, sink = Table(), Sink()
    merge = Merge(settings, _topics(settings), PipelineStats(), sink, table)
    for day in range(10):
        window = MONDAY + day * 24 * H
        rows = [(window, "reports", p, 3, 2) for p in (0, 1)]
        asyncio.run(merge.on_batch([_partials(day, rows, {"0": window, "1": window})]))
    assert sorted(table) == ["0/__next_offset__", "0/__watermarks__", "0/~totals~/9"]
    assert list(merge.totals) == [f'0/[{MONDAY + 9 * 24 * H},"reports","all","all"]']
    late = _partials(10, [(MONDAY + 8 * 24 * H, "reports", 0, 9, 9)], {"0": MONDAY + 9 * 24 * H})
    asyncio.run(merge.on_batch([late]))
    assert _written(sink)[(MONDAY + 8 * 24 * H, "reports")] == (6, 4)


def test_count_rebuilt_from_its_table_counts_nothing_twice() -> None:
    settings = _settings()
    validated = _validated(settings, [_ticket(n, "2026-03-02T09:30:00+00:00", f"c{n}") for n in range(5)])
    first_seen = Table()
    asyncio.run(Count(settings, validated, PipelineStats(), first_seen).on_batch(validated["by_customer"].as_events()))
    restarted, stats = Count(settings, validated, PipelineStats(), first_seen), PipelineStats()
    restarted.stats = stats
    asyncio.run(restarted.rebuild())
    events = validated["by_customer"].as_events()
    # where each counting partition's next batch starts: after every message recorded
    assert {p: restarted.start_of("by_customer", p) for p in {e.message.partition for e in events}} == {
        p: max(e.message.offset for e in events if e.message.partition == p) + 1
        for p in {e.message.partition for e in events}
    }
    asyncio.run(restarted.on_batch(events))  # read again after a crash
    assert (stats.counted, stats.duplicates) == (0, 5)


def test_a_backlog_s_batch_is_stored_a_chunk_a_message_each_under_the_producer_s_limit() -> None:
    from pipeline.runtime.outbox import MAX_INTERNAL_MESSAGE_BYTES

    settings = _settings()
    topics = _topics(settings)
    # a backlog: many validated batches of one counting partition, counted in one batch
    # (all of SUMO through one worker once made a chunk of 2.7 MB, which the producer refused)
    for start in range(0, 3000, 500):
        batch = _validated(
            settings, [_ticket(n, "2026-03-02T09:30:00+00:00", f"c{n}") for n in range(start, start + 500)]
        )
        topics["by_customer"].sent += batch["by_customer"].sent
    events = topics["by_customer"].as_events()
    assert len(events) == 6
    first_seen, stats = Table(), PipelineStats()
    asyncio.run(Count(settings, topics, stats, first_seen).on_batch(events))
    chunks = {key: facts for key, facts in first_seen.items() if "__" not in key}
    assert stats.counted == 3000 and sorted(len(f) for f in chunks.values()) == [500] * 6
    assert max(len(orjson.dumps(f)) for f in chunks.values()) < MAX_INTERNAL_MESSAGE_BYTES
    restarted, again = Count(settings, topics, PipelineStats(), first_seen), PipelineStats()
    restarted.stats = again
    asyncio.run(restarted.rebuild())
    asyncio.run(restarted.on_batch(events))  # the backlog read again after a crash: nothing counted twice
    assert (again.counted, again.duplicates) == (0, 3000)


def _area_volumes(windows: Iterable[tuple[int, int]], watermark: int) -> list[SimpleNamespace]:
    rows = [AreaRow(window, "reports", "all", customers, customers) for window, customers in windows]
    value = encode(AreaVolumes(rows, 0, watermark))
    return [
        SimpleNamespace(value=value, key=None, message=SimpleNamespace(topic="tp-area-volumes", partition=0, offset=0))
    ]


def test_watch_alerts_once_on_a_spike_after_weeks_of_normal_volume() -> None:
    settings = _settings()
    topics, sink = _topics(settings), Sink()
    watch = Watch(settings, topics, PipelineStats(), sink, Table())
    normal = [(MONDAY + h * H, 3 + (h % 2)) for h in range(21 * 24)]
    spike_window = MONDAY + 21 * 24 * H
    asyncio.run(watch.on_batch(_area_volumes(normal, spike_window)))
    assert topics["alerts"].sent == []
    asyncio.run(watch.on_batch(_area_volumes([(spike_window, 60)], spike_window + 2 * H)))
    alerts = [m.value for m in topics["alerts"].sent]
    assert [(a["area"], a["event"], a["customers"]) for a in alerts][:1] == [("reports", "opened", 60)]
    spikes = [p for p in sink.points if p.measurement == "ticket_spike"]
    assert spikes and spikes[0].fields["customers"] == 60


def test_product_events_are_stored_and_a_bad_one_is_dead_lettered() -> None:
    settings = _settings()
    topics, sink = _topics(settings), Sink()
    stage = ProductEvents(settings, topics, PipelineStats(), sink)
    good = {"kind": "fix", "area": "reports", "at": "2026-03-02T10:00:00+00:00", "ref": "#12"}
    events = [
        SimpleNamespace(value=raw, key=None, message=SimpleNamespace(topic="product-events", partition=0, offset=n))
        for n, raw in enumerate([orjson.dumps(good), b'{"kind": "party"}'])
    ]
    asyncio.run(stage.on_batch(events))
    (point,) = sink.points
    assert (point.measurement, point.tags["area"], point.fields["ref"]) == ("product_event", "reports", "#12")
    (dead,) = [m.value for m in topics["dead_letter"].sent]
    assert dead["offset"] == 1 and dead["error"]
    (forwarded,) = topics["area_volumes"].decoded(AreaMessage)
    assert forwarded.product_event["ref"] == "#12"


def test_a_late_label_is_joined_to_its_tickets_words_and_learned() -> None:
    settings = _settings(tagging_enabled=True)
    topics = _topics(settings)
    ticket = parse_ticket(_ticket(7, "2026-03-02T09:00:00+00:00", "c1"))
    tagged = tag_tickets(TicketTagger(), [ticket], settings.partitions)
    join = JoinLabels(settings, topics, PipelineStats(), Table())
    texts = SimpleNamespace(
        value=orjson.dumps({"texts": tagged.to_join[0]}),
        key=None,
        message=SimpleNamespace(topic="tp-texts-to-join", partition=0, offset=0),
    )
    label = SimpleNamespace(
        value=orjson.dumps({"id": "t7", "case_type": "bug"}),
        key=b"t7",
        message=SimpleNamespace(topic=settings.topic_labels, partition=0, offset=0),
    )
    asyncio.run(join.on_batch([texts, label]))
    (training,) = topics["training"].decoded(TrainingBatch)
    (example,) = training.examples
    assert (example["id"], example["case_type"]) == ("t7", "bug") and "export" in example["reading"]

    tagger = TicketTagger()
    learn = LearnLabels(settings, "tp-tagger-training", tagger, Sink(), asyncio.Event(), preloaded={})
    record = SimpleNamespace(value=topics["training"].sent[0].value, offset=41)
    positions: dict[int, int] = {}
    assert learn.on_batch({TopicPartition("tp", 0): [record]}, positions) == 1
    assert positions == {0: 42} and tagger.learned["case_type"] == 1


def test_patterns_group_a_closed_hours_tickets_and_count_them_exactly() -> None:
    settings = _settings()
    topics, sink = _topics(settings), Sink()
    stage = GroupPatterns(settings, topics, PipelineStats(), sink, owned=lambda: {0})
    window = MONDAY + 9 * H
    tickets = [
        PatternTicket(
            f"t{n}",
            window,
            "reports",
            "bug",
            f"c{n % 4}",
            "2026-03-02T09:10:00+00:00",
            "Export fails",
            "The CSV export times out",
        )
        for n in range(6)
    ]
    message = encode(PatternTickets(tickets, {"0": window + 2 * H}))
    asyncio.run(stage.on_batch({TopicPartition("tp", 0): [SimpleNamespace(value=message, offset=0)]}))
    volumes = [p for p in sink.points if p.measurement == "pattern_volume"]
    assert [(p.fields["tickets"], p.fields["customers"]) for p in volumes] == [(6, 4)]
    (assigned,) = [orjson.loads(m.value)["tickets"] for m in topics["ticket_patterns"].sent]
    assert len(assigned) == 6 and len({pid for _, pid in assigned}) == 1


def _grouped(settings: Settings, messages: list[Any], stage: GroupPatterns) -> list[list[str]]:
    events = [SimpleNamespace(value=encode(m), offset=n) for n, m in enumerate(messages)]
    asyncio.run(stage.on_batch({TopicPartition("tp", 0): events}))
    return sorted(a for m in stage.topics["ticket_patterns"].sent for a in orjson.loads(m.value)["tickets"])


def test_a_ticket_is_tokenized_once_its_ids_travel_from_tagging_to_the_grouper(monkeypatch: Any) -> None:
    from pipeline.tagging.choice import make_tagger
    from pipeline.text.embedding import shared_encoder

    settings = _settings(tagger="linear", tagging_enabled=True)
    texts = [
        ("Export fails", "The CSV export times out"),
        ("CSV export hangs", "Export to CSV hangs at 99 percent"),
        ("Refund please", "I want my money back for last month's invoice"),
    ]
    raws = [
        orjson.dumps(
            {
                "id": f"t{n}",
                "created_at": f"2026-03-02T09:{n:02d}:00+00:00",
                "customer_id": f"c{n}",
                "subject": texts[n % 3][0],
                "body": texts[n % 3][1],
                "product_area": "reports",
            }
        )
        for n in range(9)
    ]
    topics = _topics(settings)
    tagger = make_tagger("linear")
    validate = Validate(settings, topics, PipelineStats(), tagger, producer=None, clock=lambda: MONDAY + 40 * H)  # type: ignore[arg-type]
    validate._send_tags = lambda out, tagged: asyncio.sleep(0)  # type: ignore[method-assign]  # not what is tested
    asyncio.run(validate.on_batch(_records(raws)))
    model = shared_encoder().model_id
    assert {m.tokens_of for m in topics["by_customer"].decoded(CountingBatch) if m.texts} == {model}
    asyncio.run(Count(settings, topics, PipelineStats(), Table()).on_batch(topics["by_customer"].as_events()))
    carried = [m for m in topics["pattern_tickets"].decoded(PatternTickets) if m.tickets]
    assert {m.tokens_of for m in carried} == {model}
    assert all(t.tokens for m in carried for t in m.tickets)
    closing = PatternTickets([], {"0": MONDAY + 11 * H})
    # the grouper embeds the ids it is given and tokenizes nothing ...
    calls: list[int] = []
    tokenize = shared_encoder().tokenizer.encode_batch_fast
    monkeypatch.setattr(
        shared_encoder().tokenizer,
        "encode_batch_fast",
        lambda texts, **kw: calls.append(len(texts)) or tokenize(texts, **kw),
    )
    with_ids = _grouped(
        settings, [*carried, closing], GroupPatterns(settings, _topics(settings), PipelineStats(), Sink(), lambda: {0})
    )
    assert calls == []
    # ... and forms the patterns it forms from the text (ids of another model are not trusted)
    other = [PatternTickets(m.tickets, m.watermarks, "another-model@1#0") for m in carried]
    from_text = _grouped(
        settings, [*other, closing], GroupPatterns(settings, _topics(settings), PipelineStats(), Sink(), lambda: {0})
    )
    assert calls and with_ids == from_text and len(with_ids) == 9
    assert len({pid for _, pid in with_ids}) == 2  # the two export tickets' wordings together, refunds apart


def test_a_tickets_locale_travels_from_tagging_to_the_grouper_which_groups_per_language() -> None:
    settings = _settings()
    locales = ["en-US", "pt-BR", None]
    raws = [
        orjson.dumps(
            {
                "id": f"t{n}",
                "created_at": f"2026-03-02T09:{n:02d}:00+00:00",
                "customer_id": f"c{n}",
                "subject": "Export fails",
                "body": "The CSV export times out",
                "product_area": "reports",
                **({"locale": locales[n % 3]} if locales[n % 3] else {}),
            }
        )
        for n in range(9)
    ]
    topics = _validated(settings, raws)
    asyncio.run(Count(settings, topics, PipelineStats(), Table()).on_batch(topics["by_customer"].as_events()))
    carried = [m for m in topics["pattern_tickets"].decoded(PatternTickets) if m.tickets]
    assert sorted(t.locale for m in carried for t in m.tickets) == sorted(["", "en-US", "pt-BR"] * 3)
    closing = PatternTickets([], {"0": MONDAY + 11 * H})
    stage = GroupPatterns(settings, _topics(settings), PipelineStats(), Sink(), lambda: {0})
    assigned = dict(_grouped(settings, [*carried, closing], stage))
    # one wording, three languages as the locales say (none, en, pt): three patterns of three customers
    assert sorted(Counter(assigned.values()).values()) == [3, 3, 3]
    assert {assigned[f"t{n}"] for n in (0, 3, 6)} == {assigned["t0"]}


def test_the_watch_state_of_the_longest_tickets_allowed_stays_far_under_the_producers_limit() -> None:
    from pipeline.ingest.schema import MAX_SUBJECT_CHARS
    from pipeline.runtime.tables import freeze

    settings = _settings()
    raws = []
    for n in range(300):  # one area, three open hours, each subject one longest word, bodies at their cut
        subject = chr(97 + n % 26) + "x" * (MAX_SUBJECT_CHARS - 1)
        doc = {
            "id": f"t{n}",
            "created_at": f"2026-03-02T0{n % 3}:00:00+00:00",
            "customer_id": f"c{n}",
            "subject": subject,
            "body": "é" * 20_000,
            "product_area": "reports",
        }
        raws.append(orjson.dumps(doc))
    topics = _validated(settings, raws)
    table = Table()
    asyncio.run(Watch(settings, topics, PipelineStats(), Sink(), table).on_batch(topics["area_volumes"].as_events()))
    sizes = {key: len(value) for key, value in table.items()}
    # per open window: a few examples of at most 1,000 characters, 20 words of at most 40
    assert sizes and max(sizes.values()) < 20_000, sizes
    assert len(freeze(table)) < 1_000_000
