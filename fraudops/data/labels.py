"""Delayed fraud labels: chargebacks and analysts' decisions arrive days after scoring.

    fraudops labels ingest chargebacks.csv     # transaction_id, is_fraud, label_timestamp
    fraudops labels sync                       # analysts' labels into the offline table

A labels file is validated like a transactions file (every bad cell named by file, row,
column and what was expected; nothing is written when any row is bad). Valid labels go
to two places, so every consumer sees them:

- the ``labels`` table, next to the predictions they label (the monitor's classification
  quality, the dashboard's fraud rate and review queue);
- the offline transactions table (``is_fraud``, ``label_timestamp`` of the matching rows,
  rewritten atomically), so the next ``fraudops features build`` counts them in terminal
  risk and the next ``fraudops train`` learns from them.

Ids found in neither the offline table nor the prediction log are refused (most likely a
typo or the wrong file); ``--skip-unknown`` drops them with a warning instead. Ids only in
the prediction log are recorded in the ``labels`` table with a warning: ingest those
transactions to use their labels for features and training.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from fraudops.core import contract as c
from fraudops.core.db import create_db_engine, labels, predictions, upgrade
from fraudops.core.settings import Settings
from fraudops.data.ingest import (
    ROWS,
    Numbering,
    _Checker,
    _parse_ids,
    _parse_numbers,
    _parse_timestamps,
    _require_columns,
    apply_column_mapping,
    read_table,
    write_parquet_atomic,
)

log = logging.getLogger(__name__)

ANALYST_SOURCE = "analyst"
_ID_CHUNK = 1000  # ids per IN (...) query: far below every database's parameter limit


@dataclass(frozen=True)
class LabelsReport:
    """What ``ingest_labels`` did."""

    labels: int
    frauds: int
    offline_rows_updated: int
    only_in_prediction_log: list[str]
    skipped_unknown: list[str]


def validate_labels(
    df: pd.DataFrame,
    name: str = "<labels>",
    *,
    numbering: Numbering = ROWS,
    columns: dict[str, str] | None = None,
    timezone: str | None = None,
) -> pd.DataFrame:
    """transaction_id (str), is_fraud (int8, 0/1), label_timestamp (UTC), or
    ValidationFailed naming every bad cell. ``columns``: the file's name of each renamed
    column, for messages; ``timezone``: where naive times are read."""
    check = _Checker(name, numbering, columns)
    _require_columns(df, c.LABEL_FILE_COLUMNS, check)
    df = df.reset_index(drop=True)
    out = pd.DataFrame({c.TRANSACTION_ID: _parse_ids(df, c.TRANSACTION_ID, check)})
    is_fraud = _parse_numbers(df[c.IS_FRAUD], c.IS_FRAUD, check)
    check.flag(
        (is_fraud.notna() & ~is_fraud.isin([0, 1])).to_numpy(), c.IS_FRAUD, "0 or 1", df[c.IS_FRAUD]
    )
    out[c.IS_FRAUD] = is_fraud.fillna(0).astype("int8")
    out[c.LABEL_TIMESTAMP] = _parse_timestamps(
        df[c.LABEL_TIMESTAMP], c.LABEL_TIMESTAMP, check, timezone=timezone
    )
    check.flag(
        out[c.TRANSACTION_ID].duplicated(keep="first").to_numpy(),
        c.TRANSACTION_ID,
        "one label per transaction (this id is labelled on an earlier row)",
        df[c.TRANSACTION_ID],
    )
    check.raise_if_any()
    ignored = sorted(set(map(str, df.columns)) - set(c.LABEL_FILE_COLUMNS))
    if ignored:
        log.warning("%s: ignoring columns not in the labels contract: %s", name, ", ".join(ignored))
    return out


def ingest_labels(
    settings: Settings,
    source_path: Path,
    *,
    skip_unknown: bool = False,
    labelled_by: str | None = None,
    columns: dict[str, str] | None = None,
    timezone: str | None = None,
) -> LabelsReport:
    """Validate a labels file, record it in the ``labels`` table and apply it to the offline
    transactions table; all of it or nothing. ``columns`` maps the file's columns to the
    contract's ({file column: contract column}); ``timezone``: where naive times are read."""
    name = source_path.name
    numbering = Numbering.of(source_path)
    renamed, file_columns = apply_column_mapping(read_table(source_path), columns or {}, name)
    frame = validate_labels(
        renamed, name, numbering=numbering, columns=file_columns, timezone=timezone
    )
    url = settings.resolved_database_url
    upgrade(url)
    engine = create_db_engine(url)
    try:
        offline = _offline_timestamps(settings.transactions_path, frame[c.TRANSACTION_ID])
        logged = _logged_timestamps(engine, frame[c.TRANSACTION_ID])
        when = _first_known(offline, logged)
        known = frame[c.TRANSACTION_ID].isin(when.index).to_numpy()
        check = _Checker(name, numbering, file_columns)
        unknown_ids = frame.loc[~known, c.TRANSACTION_ID].tolist()
        if not skip_unknown:
            check.flag(
                ~known,
                c.TRANSACTION_ID,
                "a transaction in the offline store or the prediction log "
                "(use --skip-unknown to drop labels of unknown transactions)",
                frame[c.TRANSACTION_ID],
            )
        tx_time = frame[c.TRANSACTION_ID].map(when)
        early = (frame[c.LABEL_TIMESTAMP] < tx_time).fillna(False).to_numpy(dtype=bool)
        check.flag(
            early,
            c.LABEL_TIMESTAMP,
            "a time at or after the transaction's timestamp",
            frame[c.LABEL_TIMESTAMP].astype(str),
        )
        check.raise_if_any()
        if unknown_ids:
            log.warning(
                "%s: skipped %d label(s) of transactions in neither the offline store nor the "
                "prediction log, e.g. %s",
                name,
                len(unknown_ids),
                ", ".join(unknown_ids[:5]),
            )
        frame = frame[known].reset_index(drop=True)
        only_logged = frame.loc[
            ~frame[c.TRANSACTION_ID].isin(offline.index), c.TRANSACTION_ID
        ].tolist()
        if only_logged:
            log.warning(
                "%s: %d label(s) are for transactions only in the prediction log, not in the "
                "offline store (%s), e.g. %s: recorded for monitoring; ingest those transactions "
                "(fraudops ingest) to use the labels for features and training",
                name,
                len(only_logged),
                settings.transactions_path,
                ", ".join(only_logged[:5]),
            )
        with engine.begin() as conn:
            record_labels(conn, frame, f"file:{name}"[:64], labelled_by or getpass.getuser())
            # Inside the transaction: if the offline table cannot be written, the labels
            # are rolled back too. Both writes are idempotent, so a rerun repairs a crash
            # between the file replace and the commit.
            updated = apply_to_offline(settings.transactions_path, frame)
    finally:
        engine.dispose()
    return LabelsReport(
        labels=len(frame),
        frauds=int(frame[c.IS_FRAUD].sum()),
        offline_rows_updated=updated,
        only_in_prediction_log=only_logged,
        skipped_unknown=unknown_ids,
    )


def record_labels(
    conn: sa.Connection,
    frame: pd.DataFrame,
    source: str,
    labelled_by: str,
    labelled_at: datetime | None = None,
) -> None:
    """Insert or replace labels (the latest label of a transaction wins)."""
    if frame.empty:
        return
    labelled_at = labelled_at or datetime.now(UTC)
    rows = [
        {
            "transaction_id": str(tid),
            "is_fraud": int(fraud),
            "label_timestamp": ts.to_pydatetime(),
            "source": source,
            "labelled_by": labelled_by,
            "labelled_at": labelled_at,
        }
        for tid, fraud, ts in zip(
            frame[c.TRANSACTION_ID], frame[c.IS_FRAUD], frame[c.LABEL_TIMESTAMP], strict=True
        )
    ]
    statement = _upsert(conn.dialect.name)
    conn.execute(statement, rows)


def record_analyst_labels(
    engine: sa.Engine, transaction_ids: Sequence[str], is_fraud: bool, analyst: str
) -> int:
    """An analyst's verdict on transactions from the review queue, as of now."""
    if not analyst.strip():
        raise ValueError("an analyst name is required to record a label")
    now = datetime.now(UTC)
    frame = pd.DataFrame(
        {
            c.TRANSACTION_ID: list(transaction_ids),
            c.IS_FRAUD: int(is_fraud),
            c.LABEL_TIMESTAMP: pd.Timestamp(now),
        }
    )
    with engine.begin() as conn:
        record_labels(conn, frame, ANALYST_SOURCE, analyst.strip(), now)
    return len(frame)


def apply_to_offline(path: Path, frame: pd.DataFrame) -> int:
    """Set ``is_fraud`` and ``label_timestamp`` of the labelled rows of the offline
    transactions table; returns how many rows changed hands (0 if there is no table)."""
    if not path.exists() or frame.empty:
        return 0
    tx = pd.read_parquet(path)
    position = pd.Index(tx[c.TRANSACTION_ID]).get_indexer(frame[c.TRANSACTION_ID])
    hit = position >= 0
    if not hit.any():
        return 0
    rows = position[hit]
    if c.IS_FRAUD not in tx.columns:
        tx[c.IS_FRAUD] = np.nan  # the feature build reads NaN as "not labelled"
    if c.LABEL_TIMESTAMP not in tx.columns:
        tx[c.LABEL_TIMESTAMP] = pd.Series(pd.NaT, index=tx.index, dtype="datetime64[ns, UTC]")
    is_fraud = tx[c.IS_FRAUD].to_numpy().copy()
    is_fraud[rows] = frame[c.IS_FRAUD].to_numpy()[hit]
    label_ts = tx[c.LABEL_TIMESTAMP].copy()
    label_ts.iloc[rows] = frame[c.LABEL_TIMESTAMP].to_numpy()[hit]
    tx[c.IS_FRAUD] = is_fraud
    tx[c.LABEL_TIMESTAMP] = label_ts
    write_parquet_atomic(tx, path)
    return int(hit.sum())


def sync_offline(settings: Settings) -> int:
    """Apply every label in the database (analysts' ones included) to the offline table."""
    engine = create_db_engine(settings.resolved_database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(labels.c.transaction_id, labels.c.is_fraud, labels.c.label_timestamp)
            ).all()
    finally:
        engine.dispose()
    frame = pd.DataFrame(rows, columns=[c.TRANSACTION_ID, c.IS_FRAUD, c.LABEL_TIMESTAMP])
    frame[c.LABEL_TIMESTAMP] = pd.to_datetime(frame[c.LABEL_TIMESTAMP], utc=True)
    frame[c.IS_FRAUD] = frame[c.IS_FRAUD].astype("int8")
    return apply_to_offline(settings.transactions_path, frame)


# --- helpers ----------------------------------------------------------------------------------
def _upsert(dialect: str) -> sa.Executable:
    from sqlalchemy.dialects import postgresql, sqlite

    replaced = ("is_fraud", "label_timestamp", "source", "labelled_by", "labelled_at")
    key = [labels.c.transaction_id]
    if dialect == "postgresql":
        pg = postgresql.insert(labels)
        return pg.on_conflict_do_update(
            index_elements=key, set_={name: pg.excluded[name] for name in replaced}
        )
    if dialect == "sqlite":
        lite = sqlite.insert(labels)
        return lite.on_conflict_do_update(
            index_elements=key, set_={name: lite.excluded[name] for name in replaced}
        )
    raise NotImplementedError(f"labels need PostgreSQL or SQLite, not {dialect}")


def _first_known(*by_id: pd.Series) -> pd.Series:
    """Transaction times by id from several sources, the first source's where they overlap;
    always UTC datetimes, also when no source knows any id."""
    known = [times for times in by_id if len(times)]
    if not known:
        return pd.Series(dtype="datetime64[ns, UTC]")
    joined = pd.concat(known)
    return joined[~joined.index.duplicated(keep="first")]


def _offline_timestamps(path: Path, ids: pd.Series) -> pd.Series:
    """Transaction time by id, for the ids present in the offline table."""
    if not path.exists():
        return pd.Series(dtype="datetime64[ns, UTC]")
    tx = pd.read_parquet(path, columns=[c.TRANSACTION_ID, c.TIMESTAMP])
    tx = tx[tx[c.TRANSACTION_ID].isin(ids)]
    return pd.Series(
        pd.to_datetime(tx[c.TIMESTAMP], utc=True).array, index=tx[c.TRANSACTION_ID].to_numpy()
    )


def _logged_timestamps(engine: sa.Engine, ids: Iterable[str]) -> pd.Series:
    """Transaction time by id, for the ids in the prediction log."""
    found: dict[str, object] = {}
    ids = list(ids)
    column = predictions.c.event_timestamp
    with engine.connect() as conn:
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            query = (
                sa.select(predictions.c.transaction_id, sa.func.min(column))
                .where(predictions.c.transaction_id.in_(chunk))
                .group_by(predictions.c.transaction_id)
            )
            found.update(dict(conn.execute(query).all()))  # type: ignore[arg-type]
    return pd.Series(pd.to_datetime(list(found.values()), utc=True), index=list(found.keys()))
