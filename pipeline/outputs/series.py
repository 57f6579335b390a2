"""The InfluxDB series, declared once: a builder per measurement, and the reader the report uses.

Every point ticketpulse writes is made here, so a measurement's tags and fields are
spelled in one place; the dashboards' queries are checked against :data:`MEASUREMENTS`
(tests/test_dashboards.py), and docs/operations.md lists them.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from detectors import SpikeEvent
from pipeline.outputs.lineprotocol import Point
from pipeline.settings import Settings

__all__ = [
    "MEASUREMENTS",
    "InfluxReader",
    "Measurement",
    "baseline_point",
    "fix_effect_point",
    "pattern_spike_point",
    "pattern_volume_point",
    "product_event_point",
    "quality_point",
    "spike_point",
    "stats_point",
    "tags_point",
    "volume_point",
]

#: The ``case_type`` (and ``severity``) of a roll-up: every ticket of the area.
ALL = "all"


@dataclass(frozen=True)
class Measurement:
    """A measurement's tags and fields (``fields``: every field a point of it may carry)."""

    tags: tuple[str, ...]
    fields: tuple[str, ...]
    meaning: str


_SPIKE_FIELDS = ("observed", "expected", "score", "customers", "tickets", "episode")

MEASUREMENTS: dict[str, Measurement] = {
    "ticket_volume": Measurement(
        ("area", "case_type", "severity", "window"),
        ("tickets", "customers"),
        "distinct tickets and customers per window and key, stamped at the window's start",
    ),
    "ticket_spike": Measurement(
        ("area", "case_type", "level", "scale", "window"), _SPIKE_FIELDS, "a spike episode's event, at its window"
    ),
    "ticket_baseline": Measurement(
        ("area", "case_type", "window"), ("customers", "expected", "upper"), "the normal band of a closed window"
    ),
    "pattern_volume": Measurement(
        ("pattern", "area", "window"),
        ("tickets", "customers", "near_churn", "name"),
        "a pattern's tickets per closed window",
    ),
    "pattern_spike": Measurement(
        ("pattern", "area", "level", "scale", "window"), (*_SPIKE_FIELDS, "name"), "a pattern's spike episode event"
    ),
    "product_event": Measurement(("area", "kind", "pattern"), ("ref", "note"), "releases, fixes, docs changes"),
    "classifier_quality": Measurement(
        ("target", "worker"), ("accuracy", "macro_f1", "labelled", "learned"), "prequential tagging quality"
    ),
    "pipeline_stats": Measurement(
        ("worker", "app"),
        (
            "received",
            "dead_letters",
            "counted",
            "duplicates",
            "too_late",
            "patterns_too_late",
            "spike_events",
            "alerts_delivered",
            "alerts_undelivered",
            "tagged",
            "uncertain_case_type",
            "uncertain_product_area",
            "uncertain_severity",
            "labels_joined",
            "labels_expired",
            "corrections",
            "lag_seconds",
        ),
        "a worker's counters",
    ),
    "ticket_tags": Measurement(
        ("worker",),
        ("tagged", "uncertain_case_type", "uncertain_product_area", "uncertain_severity"),
        "tickets tagged per stats interval, and how many were uncertain",
    ),
    "fix_effect": Measurement(
        ("area", "kind", "ref", "pattern"),
        ("ratio", "ratio_low", "ratio_high", "change", "customers_ratio", "days"),
        "a fix's measured effect (the monthly review)",
    ),
}


def _point(measurement: str, tags: Mapping[str, str], fields: Mapping[str, Any], time: int) -> Point:
    # cheap enough for the hot path: the names are checked by the tests, not per point
    return Point(measurement, tags, fields, time)


def volume_point(
    window: int, area: str, case_type: str, severity: str, window_tag: str, tickets: int, customers: int
) -> Point:
    """``ticket_volume``: one window and key's distinct tickets and customers."""
    tags = {"area": area, "case_type": case_type, "severity": severity, "window": window_tag}
    return _point("ticket_volume", tags, {"tickets": tickets, "customers": customers}, window)


def _spike_fields(spike: SpikeEvent) -> dict[str, int | float | str]:
    return {
        "observed": spike.customers,
        "expected": float(spike.expected),
        "score": float(spike.score),
        "customers": spike.customers,
        "tickets": spike.tickets,
        "episode": spike.episode_id,
    }


def scale_label(seconds: int, window_tag: str) -> str:
    """A time scale as a tag: ``1h``, ``6h``, ``24h`` (the window's own when not known).

    >>> scale_label(21600, "1h"), scale_label(0, "1h"), scale_label(900, "15m")
    ('6h', '1h', '900s')
    """
    if not seconds:
        return window_tag
    return f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds}s"


def spike_point(spike: SpikeEvent, window_tag: str, area: str, case_type: str = ALL) -> Point:
    """``ticket_spike``: a spike event of an area (or a case type in it), stamped at its window's start.

    ``scale``: the time scale whose evidence it is (``1h``: a sharp burst; ``24h``: a surge).
    """
    scale = scale_label(spike.scale, window_tag)
    tags = {"area": area, "case_type": case_type, "level": spike.level, "scale": scale, "window": window_tag}
    return _point("ticket_spike", tags, _spike_fields(spike), spike.window_start)


def pattern_spike_point(spike: SpikeEvent, area: str, name: str, window_tag: str) -> Point:
    """``pattern_spike``: a pattern's spike event, stamped at its window's start."""
    scale = scale_label(spike.scale, window_tag)
    tags = {"pattern": spike.key, "area": area, "level": spike.level, "scale": scale, "window": window_tag}
    return _point("pattern_spike", tags, {**_spike_fields(spike), "name": name}, spike.window_start)


def baseline_point(
    area: str, case_type: str, window_tag: str, window: int, customers: int, expected: float, upper: float
) -> Point:
    """``ticket_baseline``: a closed window's customers against the normal band."""
    tags = {"area": area, "case_type": case_type, "window": window_tag}
    return _point("ticket_baseline", tags, {"customers": customers, "expected": expected, "upper": upper}, window)


def pattern_volume_point(
    pattern: str, area: str, window_tag: str, window: int, tickets: int, customers: int, near_churn: int, name: str
) -> Point:
    """``pattern_volume``: a pattern's tickets, customers and near-churn tickets in a closed window."""
    tags = {"pattern": pattern, "area": area, "window": window_tag}
    fields = {"tickets": tickets, "customers": customers, "near_churn": near_churn, "name": name}
    return _point("pattern_volume", tags, fields, window)


def product_event_point(event: Mapping[str, Any]) -> Point:
    """``product_event``: a release, fix or docs change (a parsed ``product-events`` message)."""
    tags = {"area": event["area"], "kind": event["kind"]}
    if "pattern" in event:
        tags["pattern"] = event["pattern"]
    return _point("product_event", tags, {"ref": event["ref"], "note": event["note"]}, event["at"])


def quality_point(target: str, worker: str, summary: Mapping[str, Any], learned: int, now: int) -> Point:
    """``classifier_quality``: one field's prequential quality on one worker."""
    return _point("classifier_quality", {"target": target, "worker": worker}, {**summary, "learned": learned}, now)


def stats_point(worker: str, app: str, fields: Mapping[str, int | float], now: int) -> Point:
    """``pipeline_stats``: a worker's counters."""
    return _point("pipeline_stats", {"worker": worker, "app": app}, fields, now)


def tags_point(worker: str, delta: Mapping[str, int], now: int) -> Point:
    """``ticket_tags``: tickets tagged since the last point, and the uncertain ones per field."""
    return _point("ticket_tags", {"worker": worker}, delta, now)


def fix_effect_point(effect: Mapping[str, Any]) -> Point:
    """``fix_effect``: a fix's measured effect, stamped at the event (a rerun replaces it)."""
    tags = {"area": effect["area"], "kind": effect["kind"], "ref": effect["ref"]}
    if "pattern" in effect:
        tags["pattern"] = effect["pattern"]
    tickets = effect["tickets"]
    fields = {
        "ratio": tickets["ratio"],
        "ratio_low": tickets["ratio_low"],
        "ratio_high": tickets["ratio_high"],
        "change": tickets["change"],
        "customers_ratio": effect["customers"]["ratio"],
        "days": effect["days"],
    }
    return _point("fix_effect", tags, fields, effect["at"])


def window_time(ts: float) -> str:
    """An epoch second as the ISO 8601 UTC time alerts and reports show."""
    return datetime.fromtimestamp(ts, UTC).isoformat()


class InfluxReader:
    """InfluxQL over HTTP: 1.x ``/query``, or 2.x through its v1 compatibility API (token)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.influx_url:
            raise ValueError("TICKETPULSE_INFLUX_URL is not set: the report reads the series from InfluxDB")
        self.settings = settings

    def query(self, q: str) -> list[dict[str, Any]]:
        """The series InfluxDB answers ``q`` with (none if the database does not exist yet)."""
        s = self.settings
        params = {"db": s.influx_database if s.influx_version == 1 else s.influx_bucket, "q": q, "epoch": "s"}
        headers = {}
        if s.influx_version == 2 and s.influx_token is not None:
            headers["Authorization"] = f"Token {s.influx_token.get_secret_value()}"
        elif s.influx_username and s.influx_password is not None:
            params.update(u=s.influx_username, p=s.influx_password.get_secret_value())
        url = f"{s.influx_url}/query?{urllib.parse.urlencode(params)}"  # http(s) only: settings check it
        request = urllib.request.Request(url, headers=headers)  # noqa: S310
        with urllib.request.urlopen(request, timeout=s.influx_timeout_seconds) as resp:  # noqa: S310
            body = orjson.loads(resp.read())
        result = body["results"][0]
        if "error" in result:
            if "database not found" in result["error"]:
                return []
            raise ValueError(f"InfluxDB answered {result['error']!r} to {q!r}")
        return list(result.get("series", []))
