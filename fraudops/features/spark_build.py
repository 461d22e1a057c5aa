"""The offline feature build on Spark: the same tables as the DuckDB build, from the same
functions, for data that outgrows one machine (docs/spark.md).

    uv sync --extra spark
    fraudops features build --engine spark      # or FRAUDOPS_OFFLINE_ENGINE=spark

Spark only moves the data. Every customer's transactions go, whole, to one Python worker,
where :func:`fraudops.features.build.build_customer_tables` computes its activity features
and its state (``applyInPandas``, many customers per call, so the maths stays vectorised);
the terminals go likewise to :func:`fraudops.features.build.build_terminal_daily`, on the
whole data's day grid. Each table is written as parquet partitioned by UTC day
(``event_date=YYYY-MM-DD``) under ``<offline_uri>/features/<table>``, which Feast's
``SparkSource`` reads (``FRAUDOPS_OFFLINE_STORE=spark``) and a lake registers as a table:
for ``customer_activity`` and ``terminal_daily``, the layout the DuckDB build writes
(:mod:`fraudops.core.tables`).

The session comes from the settings (``FRAUDOPS_SPARK_MASTER``, ``FRAUDOPS_SPARK_CONF``);
nothing here assumes local mode or a local path. PySpark is imported only when called.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from fraudops.core import contract as c
from fraudops.core.settings import Settings
from fraudops.core.tables import EVENT_DATE  # the partition column of every table
from fraudops.features import maths as f
from fraudops.features.build import (
    EVENT_TIMESTAMP,
    STATE_FIELDS,
    build_customer_tables,
    build_terminal_daily,
    part_count,
    utc_timestamp,
)
from fraudops.features.realtime import STATE

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

MIN_JAVA = 17
TABLE = "_table"  # which table a row of the customer step belongs to
INSTALL_HINT = "install PySpark with `uv sync --extra spark` (it needs Java 17 or later)"

# FraudOps' defaults; FRAUDOPS_SPARK_CONF overrides any of them.
SESSION_DEFAULTS = {
    "spark.app.name": "fraudops",
    "spark.sql.session.timeZone": "UTC",  # event dates and Feast's joins in UTC
    "spark.sql.execution.arrow.pyspark.enabled": "true",  # pandas <-> Spark by Arrow
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",  # what DuckDB and Feast read
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
}


# --- the session ---------------------------------------------------------------------------
class SparkUnavailable(RuntimeError):
    """PySpark (or Java for it) is not installed where Spark was asked for."""


def java_problem() -> str | None:
    """Why Spark cannot start here (no Java, or older than 17), or None."""
    java = shutil.which("java")
    if java is None:
        return f"no `java` on PATH: Spark needs Java {MIN_JAVA} or later (e.g. openjdk-17-jre)"
    done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if match is None:
        return f"could not read the Java version from `java -version`: {done.stderr.strip()!r}"
    major = int(match.group(1)) if match.group(1) != "1" else int(match.group(2) or 0)
    if major < MIN_JAVA:
        return f"Java {major} found, Spark needs Java {MIN_JAVA} or later"
    return None


def session_conf(settings: Settings) -> dict[str, str]:
    """The Spark configuration of every FraudOps session: master, defaults, then the user's."""
    return {"spark.master": settings.spark_master, **SESSION_DEFAULTS, **settings.spark_conf}


def use_this_python_locally(settings: Settings) -> None:
    """In local mode, Spark's Python workers run this interpreter (it has FraudOps and
    pandas; PySpark would start `python3`). A cluster's workers run its image's Python."""
    if settings.spark_master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def spark_session(settings: Settings) -> SparkSession:
    """The active session, or a new one from the settings (the same one Feast's Spark
    offline store then uses)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkUnavailable(f"the Spark engine needs PySpark: {INSTALL_HINT}") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    use_this_python_locally(settings)
    builder = SparkSession.builder
    for key, value in session_conf(settings).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


# --- the build -----------------------------------------------------------------------------
@dataclass
class SparkBuildReport:
    """Where each table went and its rows; what the steps took."""

    tables: dict[str, tuple[str, int]]
    seconds: dict[str, float] = field(default_factory=dict)
    parts: int = 0


_SPARK_TYPES = {
    "int64[]": "array<bigint>",
    "float64[]": "array<double>",
    "string[]": "array<string>",
    "int64": "bigint",
    "float64": "double",
}


def _customer_schema() -> str:
    activity = ", ".join(f"{name} double" for name in f.CUSTOMER_ACTIVITY_FEATURES)
    state = ", ".join(f"{name} {_SPARK_TYPES[kind]}" for name, kind, _ in STATE)
    return (
        f"{TABLE} string, {c.TRANSACTION_ID} string, {c.CUSTOMER_ID} string, "
        f"{EVENT_TIMESTAMP} timestamp, {activity}, {state}"
    )


def _terminal_schema() -> str:
    features = ", ".join(f"{name} double" for name in f.TERMINAL_FEATURES)
    return f"{c.TERMINAL_ID} string, {EVENT_TIMESTAMP} timestamp, {features}"


def _utc(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """Spark hands timestamps to pandas without a zone (in the session's, UTC)."""
    for column in columns:
        if column in frame.columns and frame[column].dt.tz is None:
            frame[column] = frame[column].dt.tz_localize("UTC")
    return frame


def customer_tables(tx: pd.DataFrame) -> pd.DataFrame:
    """Some customers' transactions (each customer's all) in; their activity rows and state
    rows out, as one frame that says which table each row is for (``applyInPandas`` has one
    output)."""
    activity, state = build_customer_tables(_utc(tx, c.TIMESTAMP))
    both = pd.concat(
        [
            activity.assign(**{TABLE: "customer_activity"}),
            state.assign(**{TABLE: "customer_state"}),
        ],
        ignore_index=True,
    )
    for name in ("history_time_us", "history_amount", "history_terminal_id"):
        both[name] = both[name].astype(object).where(both[TABLE] == "customer_state", None)
    return both


def terminal_tables(
    tx: pd.DataFrame, label_delay_days: int, first_day: pd.Timestamp, through: pd.Timestamp
) -> pd.DataFrame:
    """Some terminals' transactions (each terminal's all) in; their daily rows on the whole
    data's days out."""
    tx = _utc(tx, c.TIMESTAMP, c.LABEL_TIMESTAMP)
    return build_terminal_daily(tx, label_delay_days, through=through, first_day=first_day)


def part_column(key: str, parts: int) -> Column:
    """The part (0..parts-1) of each row's customer or terminal: the DuckDB build's hash
    (``feature_build.customer_parts_sql``), so both call the functions on the same groups."""
    from pyspark.sql import functions as F

    hashed = F.conv(F.substring(F.md5(F.col(key).cast("string")), 1, 15), 16, 10)
    return F.pmod(hashed.cast("bigint"), F.lit(parts))


def by_part(tx: DataFrame, key: str, parts: int) -> DataFrame:
    """``tx`` with its ``_part``, each part alone in one Spark partition, which the
    ``groupBy("_part")`` then reuses (no second shuffle). Why: hashed into the shuffle's
    partitions, and with adaptive execution coalescing partitions small in bytes (though
    heavy in Python work), 9 parts ran as 4 busy tasks of 8 at 1x; range partitioning
    still put 2 or 3 parts in some tasks (longest 31.6 s against about 10)."""
    from pyspark.sql import functions as F

    spark = tx.sparkSession
    # For each part, a small integer that Spark's hash partitioning (pmod(hash(x), parts))
    # sends to partition `part`: grouping by it is grouping by the part.
    candidates = spark.range(parts * 64).select(F.col("id").cast("int").alias("x"))
    found: dict[int, int] = dict(
        candidates.groupBy(F.pmod(F.hash("x"), F.lit(parts)).alias("p")).agg(F.min("x")).collect()
    )
    slots = [found.get(p, p) for p in range(parts)]  # (a part left out: hashed as before)
    index = (part_column(key, parts) + 1).cast("int")
    slot = F.element_at(F.array(*[F.lit(x) for x in slots]), index)
    return tx.withColumn("_part", slot).repartition(parts, "_part")


def _write_by_day(frame: DataFrame, uri: str) -> None:
    from pyspark.sql import functions as F

    (
        frame.withColumn(EVENT_DATE, F.to_date(EVENT_TIMESTAMP))
        .write.mode("overwrite")
        .partitionBy(EVENT_DATE)
        .parquet(uri)
    )


def build_on_spark(settings: Settings, spark: SparkSession | None = None) -> SparkBuildReport:
    """``fraudops features build`` on Spark: read ``<offline_uri>/transactions.parquet``,
    write the three tables under ``<offline_uri>/features/``."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    spark = spark or spark_session(settings)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    source = spark.read.parquet(settings.spark_transactions_uri)
    # commit_seq (the recorded order of equal timestamps), when present, goes through
    wanted = [*c.TRANSACTION_COLUMNS, *c.LABEL_COLUMNS, c.COMMIT_SEQ]
    tx = source.select(*[name for name in wanted if name in source.columns])
    extent = tx.agg(F.min(c.TIMESTAMP), F.max(c.TIMESTAMP), F.count("*")).first()
    first, last, rows = extent if extent is not None else (None, None, 0)
    if not rows:
        raise FileNotFoundError(f"no transactions in {settings.spark_transactions_uri}")
    first_day = utc_timestamp(first).floor("D")
    through = utc_timestamp(last).floor("D") + pd.Timedelta(days=1)
    parts = part_count(rows, settings.offline_rows_per_part)
    seconds["read"] = time.perf_counter() - started

    started = time.perf_counter()
    customers = (
        by_part(tx, c.CUSTOMER_ID, parts)
        .groupBy("_part")
        .applyInPandas(customer_tables, schema=_customer_schema())
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    counts: dict[str, int] = dict(customers.groupBy(TABLE).count().collect())  # computes it once
    activity_columns = [
        c.TRANSACTION_ID,
        c.CUSTOMER_ID,
        EVENT_TIMESTAMP,
        *f.CUSTOMER_ACTIVITY_FEATURES,
    ]
    state_columns = [c.CUSTOMER_ID, EVENT_TIMESTAMP, *STATE_FIELDS]
    tables: dict[str, tuple[str, int]] = {}
    for name, columns in (
        ("customer_activity", activity_columns),
        ("customer_state", state_columns),
    ):
        uri = settings.spark_table_uri(name)
        _write_by_day(customers.where(F.col(TABLE) == name).select(*columns), uri)
        tables[name] = (uri, int(counts.get(name, 0)))
    customers.unpersist()
    seconds["customer_tables"] = time.perf_counter() - started

    started = time.perf_counter()
    delay = settings.label_delay_days

    def terminals(frame: pd.DataFrame) -> pd.DataFrame:
        return terminal_tables(frame, delay, first_day, through)

    terminal_columns = [c.TERMINAL_ID, c.TIMESTAMP, *c.LABEL_COLUMNS]
    daily = (
        by_part(
            tx.select(*[name for name in terminal_columns if name in tx.columns]),
            c.TERMINAL_ID,
            parts,
        )
        .groupBy("_part")
        .applyInPandas(terminals, schema=_terminal_schema())
    )
    uri = settings.spark_table_uri("terminal_daily")
    _write_by_day(daily, uri)
    n_days = int((through - first_day) / pd.Timedelta(days=1)) + 1
    n_terminals = tx.select(c.TERMINAL_ID).distinct().count()
    tables["terminal_daily"] = (uri, n_terminals * n_days)
    seconds["terminal_daily"] = time.perf_counter() - started
    return SparkBuildReport(tables, seconds, parts)


def labelled_on_spark(settings: Settings) -> DataFrame:
    """The labelled transactions at ``<offline_uri>/transactions.parquet``, as Spark reads
    them (training plans its windows and reads its window from these, never the whole)."""
    from pyspark.sql import functions as F

    tx = spark_session(settings).read.parquet(settings.spark_transactions_uri)
    if c.IS_FRAUD not in tx.columns:
        raise ValueError(
            f"{settings.spark_transactions_uri} has no {c.IS_FRAUD} column: training needs "
            "labelled history"
        )
    return tx.where(F.col(c.IS_FRAUD).isNotNull())


def labelled_extent(settings: Settings, now: pd.Timestamp) -> list[pd.Timestamp | None]:
    """First and last transaction times, the last whose label is known at ``now``, the
    first whose label is still to come (a missing label time counts as to come)."""
    from pyspark.sql import functions as F

    ts = F.col(c.TIMESTAMP)
    known = F.coalesce(F.col(c.LABEL_TIMESTAMP) <= F.lit(now.to_pydatetime()), F.lit(False))
    row = (
        labelled_on_spark(settings)
        .agg(
            *(
                F.unix_micros(value)  # not a datetime in Python's zone
                for value in (
                    F.min(ts),
                    F.max(ts),
                    F.max(F.when(known, ts)),
                    F.min(F.when(~known, ts)),
                )
            )
        )
        .first()
    )
    values = list(row) if row is not None else [None] * 4
    return [None if v is None else pd.Timestamp(v, unit="us", tz="UTC") for v in values]


def labelled_window(settings: Settings, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The labelled transactions of ``[start, end)`` on the driver, as pandas reads them
    from the file (UTC microsecond timestamps)."""
    from pyspark.sql import functions as F

    ts = F.col(c.TIMESTAMP)
    frame = pd.DataFrame(
        labelled_on_spark(settings)
        .where((ts >= F.lit(start.to_pydatetime())) & (ts < F.lit(end.to_pydatetime())))
        .toPandas()
    )
    for column in frame.columns:
        if frame[column].dtype.kind == "M":
            frame[column] = _utc(frame, column)[column].astype("datetime64[us, UTC]")
    return frame


def newest_event_time(settings: Settings, uri: str, end: datetime) -> datetime | None:
    """The newest event time at or before ``end`` of a table the Spark build wrote (the
    day partitions after ``end`` are not read), or None: the freshness marker
    ``fraudops materialize`` records, as :func:`fraudops.core.tables.newest_event_time`
    does for the DuckDB build's files."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    spark = spark_session(settings)
    try:
        frame = spark.read.parquet(uri)
    except AnalysisException:  # PATH_NOT_FOUND: nothing built yet
        return None
    end_utc = pd.Timestamp(end).tz_convert("UTC")
    row = (
        frame.where(F.col(EVENT_DATE) <= F.lit(end_utc.date()))
        .where(F.col(EVENT_TIMESTAMP) <= F.lit(end_utc.to_pydatetime()))
        .agg(F.unix_micros(F.max(EVENT_TIMESTAMP)))  # not a datetime in Python's zone
        .first()
    )
    micros = row[0] if row is not None else None
    return None if micros is None else datetime.fromtimestamp(micros / 1_000_000, UTC)


def table_rows(
    settings: Settings, name: str, columns: list[str]
) -> Iterator[dict[str, Any]] | None:
    """A table the Spark build wrote, row by row on the driver (a partition at a time, not
    the whole table), or None if it is not there."""
    from pyspark.errors import AnalysisException

    spark = spark_session(settings)
    try:
        frame = spark.read.parquet(settings.spark_table_uri(name)).select(*columns)
    except AnalysisException:  # PATH_NOT_FOUND: nothing built yet
        return None
    return (row.asDict() for row in frame.toLocalIterator())


def read_table(spark: SparkSession, uri: str) -> pd.DataFrame:
    """A table the Spark build wrote, as pandas with UTC timestamps (for tests and tools;
    a lake reads it as a table)."""
    frame = spark.read.parquet(uri).drop(EVENT_DATE).toPandas()
    return _utc(frame, EVENT_TIMESTAMP)
