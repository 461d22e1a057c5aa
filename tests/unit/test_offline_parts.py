"""The DuckDB build in parts: the same tables as one in-memory build, one part at a time."""

from __future__ import annotations

import hashlib

import duckdb
import numpy as np
import pandas as pd
import pytest

from fraudops.feature_build import (
    build_feature_tables,
    build_from_offline_store,
    customer_parts_sql,
    part_count,
)
from fraudops.ingest import write_parquet_atomic
from fraudops.simulator import simulate


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
    keys = {"customer_activity": ["transaction_id"], "customer_state": ["customer_id"],
            "terminal_daily": ["terminal_id", "event_timestamp"]}  # fmt: skip
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
