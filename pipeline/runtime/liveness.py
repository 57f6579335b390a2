"""A worker that cannot work says so and exits: a lost broker, a broker that lost its topics, a stop that hangs.

A supervisor (docker-compose's ``restart:``, systemd, Kubernetes) restarts a worker that
exits; it cannot restart one that runs on without a broker. Before this module a worker
whose broker went away ran on at a tenth of a core writing 210 log lines a second, and
one whose broker came back empty (the embedded broker keeps its topics in memory) said
"ok" on ``/health`` and counted nothing again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

__all__ = ["EXIT_BROKER_LOST", "EXIT_STOP_HUNG", "BrokerWatchdog", "RepeatFilter", "StopDeadline", "exit_now"]

logger = logging.getLogger("pipeline.worker")

#: Exit codes a supervisor (or a person) can tell apart.
EXIT_BROKER_LOST = 3
EXIT_STOP_HUNG = 4


def exit_now(code: int, line: str) -> None:
    """Log ``line`` as the worker's last word and leave at once with ``code``.

    At once (``os._exit``): a worker without its broker cannot stop gracefully (its
    stop waits on the broker), and what it has not committed is read again by the next
    one, as after a SIGKILL, which the counts are built to survive.
    """
    logger.critical(line)
    logging.shutdown()
    os._exit(code)


class BrokerWatchdog:
    """Asks the broker for its topics every ``interval`` seconds.

    - No answer for ``lost_seconds``: the worker exits (:data:`EXIT_BROKER_LOST`) with one
      line naming the broker and the setting.
    - An answer without a topic the worker reads or writes (``expected``): the broker lost
      them (a restart of a broker that keeps them in memory); the worker exits rather than
      report "ok" and count nothing.

    ``topics``: returns the broker's topic names, raising when it does not answer.

    >>> now = [0.0]
    >>> exits = []
    >>> async def no_answer():
    ...     raise ConnectionError("refused")
    >>> dog = BrokerWatchdog(no_answer, ["tickets"], "kafka://b:9092", 60, clock=lambda: now[0],
    ...                      exit=lambda code, line: exits.append(code))
    >>> asyncio.run(dog.check()); now[0] = 59; asyncio.run(dog.check()); exits
    []
    >>> now[0] = 60; asyncio.run(dog.check()); exits
    [3]
    """

    def __init__(
        self,
        topics: Callable[[], Awaitable[Iterable[str]]],
        expected: Iterable[str],
        broker: str,
        lost_seconds: float,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        exit: Callable[[int, str], None] = exit_now,
    ) -> None:
        self.topics = topics
        self.expected = set(expected)
        self.broker = broker
        self.lost_seconds = lost_seconds
        self.interval = interval
        self.clock = clock
        self.exit = exit
        self.lost_since: float | None = None

    async def check(self) -> None:
        """One look at the broker (exits when it has been lost too long, or lost its topics)."""
        try:
            present = set(await self.topics())
        except Exception as exc:
            now = self.clock()
            if self.lost_since is None:
                self.lost_since = now
                logger.error(
                    "broker=unreachable url=%s error=%s: exiting after %gs", self.broker, exc, self.lost_seconds
                )
            elif now - self.lost_since >= self.lost_seconds:
                self.exit(
                    EXIT_BROKER_LOST,
                    f"broker=lost url={self.broker} seconds={now - self.lost_since:.0f}: no answer for "
                    f"TICKETPULSE_BROKER_LOST_SECONDS ({self.lost_seconds:g}); exiting so that a supervisor "
                    f"restarts the worker (error: {exc})",
                )
            return
        if self.lost_since is not None:
            logger.warning("broker=back url=%s after=%.0fs", self.broker, self.clock() - self.lost_since)
            self.lost_since = None
        missing = sorted(self.expected - present)
        if missing:
            self.exit(
                EXIT_BROKER_LOST,
                f"broker=lost_topics url={self.broker} missing={','.join(missing)}: the broker no longer has "
                "topics this worker created (a broker that keeps topics in memory was restarted?); its offsets "
                "and tables are gone, so counting on would be wrong: exiting",
            )

    async def run(self) -> None:
        """Check until the worker stops."""
        while True:
            await asyncio.sleep(self.interval)
            await self.check()


class StopDeadline(threading.Thread):
    """Once the worker begins to stop, it has ``seconds`` to finish, then the process leaves.

    A thread, not a task: a stop that hangs may hang the event loop's tasks with it.
    ``stopping``: whether the worker has begun to stop (``worker.should_stop``).
    """

    def __init__(
        self,
        stopping: Callable[[], bool],
        seconds: float,
        exit: Callable[[int, str], None] = exit_now,
        poll: float = 0.5,
    ) -> None:
        super().__init__(name="stop-deadline", daemon=True)
        self.stopping = stopping
        self.seconds = seconds
        self.exit = exit
        self.poll = poll

    def run(self) -> None:
        while not self.stopping():
            time.sleep(self.poll)
        time.sleep(self.seconds)
        self.exit(EXIT_STOP_HUNG, f"stop=hung seconds={self.seconds:g}: the worker did not stop in time; exiting")


class RepeatFilter(logging.Filter):
    """Lets each message of the Kafka clients (by logger and format) through once every ``seconds``;
    says how many it held back.

    The Kafka client logs a failed connection many times a second while the broker is
    away: 9 MB of log in under five minutes.

    >>> f = RepeatFilter(seconds=10, clock=lambda: 0.0)
    >>> record = logging.LogRecord("aiokafka", logging.ERROR, "", 0, "Unable connect to %s", ("b",), None)
    >>> f.filter(record), f.filter(record), f.filter(record)
    (True, False, False)
    >>> ours = logging.LogRecord("pipeline.worker", logging.INFO, "", 0, "agent=merge counted=%d", (1,), None)
    >>> f.filter(ours), f.filter(ours)
    (True, True)
    >>> f.clock = lambda: 10.0
    >>> f.filter(record), record.getMessage()
    (True, 'Unable connect to b (2 more like it in the last 10 s not logged)')
    """

    def __init__(
        self,
        seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        loggers: tuple[str, ...] = ("aiokafka", "kafka"),
    ) -> None:
        super().__init__()
        self.seconds = seconds
        self.clock = clock
        #: the loggers held back (and their children): the Kafka clients'; the worker's own
        #: lines (counters, retries, a ticket too late) are each worth reading
        self.loggers = loggers
        self._last: dict[tuple[str, Any], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.loggers):
            return True
        key = (record.name, record.msg)
        now = self.clock()
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < self.seconds:
            self._last[key] = (seen[0], seen[1] + 1)
            return False
        if len(self._last) > 1000:  # bounded: messages are few, their formats fewer
            self._last.clear()
        held = seen[1] if seen else 0
        self._last[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {self.seconds:g} s not logged)"
        return True
