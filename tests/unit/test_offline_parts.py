"""The offline build without Spark: the DuckDB build in parts gives the tables of one
in-memory build; the engine and offline store are chosen by the settings."""

from __future__ import annotations

import hashlib
import os

import duckdb
import numpy as np
import pandas as pd
import pytest

from fraudops.data.ingest import write_parquet_atomic
from fraudops.data.simulator import simulate
from fraudops.features.build import (
    build_feature_tables,
    build_from_offline_store,
    customer_parts_sql,
    part_count,
)


def test_the_part_of_an_id_is_the_documented_md5_hash() -> None:
    """The Spark build computes the same hash (tests/integration/test_spark.py checks it)."""
    ids = ["C000001", "C012345", "T000042", "é-unicode"]
    got = duckdb.sql(
        f"SELECT {customer_parts_sql('id', 7)} FROM (SELECT unnest(?) AS id)", params=[ids]
    ).fetchall()
    expected = [int(hashlib.md5(i.encode()).hexdigest()[:15], 16) % 7 for i in ids]
    assert [row[0] for row in got] == expected


def test_part_count_rounds_up() -> None:
    assert [part_count(n, 1000) for n in (1, 1000, 1001, 5500)] == [1, 1, 2, 6]


def test_a_build_in_parts_gives_the_tables_of_a_build_in_one(settings, monkeypatch) -> None:
    tx = simulate(customers=120, terminals=240, days=20, seed=4)
    write_parquet_atomic(tx, settings.transactions_path)
    whole = build_feature_tables(pd.read_parquet(settings.transactions_path), 7)
    monkeypatch.setattr(settings, "offline_rows_per_part", 1000)
    built = build_from_offline_store(settings)
    assert part_count(len(tx), 1000) > 3
    keys = {
        "customer_activity": ["transaction_id"],
        "customer_state": ["customer_id"],
        "terminal_daily": ["terminal_id", "event_timestamp"],
    }
    for name, key in keys.items():
        path, rows = built[name]
        parts = pd.read_parquet(path).sort_values(key).reset_index(drop=True)
        one = getattr(whole, name).sort_values(key).reset_index(drop=True)
        assert rows == len(one) == len(parts), name
        for column in one.columns:
            a, b = one[column], parts[column]
            if a.dtype.kind == "f":
                # running statistics are sums over a call's rows: last bits differ by part
                np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-7, err_msg=column)
            elif a.dtype == object and len(a) and not isinstance(a.iloc[0], str):
                assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)), column
            else:
                assert (a.astype(str) == b.astype(str)).all(), column


def test_no_transactions_is_said_plainly(settings) -> None:
    with pytest.raises(FileNotFoundError, match="fraudops ingest"):
        build_from_offline_store(settings)


def test_the_offline_store_is_feasts_own_chosen_by_the_settings(settings, monkeypatch) -> None:
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig

    from fraudops.core.settings import get_settings
    from fraudops.features.feast_store import FraudOpsOfflineStoreConfig, offline_source

    assert isinstance(FraudOpsOfflineStoreConfig(type="x"), DuckDBOfflineStoreConfig)
    assert offline_source("terminal_daily", "d").path.endswith("features/terminal_daily")
    pytest.importorskip("pyspark", reason="the Spark half needs `uv sync --extra spark`")
    monkeypatch.setenv("FRAUDOPS_OFFLINE_STORE", "spark")
    monkeypatch.setenv("FRAUDOPS_OFFLINE_URI", "s3a://lake/fraudops/")
    monkeypatch.setenv("FRAUDOPS_SPARK_MASTER", "spark://head:7077")
    monkeypatch.setenv("FRAUDOPS_SPARK_CONF", '{"spark.executor.memory": "8g"}')
    get_settings.cache_clear()
    config = FraudOpsOfflineStoreConfig()
    assert config.type == "spark"
    assert config.spark_conf["spark.master"] == "spark://head:7077"
    assert config.spark_conf["spark.executor.memory"] == "8g"
    assert config.spark_conf["spark.sql.session.timeZone"] == "UTC"
    source = offline_source("terminal_daily", "d")
    assert type(source).__name__ == "SparkSource"
    assert source.path == "s3a://lake/fraudops/features/terminal_daily"
    assert source.date_partition_column == "event_date"
    get_settings.cache_clear()


def test_spark_engine_without_pyspark_says_what_to_install(monkeypatch) -> None:
    """(Hides PySpark where it is installed.)"""
    import builtins

    from fraudops.core.settings import Settings
    from fraudops.features import spark_build

    real_import = builtins.__import__

    def no_pyspark(name, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name.startswith("pyspark"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyspark)
    monkeypatch.setattr(os, "environ", dict(os.environ))
    with pytest.raises(spark_build.SparkUnavailable, match="uv sync --extra spark"):
        spark_build.spark_session(Settings())


def test_without_java_the_spark_tests_are_told_what_to_install(monkeypatch) -> None:
    from fraudops.features import spark_build

    monkeypatch.setattr(spark_build.shutil, "which", lambda _: None)
    assert "Java 17 or later" in (spark_build.java_problem() or "")
