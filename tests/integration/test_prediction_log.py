"""The prediction log's formatted inserts (PostgreSQL COPY text, SQLite parameter tuples)
store every value as given, awkward strings and numbers included, through the writer
thread and through ``write_now``."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from fraudops.core.db import predictions
from fraudops.serving.prediction_log import PredictionLog

pytestmark = pytest.mark.integration

AWKWARD = ["tab\there", "new\nline", "cr\rhere", "back\\slash", "\\N", "naïve ☃", "q'uo\"te", ""]


def records(prefix: str) -> list[dict]:
    at = datetime(2026, 1, 5, 10, 0, 0, 123456, tzinfo=UTC)
    rows = []
    for i, text in enumerate(AWKWARD):
        rows.append(
            {
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
            }
        )
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


# --- one spool per process ----------------------------------------------------------------
def test_each_process_claims_its_own_spool_file(tmp_path: Path) -> None:
    """Workers sharing a data directory never append to or replay the same spool; one
    started after a worker died takes the file that worker left (the kernel dropped its
    lock), so the records in it are replayed."""
    import subprocess
    import sys

    from fraudops.serving.prediction_log import Spool, claim_spool

    first, second = claim_spool(tmp_path, "predictions"), claim_spool(tmp_path, "predictions")
    assert first.path.name == "predictions.jsonl" and second.path.name == "predictions-1.jsonl"
    Spool(second.path).append(records("s")[:2])
    # a worker that dies holding predictions-2.jsonl, with records in it
    died = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import os, sys; from pathlib import Path\n"
                "from fraudops.serving.prediction_log import Spool, claim_spool\n"
                f"claimed = claim_spool(Path({str(tmp_path)!r}), 'predictions')\n"
                "assert claimed.path.name == 'predictions-2.jsonl', claimed.path\n"
                "Spool(claimed.path).append([{'prediction_id': 'from-the-dead', "
                "'event_timestamp': '2026-01-05T10:00:00+00:00', 'scored_at': "
                "'2026-01-05T10:00:00+00:00'}])\n"
                "os._exit(9)  # no cleanup: the lock goes with the process\n"
            ),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert died.returncode == 9, died.stderr
    replacement = claim_spool(tmp_path, "predictions")
    assert replacement.path.name == "predictions-2.jsonl"
    assert [row["prediction_id"] for row in Spool(replacement.path).take()] == ["from-the-dead"]
    for claimed in (first, second, replacement):
        claimed.release()


def test_spools_of_workers_not_replaced_are_taken_over(tmp_path: Path) -> None:
    """Three workers spooled, then the server came back with one: its spool holds all the
    records left behind, a replay cut short included, and the other files are gone."""
    from fraudops.serving.prediction_log import Spool, claim_spool

    claims = [claim_spool(tmp_path, "predictions") for _ in range(3)]
    rows = records("t")
    Spool(claims[0].path).append(rows[:2])
    Spool(claims[1].path).append(rows[2:4])
    Spool(claims[2].path).append(rows[4:6])
    Spool(claims[2].path).take()  # predictions-2 was replaying when it stopped...
    Spool(claims[2].path).append(rows[6:])  # ... and spooled more meanwhile
    for claimed in claims:
        claimed.release()
    survivor = claim_spool(tmp_path, "predictions")
    assert survivor.path.name == "predictions.jsonl"
    taken = Spool(survivor.path).take()
    assert sorted(row["prediction_id"] for row in taken) == sorted(r["prediction_id"] for r in rows)
    assert sorted(p.name for p in tmp_path.glob("*.jsonl*") if not p.name.endswith(".lock")) == [
        "predictions.jsonl.replaying"
    ]
    survivor.release()


def test_a_restarted_worker_replays_what_its_predecessor_spooled(tmp_path: Path) -> None:
    from fraudops.serving.prediction_log import Spool, claim_spool

    url = f"sqlite:///{tmp_path / 'log.db'}"
    dead = claim_spool(tmp_path / "spool", "predictions")
    Spool(dead.path).append(records("r"))  # the database was down when it died
    dead.release()
    claimed = claim_spool(tmp_path / "spool", "predictions")
    log = PredictionLog(url, claimed.path, flush_interval=0.05, retry_interval=0.05).start()
    deadline = time.monotonic() + 20
    while len(stored(url)) < len(AWKWARD) and time.monotonic() < deadline:
        time.sleep(0.1)  # nothing new is submitted: the writer replays the spool on its own
    log.close()
    claimed.release()
    assert sorted(stored(url)) == sorted(r["prediction_id"] for r in records("r"))


def test_a_filesystem_without_locks_still_gets_a_spool(tmp_path: Path, caplog) -> None:
    import errno

    from fraudops.serving.prediction_log import _try_lock

    class NoLocks:
        LOCK_EX, LOCK_NB = 2, 4

        @staticmethod
        def flock(fd: int, operation: int) -> None:
            raise OSError(errno.ENOLCK, "No locks available")

    lock = _try_lock(tmp_path / "predictions.jsonl", NoLocks)
    assert lock is not None
    lock.close()
    assert "cannot lock" in caplog.text and "may share the spool" in caplog.text
