"""Ingest refuses every kind of bad input with file, row, column and expectation, and
writes nothing partial."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fraudops.core import contract as c
from fraudops.data.ingest import ValidationFailed, ingest_transactions, validate_transactions

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
    ("bad_line", "line", "column", "expected"),
    [  # CSV rows are named by their line: the header is line 1, the bad row line 5
        ("tx4,2026-01-05T12:00:00Z,c3,t3,-3.5,0", 5, "amount", "0 or more"),
        ("tx4,2026-01-05T12:00:00Z,c3,t3,inf,0", 5, "amount", "finite"),
        ("tx4,2026-01-05T12:00:00Z,c3,t3,twelve,0", 5, "amount", "a number"),
        ("tx4,yesterday noon,c3,t3,12,0", 5, "timestamp", "ISO 8601"),
        ("tx4,1960-01-05T12:00:00Z,c3,t3,12,0", 5, "timestamp", "from 1970-01-01 to 2100"),
        ("tx1,2026-01-05T12:00:00Z,c3,t3,12,0", 5, "transaction_id", "unique"),
        ("tx4,2026-01-05T12:00:00Z,,t3,12,0", 5, "customer_id", "non-empty"),
        ("tx4,2026-01-05T12:00:00Z,c3,t3,12,2", 5, "is_fraud", "0 or 1"),
        ("tx4,2026-01-05T12:00:00Z,c3,t3,12,yes", 5, "is_fraud", "a number"),
    ],
)
def test_bad_row_is_named_and_nothing_is_written(
    tmp_path: Path, bad_line: str, line: int, column: str, expected: str
) -> None:
    dest = tmp_path / "offline" / "transactions.parquet"
    with pytest.raises(ValidationFailed) as err:
        ingest_transactions(write(tmp_path, GOOD_CSV + bad_line + "\n"), dest)
    message = str(err.value)
    assert f"tx.csv, line {line}, column '{column}'" in message
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
    """Rows are the file's, not the time order's: line 2 (the first row) repeats an
    ingested id and line 3 is earlier in time."""
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
        (2, "transaction_id", "'tx2'")
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
        (2, "timestamp", "a timestamp with a zone, such as 2026-01-05T10:00:00Z"),
        (3, "label_timestamp", "a time from 1970-01-01 to 2100-01-01"),
        (3, "label_timestamp", "a time at or after the transaction's timestamp"),
        (4, "label_timestamp", "a timestamp with a zone, such as 2026-01-05T10:00:00Z"),
    }


def test_problems_are_sorted_by_line_and_show_values_as_the_file_holds_them(
    tmp_path: Path,
) -> None:
    """Problems of several columns come in the file's order, and a parquet file's numbers
    read 0.0 and its rows are called rows (a parquet file has no lines)."""
    text = (
        "transaction_id,timestamp,customer_id,terminal_id,amount\n"
        "a,2026-01-05T10:00:00Z,c,t,-1\n"
        "b,yesterday,c,t,1\n"
        "c,2026-01-05T10:00:00Z,,t,-2\n"
    )
    with pytest.raises(ValidationFailed) as err:
        ingest_transactions(write(tmp_path, text), tmp_path / "out.parquet")
    assert [(p.unit, p.row, p.column) for p in err.value.problems] == [
        ("line", 2, "amount"),
        ("line", 3, "timestamp"),
        ("line", 4, "customer_id"),
        ("line", 4, "amount"),
    ]
    frame = pd.DataFrame(
        {
            "transaction_id": ["a", "b"],
            "timestamp": pd.to_datetime(["2026-01-05", "2026-01-06"]),
            "customer_id": ["c", "c"],
            "terminal_id": ["t", "t"],
            "amount": [1.0, float("-0.5")],
        }
    )
    frame.to_parquet(tmp_path / "tx.parquet")
    with pytest.raises(ValidationFailed) as err:
        ingest_transactions(tmp_path / "tx.parquet", tmp_path / "out.parquet")
    assert str(err.value.problems[0]) == (
        "tx.parquet, row 2, column 'amount': expected a finite amount of 0 or more, got -0.5"
    )


def test_a_zero_amount_is_a_transaction(tmp_path: Path) -> None:
    """A card verification (amount 0) is ingested and its request features are finite."""
    import numpy as np

    from fraudops.features.maths import request_features

    text = GOOD_CSV + "tx4,2026-01-05T12:00:00Z,c3,t3,0,0\n"
    df = ingest_transactions(write(tmp_path, text), tmp_path / "out.parquet")
    assert df.loc[df[c.TRANSACTION_ID] == "tx4", c.AMOUNT].item() == 0.0
    features = request_features(np.array([0.0]), np.array([1_767_607_200_000_000]))
    assert features["tx_amount_log"][0] == 0.0  # log1p(0)
    assert all(np.isfinite(v).all() for v in features.values())


def test_reject_to_sets_bad_rows_aside_and_ingests_the_rest(tmp_path: Path) -> None:
    text = (
        GOOD_CSV
        + "tx4,2026-01-05T12:00:00Z,c3,t3,-3,0\n"
        + "tx5,soon,c3,t3,twelve,0\n"
        + "tx6,2026-01-05T12:30:00Z,c3,t3,7,0\n"
    )
    source, dest, rejects = write(tmp_path, text), tmp_path / "out.parquet", tmp_path / "bad.csv"
    with pytest.raises(ValidationFailed):  # without --reject-to: all or nothing
        ingest_transactions(source, dest)
    assert not dest.exists()
    df = ingest_transactions(source, dest, reject_to=rejects)
    assert sorted(df[c.TRANSACTION_ID]) == ["tx1", "tx2", "tx3", "tx6"]
    bad = pd.read_csv(rejects, dtype=str)
    assert bad["line"].tolist() == ["5", "6"]
    assert bad["transaction_id"].tolist() == ["tx4", "tx5"]
    assert bad["amount"].tolist() == ["-3", "twelve"]  # as the file has them
    assert bad["reason"][0] == "column 'amount': expected a finite amount of 0 or more, got '-3'"
    assert "column 'timestamp'" in bad["reason"][1] and "column 'amount'" in bad["reason"][1]


HANDBOOK_COLUMNS = (
    "TX_DATETIME=timestamp,TRANSACTION_ID=transaction_id,CUSTOMER_ID=customer_id,"
    "TERMINAL_ID=terminal_id,TX_AMOUNT=amount,TX_FRAUD=is_fraud"
)


def handbook_frame() -> pd.DataFrame:
    """Shaped like the Fraud Detection Handbook's simulated data: upper-case columns,
    integer ids, naive datetimes, and columns the contract does not use."""
    return pd.DataFrame(
        {
            "TRANSACTION_ID": [0, 1, 2],
            "TX_DATETIME": pd.to_datetime(
                ["2018-04-01 00:00:31", "2018-04-01 00:02:10", "2018-04-01 00:07:56"]
            ),
            "CUSTOMER_ID": [596, 4961, 2],
            "TERMINAL_ID": [3156, 3412, 1365],
            "TX_AMOUNT": [57.16, 81.51, 146.00],
            "TX_TIME_SECONDS": [31, 130, 476],
            "TX_TIME_DAYS": [0, 0, 0],
            "TX_FRAUD": [0, 0, 1],
            "TX_FRAUD_SCENARIO": [0, 0, 1],
        }
    )


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_handbook_file_maps_its_columns(tmp_path: Path, suffix: str) -> None:
    from fraudops.data.ingest import TRANSACTION_FILE_COLUMNS, parse_column_mapping

    path = tmp_path / f"handbook{suffix}"
    frame = handbook_frame()
    frame.to_parquet(path) if suffix == ".parquet" else frame.to_csv(path, index=False)
    mapping = parse_column_mapping(HANDBOOK_COLUMNS, None, TRANSACTION_FILE_COLUMNS)
    df = ingest_transactions(path, tmp_path / "out.parquet", columns=mapping, timezone="UTC")
    assert df[c.TRANSACTION_ID].tolist() == ["0", "1", "2"]
    assert df[c.CUSTOMER_ID].tolist() == ["596", "4961", "2"]
    assert df[c.TIMESTAMP].iloc[0] == pd.Timestamp("2018-04-01 00:00:31", tz="UTC")
    assert df[c.IS_FRAUD].tolist() == [0, 0, 1]
    paris = ingest_transactions(
        path, tmp_path / "out.parquet", columns=mapping, timezone="Europe/Paris", replace=True
    )  # 2018-04-01 is summer time in Paris: UTC+2
    assert paris[c.TIMESTAMP].iloc[0] == pd.Timestamp("2018-03-31 22:00:31", tz="UTC")


def test_mapped_columns_are_named_as_the_file_names_them(tmp_path: Path) -> None:
    from fraudops.data.ingest import TRANSACTION_FILE_COLUMNS, parse_column_mapping

    frame = handbook_frame()
    frame.loc[2, "TX_DATETIME"] = pd.NaT
    path = tmp_path / "handbook.parquet"
    frame.to_parquet(path)
    mapping = parse_column_mapping(HANDBOOK_COLUMNS, None, TRANSACTION_FILE_COLUMNS)
    with pytest.raises(ValidationFailed) as err:
        ingest_transactions(path, tmp_path / "out.parquet", columns=mapping, timezone="UTC")
    assert [str(p) for p in err.value.problems] == [
        "handbook.parquet, row 3, column 'TX_DATETIME': expected a timestamp such as "
        "2026-01-05T10:00:00Z, got an empty cell",
    ]
    with pytest.raises(ValidationFailed, match="a column named 'TX_AMT' \\(mapped to amount\\)"):
        ingest_transactions(path, tmp_path / "out.parquet", columns={"TX_AMT": "amount"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("TX_AMOUNT=amount,TX_FRAUD", "expected FILE_COLUMN=contract_column pairs"),
        ("TX_AMOUNT=value", "'value' is not a contract column"),
        ("A=amount,B=amount", "several columns are mapped to amount"),
    ],
)
def test_a_bad_column_mapping_is_explained(text: str, message: str) -> None:
    from fraudops.data.ingest import TRANSACTION_FILE_COLUMNS, parse_column_mapping

    with pytest.raises(ValueError, match=message):
        parse_column_mapping(text, None, TRANSACTION_FILE_COLUMNS)


def test_naive_times_that_a_clock_change_skips_are_refused(tmp_path: Path) -> None:
    text = (
        "transaction_id,timestamp,customer_id,terminal_id,amount\n"
        "a,2026-03-29 02:30:00,c,t,1\n"  # Paris skips 02:00-03:00 that night
        "b,2026-03-29 03:30:00,c,t,1\n"
    )
    with pytest.raises(ValidationFailed) as err:
        ingest_transactions(write(tmp_path, text), tmp_path / "o.parquet", timezone="Europe/Paris")
    assert [(p.row, p.column) for p in err.value.problems] == [(2, "timestamp")]
    assert "exists once in Europe/Paris" in err.value.problems[0].expected
