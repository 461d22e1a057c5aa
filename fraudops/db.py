"""The FraudOps database (prediction log, labels, monitoring): SQLAlchemy tables, engine
set-up and Alembic migrations. PostgreSQL in production, SQLite by default.

    fraudops db upgrade        # apply migrations (services also do it at start-up)
"""

from __future__ import annotations

import logging
from pathlib import Path

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
)


def create_db_engine(url: str) -> Engine:
    """An engine that copes with restarts (pre-ping) and, for SQLite, with a reader (the
    dashboard) next to the writer (WAL, busy timeout)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    connect_args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)


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
