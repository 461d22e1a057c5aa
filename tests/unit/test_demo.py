"""``make demo`` stays on the embedded defaults, whatever the shell or ``.env`` configure,
deletes only what it made, and its summary prints the live comparison of ``fraudops
compare`` (the full run is tests/integration/test_end_to_end.py)."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

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


# --- the summary --------------------------------------------------------------------------
def shadow_pairs(labelled: bool) -> pd.DataFrame:
    """Two replayed days scored by champion v1 and, in shadow, challenger v2 (the columns
    of fraudops.model.comparison.read_shadow_pairs); the first day labelled if asked."""
    rng = np.random.default_rng(3)
    n = 400
    fraud = rng.random(n) < 0.1
    champion = np.clip(0.5 * fraud + rng.normal(0.2, 0.15, n), 0, 1)
    challenger = np.clip(champion + rng.normal(0, 0.1, n), 0, 1)
    start = pd.Timestamp("2026-05-01", tz="UTC")
    times = start + pd.to_timedelta(np.sort(rng.uniform(0, 2 * 86_400, n)), unit="s")

    def decision(p: np.ndarray) -> np.ndarray:
        return np.where(p >= 0.6, "block", np.where(p >= 0.35, "review", "approve"))

    first_day = times < start + pd.Timedelta(days=1)
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "prediction_id": [f"p{i}" for i in range(n)],
            "event_timestamp": times,
            "customer_id": [f"c{i % 60}" for i in range(n)],
            "amount": 40.0,
            "champion_version": "1",
            "champion_probability": champion,
            "champion_decision": decision(champion),
            "challenger_version": "2",
            "challenger_probability": challenger,
            "challenger_decision": decision(challenger),
            "is_fraud": np.where(first_day & labelled, fraud, np.nan),
            "label_timestamp": pd.NaT,
        }
    )


def printed_summary(demo: ModuleType, comparison: dict, monkeypatch: pytest.MonkeyPatch) -> str:
    """The demo's summary for a comparison, as printed."""
    out = io.StringIO()
    monkeypatch.setattr(demo, "console", Console(file=out, width=400, highlight=False))
    metrics = {"roc_auc": 0.9, "average_precision": 0.7, "card_precision_at_100": 0.3}
    windows = {"test_start": "2026-04-10", "test_end": "2026-04-17"}
    demo.summary(
        Path("/tmp/demo"),
        {"model_version": "1", "windows": windows, "metrics": {**metrics, "brier": 0.02}},
        {"decision": "promoted"},
        {
            "model_version": "2",
            "windows": {**windows, "train_start": "2026-03-20", "train_end": "2026-04-03"},
            "metrics": {**metrics, "brier": 0.01},
        },
        {"sent": 400, "scored": 400, "errors": 0, "decisions": {}, "latency_ms": {}},
        {"alerts": []},
        comparison,
        60.0,
        "sqlite:///tmp/demo/mlflow.db",
        "2026-05-02",
        Path("/tmp/demo/demo.log"),
    )
    return out.getvalue()


def test_the_summary_prints_the_live_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    """The figures of ``fraudops compare --json`` (computed here by its library function)
    are in the summary: agreement, every flip with its count, and each model's labelled
    metrics with their intervals."""
    from fraudops.model.comparison import compare_pairs

    demo = demo_module()
    pairs = shadow_pairs(labelled=True)
    result = compare_pairs(
        pairs, pd.Timestamp("2026-05-01", tz="UTC"), pd.Timestamp("2026-05-03", tz="UTC")
    )
    comparison = json.loads(result.json())  # what the demo reads from the command
    text = printed_summary(demo, comparison, monkeypatch)

    assert 0 < result.labelled < result.transactions == len(pairs) and result.frauds > 0
    assert result.flips and 0 < result.decision_agreement < 1
    assert (
        f"v2 scored the same {len(pairs):,} replayed transactions as v1: same decision "
        f"{result.decision_agreement:.1%}, score rank correlation "
        f"{result.score_rank_correlation:.3f}" in text
    )
    for flip, count in result.flips.items():
        assert f"{flip} {count:,}" in text
    assert f"{result.labelled:,} labelled ({result.frauds:,} frauds), 95% bootstrap" in text
    for name, label in (("roc_auc", "ROC AUC"), ("average_precision", "average precision")):
        champion, challenger, difference = (
            result.metrics[role][name] for role in ("champion", "challenger", "difference")
        )
        assert (
            f"{label}: champion {champion.value:.3f} [{champion.low:.3f}, {champion.high:.3f}], "
            f"challenger {challenger.value:.3f} [{challenger.low:.3f}, {challenger.high:.3f}], "
            f"difference {difference.value:+.3f} [{difference.low:+.3f}, {difference.high:+.3f}]"
        ) in text
    assert re.search(r"card precision@100: champion \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", text)
    assert (
        f"Compared @challenger v2 with @champion v1 on {len(pairs)} live transactions: same "
        f"decision {result.decision_agreement:.4f}, {result.labelled} labelled "
        f"({result.frauds} frauds)." in text
    )


def test_the_summary_without_labels_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from fraudops.model.comparison import compare_pairs

    demo = demo_module()
    pairs = shadow_pairs(labelled=False)
    result = compare_pairs(
        pairs, pd.Timestamp("2026-05-01", tz="UTC"), pd.Timestamp("2026-05-03", tz="UTC")
    )
    text = printed_summary(demo, json.loads(result.json()), monkeypatch)
    assert f"same decision {result.decision_agreement:.1%}" in text
    assert "0 labelled (0 frauds): too few for metrics" in text
    assert "ROC AUC: champion" not in text
