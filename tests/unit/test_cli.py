"""Every command answers --help; simulate and ingest work end to end on small data."""

from __future__ import annotations

import pandas as pd
import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from fraudops.cli.app import app
from fraudops.core.settings import Settings

runner = CliRunner()


def all_command_paths(group: typer.Typer) -> list[list[str]]:
    paths: list[list[str]] = [[]]

    def walk(command, prefix: list[str]) -> None:  # type: ignore[no-untyped-def]
        for name, sub in getattr(command, "commands", {}).items():
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(get_command(group), [])
    return paths


@pytest.mark.parametrize("path", all_command_paths(app), ids=lambda p: " ".join(p) or "root")
def test_help(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_simulate_then_ingest(settings: Settings) -> None:
    out = settings.raw_dir / "small.parquet"
    result = runner.invoke(
        app,
        ["simulate", "--customers", "50", "--terminals", "100", "--days", "5", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    simulated = pd.read_parquet(out)
    assert len(simulated) > 0
    result = runner.invoke(app, ["ingest", str(out)])
    assert result.exit_code == 0, result.output
    ingested = pd.read_parquet(settings.transactions_path)
    assert len(ingested) == len(simulated)


def test_ingest_bad_file_names_row_and_column(settings: Settings) -> None:
    bad = settings.data_dir / "bad.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "transaction_id,timestamp,customer_id,terminal_id,amount\n"
        "a,2026-01-01T00:00:00Z,c,t,1\n"
        "b,2026-01-01T00:00:00Z,c,t,-4\n"
    )
    result = runner.invoke(app, ["ingest", str(bad)])
    assert result.exit_code == 2
    assert "bad.csv, line 3, column 'amount'" in result.output  # the header is line 1
    assert not settings.transactions_path.exists()


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.csv", b"", "a CSV file with a header row, got an empty file"),
        ("broken.parquet", b"PAR1 not really parquet", "a readable parquet file"),
        ("latin1.csv", "transaction_id\ncaf\xe9\n".encode("latin-1"), "a UTF-8 CSV file"),
    ],
)
def test_unreadable_files_are_named_without_a_traceback(
    settings: Settings, name: str, content: bytes, expected: str
) -> None:
    path = settings.data_dir / name
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    result = runner.invoke(app, ["ingest", str(path)])
    assert result.exit_code == 2, result.output
    assert name in result.output and expected in result.output
    assert isinstance(result.exception, SystemExit)  # an exit with the message, no traceback


def test_a_bad_setting_names_the_variable(settings: Settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from fraudops.core.settings import get_settings

    monkeypatch.setenv("FRAUDOPS_ONLINE_STORE", "reddis")
    get_settings.cache_clear()
    result = runner.invoke(app, ["features", "build"])
    assert result.exit_code == 2, result.output
    assert "FRAUDOPS_ONLINE_STORE" in result.output and "'reddis'" in result.output
    assert isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/fraud-detector", "expected models:/<name>@<alias> or models:/<name>/<version>"),
        ("models:/fraud-detector/7", "models:/fraud-detector/7"),
        ("models:/fraud-detector@champion", "no version of fraud-detector has alias @champion"),
    ],
)
def test_evaluate_names_a_model_that_is_not_there(
    settings: Settings, uri: str, expected: str
) -> None:
    result = runner.invoke(app, ["evaluate", "--model-uri", uri, "--start", "2026-01-01"])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert isinstance(result.exception, SystemExit)


def test_help_texts_survive_rich_markup() -> None:
    """The help is rendered as rich markup, where "[default: ...]" is a tag that vanishes
    (help read "Random seed ."): no option's help may contain one."""
    import re

    from typer.main import get_command

    def commands(command, prefix=()):  # type: ignore[no-untyped-def]
        yield prefix, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from commands(sub, (*prefix, name))

    tags = []
    for path, command in commands(get_command(app)):
        for param in command.params:
            if re.search(r"\[[a-zA-Z/]", getattr(param, "help", None) or ""):
                tags.append((" ".join(path), param.name, param.help))
    assert not tags
    shown = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "(default: FRAUDOPS_TRAIN_DAYS, 7)" in shown


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--engine", "bogus"], "'bogus' is not one of"),
        (["--every", "0s"], "expected a positive duration"),
        (["--every", "-5m"], "expected a positive duration"),
        (["--every", "m"], "expected a positive duration"),
        ([], "no feature views are registered with Feast: run `fraudops features apply` first"),
    ],
)
def test_materialize_refuses_what_it_cannot_do(
    settings: Settings, args: list[str], expected: str
) -> None:
    result = runner.invoke(app, ["materialize", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert expected in result.output


def test_a_handbook_file_and_its_labels_ingest_with_their_own_columns(settings: Settings) -> None:
    """The Fraud Detection Handbook's shape (TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID,
    TERMINAL_ID, TX_AMOUNT, TX_FRAUD; integer ids, naive datetimes), mapped on the command
    line, then chargebacks of the same shape mapped by a YAML file."""
    settings.data_dir.mkdir(parents=True)
    handbook = settings.data_dir / "handbook.csv"
    handbook.write_text(
        "TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS,TX_FRAUD\n"
        "0,2018-04-01 00:00:31,596,3156,57.16,31,0\n"
        "1,2018-04-01 00:02:10,4961,3412,81.51,130,0\n"
        "2,2018-04-01 00:07:56,2,1365,0.00,476,0\n"
    )
    columns = (
        "TRANSACTION_ID=transaction_id,TX_DATETIME=timestamp,CUSTOMER_ID=customer_id,"
        "TERMINAL_ID=terminal_id,TX_AMOUNT=amount,TX_FRAUD=is_fraud"
    )
    result = runner.invoke(app, ["ingest", str(handbook), "--columns", columns])
    assert result.exit_code == 0, result.output
    ingested = pd.read_parquet(settings.transactions_path)
    assert ingested["customer_id"].tolist() == ["596", "4961", "2"]
    assert str(ingested["timestamp"].iloc[0]) == "2018-04-01 00:00:31+00:00"

    chargebacks = settings.data_dir / "chargebacks.csv"
    chargebacks.write_text("TRANSACTION_ID,TX_FRAUD,LABEL_DATETIME\n2,1,2018-04-03 09:00:00\n")
    mapping = settings.data_dir / "labels.yaml"
    mapping.write_text(
        "TRANSACTION_ID: transaction_id\nTX_FRAUD: is_fraud\nLABEL_DATETIME: label_timestamp\n"
    )
    result = runner.invoke(
        app,
        [
            "labels",
            "ingest",
            str(chargebacks),
            "--columns-file",
            str(mapping),
            "--timezone",
            "Europe/Paris",
        ],
    )
    assert result.exit_code == 0, result.output
    labelled = pd.read_parquet(settings.transactions_path).set_index("transaction_id")
    assert labelled.loc["2", "is_fraud"] == 1
    assert str(labelled.loc["2", "label_timestamp"]) == "2018-04-03 07:00:00+00:00"

    bad = settings.data_dir / "bad.csv"
    bad.write_text("TRANSACTION_ID,TX_FRAUD,LABEL_DATETIME\n0,2,2018-04-03 09:00:00\n")
    result = runner.invoke(
        app,
        ["labels", "ingest", str(bad), "--columns-file", str(mapping)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 2
    assert "bad.csv, line 2, column 'TX_FRAUD': expected 0 or 1, got '2'" in result.output


def test_a_bad_column_mapping_or_zone_is_a_usage_error(settings: Settings) -> None:
    result = runner.invoke(
        app, ["ingest", "x.csv", "--columns", "TX_AMOUNT=value"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2
    assert "error: invalid value for --columns / --columns-file" in result.output
    assert "'value' is not a contract column" in result.output
    result = runner.invoke(
        app, ["ingest", "x.csv", "--timezone", "Mars/Olympus"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2 and "expected an IANA time zone" in result.output


def test_help_reads_as_paragraphs_and_flags_show_no_type() -> None:
    """A paragraph of a docstring is one paragraph on screen, whatever the terminal's
    width (not the source's line breaks); flags take no value, so show no <bool>."""
    wide = runner.invoke(app, ["stream", "--help"], env={"COLUMNS": "250"}).output
    assert "with a consumer group and scores events through the same core as the HTTP API" in wide
    for path in all_command_paths(app):
        shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"}).output
        assert "<bool>" not in shown, path


def test_usage_errors_have_the_one_error_style() -> None:
    result = runner.invoke(app, ["materialize", "--every", "0s"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert result.output.startswith("error: invalid value")
    assert "materialize --help`" in result.output  # `fraudops materialize --help`
    assert "╭" not in result.output  # no boxed "Error" panel


def test_ingest_reject_to_sets_bad_rows_aside(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)
    source = settings.data_dir / "mixed.csv"
    source.write_text(
        "transaction_id,timestamp,customer_id,terminal_id,amount\n"
        "a,2026-01-01T00:00:00Z,c,t,0\n"  # a card verification: ingested
        "b,2026-01-01T00:01:00Z,c,t,-4\n"
    )
    rejects = settings.data_dir / "rejects.csv"
    result = runner.invoke(app, ["ingest", str(source), "--reject-to", str(rejects)])
    assert result.exit_code == 0, result.output
    assert pd.read_parquet(settings.transactions_path)["transaction_id"].tolist() == ["a"]
    assert pd.read_csv(rejects, dtype=str)[["line", "transaction_id"]].values.tolist() == [
        ["3", "b"]
    ]
