"""A deterministic generator of realistic helpdesk traffic.

Day after day, several product areas with their own volumes; hour-of-day and
weekday seasonality; Poisson arrivals; customers who write more than once (a few
write a lot); tickets re-sent by the helpdesk on every update (same id, same
``created_at``); a few late arrivals; and spikes injected on demand. The demo, the
tests and the benchmarks all use it, and ``truth()`` gives what a correct pipeline
must count.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from pipeline.ingest.schema import UNASSIGNED

__all__ = ["DEFAULT_AREAS", "Area", "GeneratedTicket", "Spike", "TicketGenerator"]

# Share of the day's tickets by hour (UTC): quiet nights, a morning peak.
_HOURLY = np.array(
    [
        0.2,
        0.15,
        0.12,
        0.12,
        0.15,
        0.25,
        0.5,
        0.9,
        1.4,
        1.7,
        1.8,
        1.7,
        1.5,
        1.6,
        1.7,
        1.6,
        1.4,
        1.2,
        1.0,
        0.8,
        0.6,
        0.45,
        0.35,
        0.25,
    ]
)
_HOURLY = _HOURLY / _HOURLY.mean()
# Monday .. Sunday
_WEEKDAY = np.array([1.25, 1.15, 1.1, 1.05, 1.0, 0.35, 0.3])
_WEEKDAY = _WEEKDAY / _WEEKDAY.mean()


@dataclass(frozen=True)
class Area:
    """A product area and its mean tickets per hour (over a whole week)."""

    name: str
    tickets_per_hour: float
    topics: tuple[str, ...] = ()


@dataclass(frozen=True)
class Spike:
    """``factor`` times the area's normal rate from ``start`` for ``hours``."""

    area: str
    start: datetime
    hours: float
    factor: float
    subject: str = "Since the last release {thing} fails with an error"

    def covers(self, moment: datetime) -> bool:
        return self.start <= moment < self.start + timedelta(hours=self.hours)


DEFAULT_AREAS: tuple[Area, ...] = (
    Area("billing", 6.0, ("invoice", "card payment", "refund", "plan upgrade")),
    Area("login", 4.0, ("password reset", "two-factor code", "SSO sign-in", "session")),
    Area("reports", 3.0, ("CSV export", "PDF report", "dashboard chart", "scheduled report")),
    Area("mobile-app", 2.5, ("iOS app", "Android app", "push notification", "offline mode")),
    Area("integrations", 1.0, ("Slack integration", "webhook", "API token", "Zapier")),
    Area("notifications", 0.5, ("email digest", "alert email", "notification settings")),
)

_CASE_TYPES = ("bug", "ux_confusion", "feature_gap", "billing", "compatibility", "other")
_CASE_WEIGHTS = np.array([0.35, 0.25, 0.15, 0.1, 0.08, 0.07])
_SEVERITIES = ("low", "normal", "high", "urgent")
_SEVERITY_WEIGHTS = np.array([0.3, 0.45, 0.2, 0.05])
_CHANNELS = ("email", "web", "chat", "phone")
_TEMPLATES = {
    "bug": ("{thing} is broken", "When I open the {thing} I get an error 500. It worked yesterday."),
    "ux_confusion": ("How do I change the {thing}?", "I can't find where to set up the {thing}. Where is it?"),
    "feature_gap": ("Can the {thing} do this?", "We need the {thing} to support more options, is it planned?"),
    "billing": ("Question about the {thing}", "We were charged twice after using the {thing}."),
    "compatibility": ("{thing} on an older version", "The {thing} does not work with our browser version."),
    "other": ("About the {thing}", "Just a note about the {thing}."),
}
# Users who almost gave up, in their words (pipeline.patterns.nearchurn flags each of these).
_NEAR_CHURN = (
    "Honestly, I was about to cancel our subscription over this.",
    "We nearly switched to a competitor because of it.",
    "I almost gave up before finding a workaround.",
)
_NAMES = ("Ana", "Ben", "Chloe", "Dmitri", "Eve", "Farid", "Grace", "Hiro", "Ines", "Jonas")


@dataclass(frozen=True)
class GeneratedTicket:
    """A ticket as sent (``payload``) and when the helpdesk sent it."""

    sent_at: datetime
    payload: dict[str, object]
    is_resend: bool = False
    is_late: bool = False
    in_spike: bool = False


@dataclass
class TicketGenerator:
    """Helpdesk traffic from ``start`` for ``days`` days, reproducible with ``seed``.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> gen = TicketGenerator(datetime(2026, 1, 5, tzinfo=UTC), days=1, seed=7)
    >>> tickets = list(gen.tickets())
    >>> tickets == list(TicketGenerator(datetime(2026, 1, 5, tzinfo=UTC), days=1, seed=7).tickets())
    True
    >>> sorted(t.payload["id"] for t in tickets) != sorted(set(t.payload["id"] for t in tickets))  # re-sends
    True
    """

    start: datetime
    days: float = 3.0
    areas: Sequence[Area] = DEFAULT_AREAS
    spikes: Sequence[Spike] = ()
    seed: int = 0
    scale: float = 1.0
    customers: int = 400
    resend_rate: float = 0.3
    late_rate: float = 0.02
    late_max_hours: float = 6.0
    label_rate: float = 0.85
    id_prefix: str = "T"
    #: every n-th ticket also says the user nearly left (0: none); by position, so the
    #: random draws, and every other ticket, stay as they were
    near_churn_every: int = 0
    _cache: list[GeneratedTicket] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if self.days <= 0 or self.scale <= 0:
            raise ValueError("days and scale must be positive")

    def _created(self) -> Iterator[tuple[datetime, Area, bool]]:
        rng = np.random.default_rng(self.seed)
        first_hour = self.start.replace(minute=0, second=0, microsecond=0)
        for h in range(math.ceil(self.days * 24)):
            hour = first_hour + timedelta(hours=h)
            season = _HOURLY[hour.hour] * _WEEKDAY[hour.weekday()]
            for area in self.areas:
                spike = next((s for s in self.spikes if s.area == area.name and s.covers(hour)), None)
                rate = area.tickets_per_hour * self.scale * season * (spike.factor if spike else 1.0)
                n = int(rng.poisson(rate))
                offsets = np.sort(rng.uniform(0, 3600, n))
                for off in offsets:
                    moment = hour + timedelta(seconds=float(off))
                    if moment >= self.start:
                        in_spike = spike is not None and rng.random() < 1 - 1 / spike.factor
                        yield moment, area, in_spike

    def tickets(self) -> Iterator[GeneratedTicket]:
        """Every message the helpdesk sends, in the order it sends them."""
        if self._cache is None:
            self._cache = self._build()
        return iter(self._cache)

    def _build(self) -> list[GeneratedTicket]:
        rng = np.random.default_rng(self.seed + 1)
        # Zipf-like customers: a few write a lot.
        weights = 1.0 / np.arange(1, self.customers + 1) ** 0.8
        weights /= weights.sum()
        out: list[GeneratedTicket] = []
        for n, (created, area, in_spike) in enumerate(self._created()):
            customer = f"cust-{int(rng.choice(self.customers, p=weights)):04d}"
            case_type = "bug" if in_spike else _CASE_TYPES[int(rng.choice(6, p=_CASE_WEIGHTS))]
            thing = area.topics[int(rng.integers(len(area.topics)))] if area.topics else area.name
            subject, body = _TEMPLATES[case_type]
            if in_spike:
                spike = next(s for s in self.spikes if s.area == area.name and s.covers(created))
                subject = spike.subject
            name = _NAMES[int(rng.integers(len(_NAMES)))]
            payload: dict[str, object] = {
                "id": f"{self.id_prefix}{n:07d}",
                "created_at": created.isoformat(),
                "customer_id": customer,
                "subject": subject.format(thing=thing),
                "body": body.format(thing=thing)
                + (
                    f" {_NEAR_CHURN[n % len(_NEAR_CHURN)]}"
                    if self.near_churn_every and n % self.near_churn_every == 7
                    else ""
                )
                + f"\n\nThanks,\n{name}\n{name.lower()}@example.com",
                "channel": _CHANNELS[int(rng.integers(len(_CHANNELS)))],
            }
            if rng.random() < self.label_rate:
                payload["product_area"] = area.name
            if rng.random() < self.label_rate * 0.6:
                payload["case_type"] = case_type
            if rng.random() < self.label_rate * 0.7:
                payload["severity"] = _SEVERITIES[int(rng.choice(4, p=_SEVERITY_WEIGHTS))]
            late = bool(rng.random() < self.late_rate)
            sent = created + timedelta(seconds=float(rng.uniform(1, self.late_max_hours * 3600)) if late else 1.0)
            out.append(GeneratedTicket(sent, payload, is_late=late, in_spike=in_spike))
            updates = int(rng.random() < self.resend_rate) * int(rng.integers(1, 4))
            for u in range(updates):
                later = sent + timedelta(minutes=float(rng.uniform(5, 600)) * (u + 1))
                out.append(GeneratedTicket(later, {**payload, "body": f"{payload['body']}\n\n[update {u + 1}]"}, True))
        out.sort(key=lambda t: t.sent_at)
        return out

    def truth(self, window_seconds: int = 3600) -> Counter[tuple[int, str]]:
        """Distinct tickets per ``(window start, area)``: what a correct pipeline counts."""
        counts: Counter[tuple[int, str]] = Counter()
        seen: set[object] = set()
        for t in self.tickets():
            if t.payload["id"] in seen:
                continue
            seen.add(t.payload["id"])
            ts = datetime.fromisoformat(str(t.payload["created_at"])).timestamp()
            area = str(t.payload.get("product_area") or UNASSIGNED)
            counts[(int(ts // window_seconds) * window_seconds, area)] += 1
        return counts
