"""Spike detection: pure Python, no Kafka, Faust or InfluxDB import.

The same objects run inside the stream and in offline replays and benchmarks:

- :class:`VolumeWatch`: distinct customers per window of one key (an area, a case type
  in it, a pattern) judged at several time scales at once against
  :class:`SeasonalRate`, one episode across scales.
- :class:`SpikeDetector`: ticket counts per window against a seasonal (hour of day,
  day of week) quasi-Poisson model of normal, on distinct customers (one scale).
- :class:`SurpriseDetector`: any numeric series (``ticketpulse detect``, NAB).
- :class:`RollingZScore`: the baseline to beat.
- :class:`EpisodeTracker`: one alert per episode.
- :class:`AlertGate`: one alert per incident, when several watches see it.
"""

from .base import Detector
from .episodes import Episode, EpisodeTracker
from .rates import SeasonalRate
from .series import SeriesError, parse_timestamp, read_series, score_series
from .spike import SpikeDetector
from .surprise import DETECTION_SCORE, SurpriseDetector
from .watch import AlertGate, SpikeEvent, VolumeWatch, key_watch
from .zscore import RollingZScore

__all__ = [
    "DETECTION_SCORE",
    "AlertGate",
    "Detector",
    "Episode",
    "EpisodeTracker",
    "RollingZScore",
    "SeasonalRate",
    "SeriesError",
    "SpikeDetector",
    "SpikeEvent",
    "SurpriseDetector",
    "VolumeWatch",
    "key_watch",
    "parse_timestamp",
    "read_series",
    "score_series",
]
