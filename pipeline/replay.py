"""``ticketpulse replay``: the tagger over a helpdesk's history, with no broker.

A contract other tools call: it reads tickets (JSONL in the ticket schema, in file
order) and, for each, first predicts, then learns from the labels the ticket carries,
exactly as the worker's tagger does. One JSON line per input line goes to the output;
a JSON summary goes to the last line of standard output.
"""

from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from .schema import TicketError, parse_ticket
from .tagger import FIELDS, TicketTagger

__all__ = ["replay"]


def replay(source: Path, output: Path, save_model: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the tagger over ``source``; write predictions to ``output``; return the summary."""
    tagger = TicketTagger()
    tickets = rejected = 0
    started = time.perf_counter()
    with source.open("rb") as fh, output.open("wb") as out:
        lines = tqdm(fh, unit="ticket", disable=not progress, file=sys.stderr, mininterval=0.5)
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                ticket = parse_ticket(raw.rstrip(b"\r\n"))
            except TicketError as exc:
                rejected += 1
                out.write(orjson.dumps({"id": None, "line": number, "error": str(exc)}) + b"\n")
                continue
            doc: dict[str, Any] = {"id": ticket.id, "subject": ticket.subject, "body": ticket.body}
            doc.update({f: getattr(ticket, f) for f in FIELDS})
            (predicted,) = tagger.process_many([doc])
            tickets += 1
            out.write(orjson.dumps({"id": ticket.id, "predicted": predicted}) + b"\n")
    seconds = time.perf_counter() - started
    if save_model is not None:
        save_model.write_bytes(pickle.dumps(tagger))
    return {
        "tickets": tickets,
        "rejected": rejected,
        "seconds": round(seconds, 3),
        "tickets_per_second": round(tickets / seconds, 1) if seconds > 0 else None,
        "prequential": {f: tagger.quality[f].summary() for f in FIELDS},
        "model_version": tagger.version,
    }
