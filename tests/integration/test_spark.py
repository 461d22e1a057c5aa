"""Parity of the offline side on Spark with the single-machine one (issue #23).

The same 60 simulated days (2,000 customers) built with DuckDB and with Spark (local[2]):
every feature of every transaction equal, the training set of one window equal row for row
through Feast's DuckDB and Spark offline stores, and models trained from each scoring a test
week identically; materialization from the Spark offline store.

Needs PySpark (``uv sync --extra spark``, which ``make test`` does) and Java 17 or later:
outside CI the tests skip saying what to install; with ``CI=true`` they fail.

    .venv/bin/pytest tests/integration/test_spark.py -m spark
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fraudops.core import contract as c
from fraudops.core.tables import DAY_PARTITIONED, read_frame, table_path
from fraudops.data.ingest import write_parquet_atomic
from fraudops.data.simulator import simulate
from fraudops.features.build import STATE_FIELDS, build_from_offline_store
from tests.conftest import service_missing
from tests.integration.conftest import environment

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow(80)]

CUSTOMERS, TERMINALS, DAYS = 2_000, 4_000, 60
ROWS_PER_PART = "80000"  # three parts of customers: the split is exercised, not one call
TRAIN_DAYS, DELAY_DAYS, TEST_DAYS = 7, 7, 7
SPARK_ENV = {
    "FRAUDOPS_SPARK_MASTER": "local[2]",
    "FRAUDOPS_SPARK_CONF": '{"spark.sql.shuffle.partitions": "2", "spark.ui.enabled": "false", '
    '"spark.driver.memory": "2g", "spark.sql.adaptive.coalescePartitions.enabled": "true"}',
}
KEYS = {
    "customer_activity": [c.TRANSACTION_ID],
    "customer_state": [c.CUSTOMER_ID],
    "terminal_daily": [c.TERMINAL_ID, "event_timestamp"],
}


@pytest.fixture(scope="session")
def spark_session_for_tests() -> Iterator[object]:
    """One SparkSession (local[2], 2 shuffle partitions) for every Spark test."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        service_missing("spark", "PySpark is not installed: run `uv sync --extra spark`")
    from fraudops.features import spark_build

    problem = spark_build.java_problem()
    if problem:
        service_missing("spark", f"{problem} (Debian/Ubuntu: apt install openjdk-17-jre-headless)")
    with environment(SPARK_ENV):
        from fraudops.core.settings import get_settings

        session = spark_build.spark_session(get_settings())
    yield session
    session.stop()
    # py4j logs its connections' closing at exit, after pytest has closed the streams
    logging.getLogger("py4j").setLevel(logging.WARNING)


@dataclass
class Built:
    duckdb_env: dict[str, str]
    spark_env: dict[str, str]
    tx: pd.DataFrame


@pytest.fixture(scope="module")
def built(spark_session_for_tests, tmp_path_factory) -> Built:
    """The same transactions in two data directories, one built with each engine (Spark's
    through the CLI: `fraudops features build --engine spark`)."""
    from fraudops.cli.app import app
    from fraudops.core.settings import get_settings

    root = tmp_path_factory.mktemp("spark_parity")
    tx = simulate(customers=CUSTOMERS, terminals=TERMINALS, days=DAYS, seed=11)
    common = {**SPARK_ENV, "FRAUDOPS_OFFLINE_ROWS_PER_PART": ROWS_PER_PART}
    duckdb_env = {**common, "FRAUDOPS_DATA_DIR": str(root / "duckdb")}
    spark_env = {
        **common,
        "FRAUDOPS_DATA_DIR": str(root / "spark"),
        "FRAUDOPS_OFFLINE_STORE": "spark",
    }
    with environment(duckdb_env):
        settings = get_settings()
        write_parquet_atomic(tx, settings.transactions_path)
        build_from_offline_store(settings)
    with environment(spark_env):
        settings = get_settings()
        settings.offline_dir.mkdir(parents=True)
        shutil.copy(
            Path(duckdb_env["FRAUDOPS_DATA_DIR"]) / "offline" / "transactions.parquet",
            settings.transactions_path,
        )
        result = CliRunner().invoke(app, ["features", "build", "--engine", "spark"])
        assert result.exit_code == 0, result.output
    return Built(duckdb_env, spark_env, tx)


def _tables(env: dict[str, str], spark) -> dict[str, pd.DataFrame]:
    from fraudops.core.settings import get_settings
    from fraudops.features.spark_build import read_table

    with environment(env):
        settings = get_settings()
        out = {}
        for name, key in KEYS.items():
            if settings.offline_store == "spark":
                frame = read_table(spark, settings.spark_table_uri(name))
            else:
                frame = read_frame(table_path(settings.offline_dir / "features", name))
            out[name] = frame.sort_values(key).reset_index(drop=True)
    return out


def test_every_feature_of_every_transaction_is_equal(built: Built, spark_session_for_tests):
    duck = _tables(built.duckdb_env, spark_session_for_tests)
    spark = _tables(built.spark_env, spark_session_for_tests)
    assert len(duck["customer_activity"]) == len(built.tx)
    assert len(duck["customer_state"]) == built.tx[c.CUSTOMER_ID].nunique()
    for name, frame in duck.items():
        other = spark[name]
        assert sorted(other.columns) == sorted(frame.columns), name
        assert len(other) == len(frame), name
        for column in frame.columns:
            a, b = frame[column], other[column]
            if a.dtype.kind == "f":
                np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-9, err_msg=f"{name}.{column}")
            elif column in STATE_FIELDS and a.dtype == object:
                assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)), column
            elif a.dtype.kind == "M":
                assert (a.dt.tz_convert("UTC") == b.dt.tz_convert("UTC")).all(), column
            else:
                assert (a.to_numpy() == b.to_numpy()).all(), f"{name}.{column}"


def test_spark_tables_are_partitioned_by_day(built: Built):
    root = Path(built.spark_env["FRAUDOPS_DATA_DIR"]) / "offline" / "features"
    days = sorted(p.name for p in (root / "customer_activity").glob("event_date=*"))
    assert len(days) == DAYS
    assert days[0] == "event_date=2026-04-01"


def test_both_engines_write_the_same_day_partitions(built: Built, spark_session_for_tests):
    """The DuckDB build's day-partitioned tables are laid out as Spark's: the same day
    directories, and Spark reads the DuckDB build's as it reads its own."""
    from fraudops.features.spark_build import read_table

    roots = [
        Path(env["FRAUDOPS_DATA_DIR"]) / "offline" / "features"
        for env in (built.duckdb_env, built.spark_env)
    ]
    for name in DAY_PARTITIONED:
        duck, spark = (sorted(p.name for p in (root / name).glob("event_date=*")) for root in roots)
        assert duck == spark and len(duck) >= DAYS, name
    by_spark = read_table(spark_session_for_tests, str(roots[0] / "customer_activity"))
    own = read_frame(roots[0] / "customer_activity")
    assert sorted(by_spark.columns) == sorted(own.columns)
    assert sorted(by_spark[c.TRANSACTION_ID]) == sorted(own[c.TRANSACTION_ID])


def test_the_part_hash_is_the_same_in_spark(spark_session_for_tests):
    import hashlib

    from fraudops.features.spark_build import part_column

    ids = ["C000001", "C012345", "T000042", "é-unicode"]
    frame = spark_session_for_tests.createDataFrame([(i,) for i in ids], "id string")
    got = [row[0] for row in frame.select(part_column("id", 7)).collect()]
    assert got == [int(hashlib.md5(i.encode()).hexdigest()[:15], 16) % 7 for i in ids]


def _training_set(env: dict[str, str], tx: pd.DataFrame) -> tuple[pd.DataFrame, object]:
    from fraudops.features.feast_store import apply_definitions, feature_service, get_store
    from fraudops.features.offline import offline_features
    from fraudops.model.training import plan_windows

    windows = plan_windows(
        tx, tx[c.TIMESTAMP].min().date() + timedelta(days=30), TRAIN_DAYS, DELAY_DAYS, TEST_DAYS
    )
    window_tx = tx[(tx[c.TIMESTAMP] >= windows.train_start) & (tx[c.TIMESTAMP] < windows.test_end)]
    with environment(env):
        store = get_store()
        apply_definitions(store)
        frame = offline_features(store, feature_service(store), window_tx)
    return frame, windows


def test_training_sets_are_equal_and_models_score_the_test_week_alike(built: Built):
    from fraudops.model.training import fit_model, split

    duck, windows = _training_set(built.duckdb_env, built.tx)
    spark, _ = _training_set(built.spark_env, built.tx)
    pd.testing.assert_frame_equal(spark, duck, check_exact=True)

    names = [n for n in duck.columns if n not in built.tx.columns]
    assert len(names) == 32
    scores = []
    for frame in (duck, spark):
        parts = split(frame, windows)
        model, _ = fit_model(parts["fit"], parts["valid"], names, "fraud_model_v1", seed=3)
        scores.append(model.predict_proba(parts["test"][names].to_numpy()))
    assert len(scores[0]) > 10_000
    np.testing.assert_array_equal(scores[1], scores[0])


def test_training_plans_and_reads_its_window_on_spark_as_from_the_local_file(
    built: Built,
) -> None:
    """With the Spark store, `fraudops train` plans its windows from an aggregate and reads
    its window's labelled transactions with Spark, at <offline_uri>: the same windows and
    rows as from the local file with DuckDB and pyarrow."""
    from fraudops.core.settings import get_settings
    from fraudops.model.training import labelled_history, plan_windows, read_labelled

    now = built.tx[c.TIMESTAMP].max() - timedelta(days=5)  # the last labels still to come
    got = []
    for env in (built.duckdb_env, built.spark_env):
        with environment(env):
            settings = get_settings()
            history = labelled_history(settings, now)
            windows = plan_windows(history, None, TRAIN_DAYS, DELAY_DAYS, TEST_DAYS, now)
            window = read_labelled(settings, windows.train_start, windows.test_end)
            got.append((history, windows, window))
    (duck_history, duck_windows, duck_window), (history, windows, window) = got
    assert history == duck_history and duck_history.first_pending is not None
    assert windows == duck_windows
    pd.testing.assert_frame_equal(window, duck_window)
    assert len(window) > 10_000


def test_materialize_from_the_spark_offline_store(built: Built):
    """Feast's materialization reads the Spark tables; the online rows equal DuckDB's."""
    from fraudops.features.feast_store import get_store

    end = built.tx[c.TIMESTAMP].max().floor("D") + timedelta(days=1, seconds=1)
    start = built.tx[c.TIMESTAMP].min() - timedelta(days=1)
    terminals = sorted(built.tx[c.TERMINAL_ID].unique())[:50]
    rows = {}
    for env in (built.duckdb_env, built.spark_env):
        with environment(env):
            store = get_store()  # applied by the training-set test, or now
            if not store.list_feature_views():
                from fraudops.features.feast_store import apply_definitions

                apply_definitions(store)
            store.materialize(start_date=start, end_date=end, feature_views=["terminal_daily"])
            rows[env["FRAUDOPS_DATA_DIR"]] = store.get_online_features(
                features=[
                    "terminal_daily:terminal_risk_28d",
                    "terminal_daily:terminal_tx_count_7d",
                ],
                entity_rows=[{c.TERMINAL_ID: t} for t in terminals],
            ).to_df()
    duck, spark = rows.values()
    assert duck["terminal_tx_count_7d"].notna().all()
    pd.testing.assert_frame_equal(spark, duck)


def test_the_freshness_marker_comes_from_the_spark_table(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After materializing, `fraudops materialize` records the newest terminal_daily row at
    or before its end (the marker readiness reads with Redis): from the Spark build's
    day-partitioned table as from the DuckDB build's file."""
    from fraudops.core.settings import get_settings
    from fraudops.features import freshness
    from fraudops.features.feast_store import apply_definitions, get_store
    from fraudops.features.materialize import record_newest_rows

    recorded: list[dict[str, object]] = []
    monkeypatch.setattr(
        freshness, "record_materialized", lambda _, newest: recorded.append(dict(newest))
    )
    end = built.tx[c.TIMESTAMP].max().floor("D") - timedelta(days=3, hours=5)
    for env in (built.duckdb_env, built.spark_env):
        with environment(env):
            store = get_store()
            if not store.list_feature_views():
                apply_definitions(store)
            record_newest_rows(get_settings(), store, end.to_pydatetime())
    newest = end.floor("D").to_pydatetime()  # terminal_daily has a row per day start
    assert recorded == [{"terminal_daily": newest}, {"terminal_daily": newest}]


def test_the_real_time_state_store_is_seeded_from_the_spark_table(built: Built):
    """`fraudops materialize` seeds the customers' states (SQLite state store here) from
    the Spark build's customer_state table as from DuckDB's."""
    import sqlite3

    from fraudops.core.settings import get_settings
    from fraudops.features.materialize import seed_customer_states

    tables = []
    for env in (built.duckdb_env, built.spark_env):
        with environment(env):
            settings = get_settings()
            assert seed_customer_states(settings) == built.tx[c.CUSTOMER_ID].nunique()
            with sqlite3.connect(settings.data_dir / "online" / "state.db") as db:
                tables.append(db.execute("SELECT * FROM customer_state ORDER BY 1").fetchall())
    assert tables[1] == tables[0]
