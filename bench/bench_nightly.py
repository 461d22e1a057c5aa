"""Benchmark: the nightly job (``fraudops nightly``) on one day of Handbook-size traffic.

    python bench/bench_nightly.py [--quick] [--out bench/results/nightly.json]

Set-up (not timed): the Handbook's simulation (5,000 customers, 10,000 terminals, 183
days); all days but the last ingested, features built, applied and materialized into a
throwaway ``redis-server``; the last day (about 10,000 transactions) written to the
prediction log in PostgreSQL (``FRAUDOPS_TEST_POSTGRES_URL`` or 127.0.0.1:5432, a database
of its own; SQLite if there is none) as the scorer writes it.

Timed: one run of :func:`fraudops.features.nightly.run_nightly` end to end (read the log, take the
new transactions into the offline store, build what changed, materialize it). Goal: under
30 s. Floors measured in the same run: reading and rewriting the offline transactions
table (I/O every run pays), and the full ``features build`` the job replaces.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

logger = logging.getLogger("bench_nightly")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "nightly.json"
GOAL_SECONDS = 30.0
FULL = {"customers": 5_000, "terminals": 10_000, "days": 183}
QUICK = {"customers": 500, "terminals": 1_000, "days": 40}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port).ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.RedisError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)


def postgres_database() -> tuple[str | None, str | None]:
    """A database of our own on the test PostgreSQL, or None."""
    import sqlalchemy as sa

    url = os.environ.get(
        "FRAUDOPS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    try:
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        name = f"fraudops_bench_nightly_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except sa.exc.OperationalError:
        return None, None
    return sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False), name


def drop_database(name: str) -> None:
    import sqlalchemy as sa

    url = os.environ.get(
        "FRAUDOPS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def log_day(url: str, tx: pd.DataFrame) -> None:
    """The day's transactions as the scorer logs them (features and reasons included)."""
    from fraudops.core.db import create_db_engine, predictions, upgrade
    from fraudops.serving.prediction_log import insert_ignoring_duplicates

    upgrade(url)
    engine = create_db_engine(url)
    scored_at = datetime.now(UTC)
    features = {f"feature_{i}": 0.5 for i in range(32)}
    rows = [
        {
            "prediction_id": uuid.uuid4().hex,
            "transaction_id": tid,
            "event_timestamp": ts,
            "scored_at": scored_at,
            "customer_id": cid,
            "terminal_id": term,
            "amount": float(amount),
            "features": features,
            "fraud_probability": 0.01,
            "decision": "approve",
            "reasons": [],
            "model_version": "1",
            "latency_ms": 1.0,
            "degraded": False,
            "source": "http",
        }
        for tid, ts, cid, term, amount in zip(
            tx["transaction_id"],
            [t.to_pydatetime() for t in tx["timestamp"]],
            tx["customer_id"],
            tx["terminal_id"],
            tx["amount"],
            strict=True,
        )
    ]
    for start in range(0, len(rows), 1000):
        insert_ignoring_duplicates(engine, predictions, rows[start : start + 1000])
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small population")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    sizes = QUICK if args.quick else FULL
    redis_proc, redis_url = start_redis()
    log_url, database = postgres_database()
    tmp = Path(tempfile.mkdtemp(prefix="bench_nightly_"))
    try:
        os.environ.update(
            {
                "FRAUDOPS_DATA_DIR": str(tmp / "data"),
                "FRAUDOPS_ONLINE_STORE": "redis",
                "FRAUDOPS_REDIS_URL": redis_url,
            }
        )
        if log_url:
            os.environ["FRAUDOPS_DATABASE_URL"] = log_url
        from fraudops.adapters.feast import fast_materialize
        from fraudops.core.settings import get_settings
        from fraudops.data.ingest import write_parquet_atomic
        from fraudops.data.simulator import simulate
        from fraudops.features.build import build_feature_tables, write_feature_tables
        from fraudops.features.feast_store import apply_definitions, get_store
        from fraudops.features.nightly import read_offline, run_nightly

        get_settings.cache_clear()
        settings = get_settings()
        tx = simulate(**sizes, seed=0)
        last_day = tx["timestamp"].max().floor("D")
        history = tx[tx["timestamp"] < last_day].reset_index(drop=True)
        day = tx[tx["timestamp"] >= last_day].reset_index(drop=True)
        write_parquet_atomic(history, settings.transactions_path)
        started = time.perf_counter()
        tables = build_feature_tables(history, settings.label_delay_days)
        full_build = time.perf_counter() - started
        write_feature_tables(tables, settings.offline_dir / "features")
        full_build_written = time.perf_counter() - started
        store = get_store()
        apply_definitions(store)
        fast_materialize(store, skip_older=False)
        log_day(settings.resolved_database_url, day)

        started = time.perf_counter()
        offline = read_offline(settings.transactions_path)  # as fast as the job reads it
        write_parquet_atomic(offline, tmp / "floor.parquet")
        floor_io = time.perf_counter() - started

        started = time.perf_counter()
        report = run_nightly(settings)
        seconds = time.perf_counter() - started
        assert report.taken == len(day), (report.taken, len(day))
        result = {
            "benchmark": "nightly",
            "quick": args.quick,
            "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "population": sizes,
            "history_transactions": len(history),
            "day_transactions": len(day),
            "prediction_log": "postgresql" if log_url else "sqlite",
            "online_store": "redis",
            "nightly_seconds": round(seconds, 2),
            "nightly_steps_seconds": report.seconds,
            "terminal_daily_rows_rebuilt": report.built["terminal_rows"],
            "floor_read_and_write_transactions_seconds": round(floor_io, 2),
            "reference_full_features_build_seconds": round(full_build, 2),
            "reference_full_features_build_and_write_seconds": round(full_build_written, 2),
            "goal_seconds": GOAL_SECONDS,
            "within_goal": seconds < GOAL_SECONDS,
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            },
        }
        print(json.dumps(result, indent=2))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        if database:
            drop_database(database)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
