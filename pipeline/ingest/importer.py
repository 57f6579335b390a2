"""``ticketpulse import``: a helpdesk's history into the pipeline (or straight into replay)."""

from __future__ import annotations

import csv
import gzip
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, cast

import orjson

from pipeline.ingest.helpdesks import AdapterError, adapt

__all__ = ["FORMATS", "ImportError_", "read_export"]

FORMATS = ("zendesk", "freshdesk", "csv", "jsonl")

#: Freshdesk's ticket export columns -> the keys its webhook adapter reads.
FRESHDESK_COLUMNS = {
    "Ticket ID": "ticket_id",
    "Subject": "ticket_subject",
    "Description": "ticket_description",
    "Created time": "ticket_created_at",
    "Priority": "ticket_priority",
    "Type": "ticket_type",
    "Tags": "ticket_tags",
    "Group": "ticket_group_name",
    "Source": "ticket_source",
    "Contact ID": "ticket_contact_id",
    "Requester email": "ticket_contact_email",
}


class ImportError_(ValueError):
    """The file cannot be read as the format asked for."""


#: the first bytes of a gzip file: an export compressed as it was saved (``.jsonl.gz``) is read as is
GZIP_MAGIC = b"\x1f\x8b"


def _gzipped(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def _text(path: Path) -> IO[str]:
    """The export as text (decompressed when it is gzip, by its first bytes whatever its name)."""
    if _gzipped(path):
        return gzip.open(path, "rt", newline="", encoding="utf-8-sig")
    return path.open(newline="", encoding="utf-8-sig")


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    csv.field_size_limit(sys.maxsize)
    with _text(path) as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            yield line, {k.strip(): v for k, v in row.items() if k}


def _binary(path: Path) -> IO[bytes]:
    """The export's bytes, read as they are needed (decompressed when it is gzip)."""
    return cast(IO[bytes], gzip.open(path, "rb")) if _gzipped(path) else path.open("rb")


def _json_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Each ticket of a JSON document (a list, or ``{"tickets": [...]}``) or of JSON lines, with its line.

    JSON lines are read one at a time (an export of millions of tickets is never whole in
    memory); a document is, as it must be parsed whole. A first line that is not JSON
    alone but opens a ``[`` or ``{`` begins a document spread over lines (pretty-printed);
    when the whole is not one document either, it is read line by line, each bad line named.
    """
    with _binary(path) as fh:
        lines: Iterator[tuple[int, bytes]] = enumerate(fh, start=1)
        first_line, raw = next(((n, r) for n, r in lines if r.strip()), (0, b""))
        if not raw:
            return
        try:
            first: Any = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            first = AdapterError(f"not valid JSON: {exc}")
            if raw.lstrip().startswith((b"[", b"{")):
                whole = raw + fh.read()
                try:
                    first = orjson.loads(whole)
                except orjson.JSONDecodeError:
                    lines = enumerate(whole.splitlines()[1:], start=first_line + 1)
        if isinstance(first, list):
            yield from enumerate(first, start=1)
            return
        if isinstance(first, dict) and isinstance(first.get("tickets"), list):
            yield from enumerate(first["tickets"], start=1)
            return
        yield first_line, first
        for line, text in lines:
            if text.strip():
                try:
                    yield line, orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    yield line, AdapterError(f"not valid JSON: {exc}")


def read_export(path: Path, fmt: str, mapping: Mapping[str, str] | None = None) -> Iterator[tuple[int, bytes | str]]:
    """``(line, ticket JSON)`` for each record, or ``(line, reason)`` for one that is not a ticket.

    ``mapping`` renames CSV columns to ticket fields (``--map column=field``). A gzip
    file (``export.jsonl.gz``, ``export.csv.gz``) is read decompressed.
    """
    if fmt not in FORMATS:
        raise ImportError_(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt in ("csv", "freshdesk"):
        columns = {**(FRESHDESK_COLUMNS if fmt == "freshdesk" else {}), **(mapping or {})}
        for line, row in _csv_rows(path):
            record = {columns.get(k, k): v for k, v in row.items() if v not in (None, "")}
            source = "freshdesk" if fmt == "freshdesk" else "ticketpulse"
            try:
                yield line, orjson.dumps(adapt(source, record))
            except AdapterError as exc:
                yield line, str(exc)
        return
    source = "zendesk" if fmt == "zendesk" else "ticketpulse"
    for line, doc in _json_records(path):
        if isinstance(doc, Exception):
            yield line, str(doc)
            continue
        try:
            yield line, orjson.dumps(adapt(source, doc))
        except AdapterError as exc:
            yield line, str(exc)
