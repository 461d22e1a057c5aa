"""Every command answers --help; simulate and ingest work end to end on small data."""

from __future__ import annotations

import pandas as pd
import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from fraudops.cli import app
from fraudops.settings import Settings

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
    assert "bad.csv, row 2, column 'amount'" in result.output
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
    from fraudops.settings import get_settings

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
