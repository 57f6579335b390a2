"""Points and their InfluxDB line protocol, shared by every sink.

Tag values are escaped for the server that reads them (``flavour``), because servers
read a backslash in a tag differently (measured against influxd 1.6.7 and
VictoriaMetrics, ``tests/test_sinks.py``):

- ``"influxdb"`` (InfluxDB 1.x and 2.x, one parser): a backslash escapes only a comma,
  an equals sign or a space (``\\,`` ``\\=`` ``\\ ``); every other backslash is kept as
  written, so ``\\\\`` is two backslashes. Its tokenizer takes any character after a
  backslash as escaped, so a tag value cannot end in a backslash (``a\\`` or ``a\\\\``
  followed by the next comma or space: ``invalid tag format``, the point refused): a
  value's last backslash is written as ``＼`` (U+FF3C, the full-width reverse solidus),
  the one change made to a value, so that the point lands.
- ``"victoriametrics"`` (and InfluxDB 3, Telegraf): a backslash escapes a backslash too
  (``\\\\`` is one), so backslashes are doubled and every value is written exactly.

A line break or other control character cannot be written in a tag (influxd keeps the
escape's backslash, VictoriaMetrics silently drops the point); tickets cannot bring one
(:func:`pipeline.ingest.schema.parse_ticket` refuses it), and one from elsewhere is
written as the two characters ``\\n`` (``\\r``, ``\\t``), so that the point lands.

Tag values over :data:`MAX_TAG_VALUE_CHARS` characters are cut, with a hash of the whole
value so that two long values stay two series: InfluxDB refuses a series key over
65,535 bytes, and a counted ticket must always be a point.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["MAX_TAG_VALUE_CHARS", "Flavour", "Point", "bounded_tag_value", "escape_tag", "to_line_protocol"]

#: Which server reads the line protocol (``TICKETPULSE_INFLUX_FLAVOUR``).
Flavour = Literal["influxdb", "victoriametrics"]

#: The longest tag value written whole, in characters (labels are at most 128:
#: :data:`pipeline.ingest.schema.MAX_LABEL_CHARS`).
MAX_TAG_VALUE_CHARS = 256

_CONTROL_ESCAPES = {"\n": r"\n", "\r": r"\r", "\t": r"\t"}
_TAG_ESCAPES: dict[str, dict[int, str]] = {
    "influxdb": str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", **_CONTROL_ESCAPES}),
    "victoriametrics": str.maketrans(
        {"\\": "\\\\", ",": r"\,", "=": r"\=", " ": r"\ ", **{k: "\\" + v for k, v in _CONTROL_ESCAPES.items()}}
    ),
}
_MEASUREMENT_ESCAPES: dict[str, dict[int, str]] = {
    "influxdb": str.maketrans({",": r"\,", " ": r"\ "}),
    "victoriametrics": str.maketrans({"\\": "\\\\", ",": r"\,", " ": r"\ "}),
}
_STRING_ESCAPES = str.maketrans({'"': r"\"", "\\": "\\\\"})
#: What a tag value's last backslash becomes for InfluxDB (see the module's notes).
_LAST_BACKSLASH = "\uff3c"


def bounded_tag_value(value: str) -> str:
    """``value``, or when longer than :data:`MAX_TAG_VALUE_CHARS` its start and a hash of it.

    >>> bounded_tag_value("billing")
    'billing'
    >>> v = bounded_tag_value("x" * 990_000); len(v), v[-14:]
    (256, '~#eff9b1947694')
    """
    if len(value) <= MAX_TAG_VALUE_CHARS:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return value[: MAX_TAG_VALUE_CHARS - 14] + "~#" + digest


def escape_tag(text: str, flavour: Flavour = "influxdb") -> str:
    """A tag key or value as written in a line (bounded, escaped for ``flavour``).

    >>> escape_tag("a,b=c d\\\\")
    'a\\\\,b\\\\=c\\\\ d＼'
    >>> escape_tag("a,b=c d\\\\", "victoriametrics")
    'a\\\\,b\\\\=c\\\\ d\\\\\\\\'
    """
    text = bounded_tag_value(text).translate(_TAG_ESCAPES[flavour])
    if flavour == "influxdb" and text.endswith("\\"):
        text = text[:-1] + _LAST_BACKSLASH
    return text


@dataclass(frozen=True, slots=True)
class Point:
    """One point of a series: ``time`` is whole epoch seconds (the window start)."""

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, int | float | str | bool]
    time: int

    def line(self, flavour: Flavour = "influxdb") -> str:
        """This point as one line of line protocol, with second precision.

        >>> Point("ticket_volume", {"area": "log in", "window": "1h"}, {"tickets": 3}, 3600).line()
        'ticket_volume,area=log\\\\ in,window=1h tickets=3i 3600'
        """
        tags = "".join(
            f",{escape_tag(k, flavour)}={escape_tag(v, flavour)}" for k, v in sorted(self.tags.items()) if v != ""
        )
        fields = ",".join(f"{escape_tag(k, flavour)}={_field_value(v)}" for k, v in self.fields.items())
        return f"{self.measurement.translate(_MEASUREMENT_ESCAPES[flavour])}{tags} {fields} {self.time}"


def _field_value(value: int | float | str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return '"' + value.translate(_STRING_ESCAPES) + '"'


def to_line_protocol(points: Iterable[Point], flavour: Flavour = "influxdb") -> bytes:
    """Many points as one request body."""
    return "\n".join(p.line(flavour) for p in points).encode()
