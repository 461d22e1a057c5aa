"""The prediction log's formatted inserts (PostgreSQL COPY text, SQLite parameter tuples)
store every value as given, awkward strings and numbers included, through the writer
thread and through ``write_now``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from fraudops.db import predictions
from fraudops.prediction_log import PredictionLog

pytestmark = pytest.mark.integration

AWKWARD = ["tab\there", "new\nline", "cr\rhere", "back\\slash", "\\N", "naïve ☃", "q'uo\"te", ""]


def records(prefix: str) -> list[dict]:
    at = datetime(2026, 1, 5, 10, 0, 0, 123456, tzinfo=UTC)
    rows = []
    for i, text in enumerate(AWKWARD):
        rows.append({
            "prediction_id": f"{prefix}{i:030d}",
            "transaction_id": f"tx-{text}",
            "event_timestamp": at + timedelta(seconds=i),
            "scored_at": at + timedelta(minutes=i),
            "customer_id": f"c-{text}",
            "terminal_id": text or "t",
            "amount": [12.5, 0.1, 1e-300, 1e300, -0.0, 123456789.123456789, 3.0, 7.25][i],
            "features": {"amount": 0.1 * i, f"odd\t{text}": -1.0, "count": float(i)},
            "fraud_probability": 1 / 3,
            "decision": ["approve", "review", "block"][i % 3],
            "reasons": [{"feature": f"f\n{text}", "value": 1.5, "contribution": -0.25}],
            "model_version": "7",
            "latency_ms": 0.123,
            "degraded": i % 2 == 0,
            "source": "http",
        })  # fmt: skip
    return rows


def stored(url: str) -> dict[str, dict]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(predictions))]
    engine.dispose()
    return {row["prediction_id"]: row for row in rows}


def check(url: str, tmp_path: Path) -> None:
    log = PredictionLog(url, tmp_path / "spool.jsonl", flush_interval=0.05).start()
    queued, direct = records("a"), records("b")
    log.submit(queued[:3])
    log.submit(queued[3:])
    log.write_now(direct[:4])
    log.write_now(direct)  # half of them there already: those are skipped, the rest stored
    log.write_now(direct)  # all there already
    log.close()
    assert log.spooled == 0
    rows = stored(url)
    assert len(rows) == len(queued) + len(direct)
    for expected in queued + direct:
        got = rows[expected["prediction_id"]]
        for name, value in expected.items():
            if isinstance(value, datetime) and got[name].tzinfo is None:  # SQLite: UTC, naive
                assert got[name] == value.replace(tzinfo=None), name
            else:
                assert got[name] == value, (name, got[name], value)


def test_postgres_stores_every_value_as_given(postgres_url: str, tmp_path: Path) -> None:
    check(postgres_url, tmp_path)


def test_sqlite_stores_every_value_as_given(tmp_path: Path) -> None:
    check(f"sqlite:///{tmp_path / 'log.db'}", tmp_path)
