"""The model lifecycle's commands (registered in fraudops/cli/app.py): compare the challenger
with the champion on live traffic, score files offline, retrain on a schedule.

fraudops compare --start 2026-09-01 --end 2026-09-08 [--json]
fraudops score tx.csv --model-uri models:/fraud-detector@challenger --out scores.parquet
fraudops retrain --every 1d [--auto-promote]

``fraudops promote --evidence live`` is in fraudops/cli/app.py with the other promotion options.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from fraudops.cli.common import (
    TIME_FORMATS,
    as_utc,
    console,
    fail,
    parse_every,
    progress_bar,
    stdout_for_results,
)

log = logging.getLogger(__name__)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def compare(
    start: Annotated[
        datetime | None,
        typer.Option(
            formats=TIME_FORMATS,
            help="First event time (UTC unless a zone is given; default: the first shadow result).",
        ),
    ] = None,
    end: Annotated[
        datetime | None,
        typer.Option(
            formats=TIME_FORMATS,
            help="Last event time, exclusive (default: the last shadow result).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    resamples: Annotated[
        int, typer.Option(min=10, help="Bootstrap resamples for the confidence intervals.")
    ] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    no_record: Annotated[
        bool,
        typer.Option(
            "--no-record",
            help="Do not write the summary to the challenger's "
            "MLflow version (tags live.*) and a metrics run.",
        ),
    ] = False,
) -> None:
    """Compare @challenger (scored in shadow) with @champion on the same live transactions.

    Score agreement, decision flips (approve to block and so on) with examples, each
    model's decision mix and, on the transactions labelled since, ROC AUC, average
    precision, Brier score and card precision@100 with bootstrap confidence intervals. The
    summary is also written to the challenger's version in MLflow (tags live.*) and logged
    as a run. Needs FRAUDOPS_SHADOW=true in the scorer or the stream consumer.
    """
    from rich.console import Console

    from fraudops.core.settings import get_settings
    from fraudops.model.comparison import compare as run_comparison
    from fraudops.model.comparison import render

    begin = as_utc(start) if start else EARLIEST
    finish = as_utc(end) if end else LATEST
    if begin >= finish:
        raise fail(f"--start {begin:%Y-%m-%d %H:%M} is not before --end {finish:%Y-%m-%d %H:%M}")
    try:
        with stdout_for_results(), console.status("comparing @challenger with @champion"):
            result = run_comparison(
                get_settings(),
                begin,
                finish,
                resamples=resamples,
                seed=seed,
                record_to_mlflow=not no_record,
            )
    except (LookupError, ValueError) as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(result.json())
    else:
        render(result, Console())


def score(
    path: Annotated[
        Path, typer.Argument(help="Transactions file (.csv or .parquet) in the data contract.")
    ],
    model_uri: Annotated[
        str,
        typer.Option(
            help="models:/fraud-detector@challenger, models:/<name>@<alias> or "
            "models:/<name>/<version>."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Where to write the scores (.csv or .parquet).")],
    with_features: Annotated[
        bool, typer.Option("--with-features", help="Also write the model's input features.")
    ] = False,
) -> None:
    """Score a file of transactions offline (batch jobs, backtests of a candidate model).

    Features are point in time, as the online path would have given them: each
    transaction's customer history and terminal risk from the offline store as of its
    time, built with the functions that build the training tables. Writes the file's
    columns, fraud_probability, decision and model_version, in the file's row order.
    """
    from fraudops.core.settings import get_settings
    from fraudops.data.ingest import ValidationFailed
    from fraudops.model.batch_scoring import score_file

    with stdout_for_results(), progress_bar() as bar:
        task = bar.add_task("preparing", total=None)
        try:
            scored = score_file(
                get_settings(),
                path,
                model_uri,
                out,
                with_features,
                stage=lambda text: bar.update(task, description=text),
            )
        except (ValidationFailed, LookupError, ValueError, FileNotFoundError) as exc:
            raise fail(str(exc)) from None
        bar.update(task, total=1, completed=1)
    log.info(
        "scored %s transactions with v%s -> %s (%s)",
        f"{scored.rows:,}",
        scored.model_version,
        scored.path,
        ", ".join(f"{d} {n:,}" for d, n in scored.decisions.items()),
    )


def retrain(
    every: Annotated[
        str | None,
        typer.Option(
            help="Run on a schedule (e.g. 1d, 12h) until interrupted; no overlapping runs."
        ),
    ] = None,
    auto_promote: Annotated[
        bool,
        typer.Option(
            "--auto-promote",
            help="Promote without a person: on live evidence, the "
            "waiting @challenger before each run (see --evidence).",
        ),
    ] = False,
    evidence: Annotated[
        str,
        typer.Option(
            help="With --auto-promote: live (the challenger's shadow results, "
            "labelled since; needs FRAUDOPS_SHADOW=true where traffic is scored) or "
            "offline (the new model's test window, as `fraudops promote`)."
        ),
    ] = "live",
) -> None:
    """Retrain on the newest labels and register the model as @challenger.

    Each run syncs the database's labels into the offline table, rebuilds the feature
    tables, trains on the latest window whose test labels are known and registers the new
    version as @challenger (the first one also becomes @champion). With --auto-promote
    --evidence live, a @challenger still waiting for labelled frauds is kept, and the run
    skips training so that its evidence can accumulate. Promote by hand in the MLflow UI
    or with `fraudops promote --evidence live` otherwise.
    """
    from fraudops.core.settings import get_settings
    from fraudops.model.retraining import retrain_once, run_schedule

    if evidence not in ("live", "offline"):
        raise fail(f"--evidence must be live or offline, got {evidence!r}")
    if every is not None:
        run_schedule(get_settings, parse_every(every), auto_promote, evidence)  # type: ignore[arg-type]
        return
    with stdout_for_results(), progress_bar() as bar:
        task = bar.add_task("preparing", total=None)
        try:
            report = retrain_once(
                get_settings(),
                auto_promote,
                evidence,  # type: ignore[arg-type]
                stage=lambda text: bar.update(task, description=text),
            )
        except (FileNotFoundError, ValueError, LookupError) as exc:
            raise fail(str(exc)) from None
    typer.echo(report.json())
