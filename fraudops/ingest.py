"""Bring your own data: validate transaction files against the contract and land them.

    fraudops ingest transactions.csv          # or .parquet

Every problem is reported with the file, the row, the column and what was expected; when
any row is bad nothing is written. Valid data lands, atomically, in the offline store
location the feature build reads (``Settings.transactions_path``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraudops import contract as c

log = logging.getLogger(__name__)

MAX_REPORTED_PROBLEMS = 20
_ID_COLUMNS = (c.TRANSACTION_ID, c.CUSTOMER_ID, c.TERMINAL_ID)


@dataclass(frozen=True)
class Problem:
    """One bad value: where it is and what was expected."""

    file: str
    row: int | None  # 1-based data row; None for file-level problems
    column: str | None
    expected: str
    got: str = ""

    def __str__(self) -> str:
        where = [self.file]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        got = f", got {self.got}" if self.got else ""
        return f"{', '.join(where)}: expected {self.expected}{got}"


class ValidationFailed(Exception):
    """The input does not follow the contract; nothing was written."""

    def __init__(self, problems: list[Problem], total: int | None = None):
        self.problems = problems
        self.total = total if total is not None else len(problems)
        shown = "\n".join(f"  - {p}" for p in problems[:MAX_REPORTED_PROBLEMS])
        more = self.total - min(len(problems), MAX_REPORTED_PROBLEMS)
        tail = f"\n  ... and {more} more problem(s)" if more > 0 else ""
        super().__init__(f"{self.total} problem(s) found, nothing was written:\n{shown}{tail}")


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or parquet file as it is; CSV cells stay strings so we can report them."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise ValidationFailed([Problem(str(path), None, None, "an existing file")])
    if suffix == ".csv":
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
        except pd.errors.EmptyDataError:
            raise ValidationFailed(
                [Problem(str(path), None, None, "a CSV file with a header row", "an empty file")]
            ) from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise ValidationFailed(
                [Problem(str(path), None, None, "a UTF-8 CSV file", _first_line(exc))]
            ) from None
    if suffix in {".parquet", ".pq"}:
        try:
            return pd.read_parquet(path)
        except (pa.ArrowException, OSError) as exc:  # truncated, not parquet, unreadable
            raise ValidationFailed(
                [Problem(str(path), None, None, "a readable parquet file", _first_line(exc))]
            ) from None
    raise ValidationFailed(
        [Problem(str(path), None, None, "a .csv or .parquet file", f"'{path.suffix}'")]
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__


class _Checker:
    """Collects problems for one file, with 1-based row numbers."""

    def __init__(self, name: str):
        self.name = name
        self.problems: list[Problem] = []
        self.total = 0

    def flag(self, mask: np.ndarray, column: str, expected: str, values: pd.Series) -> None:
        rows = np.flatnonzero(mask)
        self.total += len(rows)
        room = MAX_REPORTED_PROBLEMS - len(self.problems)
        for i in rows[: max(room, 0)]:
            self.problems.append(
                Problem(self.name, int(i) + 1, column, expected, repr(values.iloc[i]))
            )

    def file_problem(self, expected: str, got: str = "") -> None:
        self.total += 1
        self.problems.append(Problem(self.name, None, None, expected, got))

    def raise_if_any(self) -> None:
        if self.total:
            raise ValidationFailed(self.problems, self.total)


def _missing(values: pd.Series) -> np.ndarray:
    blank = values.astype("string").str.strip().fillna("") == ""
    return (values.isna() | blank).to_numpy(dtype=bool)


def _parse_ids(df: pd.DataFrame, column: str, check: _Checker) -> pd.Series:
    values = df[column]
    if pd.api.types.is_float_dtype(values):
        # 12.0 would become "12.0": a float id column is almost certainly a type mistake.
        check.flag(np.ones(len(values), bool), column, "a string identifier", values)
        return values.astype(str)
    check.flag(_missing(values), column, "a non-empty string identifier", values)
    return values.astype("string").str.strip().astype(object)


_ZONE = r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"  # an ISO 8601 time's zone: Z, +01, +01:00, -0500


def _parse_timestamps(
    values: pd.Series, column: str, check: _Checker, optional: bool = False
) -> pd.Series:
    """Timestamps in UTC. Text must be ISO 8601 with a zone, as the API requires (a time
    without one would be read as UTC, silently); typed parquet timestamps without a zone
    are taken as UTC. ``optional``: empty cells are allowed (NaT)."""
    missing = _missing(values)
    if not optional:
        check.flag(missing, column, "a timestamp such as 2026-01-05T10:00:00Z", values)
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values if values.dt.tz is not None else values.dt.tz_localize("UTC")
        parsed = parsed.dt.tz_convert("UTC")
    else:
        parsed = pd.to_datetime(values.where(~missing), utc=True, errors="coerce", format="ISO8601")
        bad = parsed.isna().to_numpy() & ~missing
        check.flag(bad, column, "an ISO 8601 timestamp such as 2026-01-05T10:00:00Z", values)
        zoneless = ~bad & ~missing & ~values.astype(str).str.strip().str.contains(_ZONE).to_numpy()
        check.flag(zoneless, column, "a timestamp with a zone, such as 2026-01-05T10:00:00Z",
                   values)  # fmt: skip
    outside = ((parsed < c.EARLIEST) | (parsed >= c.LATEST)).to_numpy()
    check.flag(outside, column, f"a time from {c.EARLIEST:%Y-%m-%d} to {c.LATEST:%Y-%m-%d}", values)
    return parsed


def _parse_numbers(values: pd.Series, column: str, check: _Checker) -> pd.Series:
    missing = _missing(values)
    check.flag(missing, column, "a number", values)
    if pd.api.types.is_bool_dtype(values):
        check.flag(np.ones(len(values), bool), column, "a number", values)
    parsed = pd.to_numeric(values.where(~missing), errors="coerce")
    wrong = parsed.isna().to_numpy() & ~missing
    check.flag(wrong, column, "a number", values)
    return parsed.astype("float64")


def _require_columns(df: pd.DataFrame, columns: Iterable[str], check: _Checker) -> None:
    for column in columns:
        if column not in df.columns:
            check.file_problem(
                f"a column named '{column}'", f"columns {', '.join(map(str, df.columns))}"
            )
    check.raise_if_any()


def validate_transactions(
    df: pd.DataFrame,
    name: str = "<data>",
    label_delay: pd.Timedelta | None = None,
    in_file_order: bool = False,
) -> pd.DataFrame:
    """Return the data in contract types, sorted by time (or as the file has them, so that
    later checks can name rows), or raise ValidationFailed naming every bad cell."""
    label_delay = label_delay if label_delay is not None else pd.Timedelta(c.DEFAULT_LABEL_DELAY)
    check = _Checker(name)
    _require_columns(df, c.TRANSACTION_COLUMNS, check)
    if c.LABEL_TIMESTAMP in df.columns and c.IS_FRAUD not in df.columns:
        check.file_problem(f"a column named '{c.IS_FRAUD}' next to '{c.LABEL_TIMESTAMP}'")
    df = df.reset_index(drop=True)

    out = pd.DataFrame({column: _parse_ids(df, column, check) for column in _ID_COLUMNS})
    out[c.TIMESTAMP] = _parse_timestamps(df[c.TIMESTAMP], c.TIMESTAMP, check)
    amount = _parse_numbers(df[c.AMOUNT], c.AMOUNT, check)
    check.flag(
        (amount.notna() & ~(np.isfinite(amount) & (amount > 0))).to_numpy(),
        c.AMOUNT,
        "a finite amount greater than 0",
        df[c.AMOUNT],
    )
    out[c.AMOUNT] = amount

    duplicated = out[c.TRANSACTION_ID].duplicated(keep="first").to_numpy()
    check.flag(
        duplicated, c.TRANSACTION_ID, "a unique transaction id (seen before)", df[c.TRANSACTION_ID]
    )

    if c.IS_FRAUD in df.columns:
        out[c.IS_FRAUD] = _parse_labels(df, out[c.TIMESTAMP], label_delay, check, out)
    if c.FRAUD_SCENARIO in df.columns:
        out[c.FRAUD_SCENARIO] = pd.to_numeric(df[c.FRAUD_SCENARIO], errors="coerce").fillna(0)
        out[c.FRAUD_SCENARIO] = out[c.FRAUD_SCENARIO].astype("int8")
    check.raise_if_any()

    ignored = sorted(set(df.columns) - set(out.columns))
    if ignored:
        log.warning("%s: ignoring columns not in the contract: %s", name, ", ".join(ignored))
    order = [
        col
        for col in (*c.TRANSACTION_COLUMNS, *c.LABEL_COLUMNS, c.FRAUD_SCENARIO)
        if col in out.columns
    ]
    return out[order] if in_file_order else by_time(out[order])


def by_time(df: pd.DataFrame) -> pd.DataFrame:
    """Transactions in the offline table's order: by time, then id."""
    return df.sort_values([c.TIMESTAMP, c.TRANSACTION_ID], kind="stable").reset_index(drop=True)


def _parse_labels(
    df: pd.DataFrame,
    timestamps: pd.Series,
    label_delay: pd.Timedelta,
    check: _Checker,
    out: pd.DataFrame,
) -> pd.Series:
    is_fraud = _parse_numbers(df[c.IS_FRAUD], c.IS_FRAUD, check)
    check.flag(
        (is_fraud.notna() & ~is_fraud.isin([0, 1])).to_numpy(), c.IS_FRAUD, "0 or 1", df[c.IS_FRAUD]
    )
    if c.LABEL_TIMESTAMP in df.columns:
        raw = df[c.LABEL_TIMESTAMP]
        given = ~_missing(raw)
        label_ts = pd.Series(pd.NaT, index=df.index, dtype="datetime64[ns, UTC]")
        if given.any():
            label_ts = _parse_timestamps(raw, c.LABEL_TIMESTAMP, check, optional=True)
        label_ts = label_ts.fillna(timestamps + label_delay)
        early = (label_ts < timestamps).to_numpy() & given
        check.flag(early, c.LABEL_TIMESTAMP, "a time at or after the transaction's timestamp", raw)
    else:
        label_ts = timestamps + label_delay
    out[c.LABEL_TIMESTAMP] = label_ts
    return is_fraud.fillna(0).astype("int8")


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write all of ``df`` or nothing: a temp file in the same directory, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # Microsecond timestamps: DuckDB (Feast's offline store) cannot cast nanosecond
        # time-zone-aware timestamps, and nothing here is finer than a microsecond.
        table = pa.Table.from_pandas(df, preserve_index=False)
        pq.write_table(table, tmp, coerce_timestamps="us", allow_truncated_timestamps=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ingest_transactions(
    source: Path, destination: Path, *, replace: bool = False, label_delay_days: int = 7
) -> pd.DataFrame:
    """Validate ``source`` and add it to the offline transactions table at ``destination``.

    New ids that already exist in the table are refused (a replayed file is a mistake, not
    an update); ``replace=True`` swaps the whole table instead.
    """
    df = validate_transactions(
        read_table(source), name=source.name, label_delay=pd.Timedelta(days=label_delay_days),
        in_file_order=True,  # rows named as the file numbers them
    )  # fmt: skip
    if destination.exists() and not replace:
        existing = pd.read_parquet(destination)
        clash = df[c.TRANSACTION_ID].isin(existing[c.TRANSACTION_ID]).to_numpy()
        check = _Checker(source.name)
        check.flag(
            clash,
            c.TRANSACTION_ID,
            f"an id not already ingested in {destination}",
            df[c.TRANSACTION_ID],
        )
        check.raise_if_any()
        df = pd.concat([existing, df], ignore_index=True)
    df = by_time(df)
    write_parquet_atomic(df, destination)
    return df
