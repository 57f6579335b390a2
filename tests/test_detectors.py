"""One contract for every detector, then each detector's own promises."""

from __future__ import annotations

import json
import math
import pickle
import random
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from detectors import (
    DETECTION_SCORE,
    AlertGate,
    EpisodeTracker,
    RollingZScore,
    SpikeDetector,
    SpikeEvent,
    SurpriseDetector,
    VolumeWatch,
)
from pipeline.testbed.generator import Area, Spike, TicketGenerator

from .conftest import TICKETPULSE

DETECTORS = [
    SpikeDetector(min_windows=24),
    SurpriseDetector(window=200, min_samples=50),
    # its coarse view scoring too: blocks of 8 hourly rows, from the 20th block (row 160)
    SurpriseDetector(window=200, min_samples=50, coarse_min_samples=20),
    RollingZScore(window=100, min_samples=20),
]
MONDAY = datetime(2026, 3, 2, tzinfo=UTC)


def _stream(n: int = 400, seed: int = 0) -> list[dict[str, float]]:
    rng = random.Random(seed)
    return [
        {"t": 1772409600 + 3600 * i, "y": float(rng.randint(5, 15)), "customers": float(rng.randint(4, 12))}
        for i in range(n)
    ]


def _scores(det, rows: list[dict[str, float]]) -> list[float]:
    """Each row's score from the rows before it (score, then learn), as ``ticketpulse detect``."""
    out = []
    for x in rows:
        out.append(det.score_one(x))
        det.learn_one(x)
    return out


@pytest.fixture(params=DETECTORS, ids=lambda d: type(d).__name__)
def detector(request: pytest.FixtureRequest):
    return request.param.clone()


def test_neutral_score_before_learning(detector) -> None:
    assert detector.score_one({"t": 0.0, "y": 1e9, "customers": 1e9}) == detector.neutral_score == 0.0


def test_scoring_does_not_change_state(detector) -> None:
    for x in _stream(300):
        detector.learn_one(x)
    before = pickle.dumps(detector)
    for x in _stream(50, seed=9):
        detector.score_one(x)
    assert pickle.dumps(detector) == before


def test_scores_are_in_unit_interval_and_reproducible(detector) -> None:
    rows = [*_stream(400, seed=3), {"t": 1e10, "y": 500.0, "customers": 400.0}]
    first, second = _scores(detector, rows), _scores(detector.clone(), rows)
    assert first == second
    assert all(0.0 <= s <= 1.0 for s in first)
    assert first[-1] > 0.3  # a value fifty times the usual is noticed


def test_an_unremarkable_window_scores_zero_not_minus_zero(detector) -> None:
    """``-log10(1)`` is ``-0.0``, which alerts, logs and dashboards print as "-0.0"."""
    for x in _stream(300):
        detector.learn_one(x)
    t = 1772409600 + 3600 * 300
    for x in ({"t": t, "y": 0.0, "customers": 0.0}, {"t": t, "y": 10.0, "customers": 8.0}):
        score = detector.score_one(x)
        assert 0.0 <= score <= 1.0 and math.copysign(1.0, score) == 1.0, (x, score)


def test_pickled_mid_stream_continues_identically(detector) -> None:
    stream = _stream(400, seed=5)
    for x in stream[:250]:
        detector.learn_one(x)
    copy = pickle.loads(pickle.dumps(detector))
    for x in stream[250:]:
        assert detector.score_one(x) == copy.score_one(x)
        detector.learn_one(x)
        copy.learn_one(x)


def test_constructor_arguments_are_stored_as_given(detector) -> None:
    params = detector._get_params()
    assert repr(detector).startswith(type(detector).__name__ + "(")
    assert type(detector)(**params)._get_params() == params


# --- SpikeDetector on generated ticket streams -------------------------------------


def _hourly(gen: TicketGenerator, area: str) -> list[dict[str, float]]:
    tickets: Counter[int] = Counter()
    customers: dict[int, set[str]] = {}
    seen = set()
    for t in gen.tickets():
        p = t.payload
        if p["id"] in seen or p.get("product_area") != area:
            continue
        seen.add(p["id"])
        w = int(datetime.fromisoformat(str(p["created_at"])).timestamp()) // 3600 * 3600
        tickets[w] += 1
        customers.setdefault(w, set()).add(str(p["customer_id"]))
    start = int(gen.start.timestamp())
    hours = range(start, start + int(gen.days * 86400), 3600)
    return [{"t": h, "y": tickets[h], "customers": len(customers.get(h, ()))} for h in hours]


def _alerts(rows: list[dict[str, float]], det: SpikeDetector, level: float = 0.4) -> list[int]:
    out = []
    for x in rows:
        if det.score_one(x) >= level:
            out.append(int(x["t"]))
        det.learn_one(x)
    return out


def test_the_spike_detector_reads_hour_and_weekday_as_utc_calendar_time() -> None:
    rng = random.Random(3)
    moments = [0, -1, -0.5, 86399.5, 1772409600, 1772409600 + 3599.999] + [rng.uniform(-4e9, 4e9) for _ in range(2000)]
    for t in moments:
        moment = datetime.fromtimestamp(t, UTC)
        assert SpikeDetector._slots(t) == (moment.hour, moment.weekday()), t


def test_the_spike_detectors_explanation_scores_as_score_one() -> None:
    # explain() scores from the p-value it reports; score_one() computes it afresh
    for min_windows in (0, 24):
        det = SpikeDetector(min_windows=min_windows)
        for x in [*_stream(300, seed=min_windows), {"t": 1772409600 + 3600 * 300, "y": 90.0, "customers": 80.0}]:
            assert det.explain(x)["score"] == det.score_one(x), (min_windows, x)
            det.learn_one(x)


def test_five_fold_spike_in_a_seasonal_stream_is_found_within_one_window() -> None:
    start = MONDAY + timedelta(days=17, hours=10)
    areas = [Area("reports", 3.0)]
    gen = TicketGenerator(
        MONDAY,
        days=21,
        areas=areas,
        seed=4,
        label_rate=1.0,
        customers=2000,
        spikes=[Spike("reports", start, hours=2, factor=5)],
    )
    alerts = _alerts(_hourly(gen, "reports"), SpikeDetector())
    assert int(start.timestamp()) in alerts


def test_a_month_without_spikes_raises_no_alert() -> None:
    for seed in (1, 2, 3):
        gen = TicketGenerator(MONDAY, days=30, areas=[Area("billing", 6.0)], seed=seed, label_rate=1.0, customers=2000)
        assert _alerts(_hourly(gen, "billing"), SpikeDetector()) == [], seed


def test_one_loud_customer_is_not_a_spike() -> None:
    rows = [{"t": 1772409600 + 3600 * i, "y": 10.0, "customers": 9.0} for i in range(24 * 14)]
    det = SpikeDetector()
    for x in rows:
        det.learn_one(x)
    loud = {"t": rows[-1]["t"] + 3600, "y": 40.0, "customers": 10.0}  # 30 more tickets, one more customer
    broad = {"t": rows[-1]["t"] + 3600, "y": 40.0, "customers": 38.0}
    assert det.score_one(loud) < 0.1 < 0.4 < det.score_one(broad)


def test_a_spike_does_not_become_normal_but_a_real_level_change_does() -> None:
    det = SpikeDetector()
    t = 1772409600
    for i in range(24 * 14):
        det.learn_one({"t": t + 3600 * i, "y": 10.0})
    t += 3600 * 24 * 14
    for i in range(3):  # a three-hour spike
        det.learn_one({"t": t + 3600 * i, "y": 60.0})
    assert det.expected(t + 3 * 3600) < 13
    for i in range(3, 24 * 7):  # the product grew: 30 an hour from now on
        det.learn_one({"t": t + 3600 * i, "y": 30.0})
    assert 25 < det.expected(t + 24 * 7 * 3600) < 35
    assert det.score_one({"t": t + 24 * 7 * 3600, "y": 31.0}) < 0.1


def test_in_progress_window_alerts_early() -> None:
    det = SpikeDetector()
    for i in range(24 * 14):
        det.learn_one({"t": 1772409600 + 3600 * i, "y": 20.0})
    t = 1772409600 + 3600 * 24 * 14
    # a sixth of the window gone and already 40 tickets (normal: about 3 by now)
    assert det.score_one({"t": t, "y": 40.0, "fraction": 1 / 6}) >= 0.4
    assert det.score_one({"t": t, "y": 4.0, "fraction": 1 / 6}) < 0.1


# --- episodes -------------------------------------------------------------------------


def test_a_five_window_spike_is_one_episode_updated_then_resolved() -> None:
    tr = EpisodeTracker("reports", alert_score=0.4, min_customers=5)
    scores = [0.1, 0.5, 0.7, 0.9, 0.8, 0.6, 0.1, 0.1]
    events = [tr.observe(w, s, 10 * s, 3, 20)[0] for w, s in enumerate(scores)]
    assert events == [None, "opened", "updated", "updated", None, None, "resolved", None]


def test_episode_needs_enough_customers_and_survives_a_restart() -> None:
    tr = EpisodeTracker("login", min_customers=5)
    assert tr.observe(0, 0.9, 30, 5, customers=2) == (None, None)
    event, ep = tr.observe(1, 0.9, 30, 5, customers=12)
    assert event == "opened" and ep is not None and ep.id == "login@1"
    restored = EpisodeTracker.from_state("login", pickle.loads(pickle.dumps(tr.state())), min_customers=5)
    assert restored.observe(1, 0.9, 30, 5, 12) == (None, restored.episode)  # a replay: nothing new
    assert restored.observe(2, 0.0, 5, 5, 12)[0] == "resolved"


# --- the detect contract ----------------------------------------------------------------


def test_detect_writes_nab_result_format(tmp_path: Path) -> None:
    rng = random.Random(2)
    rows = [
        f"2014-04-0{d} {h:02d}:{m:02d}:00,{50 + rng.gauss(0, 2):.3f}"
        for d in (1, 2)
        for h in range(24)
        for m in range(0, 60, 5)
    ]
    rows[450] = rows[450].split(",")[0] + ",400"
    source = tmp_path / "series.csv"
    source.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    out, plot = tmp_path / "scores.csv", tmp_path / "scores.png"
    r = subprocess.run(
        [TICKETPULSE, "detect", str(source), "--output", str(out), "--plot", str(plot), "--quiet"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["interval_seconds"] == 300.0 and summary["rows"] == len(rows)
    lines = out.read_text().splitlines()
    assert lines[0] == "timestamp,value,anomaly_score"
    assert len(lines) == 1 + len(rows)
    assert [ln.rsplit(",", 1)[0] for ln in lines[1:]] == rows
    scores = [float(ln.rsplit(",", 1)[1]) for ln in lines[1:]]
    assert max(range(len(scores)), key=scores.__getitem__) == 450
    assert scores[0] == 0.0
    # the summary's detections are the rows the CSV scores at or above the threshold, the spike first
    assert summary["threshold"] == DETECTION_SCORE
    assert summary["detections"] == sum(s >= DETECTION_SCORE for s in scores) >= 1
    assert summary["first_detection"] == rows[450].split(",")[0]
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size == (1200, 600)


def test_surprise_takes_a_value_where_it_was_a_day_ago_as_normal() -> None:
    # every 5 minutes, around 10, and 40 once a day at 15:00 (a nightly job, a daily report)
    rng = random.Random(3)
    rows = [
        {"t": 1396310400.0 + 300 * i, "y": (40.0 if i % 288 == 180 else 10.0) + rng.gauss(0, 1)}
        for i in range(288 * 12 + 180)
    ]
    daily, flat = SurpriseDetector(), SurpriseDetector(period_seconds=0, recurring=False)
    for row in rows:
        daily.learn_one(row)
        flat.learn_one(row)
    burst = {"t": rows[-1]["t"] + 300, "y": 40.0}  # 15:00 again
    assert daily.score_one(burst) < 0.01
    # without the period only the median is at hand, and the burst stands out from it
    assert flat.score_one(burst) > 0.1
    # nor does it hide the same burst grown twice as large
    assert daily.score_one({"t": burst["t"], "y": 80.0}) > 0.5


def test_surprise_scores_a_new_extreme_at_once_and_only_beyond_the_margin() -> None:
    rng = random.Random(5)
    det = SurpriseDetector(window=300, min_samples=100, range_margin=0.01)
    for i in range(600):
        det.learn_one({"t": 60.0 * i, "y": 20 + rng.uniform(-5, 5)})
    low, high = det._low, det._high
    margin = 0.01 * (high - low)
    # 1.0 less the surprise already reported for this series' ordinary noise
    assert det.score_one({"t": 36000.0, "y": high + 2 * margin}) > 0.9
    assert det.score_one({"t": 36000.0, "y": low - 10 * margin}) > 0.9
    assert det.score_one({"t": 36000.0, "y": high + margin / 2}) < 0.5
    # a new low by 2 % of the range is no further from the median than many rows of this
    # uniform noise were: an ordinary deviation, scored as any other row; with every new
    # extreme counted (``extreme_rarity=1.0``, as before 2026-11-30, stop 18) it scores 1.0
    assert det.score_one({"t": 36000.0, "y": low - 2 * margin}) < 0.1
    every = SurpriseDetector(window=300, min_samples=100, range_margin=0.01, extreme_rarity=1.0)
    rng = random.Random(5)
    for i in range(600):
        every.learn_one({"t": 60.0 * i, "y": 20 + rng.uniform(-5, 5)})
    assert every.score_one({"t": 36000.0, "y": low - 2 * margin}) > 0.9
    off = SurpriseDetector(window=300, min_samples=100, range_margin=None)
    rng = random.Random(5)
    for i in range(600):
        off.learn_one({"t": 60.0 * i, "y": 20 + rng.uniform(-5, 5)})
    assert off.score_one({"t": 36000.0, "y": high + 2 * margin}) < 0.5


def test_detect_names_the_bad_line(tmp_path: Path) -> None:
    source = tmp_path / "bad.csv"
    source.write_text("timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,abc\n")
    r = subprocess.run(
        [TICKETPULSE, "detect", str(source), "--output", str(tmp_path / "o.csv")], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert f"{source}, line 3: not a timestamp and a number" in r.stderr
    r = subprocess.run(
        [TICKETPULSE, "detect", str(source), "--output", str(tmp_path / "o.csv"), "--threshold", "1.5"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "--threshold must be in (0, 1], as scores are; got 1.5" in r.stderr


def test_a_backlog_caught_up_at_once_ends_its_episode_where_the_spike_ended() -> None:
    # A worker catching up hears every window's total before any window closes: a spike,
    # quiet days, then another busy hour. The spike's episode ends with the spike.
    watch = VolumeWatch("reports", 3600, SpikeDetector(min_windows=24), min_customers=10)
    rng = random.Random(5)
    for h in range(24 * 14):
        watch.update(h * 3600, 3, 3)
    watch.advance(24 * 14 * 3600)
    start = 24 * 14
    backlog = {h: rng.randint(0, 4) for h in range(start, start + 72)}
    backlog[start + 2] = 50  # the spike
    backlog[start + 60] = 25  # another, days later
    events = []
    for h, n in sorted(backlog.items()):
        events += watch.update(h * 3600, n, n)
    assert events == []  # none is judged ahead of the closed windows (only the next two would be)
    events += watch.advance((start + 72) * 3600)
    assert [(e.event, e.window_start // 3600 - start) for e in events] == [
        ("opened", 2),
        ("resolved", 3),
        ("opened", 60),
        ("resolved", 61),
    ]


def test_one_incident_seen_by_an_area_and_its_case_types_is_one_alert() -> None:
    def event(kind: str, episode: str, hour: int):
        return SpikeEvent(kind, episode, "k", hour * 3600, hour * 3600 + 3600, 50, 40, 5.0, 0.9, 1e-9, "warning")

    gate = AlertGate()
    heard = [
        ("reports", event("opened", "reports/bug@10", 10)),  # the bugs open first
        ("reports", event("opened", "reports@11", 11)),
        ("login", event("opened", "login@11", 11)),  # another area: its own incident
        ("reports", event("updated", "reports@11", 12)),
        ("reports", event("resolved", "reports/bug@10", 13)),
        ("reports", event("resolved", "reports@11", 13)),
        ("reports", event("opened", "reports/ux_confusion@30", 30)),  # later: a new incident
    ]
    alerted = [e.episode_id + ":" + e.event for area, e in heard if gate.admit(area, e)]
    assert alerted == [
        "reports/bug@10:opened",
        "login@11:opened",
        "reports/bug@10:resolved",
        "reports/ux_confusion@30:opened",
    ]
    assert pickle.loads(pickle.dumps(gate)).episodes == gate.episodes


def test_a_value_where_it_was_one_week_ago_is_explained_by_the_weekly_cycle() -> None:
    # hourly, weekdays about 100, weekends about 20: Saturday's drop is far from
    # yesterday and from the median, and right where it was last Saturday
    rng = random.Random(3)
    rows = [{"t": h * 3600, "y": (20 if (h // 24) % 7 >= 5 else 100) + rng.gauss(0, 3)} for h in range(6 * 168)]
    saturday = 5 * 168 + 5 * 24
    deviations = {}
    for long_period in (604800.0, 0.0):
        det = SurpriseDetector(long_period_seconds=long_period)
        for x in rows[:saturday]:
            det.learn_one(x)
        deviations[long_period], _ = det._raw_deviation(rows[saturday]["y"])
    assert deviations[604800.0] < 2.0 < 10.0 < deviations[0.0], deviations


def test_a_spike_the_series_has_every_few_hours_is_not_news() -> None:
    # every 5 minutes, around 10, and 30 at irregular moments (no cycle explains them),
    # about once every 90 rows for a while (a batch job, a retrying client), then quiet
    # long enough for the surprise already reported to fade
    rng = random.Random(7)
    spikes = set()
    i = 400
    while i < 1500:
        spikes.add(i)
        i += rng.randint(60, 120)
    rows = [{"t": 300.0 * i, "y": (30.0 if i in spikes else 10.0) + rng.gauss(0, 1)} for i in range(2100)]
    in_window = len([i for i in spikes if i >= 1100])
    scores = {}
    for recurring in (True, False):
        det = SurpriseDetector(period_seconds=0, long_period_seconds=0, recurring=recurring)
        for row in rows:
            det.learn_one(row)
        scores[recurring] = (det.score_one({"t": 630000.0, "y": 30.0}), det.score_one({"t": 630000.0, "y": 90.0}))
    usual, larger = scores[True]
    # seen in_window times in the window's 1000 rows: p no lower than that share
    assert in_window >= 3
    assert usual <= -math.log10(in_window / 1000) / 30.0 < 0.1 < scores[False][0], scores
    # a spike larger than every one seen before is still news
    assert larger > 0.9


def test_a_slow_decline_the_rows_do_not_show_is_seen_in_eight_hour_blocks() -> None:
    """Machine-temperature-like: a daily cycle that flattens, over two days, to 10 under its mean.

    Each row is near the one before and inside the range seen, and the distance from a day
    earlier grows a fraction of a unit a row: the rows' view never finds it surprising.
    The means of eight-hour blocks step down, which the coarse view does.
    """
    rng = random.Random(2)
    start, days, turn = 1_700_000_000, 45, 45 * 288  # five-minute rows; the decline starts on day 45
    rows = []
    for i in range(turn + 1200):
        cycle = 80 + 12 * math.sin(2 * math.pi * i / 288)
        share = min(1.0, max(0, i - turn) / 600)
        rows.append({"t": start + 300 * i, "y": (1 - share) * cycle + share * 70 + rng.gauss(0, 2)})
    assert days * 288 == turn

    rows_only, both = _scores(SurpriseDetector(coarse_seconds=0), rows), _scores(SurpriseDetector(), rows)
    # the last ten days before: nothing either way
    assert max(rows_only[turn - 2880 : turn]) < 0.1 and max(both[turn - 2880 : turn]) < 0.1
    assert max(rows_only[turn:]) < 0.1  # missed by the rows
    found = next(i for i in range(turn, len(rows)) if both[i] > 0.5)
    assert found - turn < 600  # within the decline's two days (at a block's end)
    assert (found + 1) % 96 == 0


def test_a_missing_daily_peak_is_seen_by_the_cycle_alone() -> None:
    """NAB's ``art_daily_nojump``: a day without its peak stays near the median and near the row
    before, so only the cycle (where it was a day earlier) says something is missing."""
    rng = random.Random(3)
    start, per_day, missing = 1_700_006_400, 288, 15  # five-minute rows from midnight UTC
    rows = []
    for i in range(20 * per_day):
        day, row_of_day = divmod(i, per_day)
        peak = 108 <= row_of_day < 204 and day != missing  # 09:00 to 17:00, but not on day 15
        rows.append({"t": start + 300 * i, "y": (80.0 if peak else 20.0) + rng.gauss(0, 2)})

    first = missing * per_day
    rows_only, with_cycle = _scores(SurpriseDetector(cycle_weight=0), rows), _scores(SurpriseDetector(), rows)
    # the five days before: nothing either way
    assert max(rows_only[first - 5 * per_day : first]) < 0.1 and max(with_cycle[first - 5 * per_day : first]) < 0.1
    assert max(rows_only[first : first + per_day]) < 0.1  # missed without the cycle's own view
    found = next(i for i in range(first, first + per_day) if with_cycle[i] > 0.3)
    assert found == first + 108  # at 09:00, the first row the peak should have been there
