"""Points and their InfluxDB line protocol, shared by every sink."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Point", "to_line_protocol"]

_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\\": "\\\\"})
_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\\": "\\\\", "\n": r"\n"})
_STRING_ESCAPES = str.maketrans({'"': r"\"", "\\": "\\\\"})


@dataclass(frozen=True, slots=True)
class Point:
    """One point of a series: ``time`` is whole epoch seconds (the window start)."""

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, int | float | str | bool]
    time: int

    def line(self) -> str:
        """This point as one line of line protocol, with second precision.

        >>> Point("ticket_volume", {"area": "log in", "window": "1h"}, {"tickets": 3}, 3600).line()
        'ticket_volume,area=log\\\\ in,window=1h tickets=3i 3600'
        """
        tags = "".join(
            f",{k.translate(_TAG_ESCAPES)}={v.translate(_TAG_ESCAPES)}" for k, v in sorted(self.tags.items()) if v != ""
        )
        fields = ",".join(f"{k.translate(_TAG_ESCAPES)}={_field_value(v)}" for k, v in self.fields.items())
        return f"{self.measurement.translate(_MEASUREMENT_ESCAPES)}{tags} {fields} {self.time}"


def _field_value(value: int | float | str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return '"' + value.translate(_STRING_ESCAPES) + '"'


def to_line_protocol(points: Iterable[Point]) -> bytes:
    """Many points as one request body."""
    return "\n".join(p.line() for p in points).encode()
