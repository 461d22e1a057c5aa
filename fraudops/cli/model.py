"""The model: ``fraudops train``, ``fraudops evaluate`` and ``fraudops promote``.

fraudops train && fraudops promote
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

import typer

from fraudops.cli.common import (
    console,
    fail,
    progress_bar,
    stdout_for_results,
)
from fraudops.core.settings import get_settings


class Evidence(StrEnum):
    offline = "offline"
    live = "live"


def train(
    train_start: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"],
            help="First training day (default: FRAUDOPS_TRAIN_START, or "
            "the latest window whose test labels are known).",
        ),
    ] = None,
    train_days: Annotated[
        int | None, typer.Option(min=2, help="Training days (default: FRAUDOPS_TRAIN_DAYS, 7).")
    ] = None,
    delay_days: Annotated[
        int | None,
        typer.Option(min=0, help="Gap = label delay (default: FRAUDOPS_LABEL_DELAY_DAYS, 7)."),
    ] = None,
    test_days: Annotated[
        int | None, typer.Option(min=1, help="Test days (default: FRAUDOPS_TEST_DAYS, 7).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed (default: FRAUDOPS_SEED, 42).")
    ] = None,
) -> None:
    """Train, calibrate and evaluate a model on Feast point-in-time features; log it to
    MLflow, register a new version of the model and give it the alias @challenger."""
    from fraudops.model.training import report_json
    from fraudops.model.training import train as run_training

    settings = get_settings()
    with stdout_for_results(), progress_bar() as bar:
        task = bar.add_task("preparing", total=None)
        try:
            report = run_training(
                settings,
                train_start=train_start.date() if train_start else None,
                train_days=train_days,
                delay_days=delay_days,
                test_days=test_days,
                seed=seed,
                stage=lambda text: bar.update(task, description=text),
                on_round=lambda n: bar.update(task, completed=n),
            )
        except (FileNotFoundError, ValueError) as exc:
            raise fail(str(exc)) from None
    typer.echo(report_json(report))


def evaluate(
    model_uri: Annotated[
        str, typer.Option(help="models:/fraud-detector@champion or models:/<name>/<version>.")
    ],
    start: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="First day of the window.")],
    days: Annotated[int, typer.Option(min=1, help="Days in the window.")] = 7,
) -> None:
    """Print a registered model's metrics on a labelled window as JSON."""
    import json

    from fraudops.model import registry
    from fraudops.model.promotion import evaluate_window

    settings = get_settings()
    client = registry.configure(settings)
    try:
        with stdout_for_results(), console.status(f"evaluating {model_uri}"):
            model = registry.load_uri(client, model_uri).model
            metrics = evaluate_window(settings, model, start.date(), days)
    except (LookupError, ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    typer.echo(
        json.dumps(
            {"model_uri": model_uri, "start": start.date().isoformat(), "days": days, **metrics},
            indent=2,
        )
    )


def promote(
    force: Annotated[
        bool, typer.Option("--force", help="Promote even if it regresses (human override).")
    ] = False,
    start: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"], help="Comparison window start (default: the latest labelled)."
        ),
    ] = None,
    days: Annotated[
        int | None,
        typer.Option(min=1, help="Comparison window days (default: FRAUDOPS_TEST_DAYS, 7)."),
    ] = None,
    evidence: Annotated[
        Evidence,
        typer.Option(
            help="offline: both models on a labelled window of the offline store; live: on "
            "the live transactions both scored (the challenger in shadow) and labelled since "
            "(default window: all of them)."
        ),
    ] = Evidence.offline,
) -> None:
    """Move @champion to @challenger if it does not regress (ROC AUC, average precision,
    Brier) on the same labelled transactions; the first model becomes champion.

    With --evidence live it waits for FRAUDOPS_PROMOTE_MIN_LABELLED_FRAUDS labelled frauds
    among the live transactions both models scored, says how many more are needed and
    changes nothing until then. Exit code 1: rejected; 3: not enough labelled frauds yet.
    """
    from fraudops.model.promotion import promote as run_promotion

    settings = get_settings()
    try:
        with stdout_for_results(), console.status("comparing @challenger with @champion"):
            result = run_promotion(
                settings,
                force=force,
                start=start.date() if start else None,
                days=days,
                evidence=evidence.value,
            )
    except (LookupError, ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    typer.echo(result.json())
    if result.decision == "rejected":
        raise typer.Exit(code=1)
    if result.decision == "insufficient_evidence":
        raise typer.Exit(code=3)
