"""The nightly job: scored traffic becomes history, features follow, the online store is
refreshed. One command, incremental (docs/nightly-job.md):

    fraudops nightly                          # one run
    fraudops nightly --every 1d --at 00:30    # APScheduler, every day at 00:30 UTC

One run:

1. **take** the transactions of the prediction log that are not in the offline store yet
   (by ``transaction_id``: a transaction scored twice is taken once, one already there is
   never taken again), reading the log from the last run's high-water mark on scoring time
   (minus ``FRAUDOPS_LOG_OVERLAP_HOURS``), with their labels from the ``labels`` table;
   labels recorded since the last run are applied to the rows they label. A transaction
   nobody has labelled is taken as legitimate from its label delay on (``is_fraud`` 0,
   ``label_timestamp`` = time + ``FRAUDOPS_LABEL_DELAY_DAYS``), as for a history file
   with ``is_fraud`` and no ``label_timestamp``: chargebacks come for frauds only, and a
   later one replaces that label;
2. **build** only what changed: the customer activity of the new transactions, computed
   from their customers' stored states with the functions the scorer uses (a customer
   with a transaction older than its state is rebuilt from its whole history), those
   customers' states, and ``terminal_daily`` from the first day whose rows changed;
3. **materialize** the changed ``terminal_daily`` rows, and record in the online store
   the newest row it holds (readiness reads it, see :mod:`fraudops.features.freshness`).
   ``customer_state`` is the scorer's own: only customers the online store cannot know
   are seeded, and with Redis an older offline state never replaces a newer one.

``fraudops ingest`` remains for history and backfills; without feature tables yet the
build is a full ``fraudops features build``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import sqlalchemy as sa

from fraudops.core import contract as c
from fraudops.core.settings import Settings
from fraudops.core.tables import (
    days_of,
    newest_event_time,
    read_frame,
    read_table,
    replace_days,
    rows_per_day,
    stored_days,
    table_path,
)
from fraudops.features import maths as f

log = logging.getLogger(__name__)

COMMIT_SEQ = "commit_seq"  # the order transactions were committed to a customer's state
EVENT_TIMESTAMP = "event_timestamp"
DAY = pd.Timedelta(days=1)
_ID_CHUNK = 1000
Stage = Callable[[str], None]


# --- the job's own bookkeeping --------------------------------------------------------------
@dataclass
class Watermarks:
    """Where the last run stopped reading: scoring time of the log, recording time of the
    labels (``<offline>/nightly_state.json``)."""

    log_scored_through: datetime | None = None
    labels_recorded_through: datetime | None = None
    # set before the offline table changes, cleared once the rebuilt rows are materialized:
    # a run that fails in between is finished by the next one
    terminal_daily_from: datetime | None = None

    @classmethod
    def load(cls, path: Path) -> Watermarks:
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        return cls(**{k: datetime.fromisoformat(v) if v else None for k, v in raw.items()})

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({k: v.isoformat() if v else None for k, v in asdict(self).items()})
        )
        tmp.replace(path)


def state_path(settings: Settings) -> Path:
    return settings.offline_dir / "nightly_state.json"


# --- 1. take the logged transactions and the labels ----------------------------------------
@dataclass
class Taken:
    """What a run added to the offline store."""

    transactions: pd.DataFrame  # the new rows, in the offline table's columns
    relabelled: pd.DataFrame  # transaction_id, timestamp of existing rows whose label changed
    already_there: int  # logged transactions skipped because the offline store has them
    log_scored_through: datetime | None
    labels_recorded_through: datetime | None


def log_columns(engine: sa.Engine) -> set[str]:
    return {column["name"] for column in sa.inspect(engine).get_columns("predictions")}


def read_logged(engine: sa.Engine, since: datetime | None) -> pd.DataFrame:
    """Logged transactions scored at or after ``since`` (all when None), one row per
    ``transaction_id`` (its first scoring), with ``commit_seq`` where the log has one."""
    from fraudops.core.db import predictions

    wanted = [
        "transaction_id",
        "event_timestamp",
        "customer_id",
        "terminal_id",
        "amount",
        "scored_at",
    ]
    has_seq = COMMIT_SEQ in log_columns(engine)
    columns = [predictions.c[name] for name in wanted]
    if has_seq:
        columns.append(predictions.c[COMMIT_SEQ])
    query = sa.select(*columns).select_from(predictions)
    if since is not None:
        query = query.where(predictions.c.scored_at >= since)  # indexed: read by time
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    frame = pd.DataFrame(rows, columns=[*wanted, *([COMMIT_SEQ] if has_seq else [])])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True)
    if not has_seq:
        frame[COMMIT_SEQ] = _nulls(len(frame))
    frame[COMMIT_SEQ] = frame[COMMIT_SEQ].astype("Int64")
    frame = frame.sort_values("scored_at", kind="stable").drop_duplicates("transaction_id")
    return frame.reset_index(drop=True)


def read_labels(
    engine: sa.Engine, ids: list[str] | None = None, recorded_since: datetime | None = None
) -> pd.DataFrame:
    """Labels of ``ids``, or recorded (``labelled_at``) at or after ``recorded_since``."""
    from fraudops.core.db import labels

    columns = (
        labels.c.transaction_id,
        labels.c.is_fraud,
        labels.c.label_timestamp,
        labels.c.labelled_at,
    )
    queries = []
    if ids is not None:
        queries = [
            sa.select(*columns).where(labels.c.transaction_id.in_(ids[i : i + _ID_CHUNK]))
            for i in range(0, len(ids), _ID_CHUNK)
        ]
    else:
        query = sa.select(*columns)
        if recorded_since is not None:
            query = query.where(labels.c.labelled_at >= recorded_since)
        queries = [query]
    rows: list[Any] = []
    with engine.connect() as conn:
        for query in queries:
            rows.extend(conn.execute(query).all())
    frame = pd.DataFrame(
        rows, columns=[c.TRANSACTION_ID, c.IS_FRAUD, c.LABEL_TIMESTAMP, "labelled_at"]
    )
    frame[c.LABEL_TIMESTAMP] = pd.to_datetime(frame[c.LABEL_TIMESTAMP], utc=True)
    frame["labelled_at"] = pd.to_datetime(frame["labelled_at"], utc=True)
    frame[c.IS_FRAUD] = pd.to_numeric(frame[c.IS_FRAUD]).astype("int8")
    return frame


def as_offline_rows(logged: pd.DataFrame, labelled: pd.DataFrame, delay_days: int) -> pd.DataFrame:
    """Logged transactions in the offline table's columns, with their labels; unlabelled
    ones legitimate from their label delay on (see the module's docstring)."""
    rows = pd.DataFrame(
        {
            c.TRANSACTION_ID: logged["transaction_id"].astype(str).to_numpy(),
            c.TIMESTAMP: logged["event_timestamp"].to_numpy(),
            c.CUSTOMER_ID: logged["customer_id"].astype(str).to_numpy(),
            c.TERMINAL_ID: logged["terminal_id"].astype(str).to_numpy(),
            c.AMOUNT: logged["amount"].astype(np.float64).to_numpy(),
        }
    ).astype({c.TIMESTAMP: "datetime64[ns, UTC]"})
    label = labelled.set_index(c.TRANSACTION_ID)
    known = rows[c.TRANSACTION_ID].map(label[c.IS_FRAUD])
    rows[c.IS_FRAUD] = known.fillna(0).astype("int8").to_numpy()
    default_time = rows[c.TIMESTAMP] + pd.Timedelta(days=delay_days)
    rows[c.LABEL_TIMESTAMP] = (
        rows[c.TRANSACTION_ID].map(label[c.LABEL_TIMESTAMP]).fillna(default_time)
    )
    rows[COMMIT_SEQ] = logged[COMMIT_SEQ].to_numpy()
    rows[COMMIT_SEQ] = rows[COMMIT_SEQ].astype("Int64")
    return rows


def read_offline(path: Path) -> pd.DataFrame:
    """The offline transactions table, as ``pd.read_parquet`` reads it, three times faster:
    the unique ``transaction_id`` strings become Python objects without the de-duplicating
    hash table Arrow uses for the other columns (measured on 1.77M rows at load 9: 3.1 s
    instead of 9.7 s; most of the take step)."""
    table = pq.read_table(path)
    if c.TRANSACTION_ID not in table.column_names:
        return table.to_pandas()
    ids = table.column(c.TRANSACTION_ID).to_pandas(deduplicate_objects=False)
    frame = table.drop_columns([c.TRANSACTION_ID]).to_pandas()
    frame.insert(table.column_names.index(c.TRANSACTION_ID), c.TRANSACTION_ID, ids)
    return frame


def take_from_log(
    settings: Settings, offline: pd.DataFrame, engine: sa.Engine, marks: Watermarks
) -> tuple[pd.DataFrame, Taken]:
    """The offline table with the new logged transactions and the new labels in it."""
    overlap = timedelta(hours=settings.log_overlap_hours)
    since = marks.log_scored_through - overlap if marks.log_scored_through else None
    logged = read_logged(engine, since)
    scored_through = logged["scored_at"].max() if len(logged) else None
    # the offline ids probed against the few logged ones, not the other way round: a hash
    # table of 1.8M ids took 1.1 s, of 10,000 a tenth of that
    ids = offline[c.TRANSACTION_ID]
    there = ids[ids.isin(logged["transaction_id"])]
    fresh = logged[~logged["transaction_id"].isin(there)]
    new_rows = as_offline_rows(
        fresh,
        read_labels(engine, ids=fresh["transaction_id"].astype(str).tolist()),
        settings.label_delay_days,
    )
    label_since = marks.labels_recorded_through - overlap if marks.labels_recorded_through else None
    recorded = read_labels(engine, recorded_since=label_since)
    labels_through = recorded["labelled_at"].max() if len(recorded) else None
    offline, relabelled = apply_labels(offline, recorded)
    if len(new_rows):
        if COMMIT_SEQ not in offline.columns:
            offline[COMMIT_SEQ] = _nulls(len(offline))
        in_order = offline.empty or new_rows[c.TIMESTAMP].min() >= offline[c.TIMESTAMP].max()
        offline = _concat_like(offline, _by_time(new_rows))
        if not in_order:
            offline = _by_time(offline)
    return offline, Taken(
        new_rows,
        relabelled,
        len(logged) - len(fresh),
        _latest(marks.log_scored_through, scored_through),
        _latest(marks.labels_recorded_through, labels_through),
    )


def apply_labels(
    offline: pd.DataFrame, recorded: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``offline`` with ``recorded`` labels set on the rows they label, and the rows whose
    label changed (id and time)."""
    empty = pd.DataFrame(
        {c.TRANSACTION_ID: [], c.TIMESTAMP: pd.Series([], dtype="datetime64[ns, UTC]")}
    )
    if recorded.empty or offline.empty:
        return offline, empty
    position = pd.Index(offline[c.TRANSACTION_ID]).get_indexer(recorded[c.TRANSACTION_ID])
    hit = position >= 0
    rows, labels = position[hit], recorded[hit]
    if c.IS_FRAUD not in offline.columns:
        offline[c.IS_FRAUD] = np.nan
    if c.LABEL_TIMESTAMP not in offline.columns:
        offline[c.LABEL_TIMESTAMP] = pd.Series(
            pd.NaT, index=offline.index, dtype="datetime64[ns, UTC]"
        )
    before_fraud = offline[c.IS_FRAUD].to_numpy()[rows]
    before_time = offline[c.LABEL_TIMESTAMP].to_numpy()[rows]
    new_fraud = labels[c.IS_FRAUD].to_numpy()
    new_time = labels[c.LABEL_TIMESTAMP].to_numpy()
    changed = (before_fraud != new_fraud) | (before_time != new_time)
    if not changed.any():
        return offline, empty
    rows, new_fraud, new_time = rows[changed], new_fraud[changed], new_time[changed]
    is_fraud = offline[c.IS_FRAUD].to_numpy().copy()
    is_fraud[rows] = new_fraud
    label_time = offline[c.LABEL_TIMESTAMP].copy()
    label_time.iloc[rows] = new_time
    offline[c.IS_FRAUD] = is_fraud
    offline[c.LABEL_TIMESTAMP] = label_time
    return offline, offline.iloc[rows][[c.TRANSACTION_ID, c.TIMESTAMP]].reset_index(drop=True)


def _by_time(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [c.TIMESTAMP, *([COMMIT_SEQ] if COMMIT_SEQ in frame.columns else []), c.TRANSACTION_ID]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def _nulls(n: int) -> pd.api.extensions.ExtensionArray:
    """``n`` nulls of a nullable integer column (``commit_seq`` where nothing gave one)."""
    return pd.arrays.IntegerArray(np.zeros(n, np.int64), np.ones(n, dtype=bool))


def _concat_like(first: pd.DataFrame, *more: pd.DataFrame) -> pd.DataFrame:
    """``first`` and ``more`` stacked, with ``more``'s time columns in ``first``'s dtype: a
    column read back from parquet is in µs, a new one in ns, and pandas stacks mixed units
    element by element (measured: 40 s for 1.8M rows instead of well under one)."""
    times = {
        name: dtype for name, dtype in first.dtypes.items() if isinstance(dtype, pd.DatetimeTZDtype)
    }
    cast = [frame.astype({k: v for k, v in times.items() if k in frame.columns}) for frame in more]
    return pd.concat([first, *cast], ignore_index=True)


def _stamp(value: datetime | None) -> pd.Timestamp | None:
    return None if value is None else pd.Timestamp(value)


def _latest(a: datetime | None, b: Any) -> datetime | None:
    b = None if b is None or pd.isna(b) else pd.Timestamp(b).to_pydatetime()
    if a is None or b is None:
        return a or b
    return max(a, b)


# --- 2. build only what changed ----------------------------------------------------------------
@dataclass
class Built:
    """What the incremental build changed."""

    activity_rows: int = 0
    customers: int = 0
    rebuilt_customers: int = 0  # late transactions: rebuilt from the whole history
    terminal_days_from: pd.Timestamp | None = None  # first day of terminal_daily rebuilt
    terminal_rows: int = 0
    full: bool = False
    new_customers: list[str] = field(default_factory=list)


def incremental_build(
    settings: Settings,
    offline: pd.DataFrame,
    terminal_daily_from: pd.Timestamp | None,
    directory: Path,
) -> Built:
    """Update the three feature tables: customer tables for the offline transactions they
    lack, ``terminal_daily`` from ``terminal_daily_from`` (see the module's docstring).
    Of the day-partitioned tables, only the days that change are read and written."""
    from fraudops.data.ingest import write_parquet_atomic
    from fraudops.features.build import TABLES, build_feature_tables, write_feature_tables

    paths = {name: table_path(directory, name) for name in TABLES}
    if not all(path.exists() for path in paths.values()):
        tables = build_feature_tables(offline, settings.label_delay_days)
        write_feature_tables(tables, directory)
        first = tables.terminal_daily[EVENT_TIMESTAMP].min() if len(tables.terminal_daily) else None
        return Built(
            len(tables.customer_activity),
            len(tables.customer_state),
            0,
            first,
            len(tables.terminal_daily),
            full=True,
            new_customers=tables.customer_state[c.CUSTOMER_ID].tolist(),
        )
    built = Built()
    # the transactions without activity rows: robust to a run that stopped half-way
    new = without_activity(offline, paths["customer_activity"])
    if COMMIT_SEQ not in new.columns:
        new = new.assign(**{COMMIT_SEQ: _nulls(len(new))})
    starts = [] if terminal_daily_from is None else [pd.Timestamp(terminal_daily_from)]
    if len(new):
        state = pd.read_parquet(paths["customer_state"])
        activity, state, built = _advance_customers(
            offline, new, state, paths["customer_activity"], built
        )
        replace_days(activity, paths["customer_activity"])
        write_parquet_atomic(state, paths["customer_state"])
        starts.append(first_changed_day(new[c.TIMESTAMP]))
    if starts:
        daily, built.terminal_days_from, built.terminal_rows = rebuild_terminal_days(
            offline, paths["terminal_daily"], min(starts), settings.label_delay_days
        )
        replace_days(daily, paths["terminal_daily"])
    return built


def without_activity(offline: pd.DataFrame, activity: Path) -> pd.DataFrame:
    """The offline transactions the ``customer_activity`` table has no row for. Only the
    days whose row counts differ from the transactions' are read (each transaction's row
    is in its own day)."""
    days = days_of(offline[c.TIMESTAMP])
    present, counts = np.unique(days, return_counts=True)
    stored = rows_per_day(activity)
    short = [
        day.item()
        for day, count in zip(present, counts, strict=True)
        if stored.get(day.item(), 0) != count
    ]
    if not short:
        return offline.iloc[:0]
    done = [
        read_table(activity, [c.TRANSACTION_ID], first=day, last=day).column(0).to_numpy(False)
        for day in short
        if day in stored
    ]
    candidates = offline[np.isin(days, np.array(short, dtype="datetime64[D]"))]
    if not done:
        return candidates
    return candidates[~candidates[c.TRANSACTION_ID].isin(np.concatenate(done))]


def first_changed_day(times: pd.Series) -> pd.Timestamp:
    """The first ``terminal_daily`` day a transaction at ``times``, or its label, can
    change: the day after it (rows are as of the start of each day)."""
    return times.min().floor("D") + DAY


def _advance_customers(
    offline: pd.DataFrame,
    new: pd.DataFrame,
    state: pd.DataFrame,
    activity_path: Path,
    built: Built,
) -> tuple[pd.DataFrame, pd.DataFrame, Built]:
    """The new transactions' activity from their customers' stored states (the scorer's
    functions, :func:`fraudops.features.realtime.score_and_advance_batch`), and the new states. A
    customer with a new transaction not after its state's last one is rebuilt from all
    its transactions, as ``features build`` would. The activity returned is whole days:
    the new rows with the rows already stored for their days."""
    from fraudops.features.build import build_customer_tables

    by_customer = state.set_index(c.CUSTOMER_ID)
    new = new.sort_values([c.CUSTOMER_ID, c.TIMESTAMP, COMMIT_SEQ, c.TRANSACTION_ID], kind="stable")
    time_us = f.to_micros(new[c.TIMESTAMP])
    customers = new[c.CUSTOMER_ID].to_numpy(dtype=object)
    known = pd.Index(by_customer.index)
    last_us = pd.Series(f.to_micros(by_customer[EVENT_TIMESTAMP]), index=known)
    previous = pd.Series(customers).map(last_us).to_numpy(dtype=np.float64)  # NaN: new customer
    late = set(customers[previous > time_us])  # before the stored state's last: rebuild
    plain = ~np.isin(customers, list(late))
    plain_tx = new[plain]
    activity_new, state_new = build_customer_tables(
        plain_tx, states=state[state[c.CUSTOMER_ID].isin(set(customers[plain]))]
    )
    after = set(state_new[c.CUSTOMER_ID]) if len(state_new) else set()
    changed = [activity_new]
    states_out = [state[~state[c.CUSTOMER_ID].isin(set(after) | late)], state_new]
    if late:
        redo, redo_state = build_customer_tables(offline[offline[c.CUSTOMER_ID].isin(late)])
        changed.append(redo)
        states_out.append(redo_state)
    rows = _concat_like(*[frame for frame in changed if len(frame)])
    # the days these rows go to, with what they hold already; a late customer's old rows
    # give way to its rebuilt ones (which cover all of its days)
    stored = set(stored_days(activity_path))
    days = sorted(set(days_of(rows[EVENT_TIMESTAMP]).tolist()) & stored)
    held = [read_frame(activity_path, first=day, last=day) for day in days]
    kept = [frame[~frame[c.CUSTOMER_ID].isin(late)] for frame in held]
    built.new_customers = sorted(set(customers) - set(known))
    built.activity_rows = len(new)
    built.customers = len(set(customers))
    built.rebuilt_customers = len(late)
    return (
        _concat_like(*[frame for frame in kept if len(frame)], rows),
        _concat_like(*[frame for frame in states_out if len(frame)]),
        built,
    )


def rebuild_terminal_days(
    offline: pd.DataFrame, daily: Path, first: pd.Timestamp, delay_days: int
) -> tuple[pd.DataFrame, pd.Timestamp, int]:
    """The ``terminal_daily`` rows of the days from ``first`` on (to the one after the
    last transaction), for every terminal, from the transactions that can reach them."""
    last = offline[c.TIMESTAMP].max().floor("D") + DAY
    first = max(first, offline[c.TIMESTAMP].min().floor("D"))
    n_days = int((last - first) / DAY) + 1
    reach = pd.Timedelta(days=max(f.TERMINAL_WINDOW_DAYS.values()) + delay_days + 1)
    tx = offline[offline[c.TIMESTAMP] >= first - reach]
    # every day holds every terminal known when it was built, so the last day before
    # ``first`` and those after it hold all the table knows
    before = [day for day in stored_days(daily) if day < first.date()]
    held = read_table(daily, [c.TERMINAL_ID], first=before[-1] if before else None)
    terminals = pd.Index(pd.unique(held.column(0).to_numpy(False)))
    terminals = terminals.append(pd.Index(tx[c.TERMINAL_ID].unique()).difference(terminals))
    codes = terminals.get_indexer(tx[c.TERMINAL_ID])
    time_us = f.to_micros(tx[c.TIMESTAMP])
    grids = f.terminal_daily_features(
        codes,
        time_us,
        tx[c.IS_FRAUD].to_numpy(np.float64),
        f.to_micros(tx[c.LABEL_TIMESTAMP]),
        len(terminals),
        int(f.to_micros(pd.DatetimeIndex([first]))[0]),
        n_days,
        delay_days,
    )
    days = pd.date_range(first, periods=n_days, freq="D")
    rebuilt = pd.DataFrame(
        {
            c.TERMINAL_ID: np.repeat(np.asarray(terminals, dtype=object), n_days),
            EVENT_TIMESTAMP: np.tile(days.to_numpy(), len(terminals)),
            **{name: grid.ravel() for name, grid in grids.items()},
        }
    ).astype({EVENT_TIMESTAMP: "datetime64[ns, UTC]"})
    return rebuilt, first, len(rebuilt)


# --- 3. materialize ------------------------------------------------------------------------------
def materialize_changes(
    settings: Settings, store: Any, built: Built, directory: Path, end: datetime
) -> dict[str, int]:
    """Write the changed ``terminal_daily`` rows (each terminal's newest up to ``end``) and
    seed customers the online store cannot know; record the newest rows held."""
    from fraudops.features.freshness import record_materialized

    written: dict[str, int] = {}
    redis = settings.online_store == "redis"
    if built.terminal_days_from is not None:
        start = built.terminal_days_from.to_pydatetime()
        if redis:
            from fraudops.adapters.feast import fast_materialize

            # terminal_daily is written by materialization only: a recomputed row of a day
            # already there (a label arrived) must replace it, so no skip_older
            written.update(
                fast_materialize(store, ["terminal_daily"], start=start, end=end, skip_older=False)
            )
        else:
            store.materialize(start_date=start, end_date=end, feature_views=["terminal_daily"])
            written["terminal_daily"] = built.terminal_rows
    if built.new_customers:
        from fraudops.features.materialize import seed_customer_states

        # only customers the state store does not know: the scorers keep the others
        written["customer_state"] = seed_customer_states(settings)
    newest = newest_event_time(table_path(directory, "terminal_daily"), end)
    if newest is not None:
        record_materialized(settings, {"terminal_daily": newest})
    return written


def take_into_offline_store(settings: Settings) -> Taken:
    """Only the take step (``fraudops materialize --rebuild``, which then builds all)."""
    from fraudops.core.db import create_db_engine, upgrade
    from fraudops.data.ingest import write_parquet_atomic

    path = state_path(settings)
    marks = Watermarks.load(path)
    offline = read_offline(settings.transactions_path)
    upgrade(settings.resolved_database_url)
    engine = create_db_engine(settings.resolved_database_url)
    try:
        offline, taken = take_from_log(settings, offline, engine, marks)
    finally:
        engine.dispose()
    if len(taken.transactions) or len(taken.relabelled):
        write_parquet_atomic(offline, settings.transactions_path)
    marks.log_scored_through = taken.log_scored_through
    marks.labels_recorded_through = taken.labels_recorded_through
    marks.save(path)
    return taken


# --- one run ------------------------------------------------------------------------------------
@dataclass
class NightlyReport:
    taken: int
    already_in_offline_store: int
    relabelled: int
    built: dict[str, Any]
    materialized: dict[str, int]
    seconds: dict[str, float]

    def json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


def run_nightly(
    settings: Settings, end: datetime | None = None, stage: Stage = lambda _: None
) -> NightlyReport:
    """One run of the nightly job: take, build, materialize (see the module docstring)."""
    from fraudops.core.db import create_db_engine, upgrade
    from fraudops.data.ingest import write_parquet_atomic
    from fraudops.features.feast_store import get_store

    end = end or datetime.now(UTC)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    if not settings.transactions_path.exists():
        raise FileNotFoundError(
            f"no ingested history at {settings.transactions_path}: run `fraudops ingest PATH` "
            "first (the nightly job adds scored traffic to it)"
        )
    path = state_path(settings)
    marks = Watermarks.load(path)
    stage("reading the prediction log")
    offline = read_offline(settings.transactions_path)
    url = settings.resolved_database_url
    upgrade(url)
    engine = create_db_engine(url)
    try:
        offline, taken = take_from_log(settings, offline, engine, marks)
    finally:
        engine.dispose()
    changed = [
        first_changed_day(frame[c.TIMESTAMP])
        for frame in (taken.transactions, taken.relabelled)
        if len(frame)
    ]
    if changed:
        pending = min(
            [
                *changed,
                *([pd.Timestamp(marks.terminal_daily_from)] if marks.terminal_daily_from else []),
            ]
        )
        marks.terminal_daily_from = pending.to_pydatetime()
        marks.save(path)  # before the offline table changes: see Watermarks
        write_parquet_atomic(offline, settings.transactions_path)
    seconds["take"] = time.perf_counter() - started
    stage(f"building features of {len(taken.transactions):,} new transactions")
    directory = settings.offline_dir / "features"
    built = incremental_build(settings, offline, _stamp(marks.terminal_daily_from), directory)
    seconds["build"] = time.perf_counter() - started - seconds["take"]
    stage("materializing")
    store = get_store()
    materialized = materialize_changes(settings, store, built, directory, end)
    seconds["materialize"] = time.perf_counter() - started - seconds["take"] - seconds["build"]
    # the high-water marks move only once everything they cover is stored
    Watermarks(taken.log_scored_through, taken.labels_recorded_through).save(path)
    seconds["total"] = time.perf_counter() - started
    report = NightlyReport(
        taken=len(taken.transactions),
        already_in_offline_store=taken.already_there,
        relabelled=len(taken.relabelled),
        built={k: v for k, v in asdict(built).items() if k != "new_customers"}
        | {"new_customers": len(built.new_customers)},
        materialized=materialized,
        seconds={k: round(v, 2) for k, v in seconds.items()},
    )
    log.info(
        "nightly: took %s logged transaction(s) (%s already in the offline store), %s relabelled; "
        "terminal_daily rebuilt from %s; materialized %s; %.1f s",
        f"{report.taken:,}",
        f"{report.already_in_offline_store:,}",
        f"{report.relabelled:,}",
        built.terminal_days_from,
        materialized,
        seconds["total"],
    )
    return report


def run_schedule(every_seconds: int, at: str | None = None) -> None:
    """Run the job every ``every_seconds`` (first run now), or every day at ``at`` (HH:MM
    UTC); one run at a time, a run still going when the next is due is skipped and logged."""
    from fraudops.core.schedule import one_at_a_time, run_until_interrupted
    from fraudops.core.settings import get_settings

    scheduler = one_at_a_time("nightly run", lambda: run_nightly(get_settings()), every_seconds, at)
    if at is not None:
        log.info("nightly job every day at %s UTC; Ctrl-C to stop", at)
    else:
        log.info("nightly job every %d s; Ctrl-C to stop", every_seconds)
    run_until_interrupted(scheduler)
