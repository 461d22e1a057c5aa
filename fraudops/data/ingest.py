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
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraudops.core import contract as c

log = logging.getLogger(__name__)

MAX_REPORTED_PROBLEMS = 20
_ID_COLUMNS = (c.TRANSACTION_ID, c.CUSTOMER_ID, c.TERMINAL_ID)
# Columns a transactions file may carry, and the ones a labels file may: what --columns
# may map a user's columns to.
TRANSACTION_FILE_COLUMNS = (*c.TRANSACTION_COLUMNS, *c.LABEL_COLUMNS, c.FRAUD_SCENARIO)


@dataclass(frozen=True)
class Numbering:
    """How a file's rows are named in messages: CSV rows by the line a text editor shows
    (the header is line 1), parquet rows and in-memory frames by their 1-based row."""

    unit: str
    first: int  # the number of the first data row

    @classmethod
    def of(cls, path: Path) -> Numbering:
        return CSV_LINES if path.suffix.lower() == ".csv" else ROWS


CSV_LINES = Numbering("line", 2)
ROWS = Numbering("row", 1)


@dataclass(frozen=True)
class Problem:
    """One bad value: where it is and what was expected."""

    file: str
    row: int | None  # the row's number in ``unit``; None for file-level problems
    column: str | None  # as the file names it
    expected: str
    got: str = ""
    unit: str = "row"

    def __str__(self) -> str:
        where = [self.file]
        if self.row is not None:
            where.append(f"{self.unit} {self.row}")
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


# --- a user's own columns -----------------------------------------------------------------
def parse_column_mapping(
    text: str | None, file: Path | None, allowed: Iterable[str]
) -> dict[str, str]:
    """``--columns TX_AMOUNT=amount,...`` and/or ``--columns-file mapping.yaml`` (a YAML
    mapping of the file's column to the contract's) as {file column: contract column}.
    Raises ValueError, for people, when a pair is malformed or names no contract column."""
    mapping: dict[str, str] = {}
    if file is not None:
        import yaml

        try:
            loaded = yaml.safe_load(file.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(
                f"{file}: cannot read the column mapping: {_first_line(exc)}"
            ) from None
        if not isinstance(loaded, dict) or not all(
            isinstance(k, str | int) and isinstance(v, str) for k, v in loaded.items()
        ):
            raise ValueError(
                f"{file}: expected a YAML mapping of your columns to the contract's, such as "
                "'TX_AMOUNT: amount' on each line"
            )
        mapping.update({str(k).strip(): v.strip() for k, v in loaded.items()})
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        source, sep, target = pair.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ValueError(f"expected FILE_COLUMN=contract_column pairs, got {pair.strip()!r}")
        mapping[source.strip()] = target.strip()
    allowed = tuple(allowed)
    for source, target in mapping.items():
        if target not in allowed:
            raise ValueError(
                f"{source}={target}: {target!r} is not a contract column; expected one of "
                f"{', '.join(allowed)}"
            )
    targets = list(mapping.values())
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise ValueError(f"several columns are mapped to {', '.join(twice)}")
    return mapping


def apply_column_mapping(
    df: pd.DataFrame, mapping: dict[str, str], name: str
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The frame with its columns renamed to the contract's, and the file's name of each
    renamed column (for messages); a file-level problem when a mapped column is missing or
    a target is already in the file."""
    if not mapping:
        return df, {}
    check = _Checker(name)
    present = list(map(str, df.columns))
    for source, target in mapping.items():
        if source not in present:
            check.file_problem(
                f"a column named '{source}' (mapped to {target})", f"columns {', '.join(present)}"
            )
        elif target in present and target not in mapping:
            check.file_problem(
                f"one column for {target}", f"both '{source}' (mapped to it) and '{target}'"
            )
    check.raise_if_any()
    return df.rename(columns=mapping), {target: source for source, target in mapping.items()}


def _shown(value: object) -> str:
    """A cell as the file holds it: '12.50' for text, 0.0 for a number (not
    np.float64(0.0)), an empty cell as empty."""
    if isinstance(value, str):
        return repr(value)
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return "an empty cell"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, datetime | pd.Timestamp):
        return str(value)
    try:
        if pd.isna(value):  # type: ignore[call-overload]
            return "an empty cell"
    except (TypeError, ValueError):
        pass
    return repr(value)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__


class _Checker:
    """Collects the problems of one file; reports them sorted by row, numbered as the file
    numbers them (:class:`Numbering`), with columns named as the file names them."""

    def __init__(
        self, name: str, numbering: Numbering = ROWS, columns: dict[str, str] | None = None
    ):
        self.name = name
        self.numbering = numbering
        self.columns = columns or {}  # contract column -> the file's, where they differ
        self._flags: list[tuple[np.ndarray, str, str, pd.Series]] = []
        self._file_problems: list[Problem] = []

    @property
    def total(self) -> int:
        return len(self._file_problems) + sum(len(rows) for rows, *_ in self._flags)

    def flag(self, mask: np.ndarray, column: str, expected: str, values: pd.Series) -> None:
        rows = np.flatnonzero(mask)
        if len(rows):
            self._flags.append((rows, column, expected, values))

    def file_problem(self, expected: str, got: str = "") -> None:
        self._file_problems.append(Problem(self.name, None, None, expected, got))

    @property
    def has_file_problems(self) -> bool:
        return bool(self._file_problems)

    @property
    def problems(self) -> list[Problem]:
        """File-level problems, then the first MAX_REPORTED_PROBLEMS bad cells by row (and,
        within a row, in the order the columns were checked)."""
        found = list(self._file_problems)
        if self._flags:
            rows = np.concatenate([r for r, *_ in self._flags])
            which = np.concatenate([np.full(len(r), k) for k, (r, *_) in enumerate(self._flags)])
            at = np.concatenate([np.arange(len(r)) for r, *_ in self._flags])
            order = np.lexsort((which, rows))[: max(MAX_REPORTED_PROBLEMS - len(found), 0)]
            for i in order:
                row_positions, column, expected, values = self._flags[which[i]]
                row = int(row_positions[at[i]])
                found.append(
                    Problem(
                        self.name,
                        row + self.numbering.first,
                        self.columns.get(column, column),
                        expected,
                        _shown(values.iloc[row]),
                        self.numbering.unit,
                    )
                )
        return found

    def bad_rows(self) -> np.ndarray:
        """0-based positions of every row with a problem, sorted."""
        if not self._flags:
            return np.array([], dtype=np.int64)
        return np.unique(np.concatenate([r for r, *_ in self._flags]))

    def reasons(self) -> dict[int, str]:
        """Every bad row's problems, by 0-based position: what a reject file says."""
        by_row: dict[int, list[str]] = {}
        for rows, column, expected, values in self._flags:
            shown = self.columns.get(column, column)
            for row in rows.tolist():
                by_row.setdefault(row, []).append(
                    f"column '{shown}': expected {expected}, got {_shown(values.iloc[row])}"
                )
        return {row: "; ".join(texts) for row, texts in by_row.items()}

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
    values: pd.Series,
    column: str,
    check: _Checker,
    optional: bool = False,
    timezone: str | None = None,
) -> pd.Series:
    """Timestamps in UTC. Text must be ISO 8601 with a zone, as the API requires (a time
    without one would be read as UTC, silently), unless ``timezone`` says in which zone
    the file's naive times are; typed parquet timestamps without a zone are taken in
    ``timezone`` (default UTC). ``optional``: empty cells are allowed (NaT)."""
    missing = _missing(values)
    if not optional:
        check.flag(missing, column, "a timestamp such as 2026-01-05T10:00:00Z", values)
    zone = timezone or "UTC"
    unclear = np.zeros(len(values), dtype=bool)
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
        if values.dt.tz is None:
            parsed = values.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
            unclear = parsed.isna().to_numpy() & ~missing
        parsed = parsed.dt.tz_convert("UTC")
    else:
        text = values.where(~missing).astype("string").str.strip()
        zoned = text.str.contains(_ZONE).fillna(False).to_numpy(dtype=bool)
        if timezone is None:
            parsed = pd.to_datetime(
                text.astype(object), utc=True, errors="coerce", format="ISO8601"
            )
            bad = parsed.isna().to_numpy() & ~missing
            check.flag(bad, column, "an ISO 8601 timestamp such as 2026-01-05T10:00:00Z", values)
            zoneless = ~bad & ~missing & ~zoned
            check.flag(
                zoneless, column, "a timestamp with a zone, such as 2026-01-05T10:00:00Z", values
            )
        else:
            parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
            if zoned.any():
                parsed[zoned] = pd.to_datetime(
                    text[zoned].astype(object), utc=True, errors="coerce", format="ISO8601"
                )
            naive = ~zoned & ~missing
            local = pd.to_datetime(
                text.where(naive).astype(object), errors="coerce", format="ISO8601"
            )
            readable = naive & local.notna().to_numpy()
            localized = local.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
            unclear = readable & localized.isna().to_numpy()
            parsed[naive] = localized[naive].dt.tz_convert("UTC")
            bad = parsed.isna().to_numpy() & ~missing & ~unclear
            check.flag(bad, column, "an ISO 8601 timestamp such as 2026-01-05 10:00:00", values)
    # skipped or repeated by a daylight-saving change: refused, not guessed
    check.flag(
        unclear,
        column,
        f"a time that exists once in {zone} (a daylight-saving change skips or repeats it)",
        values,
    )
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
    *,
    numbering: Numbering = ROWS,
    timezone: str | None = None,
) -> pd.DataFrame:
    """Return the data in contract types, sorted by time (or as the file has them, so that
    later checks can name rows), or raise ValidationFailed naming every bad cell."""
    out, check = check_transactions(df, name, label_delay, numbering=numbering, timezone=timezone)
    check.raise_if_any()
    return out if in_file_order else by_time(out)


def check_transactions(
    df: pd.DataFrame,
    name: str = "<data>",
    label_delay: pd.Timedelta | None = None,
    *,
    numbering: Numbering = ROWS,
    columns: dict[str, str] | None = None,
    timezone: str | None = None,
) -> tuple[pd.DataFrame, _Checker]:
    """The data in contract types, in file order, and the checker holding its problems
    (bad rows hold NaN or NaT); raises ValidationFailed only for file-level problems.
    ``columns``: the file's name of each renamed column, for messages."""
    label_delay = label_delay if label_delay is not None else pd.Timedelta(c.DEFAULT_LABEL_DELAY)
    check = _Checker(name, numbering, columns)
    _require_columns(df, c.TRANSACTION_COLUMNS, check)
    if c.LABEL_TIMESTAMP in df.columns and c.IS_FRAUD not in df.columns:
        check.file_problem(f"a column named '{c.IS_FRAUD}' next to '{c.LABEL_TIMESTAMP}'")
    df = df.reset_index(drop=True)

    out = pd.DataFrame({column: _parse_ids(df, column, check) for column in _ID_COLUMNS})
    out[c.TIMESTAMP] = _parse_timestamps(df[c.TIMESTAMP], c.TIMESTAMP, check, timezone=timezone)
    amount = _parse_numbers(df[c.AMOUNT], c.AMOUNT, check)
    check.flag(  # 0 is a card verification, scored like any transaction
        (amount.notna() & ~(np.isfinite(amount) & (amount >= 0))).to_numpy(),
        c.AMOUNT,
        "a finite amount of 0 or more",
        df[c.AMOUNT],
    )
    out[c.AMOUNT] = amount

    duplicated = out[c.TRANSACTION_ID].duplicated(keep="first").to_numpy()
    check.flag(
        duplicated, c.TRANSACTION_ID, "a unique transaction id (seen before)", df[c.TRANSACTION_ID]
    )

    if c.IS_FRAUD in df.columns:
        out[c.IS_FRAUD] = _parse_labels(df, out[c.TIMESTAMP], label_delay, check, out, timezone)
    if c.FRAUD_SCENARIO in df.columns:
        out[c.FRAUD_SCENARIO] = pd.to_numeric(df[c.FRAUD_SCENARIO], errors="coerce").fillna(0)
        out[c.FRAUD_SCENARIO] = out[c.FRAUD_SCENARIO].astype("int8")
    if check.has_file_problems:
        check.raise_if_any()

    ignored = sorted(set(map(str, df.columns)) - set(out.columns))
    if ignored:
        log.warning("%s: ignoring columns not in the contract: %s", name, ", ".join(ignored))
    order = [
        col
        for col in (*c.TRANSACTION_COLUMNS, *c.LABEL_COLUMNS, c.FRAUD_SCENARIO)
        if col in out.columns
    ]
    return out[order], check


def by_time(df: pd.DataFrame) -> pd.DataFrame:
    """Transactions in the offline table's order: by time, then id."""
    return df.sort_values([c.TIMESTAMP, c.TRANSACTION_ID], kind="stable").reset_index(drop=True)


def _parse_labels(
    df: pd.DataFrame,
    timestamps: pd.Series,
    label_delay: pd.Timedelta,
    check: _Checker,
    out: pd.DataFrame,
    timezone: str | None = None,
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
            label_ts = _parse_timestamps(
                raw, c.LABEL_TIMESTAMP, check, optional=True, timezone=timezone
            )
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
    source: Path,
    destination: Path,
    *,
    replace: bool = False,
    label_delay_days: int = 7,
    columns: dict[str, str] | None = None,
    timezone: str | None = None,
    reject_to: Path | None = None,
) -> pd.DataFrame:
    """Validate ``source`` and add it to the offline transactions table at ``destination``.

    New ids that already exist in the table are refused (a replayed file is a mistake, not
    an update); ``replace=True`` swaps the whole table instead. ``columns`` maps the
    file's columns to the contract's ({file column: contract column}); ``timezone`` is
    where naive times are read. Any bad row stops the whole file, unless ``reject_to``
    names a CSV file: the bad rows go there, as the file has them, with their line (or
    row) and reason, and the others are ingested.
    """
    raw = read_table(source)
    renamed, file_columns = apply_column_mapping(raw, columns or {}, source.name)
    df, check = check_transactions(
        renamed,
        source.name,
        pd.Timedelta(days=label_delay_days),
        numbering=Numbering.of(source),
        columns=file_columns,
        timezone=timezone,
    )
    if destination.exists() and not replace:
        existing = pd.read_parquet(destination)
        clash = df[c.TRANSACTION_ID].isin(existing[c.TRANSACTION_ID]).to_numpy()
        check.flag(
            clash,
            c.TRANSACTION_ID,
            f"an id not already ingested in {destination}",
            renamed[c.TRANSACTION_ID].reset_index(drop=True),
        )
    else:
        existing = None
    if reject_to is None:
        check.raise_if_any()
    elif check.total:
        bad = check.bad_rows()
        write_rejects(raw, bad, check, reject_to)
        log.warning(
            "%s: %s of %s row(s) failed validation, written with their reasons to %s; "
            "ingesting the other %s",
            source.name,
            f"{len(bad):,}",
            f"{len(df):,}",
            reject_to,
            f"{len(df) - len(bad):,}",
        )
        df = df.drop(index=bad).reset_index(drop=True)
    if existing is not None:
        df = pd.concat([existing, df], ignore_index=True)
    df = by_time(df)
    write_parquet_atomic(df, destination)
    return df


def write_rejects(raw: pd.DataFrame, bad: np.ndarray, check: _Checker, path: Path) -> None:
    """The rows that failed validation, as the file has them, after their line (or row)
    number and the reason, as CSV."""
    reasons = check.reasons()
    rows = raw.reset_index(drop=True).iloc[bad]
    unit = check.numbering.unit
    rejected = pd.DataFrame(
        {
            unit: bad + check.numbering.first,
            "reason": [reasons[int(i)] for i in bad],
        }
    )
    rejected = pd.concat([rejected, rows.reset_index(drop=True)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    rejected.to_csv(path, index=False)
