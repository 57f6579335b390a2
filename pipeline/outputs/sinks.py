"""Where series go: InfluxDB 1.x (line protocol to ``/write``), InfluxDB 2.x
(``influxdb-client``), or a line-protocol file when no InfluxDB is configured.

Every sink takes whole batches (:meth:`InfluxSink.write` is called once per batch
of tickets, never per ticket), creates its client in :meth:`setup`, and retries a
failed write with exponential backoff and jitter, honouring ``Retry-After`` on 429,
so a slow or absent InfluxDB slows the stream down (its offsets are not committed)
instead of losing points. Log lines are ``key=value`` and never carry a secret.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from pipeline.outputs.lineprotocol import Flavour, Point, to_line_protocol
from pipeline.settings import Settings

__all__ = [
    "REFUSED_LINES_PER_WRITE",
    "FileSink",
    "InfluxBackpressure",
    "InfluxSink",
    "InfluxV1Sink",
    "InfluxV2Sink",
    "SinkError",
    "create_sink",
]

logger = logging.getLogger(__name__)


class SinkError(Exception):
    """A write that cannot succeed by retrying (bad request, wrong credentials).

    ``status``: the HTTP status InfluxDB answered, if it answered.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


#: Statuses of a write refused for some of its points (InfluxDB 1.x writes the others
#: and answers 400 "partial write"), or for its size: the request is split to find them.
_SPLIT_STATUSES = frozenset({400, 413})
#: Statuses of credentials refused after a start that passed (a token revoked or rotated):
#: retried like an outage, so that the batch waits until the credentials are mended.
_CREDENTIAL_STATUSES = frozenset({401, 403})
#: How many points of a request InfluxDB refused, in its partial-write answer ("... dropped=N").
_DROPPED = re.compile(r"dropped=(\d+)")


#: Refused points one ``write`` logs a line each; past them, one line says how many more.
REFUSED_LINES_PER_WRITE = 10


@dataclass
class _Refusals:
    """One ``write``'s refused points: the lines logged, and the points not logged after them."""

    lines: int = 0
    not_logged: int = 0


def _refused_count(error: SinkError) -> int | None:
    """The points InfluxDB says it dropped of the request ``error`` answered, if it says."""
    found = _DROPPED.findall(str(error))
    return int(found[-1]) if found else None


class InfluxBackpressure(Exception):
    """InfluxDB answered 429: wait ``retry_after`` seconds before the next write."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"InfluxDB asked to slow down for {retry_after} s")
        self.retry_after = retry_after


class _Retryable(Exception):
    """A transient failure: connection refused, timeout, 5xx."""


class InfluxSink(ABC):
    """A batching, retrying writer of :class:`~pipeline.outputs.lineprotocol.Point` batches."""

    name = "sink"
    #: the settings that hold this sink's credentials, named when InfluxDB refuses them
    credentials = "the sink's credentials"

    def __init__(
        self,
        max_backoff_seconds: float = 30.0,
        rng: random.Random | None = None,
        points_per_request: int = 5000,
        flavour: Flavour = "influxdb",
    ) -> None:
        if max_backoff_seconds <= 0:
            raise ValueError("max_backoff_seconds must be positive")
        if points_per_request < 1:
            raise ValueError("points_per_request must be at least 1")
        self.max_backoff_seconds = max_backoff_seconds
        #: the server's reading of backslashes in tags (pipeline.outputs.lineprotocol)
        self.flavour: Flavour = flavour
        # InfluxDB's advice is batches of 5,000-10,000 points; one request of everything an
        # agent had (a spike watch catching up on years of hours) went over its body limit
        self.points_per_request = points_per_request
        self._rng = rng or random.Random(0)  # noqa: S311 - jitter, not cryptography
        self.points_written = 0
        self.write_failures = 0
        #: points InfluxDB refused alone, each logged with its line (:meth:`_write_split`)
        self.points_refused = 0

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Create the client (no network call); ``write`` calls it when needed."""

    async def setup(self) -> None:
        """Create the client and check the destination; raise :class:`SinkError` naming the problem."""
        await self.open()

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release the client."""

    @abstractmethod
    async def _write(self, body: bytes) -> None:
        """Write one request body; raise _Retryable, InfluxBackpressure or SinkError."""

    async def write(self, points: Sequence[Point]) -> None:
        """Write all points, ``points_per_request`` to a request, retrying each until it is
        stored; raise only :class:`SinkError`. (A point written twice is the same point:
        a retry after a partial write changes nothing.)"""
        refused = _Refusals()
        for start in range(0, len(points), self.points_per_request):
            await self._write_retrying(points[start : start + self.points_per_request], refused)
        if refused.not_logged:
            logger.error(
                "sink=%s points_refused_not_logged=%d lines_logged=%d", self.name, refused.not_logged, refused.lines
            )

    async def _write_retrying(self, points: Sequence[Point], refused: _Refusals) -> None:
        body = to_line_protocol(points, self.flavour)
        attempt = 0
        while True:
            try:
                # each attempt: a client closed while this write waited to retry is made again
                await self.open()
                await self._write(body)
            except SinkError as exc:
                if exc.status in _SPLIT_STATUSES:
                    await self._write_split(points, exc, refused)
                    return
                if exc.status not in _CREDENTIAL_STATUSES:
                    raise
                delay = self.max_backoff_seconds
                reason = f"error={exc} fix={self.credentials}"
            except InfluxBackpressure as exc:
                delay = exc.retry_after
                reason = "status=429"
            except _Retryable as exc:
                delay = min(self.max_backoff_seconds, 0.2 * 2**attempt) * (0.5 + self._rng.random())
                reason = f"error={exc}"
            else:
                self.points_written += len(points)
                logger.debug("sink=%s points=%d written", self.name, len(points))
                return
            attempt += 1
            self.write_failures += 1
            logger.warning(
                "sink=%s points=%d attempt=%d %s retry_in=%.1fs", self.name, len(points), attempt, reason, delay
            )
            await asyncio.sleep(delay)

    async def _write_split(self, points: Sequence[Point], error: SinkError, refused: _Refusals) -> None:
        """Write ``points`` in halves, down to the points InfluxDB refuses (a field of
        another type than the series has, a value it cannot take): they are logged with
        their line and counted in ``points_refused``, and the others are stored. (Points
        InfluxDB kept from a partial write are written again: the same points.)

        A request whose every point InfluxDB dropped (its answer says ``dropped=N``) is not
        split further: one log line for all of them, naming the first. A series whose
        field changed type refuses every point of a batch, and halving down to each one
        cost about two requests and a log line a point (10,000 and 5,000 a full request).
        ``refused``: this write's lines logged and points not logged; past
        :data:`REFUSED_LINES_PER_WRITE` lines, ``write`` says how many more in one line.
        """
        dropped = _refused_count(error)
        if len(points) == 1 or (dropped is not None and dropped >= len(points)):
            self.points_refused += len(points)
            if refused.lines >= REFUSED_LINES_PER_WRITE:
                refused.not_logged += len(points)
                return
            refused.lines += 1
            first = to_line_protocol(points[:1], self.flavour).decode().strip()[:500]
            if len(points) == 1:
                logger.error("sink=%s point_refused=%s error=%s", self.name, first, error)
            else:
                logger.error("sink=%s points_refused=%d first=%s error=%s", self.name, len(points), first, error)
            return
        half = len(points) // 2
        await self._write_retrying(points[:half], refused)
        await self._write_retrying(points[half:], refused)


def _retry_after(headers: Any) -> float:
    try:
        return max(0.0, float(headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


class InfluxV1Sink(InfluxSink):
    """InfluxDB 1.x: line protocol POSTed to ``/write?db=...&precision=s``.

    ``setup()`` creates the database if it is missing (``CREATE DATABASE`` is a no-op
    when it exists) and fails with one clear line if the server cannot be reached.
    """

    name = "influx_v1"
    credentials = "TICKETPULSE_INFLUX_USERNAME and TICKETPULSE_INFLUX_PASSWORD"

    def __init__(
        self,
        url: str,
        database: str,
        username: str | None = None,
        password: str | None = None,
        timeout_seconds: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if not database:
            raise ValueError("database must not be empty")
        self.url = url.rstrip("/")
        self.database = database
        self._auth = aiohttp.BasicAuth(username, password or "") if username else None
        self.timeout_seconds = timeout_seconds
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                auth=self._auth, timeout=aiohttp.ClientTimeout(total=self.timeout_seconds)
            )

    async def setup(self) -> None:
        await super().setup()
        if self._session is None:
            raise RuntimeError("open() was not called")
        try:
            await self._create_database()
        except (aiohttp.ClientError, TimeoutError) as exc:
            await self.close()
            raise SinkError(f"cannot reach InfluxDB at {self.url} (TICKETPULSE_INFLUX_URL): {exc}") from None
        except SinkError:
            await self.close()
            raise
        logger.info("sink=%s url=%s database=%s ready", self.name, self.url, self.database)

    async def _create_database(self) -> None:
        if self._session is None:
            raise RuntimeError("open() was not called")
        async with self._session.post(f"{self.url}/query", data={"q": f'CREATE DATABASE "{self.database}"'}) as resp:
            if resp.status in (401, 403):
                raise SinkError(f"InfluxDB at {self.url} refused the credentials (HTTP {resp.status})", resp.status)
            if resp.status >= 400:
                raise SinkError(f"InfluxDB at {self.url} answered HTTP {resp.status}: {await resp.text()}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _write(self, body: bytes) -> None:
        if self._session is None:
            raise RuntimeError("open() was not called")
        try:
            async with self._session.post(
                f"{self.url}/write", params={"db": self.database, "precision": "s"}, data=body
            ) as resp:
                if resp.status == 204:
                    return
                text = (await resp.text())[:300]
                if resp.status == 429:
                    raise InfluxBackpressure(_retry_after(resp.headers))
                if resp.status >= 500:
                    raise _Retryable(f"HTTP {resp.status}: {text}")
                if resp.status == 404 and "database not found" in text:
                    # Dropped, or never created (InfluxDB was down when the worker started).
                    await self._create_database()
                    raise _Retryable("database was missing, created it")
                raise SinkError(f"InfluxDB rejected the write (HTTP {resp.status}): {text}", resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None


class InfluxV2Sink(InfluxSink):
    """InfluxDB 2.x through ``influxdb-client``'s async write API (URL, token, org, bucket)."""

    name = "influx_v2"
    credentials = "TICKETPULSE_INFLUX_TOKEN"

    def __init__(
        self, url: str, token: str, org: str, bucket: str, timeout_seconds: float = 10.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if not token:
            raise ValueError("token must not be empty (TICKETPULSE_INFLUX_TOKEN)")
        if not org or not bucket:
            raise ValueError("org and bucket must not be empty")
        self.url = url.rstrip("/")
        self.org = org
        self.bucket = bucket
        self._token = token
        self.timeout_seconds = timeout_seconds
        self._client: Any = None
        self._write_api: Any = None

    async def open(self) -> None:
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        if self._client is None:
            self._client = InfluxDBClientAsync(
                url=self.url, token=self._token, org=self.org, timeout=int(self.timeout_seconds * 1000)
            )
            self._write_api = self._client.write_api()

    async def setup(self) -> None:
        await super().setup()
        try:
            await self._client.ping()
        except Exception as exc:
            await self.close()
            raise SinkError(f"cannot reach InfluxDB at {self.url} (TICKETPULSE_INFLUX_URL): {exc}") from None
        logger.info("sink=%s url=%s org=%s bucket=%s ready", self.name, self.url, self.org, self.bucket)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
            self._write_api = None

    async def _write(self, body: bytes) -> None:
        from influxdb_client.rest import ApiException

        if self._write_api is None:
            raise RuntimeError("open() was not called")
        try:
            await self._write_api.write(bucket=self.bucket, org=self.org, record=body, write_precision="s")
        except ApiException as exc:
            if exc.status == 429:
                raise InfluxBackpressure(_retry_after(exc.headers or {})) from None
            if exc.status and exc.status >= 500:
                raise _Retryable(f"HTTP {exc.status}") from None
            raise SinkError(f"InfluxDB rejected the write (HTTP {exc.status}): {exc.reason}", exc.status) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None


class FileSink(InfluxSink):
    """Appends line protocol to a file: the demo's stand-in when no InfluxDB is installed."""

    name = "file"

    def __init__(self, path: str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path)

    async def _write(self, body: bytes) -> None:
        with self.path.open("ab") as fh:
            fh.write(body + b"\n")


def create_sink(settings: Settings) -> InfluxSink:
    """The sink the settings ask for."""
    if settings.influx_url is None:
        return FileSink(settings.series_file)
    if settings.influx_version == 2:
        if settings.influx_token is None:
            raise SinkError("TICKETPULSE_INFLUX_TOKEN is required with TICKETPULSE_INFLUX_VERSION=2")
        return InfluxV2Sink(
            settings.influx_url,
            settings.influx_token.get_secret_value(),
            settings.influx_org,
            settings.influx_bucket,
            settings.influx_timeout_seconds,
            flavour=settings.influx_flavour,
        )
    return InfluxV1Sink(
        settings.influx_url,
        settings.influx_database,
        settings.influx_username,
        settings.influx_password.get_secret_value() if settings.influx_password else None,
        settings.influx_timeout_seconds,
        flavour=settings.influx_flavour,
    )
