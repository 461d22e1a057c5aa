"""Fixtures for tests that need a trained, promoted model behind a materialized store."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from fraudops.core import contract as c

REPO = Path(__file__).resolve().parents[2]
TRAIN_START = pd.Timestamp("2026-04-17").date()


@functools.cache
def scorer_asgi_app() -> Any:
    """The scorer's ASGI app, built once per test process: BentoML registers the app's
    request metrics in Prometheus' process-wide registry, which refuses them twice. Each
    ``TestClient`` still starts a new scorer with the settings of its environment."""
    from service.service import FraudScorer

    return FraudScorer.to_asgi()


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    from fraudops.core.settings import get_settings

    saved = dict(os.environ)
    for key in [
        k for k in os.environ if k.startswith("FRAUDOPS_") and not k.startswith("FRAUDOPS_TEST_")
    ]:
        del os.environ[key]
    os.environ.update(values)
    get_settings.cache_clear()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def prepare_trained_environment(values: dict[str, str], seed: int = 5) -> pd.DataFrame:
    """Simulate, ingest, build, apply, materialize, train and promote, as a user would;
    returns the transactions. What does not depend on ``values`` (the data, the offline
    features, the trained and promoted model) is made once per seed and test process and
    copied into ``values``' data directory; registering the features with Feast and
    materializing them are done for each caller, into its own online store."""
    from fraudops.core.settings import get_settings
    from fraudops.features.feast_store import apply_definitions, get_store
    from fraudops.features.materialize import materialize_once

    template, tx = _trained_template(seed)
    with environment(values):
        settings = get_settings()
        shutil.copytree(template, settings.data_dir, dirs_exist_ok=True)
        store = get_store()
        apply_definitions(store)
        end = tx[c.TIMESTAMP].max().floor("D") + timedelta(days=1, seconds=1)
        # as `fraudops materialize` does: batch views, readiness's marker, customer states
        materialize_once(
            end=end.to_pydatetime(),
            start=(tx[c.TIMESTAMP].min() - timedelta(days=1)).to_pydatetime(),
        )
    return tx.copy()


@functools.cache
def _trained_template(seed: int) -> tuple[Path, pd.DataFrame]:
    """A data directory with the simulated transactions, their offline features and a
    model trained on them and promoted to @champion (MLflow on SQLite, its artifacts in
    this directory, which copies keep using), removed when the test process ends."""
    from fraudops.core.settings import get_settings
    from fraudops.data.ingest import write_parquet_atomic
    from fraudops.data.simulator import simulate
    from fraudops.features.build import build_from_offline_store
    from fraudops.features.feast_store import apply_definitions, get_store
    from fraudops.model.promotion import promote
    from fraudops.model.training import train

    root = Path(tempfile.mkdtemp(prefix=f"fraudops-trained-{seed}-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    with environment({"FRAUDOPS_DATA_DIR": str(root / "data")}):
        settings = get_settings()
        tx = simulate(customers=300, terminals=600, days=40, seed=seed)
        write_parquet_atomic(tx, settings.transactions_path)
        build_from_offline_store(settings)
        apply_definitions(get_store())  # training reads the features through Feast
        train(settings, train_start=TRAIN_START, train_days=7, delay_days=7, test_days=7)
        promote(settings)
    return root / "data", tx


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self, tail: int | None = 4000) -> str:
        text = self.log_path.read_text(errors="replace")
        return text if tail is None else text[-tail:]


@contextmanager
def bentoml_serve(values: dict[str, str], log_path: Path, timeout: float = 90) -> Iterator[Server]:
    """`bentoml serve` in the repository root, polled for readiness (never a fixed sleep)."""
    with bentoml_serve_all([(values, log_path)], timeout) as (server,):
        yield server


@contextmanager
def bentoml_serve_all(
    configs: list[tuple[dict[str, str], Path]], timeout: float = 90
) -> Iterator[list[Server]]:
    """Several `bentoml serve` at once (each with its settings and log), started together
    and each polled for readiness."""
    servers: list[Server] = []
    try:
        for values, log_path in configs:
            servers.append(_start_server(values, log_path))
        deadline = time.monotonic() + timeout
        for server in servers:
            _wait_until_ready(server, deadline, timeout)
        yield servers
    finally:
        for server in servers:
            server.process.terminate()
        for server in servers:
            try:
                server.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.process.kill()


def _start_server(values: dict[str, str], log_path: Path) -> Server:
    from tests.conftest import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDOPS_")}
    env.update(values)
    # a home of its own: `bentoml serve` empties $BENTOML_HOME/prometheus_multiproc_dir as it
    # starts, which took another running server's /metrics with it (docs/operations.md)
    env["BENTOML_HOME"] = str(log_path.parent / f"bentoml-home-{port}")
    bentoml = Path(sys.executable).with_name("bentoml")
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(bentoml), "serve", "--port", str(port), "--host", "127.0.0.1"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Server(f"http://127.0.0.1:{port}", process, log_path)


def _wait_until_ready(server: Server, deadline: float, timeout: float) -> None:
    from fraudops.serving.readiness import serving_on_stale_features

    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"bentoml serve exited ({server.process.returncode}):\n{server.log()}"
            )
        try:
            ready = httpx.get(f"{server.url}/readyz", timeout=1)
            # simulated history lies in the past: by the clock its features are stale
            if ready.status_code == 200 or serving_on_stale_features(
                ready.status_code, ready.content
            ):
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"bentoml serve not ready after {timeout} s:\n{server.log()}")
        time.sleep(0.2)
