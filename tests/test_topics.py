from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import murmur2
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from pipeline.runtime.kafka import kafka_partitions


@pytest.mark.parametrize("partitions", [1, 4, 7, 12, 1000])
def test_kafka_partitions_are_the_kafka_clients_for_every_key_length(partitions: int) -> None:
    rng = random.Random(partitions)
    # every length from empty to 40 bytes (each tail of 0-3 bytes), any byte, and text ids
    keys = [rng.randbytes(rng.randrange(0, 41)) for _ in range(5_000)]
    keys += [b"", b"a", b"ab", b"abc", b"abcd", "Zoë-€-客户".encode(), *(f"zendesk-{i}".encode() for i in range(500))]
    # the worker's client (aiokafka) and the commands' (kafka-python) agree with it
    assert kafka_partitions(keys, partitions) == [(murmur2(k) & 0x7FFFFFFF) % partitions for k in keys]
    assert kafka_partitions(keys, partitions) == [(kafka_python_murmur2(k) & 0x7FFFFFFF) % partitions for k in keys]


def test_kafka_partitions_of_no_keys() -> None:
    assert kafka_partitions([], 4) == []


def test_a_very_long_key_among_short_ones_is_partitioned_alone_and_alike() -> None:
    # a key of 100,000 bytes would otherwise pad every key of the batch to its length
    keys = [b"T-1", b"x" * 100_000, b"T-2", b"y" * 257, b"z" * 256, b""]
    assert kafka_partitions(keys, 12) == [(murmur2(k) & 0x7FFFFFFF) % 12 for k in keys]
