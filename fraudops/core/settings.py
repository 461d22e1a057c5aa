"""One settings class for every FraudOps command and service.

Values come from ``FRAUDOPS_*`` environment variables, then from a ``.env`` file in the
working directory, then from the embedded defaults below: everything under one data
directory, SQLite for the online store, the prediction log and MLflow. Switching to Redis,
PostgreSQL or an MLflow server is configuration only::

    FRAUDOPS_ONLINE_STORE=redis FRAUDOPS_REDIS_URL=redis://127.0.0.1:6379/0 fraudops ...

Read settings through :func:`get_settings` (cached); tests call ``get_settings.cache_clear()``.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The prediction log's default flush interval. Measured with the service benchmark's load at
# concurrency 16, PostgreSQL on the same 2 cores, six alternated rounds: p99 10.6 ms at
# 0.05 s against 12.6 ms at 0.2 s (the no-op service's: 7.3 ms), the same throughput; at
# concurrency 1 no difference.
LOG_FLUSH_SECONDS = 0.05

PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "fraudops"}
MIN_PRODUCTION_KEY_LENGTH = 16


class MonitorSettings(BaseSettings):
    """Drift tests and alert thresholds: the monitoring part of :class:`Settings`."""

    model_config = SettingsConfigDict(
        env_prefix="FRAUDOPS_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,  # FRAUDOPS_X= (empty) means "use the default"
        extra="ignore",
    )

    drift_method: Literal["wasserstein", "psi", "jensenshannon", "hellinger"] = Field(
        "wasserstein",
        description="Evidently drift method for features and scores. Distances, not p-values: "
        "with thousands of predictions a p-value flags differences nobody cares about.",
    )
    drift_threshold: float = Field(
        0.1, gt=0, description="A feature drifted when its drift score is at least this."
    )
    drift_ignore_features: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["tx_is_weekend"],
        description="Features reported but not counted in the drift share (comma-separated). "
        "tx_is_weekend of a one-day window is all 0 or all 1: it always differs from a "
        "reference that spans whole weeks.",
    )
    alert_drift_share: float = Field(
        0.5, gt=0, le=1, description="Alert when at least this share of the features drifted."
    )
    alert_score_drift: float = Field(
        0.1, gt=0, description="Alert when the fraud probability's drift score is at least this."
    )
    alert_latency_p99_ms: float = Field(
        100.0, gt=0, description="Alert when the scoring latency p99 (ms) is at least this."
    )
    alert_error_rate: float = Field(
        0.01,
        gt=0,
        le=1,
        description="Alert when at least this share of predictions was degraded (online store "
        "unreachable, default features).",
    )
    alert_auc_drop: float = Field(
        0.05, gt=0, description="Alert when ROC AUC is lower than the model's test AUC by this."
    )
    alert_ap_drop: float = Field(
        0.10,
        gt=0,
        description="Alert when average precision is lower than the model's test AP by this.",
    )
    min_window_predictions: int = Field(
        500,
        ge=1,
        description="Fewer predictions than this: drift is reported but raises no alert "
        "(small samples drift by chance).",
    )
    min_labelled_frauds: int = Field(
        10, ge=1, description="Fewer labelled frauds than this: no quality alert."
    )
    alert_webhook_url: str | None = Field(
        None, description="POST new alerts as JSON to this URL (Slack-compatible `text`)."
    )
    alert_webhook_timeout_seconds: float = Field(5.0, gt=0, description="Webhook timeout.")
    mlflow_ui_url: str = Field(
        "http://127.0.0.1:5000",
        description="Where the dashboard links to the MLflow UI when tracking is not a server.",
    )

    @field_validator("drift_ignore_features", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value


class Settings(MonitorSettings):
    """FraudOps configuration (environment prefix ``FRAUDOPS_``, ``.env``; the source
    configuration is inherited from :class:`MonitorSettings`)."""

    environment: Literal["local", "test", "production"] = Field(
        "local",
        description="Deployment environment; `production` requires an API key of at least "
        "16 characters that is not a placeholder.",
    )
    data_dir: Path = Field(
        Path("data"),
        description="Root of all embedded state: offline data, Feast registry and SQLite "
        "stores, prediction log, MLflow store, reports.",
    )

    # --- feature store ---------------------------------------------------------------
    online_store: Literal["sqlite", "redis"] = Field(
        "sqlite", description="Feast online store: embedded `sqlite` or `redis`."
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis URL for the online store and streams (`redis://[:password@]host:port/db`).",
    )
    redis_mode: Literal["single", "cluster"] = Field(
        "single",
        description="`cluster` when FRAUDOPS_REDIS_URL names a node of a Redis Cluster: the "
        "client discovers the others, and each customer's real-time state lives in one hash "
        "slot.",
    )
    redis_key_prefix: str = Field(
        "fraudops",
        description="Prefix of FraudOps' own Redis keys (real-time customer state, streams).",
    )
    idempotency_ttl_seconds: float | None = Field(
        None,
        gt=0,
        description="How long a scored transaction's result is kept for retries of its "
        "transaction_id (default: the label delay).",
    )
    feast_project: str = Field("fraudops", description="Feast project name.")
    feature_service: str = Field(
        "fraud_model_v1", description="Feast FeatureService that lists the model inputs."
    )
    label_delay_days: int = Field(
        7, ge=0, description="Days until a fraud label is known (default label_timestamp)."
    )
    freshness_budgets: Annotated[dict[str, timedelta], NoDecode] = Field(
        default_factory=dict,
        description="How old a batch view's newest value may be before it is stale, per view "
        "(`terminal_daily=36h,other_view=2d`); default: the view's TTL. Stale features make "
        "/readyz fail, raise a monitor alert and mark responses degraded "
        "(docs/nightly-job.md).",
    )
    log_overlap_hours: float = Field(
        48.0,
        gt=0,
        description="The nightly job reads the prediction log from its last high-water mark "
        "(scoring time) minus this, so records written late (a spool replayed after a "
        "database outage) are still taken; ids already in the offline store are skipped.",
    )

    # --- offline side: DuckDB on one machine, or Spark (docs/spark.md) ---------------------
    offline_engine: Literal["duckdb", "spark"] = Field(
        "duckdb",
        description="What `fraudops features build` runs on: `duckdb` (this machine) or "
        "`spark` (PySpark, `uv sync --extra spark`; date-partitioned parquet under "
        "offline_uri). Both call the same feature functions and give the same tables.",
    )
    offline_store: Literal["duckdb", "spark"] = Field(
        "duckdb",
        description="Feast's offline store: `duckdb` reads the tables the DuckDB build writes "
        "under <data_dir>/offline/features/ (customer_activity and terminal_daily partitioned "
        "by day, as Spark writes them); `spark` (SparkSource) reads the Spark build's "
        "partitioned tables, for training sets and materialization.",
    )
    offline_uri: str | None = Field(
        None,
        description="Root of the offline data Spark reads and writes: transactions.parquet "
        "and features/<table>/. Any URI the Spark cluster can open (s3a://, abfss://, "
        "hdfs://, a local path); default <data_dir>/offline.",
    )
    spark_master: str = Field(
        "local[*]",
        description="Spark master URL (`local[2]`, `spark://host:7077`, `yarn`, `k8s://...`).",
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description="More Spark configuration, as JSON (FRAUDOPS_SPARK_CONF="
        '\'{"spark.executor.memory": "8g"}\'): credentials providers, executors, '
        "shuffle partitions. Applied after FraudOps' own defaults, so these win.",
    )
    offline_rows_per_part: int = Field(
        200_000,
        ge=1_000,
        description="Transactions per call of the feature functions in the offline build: "
        "both engines split the customers into parts of about this size by the same hash "
        "(so they give bit-identical features), and each part is built whole in memory.",
    )
    offline_rows_per_read: int = Field(
        1_000_000,
        ge=1,
        description="Transactions per point-in-time read of a training set "
        "(`get_historical_features`): the entity rows go to Feast in chunks of whole days "
        "of about this size, so memory holds one chunk's join, not the window's.",
    )

    # --- prediction log and MLflow -------------------------------------------------
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the prediction log; default SQLite under data_dir.",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI (SQLite file, PostgreSQL URL or an MLflow server); "
        "default SQLite under data_dir.",
    )
    mlflow_experiment: str = Field("fraud-detection", description="MLflow experiment name.")
    model_name: str = Field("fraud-detector", description="Registered MLflow model name.")

    # --- training windows (Handbook protocol) -----------------------------------------
    train_start: date | None = Field(
        None, description="First training day; default: chosen from the data."
    )
    train_days: int = Field(7, ge=1, description="Days of training data.")
    delay_days: int = Field(7, ge=0, description="Gap between training and test periods.")
    test_days: int = Field(7, ge=1, description="Days of test data.")
    seed: int = Field(42, description="Random seed for simulation and training.")
    promote_max_auc_drop: float = Field(
        0.005, ge=0, description="Promotion refuses a challenger whose ROC AUC is lower by more."
    )
    promote_max_ap_drop: float = Field(
        0.01,
        ge=0,
        description="Promotion refuses a challenger whose average precision is lower by more.",
    )
    promote_max_brier_rise: float = Field(
        0.001,
        ge=0,
        description="Promotion refuses a challenger whose Brier score is higher by more.",
    )
    promote_min_labelled_frauds: int = Field(
        50,
        ge=1,
        description="`fraudops promote --evidence live` waits until the transactions both "
        "models scored live hold at least this many labelled frauds (fewer: the comparison's "
        "confidence intervals are too wide to tell the models apart).",
    )

    # --- challenger on live traffic (model lifecycle) ------------------------------------
    shadow: bool = Field(
        False,
        description="Also score every transaction with the @challenger version, off the "
        "response path, and log its results beside the champion's (`shadow_predictions`); "
        "the answer stays the champion's. `fraudops compare` reads them.",
    )
    challenger_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of customers whose transactions the @challenger decides (A/B), "
        "sticky by a hash of customer_id; 0 (default): the champion decides all.",
    )

    # --- scoring service ----------------------------------------------------------------
    api_key: SecretStr | None = Field(
        None, description="When set, scoring and admin endpoints require `Bearer <key>`."
    )
    review_threshold: float | None = Field(
        None, ge=0, le=1, description="Override the model's review threshold."
    )
    block_threshold: float | None = Field(
        None, ge=0, le=1, description="Override the model's block threshold."
    )

    degraded_policy: Literal["score", "review"] = Field(
        "score",
        description="When the online store is unreachable: `score` on default features, or "
        "`review` (approve becomes review; block stays block). Responses say degraded=true.",
    )
    redis_timeout_seconds: float = Field(
        0.5,
        gt=0,
        description="Longest wait for the online store (connect, or a reply) while scoring; "
        "past it the request is scored in degraded mode.",
    )
    outage_retry_seconds: float = Field(
        1.0,
        gt=0,
        description="While the online store is down, how often a request tries it again "
        "(the others are scored in degraded mode at once).",
    )
    log_flush_seconds: float = Field(
        LOG_FLUSH_SECONDS,
        gt=0,
        le=60,
        description="How long the prediction log gathers records before writing them, in one "
        "COPY or INSERT. Short, the database's work comes in small, even slices, which kept "
        "the scorer's p99 down where PostgreSQL shares its machine (docs/benchmarks.md); "
        "longer, fewer transactions for a busy or distant database. Records wait in memory "
        "meanwhile, and go to the spool if the database is down.",
    )
    reload_interval_seconds: float = Field(
        15.0, gt=0, description="How often the scorer checks which version is @champion."
    )
    max_batch_size: int = Field(
        1000,
        ge=1,
        le=1000,
        description="Most transactions per /score_batch call (the API's limit is 1,000).",
    )
    max_body_bytes: int = Field(2_000_000, ge=1024, description="Largest accepted request body.")
    workers: int = Field(
        1,
        ge=1,
        description="BentoML worker processes of the scorer (`bentoml serve`). Each scores on "
        "its own event loop and claims its own prediction spool; workers, replicas and "
        "stream consumers share the real-time state exactly (docs/realtime-state.md).",
    )
    access_log: bool = Field(
        True,
        description="BentoML's access log: a line per HTTP request. Every scored transaction "
        "is in the prediction log anyway; off, the worker serves 9-16 % more requests per "
        "second at concurrency 16 (docs/benchmarks.md). Request metrics stay either way.",
    )
    trace_requests: bool = Field(
        False,
        description="Record an OpenTelemetry span for every /score and /score_batch request, "
        "as BentoML does by default. Off, those routes are left out of tracing (and their "
        "access-log lines carry no trace id), which halves the framework's CPU per request "
        "(docs/benchmarks.md); turn it on when BentoML's `tracing` exports spans.",
    )

    @field_validator("freshness_budgets", mode="before")
    @classmethod
    def _view_durations(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        budgets = {}
        for part in filter(None, (p.strip() for p in value.split(","))):
            view, sep, duration = part.partition("=")
            if not sep or not view.strip():
                raise ValueError(f"expected view=duration such as terminal_daily=36h, got {part!r}")
            budgets[view.strip()] = parse_duration(duration.strip())
        return budgets

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _no_placeholder_secrets_in_production(self) -> Settings:
        """In production the API needs a key, and one nobody can guess."""
        if self.environment != "production":
            return self
        key = self.api_key.get_secret_value() if self.api_key is not None else None
        problem = (
            "is not set: the scoring and admin endpoints would be open"
            if not key
            else "is a placeholder"
            if key.lower() in PLACEHOLDER_SECRETS
            else f"has {len(key)} characters, fewer than {MIN_PRODUCTION_KEY_LENGTH}"
            if len(key) < MIN_PRODUCTION_KEY_LENGTH
            else None
        )
        if problem:
            raise ValueError(
                f"FRAUDOPS_API_KEY {problem}; set a real secret in production (for example: "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return self

    # --- derived locations (one place decides the layout of data_dir) -----------------
    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def offline_dir(self) -> Path:
        """Offline store: ingested transactions and labels, computed feature tables."""
        return self.data_dir / "offline"

    @property
    def transactions_path(self) -> Path:
        return self.offline_dir / "transactions.parquet"

    @property
    def labels_path(self) -> Path:
        return self.offline_dir / "labels.parquet"

    @property
    def resolved_offline_uri(self) -> str:
        """Where Spark reads the transactions and writes the feature tables."""
        return (self.offline_uri or str(self.offline_dir)).rstrip("/")

    @property
    def spark_transactions_uri(self) -> str:
        return f"{self.resolved_offline_uri}/{self.transactions_path.name}"

    def spark_table_uri(self, name: str) -> str:
        """A feature table the Spark build writes, partitioned by day: a lake table."""
        return f"{self.resolved_offline_uri}/features/{name}"

    @property
    def feast_dir(self) -> Path:
        return self.data_dir / "feast"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def resolved_idempotency_ttl_seconds(self) -> float:
        return self.idempotency_ttl_seconds or self.label_delay_days * 86_400.0 or 86_400.0

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'predictions.db'}"

    @property
    def resolved_mlflow_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.data_dir / 'mlflow.db'}"

    @property
    def mlflow_artifact_location(self) -> str:
        return (self.data_dir / "mlartifacts").as_uri()


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``30s``, ``15m``, ``36h``, ``2d`` as a positive duration."""
    try:
        seconds = float(text[:-1]) * _UNITS[text[-1]]
    except (KeyError, ValueError, IndexError):
        seconds = 0
    if not seconds > 0:
        raise ValueError(f"expected a positive duration like 30s, 15m, 36h, 2d; got {text!r}")
    return timedelta(seconds=seconds)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
