"""The ``ticket-alerts`` messages: what the person paged reads (../shared/architecture.md)."""

from __future__ import annotations

from typing import Any

from detectors import SpikeEvent
from pipeline.outputs.series import ALL, window_time

__all__ = ["alert_payload", "evidence", "pattern_alert_payload"]


def alert_payload(spike: SpikeEvent, area: str, case_type: str = ALL) -> dict[str, Any]:
    """The ``ticket-alerts`` message of a spike event of an area, or of one case type in it
    (../shared/architecture.md: ``case_type`` is null for the whole area)."""
    return {
        "area": area,
        "case_type": None if case_type == ALL else case_type,
        "event": spike.event,
        "episode_id": spike.episode_id,
        "window_start": window_time(spike.window_start),
        "window_end": window_time(spike.window_end),
        "observed": spike.customers,
        "expected": spike.expected,
        "score": spike.score,
        "p_value": spike.p_value,
        "customers": spike.customers,
        "tickets": spike.tickets,
        "tickets_per_customer": spike.concentration,
        "level": spike.level,
        # the time scale of the evidence (seconds; 3600: a sharp burst, 86400: a day's surge)
        "scale": spike.scale,
        "span_start": window_time(spike.span_start),
        # when the evidence was there: the event time of the ticket that tipped it
        "detected_at": window_time(spike.detected_at if spike.detected_at is not None else spike.window_end),
        "evidence": evidence(spike),
        "example_ticket_ids": [ticket_id for ticket_id, _ in spike.examples],
        # in the customers' words, personal data masked (pipeline.text.privacy)
        "example_tickets": [text for _, text in spike.examples],
        "top_terms": list(spike.top_terms),
        "recent_product_events": [{**e, "at": window_time(e["at"])} for e in spike.recent_product_events],
    }


def pattern_alert_payload(spike: SpikeEvent, area: str, pattern: dict[str, Any]) -> dict[str, Any]:
    """A ``ticket-alerts`` message for a pattern's spike: the area alert's fields, and the pattern."""
    return {
        **alert_payload(spike, area),
        "pattern": {
            "id": pattern["id"],
            "name": pattern["name"],
            "tickets": pattern["tickets"],
            "customers": pattern["customers"],
            "tier": pattern["tier"],
            "concentration": pattern["concentration"],
        },
        "top_terms": pattern["name"].split(),
    }


def evidence(spike: SpikeEvent) -> str:
    """The alert in one line a person reads: customers over the scale against what is normal.

    >>> from detectors import SpikeEvent
    >>> e = SpikeEvent("opened", "e1", "sync", 0, 3600, 70, 68, 6.5, 0.9, 1e-9, "high", scale=86400)
    >>> evidence(e)
    '68 customers in 24 h against 6.5 expected (p = 1e-09)'
    """
    hours = (spike.scale or spike.window_end - spike.window_start) / 3600
    return f"{spike.customers} customers in {hours:g} h against {spike.expected:.1f} expected (p = {spike.p_value:.0e})"
