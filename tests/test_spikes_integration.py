"""A generated spike through the real broker and worker: one alert episode, and its points."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import time
from collections import Counter
from datetime import datetime, timedelta

import orjson
import pytest

from pipeline.alerts.delivery import SIGNATURE_HEADER, delivery_key

from .conftest import HISTORY_START, RELEASE, SPIKE, TICKETPULSE, closed_windows, spike_history

pytestmark = pytest.mark.integration

START = HISTORY_START


def test_a_spike_is_one_alert_episode_with_matching_ticket_spike_points_delivered_once(
    stack, receiver, tmp_path
) -> None:
    gen = spike_history(label_rate=1.0)
    truth = gen.truth(3600)
    stack.env_overrides.update(
        {
            "TICKETPULSE_SLACK_WEBHOOK_URL": f"{receiver.url}/slack",
            "TICKETPULSE_ALERT_WEBHOOK_URL": f"{receiver.url}/hook",
            "TICKETPULSE_ALERT_WEBHOOK_SECRET": "integration-secret",
        }
    )
    stack.create_topics()
    stack.send([(b"reports", orjson.dumps(RELEASE))], topic=stack.settings.topic_product_events)
    stack.send([(b"reports", b'{"kind": "rumour", "area": "reports"}')], topic=stack.settings.topic_product_events)
    stack.start_worker()
    stack.send([(str(t.payload["id"]).encode(), orjson.dumps(t.payload)) for t in gen.tickets()])
    assert stack.wait_for_counts(dict(truth)) == dict(truth), stack.worker_logs()

    # the area's episode (opened, resolved) and the new pattern's (opened, maybe updated, resolved)
    # (every alert written so far: with the watches of several scales and of the case types,
    # the area's two events need not be among the first few)
    everything = stack.read_topic(stack.settings.topic_alerts, expected=10_000, timeout=30)
    # (another area's borderline hour may alert on its own: the detector's calibration, issue #4)
    # (a case type's borderline hour on another day may alert too: calibration, docs/benchmarks.md)
    alerts = [
        a for a in everything if "pattern" not in a and a["area"] == "reports" and a["case_type"] in (None, "bug")
    ]
    episodes = {a["episode_id"] for a in alerts}
    assert len(episodes) == 1, alerts
    opened = [a for a in alerts if a["event"] == "opened"]
    resolved = [a for a in alerts if a["event"] == "resolved"]
    assert len(opened) == 1 and len(resolved) == 1, alerts
    alert = opened[0]
    # the spike's tickets are bugs: the area's watch and its bugs' watch both see it, and
    # whichever opened first carries the one alert (detectors.AlertGate)
    assert alert["area"] == "reports" and alert["case_type"] in (None, "bug")
    start = datetime.fromisoformat(alert["window_start"])
    assert SPIKE.start <= start < SPIKE.start + timedelta(hours=SPIKE.hours)
    assert alert["level"] in ("warning", "critical")
    assert alert["customers"] >= 5 and alert["observed"] > 2 * alert["expected"]
    window = int(start.timestamp())
    assert alert["tickets"] <= truth[(window, "reports")]
    assert datetime.fromisoformat(resolved[0]["window_start"]) >= SPIKE.start + timedelta(hours=SPIKE.hours)
    # enough for the person paged to see why: tickets of that hour, in their words, masked
    ids = alert["example_ticket_ids"]
    assert 1 <= len(ids) <= 5 and len(alert["example_tickets"]) == len(ids)
    firsts = {t.payload["id"]: t.payload for t in gen.tickets()}
    for ticket_id, text in zip(ids, alert["example_tickets"], strict=True):
        ticket = firsts[ticket_id]
        assert ticket["product_area"] == "reports"
        assert int(datetime.fromisoformat(ticket["created_at"]).timestamp()) // 3600 * 3600 == window
        assert text.startswith(ticket["subject"]) and "@" not in text and "Thanks" not in text
    assert {"release", "fails", "error"} <= set(alert["top_terms"])
    assert alert["recent_product_events"] == [
        {"kind": "release", "at": RELEASE["at"], "ref": "v4.2.0", "note": "new export engine"}
    ]
    dead = stack.read_topic(stack.settings.topic_dead_letter, expected=1)
    assert [d["topic"] for d in dead] == [stack.settings.topic_product_events]
    assert dead[0]["error"].startswith("field 'kind' is 'rumour'")

    series = stack.query("SELECT customers, score, episode, level FROM ticket_spike GROUP BY area, case_type")
    by_key = {(s["tags"]["area"], s["tags"]["case_type"]): s["values"] for s in series}
    # (the spike's untagged tickets may spike "unassigned" too)
    seen = {("reports", "all"), ("reports", "bug")}
    assert seen <= set(by_key) <= seen | {("reports", "unassigned")}
    carried = by_key.pop(("reports", alert["case_type"] or "all"))
    points = {(t, level) for t, _, _, _, level in carried}
    assert points == {(int(datetime.fromisoformat(a["window_start"]).timestamp()), a["level"]) for a in alerts}
    assert {episode for _, _, _, episode, _ in carried} == episodes
    # the other watches' episodes are written, muted: no alert of them, and they are of the spike
    for muted in by_key.values():
        assert {episode for _, _, _, episode, _ in muted}.isdisjoint(episodes)
        assert SPIKE.start.timestamp() <= min(t for t, *_ in muted) < SPIKE.start.timestamp() + SPIKE.hours * 3600

    # The spike's tickets say something no ticket said before ("fails since the last
    # release"): a new pattern, which spikes from its first hour, once.
    pattern_alerts = [a for a in everything if "pattern" in a]
    # On meaning, "since the last release X fails with an error 500" is the pattern of "X is
    # broken: error 500" (the same body, one pattern a thing): the patterns it joins spike at
    # its start, each one episode (opened, maybe updated), in the customers' words, masked.
    at_spike = [
        a for a in pattern_alerts if a["event"] == "opened" and datetime.fromisoformat(a["window_start"]) == SPIKE.start
    ]
    assert at_spike and all(a["area"] == "reports" and a["customers"] >= 10 for a in at_spike), pattern_alerts
    for p_opened in at_spike:
        episode = [a for a in pattern_alerts if a["episode_id"] == p_opened["episode_id"]]
        assert episode[0] is p_opened and {a["event"] for a in episode[1:-1]} <= {"updated"}
        assert 1 <= len(p_opened["example_tickets"]) <= 3
        assert all("@" not in text for text in p_opened["example_tickets"])
    assert any(text.startswith("Since the last release") for a in at_spike for text in a["example_tickets"])
    # every pattern alert is a pattern_spike point of its pattern and area
    p_series = stack.query('SELECT customers, episode, "level", "name" FROM pattern_spike GROUP BY pattern, area')
    points = {(s["tags"]["pattern"], t, level) for s in p_series for t, _, _, level, _ in s["values"]}
    alerted = {
        (a["pattern"]["id"], int(datetime.fromisoformat(a["window_start"]).timestamp()), a["level"])
        for a in pattern_alerts
    }
    assert alerted <= points
    # pattern_volume: every ticket in exactly one pattern, per window and area
    # (a window's tickets are grouped once it has closed: all but the newest here)
    assert stack.wait_for_counts(closed_windows(truth), patterns=True) == closed_windows(truth)

    # Delivered to ops: each event once to Slack and once, signed, to the webhook ...
    # an episode updated twice in one window is posted once (pipeline.alerts.delivery.delivery_key)
    n = len({delivery_key(a) for a in everything})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(receiver.posts("/hook")) < n:
        time.sleep(0.5)
    hooks = [orjson.loads(b) for _, b in receiver.posts("/hook")]
    area_events = Counter(h["event"] for h in hooks if "pattern" not in h and h["area"] == "reports")
    assert (area_events["opened"], area_events["resolved"]) == (1, 1) and set(area_events) <= {
        "opened",
        "updated",
        "resolved",
    }
    # every episode alerted, area's and patterns', was delivered
    alerted_episodes = {a["episode_id"] for a in everything}
    assert episodes <= {h["episode_id"] for h in hooks} == alerted_episodes
    assert len(hooks) == n and len(receiver.posts("/slack")) == n
    spike_in = b"Spike in *reports*" if alert["case_type"] is None else b"Spike in *bug* tickets of *reports*"
    opened_slack = next(orjson.loads(b) for _, b in receiver.posts("/slack") if spike_in in b)
    pattern_slack = [orjson.loads(b)["text"] for _, b in receiver.posts("/slack") if b"Spike in pattern" in b]
    assert pattern_slack and all("customers in" in text for text in pattern_slack)
    assert f"> {alert['example_tickets'][0]}" in opened_slack["blocks"][1]["text"]["text"]
    assert "*Recent product events:* release v4.2.0 (2026-03-10 09:00)" in opened_slack["blocks"][1]["text"]["text"]
    for headers, body in receiver.posts("/hook"):
        assert (
            headers[SIGNATURE_HEADER] == "sha256=" + hmac.new(b"integration-secret", body, hashlib.sha256).hexdigest()
        )
    # ... and an alert that reaches the topic again (a replay after a crash) is not posted again.
    stack.send([(b"reports", orjson.dumps(alert))], topic=stack.settings.topic_alerts)
    time.sleep(4)
    assert len(receiver.posts("/hook")) == n and len(receiver.posts("/slack")) == n
    assert "delivery=" not in stack.worker_logs()  # no retry was needed

    # Offline, on the same history, the replay's backtest finds the same episode.
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"".join(orjson.dumps(t.payload) + b"\n" for t in gen.tickets()))
    r = subprocess.run(
        [TICKETPULSE, "replay", str(history), "--output", str(tmp_path / "p.jsonl"), "--quiet"],
        capture_output=True,
        text=True,
        check=True,
    )
    backtest = orjson.loads(r.stdout.strip().splitlines()[-1])["spike_episodes"]
    # the same incident, alerted once: the area's watch or its bugs' carries it, whichever tipped
    # first (the worker judges a batch at a time, the backtest a ticket at a time)
    start_of = alert["episode_id"].split("@")[1]
    assert [(b["area"], b["episode_id"].split("@")[1]) for b in backtest] == [("reports", start_of)]
