"""What the worker's agents send between themselves, split to fit the broker (no broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from pipeline.runtime.outbox import MAX_INTERNAL_MESSAGE_BYTES, Outbox


class Channel:
    """Records what a Faust topic would be given; each send's future is already done."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes, str]] = []

    async def send(self, *, partition: int, value: bytes, value_serializer: str) -> asyncio.Future[None]:
        self.sent.append((partition, value, value_serializer))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _sent(value: dict[str, Any], split: list[str]) -> list[bytes]:
    """The messages ``Outbox.send_parts`` gives partition 3 of a topic for ``value``."""
    channel = Channel()

    async def run() -> None:
        out = Outbox()
        await out.send_parts(channel, 3, value, split)
        await out.delivered()

    asyncio.run(run())
    assert {(partition, serializer) for partition, _, serializer in channel.sent} == {(3, "raw")}
    return [data for _, data, _ in channel.sent]


def _send(value: dict[str, Any], split: list[str]) -> list[dict[str, Any]]:
    sent = _sent(value, split)
    assert all(len(data) <= MAX_INTERNAL_MESSAGE_BYTES for data in sent)
    return [orjson.loads(data) for data in sent]


def test_a_message_that_fits_is_sent_once_as_json() -> None:
    value = {"facts": [["t1", 0, "reports"]], "texts": [["2026-03-02", "Export", "fails"]], "watermarks": {"0": 5}}
    assert _send(value, ["facts", "texts"]) == [value]


def test_a_message_over_the_limit_is_split_with_its_lists_aligned_and_the_rest_whole() -> None:
    # 2,000 tickets, 2,000 Japanese characters each: 12 MB of words in one batch's message
    body = "エクスポートが失敗します。" * 154
    facts = [[f"t{i}", 0, "reports"] for i in range(2000)]
    texts = [["2026-03-02", f"subject {i}", body] for i in range(2000)]
    value = {"facts": facts, "texts": texts, "watermarks": {"0": 5}}
    parts = _send(value, ["facts", "texts"])
    assert len(parts) > 12
    assert [f for part in parts for f in part["facts"]] == facts  # every one, in order
    assert [t for part in parts for t in part["texts"]] == texts
    for part in parts:
        assert [f[0] for f in part["facts"]] == [t[1].replace("subject ", "t") for t in part["texts"]]
    # the watermarks with the last part only: no window closes before all of its facts came
    assert [part["watermarks"] for part in parts] == [{}] * (len(parts) - 1) + [{"0": 5}]


def test_a_single_watermark_comes_with_the_last_part_only() -> None:
    rows = [[1772445600 + 3600 * n, "reports", "all", 3, 2, "x" * 100] for n in range(20_000)]  # a long catch-up
    parts = _send({"rows": rows, "source": 2, "watermark": 1772445600}, ["rows"])
    assert len(parts) > 2 and [r for part in parts for r in part["rows"]] == rows
    assert [part["watermark"] for part in parts] == [None] * (len(parts) - 1) + [1772445600]
    assert {part["source"] for part in parts} == {2}


def test_one_item_larger_than_the_limit_is_sent_alone() -> None:
    # a ticket as large as TICKETPULSE_MAX_TICKET_BYTES allows: the producer's request size takes it
    value = {"texts": [{"id": "big", "reading": "x" * (MAX_INTERNAL_MESSAGE_BYTES + 10)}, {"id": "small"}]}
    sent = [orjson.loads(data) for data in _sent(value, ["texts"])]
    assert [[text["id"] for text in part["texts"]] for part in sent] == [["big"], ["small"]]
