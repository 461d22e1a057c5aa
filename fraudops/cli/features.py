"""Features: ``fraudops features build|apply``, ``fraudops materialize`` and ``fraudops nightly``.

fraudops features build && fraudops features apply
fraudops nightly --every 1d
"""

from __future__ import annotations

import logging
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import typer

from fraudops.cli.common import (
    console,
    fail,
    parse_every,
    progress_bar,
    stdout_for_results,
)
from fraudops.core.settings import get_settings

features_app = typer.Typer(help="Feature store: build offline tables, register definitions.")


class OfflineEngine(StrEnum):
    duckdb = "duckdb"
    spark = "spark"


@features_app.command("build")
def features_build(
    engine: Annotated[
        OfflineEngine | None,
        typer.Option(
            help="duckdb (this machine) or spark (PySpark; docs/spark.md). "
            "Default: FRAUDOPS_OFFLINE_ENGINE, duckdb."
        ),
    ] = None,
) -> None:
    """Compute the batch feature tables from the ingested transactions (vectorised).

    DuckDB writes customer_activity, customer_state and terminal_daily under
    <data_dir>/offline/features/, where the Feast sources read them; Spark writes them
    partitioned by day under <offline_uri>/features/, for FRAUDOPS_OFFLINE_STORE=spark.
    """
    from fraudops.features.build import build_from_offline_store
    from fraudops.features.spark_build import SparkUnavailable

    settings = get_settings()
    chosen = engine.value if engine else settings.offline_engine
    with progress_bar() as bar:
        task = bar.add_task(f"customers ({chosen})", total=None)
        try:
            built = build_from_offline_store(
                settings, progress=lambda done: bar.update(task, completed=done), engine=chosen
            )
        except (FileNotFoundError, SparkUnavailable) as exc:
            raise fail(str(exc)) from None
        bar.update(task, total=1, completed=1)
    for name, (table_path, count) in built.items():
        logging.getLogger(__name__).info("%s: %s rows -> %s", name, f"{count:,}", table_path)


@features_app.command("apply")
def features_apply() -> None:
    """Register the feature repository with Feast (same as `feast -c feature_repo apply`)."""
    from fraudops.features.feast_store import apply_definitions, get_store

    with console.status("feast apply"):
        store = get_store()
        apply_definitions(store)
    logging.getLogger(__name__).info(
        "applied feature_repo: %s", ", ".join(v.name for v in store.list_feature_views())
    )


class Engine(StrEnum):
    auto = "auto"
    fast = "fast"
    feast = "feast"


def materialize(
    end: Annotated[
        datetime | None,
        typer.Option(help="Materialize up to this UTC time (default: now)."),
    ] = None,
    start: Annotated[
        datetime | None,
        typer.Option(help="Materialize from this time instead of incrementally (backfill)."),
    ] = None,
    every: Annotated[
        str | None,
        typer.Option(help="Run on a schedule (e.g. 15m) until interrupted; no overlapping runs."),
    ] = None,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild",
            help="Before each run, take the scored transactions of the prediction log into the "
            "offline store and run `features build` (all of it; `fraudops nightly` rebuilds "
            "only what changed).",
        ),
    ] = False,
    engine: Annotated[
        Engine,
        typer.Option(help="auto (fast writer with Redis, else Feast), fast, or feast."),
    ] = Engine.auto,
) -> None:
    """Load the latest batch features into the online store (feast materialize-incremental).

    With --every it runs on a schedule (APScheduler, one run at a time; a run still going
    when the next is due is skipped and logged).
    """
    from fraudops.features.materialize import NothingToMaterialize, materialize_once, run_schedule

    if every is None:
        try:
            materialize_once(end=end, start=start, rebuild=rebuild, engine=engine.value)
        except NothingToMaterialize as exc:
            raise fail(str(exc)) from None
        return
    run_schedule(parse_every(every), rebuild=rebuild, engine=engine.value)


def nightly(
    every: Annotated[
        str | None,
        typer.Option(help="Run on a schedule (e.g. 1d) until interrupted; no overlapping runs."),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(help="Run every day at this UTC time (HH:MM) until interrupted."),
    ] = None,
) -> None:
    """The nightly job: scored traffic becomes history, features follow, the online store
    is refreshed (docs/nightly-job.md).

    Takes the prediction log's transactions not yet in the offline store (by
    transaction_id) and the labels recorded since the last run, rebuilds only the feature
    rows that changed, and materializes them. Prints what it did as JSON.
    """
    from fraudops.features.nightly import run_nightly, run_schedule

    if at is not None:
        try:
            hour, minute = (int(part) for part in at.split(":"))
            if not (0 <= hour < 24 and 0 <= minute < 60):
                raise ValueError
        except ValueError:
            raise typer.BadParameter(f"expected HH:MM in UTC, such as 00:30; got {at!r}") from None
        run_schedule(0, at=at)
        return
    if every is not None:
        run_schedule(parse_every(every))
        return
    try:
        with stdout_for_results(), console.status("nightly job") as status:
            report = run_nightly(get_settings(), stage=lambda text: status.update(text))
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None
    typer.echo(report.json())


DateOption = Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"])]
