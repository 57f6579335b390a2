"""Helpdesks in: their webhook payloads and exports turned into ticketpulse tickets.

One adapter per helpdesk maps its payload to the ticket schema. A ticket update
(new comment, tag or status change) carries the same ticket id, so it counts once.
The helpdesk's own fields become labels where they mean one: a tag ``area:<name>``
(or the group) is the product area, the priority is the severity, the ticket type
maps to a case type. Requester e-mail addresses are not stored: the customer id is
the helpdesk's requester id, or a hash of the address.

Authentication, per source (:func:`verify`): Zendesk signs with
``base64(HMAC-SHA256(timestamp + body))``; Intercom with ``sha1=hex(HMAC-SHA1(body))``;
Help Scout with ``base64(HMAC-SHA1(body))``; Freshdesk and the project's own JSON send
a bearer token.

Replays. A captured request stays correctly signed for ever, so a signature alone does
not stop someone who saw one request from sending it again:

- Zendesk signs a timestamp with the body: :func:`stale_signature` refuses one older or
  newer than a tolerance (``TICKETPULSE_WEBHOOK_TOLERANCE_SECONDS``, five minutes), and the
  event's ``id`` is remembered (:class:`RecentDeliveries`), so a replay within the
  tolerance is answered without producing the ticket again.
- Intercom and Help Scout sign the body only, with no time in the signature. Intercom's
  notification has an ``id`` (``notif_...``), remembered like Zendesk's; Help Scout sends
  no event id, so the body's SHA-256 is remembered instead (a redelivery is the same
  body). Both only within the worker's memory (the last 10,000 deliveries of each
  source, lost at a restart). What a user should do besides: serve the endpoint over
  HTTPS only (a request nobody can read cannot be captured), rotate the secret if a
  request may have leaked, and know that a replayed ticket is never counted twice anyway
  (a ticket is counted once per id): a replay can only bring back an old version of its
  labels until the next update.
- Freshdesk sends a static bearer token and no signature: anyone who holds the token can
  send any ticket, replayed or not. Keep the token secret, on HTTPS, and rotate it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from html import unescape
from typing import Any

__all__ = ["ADAPTERS", "AdapterError", "RecentDeliveries", "adapt", "delivery_id", "stale_signature", "verify"]


class AdapterError(ValueError):
    """The payload is not a ticket this adapter understands; the message says why."""


_TYPE_TO_CASE = {
    "problem": "bug",
    "incident": "bug",
    "bug": "bug",
    "question": "ux_confusion",
    "how-to": "ux_confusion",
    "feature request": "feature_gap",
    "feature_request": "feature_gap",
    "billing": "billing",
    "refund": "billing",
    "task": "other",
}
_PRIORITY = {"1": "low", "2": "normal", "3": "high", "4": "urgent", "medium": "normal"}


_TAG = re.compile(r"<[^>]+>")


def _text(html: Any) -> str:
    """Plain text of a helpdesk's HTML body (paragraphs and breaks kept as new lines)."""
    text = re.sub(r"(?i)<br\s*/?>|</p>", "\n", str(html or ""))
    return unescape(_TAG.sub("", text)).strip()


def _source_id(value: Any, field: str) -> str:
    """A helpdesk's id (a ticket's, a requester's): a string or an integer, nothing else.

    ``null``, ``true``, a list or an object is refused: ``f"zendesk-{None}"`` made 26
    different tickets with ``"id": null`` one ticket ``zendesk-None``.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise AdapterError(f"field '{field}' must be a string or an integer, got {_json_type(value)}")
    text = str(value).strip()
    if not text:
        raise AdapterError(f"field '{field}' is empty")
    return text


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, as a helpdesk's developer would say it."""
    names = {type(None): "null", bool: "a boolean", dict: "an object", list: "a list", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _customer(requester_id: Any, email: Any, field: str = "requester_id") -> str:
    if requester_id not in (None, ""):
        return _source_id(requester_id, field)
    if isinstance(email, str) and email.strip():
        return "email-" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:16]
    raise AdapterError("no requester: neither a requester id nor an e-mail address")


#: The range of times a helpdesk can mean, in seconds since the epoch (years 1970 to 9999):
#: ``datetime`` cannot hold ``1e20`` or ``-1e15``, and answered 500 to them.
_EARLIEST, _LATEST = 0.0, 253402300799.0


def _iso(value: Any, field: str) -> str:
    if isinstance(value, bool):
        raise AdapterError(f"field '{field}' must be a time, got a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value) or not _EARLIEST <= value <= _LATEST:
            raise AdapterError(f"field '{field}' is {value!r} seconds since 1970, not a time between 1970 and 9999")
        return datetime.fromtimestamp(value, UTC).isoformat()
    if isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise AdapterError(f"field '{field}' is not an ISO 8601 date-time: {value[:40]!r}") from None
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()
    if value in (None, ""):
        raise AdapterError(f"missing {field}")
    raise AdapterError(f"field '{field}' must be a time, got {_json_type(value)}")


def _string(value: Any, field: str) -> str:
    """A text field (subject, body): a string, or nothing (``null`` or missing) as ``""``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise AdapterError(f"field '{field}' must be a string, got {_json_type(value)}")


def _labels(tags: list[str], group: Any, priority: Any, kind: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for tag in tags:
        key, _, value = tag.partition(":")
        if key in ("area", "product_area") and value:
            out["product_area"] = value.strip().lower()
    if "product_area" not in out and group:
        out["product_area"] = str(group).strip().lower()
    if priority not in (None, ""):
        p = str(priority).strip().lower()
        out["severity"] = _PRIORITY.get(p, p)
    if kind:
        case = _TYPE_TO_CASE.get(str(kind).strip().lower())
        if case:
            out["case_type"] = case
    return out


def from_zendesk(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A Zendesk ticket: an event webhook (``detail``), a trigger body or export row (``ticket``)."""
    t = doc.get("detail") or doc.get("ticket") or doc
    if not isinstance(t, Mapping) or "id" not in t:
        raise AdapterError("no ticket in the payload (expected 'detail' or 'ticket' with an 'id')")
    tags = t.get("tags") or []
    comment = t.get("comment") or {}
    return {
        "id": f"zendesk-{_source_id(t['id'], 'id')}",
        "created_at": _iso(t.get("created_at"), "created_at"),
        "customer_id": _customer(t.get("requester_id"), (t.get("requester") or {}).get("email")),
        "subject": _string(t.get("subject"), "subject"),
        "body": _string(t.get("description") or comment.get("body"), "description"),
        "channel": (t.get("via") or {}).get("channel") if isinstance(t.get("via"), Mapping) else t.get("via"),
        **_labels(list(tags), t.get("group") or t.get("group_name"), t.get("priority"), t.get("type")),
    }


def from_freshdesk(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A Freshdesk automation webhook (``freshdesk_webhook`` with ``ticket_*`` placeholders)."""
    t = doc.get("freshdesk_webhook") or doc
    if not isinstance(t, Mapping) or "ticket_id" not in t:
        raise AdapterError("no 'ticket_id' in the payload (expected the 'freshdesk_webhook' object)")
    tags = [s.strip() for s in str(t.get("ticket_tags") or "").split(",") if s.strip()]
    return {
        "id": f"freshdesk-{_source_id(t['ticket_id'], 'ticket_id')}",
        "created_at": _iso(t.get("ticket_created_at"), "ticket_created_at"),
        "customer_id": _customer(
            t.get("ticket_requester_id") or t.get("ticket_contact_id"),
            t.get("ticket_contact_email"),
            "ticket_requester_id",
        ),
        "subject": _string(t.get("ticket_subject"), "ticket_subject"),
        "body": _text(t.get("ticket_description")),
        "channel": t.get("ticket_source"),
        **_labels(tags, t.get("ticket_group_name"), t.get("ticket_priority"), t.get("ticket_type")),
    }


def from_intercom(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An Intercom notification about a conversation (``data.item``)."""
    item = (doc.get("data") or {}).get("item") if isinstance(doc.get("data"), Mapping) else None
    if not isinstance(item, Mapping) or item.get("type") != "conversation":
        raise AdapterError("not a conversation notification (expected data.item of type 'conversation')")
    source = item.get("source") or {}
    author = source.get("author") or {}
    tags = [t.get("name", "") for t in ((item.get("tags") or {}).get("tags") or [])]
    return {
        "id": f"intercom-{_source_id(item.get('id'), 'data.item.id')}",
        "created_at": _iso(item.get("created_at"), "created_at"),
        "customer_id": _customer(author.get("id"), author.get("email"), "source.author.id"),
        "subject": _text(source.get("subject")) or _text(source.get("body")).split("\n")[0][:120],
        "body": _text(source.get("body")),
        "channel": source.get("delivered_as"),
        **_labels(tags, None, item.get("priority") if item.get("priority") != "not_priority" else None, None),
    }


def from_helpscout(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A Help Scout conversation (webhooks send the conversation object)."""
    if "id" not in doc or "createdAt" not in doc:
        raise AdapterError("not a conversation (expected 'id' and 'createdAt')")
    customer = doc.get("primaryCustomer") or doc.get("customer") or {}
    threads = ((doc.get("_embedded") or {}).get("threads")) or []
    first = next((t.get("body") for t in reversed(threads) if t.get("body")), None)
    tags = [t.get("tag", "") if isinstance(t, Mapping) else str(t) for t in doc.get("tags") or []]
    return {
        "id": f"helpscout-{_source_id(doc['id'], 'id')}",
        "created_at": _iso(doc.get("createdAt"), "createdAt"),
        "customer_id": _customer(customer.get("id"), customer.get("email"), "primaryCustomer.id"),
        "subject": _string(doc.get("subject"), "subject"),
        "body": _text(first or doc.get("preview")),
        "channel": doc.get("source", {}).get("type") if isinstance(doc.get("source"), Mapping) else None,
        **_labels(tags, None, None, None),
    }


def from_ticketpulse(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The project's own ticket JSON, as is."""
    return dict(doc)


ADAPTERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "zendesk": from_zendesk,
    "freshdesk": from_freshdesk,
    "intercom": from_intercom,
    "helpscout": from_helpscout,
    "ticketpulse": from_ticketpulse,
}


def adapt(source: str, doc: Any) -> dict[str, Any]:
    """The ticket in ``doc``, as ``source`` sends it; :class:`AdapterError` if it is not one."""
    if source not in ADAPTERS:
        raise AdapterError(f"unknown source {source!r}; known: {', '.join(ADAPTERS)}")
    if not isinstance(doc, Mapping):
        raise AdapterError("the payload must be a JSON object")
    try:
        ticket = ADAPTERS[source](doc)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, AdapterError):
            raise
        raise AdapterError(f"{source} payload not understood: {type(exc).__name__}: {exc}") from None
    return {k: v for k, v in ticket.items() if v not in (None, "")}


def verify(source: str, secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
    """Whether the request carries a valid signature (or bearer token) for ``source``."""

    def same(a: str, b: str) -> bool:
        return hmac.compare_digest(a.encode(), b.encode())

    if source == "zendesk":
        stamp = headers.get("X-Zendesk-Webhook-Signature-Timestamp", "")
        mac = hmac.new(secret.encode(), stamp.encode() + body, hashlib.sha256).digest()
        return bool(stamp) and same(base64.b64encode(mac).decode(), headers.get("X-Zendesk-Webhook-Signature", ""))
    if source == "intercom":
        mac_hex = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
        return same(f"sha1={mac_hex}", headers.get("X-Hub-Signature", ""))
    if source == "helpscout":
        mac = hmac.new(secret.encode(), body, hashlib.sha1).digest()
        return same(base64.b64encode(mac).decode(), headers.get("X-HelpScout-Signature", ""))
    return same(f"Bearer {secret}", headers.get("Authorization", ""))


#: The header that carries the time Zendesk signed with the body.
ZENDESK_TIMESTAMP = "X-Zendesk-Webhook-Signature-Timestamp"


def stale_signature(source: str, headers: Mapping[str, str], now: float, tolerance_seconds: float) -> str | None:
    """Why a correctly signed request is too old or too new to be taken, or ``None``.

    Only Zendesk signs a time (``X-Zendesk-Webhook-Signature-Timestamp``, ISO 8601, with
    the body): a request signed more than ``tolerance_seconds`` before or after ``now``
    is a replay of a captured request, or comes from a clock that is badly wrong. The
    other helpdesks sign no time (see the module's notes on replays).

    >>> stale_signature("zendesk", {ZENDESK_TIMESTAMP: "2026-03-03T10:00:00Z"}, 1772532000 + 299, 300) is None
    True
    >>> print(stale_signature("zendesk", {ZENDESK_TIMESTAMP: "2026-03-03T10:00:00Z"}, 1772532000 + 3600, 300))
    the signed timestamp 2026-03-03T10:00:00Z is 3,600 s old, over the tolerance of 300 s ...
    """
    if source != "zendesk":
        return None
    stamp = headers.get(ZENDESK_TIMESTAMP, "")
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        age = now - moment.timestamp()
    except (ValueError, OverflowError):
        return f"the signed timestamp {stamp[:40]!r} is not an ISO 8601 date-time"
    if -tolerance_seconds <= age <= tolerance_seconds:
        return None
    when = f"{age:,.0f} s old" if age > 0 else f"{-age:,.0f} s in the future"
    return (
        f"the signed timestamp {stamp[:40]} is {when}, over the tolerance of {tolerance_seconds:,.0f} s "
        "(TICKETPULSE_WEBHOOK_TOLERANCE_SECONDS): a replayed request?"
    )


def delivery_id(source: str, doc: Any, body: bytes) -> str | None:
    """What names this delivery, to take it once: the helpdesk's event id where it sends one.

    Zendesk's event webhooks and Intercom's notifications carry an ``id`` of the event
    (a trigger's body or a bare conversation carries none); Help Scout sends no event id,
    so its body's SHA-256 stands for it (a redelivery is the same body, a change of the
    conversation a new one). Freshdesk and the project's own JSON: ``None`` (their bearer
    token is no signature: the body proves nothing).
    """
    if source in ("zendesk", "intercom") and isinstance(doc, Mapping):
        event = doc.get("id")
        if isinstance(event, str) and event and (source == "intercom" or "detail" in doc):
            return f"{source}:{event[:200]}"
        return None
    if source == "helpscout":
        return "helpscout:" + hashlib.sha256(body).hexdigest()
    return None


class RecentDeliveries:
    """The last ``capacity`` deliveries taken (their :func:`delivery_id`), oldest forgotten first.

    Bounded: a sender of ever new ids costs ``capacity`` entries of at most ~210 characters,
    not memory without end.

    >>> recent = RecentDeliveries(capacity=2)
    >>> recent.add("a"); recent.add("b"); recent.add("c")
    >>> "a" in recent, "b" in recent, "c" in recent
    (False, True, True)
    """

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, delivery: object) -> bool:
        return delivery in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, delivery: str) -> None:
        """Remember ``delivery`` (as the newest), forgetting the oldest past ``capacity``."""
        self._ids[delivery] = None
        self._ids.move_to_end(delivery)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
