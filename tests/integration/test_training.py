"""Training and the registry against real MLflow tracking stores (SQLite file and
PostgreSQL): train, register, promote, refuse a worse model, load @champion back."""

from __future__ import annotations

from datetime import date

import mlflow
import numpy as np
import pandas as pd
import pytest

from fraudops.core import contract as c
from fraudops.core.settings import Settings, get_settings
from fraudops.data.ingest import write_parquet_atomic
from fraudops.data.simulator import simulate
from fraudops.features.build import build_from_offline_store
from fraudops.model import registry
from fraudops.model.promotion import evaluate_window, promote
from fraudops.model.training import train

pytestmark = pytest.mark.integration
TRAIN_START = date(2026, 4, 17)  # simulation starts 2026-04-01: 16 days of feature history


@pytest.fixture(scope="module")
def small_history() -> pd.DataFrame:
    return simulate(customers=400, terminals=800, days=40, seed=5)


@pytest.fixture(params=["sqlite", "postgresql"])
def trained_settings(request, settings: Settings, monkeypatch, small_history) -> Settings:
    if request.param == "postgresql":
        monkeypatch.setenv("FRAUDOPS_MLFLOW_TRACKING_URI", request.getfixturevalue("postgres_url"))
    get_settings.cache_clear()
    settings = get_settings()
    write_parquet_atomic(small_history, settings.transactions_path)
    build_from_offline_store(settings)
    return settings


def test_train_register_promote_and_refuse_a_worse_model(trained_settings: Settings) -> None:
    settings = trained_settings
    report = train(settings, train_start=TRAIN_START, train_days=7, delay_days=7, test_days=7)
    assert report.metrics["roc_auc"] > 0.8
    assert report.metrics["roc_auc"] > report.baseline_metrics["roc_auc"]
    client = registry.configure(settings)
    assert (
        str(client.get_model_version_by_alias(settings.model_name, "challenger").version)
        == report.model_version
    )

    # the run carries what monitoring and serving need
    run = client.get_run(report.run_id)
    assert run.data.params["feature_service"] == "fraud_model_v1"
    assert {
        "roc_auc",
        "average_precision",
        "precision_at_recall_70",
        "brier",
        "card_precision_at_100",
        "baseline_roc_auc",
    } <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(report.run_id)}
    assert {"plots", "reference"} <= artifacts
    # one record of the features and thresholds: the model's own metadata, which
    # monitoring reads without loading the model
    metadata = registry.metadata_of(client, settings.model_name, report.model_version)
    loaded = registry.load_version(client, settings.model_name, report.model_version).model
    assert metadata == loaded.metadata and metadata.feature_service == "fraud_model_v1"
    assert {a.path for a in client.list_artifacts(report.run_id, "plots")} == {
        "plots/pr_curve.png",
        "plots/calibration_curve.png",
        "plots/feature_importance.png",
        "plots/score_histogram.png",
    }

    first = promote(settings)
    assert first.decision == "promoted" and first.reason.startswith("first model")

    # @champion loads back, through MLflow's pyfunc and ours, with the same predictions
    ours = registry.load_alias(client, settings.model_name, "champion")
    assert ours is not None and ours.version == report.model_version
    pyfunc = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@champion")
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        rng.gamma(2.0, 5.0, (50, len(ours.model.feature_names))), columns=ours.model.feature_names
    )
    np.testing.assert_array_equal(
        pyfunc.predict(rows).to_numpy(), ours.model.predict_proba(rows.to_numpy())
    )

    # a window outside the data is refused with the range that would work
    with pytest.raises(
        ValueError,
        match=r"\(0 labelled transactions; labelled transactions run "
        r"from \d{4}-\d\d-\d\d to \d{4}-\d\d-\d\d\): pick a window",
    ):
        evaluate_window(settings, ours.model, date(2000, 1, 1), 7)

    # a model trained on shuffled labels must not replace it
    worse = train(
        settings,
        train_start=TRAIN_START,
        train_days=7,
        delay_days=7,
        test_days=7,
        seed=1,
        shuffle_labels=True,
    )
    rejected = promote(settings)
    assert rejected.decision == "rejected", rejected
    champion = client.get_model_version_by_alias(settings.model_name, "champion")
    assert str(champion.version) == report.model_version
    tags = client.get_model_version(settings.model_name, worse.model_version).tags
    assert tags["promotion.decision"] == "rejected"
    assert tags["promotion.compared_with"] == report.model_version

    forced = promote(settings, force=True)
    assert forced.decision == "promoted" and "forced" in forced.reason
    assert (
        str(client.get_model_version_by_alias(settings.model_name, "champion").version)
        == worse.model_version
    )


def test_windows_outside_the_data_are_refused(settings: Settings, small_history) -> None:
    write_parquet_atomic(small_history, settings.transactions_path)
    with pytest.raises(ValueError, match="fall outside the data"):
        train(settings, train_start=date(2026, 3, 1), train_days=7, delay_days=7, test_days=7)
    assert c.IS_FRAUD in small_history
