"""The series schema (pipeline.outputs.series) is what the dashboards and alert rules query, and what is written."""

from __future__ import annotations

import re

from detectors import SpikeEvent
from pipeline.outputs.series import (
    MEASUREMENTS,
    pattern_spike_point,
    spike_point,
    volume_point,
)

from .test_dashboards import dashboard_queries

_FROM = re.compile(r'FROM "(\w+)"')
_AS = re.compile(r'\s+AS\s+"\w+"')
_QUOTED = re.compile(r'"(\w+)"')


def _names(query: str) -> tuple[str, set[str]]:
    """The measurement a query reads, and every tag or field it names (aliases left out)."""
    measurement = _FROM.search(query)
    assert measurement, query
    return measurement.group(1), set(_QUOTED.findall(_AS.sub("", query))) - {measurement.group(1)}


def test_every_dashboard_and_alert_query_names_a_declared_measurement_with_its_tags_and_fields() -> None:
    queries = dashboard_queries()
    assert len(queries) > 20
    for source, what, query in queries:
        measurement, names = _names(query)
        assert measurement in MEASUREMENTS, f"{source} {what}: {measurement} is not declared"
        declared = MEASUREMENTS[measurement]
        unknown = names - set(declared.tags) - set(declared.fields)
        assert not unknown, f"{source} {what}: {sorted(unknown)} not in {measurement}'s tags or fields"


def test_the_builders_write_exactly_the_declared_tags_and_fields() -> None:
    spike = SpikeEvent(
        key="reports",
        event="opened",
        episode_id="e1",
        window_start=3600,
        window_end=7200,
        customers=12,
        tickets=15,
        expected=2.5,
        score=0.9,
        p_value=1e-6,
        level="high",
    )
    for point in (
        volume_point(3600, "reports", "all", "all", "1h", 15, 12),
        spike_point(spike, "1h", "reports"),
        pattern_spike_point(spike, "reports", "export fails", "1h"),
    ):
        declared = MEASUREMENTS[point.measurement]
        assert set(point.tags) == set(declared.tags)
        assert set(point.fields) <= set(declared.fields)
    assert volume_point(3600, "reports", "all", "all", "1h", 15, 12).line() == (
        "ticket_volume,area=reports,case_type=all,severity=all,window=1h tickets=15i,customers=12i 3600"
    )
