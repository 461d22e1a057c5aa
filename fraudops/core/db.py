"""The FraudOps database (prediction log, labels, monitoring): SQLAlchemy tables, engine
set-up and Alembic migrations. PostgreSQL in production, SQLite by default.

    fraudops db upgrade        # apply migrations (services also do it at start-up)
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)
metadata = sa.MetaData()

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("prediction_id", sa.String(36), primary_key=True),
    sa.Column("transaction_id", sa.String(128), nullable=False, index=True),
    sa.Column("event_timestamp", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("customer_id", sa.String(128), nullable=False, index=True),
    sa.Column("terminal_id", sa.String(128), nullable=False),
    sa.Column("amount", sa.Float, nullable=False),
    sa.Column("features", sa.JSON, nullable=False),
    sa.Column("fraud_probability", sa.Float, nullable=False),
    sa.Column("decision", sa.String(8), nullable=False, index=True),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False, index=True),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("degraded", sa.Boolean, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    # the order of commits to the customer's real-time state (migration 0003): offline, ties
    # of equal timestamps are ordered by it; null when scored in degraded mode
    sa.Column("commit_seq", sa.BigInteger, nullable=True),
    # request fields the contract does not use, as received (migration 0005)
    sa.Column("extra", sa.JSON, nullable=True),
)

# The @challenger's results on the same transactions, scored in shadow (migration 0004): a
# row per champion prediction and challenger version, linked by the champion's
# prediction_id (the key: a replayed spool cannot duplicate a row) and its transaction_id.
shadow_predictions = sa.Table(
    "shadow_predictions",
    metadata,
    sa.Column("prediction_id", sa.String(36), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("transaction_id", sa.String(128), nullable=False, index=True),
    sa.Column("fraud_probability", sa.Float, nullable=False),
    sa.Column("decision", sa.String(8), nullable=False),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False, index=True),
)


def create_db_engine(url: str) -> Engine:
    """An engine that copes with restarts (pre-ping) and, for SQLite, with a reader (the
    dashboard) next to the writer (WAL, busy timeout)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30}, json_serializer=json_text)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    connect_args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    return sa.create_engine(
        url, pool_pre_ping=True, connect_args=connect_args, json_serializer=json_text
    )


def json_text(value: object) -> str:
    """JSON columns (features, reasons) with msgspec: the prediction log writes two per
    scored transaction, and the standard library's encoder was a third of its CPU."""
    return msgspec.json.encode(value).decode()


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Bring the database to the latest schema (idempotent)."""
    from alembic import command

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")


# --- labels and monitoring (migration 0002) -------------------------------------------------
labels = sa.Table(
    "labels",
    metadata,
    sa.Column("transaction_id", sa.String(128), primary_key=True),
    sa.Column("is_fraud", sa.SmallInteger, nullable=False),
    sa.Column("label_timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),  # "file:<name>" or "analyst"
    sa.Column("labelled_by", sa.String(128), nullable=False),
    sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=False),
)

monitor_runs = sa.Table(
    "monitor_runs",
    metadata,
    sa.Column("run_id", sa.String(36), primary_key=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("window_end", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False, index=True),
    sa.Column("reference_run_id", sa.String(64), nullable=False),
    # all predictions in the window, and those of the monitored version
    sa.Column("window_predictions", sa.Integer, nullable=False),
    sa.Column("predictions", sa.Integer, nullable=False),
    sa.Column("labelled", sa.Integer, nullable=False),
    sa.Column("frauds", sa.Integer, nullable=False),
    sa.Column("approve_share", sa.Float),
    sa.Column("review_share", sa.Float),
    sa.Column("block_share", sa.Float),
    sa.Column("latency_p50_ms", sa.Float),
    sa.Column("latency_p95_ms", sa.Float),
    sa.Column("latency_p99_ms", sa.Float),
    sa.Column("degraded_share", sa.Float),
    sa.Column("features_checked", sa.Integer, nullable=False),
    sa.Column("drifted_features", sa.Integer),
    sa.Column("drift_share", sa.Float),
    sa.Column("score_drift", sa.Float),
    sa.Column("decision_drift", sa.Float),
    sa.Column("roc_auc", sa.Float),
    sa.Column("average_precision", sa.Float),
    sa.Column("precision_at_block", sa.Float),
    sa.Column("recall_at_block", sa.Float),
    sa.Column("drift_report_path", sa.String(1024)),
    sa.Column("quality_report_path", sa.String(1024)),
    sa.Column("alerts", sa.Integer, nullable=False),
)

feature_drift = sa.Table(
    "feature_drift",
    metadata,
    sa.Column(
        "run_id",
        sa.String(36),
        sa.ForeignKey("monitor_runs.run_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("feature", sa.String(128), primary_key=True),
    sa.Column("window_end", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("drifted", sa.Boolean, nullable=False),
    sa.Column("counted", sa.Boolean, nullable=False),  # part of the drift share alert
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_version", sa.String(32)),
    sa.Column("run_id", sa.String(36), index=True),
    sa.Column("acknowledged", sa.Boolean, nullable=False, index=True, server_default=sa.false()),
    sa.Column("acknowledged_by", sa.String(128)),
    sa.Column("acknowledged_at", sa.DateTime(timezone=True)),
)
