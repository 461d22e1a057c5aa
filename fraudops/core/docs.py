"""Generated documentation: the settings table of docs/configuration.md comes from the
settings class, so it cannot go stale.

    python -m fraudops.core.docs            # rewrite the table in docs/configuration.md
    python -m fraudops.core.docs --check    # exit 1 if the table is out of date (a test does this)
"""

from __future__ import annotations

import sys
from pathlib import Path

from fraudops.core.settings import Settings

BEGIN = "<!-- settings-table:begin -->"
END = "<!-- settings-table:end -->"
CONFIGURATION_PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def settings_table() -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, list):  # as the variable is written: comma-separated
            default = ",".join(map(str, default))
        if isinstance(default, dict):  # view=value pairs, comma-separated; empty: unset
            default = ",".join(f"{key}={value}" for key, value in default.items()) or None
        shown = "unset" if default is None else f"`{default}`"
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `FRAUDOPS_{name.upper()}` | {shown} | {description} |")
    return "\n".join(rows)


def render(page: str) -> str:
    before, rest = page.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    return f"{before}{BEGIN}\n{settings_table()}\n{END}{after}"


def main(argv: list[str]) -> int:
    text = CONFIGURATION_PAGE.read_text()
    fresh = render(text)
    if "--check" in argv:
        if fresh != text:
            print(
                "docs/configuration.md's settings table is stale: "
                "run `python -m fraudops.core.docs`"
            )
            return 1
        return 0
    CONFIGURATION_PAGE.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
