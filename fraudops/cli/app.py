"""The ``fraudops`` command line: every step of the loop that is not a native tool's.

fraudops --help
fraudops simulate --days 30 --out data/raw/transactions.parquet
fraudops ingest data/raw/transactions.parquet
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fraudops.cli.options import ColumnsFileOption, ColumnsOption, TimezoneOption
from fraudops.core.settings import get_settings

app = typer.Typer(
    help="FraudOps: real-time fraud scoring with Feast, LightGBM, MLflow, BentoML and Evidently.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console(stderr=True)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Configure logging once for whichever command runs."""
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:  # logs and CI: one line per record, no wrapping
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True
    )
    for noisy in ("httpx", "httpcore"):  # a line per request would drown the summaries
        logging.getLogger(noisy).setLevel(logging.WARNING)
    check_settings()


def check_settings() -> None:
    """Stop with the variables at fault when the settings do not validate (a typo in an
    environment variable or ``.env``), before any command runs."""
    from pydantic import ValidationError

    try:
        get_settings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            variable = f"FRAUDOPS_{field.upper()}" if field else "settings"
            got = f" (got {error['input']!r})" if "input" in error and field else ""
            lines.append(f"{variable}: {error['msg']}{got}")
        raise fail("invalid settings (environment or .env):\n  " + "\n  ".join(lines)) from None


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    )


@contextlib.contextmanager
def stdout_for_results() -> Iterator[None]:
    """Send whatever libraries print (MLflow prints run links) to stderr, so that a
    command's stdout is only its result (JSON that scripts parse)."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def fail(message: str) -> typer.Exit:
    """Print a message for people and return the exit to raise. Not wrapped: paths and
    commands in it stay whole, to copy."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


@app.command()
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


@app.command()
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


features_app = typer.Typer(help="Feature store: build offline tables, register definitions.")
app.add_typer(features_app, name="features")


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


class Evidence(StrEnum):
    offline = "offline"
    live = "live"


class Engine(StrEnum):
    auto = "auto"
    fast = "fast"
    feast = "feast"


def _parse_every(value: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        seconds = int(value[:-1]) * units[value[-1]]
    except (KeyError, ValueError, IndexError):
        seconds = 0
    if seconds <= 0:
        raise typer.BadParameter(f"expected a positive duration like 30s, 15m, 1h; got {value!r}")
    return seconds


@app.command()
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
    run_schedule(_parse_every(every), rebuild=rebuild, engine=engine.value)


@app.command()
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
        run_schedule(_parse_every(every))
        return
    try:
        with stdout_for_results(), console.status("nightly job") as status:
            report = run_nightly(get_settings(), stage=lambda text: status.update(text))
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None
    typer.echo(report.json())


DateOption = Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"])]


@app.command()
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


@app.command()
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


@app.command()
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


def _unwrap(text: str | None) -> str | None:
    """A docstring as paragraphs for the terminal to wrap: the lines of a paragraph joined
    (Typer keeps the line breaks of every paragraph but the first, so help read as the
    source's 92 columns whatever the terminal's width); list items keep their lines."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        p
        if all(line.lstrip().startswith("- ") for line in p.splitlines())
        else " ".join(line.strip() for line in p.splitlines())
        for p in paragraphs
    )


def _paragraph_help(group: typer.Typer) -> None:
    for command in group.registered_commands:
        command.help = _unwrap(command.help or (command.callback and command.callback.__doc__))
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _paragraph_help(sub.typer_instance)


def _flag_types_hidden() -> None:
    """Flags show no type (Typer 0.29 shows ``<bool>`` beside --replace, --help...): a flag
    takes no value, so there is none to describe."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign,assignment]


def _usage_errors_as_errors() -> None:
    """Usage errors (a bad option value, a missing argument) in the one error style of
    every command, ``error: ...`` on stderr, instead of Typer's boxed "Error" panel."""
    from typer import rich_utils

    def show(exc: Any) -> None:  # a ClickException (Typer's own copy of click)
        if exc.__class__.__name__ == "NoArgsIsHelpError":  # the help is already shown
            return
        message = exc.format_message()
        if message[:1].isupper() and message[1:2].islower():
            message = message[0].lower() + message[1:]
        ctx = getattr(exc, "ctx", None)
        hint = f"\n  see `{ctx.command_path} --help`" if ctx is not None else ""
        console.print(
            f"[bold red]error:[/] {escape(message)}{hint}", highlight=False, soft_wrap=True
        )

    rich_utils.rich_format_error = show  # type: ignore[assignment]


def _register_more_commands() -> None:
    """Commands that live in their own modules (streaming, monitoring, labels, the model
    lifecycle)."""
    from fraudops.cli.lifecycle import compare, retrain, score
    from fraudops.cli.monitor import labels_app, monitor
    from fraudops.cli.stream import replay, stream

    app.command("stream")(stream)
    app.command("replay")(replay)
    app.command("monitor")(monitor)
    app.command("compare")(compare)
    app.command("score")(score)
    app.command("retrain")(retrain)
    app.add_typer(labels_app, name="labels")


_register_more_commands()
# The entry point's presentation, set once when the CLI loads (Typer 0.29's help and
# usage errors; pinned by tests/unit/test_cli.py).
_paragraph_help(app)
_flag_types_hidden()
_usage_errors_as_errors()

if __name__ == "__main__":  # pragma: no cover
    app()
