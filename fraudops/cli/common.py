"""What every command shares: the console (stderr), logging, progress bars, the one error
style, and the parsing of durations and times. Command modules import this, never the app."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fraudops.core.settings import get_settings

console = Console(stderr=True)
TIME_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]


def configure_logging(verbose: bool) -> None:
    """Log to the console: rich on a terminal, one plain line per record elsewhere."""
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


def parse_every(value: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        seconds = int(value[:-1]) * units[value[-1]]
    except (KeyError, ValueError, IndexError):
        seconds = 0
    if seconds <= 0:
        raise typer.BadParameter(f"expected a positive duration like 30s, 15m, 1h; got {value!r}")
    return seconds


def as_utc(value: datetime) -> datetime:
    """A time option's value in UTC: naive values are read as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
