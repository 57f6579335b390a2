"""The contract every detector follows (River's anomaly API, for time series).

A detector sees one observation at a time, ``x = {"t": epoch seconds, "y": value}``
(ticket detectors also read ``"customers"``), in time order:

- ``score_one(x)`` says how anomalous ``x`` is, in ``[0, 1]``, from what was learned
  before it, without changing any state (so it can be called for a window still in
  progress, many times);
- ``learn_one(x)`` then takes ``x`` into the model of what is normal.

Before it has learned enough, a detector answers :attr:`Detector.neutral_score`
(0.0: nothing is anomalous yet). Constructor arguments are stored as given, so
``clone()`` and ``repr`` are exact, and a detector pickles with its state.
"""

from __future__ import annotations

import copy
import inspect
from abc import ABC, abstractmethod
from typing import Any

__all__ = ["Detector"]


class Detector(ABC):
    """Base class: ``learn_one``/``score_one`` over ``{"t", "y"}`` observations."""

    #: The score of an observation before the detector has learned anything.
    neutral_score = 0.0

    @abstractmethod
    def learn_one(self, x: dict[str, Any]) -> None:
        """Update the model of normal with one observation."""

    @abstractmethod
    def score_one(self, x: dict[str, Any]) -> float:
        """Anomaly score of one observation in ``[0, 1]``; does not change the detector."""

    def _get_params(self) -> dict[str, Any]:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def clone(self) -> Detector:
        """A fresh detector with the same parameters and no learned state."""
        return type(self)(**copy.deepcopy(self._get_params()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._get_params().items())
        return f"{type(self).__name__}({args})"
