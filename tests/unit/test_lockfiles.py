"""``requirements.lock.txt`` (what ``bentoml build`` and the Docker image install) is
``uv export`` of ``uv.lock``: a dependency added with ``uv add`` reaches the Bento too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import service_missing

REPO = Path(__file__).resolve().parents[2]


def uv_command() -> list[str] | None:
    """uv as ``uv run`` (``make test``) names it, on the PATH, or where ``make setup`` puts it."""
    for found in (os.environ.get("UV"), shutil.which("uv"), Path.home() / ".local/bin/uv"):
        if found and Path(found).is_file():
            return [str(found)]
    probe = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True)
    return [sys.executable, "-m", "uv"] if probe.returncode == 0 else None


def test_requirements_lock_is_the_export_of_uv_lock(tmp_path: Path) -> None:
    uv = uv_command()
    if uv is None:
        service_missing("uv", "not installed (make setup installs it)")
    exported = tmp_path / "requirements.lock.txt"
    done = subprocess.run(
        [
            *uv,
            "export",
            "--frozen",
            "--no-dev",
            "--no-hashes",
            "--no-emit-project",
            "-o",
            str(exported),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr

    def requirements(path: Path) -> list[str]:  # the pins and their reasons, not the header
        return [line for line in path.read_text().splitlines() if not line.startswith("#    uv")]

    assert requirements(REPO / "requirements.lock.txt") == requirements(exported), (
        "requirements.lock.txt is stale: run `uv export --frozen --no-dev --no-hashes "
        "--no-emit-project -o requirements.lock.txt`"
    )


def test_make_test_installs_the_spark_extra_and_make_demo_does_not() -> None:
    def sync_line(target: str) -> str:
        done = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return next(line for line in done.stdout.splitlines() if " sync --frozen" in line)

    assert "--extra spark" in sync_line("test")
    assert "spark" not in sync_line("demo")
