"""Ingest refuses every kind of bad input with file, row, column and expectation, and
writes nothing partial."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fraudops import contract as c
from fraudops.ingest import ValidationFailed, ingest_transactions, validate_transactions

GOOD_CSV = """transaction_id,timestamp,customer_id,terminal_id,amount,is_fraud
tx1,2026-01-05T10:00:00Z,c1,t1,12.50,0
tx2,2026-01-05T10:05:00Z,c1,t2,99.99,1
tx3,2026-01-05T11:00:00+01:00,c2,t1,5,0
"""


def write(tmp_path: Path, text: str, name: str = "tx.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_csv_lands_in_contract_types(tmp_path: Path) -> None:
    dest = tmp_path / "offline" / "transactions.parquet"
    ingest_transactions(write(tmp_path, GOOD_CSV), dest)
    df = pd.read_parquet(dest)
    assert list(df.columns) == [*c.TRANSACTION_COLUMNS, *c.LABEL_COLUMNS]
    assert str(df[c.TIMESTAMP].dtype) == "datetime64[us, UTC]"  # stored to the microsecond
    # tx3's +01:00 is 10:00 UTC, so it sorts between tx1 and tx2
    assert df[c.TRANSACTION_ID].tolist() == ["tx1", "tx3", "tx2"]
    assert (df[c.LABEL_TIMESTAMP] - df[c.TIMESTAMP] == pd.Timedelta(days=7)).all()
    assert df[c.CUSTOMER_ID].map(type).eq(str).all()


@pytest.mark.parametrize(
    ("bad_line", "row", "column", "expected"),
    [
        ("tx4,2026-01-05T12:00:00Z,c3,t3,-3.5,0", 4, "amount", "greater than 0"),
        ("tx4,2026-01-05T12:00:00Z,c3,t3,inf,0", 4, "amount", "finite"),
        ("tx4,2026-01-05T12:00:00Z,c3,t3,twelve,0", 4, "amount", "a number"),
        ("tx4,yesterday noon,c3,t3,12,0", 4, "timestamp", "ISO 8601"),
        ("tx4,1960-01-05T12:00:00Z,c3,t3,12,0", 4, "timestamp", "from 1970-01-01 to 2100"),
        ("tx1,2026-01-05T12:00:00Z,c3,t3,12,0", 4, "transaction_id", "unique"),
        ("tx4,2026-01-05T12:00:00Z,,t3,12,0", 4, "customer_id", "non-empty"),
        ("tx4,2026-01-05T12:00:00Z,c3,t3,12,2", 4, "is_fraud", "0 or 1"),
        ("tx4,2026-01-05T12:00:00Z,c3,t3,12,yes", 4, "is_fraud", "a number"),
    ],
)
def test_bad_row_is_named_and_nothing_is_written(
    tmp_path: Path, bad_line: str, row: int, column: str, expected: str
) -> None:
    dest = tmp_path / "offline" / "transactions.parquet"
    with pytest.raises(ValidationFailed) as err:
        ingest_transactions(write(tmp_path, GOOD_CSV + bad_line + "\n"), dest)
    message = str(err.value)
    assert f"tx.csv, row {row}, column '{column}'" in message
    assert expected in message
    assert not dest.exists()
    assert not list(dest.parent.glob("*")) if dest.parent.exists() else True


def test_missing_column_is_named(tmp_path: Path) -> None:
    text = GOOD_CSV.replace(",amount", ",value")
    with pytest.raises(ValidationFailed, match="tx.csv: expected a column named 'amount'"):
        ingest_transactions(write(tmp_path, text), tmp_path / "out.parquet")


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed, match="a .csv or .parquet file"):
        ingest_transactions(write(tmp_path, "x", "tx.json"), tmp_path / "out.parquet")
    with pytest.raises(ValidationFailed, match="an existing file"):
        ingest_transactions(tmp_path / "nope.csv", tmp_path / "out.parquet")


def test_wrong_type_in_parquet(tmp_path: Path) -> None:
    df = pd.read_csv(write(tmp_path, GOOD_CSV))
    df["customer_id"] = [1.0, 2.0, 3.0]  # floats are not identifiers
    path = tmp_path / "tx.parquet"
    df.to_parquet(path)
    with pytest.raises(ValidationFailed, match="column 'customer_id': expected a string"):
        ingest_transactions(path, tmp_path / "out.parquet")


def test_integer_ids_become_strings(tmp_path: Path) -> None:
    df = pd.read_csv(write(tmp_path, GOOD_CSV))
    df["customer_id"] = [1, 1, 2]
    out = validate_transactions(df, "ints")
    assert out[c.CUSTOMER_ID].tolist() == ["1", "2", "1"]


def test_label_timestamp_before_event_is_refused(tmp_path: Path) -> None:
    text = GOOD_CSV.replace("is_fraud\n", "is_fraud,label_timestamp\n")
    lines = text.strip().splitlines()
    lines[1] += ",2026-01-04T00:00:00Z"
    lines[2] += ","
    lines[3] += ",2026-01-06T00:00:00Z"
    with pytest.raises(ValidationFailed, match="row 1, column 'label_timestamp'"):
        validate_transactions(pd.read_csv(write(tmp_path, "\n".join(lines)), dtype=str), "tx.csv")


def test_every_problem_is_counted(tmp_path: Path) -> None:
    bad = "\n".join(f"tx{i},2026-01-05T12:00:00Z,c,t,-1" for i in range(100, 130))
    text = "transaction_id,timestamp,customer_id,terminal_id,amount\n" + bad + "\n"
    with pytest.raises(ValidationFailed) as err:
        ingest_transactions(write(tmp_path, text), tmp_path / "out.parquet")
    assert err.value.total == 30
    assert "and 10 more" in str(err.value)


def test_append_refuses_ids_already_ingested_and_replace_swaps(tmp_path: Path) -> None:
    dest = tmp_path / "out.parquet"
    src = write(tmp_path, GOOD_CSV)
    ingest_transactions(src, dest)
    with pytest.raises(ValidationFailed, match="an id not already ingested"):
        ingest_transactions(src, dest)
    assert len(pd.read_parquet(dest)) == 3
    more = write(tmp_path, GOOD_CSV.replace("tx", "ty"), "more.csv")
    assert len(ingest_transactions(more, dest)) == 6
    assert len(ingest_transactions(more, dest, replace=True)) == 3


def test_an_id_already_ingested_is_named_by_its_row_in_the_file(tmp_path: Path) -> None:
    """Rows are the file's, not the time order's: row 1 repeats an ingested id and row 2
    is earlier in time."""
    dest = tmp_path / "out.parquet"
    ingest_transactions(write(tmp_path, GOOD_CSV), dest)
    text = (
        "transaction_id,timestamp,customer_id,terminal_id,amount,is_fraud\n"
        "tx2,2026-01-06T10:00:00Z,c1,t1,1.0,0\n"
        "tz9,2026-01-04T10:00:00Z,c1,t1,2.0,0\n"
    )
    with pytest.raises(ValidationFailed) as err:
        ingest_transactions(write(tmp_path, text, "again.csv"), dest)
    assert [(p.row, p.column, p.got) for p in err.value.problems] == [
        (1, "transaction_id", "'tx2'")
    ]
    assert len(pd.read_parquet(dest)) == 3  # nothing written


def test_timestamps_need_a_zone_and_label_times_a_range(tmp_path: Path) -> None:
    """As the API: a text timestamp without a zone is refused, not read as UTC; a label
    time outside 1970-2100 is named like any other bad cell."""
    text = (
        "transaction_id,timestamp,customer_id,terminal_id,amount,is_fraud,label_timestamp\n"
        "a,2026-01-05T10:00:00,c,t,1,0,\n"
        "b,2026-01-05T10:00:00+0100,c,t,1,0,1960-01-01T00:00:00Z\n"
        "c,2026-01-05T10:00:00Z,c,t,1,1,2026-01-20 10:00:00\n"
    )
    with pytest.raises(ValidationFailed) as err:
        ingest_transactions(write(tmp_path, text), tmp_path / "out.parquet")
    found = {(p.row, p.column, p.expected) for p in err.value.problems}
    assert found == {
        (1, "timestamp", "a timestamp with a zone, such as 2026-01-05T10:00:00Z"),
        (2, "label_timestamp", "a time from 1970-01-01 to 2100-01-01"),
        (2, "label_timestamp", "a time at or after the transaction's timestamp"),
        (3, "label_timestamp", "a timestamp with a zone, such as 2026-01-05T10:00:00Z"),
    }
