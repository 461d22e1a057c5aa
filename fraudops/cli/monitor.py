"""The ``fraudops monitor`` and ``fraudops labels`` commands (registered in fraudops/cli/app.py).

fraudops monitor --window 1d [--every 1h] [--workspace data/evidently]
fraudops monitor --start 2026-05-13 --end 2026-05-14
fraudops labels ingest chargebacks.csv
fraudops labels sync
"""

from __future__ import annotations

import getpass
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from fraudops.cli.common import (
    TIME_FORMATS,
    as_utc,
    console,
    fail,
    parse_every,
)
from fraudops.cli.options import ColumnsFileOption, ColumnsOption, TimezoneOption

log = logging.getLogger(__name__)


def monitor(
    start: Annotated[
        datetime | None,
        typer.Option(formats=TIME_FORMATS, help="Window start (UTC unless a zone is given)."),
    ] = None,
    end: Annotated[
        datetime | None,
        typer.Option(formats=TIME_FORMATS, help="Window end, exclusive (default: start + window)."),
    ] = None,
    window: Annotated[
        str,
        typer.Option(help="Window length (30m, 6h, 1d); the trailing one unless --start/--end."),
    ] = "1d",
    every: Annotated[
        str | None,
        typer.Option(help="Run on a schedule (e.g. 1h) until interrupted; no overlapping runs."),
    ] = None,
    workspace: Annotated[
        Path | None,
        typer.Option(
            help="Evidently workspace to add the snapshots to, for `evidently ui --workspace "
            "PATH` (default: <data_dir>/evidently)."
        ),
    ] = None,
    no_workspace: Annotated[
        bool, typer.Option("--no-workspace", help="Do not add the snapshots to a workspace.")
    ] = False,
    model_version: Annotated[
        str | None, typer.Option(help="Monitor this registered version (default: @champion).")
    ] = None,
    fail_on_alert: Annotated[
        bool, typer.Option("--fail-on-alert", help="Exit with code 1 when the run raises alerts.")
    ] = False,
) -> None:
    """Check a window of the prediction log for drift, quality and health (Evidently).

    Compares the window with the model's training reference: feature drift, score drift,
    decision mix, latency, degraded share and, where labels have arrived, classification
    quality. Reports go under <data_dir>/reports/monitoring/, a summary and alerts to the
    database (dashboard), alerts also to the log and to FRAUDOPS_ALERT_WEBHOOK_URL.
    Thresholds: FRAUDOPS_ALERT_* (docs/configuration.md; `fraudops/core/settings.py`).
    """
    from fraudops.core.settings import get_settings
    from fraudops.monitoring.monitor import Window, run_schedule
    from fraudops.monitoring.monitor import monitor as run_monitor

    length = timedelta(seconds=parse_every(window))
    workspace = None if no_workspace else (workspace or get_settings().data_dir / "evidently")
    if every is not None:
        if start is not None or end is not None:
            raise fail("--every monitors the trailing --window; it takes no --start or --end")
        run_schedule(
            get_settings, length, parse_every(every), version=model_version, workspace=workspace
        )
        return
    try:
        if start is not None:
            span = Window(as_utc(start), as_utc(end) if end is not None else as_utc(start) + length)
        elif end is not None:
            span = Window(as_utc(end) - length, as_utc(end))
        else:
            span = Window.last(length)
    except ValueError as exc:
        raise fail(str(exc)) from None
    with console.status(f"monitoring {span}") as status:
        try:
            result = run_monitor(
                get_settings(),
                span,
                version=model_version,
                workspace=workspace,
                stage=lambda text: status.update(text),
            )
        except LookupError as exc:
            raise fail(str(exc)) from None
    typer.echo(result.json())
    if fail_on_alert and result.alerts:
        raise typer.Exit(code=1)


labels_app = typer.Typer(
    help="Delayed fraud labels (chargebacks, analysts' decisions).", no_args_is_help=True
)


@labels_app.command("ingest")
def labels_ingest(
    path: Annotated[
        Path,
        typer.Argument(
            help="Labels file (.csv or .parquet): transaction_id, is_fraud, label_timestamp."
        ),
    ],
    skip_unknown: Annotated[
        bool,
        typer.Option(
            "--skip-unknown",
            help="Drop (with a warning) labels of transactions in neither the offline store "
            "nor the prediction log, instead of refusing the file.",
        ),
    ] = False,
    labelled_by: Annotated[
        str | None, typer.Option(help="Who provides these labels (default: your user name).")
    ] = None,
    columns: ColumnsOption = None,
    columns_file: ColumnsFileOption = None,
    timezone: TimezoneOption = None,
) -> None:
    """Validate a labels file and record it: in the labels table (monitoring, dashboard) and
    in the offline transactions table (the next `fraudops features build` and `fraudops train`
    use it).

    Bad rows are reported with the file, the line (CSV: the header is line 1) or row
    (parquet), the column and what was expected, and nothing is written. Name your own
    columns with --columns or --columns-file (e.g. TX_FRAUD=is_fraud)."""
    from fraudops.cli.options import resolve
    from fraudops.core import contract as c
    from fraudops.core.settings import get_settings
    from fraudops.data.ingest import ValidationFailed
    from fraudops.data.labels import ingest_labels

    mapping, zone = resolve(columns, columns_file, timezone, c.LABEL_FILE_COLUMNS)
    settings = get_settings()
    with console.status(f"validating {path}"):
        try:
            report = ingest_labels(
                settings,
                path,
                skip_unknown=skip_unknown,
                labelled_by=labelled_by or getpass.getuser(),
                columns=mapping,
                timezone=zone,
            )
        except ValidationFailed as exc:
            raise fail(str(exc)) from None
    log.info(
        "recorded %s label(s) (%s fraud); %s row(s) of %s updated; run `fraudops features build` "
        "to use them",
        f"{report.labels:,}",
        f"{report.frauds:,}",
        f"{report.offline_rows_updated:,}",
        settings.transactions_path,
    )


@labels_app.command("sync")
def labels_sync() -> None:
    """Write every label in the database (analysts' review-queue decisions included) into the
    offline transactions table."""
    from fraudops.core.settings import get_settings
    from fraudops.data.labels import sync_offline

    settings = get_settings()
    updated = sync_offline(settings)
    log.info("%s row(s) of %s updated", f"{updated:,}", settings.transactions_path)
