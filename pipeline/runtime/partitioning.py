"""Which partition a key goes to: Kafka's default partitioner, for the explicit partitions the stages send to."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from aiokafka.partitioner import murmur2

from pipeline.runtime.kafka import kafka_partitions

__all__ = ["KeyPartitioner"]


class KeyPartitioner:
    """Kafka's default partitioner over ``partitions``, so that our explicit partitions match what
    any client would choose for the same key.

    >>> by_key = KeyPartitioner(4)
    >>> by_key(b"reports") == by_key.many([b"reports"])[0]
    True
    """

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        # Cached: most keys are areas, asked for ticket after ticket.
        self._one = functools.lru_cache(maxsize=4096)(self._partition)

    def _partition(self, key: bytes) -> int:
        return (murmur2(key) & 0x7FFFFFFF) % self.partitions

    def __call__(self, key: bytes) -> int:
        """The partition of one key (cached)."""
        return self._one(key)

    def many(self, keys: Sequence[bytes]) -> list[int]:
        """The partitions of a batch of distinct keys, computed together (numpy)."""
        return kafka_partitions(keys, self.partitions)
