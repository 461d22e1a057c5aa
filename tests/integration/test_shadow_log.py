"""Shadow results are stored like the champion's (batched writer, spool, replay without
duplicates) and read back beside them, one pair per transaction, with labels."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from fraudops.core import db
from fraudops.model.comparison import read_shadow_pairs
from fraudops.serving.prediction_log import (
    PredictionLog,
    Spool,
    open_shadow_log,
    shadow_records,
)

pytestmark = pytest.mark.integration
AT = datetime(2026, 5, 1, 12, tzinfo=UTC)


def champion_rows(n: int) -> list[dict]:
    return [
        {
            "prediction_id": f"p{i:031d}",
            "transaction_id": f"tx{i}",
            "event_timestamp": AT + timedelta(minutes=i),
            "scored_at": AT + timedelta(minutes=i),
            "customer_id": f"c{i % 3}",
            "terminal_id": "t1",
            "amount": 10.0 + i,
            "features": {"tx_amount": 10.0 + i},
            "fraud_probability": i / n,
            "decision": "approve",
            "reasons": [],
            "model_version": "1",
            "latency_ms": 1.0,
            "degraded": False,
            "source": "http",
        }
        for i in range(n)
    ]


def wait_for(log: PredictionLog, count: int) -> None:
    deadline = time.monotonic() + 10
    while log.written < count:
        assert time.monotonic() < deadline, (log.written, log.spooled)
        time.sleep(0.02)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'predictions.db'}"


def test_shadow_rows_pair_with_the_champion_rows(url: str, tmp_path: Path) -> None:
    rows = champion_rows(10)
    champion = PredictionLog(url, tmp_path / "predictions.jsonl", flush_interval=0.02).start()
    champion.submit(rows)
    # half the challenger's rows were spooled while the database was down: replayed at start
    shadow = shadow_records(
        [r["prediction_id"] for r in rows],
        [r["transaction_id"] for r in rows],
        "2",
        [0.5 * r["fraud_probability"] for r in rows],
        ["block" if i % 4 == 0 else "approve" for i in range(10)],
        scored_at=AT,
    )
    Spool(tmp_path / "shadow.jsonl", db.shadow_predictions).append(shadow[:5])
    log = open_shadow_log(url, tmp_path / "shadow.jsonl", flush_interval=0.02, retry_interval=0.02)
    log.submit(shadow[5:])
    log.submit(shadow[3:6])  # a retried batch: no duplicate
    wait_for(champion, 10)
    wait_for(log, 10)
    champion.close()
    log.close()
    engine = db.create_db_engine(url)
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(db.shadow_predictions)).scalar()
        stored = conn.execute(sa.select(db.shadow_predictions)).all()
    assert count == 10
    assert {r.transaction_id for r in stored} == {r["transaction_id"] for r in rows}
    assert all(r.scored_at.replace(tzinfo=r.scored_at.tzinfo or UTC) == AT for r in stored)

    # labels for the first four; a transaction scored again later: the latest pair counts
    from fraudops.data.labels import record_labels

    with engine.begin() as conn:
        record_labels(
            conn,
            pd.DataFrame(
                {
                    "transaction_id": ["tx0", "tx1", "tx2", "tx3"],
                    "is_fraud": pd.array([1, 0, 0, 1], dtype="int8"),
                    "label_timestamp": [AT + timedelta(days=7)] * 4,
                }
            ),
            "file:test.csv",
            "bank",
        )
    pairs = read_shadow_pairs(engine, AT, AT + timedelta(minutes=8))
    assert pairs["transaction_id"].tolist() == [f"tx{i}" for i in range(8)]
    assert pairs["champion_probability"].tolist() == [i / 10 for i in range(8)]
    assert pairs["challenger_probability"].tolist() == [0.5 * i / 10 for i in range(8)]
    assert pairs["challenger_decision"].tolist()[:5] == [
        "block",
        "approve",
        "approve",
        "approve",
        "block",
    ]
    assert (pairs["champion_version"] == "1").all() and (pairs["challenger_version"] == "2").all()
    assert pairs["is_fraud"].tolist()[:4] == [1.0, 0.0, 0.0, 1.0]
    assert pairs["is_fraud"][4:].isna().all()
    assert read_shadow_pairs(engine, AT, AT + timedelta(hours=1), challenger_version="3").empty
    assert len(read_shadow_pairs(engine, AT, AT + timedelta(hours=1), champion_version="1")) == 10
    engine.dispose()
