"""One frozen settings object for the whole pipeline.

Every field reads the environment variable named in its description, with the
``TICKETPULSE_`` prefix. Nothing else in ticketpulse reads the environment:
components receive a :class:`Settings` instance (or the values they need).
Secrets are :class:`pydantic.SecretStr`, so they never appear in a ``repr`` or
a log line.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "SettingsError", "load_settings", "settings_table"]


class SettingsError(Exception):
    """A setting is wrong: the message names the environment variable."""


class Settings(BaseSettings):
    """ticketpulse's configuration, validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix="TICKETPULSE_", frozen=True, extra="forbid")

    # --- Kafka ------------------------------------------------------------------------
    broker_url: str = Field(
        "kafka://127.0.0.1:9092",
        description="TICKETPULSE_BROKER_URL: Kafka bootstrap servers, 'kafka://host:port[;host:port]'.",
    )
    app_id: str = Field(
        "ticketpulse",
        description="TICKETPULSE_APP_ID: Faust app id, also the consumer group and the prefix "
        "of internal topics. Workers with the same id share the work.",
    )
    partitions: int = Field(
        4, ge=1, le=256, description="TICKETPULSE_PARTITIONS: partitions of every topic the app creates."
    )
    topic_tickets: str = Field("tickets", description="TICKETPULSE_TOPIC_TICKETS: incoming tickets.")
    topic_labels: str = Field("ticket-labels", description="TICKETPULSE_TOPIC_LABELS: human tags.")
    topic_classified: str = Field(
        "tickets-classified", description="TICKETPULSE_TOPIC_CLASSIFIED: tickets with predictions."
    )
    topic_alerts: str = Field("ticket-alerts", description="TICKETPULSE_TOPIC_ALERTS: spike alerts.")
    topic_product_events: str = Field(
        "product-events", description="TICKETPULSE_TOPIC_PRODUCT_EVENTS: releases, fixes, docs changes."
    )
    topic_dead_letter: str = Field(
        "tickets-dead-letter", description="TICKETPULSE_TOPIC_DEAD_LETTER: rejected input with its reason."
    )

    # --- windows ----------------------------------------------------------------------
    window_seconds: int = Field(
        3600, ge=60, le=86400, description="TICKETPULSE_WINDOW_SECONDS: size of a volume window."
    )
    allowed_lateness_seconds: int = Field(
        7 * 86400,
        ge=0,
        description="TICKETPULSE_ALLOWED_LATENESS_SECONDS: how far behind the stream a ticket may be and "
        "still update its window (the stream: the oldest of the tickets partitions' newest windows); "
        "older ones are skipped and counted.",
    )
    max_future_hours: float = Field(
        24.0,
        ge=0,
        description="TICKETPULSE_MAX_FUTURE_HOURS: a ticket created further ahead of the worker's clock goes to "
        "the dead-letter topic (a wrong date would close every open window); time zones and clock skew fit in a day.",
    )
    idle_partition_seconds: float = Field(
        300.0,
        ge=0,
        description="TICKETPULSE_IDLE_PARTITION_SECONDS: a tickets partition read to its end that brings "
        "nothing for this long stops holding windows open: its watermark follows the newest window any tickets "
        "partition is known to have reached (0: never; pipeline.counting.volume.IdleSources).",
    )
    max_ticket_bytes: int = Field(
        1_000_000,
        ge=1024,
        description="TICKETPULSE_MAX_TICKET_BYTES: a larger message goes to the dead-letter topic.",
    )
    batch_size: int = Field(
        2000, ge=1, description="TICKETPULSE_BATCH_SIZE: tickets an agent takes at once (stream.take)."
    )
    batch_seconds: float = Field(0.5, gt=0, description="TICKETPULSE_BATCH_SECONDS: longest wait to fill a batch.")
    stop_wait_seconds: float = Field(
        10.0,
        ge=0,
        description="TICKETPULSE_STOP_WAIT_SECONDS: how long a stopping worker lets the batches in flight "
        "finish (a batch can be waiting for InfluxDB to come back); the rest is read again by the next worker.",
    )
    broker_lost_seconds: float = Field(
        60.0,
        gt=0,
        description="TICKETPULSE_BROKER_LOST_SECONDS: a worker whose broker does not answer this long exits "
        "(code 3) with one line saying so, for a supervisor to restart it; one whose broker lost its topics "
        "exits at once. A stop that takes TICKETPULSE_STOP_WAIT_SECONDS and 10 s more ends the process (code 4).",
    )

    # --- tagging ------------------------------------------------------------------------
    tagging_enabled: bool = Field(
        True,
        description="TICKETPULSE_TAGGING_ENABLED: predict case type, area and severity for every ticket "
        "(tickets-classified) and learn from every label; off: about three times the throughput.",
    )
    label_horizon_hours: float = Field(
        72.0,
        gt=0,
        description="TICKETPULSE_LABEL_HORIZON_HOURS: how long a ticket's text is kept for a tag or correction "
        "that names it later on ticket-labels; a label for a ticket not seen within it goes to the dead-letter topic. "
        "The linear tagger remembers which labels it learned for a ticket id for this and a day more of event time.",
    )
    tagger: Literal["linear", "words"] = Field(
        "linear",
        description="TICKETPULSE_TAGGER: 'linear' (a softmax over the ticket's embedding and word pairs: CLINC150 "
        "accuracy 0.927, SUMO topic 0.422, docs/benchmarks.md), or 'words' (naive Bayes over words: 0.860, 0.354). "
        "Each has its own training topic and checkpoint; every worker of an app "
        "must run the same one, and a warm-start model (TICKETPULSE_TAGGER_MODEL) must be of this kind.",
    )
    tagger_step_seconds: float = Field(
        300.0,
        gt=0,
        description="TICKETPULSE_TAGGER_STEP_SECONDS: the longest the linear tagger holds a label waiting for its "
        "step of 16 (a field labelled rarely): a worker that has read every label and has held some this long "
        "sends a step marker to the training topic, and every worker learns its held labels there, at one point "
        "of the labels' order.",
    )
    tagger_model: str | None = Field(
        None,
        description="TICKETPULSE_TAGGER_MODEL: a model saved by `ticketpulse replay --save-model`, loaded at start "
        "when the worker has no checkpoint of its own (warm start from a helpdesk's history).",
    )
    tagger_checkpoint_seconds: float = Field(
        30.0,
        gt=0,
        description="TICKETPULSE_TAGGER_CHECKPOINT_SECONDS: how often the models are saved to the data dir, "
        "with the position of the labels they include.",
    )
    tagger_feature_buckets: int = Field(
        2**18,
        ge=1024,
        description="TICKETPULSE_TAGGER_FEATURE_BUCKETS: the hashing trick's buckets the words tagger's words and word "
        "pairs go into, the most features a model holds however long it learns (2**18: the three models pickled "
        "about 31 MB after 200,000 labelled tickets in ever new words, docs/benchmarks.md). "
        "Every worker, and `ticketpulse replay` for a warm start, must use the same number; a checkpoint made with "
        "another is refused at start.",
    )
    count_predicted_tags: bool = Field(
        True,
        description="TICKETPULSE_COUNT_PREDICTED_TAGS: count a ticket without a helpdesk tag under its predicted "
        "area, case type and severity when the prediction is not uncertain (otherwise 'unassigned').",
    )

    # --- spikes -----------------------------------------------------------------------
    spike_alert_score: float = Field(
        0.4,
        gt=0,
        le=1,
        description="TICKETPULSE_SPIKE_ALERT_SCORE: detector score that raises an alert (0.4 is p < 1e-4).",
    )
    spike_min_customers: int = Field(
        5,
        ge=1,
        description="TICKETPULSE_SPIKE_MIN_CUSTOMERS: distinct customers an area's span needs to alert, at "
        "any of the watch's scales (an hour, six hours, a day; each hour's distinct customers added), besides "
        "twice what the span expects.",
    )
    case_type_spike_min_customers: int = Field(
        10,
        ge=1,
        description="TICKETPULSE_CASE_TYPE_SPIKE_MIN_CUSTOMERS: distinct customers a span (an hour, six hours, "
        "a day) of one case type in an area needs to alert. Higher than an area's: an area has six case "
        "types, each a smaller series, so six times the chances of a chance fluctuation.",
    )

    # --- patterns ---------------------------------------------------------------------
    patterns_enabled: bool = Field(
        True,
        description="TICKETPULSE_PATTERNS_ENABLED: group counted tickets into patterns in the worker "
        "(pattern_volume, pattern_spike, pattern alerts).",
    )
    pattern_threshold: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="TICKETPULSE_PATTERN_THRESHOLD: cosine similarity of meaning (the embedding of the tagger's "
        "reading, the cleaned subject and body opening, less the area's mean) a ticket needs to join a pattern; "
        "patterns merge at 0.6, or "
        "at this when higher. It depends on text length: 0.5 for tickets of a subject and a few sentences "
        "(SUMO forum questions: 26 % alone in their pattern, 61 % in patterns of 5+ customers), 0.3 for "
        "one-line queries (CLINC150: NMI 0.87, ARI 0.57; at 0.3 forum questions collapse into catch-alls). "
        "Measured in docs/benchmarks.md.",
    )
    pattern_by_locale: bool = Field(
        True,
        description="TICKETPULSE_PATTERN_BY_LOCALE: group an area's tickets per language (the first subtag of "
        "their `locale`; tickets without one together, as before): the embedding model reads English, and "
        "questions it cannot read meet whatever they ask. On SUMO 2022-2024, 179 of the 360 largest patterns "
        "of a month mixed languages (under 80 % one language) when grouped per area, 24 per area and language. "
        "Changing it starts new patterns for the tickets with a locale. Measured in docs/benchmarks.md.",
    )
    pattern_spike_min_customers: int = Field(
        10,
        ge=1,
        description="TICKETPULSE_PATTERN_SPIKE_MIN_CUSTOMERS: distinct customers a pattern's span (an hour, six "
        "hours, a day) needs to alert (the essays: ten similar tickets are a pattern). Higher than an area's: "
        "a pattern is new more often than an area, and a new one is judged against no history.",
    )
    pattern_checkpoint_seconds: float = Field(
        30.0,
        gt=0.0,
        description="TICKETPULSE_PATTERN_CHECKPOINT_SECONDS: how often the patterns are saved to the data "
        "directory with the offsets they include.",
    )

    # --- alert delivery ---------------------------------------------------------------
    slack_webhook_url: SecretStr | None = Field(
        None, description="TICKETPULSE_SLACK_WEBHOOK_URL: Slack incoming webhook for spike alerts (a secret)."
    )
    alert_webhook_url: str | None = Field(
        None, description="TICKETPULSE_ALERT_WEBHOOK_URL: a JSON webhook for spike alerts, signed with HMAC-SHA256."
    )
    alert_webhook_secret: SecretStr | None = Field(
        None, description="TICKETPULSE_ALERT_WEBHOOK_SECRET: the key of that signature."
    )
    dashboard_url: str | None = Field(
        None, description="TICKETPULSE_DASHBOARD_URL: the area dashboard, linked from Slack alerts."
    )
    delivery_attempts: int = Field(
        5, ge=1, le=20, description="TICKETPULSE_DELIVERY_ATTEMPTS: tries per alert and destination."
    )

    # --- webhook ingest ---------------------------------------------------------------
    zendesk_webhook_secret: SecretStr | None = Field(
        None, description="TICKETPULSE_ZENDESK_WEBHOOK_SECRET: Zendesk's webhook signing secret."
    )
    freshdesk_webhook_token: SecretStr | None = Field(
        None, description="TICKETPULSE_FRESHDESK_WEBHOOK_TOKEN: bearer token Freshdesk sends (custom header)."
    )
    intercom_webhook_secret: SecretStr | None = Field(
        None, description="TICKETPULSE_INTERCOM_WEBHOOK_SECRET: the Intercom app's client secret (X-Hub-Signature)."
    )
    helpscout_webhook_secret: SecretStr | None = Field(
        None, description="TICKETPULSE_HELPSCOUT_WEBHOOK_SECRET: Help Scout's webhook secret key."
    )
    ingest_token: SecretStr | None = Field(
        None, description="TICKETPULSE_INGEST_TOKEN: bearer token for POST /webhooks/ticketpulse (ticket JSON)."
    )
    webhook_tolerance_seconds: float = Field(
        300.0,
        gt=0,
        description="TICKETPULSE_WEBHOOK_TOLERANCE_SECONDS: how far a webhook's signed timestamp (Zendesk's) may be "
        "behind or ahead of the worker's clock; an older or newer one is refused with 401 (a captured request "
        "replayed, or a clock far off).",
    )

    # --- InfluxDB ---------------------------------------------------------------------
    influx_url: str | None = Field(
        None,
        description="TICKETPULSE_INFLUX_URL: InfluxDB base URL, e.g. http://127.0.0.1:8086. "
        "Unset: series are written to TICKETPULSE_SERIES_FILE as line protocol instead.",
    )
    influx_version: int = Field(
        1, ge=1, le=2, description="TICKETPULSE_INFLUX_VERSION: 1 (line protocol to /write) or 2 (influxdb-client)."
    )
    influx_database: str = Field("ticketpulse", description="TICKETPULSE_INFLUX_DATABASE: database, InfluxDB 1.x.")
    influx_username: str | None = Field(None, description="TICKETPULSE_INFLUX_USERNAME: 1.x user.")
    influx_password: SecretStr | None = Field(None, description="TICKETPULSE_INFLUX_PASSWORD: 1.x password.")
    influx_org: str = Field("ticketpulse", description="TICKETPULSE_INFLUX_ORG: organisation, 2.x.")
    influx_bucket: str = Field("ticketpulse", description="TICKETPULSE_INFLUX_BUCKET: bucket, 2.x.")
    influx_token: SecretStr | None = Field(None, description="TICKETPULSE_INFLUX_TOKEN: API token, 2.x.")
    influx_flavour: Literal["influxdb", "victoriametrics"] = Field(
        "influxdb",
        description="TICKETPULSE_INFLUX_FLAVOUR: the server behind TICKETPULSE_INFLUX_URL, for the escaping of "
        "backslashes in tag values: 'influxdb' (InfluxDB 1.x and 2.x keep a tag's backslashes as written) or "
        "'victoriametrics' (reads two backslashes as one, as InfluxDB 3 and Telegraf do).",
    )
    influx_timeout_seconds: float = Field(
        10.0, gt=0, description="TICKETPULSE_INFLUX_TIMEOUT_SECONDS: one write's time limit."
    )
    series_file: str = Field(
        "ticketpulse-series.lp",
        description="TICKETPULSE_SERIES_FILE: where series go when no InfluxDB is configured.",
    )

    # --- worker -----------------------------------------------------------------------
    data_dir: str = Field(
        ".ticketpulse", description="TICKETPULSE_DATA_DIR: the worker's local folder (Faust datadir)."
    )
    web_enabled: bool = Field(True, description="TICKETPULSE_WEB_ENABLED: serve the worker's web views.")
    web_host: str = Field("127.0.0.1", description="TICKETPULSE_WEB_HOST: web views address (0.0.0.0 in a container).")
    web_port: int = Field(6066, ge=1, le=65535, description="TICKETPULSE_WEB_PORT: web views port.")
    stats_seconds: float = Field(
        10.0, gt=0, description="TICKETPULSE_STATS_SECONDS: how often a worker writes its pipeline_stats point."
    )
    log_level: str = Field("info", description="TICKETPULSE_LOG_LEVEL: debug, info, warning or error.")

    @field_validator("broker_url")
    @classmethod
    def _broker_url_has_scheme(cls, value: str) -> str:
        if not value.startswith("kafka://"):
            raise ValueError("must look like kafka://host:port")
        return value

    @field_validator("influx_url")
    @classmethod
    def _influx_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    def webhook_secrets(self) -> dict[str, str]:
        """Per webhook source, its secret or token (only the configured ones)."""
        pairs = {
            "zendesk": self.zendesk_webhook_secret,
            "freshdesk": self.freshdesk_webhook_token,
            "intercom": self.intercom_webhook_secret,
            "helpscout": self.helpscout_webhook_secret,
            "ticketpulse": self.ingest_token,
        }
        return {source: value.get_secret_value() for source, value in pairs.items() if value is not None}

    @property
    def bootstrap_servers(self) -> str:
        """The broker URL as aiokafka wants it (``host:port,host:port``)."""
        return self.broker_url.removeprefix("kafka://").replace(";", ",")

    @property
    def window_label(self) -> str:
        """The window size as written in the ``window`` tag: ``1h``, ``15m``, ``90s``."""
        s = self.window_seconds
        if s % 3600 == 0:
            return f"{s // 3600}h"
        if s % 60 == 0:
            return f"{s // 60}m"
        return f"{s}s"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, turning a validation error into one clear line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = "_".join(str(part) for part in err["loc"]).upper()
            shown = "***" if _is_secret(name) else repr(err.get("input"))
            problems.append(f"TICKETPULSE_{name}: {err['msg']} (got {shown})")
        raise SettingsError("; ".join(problems)) from None


def _is_secret(name: str) -> bool:
    return any(word in name for word in ("PASSWORD", "TOKEN", "SECRET"))


def settings_table(model: type[BaseSettings] = Settings) -> str:
    """The settings as a markdown table: variable, default and meaning, one row a field.

    Made from the fields themselves (each description starts with its variable), so
    that docs/operations.md cannot drift from the code: ``make docs`` writes it there,
    and ``tests/test_docs.py`` fails when the file's copy differs.

    Parameters
    ----------
    model
        The settings class; its ``env_prefix`` names the variables.

    Returns
    -------
    str
        The table, header included, ending with a newline.

    Examples
    --------
    >>> print(settings_table().splitlines()[2])
    | `TICKETPULSE_BROKER_URL` | `kafka://127.0.0.1:9092` | Kafka bootstrap servers, 'kafka://host:port[;host:port]'. |
    """
    prefix = str(model.model_config.get("env_prefix", ""))
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        meaning = (field.description or "").removeprefix(f"{variable}:").strip()
        rows.append(f"| `{variable}` | {_shown_default(field.default)} | {_table_cell(meaning)} |")
    return "\n".join(rows) + "\n"


def _shown_default(value: object) -> str:
    """A default as a reader sets it: ``true``, ``3600``, ``0.5``; ``None`` is "unset"."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def _table_cell(text: str) -> str:
    """``text`` on one line, its pipes escaped: one cell of a markdown table."""
    return " ".join(text.split()).replace("|", "\\|")
