"""What importing ``fraudops`` sets up for the libraries it loads (``fraudops/__init__.py``),
checked in a fresh interpreter each, since a test process has imported them already."""

from __future__ import annotations

import subprocess
import sys

from tests.integration.conftest import REPO


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


CHECKED = (
    "from feast.feature_service import FeatureService\n"
    "print('typeguard' in FeatureService.__init__.__code__.co_names)\n"
)


def test_feast_is_imported_without_typeguards_instrumentation() -> None:
    assert run("import fraudops\n" + CHECKED) == "False"
    assert run("import feast, fraudops\n" + CHECKED) == "True"  # Feast first: checked


def test_openmp_threads_wait_passively_unless_the_user_says_otherwise() -> None:
    assert run("import fraudops, os; print(os.environ['OMP_WAIT_POLICY'])") == "PASSIVE"
    user = "import os; os.environ['OMP_WAIT_POLICY'] = 'ACTIVE'; import fraudops; "
    assert run(user + "print(os.environ['OMP_WAIT_POLICY'])") == "ACTIVE"
