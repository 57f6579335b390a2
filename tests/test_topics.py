from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import murmur2

from pipeline.topics import kafka_partitions


@pytest.mark.parametrize("partitions", [1, 4, 7, 12, 1000])
def test_kafka_partitions_are_the_kafka_clients_for_every_key_length(partitions: int) -> None:
    rng = random.Random(partitions)
    # every length from empty to 40 bytes (each tail of 0-3 bytes), any byte, and text ids
    keys = [rng.randbytes(rng.randrange(0, 41)) for _ in range(5_000)]
    keys += [b"", b"a", b"ab", b"abc", b"abcd", "Zoë-€-客户".encode(), *(f"zendesk-{i}".encode() for i in range(500))]
    assert kafka_partitions(keys, partitions) == [(murmur2(k) & 0x7FFFFFFF) % partitions for k in keys]


def test_kafka_partitions_of_no_keys() -> None:
    assert kafka_partitions([], 4) == []
