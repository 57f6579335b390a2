from __future__ import annotations

import logging
import subprocess

import pytest

from pipeline.settings import Settings, SettingsError, load_settings

from .conftest import TICKETPULSE


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKETPULSE_WINDOW_SECONDS", "900")
    monkeypatch.setenv("TICKETPULSE_INFLUX_TOKEN", "s3cr3t")
    s = load_settings()
    assert s.window_seconds == 900 and s.window_label == "15m"
    assert s.topic_tickets == "tickets" and s.topic_dead_letter == "tickets-dead-letter"
    assert "s3cr3t" not in repr(s)
    with pytest.raises(Exception, match="frozen"):
        s.window_seconds = 60  # type: ignore[misc]


def test_every_field_documents_its_environment_variable() -> None:
    for name, field in Settings.model_fields.items():
        assert (field.description or "").startswith(f"TICKETPULSE_{name.upper()}:"), name


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TICKETPULSE_WINDOW_SECONDS": "ten"}, "TICKETPULSE_WINDOW_SECONDS: Input should be a valid integer"),
        ({"TICKETPULSE_BROKER_URL": "localhost:9092"}, "TICKETPULSE_BROKER_URL: Value error, must look like kafka://"),
        ({"TICKETPULSE_INFLUX_VERSION": "3"}, "TICKETPULSE_INFLUX_VERSION: Input should be less than or equal to 2"),
        ({"TICKETPULSE_INFLUX_URL": "influx:8086"}, "TICKETPULSE_INFLUX_URL: Value error, must start with http"),
    ],
)
def test_wrong_setting_gives_one_clear_line(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith(message)


def _worker(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TICKETPULSE, "worker"], env=env, capture_output=True, text=True, timeout=timeout)


def test_worker_with_wrong_setting_prints_one_line_and_exits_2() -> None:
    r = _worker({"PATH": "/usr/bin:/bin", "TICKETPULSE_PARTITIONS": "0"})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "ticketpulse: TICKETPULSE_PARTITIONS: Input should be greater than or equal to 1 (got '0')"
    ]


def test_secret_values_are_not_echoed_back() -> None:
    r = _worker({"PATH": "/usr/bin:/bin", "TICKETPULSE_INFLUX_TOKEN": "x", "TICKETPULSE_INFLUX_VERSION": "9"})
    assert r.returncode == 2 and "TICKETPULSE_INFLUX_VERSION" in r.stderr
    r = _worker({"PATH": "/usr/bin:/bin", "TICKETPULSE_INFLUX_PASSWORD": "", "TICKETPULSE_BATCH_SIZE": "0"})
    assert r.returncode == 2


def test_unreachable_broker_is_named(free_port: int) -> None:
    r = _worker({"PATH": "/usr/bin:/bin", "TICKETPULSE_BROKER_URL": f"kafka://127.0.0.1:{free_port}"})
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"ticketpulse: cannot reach the broker at kafka://127.0.0.1:{free_port} (TICKETPULSE_BROKER_URL)"
    )


@pytest.mark.integration
def test_unreachable_influxdb_is_named(broker, free_port: int) -> None:
    r = _worker(
        {
            "PATH": "/usr/bin:/bin",
            "TICKETPULSE_BROKER_URL": broker.url,
            "TICKETPULSE_APP_ID": "tp-unreachable-influx",
            "TICKETPULSE_INFLUX_URL": f"http://127.0.0.1:{free_port}",
        }
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith(
        f"ticketpulse: cannot reach InfluxDB at http://127.0.0.1:{free_port} (TICKETPULSE_INFLUX_URL)"
    )


@pytest.fixture
def free_port() -> int:
    from pipeline.testbed.services import free_port as fp

    return fp()


@pytest.mark.parametrize("level", ["warning", "error"])
def test_a_quiet_worker_builds_no_debug_records(level: str) -> None:
    """Faust's terminal spinner would set the root logger to DEBUG above INFO."""
    import faust

    from pipeline.commands.cli import service_worker

    app = faust.App("ticketpulse-log-test", broker="kafka://localhost:1")
    worker = service_worker(app, level)
    root_level = logging.root.level
    try:
        worker._setup_logging()
        assert logging.root.level == getattr(logging, level.upper())
        assert not logging.getLogger("faust.topics").isEnabledFor(logging.DEBUG)
    finally:
        logging.root.setLevel(root_level)


def test_the_worker_collects_garbage_less_often() -> None:
    import gc

    from pipeline.commands.cli import GC_THRESHOLDS, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > 10 * before[0]
        assert gc.get_freeze_count() > 10_000  # the start-up heap, out of the collector's walks
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
