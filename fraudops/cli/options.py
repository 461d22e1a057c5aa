"""Options that ``fraudops ingest`` and ``fraudops labels ingest`` share: a user's own
column names and time zone.

    fraudops ingest handbook.csv --columns TX_DATETIME=timestamp,TX_AMOUNT=amount,...
    fraudops labels ingest chargebacks.csv --columns-file mapping.yaml --timezone Europe/Paris
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

ColumnsOption = Annotated[
    str | None,
    typer.Option(
        "--columns",
        help="Your file's column names, as FILE_COLUMN=contract_column pairs separated by "
        "commas, e.g. TX_DATETIME=timestamp,TX_AMOUNT=amount. Columns already named as in "
        "the contract need no pair.",
        show_default=False,
    ),
]
ColumnsFileOption = Annotated[
    Path | None,
    typer.Option(
        "--columns-file",
        help="The same mapping as a YAML file, one 'FILE_COLUMN: contract_column' per line "
        "(--columns pairs are added to it).",
        show_default=False,
    ),
]
TimezoneOption = Annotated[
    str | None,
    typer.Option(
        "--timezone",
        help="Time zone of timestamps written without one, e.g. Europe/Paris. Default: UTC "
        "when --columns or --columns-file maps your own columns; otherwise a timestamp "
        "without a zone is refused, as the API refuses it.",
        show_default=False,
    ),
]


def resolve(
    columns: str | None, columns_file: Path | None, timezone: str | None, allowed: Iterable[str]
) -> tuple[dict[str, str], str | None]:
    """The column mapping and the time zone for naive timestamps, or a usage error."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from fraudops.data.ingest import parse_column_mapping

    try:
        mapping = parse_column_mapping(columns, columns_file, allowed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--columns / --columns-file") from None
    if timezone is not None:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise typer.BadParameter(
                f"expected an IANA time zone such as UTC or Europe/Paris, got {timezone!r}",
                param_hint="--timezone",
            ) from None
    elif mapping or columns_file is not None:
        timezone = "UTC"
    return mapping, timezone
