"""The nightly job's offline half (fraudops.features.nightly) against a SQLite prediction log:
scored traffic becomes history once, labels join it whenever they arrive, and the
incremental build gives the tables a full `features build` gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fraudops.core import contract as c
from fraudops.core.db import create_db_engine, predictions, upgrade
from fraudops.core.settings import Settings
from fraudops.core.tables import DAY_PARTITIONED, read_frame, table_path
from fraudops.data.labels import record_labels
from fraudops.data.simulator import simulate
from fraudops.features.build import build_feature_tables, write_feature_tables
from fraudops.features.nightly import Watermarks, incremental_build, take_from_log
from fraudops.serving.prediction_log import insert_ignoring_duplicates

SPLIT = pd.Timestamp("2026-04-25", tz="UTC")


@pytest.fixture(scope="module")
def simulated() -> pd.DataFrame:
    return simulate(customers=60, terminals=120, days=30, seed=3)


def log_scored(engine: sa.Engine, tx: pd.DataFrame, scored_at: datetime, suffix: str = "") -> None:
    """Records as the scorer writes them (only the columns the job reads matter)."""
    rows = [
        {
            "prediction_id": f"{tid}{suffix}",
            "transaction_id": tid,
            "event_timestamp": ts,
            "scored_at": scored_at,
            "customer_id": cid,
            "terminal_id": term,
            "amount": amount,
            "features": {},
            "fraud_probability": 0.1,
            "decision": "approve",
            "reasons": [],
            "model_version": "1",
            "latency_ms": 1.0,
            "degraded": False,
            "source": "http",
        }
        for tid, ts, cid, term, amount in zip(
            tx[c.TRANSACTION_ID],
            [t.to_pydatetime() for t in tx[c.TIMESTAMP]],
            tx[c.CUSTOMER_ID],
            tx[c.TERMINAL_ID],
            tx[c.AMOUNT],
            strict=True,
        )
    ]
    insert_ignoring_duplicates(engine, predictions, rows)


def history_and_log(settings: Settings, simulated: pd.DataFrame):  # type: ignore[no-untyped-def]
    history = simulated[simulated[c.TIMESTAMP] < SPLIT].reset_index(drop=True)
    live = simulated[simulated[c.TIMESTAMP] >= SPLIT].reset_index(drop=True)
    directory = settings.offline_dir / "features"
    write_feature_tables(build_feature_tables(history, settings.label_delay_days), directory)
    url = settings.resolved_database_url
    upgrade(url)
    return history, live, create_db_engine(url), directory


def test_logged_transactions_are_taken_once_with_their_labels(
    settings: Settings, simulated: pd.DataFrame
) -> None:
    history, live, engine, _ = history_and_log(settings, simulated)
    day1 = live[live[c.TIMESTAMP] < SPLIT + pd.Timedelta(days=1)]
    log_scored(engine, day1, datetime(2026, 12, 1, tzinfo=UTC))
    log_scored(engine, day1.head(5), datetime(2026, 12, 1, 1, tzinfo=UTC), "-retry")  # twice
    fraud = day1[c.TRANSACTION_ID].iloc[0]
    chargeback = pd.DataFrame(
        {
            c.TRANSACTION_ID: [fraud],
            c.IS_FRAUD: [1],
            c.LABEL_TIMESTAMP: [SPLIT + pd.Timedelta(days=3)],
        }
    )
    with engine.begin() as conn:
        record_labels(conn, chargeback, "file:cb.csv", "test")

    offline, taken = take_from_log(settings, history.copy(), engine, Watermarks())
    assert len(taken.transactions) == len(day1)  # the retried five once each
    assert offline[c.TRANSACTION_ID].is_unique and len(offline) == len(history) + len(day1)
    row = offline.set_index(c.TRANSACTION_ID).loc[fraud]
    assert row[c.IS_FRAUD] == 1 and row[c.LABEL_TIMESTAMP] == SPLIT + pd.Timedelta(days=3)
    other = offline.set_index(c.TRANSACTION_ID).loc[day1[c.TRANSACTION_ID].iloc[1]]
    assert other[c.IS_FRAUD] == 0  # no chargeback: legitimate from its label delay on
    assert other[c.LABEL_TIMESTAMP] == other[c.TIMESTAMP] + pd.Timedelta(days=7)
    assert offline["commit_seq"].isna().all()  # this log has no commit_seq column

    # the next run: nothing new in the log; a late chargeback of an offline row joins it
    marks = Watermarks(taken.log_scored_through, taken.labels_recorded_through)
    late = day1[c.TRANSACTION_ID].iloc[2]
    with engine.begin() as conn:
        record_labels(
            conn,
            pd.DataFrame(
                {
                    c.TRANSACTION_ID: [late],
                    c.IS_FRAUD: [1],
                    c.LABEL_TIMESTAMP: [SPLIT + pd.Timedelta(days=9)],
                }
            ),
            "file:cb2.csv",
            "test",
        )
    again, second = take_from_log(settings, offline.copy(), engine, marks)
    assert len(second.transactions) == 0 and second.already_there == len(day1)
    assert second.relabelled[c.TRANSACTION_ID].tolist() == [late]
    assert again.set_index(c.TRANSACTION_ID).loc[late, c.IS_FRAUD] == 1
    engine.dispose()


def test_the_log_is_read_from_the_high_water_mark(
    settings: Settings, simulated: pd.DataFrame
) -> None:
    history, live, engine, _ = history_and_log(settings, simulated)
    old = live.iloc[:10]
    log_scored(engine, old, datetime(2026, 11, 1, tzinfo=UTC))
    marks = Watermarks(log_scored_through=datetime(2026, 12, 1, tzinfo=UTC))
    _, taken = take_from_log(settings, history.copy(), engine, marks)
    assert len(taken.transactions) == 0  # scored a month before the mark (48 h overlap)


def test_a_log_with_commit_seq_carries_it(settings: Settings, simulated: pd.DataFrame) -> None:
    history, live, engine, _ = history_and_log(settings, simulated)
    day1 = live.iloc[:20]
    log_scored(engine, day1, datetime(2026, 12, 1, tzinfo=UTC))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE predictions SET commit_seq = 7"))
    _, taken = take_from_log(settings, history.copy(), engine, Watermarks())
    assert (taken.transactions["commit_seq"] == 7).all()


def test_the_incremental_build_equals_a_full_build(
    settings: Settings, simulated: pd.DataFrame
) -> None:
    history, live, engine, directory = history_and_log(settings, simulated)
    offline = history.copy()
    for day in range(3):  # three nights of traffic
        start = SPLIT + pd.Timedelta(days=day)
        today = live[
            (live[c.TIMESTAMP] >= start) & (live[c.TIMESTAMP] < start + pd.Timedelta(days=1))
        ]
        log_scored(engine, today, datetime(2026, 12, 1, tzinfo=UTC) + timedelta(days=day))
        offline, taken = take_from_log(settings, offline, engine, Watermarks())
        built = incremental_build(settings, offline, None, directory)
        assert built.activity_rows == len(today) and not built.full
    # a late transaction (older than its customer's state) rebuilds that customer
    late = live[live[c.TIMESTAMP] >= SPLIT + pd.Timedelta(days=3)].iloc[:1].copy()
    late[c.TIMESTAMP] = SPLIT + pd.Timedelta(hours=1)
    log_scored(engine, late, datetime(2026, 12, 5, tzinfo=UTC))
    offline, taken = take_from_log(settings, offline, engine, Watermarks())
    assert incremental_build(settings, offline, None, directory).rebuilt_customers == 1

    full = build_feature_tables(offline, settings.label_delay_days)
    for name, key in (
        ("customer_activity", [c.TRANSACTION_ID]),
        ("customer_state", [c.CUSTOMER_ID]),
        ("terminal_daily", [c.TERMINAL_ID, "event_timestamp"]),
    ):
        got = read_frame(table_path(directory, name)).sort_values(key).reset_index(drop=True)
        want = getattr(full, name).sort_values(key).reset_index(drop=True)
        assert len(got) == len(want), name
        for column in want.columns:
            a, b = got[column].to_numpy(), want[column].to_numpy()
            if a.dtype.kind == "f":
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, err_msg=f"{name}.{column}")
            else:
                assert [np.asarray(x).tolist() for x in a] == [np.asarray(x).tolist() for x in b], (
                    f"{name}.{column}"
                )
    engine.dispose()


def test_a_night_rewrites_only_the_days_it_changes(
    settings: Settings, simulated: pd.DataFrame
) -> None:
    _, live, engine, directory = history_and_log(settings, simulated)

    def files(name: str) -> dict[str, tuple[int, int]]:
        found = table_path(directory, name).rglob("*.parquet")
        return {
            str(p.relative_to(directory)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in found
        }

    before = {name: files(name) for name in DAY_PARTITIONED}
    today = live[live[c.TIMESTAMP] < SPLIT + pd.Timedelta(days=1)]
    log_scored(engine, today, datetime(2026, 12, 1, tzinfo=UTC))
    offline, _ = take_from_log(
        settings, simulated[simulated[c.TIMESTAMP] < SPLIT].copy(), engine, Watermarks()
    )
    incremental_build(settings, offline, None, directory)
    written = {
        name: sorted(
            Path(path).parent.name
            for path, stat in files(name).items()
            if before[name].get(path) != stat
        )
        for name in DAY_PARTITIONED
    }
    # the day of the new transactions; the day after it, the first their labels can reach
    assert written == {
        "customer_activity": ["event_date=2026-04-25"],
        "terminal_daily": ["event_date=2026-04-26"],
    }
    assert len(before["customer_activity"]) == 24  # the history's days, one file each
    engine.dispose()


def test_the_offline_table_reads_as_pandas_reads_it(
    settings: Settings, simulated: pd.DataFrame
) -> None:
    from fraudops.data.ingest import write_parquet_atomic
    from fraudops.features.nightly import read_offline

    tx = simulated.head(500).copy()
    tx["commit_seq"] = pd.array([None, 3] * 250, dtype="Int64")  # nullable, as the job writes
    write_parquet_atomic(tx, settings.transactions_path)
    pd.testing.assert_frame_equal(
        read_offline(settings.transactions_path), pd.read_parquet(settings.transactions_path)
    )
