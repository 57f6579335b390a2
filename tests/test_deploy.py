"""docker-compose.yml and deploy/ read as a user's Docker would (no engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_images_are_pinned_and_healthchecked() -> None:
    services = _compose()["services"]
    assert set(services) == {"kafka", "influxdb", "grafana", "worker"}
    for name, service in services.items():
        image = service.get("image", "")
        assert re.fullmatch(r"[a-z0-9./_-]+:\d+\.\d+\.\d+", image), f"{name}: image {image!r} is not pinned"
        assert "test" in service.get("healthcheck", {}), f"{name} has no healthcheck"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert services["influxdb"]["image"].startswith("influxdb:2.")


def test_worker_settings_are_real_settings_and_secrets_come_from_the_environment() -> None:
    services = _compose()["services"]
    env = services["worker"]["environment"]
    known = {f"TICKETPULSE_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= known, set(env) - known
    assert env["TICKETPULSE_BROKER_URL"] == "kafka://kafka:9092"
    assert env["TICKETPULSE_INFLUX_VERSION"] == "2"
    assert env["TICKETPULSE_INFLUX_TOKEN"].startswith("${INFLUXDB_TOKEN")
    assert services["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"].startswith("${INFLUXDB_TOKEN")
    assert services["worker"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    # the worker's settings validate as they stand (variables substituted by their defaults)
    resolved = {
        k.removeprefix("TICKETPULSE_").lower(): re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()
    }
    Settings(**resolved)


def test_provisioning_mounts_exist() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"
    build = services["worker"]["build"]
    dockerfile = ROOT / build["context"] / build["dockerfile"]
    text = dockerfile.read_text()
    assert "COPY pipeline ./pipeline" in text and 'CMD ["ticketpulse", "worker"]' in text


def test_grafana_datasource_is_influxql_with_token_from_environment() -> None:
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/influxdb.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "influxdb" and source["uid"] == "ticketpulse-influxdb"
    assert source["secureJsonData"]["httpHeaderValue1"] == "Token ${INFLUXDB_TOKEN}"
    grafana_env = _compose()["services"]["grafana"]["environment"]
    assert {"INFLUXDB_URL", "INFLUXDB_BUCKET", "INFLUXDB_TOKEN"} <= set(grafana_env)


def test_alert_rules_and_contact_points_are_provisioned_from_the_environment() -> None:
    doc = yaml.safe_load((ROOT / "deploy/grafana/provisioning/alerting/ticketpulse.yml").read_text())
    receivers = {r["type"]: r["settings"]["url"] for r in doc["contactPoints"][0]["receivers"]}
    assert receivers == {"slack": "$SLACK_WEBHOOK_URL", "webhook": "$ALERT_WEBHOOK_URL"}
    grafana_env = _compose()["services"]["grafana"]["environment"]
    assert {"SLACK_WEBHOOK_URL", "ALERT_WEBHOOK_URL"} <= set(grafana_env)
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {r["uid"] for r in rules} == {
        "ticketpulse-spike",
        "ticketpulse-dead-letters",
        "ticketpulse-too-late",
        "ticketpulse-lag",
    }
    for rule in rules:
        refs = {item["refId"] for item in rule["data"]}
        assert rule["condition"] in refs
