"""Pattern watches that fall asleep when quiet: the same episodes however the windows are closed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from detectors import VolumeWatch
from pipeline.patterns.watch import PATTERN_WATCH_AFTER, PatternWatch

H = 3600
DAY = 86400
START = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())  # a Monday

TEXTS = {
    "export": ("CSV export times out", "the export of my report never finishes"),
    "login": ("Cannot log in with SSO", "single sign-on redirects back to the login page"),
}


def _ticket(n: int, window: int, problem: str) -> list[object]:
    subject, body = TEXTS[problem]
    created = datetime.fromtimestamp(window + 60 + n % 600, UTC).isoformat()
    area = "export" if problem == "export" else "accounts"
    return [f"{problem}-{n}", window, area, "bug", f"c{n}", created, subject, body]


def _stream() -> list[list[object]]:
    """Export tickets now and then, two bursts of them after long quiets, and a login ticket every 7 hours."""
    hours: list[tuple[int, str]] = [(h, "login") for h in range(3, 24 * 70, 7)]
    hours += [(h, "export") for h in (1, 9, 20, 30, 44, 50, 70, 75)]  # a watch, then quiet
    hours += [(24 * 15 + 10, "export")] * 9 + [(24 * 15 + 11, "export")] * 3  # twelve customers at once
    hours += [(24 * 19 + 2, "export"), (24 * 21 + 15, "export")]  # a few more, days apart
    hours += [(24 * 30 + 9, "export")] * 10  # after nine quiet days: ten more
    return [_ticket(n, START + h * H, problem) for n, (h, problem) in enumerate(sorted(hours))]


def _run(close_every: int | None) -> tuple[list[tuple[str, str, int, int, int]], list[float], PatternWatch]:
    """Feed the stream, hearing the watermark every ``close_every`` hours (``None``: at each ticket's hour)."""
    pw = PatternWatch(H, 7 * DAY, sources=1, min_customers=5, watch_after=PATTERN_WATCH_AFTER)
    tickets = _stream()
    by_hour: dict[int, list[list[object]]] = {}
    for t in tickets:
        by_hour.setdefault(int(t[1]), []).append(t)  # type: ignore[call-overload]
    events = []
    end = START + 72 * DAY
    for hour in range(START, end + H, H):
        due = hour in by_hour if close_every is None else (hour - START) % (close_every * H) == 0 or hour == end
        if due:  # as the backtest does: the windows before this hour have closed
            touched = pw.hear({"0": hour})
            events += pw.judge(touched) + pw.close()
        pw.add(by_hour.get(hour, []))
    key = [(e.event, e.key, e.window_start, e.scale, e.customers) for e in events]
    return key, [e.score for e in events], pw


def test_a_quiet_pattern_sleeps_and_wakes_to_the_same_episodes_however_the_windows_close(monkeypatch) -> None:
    skipped: list[int] = []  # the windows of each quiet run learned in one step
    skip = VolumeWatch._skip_quiet

    def spy(watch: VolumeWatch, first: int, windows: int) -> None:
        skipped.append(windows)
        skip(watch, first, windows)

    monkeypatch.setattr(VolumeWatch, "_skip_quiet", spy)
    hourly, hourly_scores, pw = _run(1)
    runs, skipped[:] = list(skipped), []
    assert len(runs) >= 3 and sum(runs) > 400
    export = next(pid for pid, area in pw.area_of.items() if area == "export")
    # the two bursts, each one episode of the export pattern
    opened = [(e[1], e[2], e[4]) for e in hourly if e[0] == "opened"]
    assert opened == [(export, START + (24 * 15 + 10) * H, 9), (export, START + (24 * 30 + 9) * H, 10)]
    assert [e[0] for e in hourly if e[1] == export] == ["opened", "resolved", "opened", "resolved"]
    for close_every in (None, 5, 24 * 3):  # at tickets only (as the backtest), five hours, three days
        events, scores, _ = _run(close_every)
        assert events == hourly and skipped == runs  # the same quiet runs, learned the same way
        skipped.clear()
        assert scores == pytest.approx(hourly_scores, abs=1e-9)
    # as before watches slept: every watch stepped through every window
    monkeypatch.setattr(VolumeWatch, "_quiet_day", lambda self: False)
    stepped, stepped_scores, _ = _run(1)
    assert stepped == hourly
    assert hourly_scores == pytest.approx(stepped_scores, abs=2e-3)


def test_an_asleep_watch_is_left_behind_and_still_retires() -> None:
    pw = PatternWatch(H, 7 * DAY, sources=1, min_customers=5, watch_after=PATTERN_WATCH_AFTER)
    pw.add([_ticket(n, START + n * H, "export") for n in range(6)])
    for hour in range(6, 24 * 40):
        pw.judge(pw.hear({"0": START + hour * H}))
        pw.close()
        if hour == 24 * 10:
            (watch,) = pw.watches.values()
            # asleep since a day after its last ticket: nothing learned since
            assert watch.asleep and watch.learned_through == START + (5 + 24) * H
    assert pw.watches == {}  # 28 days after its last ticket, from the pattern's last window
    assert pw.closed_through == START + (24 * 40 - 1) * H
