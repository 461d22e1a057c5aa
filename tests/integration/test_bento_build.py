"""`bentoml build` packages the scorer as a Bento (what `bentoml containerize` and BentoCloud
take): the service, our package, its migrations, the feature repository and the locked
requirements."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import service_missing

REPO = Path(__file__).resolve().parents[2]


def test_bentoml_build_makes_a_bento_of_the_scorer(tmp_path: Path) -> None:
    # BentoML builds with uv: `uv run` exports its own path as UV; otherwise use PATH.
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        service_missing("uv", "not found: bentoml build needs it on PATH (make setup)")
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "PATH": f"{Path(uv).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    bentoml = Path(sys.executable).with_name("bentoml")
    done = subprocess.run(
        [str(bentoml), "build", "--output", "tag"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tag = re.search(r"__tag__:(\S+)", done.stdout)
    assert tag, done.stdout
    name, version = tag.group(1).split(":")
    bento = tmp_path / "bentoml" / "bentos" / name / version
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    assert manifest["service"] == "service.service:FraudScorer"
    routes = {route["route"] for route in manifest["schema"]["routes"]}
    assert {"/score", "/score_batch", "/admin/reload", "/admin/status"} <= routes
    src = bento / "src"
    for path in (
        "service/service.py",
        "fraudops/serving/scoring.py",
        "feature_repo/definitions.py",
        "feature_repo/feature_store.yaml",
    ):
        assert (src / path).is_file(), path
    assert list((src / "fraudops" / "core" / "migrations").rglob("*.py")), "migrations missing"
    assert (bento / "env" / "python" / "requirements.txt").is_file()
