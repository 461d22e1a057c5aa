"""Where the offline feature tables live, and how they are laid out on disk.

The time series, ``customer_activity`` (one row per transaction) and ``terminal_daily``
(one row per terminal and day), are parquet tables partitioned by UTC day:

    <offline>/features/customer_activity/event_date=2026-04-01/part-0.parquet

the Hive layout the Spark build writes too, which Feast's DuckDB offline store reads as
one table (a ``FileSource`` on the directory) and Spark's as a ``SparkSource``. A day is
one file, replaced whole by a rename: the nightly job rewrites only the days it changes,
not the 1.8M rows of six months. ``customer_state`` (each customer's latest state) is one
file.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

EVENT_TIMESTAMP = "event_timestamp"
EVENT_DATE = "event_date"  # the partition column: the UTC day of event_timestamp
DAY_PARTITIONED = ("customer_activity", "terminal_daily")
DAY_FILE = "part-0.parquet"
_DAY_US = 86_400_000_000


def table_path(directory: Path, name: str) -> Path:
    """A feature table under ``directory``: a day-partitioned directory, or one file."""
    return directory / name if name in DAY_PARTITIONED else directory / f"{name}.parquet"


def day_dir(path: Path, day: date) -> Path:
    return path / f"{EVENT_DATE}={day:%Y-%m-%d}"


def days_of(times: pd.Series) -> np.ndarray:
    """The UTC day of each timestamp, as ``datetime64[D]``."""
    micros = pd.DatetimeIndex(times).as_unit("us").asi8  # since the epoch, in UTC
    return (micros // _DAY_US).astype("datetime64[D]")


def stored_days(path: Path) -> list[date]:
    """The days a partitioned table holds, oldest first."""
    if not path.is_dir():
        return []
    found = []
    for entry in path.iterdir():
        name, sep, value = entry.name.partition("=")
        if sep and name == EVENT_DATE and entry.is_dir():
            found.append(date.fromisoformat(value))
    return sorted(found)


def _parquet_files(folder: Path) -> list[Path]:
    """A day's data files: Spark writes several (``part-*``), with ``_SUCCESS`` and CRCs."""
    return sorted(p for p in folder.iterdir() if p.suffix == ".parquet" and p.name[0] not in "._")


def rows_per_day(path: Path) -> dict[date, int]:
    """Rows each day of a partitioned table holds, from the files' footers (no data read)."""
    return {
        day: sum(pq.ParquetFile(f).metadata.num_rows for f in _parquet_files(day_dir(path, day)))
        for day in stored_days(path)
    }


def read_table(
    path: Path,
    columns: list[str] | None = None,
    first: date | None = None,
    last: date | None = None,
) -> pa.Table:
    """A feature table in either layout, without the partition column; of a partitioned
    one, only the days from ``first`` to ``last`` (both included)."""
    if not path.is_dir():
        return pq.read_table(path, columns=columns)
    days = [
        day
        for day in stored_days(path)
        if (first is None or day >= first) and (last is None or day <= last)
    ]
    files = [str(file) for day in days for file in _parquet_files(day_dir(path, day))]
    # the files themselves, not the directory: the day is in each row's event_timestamp
    return ds.dataset(files, format="parquet").to_table(columns=columns)


def read_frame(
    path: Path,
    columns: list[str] | None = None,
    first: date | None = None,
    last: date | None = None,
) -> pd.DataFrame:
    return read_table(path, columns, first, last).to_pandas()


def newest_event_time(path: Path, end: datetime) -> datetime | None:
    """The newest ``event_timestamp`` at or before ``end`` in a feature table."""
    end_ts = pd.Timestamp(end)
    if not path.is_dir():
        return _newest(read_table(path, [EVENT_TIMESTAMP]), end_ts) if path.exists() else None
    for day in reversed(stored_days(path)):  # newest day first: usually one day read
        if day <= end_ts.tz_convert("UTC").date():
            found = _newest(read_table(path, [EVENT_TIMESTAMP], first=day, last=day), end_ts)
            if found is not None:
                return found
    return None


def _newest(table: pa.Table, end: pd.Timestamp) -> datetime | None:
    times = pd.to_datetime(table.column(0).to_pandas(), utc=True)
    times = times[times <= end]
    return None if times.empty else times.max().to_pydatetime()


# --- writing -----------------------------------------------------------------------------------
def _arrow(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


def _write_file(table: pa.Table, path: Path) -> None:
    """All of ``table`` at ``path`` or nothing: a hidden temp file, then a rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        # Microsecond timestamps: DuckDB (Feast's offline store) cannot cast nanosecond
        # time-zone-aware timestamps, and nothing here is finer than a microsecond.
        pq.write_table(table, tmp, coerce_timestamps="us", allow_truncated_timestamps=True)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _by_day(frame: pd.DataFrame) -> Iterable[tuple[date, pd.DataFrame]]:
    days = days_of(frame[EVENT_TIMESTAMP])
    order = np.argsort(days, kind="stable")
    days = days[order]
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    ends = np.r_[starts[1:], len(days)]
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        yield days[lo].item(), frame.iloc[order[lo:hi]]


def replace_days(frame: pd.DataFrame, path: Path) -> list[date]:
    """Each day of ``frame`` becomes that day's whole partition of the table at ``path``
    (the other days are left as they are); the days written."""
    written = []
    for day, rows in _by_day(frame):
        folder = day_dir(path, day)
        folder.mkdir(parents=True, exist_ok=True)
        _write_file(_arrow(rows), folder / DAY_FILE)
        for other in _parquet_files(folder):  # a Spark build's files of the day
            if other.name != DAY_FILE:
                other.unlink()
        written.append(day)
    return written


class DayPartitionedWriter:
    """Writes a whole partitioned table from frames in any order of days (a part of the
    customers at a time): one parquet writer per day, each day one file; the table
    replaces the one at ``path`` only at :meth:`commit`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        self.writers: dict[date, pq.ParquetWriter] = {}
        self.schema: pa.Schema | None = None
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        for day, rows in _by_day(frame):
            table = _arrow(rows)
            if self.schema is None:
                self.schema = table.schema
            writer = self.writers.get(day)
            if writer is None:
                folder = day_dir(self.tmp, day)
                folder.mkdir(parents=True)
                writer = self.writers[day] = pq.ParquetWriter(
                    folder / DAY_FILE,
                    self.schema,
                    coerce_timestamps="us",
                    allow_truncated_timestamps=True,
                )
            writer.write_table(table.cast(self.schema))
        self.rows += len(frame)

    def commit(self) -> Path:
        for writer in self.writers.values():
            writer.close()
        self.tmp.mkdir(parents=True, exist_ok=True)  # no rows: an empty table
        old = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.old")
        if self.path.exists():
            self.path.rename(old)
        self.tmp.rename(self.path)
        shutil.rmtree(old, ignore_errors=True)
        # the one-file layout of earlier versions, which Feast no longer reads
        self.path.with_name(f"{self.path.name}.parquet").unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
