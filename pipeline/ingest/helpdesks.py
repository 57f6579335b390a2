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
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from html import unescape
from typing import Any

__all__ = ["ADAPTERS", "AdapterError", "adapt", "verify"]


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


def _customer(requester_id: Any, email: Any) -> str:
    if requester_id not in (None, ""):
        return str(requester_id)
    if email:
        return "email-" + hashlib.sha256(str(email).strip().lower().encode()).hexdigest()[:16]
    raise AdapterError("no requester: neither a requester id nor an e-mail address")


def _iso(value: Any, field: str) -> str:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).isoformat()
    if isinstance(value, str) and value:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()
    raise AdapterError(f"missing {field}")


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
    return {
        "id": f"zendesk-{t['id']}",
        "created_at": _iso(t.get("created_at"), "created_at"),
        "customer_id": _customer(t.get("requester_id"), (t.get("requester") or {}).get("email")),
        "subject": str(t.get("subject") or ""),
        "body": str(t.get("description") or t.get("comment", {}).get("body") or ""),
        "channel": (t.get("via") or {}).get("channel") if isinstance(t.get("via"), Mapping) else t.get("via"),
        **_labels(list(tags), t.get("group") or t.get("group_name"), t.get("priority"), t.get("type")),
    }


def from_freshdesk(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A Freshdesk automation webhook (``freshdesk_webhook`` with ``ticket_*`` placeholders)."""
    t = doc.get("freshdesk_webhook") or doc
    if "ticket_id" not in t:
        raise AdapterError("no 'ticket_id' in the payload (expected the 'freshdesk_webhook' object)")
    tags = [s.strip() for s in str(t.get("ticket_tags") or "").split(",") if s.strip()]
    return {
        "id": f"freshdesk-{t['ticket_id']}",
        "created_at": _iso(t.get("ticket_created_at"), "ticket_created_at"),
        "customer_id": _customer(
            t.get("ticket_requester_id") or t.get("ticket_contact_id"), t.get("ticket_contact_email")
        ),
        "subject": str(t.get("ticket_subject") or ""),
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
        "id": f"intercom-{item['id']}",
        "created_at": _iso(item.get("created_at"), "created_at"),
        "customer_id": _customer(author.get("id"), author.get("email")),
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
        "id": f"helpscout-{doc['id']}",
        "created_at": _iso(doc.get("createdAt"), "createdAt"),
        "customer_id": _customer(customer.get("id"), customer.get("email")),
        "subject": str(doc.get("subject") or ""),
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
