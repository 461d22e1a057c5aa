"""The ``fraudops`` command line: every step of the loop that is not a native tool's.

fraudops --help
fraudops simulate --days 30 --out data/raw/transactions.parquet
fraudops ingest data/raw/transactions.parquet
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer
from rich.markup import escape

from fraudops.cli.common import check_settings, configure_logging, console

app = typer.Typer(
    help="FraudOps: real-time fraud scoring with Feast, LightGBM, MLflow, BentoML and Evidently.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Configure logging once for whichever command runs."""
    configure_logging(verbose)
    check_settings()


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


def _register_commands() -> None:
    """Every command, each defined in the module of its group, in the order of --help."""
    from fraudops.cli import data, features, lifecycle, model, monitor, stream

    app.command("simulate")(data.simulate)
    app.command("ingest")(data.ingest)
    app.add_typer(features.features_app, name="features")
    app.command("materialize")(features.materialize)
    app.command("nightly")(features.nightly)
    app.command("train")(model.train)
    app.command("evaluate")(model.evaluate)
    app.command("promote")(model.promote)
    app.command("stream")(stream.stream)
    app.command("replay")(stream.replay)
    app.command("monitor")(monitor.monitor)
    app.command("compare")(lifecycle.compare)
    app.command("score")(lifecycle.score)
    app.command("retrain")(lifecycle.retrain)
    app.add_typer(monitor.labels_app, name="labels")


_register_commands()
# The entry point's presentation, set once when the CLI loads (Typer 0.29's help and
# usage errors; pinned by tests/unit/test_cli.py).
_paragraph_help(app)
_flag_types_hidden()
_usage_errors_as_errors()

if __name__ == "__main__":  # pragma: no cover
    app()
