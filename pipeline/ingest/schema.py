"""The ticket schema, and the validation that splits good input from bad.

Validation is hand-written on top of :func:`orjson.loads` rather than a model
library: it runs once per ticket on the hot path, and each failure must say in
plain words what is wrong, because the reason travels to the dead-letter topic
and is read by the people who run the helpdesk integration.

Unknown extra fields are accepted and ignored (helpdesks add fields of their
own all the time; rejecting them would reject whole integrations).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

__all__ = [
    "CASE_TYPES",
    "EVENT_KINDS",
    "LABEL_FIELDS",
    "MAX_BODY_CHARS",
    "MAX_LABEL_CHARS",
    "MAX_SUBJECT_CHARS",
    "UNASSIGNED",
    "Ticket",
    "TicketError",
    "parse_label",
    "parse_product_event",
    "parse_ticket",
]

#: What a product event can be (``product-events`` topic).
EVENT_KINDS = frozenset({"release", "fix", "docs", "default-change"})

#: A pattern's id (:class:`pipeline.patterns.grouper.PatternGrouper`): safe to put in a query as it is.
_PATTERN_ID = re.compile(r"p-[0-9a-f]{10}")

#: Case types, from the essays the product grew from.
CASE_TYPES = frozenset({"bug", "ux_confusion", "feature_gap", "billing", "compatibility", "other"})

#: The tag value of a label a ticket does not carry (yet).
UNASSIGNED = "unassigned"

_REQUIRED_TEXT = ("subject", "body")
_OPTIONAL_TEXT = ("channel", "product_area", "case_type", "severity", "plan", "locale")


#: The longest label accepted (``channel``, ``product_area``, ``case_type``, ``severity``,
#: ``plan``, ``locale``), in characters. Labels become Kafka keys, state keys (an area's
#: spike watch is one record per area) and InfluxDB tag values; one 990,000-character area
#: made the area's watch state a 2-4 MB record, over the producer's 1 MB limit, and the
#: worker crashed on it at every start. Helpdesk labels are short (a Zendesk tag is at most
#: 80 characters, a Freshdesk group name 255 but in practice a few words).
MAX_LABEL_CHARS = 128

#: The longest subject accepted, in characters: a longer one is refused, not cut. An e-mail
#: subject is one header line, at most 998 characters (RFC 5322), and helpdesks keep less
#: (Freshdesk 255); a longer "subject" is not one. Subjects are kept whole in state: an
#: area's watch counts their words and keeps example tickets, and one 500,000-character
#: word in six subjects made that state a 2-4 MB record the worker could not write.
MAX_SUBJECT_CHARS = 1000

#: The longest body kept, in characters: a longer body is cut here, and the ticket counts as
#: usual (a pasted log or a forwarded thread is a real ticket). The first 5,000 characters
#: are what the tagger learns from and what alerts show as examples (patterns read the first
#: 2,000); keeping whole bodies let two tickets of 600 KB make one 1.2 MB state record.
MAX_BODY_CHARS = 5000

#: Characters a label cannot hold: line breaks and other control characters. InfluxDB's line
#: protocol has no way to write a line break in a tag value (influxd 1.x keeps the escape's
#: backslash, VictoriaMetrics drops the point), and a label is one line of text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class TicketError(ValueError):
    """Why a message is not a valid ticket; the text goes to the dead-letter topic."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """A validated ticket. Labels the helpdesk did not fill in are ``None``."""

    id: str
    created_at: datetime
    customer_id: str
    subject: str
    body: str
    channel: str | None = None
    product_area: str | None = None
    case_type: str | None = None
    severity: str | None = None
    plan: str | None = None
    locale: str | None = None

    @property
    def created_ts(self) -> float:
        """``created_at`` as seconds since the epoch."""
        return self.created_at.timestamp()


#: The longest ticket or customer id accepted, in characters. Ids key Kafka messages and are
#: held for as long as the worker remembers a ticket (the tagger's learned ids, a million of
#: them; the label join; alert examples), so an unbounded one would hold a megabyte each
#: (a ticket may be as large as TICKETPULSE_MAX_TICKET_BYTES). Helpdesk ids are short
#: (Zendesk: a number, Jira: ``PROJ-1234``, Freshdesk: a number, an e-mail's Message-ID at
#: most 998 characters in theory, 60-100 in practice).
MAX_IDENTIFIER_CHARS = 256


def _identifier(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if value is None:
        raise TicketError(f"missing required field '{name}'")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TicketError(f"field '{name}' must be a string or an integer, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise TicketError(f"field '{name}' is empty")
    if len(text) > MAX_IDENTIFIER_CHARS:
        raise TicketError(
            f"field '{name}' is {len(text):,} characters long, over the limit of {MAX_IDENTIFIER_CHARS} "
            f"(it starts {text[:40]!r})"
        )
    return text


def _label(value: str, name: str) -> str | None:
    """A label field's value, stripped (``None`` when blank); :class:`TicketError` when over
    :data:`MAX_LABEL_CHARS` or holding a control character."""
    text = value.strip()
    if len(text) > MAX_LABEL_CHARS:
        raise TicketError(
            f"field '{name}' is {len(text):,} characters long, over the limit of {MAX_LABEL_CHARS} "
            f"(it starts {text[:40]!r})"
        )
    control = _CONTROL.search(text)
    if control:
        raise TicketError(
            f"field '{name}' holds a line break or another control character (U+{ord(control.group()):04X} "
            f"at character {control.start() + 1}): a label is one line of text"
        )
    return text or None


def _created_at(doc: dict[str, Any]) -> datetime:
    value = doc.get("created_at")
    if value is None:
        raise TicketError("missing required field 'created_at'")
    if not isinstance(value, str):
        raise TicketError(f"field 'created_at' must be an ISO 8601 string, got {type(value).__name__}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise TicketError(f"field 'created_at' is not an ISO 8601 date-time: {value[:40]!r}") from None
    if moment.tzinfo is None:
        raise TicketError(f"field 'created_at' has no time zone: {value[:40]!r}")
    return moment


def _json_object(raw: bytes | None, what: str, max_bytes: int) -> dict[str, Any]:
    """The message as a JSON object, or a :class:`TicketError` saying why it is not one."""
    if raw is None:
        raise TicketError("empty message (no value)")
    if len(raw) > max_bytes:
        raise TicketError(f"message of {len(raw)} bytes is over the limit of {max_bytes} bytes")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson reports invalid UTF-8 as a decode error too; keep its words.
        raise TicketError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise TicketError(f"{what} must be a JSON object, got {type(doc).__name__}")
    return doc


def parse_ticket(raw: bytes, max_bytes: int = 1_000_000, latest: float | None = None) -> Ticket:
    """Parse and validate one message; raise :class:`TicketError` naming the problem.

    ``latest``: the newest ``created_at`` accepted, in seconds since the epoch (the
    worker's clock and ``TICKETPULSE_MAX_FUTURE_HOURS``). A date far ahead, a helpdesk's
    wrong clock or a year typed wrong, would move its partition's event time there:
    every open window closed, every later ticket too late, and the spike watch asked to
    learn every hour up to it.

    Bounds: labels (``channel``, ``product_area``, ``case_type``, ``severity``, ``plan``,
    ``locale``) at most :data:`MAX_LABEL_CHARS` characters and one line, the subject at
    most :data:`MAX_SUBJECT_CHARS` (longer ones are refused with the field and its
    length); the body is cut to :data:`MAX_BODY_CHARS` (the ticket still counts).

    Examples
    --------
    >>> t = parse_ticket(b'{"id": 7, "created_at": "2026-01-05T10:00:00Z", '
    ...                  b'"customer_id": "c1", "subject": "Export fails", "body": "..."}')
    >>> t.id, t.product_area, t.created_at.isoformat()
    ('7', None, '2026-01-05T10:00:00+00:00')
    >>> parse_ticket(b'{"id": "1"}')
    Traceback (most recent call last):
    ...
    pipeline.ingest.schema.TicketError: missing required field 'created_at'
    """
    doc = _json_object(raw, "a ticket", max_bytes)
    ticket_id = _identifier(doc, "id")
    created_at = _created_at(doc)
    if latest is not None and created_at.timestamp() > latest:
        hours = (created_at.timestamp() - latest) / 3600
        raise TicketError(
            f"field 'created_at' is {doc['created_at'][:40]!r}, {hours:,.0f} h ahead of this worker's clock "
            "and TICKETPULSE_MAX_FUTURE_HOURS: a wrong date would close every open window"
        )
    customer_id = _identifier(doc, "customer_id")
    text: dict[str, str] = {}
    for name in _REQUIRED_TEXT:
        value = doc.get(name)
        if value is None:
            raise TicketError(f"missing required field '{name}'")
        if not isinstance(value, str):
            raise TicketError(f"field '{name}' must be a string, got {type(value).__name__}")
        text[name] = value
    if len(text["subject"]) > MAX_SUBJECT_CHARS:
        raise TicketError(
            f"field 'subject' is {len(text['subject']):,} characters long, over the limit of {MAX_SUBJECT_CHARS} "
            f"(it starts {text['subject'][:40]!r})"
        )
    optional: dict[str, str | None] = {}
    for name in _OPTIONAL_TEXT:
        value = doc.get(name)
        if value is not None and not isinstance(value, str):
            raise TicketError(f"field '{name}' must be a string or null, got {type(value).__name__}")
        optional[name] = _label(value, name) if value is not None else None
    case_type = optional["case_type"]
    if case_type is not None and case_type not in CASE_TYPES:
        raise TicketError(f"field 'case_type' is {case_type[:40]!r}, not one of {', '.join(sorted(CASE_TYPES))}")
    return Ticket(
        id=ticket_id,
        created_at=created_at,
        customer_id=customer_id,
        subject=text["subject"],
        body=text["body"][:MAX_BODY_CHARS],
        channel=optional["channel"],
        product_area=optional["product_area"],
        case_type=case_type,
        severity=optional["severity"],
        plan=optional["plan"],
        locale=optional["locale"],
    )


def parse_product_event(raw: bytes) -> dict[str, Any]:
    """Validate a ``product-events`` message: ``{"kind", "area", "at", "ref", "note"?, "pattern"?}``.

    An event for one pattern (a fix of that problem) names its id, as ``pattern_volume``
    and the alerts give it, and the pattern's area; its effect is measured on that
    pattern's tickets.

    >>> parse_product_event(b'{"kind": "release", "area": "reports", "at": "2026-03-10T09:00:00Z", "ref": "v4.2"}')
    {'kind': 'release', 'area': 'reports', 'at': 1773133200, 'ref': 'v4.2', 'note': ''}
    >>> fix = b'{"kind": "fix", "area": "reports", "at": "2026-03-10T09:00:00Z", "ref": "#12", "pattern": '
    >>> parse_product_event(fix + b'"p-033a1d39b9"}')
    {'kind': 'fix', 'area': 'reports', 'at': 1773133200, 'ref': '#12', 'note': '', 'pattern': 'p-033a1d39b9'}
    >>> parse_product_event(fix + b'"exports"}')
    Traceback (most recent call last):
    ...
    pipeline.ingest.schema.TicketError: field 'pattern' is 'exports', not a pattern id such as 'p-033a1d39b9'
    """
    try:
        doc = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise TicketError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise TicketError("a product event must be a JSON object")
    kind = doc.get("kind")
    if kind not in EVENT_KINDS:
        raise TicketError(f"field 'kind' is {kind!r}, not one of {', '.join(sorted(EVENT_KINDS))}")
    for name in ("area", "ref"):
        if not isinstance(doc.get(name), str) or not doc[name].strip():
            raise TicketError(f"missing required field '{name}'")
    area = _label(doc["area"], "area") or ""
    if len(doc["ref"]) > MAX_IDENTIFIER_CHARS:
        raise TicketError(
            f"field 'ref' is {len(doc['ref']):,} characters long, over the limit of {MAX_IDENTIFIER_CHARS}"
        )
    moment = _created_at({"created_at": doc.get("at")}) if doc.get("at") is not None else None
    if moment is None:
        raise TicketError("missing required field 'at'")
    note = doc.get("note") or ""
    if not isinstance(note, str):
        raise TicketError("field 'note' must be a string")
    if len(note) > MAX_SUBJECT_CHARS:
        raise TicketError(f"field 'note' is {len(note):,} characters long, over the limit of {MAX_SUBJECT_CHARS}")
    event = {"kind": kind, "area": area, "at": int(moment.timestamp()), "ref": doc["ref"], "note": note}
    pattern = doc.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str) or not _PATTERN_ID.fullmatch(pattern):
            raise TicketError(f"field 'pattern' is {pattern!r}, not a pattern id such as 'p-033a1d39b9'")
        event["pattern"] = pattern
    return event


#: The fields a label may set (``ticket-labels``), the tagger's targets.
LABEL_FIELDS = ("case_type", "product_area", "severity")


def parse_label(raw: bytes | None) -> dict[str, str]:
    """Validate a ``ticket-labels`` message: ``{"id", "case_type"?, "product_area"?, "severity"?, ...}``.

    Returns the id and the fields it sets (at least one); ``labelled_by`` and
    ``labelled_at`` are kept when given.

    >>> parse_label(b'{"id": 42, "case_type": "billing", "labelled_by": "ana"}')
    {'id': '42', 'case_type': 'billing', 'labelled_by': 'ana'}
    >>> parse_label(b'{"id": "42"}')
    Traceback (most recent call last):
    ...
    pipeline.ingest.schema.TicketError: a label sets none of case_type, product_area, severity
    """
    doc = _json_object(raw, "a label", max_bytes=1_000_000)
    label = {"id": _identifier(doc, "id")}
    for name in (*LABEL_FIELDS, "labelled_by", "labelled_at"):
        value = doc.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise TicketError(f"field '{name}' must be a non-empty string")
        label[name] = _label(value, name) or ""
    if not any(name in label for name in LABEL_FIELDS):
        raise TicketError(f"a label sets none of {', '.join(LABEL_FIELDS)}")
    case_type = label.get("case_type")
    if case_type is not None and case_type not in CASE_TYPES:
        raise TicketError(f"field 'case_type' is {case_type[:40]!r}, not one of {', '.join(sorted(CASE_TYPES))}")
    return label
