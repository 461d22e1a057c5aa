"""``make demo`` stays on the embedded defaults, whatever the shell or ``.env`` configure,
and deletes only what it made (the full run is tests/integration/test_end_to_end.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def demo_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo_script"] = module
    spec.loader.exec_module(module)
    return module


REAL = {
    "FRAUDOPS_ONLINE_STORE": "redis",
    "FRAUDOPS_REDIS_URL": "redis://prod-redis:6379/0",
    "FRAUDOPS_DATABASE_URL": "postgresql+psycopg://fraudops@prod-db/fraudops",
    "FRAUDOPS_MLFLOW_TRACKING_URI": "http://prod-mlflow:5000",
    "FRAUDOPS_API_KEY": "the-production-key",
    "FRAUDOPS_ENVIRONMENT": "production",
}


def test_the_demo_ignores_configured_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings of a real installation in the environment: none reaches the demo, and the
    embedded stores are set explicitly (so a .env in the repository cannot win either)."""
    demo = demo_module()
    for name, value in REAL.items():
        monkeypatch.setenv(name, value)
    env = demo.demo_environment(tmp_path, use_settings=False)
    assert env["FRAUDOPS_DATA_DIR"] == str(tmp_path)
    assert env["FRAUDOPS_ONLINE_STORE"] == "sqlite"
    assert env["FRAUDOPS_DATABASE_URL"] == f"sqlite:///{tmp_path / 'predictions.db'}"
    assert env["FRAUDOPS_MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert env["FRAUDOPS_ENVIRONMENT"] == "local"
    assert "FRAUDOPS_REDIS_URL" not in env
    assert not set(REAL.values()) & set(env.values())  # the production key included
    again = demo.demo_environment(tmp_path, use_settings=False)
    assert (
        len(env["FRAUDOPS_API_KEY"]) >= 24 and again["FRAUDOPS_API_KEY"] != env["FRAUDOPS_API_KEY"]
    )


def test_use_settings_keeps_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    demo = demo_module()
    for name, value in REAL.items():
        monkeypatch.setenv(name, value)
    env = demo.demo_environment(tmp_path, use_settings=True)
    for name in (
        "FRAUDOPS_ONLINE_STORE",
        "FRAUDOPS_REDIS_URL",
        "FRAUDOPS_DATABASE_URL",
        "FRAUDOPS_MLFLOW_TRACKING_URI",
    ):
        assert env[name] == REAL[name]


def test_where_to_look_names_the_mlflow_the_demo_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded store is served with ``mlflow ui``; with --use-settings, the MLflow
    server of the settings is named, not a local file the demo never wrote."""
    demo = demo_module()
    for name, value in REAL.items():
        monkeypatch.setenv(name, value)
    embedded = demo.demo_environment(tmp_path, use_settings=False)
    local = demo.where_to_look(tmp_path, demo.tracking_uri(tmp_path, embedded, False))
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'}" in "\n".join(local)
    configured = demo.demo_environment(tmp_path, use_settings=True)
    server = demo.where_to_look(tmp_path, demo.tracking_uri(tmp_path, configured, True))
    assert any(line.startswith("MLflow UI:     http://prod-mlflow:5000") for line in server)
    assert "mlflow.db" not in "\n".join(server)


def test_the_demo_deletes_only_a_directory_it_made(tmp_path: Path) -> None:
    demo = demo_module()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "history.parquet").write_text("not the demo's")
    with pytest.raises(SystemExit, match="was not made by the demo"):
        demo.fresh_data_dir(precious)
    assert (precious / "history.parquet").exists()

    data = tmp_path / "demo"
    demo.fresh_data_dir(data)  # new
    (data / "old-run.txt").write_text("from the last run")
    demo.fresh_data_dir(data)  # made by the demo: started afresh
    assert sorted(p.name for p in data.iterdir()) == [demo.MARKER]
