"""Dead-letter records: what was refused, why, and where it came from."""

from __future__ import annotations

import base64
from typing import Any

__all__ = ["DEAD_LETTER_KEEP_BYTES", "dead_letter_record"]

#: Bytes of a rejected message kept in its dead-letter record.
DEAD_LETTER_KEEP_BYTES = 64 * 1024


def dead_letter_record(raw: bytes | None, key: bytes | None, error: str, message: Any) -> dict[str, Any]:
    """The ``tickets-dead-letter`` value of a refused message (``message``: its topic, partition, offset).

    >>> from types import SimpleNamespace
    >>> where = SimpleNamespace(topic="tickets", partition=2, offset=41)
    >>> dead_letter_record(b"{oops", b"t1", "not JSON", where)["value"]
    '{oops'
    """
    data = raw or b""
    kept = data[:DEAD_LETTER_KEEP_BYTES]
    record: dict[str, Any] = {
        "error": error,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "key": key.decode(errors="replace") if isinstance(key, bytes) else key,
        "value_bytes": len(data),
        "truncated": len(kept) < len(data),
    }
    try:
        record["value"] = kept.decode()
    except UnicodeDecodeError:
        record["value_base64"] = base64.b64encode(kept).decode()
    return record
