from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.testbed.generator import DEFAULT_AREAS, Spike, TicketGenerator

MONDAY = datetime(2026, 3, 2, tzinfo=UTC)


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    a = [t.payload for t in TicketGenerator(MONDAY, days=1, seed=1).tickets()]
    b = [t.payload for t in TicketGenerator(MONDAY, days=1, seed=1).tickets()]
    c = [t.payload for t in TicketGenerator(MONDAY, days=1, seed=2).tickets()]
    assert a == b
    assert a != c


def test_volumes_follow_areas_and_seasonality() -> None:
    gen = TicketGenerator(MONDAY, days=14, seed=3)
    firsts = [t for t in gen.tickets() if not t.is_resend]
    per_area = Counter(t.payload.get("product_area") for t in firsts)
    # billing (6/h) is the busiest labelled area, notifications (0.5/h) the quietest
    assert per_area["billing"] > per_area["login"] > per_area["notifications"]
    hours = Counter(datetime.fromisoformat(str(t.payload["created_at"])).hour for t in firsts)
    assert hours[10] > 4 * hours[3]
    weekday = Counter(datetime.fromisoformat(str(t.payload["created_at"])).weekday() for t in firsts)
    assert weekday[0] > 2.5 * weekday[6]
    expected = 14 * 24 * sum(a.tickets_per_hour for a in DEFAULT_AREAS)
    assert abs(len(firsts) - expected) < 0.05 * expected


def test_resends_keep_id_and_created_at_and_late_ones_arrive_late() -> None:
    gen = TicketGenerator(MONDAY, days=2, seed=4)
    tickets = list(gen.tickets())
    by_id: dict[object, list] = {}
    for t in tickets:
        by_id.setdefault(t.payload["id"], []).append(t)
    resent = [ts for ts in by_id.values() if len(ts) > 1]
    assert len(resent) > 0.2 * len(by_id)
    for copies in resent:
        assert len({c.payload["created_at"] for c in copies}) == 1
        assert not copies[0].is_resend and all(c.is_resend for c in copies[1:])
    late = [t for t in tickets if t.is_late]
    assert late and all(
        t.sent_at - datetime.fromisoformat(str(t.payload["created_at"])) > timedelta(seconds=1) for t in late
    )
    assert [t.sent_at for t in tickets] == sorted(t.sent_at for t in tickets)
    customers = Counter(t.payload["customer_id"] for t in tickets if not t.is_resend)
    assert customers.most_common(1)[0][1] >= 10  # some customers write a lot


def test_spike_multiplies_the_area_rate_in_its_hours() -> None:
    spike = Spike("reports", MONDAY + timedelta(days=7, hours=10), hours=2, factor=5)
    base = TicketGenerator(MONDAY, days=14, seed=9, label_rate=1.0).truth()
    spiked = TicketGenerator(MONDAY, days=14, seed=9, label_rate=1.0, spikes=[spike]).truth()
    w = int(spike.start.timestamp())
    during = spiked[(w, "reports")] + spiked[(w + 3600, "reports")]
    normal = base[(w, "reports")] + base[(w + 3600, "reports")]
    assert during > 3 * max(normal, 1)


def test_naive_start_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        TicketGenerator(datetime(2026, 1, 1), days=1)  # noqa: DTZ001
