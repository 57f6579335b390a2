"""One alert per episode: a spike that lasts five windows is one alert, not five."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Episode", "EpisodeTracker"]


@dataclass
class Episode:
    """A run of alerting windows of one key."""

    key: str
    start: int
    last: int
    peak_score: float
    observed: float
    expected: float
    windows: list[int] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.key}@{self.start}"


class EpisodeTracker:
    """Turns per-window alert decisions into ``opened`` / ``updated`` / ``resolved`` events.

    A window at or above ``alert_score`` (and with at least ``min_customers``) opens an
    episode, or updates the open one when it is worse than anything reported so far;
    ``quiet_windows`` windows below the level resolve it. The state is a plain dict
    (:meth:`state`, :meth:`from_state`), so it can live in a durable table and survive
    a restart. Judging the same window twice changes nothing (replays are harmless).

    Examples
    --------
    >>> tr = EpisodeTracker("reports", alert_score=0.4, quiet_windows=1, min_customers=3)
    >>> [tr.observe(w, s, 20, 5, 8)[0] for w, s in [(0, 0.1), (1, 0.9), (2, 0.95), (2, 0.95), (3, 0.5), (4, 0.1)]]
    [None, 'opened', 'updated', None, None, 'resolved']
    """

    def __init__(self, key: str, alert_score: float = 0.4, quiet_windows: int = 1, min_customers: int = 5) -> None:
        self.key = key
        self.alert_score = alert_score
        self.quiet_windows = quiet_windows
        self.min_customers = min_customers
        self.episode: Episode | None = None
        self._quiet = 0
        self._last_window: int | None = None

    def observe(
        self, window: int, score: float, observed: float, expected: float, customers: float
    ) -> tuple[str | None, Episode | None]:
        """Judge one (closed or in-progress) window; return the event and its episode."""
        alerting = score >= self.alert_score and customers >= self.min_customers
        ep = self.episode
        if ep is not None and window < ep.last:
            return None, ep  # an older window, replayed: it was judged already
        if alerting:
            self._quiet = 0
            if ep is None:
                self.episode = Episode(self.key, window, window, score, observed, expected, [window])
                return "opened", self.episode
            if window not in ep.windows:
                ep.windows.append(window)
            ep.last = window
            if score > ep.peak_score or observed > ep.observed:
                ep.peak_score, ep.observed, ep.expected = max(score, ep.peak_score), observed, expected
                return "updated", ep
            return None, ep
        if ep is not None and window > ep.last and window != self._last_window:
            self._quiet += 1
            self._last_window = window
            if self._quiet >= self.quiet_windows:
                self.episode, self._quiet = None, 0
                return "resolved", ep
        return None, ep

    def state(self) -> dict[str, Any]:
        return {
            "episode": asdict(self.episode) if self.episode else None,
            "quiet": self._quiet,
            "last_window": self._last_window,
        }

    @classmethod
    def from_state(cls, key: str, state: dict[str, Any], **params: Any) -> EpisodeTracker:
        tracker = cls(key, **params)
        tracker.episode = Episode(**state["episode"]) if state.get("episode") else None
        tracker._quiet = state.get("quiet", 0)
        tracker._last_window = state.get("last_window")
        return tracker
