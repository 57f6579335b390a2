"""The messages an agent sends for a batch, delivered before the batch is acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from pipeline.messages import encode

__all__ = ["MAX_INTERNAL_MESSAGE_BYTES", "Outbox"]

_JSON = msgspec.json.Encoder()


#: The largest internal message :meth:`Outbox.send_parts` sends whole, in bytes: under
#: Kafka's default ``message.max.bytes`` (1,048,588) with room for a record batch's header.
MAX_INTERNAL_MESSAGE_BYTES = 900_000


class Outbox:
    """The messages an agent sends for one batch, awaited before the batch is acknowledged.

    ``Topic.send`` only puts a message in Faust's producer buffer; under backpressure the
    flush before a commit gives up (see :class:`DurableTable`), so a worker killed then
    has committed the input of a message the broker never got, and the message is lost
    for good: a ticket never counted, a dead letter never written. An agent sends through
    an outbox and awaits :meth:`delivered` at the end of each batch.
    """

    def __init__(self) -> None:
        self._pending: list[asyncio.Future[Any]] = []

    async def send(self, channel: Any, **kwargs: Any) -> None:
        """Send on ``channel`` (a Faust topic), as ``channel.send(**kwargs)``."""
        self.track(await channel.send(**kwargs))

    async def send_parts(
        self,
        channel: Any,
        partition: int,
        value: msgspec.Struct | dict[str, Any],
        split: Sequence[str],
        last: Sequence[str] = ("watermark", "watermarks"),
    ) -> None:
        """Send ``value`` (a message of :mod:`pipeline.messages`, or a dict) as JSON to
        ``partition`` of ``channel``: one message, or, over
        :data:`MAX_INTERNAL_MESSAGE_BYTES`, several, each with a slice of the lists named in
        ``split`` (sliced alike, so that lists that go together stay aligned) and every
        other field whole, but those named in ``last``: the watermarks come with the last
        part only (empty before it), so that no window closes before all its rows came.

        Internal messages are one per batch and partition: a full batch of long tickets
        in a script of three bytes a character (Japanese, Chinese) made one of 5 MB, which
        the producer refused, and the worker stopped. Encoded here, once, and sent as it
        is (Faust's codec would encode it again).
        """
        data = encode(value) if isinstance(value, msgspec.Struct) else _JSON.encode(value)
        fields = _fields(value)
        lists = [name for name in split if fields.get(name) is not None]
        size = len(fields[lists[0]]) if lists else 0
        if len(data) > MAX_INTERNAL_MESSAGE_BYTES and size > 1:
            half = size // 2
            empty: dict[str, Any] = {n: {} if isinstance(fields[n], dict) else None for n in last if n in fields}
            first = _replace(value, {**{n: fields[n][:half] for n in lists}, **empty})
            await self.send_parts(channel, partition, first, lists, last)
            await self.send_parts(
                channel, partition, _replace(value, {n: fields[n][half:] for n in lists}), lists, last
            )
            return
        self.track(await channel.send(partition=partition, value=data, value_serializer="raw"))

    async def send_records(
        self, producer: Any, topic: str, partition: int, records: Iterable[tuple[bytes | None, bytes]]
    ) -> None:
        """Send ``(key, value)`` records to one partition of ``topic``, as whole produce batches.

        For a message per ticket (``tickets-classified``). ``Topic.send`` (a future
        message, Faust's producer buffer, its codec registry) made it cost a quarter of
        the worker; a message at a time through the Kafka client (a future, the
        accumulator, the partitioner's pure-Python murmur2) still a tenth
        (docs/benchmarks.md). Here each record is one append to a batch being built, and
        each batch (the producer's ``max_batch_size``) one future. ``producer`` is
        ``await app.maybe_start_producer()``: Faust's, whose Kafka client (settings,
        connection) this borrows.
        """
        client = producer._producer  # Faust's aiokafka producer, started by maybe_start_producer
        batch = client.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start the next
                self.track(await client.send_batch(batch, topic, partition=partition))
                batch = client.create_batch()
                batch.append(key=key, value=value, timestamp=None)  # a batch always takes its first record
        if batch.record_count():
            self.track(await client.send_batch(batch, topic, partition=partition))

    def track(self, sent: Any) -> Any:
        """Wait for ``sent`` (a message's future) in :meth:`delivered` too; return it."""
        self._pending.append(sent)
        return sent

    async def delivered(self) -> None:
        """Return once the broker has acknowledged every message sent so far."""
        pending, self._pending = self._pending, []
        # One by one, not ``asyncio.gather``: gather wraps every future (a callback, a
        # result list) and, at a message per ticket, that was about 5 % of the worker's
        # samples in py-spy; the futures of one produce request complete together, so
        # most are done when reached and awaiting them costs nothing.
        for sent in pending:
            await sent


def _fields(value: msgspec.Struct | dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return {name: getattr(value, name) for name in value.__struct_fields__}


def _replace(value: Any, changes: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {**value, **changes}
    return msgspec.structs.replace(value, **changes)
