"""The messages between the worker's stages: one type per internal topic, one codec each.

Rows that a message carries by the thousand (a counting fact, a window's count) are
named tuples: read by name, sent as JSON arrays, so a message stays as small as the
lists it replaced and a worker of the previous version reads it. Each topic's message is
a frozen ``msgspec`` struct: :func:`encode` writes any of them, and each topic's
:class:`Codec` reads its own (a message that is not of its type is named, never guessed).

Where each goes is declared in :mod:`pipeline.topology`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

__all__ = [
    "AreaContext",
    "AreaMessage",
    "AreaProductEvent",
    "AreaRow",
    "AreaVolumes",
    "Codec",
    "CountingBatch",
    "Fact",
    "MessageError",
    "PartialRow",
    "PatternTicket",
    "PatternTickets",
    "TicketPatterns",
    "TicketWords",
    "TrainingBatch",
    "VolumePartials",
    "WindowContext",
    "encode",
]


class MessageError(ValueError):
    """An internal message that is not of its topic's type (the reason names what is wrong)."""


class Fact(NamedTuple):
    """One durable fact: a ticket counted in a window under its tags (:mod:`pipeline.counting.volume`)."""

    ticket_id: str
    window: int
    area: str
    case_type: str
    severity: str
    customer_id: str
    #: the ticket's ``created_at`` (epoch seconds): when an alert it tips would have fired
    #: (0 in facts stored before it was kept)
    created: int = 0


class TicketWords(NamedTuple):
    """What pattern grouping reads of a ticket, travelling with its fact."""

    created_at: str
    subject: str
    body: str
    #: the token ids of its reading, packed where it was tagged (``TicketEncoder.pack_tokens``):
    #: the grouper embeds them instead of tokenizing the ticket again (``None``: it tokenizes)
    tokens: bytes | None = None
    #: the ticket's ``locale`` ("" when it has none): patterns are grouped per area and
    #: language (:func:`pipeline.patterns.watch.grouping_key`); absent in messages of earlier versions
    locale: str = ""


class CountingBatch(msgspec.Struct, frozen=True, omit_defaults=True):
    """``<app>-tickets-by-customer``: a batch's facts of one counting partition.

    ``watermarks``: the newest window of each ``tickets`` partition the batch read;
    ``texts``: aligned with ``facts`` when patterns are on; ``tokens_of``: the embedding
    model (``TicketEncoder.model_id``) whose token ids the texts carry.
    """

    facts: list[Fact]
    watermarks: dict[str, int]
    texts: list[TicketWords] | None = None
    tokens_of: str | None = None


class PartialRow(NamedTuple):
    """One counting partition's count of a window and key.

    ``volume_key``: JSON ``[window, area, case type, severity]``, the merge table's key.
    """

    volume_key: str
    partition: int
    tickets: int
    customers: int
    #: event time of the newest ticket counted under the key in this partition
    newest: int = 0


class VolumePartials(msgspec.Struct, frozen=True):
    """``<app>-volume-partials``: counts to merge, and the counting partition's watermark."""

    rows: list[PartialRow]
    watermarks: dict[str, int | None]


class PatternTicket(NamedTuple):
    """A newly counted ticket with its words, for pattern grouping (:mod:`pipeline.patterns.watch`)."""

    ticket_id: str
    window: int
    area: str
    case_type: str
    customer_id: str
    created_at: str
    subject: str
    body: str
    #: as :attr:`TicketWords.tokens`
    tokens: bytes | None = None
    #: as :attr:`TicketWords.locale`
    locale: str = ""


class PatternTickets(msgspec.Struct, frozen=True, omit_defaults=True):
    """``<app>-pattern-tickets``: newly counted tickets of the areas of one partition, and the watermark.

    ``tokens_of``: the embedding model whose token ids the tickets carry (the grouper of
    another model tokenizes them again).
    """

    tickets: list[PatternTicket]
    watermarks: dict[str, int | None]
    tokens_of: str | None = None


class AreaRow(NamedTuple):
    """A merged window total of an area (``case_type`` ``all``) or of a case type in it."""

    window: int
    area: str
    case_type: str
    tickets: int
    customers: int
    #: event time of the newest ticket counted (an episode it opens says it fired then)
    newest: int = 0


class WindowContext(NamedTuple):
    """What alerts show of a window: example tickets ``[id, customer, masked text]`` and subject words."""

    window: int
    area: str
    case_type: str
    examples: list[list[str]]
    terms: dict[str, int]


class AreaVolumes(msgspec.Struct, frozen=True, tag="volumes"):
    """``<app>-area-volumes``: window totals from one merging partition (``source``), with its watermark."""

    rows: list[AreaRow]
    source: int
    watermark: int | None


class AreaContext(msgspec.Struct, frozen=True, tag="context"):
    """``<app>-area-volumes``: example tickets and words, straight from validation."""

    context: list[WindowContext]


class AreaProductEvent(msgspec.Struct, frozen=True, tag="product_event"):
    """``<app>-area-volumes``: a release, fix or docs change of an area, for its alerts."""

    product_event: dict[str, Any]


#: What the spike watch reads: one of three kinds, told apart by their ``type`` field.
AreaMessage = AreaVolumes | AreaContext | AreaProductEvent


class TrainingBatch(msgspec.Struct, frozen=True):
    """The training topic: labelled readings every worker's models learn.

    ``step``: a step marker (no examples), sent by a worker whose linear tagger held labels
    too long (``TICKETPULSE_TAGGER_STEP_SECONDS``): every worker learns the labels it holds
    at this point of the order (:meth:`pipeline.tagging.linear.LinearTagger.step_held`).
    Workers of earlier versions ignore the field, and the empty batch.
    """

    examples: list[dict[str, Any]]
    step: bool = False


class TicketPatterns(msgspec.Struct, frozen=True):
    """``<app>-ticket-patterns``: ``[ticket id, pattern id]`` of grouped tickets (the report's patterns)."""

    tickets: list[list[str]]


_ENCODER = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    """A message as JSON bytes (rows as arrays).

    >>> encode(CountingBatch([Fact("t1", 0, "billing", "bug", "high", "c1")], {"0": 0}))
    b'{"facts":[["t1",0,"billing","bug","high","c1",0]],"watermarks":{"0":0}}'
    """
    return _ENCODER.encode(message)


class Codec:
    """Reads one topic's messages as its type.

    >>> codec = Codec(AreaMessage)
    >>> raw = b'{"type": "volumes", "rows": [[0, "billing", "all", 3, 2]], "source": 1, "watermark": 0}'
    >>> message = codec.decode(raw)
    >>> message.rows[0]
    AreaRow(window=0, area='billing', case_type='all', tickets=3, customers=2, newest=0)
    >>> Codec(TrainingBatch).decode(b'{"rows": 3}')
    Traceback (most recent call last):
    ...
    pipeline.messages.MessageError: not a TrainingBatch message: Object missing required field `examples`
    """

    def __init__(self, kind: Any) -> None:
        self.kind = kind
        self.name = " | ".join(t.__name__ for t in getattr(kind, "__args__", (kind,)))
        self._decoder = msgspec.json.Decoder(kind)

    def decode(self, raw: bytes | str) -> Any:
        """The message in ``raw``; :class:`MessageError` naming what is wrong if it is not one."""
        try:
            return self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise MessageError(f"not a {self.name} message: {exc}") from None
        except msgspec.DecodeError as exc:
            raise MessageError(f"not JSON: {exc}") from None
