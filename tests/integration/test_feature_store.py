"""The Feast repository against real online stores: apply, materialize, point-in-time
training data without leakage, and online features equal to offline ones (the skew test)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from fraudops.core import contract as c
from fraudops.core.settings import Settings, get_settings
from fraudops.data.simulator import simulate
from fraudops.features.build import build_feature_tables, write_feature_tables
from fraudops.features.feast_store import apply_definitions, feature_service, get_store
from fraudops.features.materialize import seed_customer_states
from fraudops.features.offline import offline_features
from fraudops.serving.online import OnlineFeatures

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    return simulate(customers=120, terminals=240, days=21, seed=11)


def build(settings: Settings, tx: pd.DataFrame) -> None:
    tables = build_feature_tables(tx, settings.label_delay_days)
    write_feature_tables(tables, settings.offline_dir / "features")


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
def feature_settings(request, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    if request.param == "redis":
        monkeypatch.setenv("FRAUDOPS_ONLINE_STORE", "redis")
        monkeypatch.setenv("FRAUDOPS_REDIS_URL", request.getfixturevalue("redis_url"))
    if request.param == "redis-cluster":
        from redis.cluster import RedisCluster

        url = request.getfixturevalue("redis_cluster").url
        RedisCluster.from_url(url).flushall(target_nodes="primaries")
        monkeypatch.setenv("FRAUDOPS_ONLINE_STORE", "redis")
        monkeypatch.setenv("FRAUDOPS_REDIS_MODE", "cluster")
        monkeypatch.setenv("FRAUDOPS_REDIS_URL", url)
    get_settings.cache_clear()
    return get_settings()


@pytest.mark.parametrize("batch", [1, 25], ids=["one-by-one", "batches"])
def test_online_features_equal_offline_point_in_time_features(
    request, feature_settings: Settings, transactions: pd.DataFrame, batch: int
) -> None:
    """Replay the last day through the online path and compare, transaction by transaction:
    one at a time (the scorer's single-request path) and in batches of consecutive
    transactions (coalesced requests, /score_batch, the stream)."""
    replay_day = transactions[c.TIMESTAMP].max().floor("D")
    history = transactions[transactions[c.TIMESTAMP] < replay_day]
    day = transactions[transactions[c.TIMESTAMP] >= replay_day]
    assert len(day) > 100

    # What the batch knew at the start of the day, materialized as a scheduler would.
    build(feature_settings, history)
    store = get_store()
    apply_definitions(store)
    store.materialize(
        start_date=history[c.TIMESTAMP].min() - timedelta(days=1),
        end_date=replay_day.to_pydatetime(),
    )
    seeded = seed_customer_states(feature_settings)
    assert seeded == history[c.CUSTOMER_ID].nunique()
    online = OnlineFeatures(store, feature_service(store), feature_settings)
    seen = []
    for i in range(0, len(day), batch):  # in time order
        scored = online.compute(day.iloc[i : i + batch])
        assert len(scored.rows) == len(day.iloc[i : i + batch])  # every one committed now
        seen.extend(scored.matrix)
    online_values = pd.DataFrame(seen, columns=online.names)

    # Offline: the full history, read through the same feature service.
    build(feature_settings, transactions)
    store = get_store()
    offline = offline_features(store, feature_service(store), day)
    mismatches = {
        name: int((~np.isclose(online_values[name], offline[name], rtol=1e-6, atol=1e-6)).sum())
        for name in online.names
    }
    assert not any(mismatches.values()), mismatches
    # and the comparison is not vacuous: real-time and batch features vary over the day
    assert online_values["customer_tx_count_1d"].nunique() > 3
    assert online_values["terminal_tx_count_7d"].nunique() > 3


def test_a_label_known_later_does_not_leak(settings: Settings) -> None:
    day0 = pd.Timestamp("2026-03-02", tz="UTC")
    rows = []
    for d in range(25):  # one legitimate transaction a day at terminal T
        rows.append(
            (
                f"ok{d}",
                day0 + pd.Timedelta(days=d, hours=12),
                "c1",
                "T",
                10.0,
                0,
                day0 + pd.Timedelta(days=d + 7, hours=12),
            )
        )
    # fraud on day 0 whose chargeback arrives only on day 20
    rows.append(
        (
            "fraud",
            day0 + pd.Timedelta(hours=9),
            "c2",
            "T",
            99.0,
            1,
            day0 + pd.Timedelta(days=20, hours=1),
        )
    )
    tx = pd.DataFrame(rows, columns=[*c.TRANSACTION_COLUMNS, *c.LABEL_COLUMNS])
    build(settings, tx)
    store = get_store()
    apply_definitions(store)
    features = offline_features(store, feature_service(store), tx).set_index(c.TRANSACTION_ID)
    risk = features["terminal_risk_28d"]
    # before day 21's start the fraud label is unknown: no risk, though the fraud happened
    assert (risk[[f"ok{d}" for d in range(1, 21)]] == 0).all()
    # from then on it is known (label at day 20 01:00 counts from day 21 00:00)
    assert (risk[[f"ok{d}" for d in range(21, 25)]] > 0).all()


def test_a_training_set_read_in_chunks_of_days_equals_one_read(
    settings: Settings, transactions: pd.DataFrame
) -> None:
    """``offline_features`` reads in chunks of whole days (FRAUDOPS_OFFLINE_ROWS_PER_READ)
    and gives the rows back in the caller's order, the features unchanged."""
    from fraudops.features.offline import day_chunks

    build(settings, transactions)
    store = get_store()
    apply_definitions(store)
    service = feature_service(store)
    rows = transactions.sample(frac=1, random_state=5)  # any order in, the same order out
    per_read = len(rows) // 5
    assert len(day_chunks(rows[c.TIMESTAMP], per_read)) >= 4
    whole = offline_features(store, service, rows, rows_per_read=len(rows))
    chunked = offline_features(store, service, rows, rows_per_read=per_read)
    pd.testing.assert_frame_equal(chunked, whole, check_exact=True)
    pd.testing.assert_frame_equal(whole[rows.columns], rows.reset_index(drop=True))
    assert whole["terminal_tx_count_7d"].nunique() > 3  # not vacuous


def test_feast_cli_and_fraudops_see_the_same_configuration(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, redis_url: str, transactions: pd.DataFrame
) -> None:
    """The plain `feast -c feature_repo` CLI and `fraudops` read the same FRAUDOPS_* settings."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import redis
    from typer.testing import CliRunner

    from fraudops.cli.app import app
    from fraudops.data.ingest import write_parquet_atomic

    monkeypatch.setenv("FRAUDOPS_ONLINE_STORE", "redis")
    monkeypatch.setenv("FRAUDOPS_REDIS_URL", redis_url)
    get_settings.cache_clear()
    write_parquet_atomic(transactions, get_settings().transactions_path)
    runner = CliRunner()
    for args in (["features", "build"], ["features", "apply"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    feast = Path(sys.executable).with_name("feast")
    repo = Path(__file__).resolve().parents[2] / "feature_repo"
    env = dict(os.environ)
    listed = subprocess.run(
        [str(feast), "-c", str(repo), "feature-views", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert "customer_state" in listed.stdout and "terminal_daily" in listed.stdout
    # fraudops' first materialization starts at the beginning of the data (Feast's first
    # incremental run would look back one TTL from now); the feast CLI continues from it
    stamp = "%Y-%m-%dT%H:%M:%S"
    middle = (transactions[c.TIMESTAMP].max() - pd.Timedelta(days=3)).strftime(stamp)
    result = runner.invoke(app, ["materialize", "--end", middle])
    assert result.exit_code == 0, result.output
    client = redis.Redis.from_url(redis_url)
    assert client.dbsize() >= transactions[c.TERMINAL_ID].nunique()  # where fraudops reads
    end = (transactions[c.TIMESTAMP].max() + pd.Timedelta(days=1)).strftime(stamp)
    done = subprocess.run(
        [str(feast), "-c", str(repo), "materialize-incremental", end],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert middle.replace("T", " ") in done.stdout  # it took over where fraudops stopped
    result = runner.invoke(app, ["materialize", "--end", end])
    assert result.exit_code == 0, result.output


def test_materialize_schedule_runs_repeatedly_and_stops_cleanly(
    settings: Settings, transactions: pd.DataFrame, tmp_path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from fraudops.data.ingest import write_parquet_atomic

    write_parquet_atomic(transactions, settings.transactions_path)
    build(settings, transactions)
    apply_definitions(get_store())
    fraudops = Path(sys.executable).with_name("fraudops")
    log = tmp_path / "schedule.log"
    with log.open("w") as out:
        command = [str(fraudops), "materialize", "--every", "2s"]
        proc = subprocess.Popen(command, env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while log.read_text().count("materialized up to") < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    text = log.read_text()
    assert text.count("materialized up to") >= 2, text
    assert "scheduler stopped" in text
