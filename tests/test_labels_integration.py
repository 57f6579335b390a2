"""Tags agents send later, model checkpoints, and counting by predicted tags: real broker and InfluxDB."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 2, 9, tzinfo=UTC)
BILLING = ("Charged twice on my invoice", "my card was charged twice this month, please refund the invoice")
CRASH = ("App crashes on start", "the app shows an error and crashes when I open the dashboard")


def _ticket(ticket_id: str, text: tuple[str, str], minute: int = 0, **tags: str) -> dict[str, Any]:
    return {
        "id": ticket_id,
        "created_at": (START + timedelta(minutes=minute)).isoformat(),
        "customer_id": f"c-{ticket_id}",
        "subject": text[0],
        "body": text[1],
        **tags,
    }


def _send(stack, docs: list[dict[str, Any]], topic: str | None = None) -> None:
    stack.send([(str(d["id"]).encode(), orjson.dumps(d)) for d in docs], topic=topic)


def _quality(stack) -> dict[tuple[str, str], dict[str, float]]:
    """(worker, target) -> the newest classifier_quality point's fields."""
    try:
        series = stack.query(
            "SELECT last(labelled) AS labelled, last(learned) AS learned FROM classifier_quality "
            "GROUP BY target, worker"
        )
    except AssertionError:
        return {}
    return {
        (s["tags"]["worker"], s["tags"]["target"]): dict(zip(s["columns"][1:], s["values"][0][1:], strict=True))
        for s in series
    }


def _log_tails(stack, lines: int = 15) -> dict[str, list[str]]:
    """The last lines of each worker's log: what a timed-out wait shows."""
    logs = sorted(stack.tmp_path.glob("worker-*.log"))
    return {log.name: log.read_text(errors="replace").splitlines()[-lines:] for log in logs}


def _wait(condition, timeout: float = 60.0, what: str = "", show: Callable[[], Any] | None = None) -> Any:
    """``condition()`` once it is true; else an error with ``show()``: what was there instead."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}: last={last!r}, instead {show() if show else None!r}")


def test_late_tags_and_corrections_reach_every_worker(stack) -> None:
    stack.env_overrides["TICKETPULSE_STATS_SECONDS"] = "1"
    stack.create_topics()
    stack.start_worker("a")
    stack.start_worker("b")
    time.sleep(8)  # both in the group before the stream flows
    # 40 untagged tickets (ids on every partition), and one whose tag will come before it;
    # the crash tickets come from a producer that sets no key (any partition): their words
    # must still be kept where their labels, keyed by ticket id, will come
    tickets = [_ticket(f"bill-{i}", BILLING, i) for i in range(20)] + [
        _ticket(f"crash-{i}", CRASH, i) for i in range(20)
    ]
    _send(stack, tickets[:20])
    stack.send([(None, orjson.dumps(d)) for d in tickets[20:]])
    stack.read_topic(stack.settings.topic_classified, expected=len(tickets))
    labels_topic = stack.settings.topic_labels
    # agents tag them hours later: the billing ones wrongly first, then correct themselves
    wrong = [{"id": f"bill-{i}", "case_type": "bug", "labelled_by": "ana"} for i in range(20)]
    right = [{"id": f"crash-{i}", "case_type": "bug", "product_area": "app"} for i in range(20)]
    _send(stack, wrong + right, topic=labels_topic)
    early = {"id": "late-1", "case_type": "billing"}  # its ticket comes after its tag
    bad = [(b"x", b"{not json"), (b"y", orjson.dumps({"id": "bill-1", "case_type": "refunds"}))]
    stack.send([(b"late-1", orjson.dumps(early)), *bad], topic=labels_topic)
    time.sleep(3)
    fixes = [{"id": f"bill-{i}", "case_type": "billing", "labelled_by": "lead"} for i in range(20)]
    _send(stack, fixes, topic=labels_topic)
    _send(stack, [_ticket("late-1", BILLING, 50)])

    # every worker: 61 case-type labels scored (20 wrong, 20 fixes, 20 crash, 1 late), 41 held after
    # the corrections replaced the wrong ones; 20 area labels
    def settled() -> dict | None:
        q = _quality(stack)
        workers = {w for w, _ in q}
        done = len(workers) == 2 and all(
            q.get((w, "case_type")) == {"labelled": 61, "learned": 41}
            and q.get((w, "product_area")) == {"labelled": 20, "learned": 20}
            for w in workers
        )
        return q if done else None

    _wait(settled, 90, "both workers to learn every label")

    def corrections() -> list[int]:
        stats = stack.query("SELECT last(corrections) FROM pipeline_stats GROUP BY worker")
        return sorted(s["values"][0][1] for s in stats)

    assert _wait(lambda: corrections() == [20, 20], 10, "20 corrections on each worker")

    dead = stack.read_topic(stack.settings.topic_dead_letter, expected=2)
    errors = sorted(d["error"] for d in dead)
    assert errors[0].startswith("field 'case_type' is 'refunds', not one of billing, bug,")
    assert errors[1].startswith("not valid JSON")
    # both workers answer the same, and the corrections won
    probes = [_ticket(f"probe-{i}", BILLING, 55) for i in range(12)]
    _send(stack, probes)
    classified = stack.read_topic(stack.settings.topic_classified, expected=len(tickets) + 13)
    answers = [c for c in classified if c["id"].startswith("probe-")]
    assert len(answers) == 12
    assert len({orjson.dumps(a["predicted"]) for a in answers}) == 1
    guess = answers[0]["predicted"]["case_type"]
    assert guess["label"] == "billing" and guess["uncertain"] is False and guess["confidence"] > 0.99


def test_a_worker_that_takes_partitions_over_reads_their_kept_texts_again(stack) -> None:
    """The join keeps each text in memory, and writes to its changelog only which offsets
    of texts-to-join hold it: a worker given the partitions reads them back from there."""
    stack.env_overrides["TICKETPULSE_STATS_SECONDS"] = "1"
    stack.create_topics()
    stack.start_worker("a")
    untagged = [_ticket(f"u-{i}", CRASH if i % 2 else BILLING, i) for i in range(40)]  # every partition
    _send(stack, untagged)
    stack.read_topic(stack.settings.topic_classified, expected=40)
    stack.start_worker("b", TICKETPULSE_LOG_LEVEL="info")  # takes some partitions, and their texts, over
    log_b = stack.tmp_path / "worker-b.log"

    def read_again() -> list[str]:
        text = log_b.read_text(errors="replace") if log_b.exists() else ""
        return [line for line in text.splitlines() if "label_join read_again" in line]

    (line,) = _wait(read_again, 90, "worker b to read kept texts again")
    kept = int(line.split(" kept=")[1].split()[0])
    assert 0 < kept < 40, line  # the texts of the partitions it took, no more
    assert "texts_lost" not in log_b.read_text(errors="replace")
    labels = [{"id": f"u-{i}", "case_type": "bug" if i % 2 else "billing"} for i in range(40)]
    _send(stack, labels, topic=stack.settings.topic_labels)

    # every label found its text, on whichever worker joins it now: both workers learn 40
    def learned() -> dict | None:
        q = {w: v for (w, t), v in _quality(stack).items() if t == "case_type"}
        return q if len(q) == 2 and all(v == {"labelled": 40, "learned": 40} for v in q.values()) else None

    _wait(learned, 90, "both workers to learn the 40 labels", show=lambda: (_quality(stack), _log_tails(stack)))
    dead = stack.read_topic(stack.settings.topic_dead_letter, expected=0, timeout=2)
    assert dead == []
    # the table's changelog names offsets and waiting labels, not the tickets' words
    from pipeline.runtime.kafka import read_values

    changelog = f"{stack.settings.app_id}-label-texts-changelog"
    held = b"".join(value for value in read_values(stack.settings, changelog, quiet_seconds=2) if value).decode()
    assert '"from"' in held and "charged" not in held and "crashes" not in held


def test_texts_to_join_keeps_its_messages_longer_than_the_horizon(stack, caplog) -> None:
    """Kept texts are read back from texts-to-join: it is created keeping them for the horizon
    and a day (here over Kafka's default week); a topic that keeps them for less (made by
    an earlier version, or before the horizon was raised) is named, with the fix."""
    from kafka.admin import ConfigResource, ConfigResourceType

    from pipeline.runtime.kafka import retention_ms
    from pipeline.runtime.kafka_clients import admin

    stack.env_overrides["TICKETPULSE_LABEL_HORIZON_HOURS"] = "240"
    settings = stack.settings
    topics = [f"{settings.app_id}-texts-to-join", f"{settings.app_id}-tagger-training"]
    one_hour = {"retention.ms": str(3600 * 1000)}

    def retention(topic: str) -> int | None:
        client = admin(settings)
        try:
            described = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
        finally:
            client.close()
        return retention_ms(described, topic)

    def create_short() -> None:
        client = admin(settings)
        try:
            client.create_topics(
                {
                    t: {"num_partitions": settings.partitions, "replication_factor": 1, "configs": one_hour}
                    for t in topics
                }
            )
        finally:
            client.close()

    stack.create_topics()
    assert retention(topics[0]) == (240 + 24) * 3600 * 1000

    stack.env_overrides["TICKETPULSE_APP_ID"] += "-older"
    settings = stack.settings
    topics = [f"{settings.app_id}-texts-to-join", f"{settings.app_id}-tagger-training"]
    create_short()
    with caplog.at_level(logging.WARNING, logger="pipeline.runtime.kafka"):
        stack.create_topics()
    # said once, for the topic the join reads again, with what to change
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "pipeline.runtime.kafka"]
    wanted = (240 + 24) * 3600 * 1000
    assert warning.startswith(f"topic={topics[0]} retention_ms=3600000 wanted={wanted} reason=under ")
    assert warning.endswith(f"--entity-name {topics[0]} --add-config retention.ms={wanted}")


def test_an_unreadable_texts_to_join_message_is_dead_lettered_and_the_join_goes_on(stack) -> None:
    """Something other than the worker wrote to its texts-to-join topic: each message is
    dead-lettered with what is wrong with it, and the join goes on joining labels."""
    stack.env_overrides["TICKETPULSE_STATS_SECONDS"] = "1"
    stack.create_topics()
    stack.start_worker()
    texts_topic = f"{stack.settings.app_id}-texts-to-join"
    junk = [(b"a", b"{not json"), (b"b", orjson.dumps({"texts": [{"reading": "no id"}]}))]
    stack.send(junk, topic=texts_topic)
    dead = stack.read_topic(stack.settings.topic_dead_letter, expected=2, timeout=60)
    assert sorted(d["error"] for d in dead) == [
        "unreadable texts-to-join message: not JSON "
        "(unexpected character, expected a string key: line 1 column 2 (char 1))",
        "unreadable texts-to-join message: text 0 of the message is not an object with an 'id'",
    ]
    assert {d["topic"] for d in dead} == {texts_topic}
    # the join still works: untagged tickets, then their tags, learned
    _send(stack, [_ticket(f"after-{i}", CRASH, i) for i in range(5)])
    stack.read_topic(stack.settings.topic_classified, expected=5)
    _send(stack, [{"id": f"after-{i}", "case_type": "bug"} for i in range(5)], topic=stack.settings.topic_labels)
    _wait(
        lambda: [f for (_, t), f in _quality(stack).items() if t == "case_type"] == [{"labelled": 5, "learned": 5}],
        60,
        "the five late tags to be learned",
    )


def test_a_tag_for_a_ticket_not_seen_within_the_horizon_is_dead_lettered(stack) -> None:
    stack.env_overrides["TICKETPULSE_LABEL_HORIZON_HOURS"] = "0.002"  # 7.2 s
    stack.create_topics()
    stack.start_worker()
    _send(stack, [_ticket("old-1", CRASH)])
    stack.read_topic(stack.settings.topic_classified, expected=1)
    time.sleep(12)  # the ticket's words are forgotten
    labels = [{"id": "old-1", "case_type": "bug"}, {"id": "never-1", "severity": "high"}]
    _send(stack, labels, topic=stack.settings.topic_labels)
    dead = stack.read_topic(stack.settings.topic_dead_letter, expected=2, timeout=40)
    assert sorted(d["error"] for d in dead) == [
        "label for ticket 'never-1': no such ticket seen within the 0.002 h horizon",
        "label for ticket 'old-1': no such ticket seen within the 0.002 h horizon",
    ]
    assert sorted(orjson.loads(d["value"])["id"] for d in dead) == ["never-1", "old-1"]


def test_a_killed_worker_resumes_its_models_from_the_checkpoint(stack) -> None:
    stack.env_overrides.update({"TICKETPULSE_STATS_SECONDS": "1", "TICKETPULSE_TAGGER_CHECKPOINT_SECONDS": "1"})
    stack.create_topics()
    first = stack.start_worker("w")
    labelled = [_ticket(f"b-{i}", BILLING, i, case_type="billing") for i in range(15)]
    labelled += [_ticket(f"c-{i}", CRASH, i, case_type="bug") for i in range(15)]
    # and five untagged ones, whose tags will come after the restart
    untagged = [_ticket(f"k-{i}", CRASH, 30 + i) for i in range(5)]
    _send(stack, labelled + untagged)
    _wait(
        lambda: any(v == {"labelled": 30, "learned": 30} for (_, t), v in _quality(stack).items() if t == "case_type"),
        60,
        "30 labels learned",
    )
    stack.read_topic(stack.settings.topic_classified, expected=35)
    time.sleep(3)  # a checkpoint after the last label
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert (stack.tmp_path / "worker-w" / "linear-tagger-checkpoint.pickle").exists()  # TICKETPULSE_TAGGER=linear
    second = stack.start_worker("w", TICKETPULSE_LOG_LEVEL="info")
    more = [_ticket(f"b-{i}", BILLING, i, case_type="billing") for i in range(15, 20)]
    _send(stack, more)
    # the words of the untagged tickets were kept through the kill (the label join's table)
    _send(stack, [{"id": f"k-{i}", "case_type": "bug"} for i in range(5)], topic=stack.settings.topic_labels)

    seen: list[dict] = []

    def resumed() -> dict | None:
        q = {w: v for (w, t), v in _quality(stack).items() if t == "case_type" and w.endswith(f"-{second.pid}")}
        seen[:] = [q]
        return q if list(q.values()) == [{"labelled": 40, "learned": 40}] else None

    # not from zero (40, not 10), nothing twice (40, not 70), and the late tags joined (40, not 35).
    # The restarted worker first waits for both consumer groups to let the killed member go
    # (about 15 s alone, longer on a busy machine: it once took over 60 s in a full run).
    try:
        _wait(resumed, 120, "the restarted worker to resume")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its last case_type quality: {seen}") from None
    # the checkpoint, with the 30 labels it holds, was loaded once (before the worker started), not twice
    log = (stack.tmp_path / "worker-w.log").read_text(errors="replace")
    loads = [line for line in log.splitlines() if "tagger loaded=" in line]
    assert len(loads) == 1 and loads[0].endswith("tagger-checkpoint.pickle version=30"), loads


def test_untagged_tickets_are_counted_under_their_predicted_area(stack) -> None:
    stack.env_overrides.update({"TICKETPULSE_COUNT_PREDICTED_TAGS": "true", "TICKETPULSE_STATS_SECONDS": "1"})
    stack.create_topics()
    stack.start_worker()
    teach = [_ticket(f"t-b{i}", BILLING, i, product_area="billing", case_type="billing") for i in range(25)]
    teach += [_ticket(f"t-c{i}", CRASH, i, product_area="app", case_type="bug") for i in range(25)]
    _send(stack, teach)
    _wait(
        lambda: any(v["learned"] == 50 for (_, t), v in _quality(stack).items() if t == "product_area"),
        60,
        "50 area labels learned",
    )
    untagged = [_ticket(f"u-b{i}", BILLING, 70 + i) for i in range(7)] + [
        _ticket(f"u-c{i}", CRASH, 70 + i) for i in range(4)
    ]
    _send(stack, untagged)
    hour = int(START.timestamp())
    expected = {(hour, "billing"): 25, (hour, "app"): 25, (hour + 3600, "billing"): 7, (hour + 3600, "app"): 4}
    assert stack.wait_for_counts(expected) == expected  # no 'unassigned': the models were sure

    def stats() -> list[int] | None:  # the counts can be written before the next stats point
        values = stack.query("SELECT last(tagged), last(uncertain_product_area) FROM pipeline_stats")[0]["values"][0]
        return values[1:] if values[1] == 61 else None

    tagged, unsure = _wait(stats, 10, "the stats of the 61 tagged tickets")
    # uncertain until 20 labels were learned (some of the 50 teaching tickets), then sure (the 11)
    assert tagged == 61 and 1 <= unsure <= 50


def test_a_few_labels_are_learned_by_every_worker_at_a_step_marker(stack) -> None:
    """Six labels, fewer than the linear tagger's step of 16: a worker holding them for
    TICKETPULSE_TAGGER_STEP_SECONDS sends a step marker, and both workers learn them there."""
    stack.env_overrides.update({"TICKETPULSE_STATS_SECONDS": "1", "TICKETPULSE_TAGGER_STEP_SECONDS": "2"})
    stack.create_topics()
    stack.start_worker("a")
    stack.start_worker("b")
    time.sleep(8)  # both in the group before the stream flows
    teach = [_ticket(f"b-{i}", BILLING, i, case_type="billing") for i in range(3)]
    teach += [_ticket(f"c-{i}", CRASH, i, case_type="bug") for i in range(3)]
    _send(stack, teach)
    _wait(
        lambda: [v for (_, t), v in _quality(stack).items() if t == "case_type"] == [{"labelled": 6, "learned": 6}] * 2,
        60,
        "both workers to read the six labels",
    )
    time.sleep(6)  # held 2 s, a marker sent, read back by both
    probes = [_ticket(f"probe-{i}", CRASH, 30) for i in range(12)]  # ids on every partition: both workers answer
    _send(stack, probes)
    answers = [c for c in stack.read_topic(stack.settings.topic_classified, expected=18) if c["id"].startswith("probe")]
    assert len(answers) == 12
    assert len({orjson.dumps(a["predicted"]) for a in answers}) == 1  # two workers, one model
    assert answers[0]["predicted"]["case_type"]["label"] == "bug"  # learned, not held (a held label predicts None)
