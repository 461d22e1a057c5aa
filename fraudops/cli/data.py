"""Data in: ``fraudops simulate`` and ``fraudops ingest``.

fraudops simulate --days 30 --out data/raw/transactions.parquet
fraudops ingest data/raw/transactions.parquet
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from fraudops.cli.common import (
    console,
    fail,
    progress_bar,
)
from fraudops.cli.options import ColumnsFileOption, ColumnsOption, TimezoneOption
from fraudops.core.settings import get_settings


def simulate(
    customers: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 5000,
    terminals: Annotated[int, typer.Option(min=1, help="Number of terminals.")] = 10000,
    days: Annotated[int, typer.Option(min=1, help="Days of transactions.")] = 183,
    start_date: Annotated[
        datetime, typer.Option(formats=["%Y-%m-%d"], help="First day (YYYY-MM-DD).")
    ] = datetime(2026, 4, 1),
    seed: Annotated[
        int | None, typer.Option(help="Random seed (default: FRAUDOPS_SEED, 42).")
    ] = None,
    drift_date: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"], help="Shift behaviour from this day on (for drift tests)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Output parquet (default: <data_dir>/raw/transactions.parquet)."),
    ] = None,
) -> None:
    """Simulate labelled card transactions (Fraud Detection Handbook model, plus card testing
    and account takeover) and write them to parquet."""
    from fraudops.data.simulator import simulate as run_simulation
    from fraudops.data.simulator import write_parquet

    settings = get_settings()
    out = out or settings.raw_dir / "transactions.parquet"
    with progress_bar() as bar:
        task = bar.add_task("simulating days", total=days)
        df = run_simulation(
            customers=customers,
            terminals=terminals,
            days=days,
            start_date=start_date.date(),
            seed=settings.seed if seed is None else seed,
            drift_date=drift_date.date() if drift_date else None,
            progress=lambda done: bar.update(task, completed=done),
        )
    write_parquet(df, out)
    fraud_rate = float(df["is_fraud"].mean()) if len(df) else 0.0
    logging.getLogger(__name__).info(
        "wrote %s transactions (fraud rate %.2f %%) to %s", f"{len(df):,}", 100 * fraud_rate, out
    )


def ingest(
    path: Annotated[
        Path, typer.Argument(help="Transactions file (.csv or .parquet) in the data contract.")
    ],
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace the ingested table instead of appending.")
    ] = False,
    columns: ColumnsOption = None,
    columns_file: ColumnsFileOption = None,
    timezone: TimezoneOption = None,
    reject_to: Annotated[
        Path | None,
        typer.Option(
            "--reject-to",
            help="Write the rows that fail validation to this CSV file, each with its line "
            "(or row) and reason, and ingest the others. Without it a bad row stops the "
            "whole file.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Validate a transactions file against the data contract and add it to the offline store.

    Required columns: transaction_id, timestamp (ISO 8601 with a zone), customer_id,
    terminal_id, amount (0 or more); optional is_fraud (0/1) and label_timestamp. Integer
    ids become strings. Name your own columns with --columns or --columns-file.

    Every bad cell is reported with the file, its line (CSV: the header is line 1) or row
    (parquet), the column and what was expected, and nothing is written, unless
    --reject-to takes the bad rows aside.
    """
    from fraudops.cli.options import resolve
    from fraudops.data.ingest import TRANSACTION_FILE_COLUMNS, ValidationFailed, ingest_transactions

    mapping, zone = resolve(columns, columns_file, timezone, TRANSACTION_FILE_COLUMNS)
    settings = get_settings()
    with console.status(f"validating {path}"):
        try:
            df = ingest_transactions(
                path,
                settings.transactions_path,
                replace=replace,
                label_delay_days=settings.label_delay_days,
                columns=mapping,
                timezone=zone,
                reject_to=reject_to,
            )
        except ValidationFailed as exc:
            raise fail(str(exc)) from None
    logging.getLogger(__name__).info(
        "offline store now holds %s transactions (%s)", f"{len(df):,}", settings.transactions_path
    )
