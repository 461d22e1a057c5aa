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
