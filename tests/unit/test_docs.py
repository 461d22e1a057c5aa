"""The README and docs/*.md name only what exists: `fraudops` commands of the CLI,
``FRAUDOPS_*`` variables of the settings class, and files behind their relative links.

    pytest tests/unit/test_docs.py
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer.main

from fraudops.cli.app import app
from fraudops.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PAGE_IDS = [str(page.relative_to(ROOT)) for page in PAGES]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n.*?^ {0,3}\1[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
# `fraudops` as a command: not part of a path, a module, a key or a URL
# (fraudops/cli/app.py, fraudops.core.docs, fraudops:scores, /srv/fraudops, fraudops_model_info).
COMMAND = re.compile(r"(?<![\w./:@{-])fraudops(?![\w./:{}-])((?:[ \t]+[a-z][a-z0-9-]*)*)")
VARIABLE = re.compile(r"\bFRAUDOPS_([A-Z0-9_]*[A-Z0-9])(_\*)?")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)

# Test settings: read by the test suite (tests/conftest.py), not by the Settings class.
TEST_VARIABLE_PREFIX = "TEST_"


def code_of(text: str) -> list[str]:
    """Fenced code blocks and inline code spans, where commands are written."""
    blocks = [match.group(0) for match in FENCE.finditer(text)]
    prose = FENCE.sub("", text)
    return blocks + [match.group(2) for match in CODE_SPAN.finditer(prose)]


def prose_of(text: str) -> str:
    """The text outside code: where links are links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


@cache
def command_tree() -> dict[str, Any]:
    """{command: None or {subcommand: ...}} of the `fraudops` Typer app, every group walked."""

    def walk(command: Any) -> dict[str, Any] | None:
        subcommands = getattr(command, "commands", None)  # a group (Typer's own click)
        if subcommands is None:
            return None
        return {name: walk(sub) for name, sub in subcommands.items()}

    tree = walk(typer.main.get_command(app))
    assert tree, "the fraudops app has no commands"
    return tree


def unknown_commands(code: str) -> list[str]:
    """`fraudops <command> [<subcommand> ...]` named in code that the CLI does not have.
    Words after a leaf command are its arguments (`fraudops ingest payments`)."""
    unknown = []
    for match in COMMAND.finditer(code):
        words = match.group(1).split()
        level: dict[str, Any] | None = command_tree()
        path = ["fraudops"]
        for word in words:
            if level is None:  # past a command: its arguments
                break
            path.append(word)
            if word not in level:
                unknown.append(" ".join(path))
                break
            level = level[word]
    return unknown


def known_variables() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def is_test_setting(name: str, test_settings: str) -> bool:
    """FRAUDOPS_TEST_*: excepted only when the test suite really reads it (its conftest)."""
    return name.startswith(TEST_VARIABLE_PREFIX) and f"FRAUDOPS_{name}" in test_settings


def unknown_variables(text: str, test_settings: str) -> list[str]:
    known = known_variables()
    unknown = []
    for match in VARIABLE.finditer(text):
        name, wildcard = match.group(1), match.group(2)
        if wildcard:  # FRAUDOPS_ALERT_*: some setting has that prefix
            if not any(k.startswith(f"{name}_") for k in known):
                unknown.append(match.group(0))
        elif name not in known and not is_test_setting(name, test_settings):
            unknown.append(match.group(0))
    return unknown


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"`|\*\*|__", "", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def broken_links(page: Path) -> list[str]:
    text = prose_of(page.read_text())
    targets = [m.group(1) for m in LINK.finditer(text)] + [
        m.group(1) for m in REFERENCE.finditer(text)
    ]
    broken = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md":
            anchors = {github_anchor(h) for h in HEADING.findall(prose_of(file.read_text()))}
            if anchor.lower() not in anchors:
                broken.append(target)
    return broken


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_fraudops_command_named_exists(page: Path) -> None:
    unknown = [name for code in code_of(page.read_text()) for name in unknown_commands(code)]
    assert not unknown, f"{page.name} names commands the CLI does not have: {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_fraudops_variable_named_is_a_setting(page: Path) -> None:
    test_settings = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("conftest.py"))
    unknown = unknown_variables(page.read_text(), test_settings)
    assert not unknown, f"{page.name} names variables that are not settings: {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_relative_link_points_to_a_file(page: Path) -> None:
    broken = broken_links(page)
    assert not broken, f"{page.name} links to what does not exist: {broken}"


def test_the_readme_links_every_docs_page() -> None:
    readme = prose_of((ROOT / "README.md").read_text())
    linked = {(ROOT / m.group(1).partition("#")[0]).resolve() for m in LINK.finditer(readme)}
    missing = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not missing, f"README.md does not link: {missing}"


def test_the_checks_find_what_they_look_for() -> None:
    """Not vacuous: the extraction sees commands, subcommands, variables and links, and
    refuses what does not exist."""
    text = (ROOT / "README.md").read_text()
    named = {m.group(0).strip() for code in code_of(text) for m in COMMAND.finditer(code)}
    assert {"fraudops train", "fraudops features build", "fraudops labels ingest"} <= named
    assert LINK.search(prose_of(text)) and VARIABLE.search(text)
    assert unknown_commands("fraudops nosuch --x") == ["fraudops nosuch"]
    assert unknown_commands("run: fraudops features nosuch") == ["fraudops features nosuch"]
    assert unknown_commands("uv run fraudops ingest payments.csv --columns a=b") == []
    assert (
        unknown_commands("fraudops.core.docs /srv/fraudops fraudops:scores fraudops/cli/app.py")
        == []
    )
    assert unknown_variables("FRAUDOPS_NO_SUCH and FRAUDOPS_NOSUCH_*", "") == [
        "FRAUDOPS_NO_SUCH",
        "FRAUDOPS_NOSUCH_*",
    ]
    assert unknown_variables("FRAUDOPS_ALERT_* FRAUDOPS_API_KEY", "") == []
    assert unknown_variables("FRAUDOPS_TEST_REDIS_URL", "") == ["FRAUDOPS_TEST_REDIS_URL"]
    assert github_anchor("Scale-out, honestly") == "scale-out-honestly"
