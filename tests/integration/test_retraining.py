"""Retraining runs as a person would schedule them, against real stores: the first model
becomes champion; later runs register @challenger; with --auto-promote a challenger that
has no live evidence yet is kept, and one with enough labelled frauds among its shadow
results is promoted before the next model is trained. ``fraudops score`` then scores a file
with a registered version exactly as the model scores the training features."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fraudops.cli.app import app
from fraudops.core import contract as c
from fraudops.core.settings import Settings, get_settings
from fraudops.data.ingest import write_parquet_atomic
from fraudops.data.simulator import simulate
from fraudops.features.feast_store import feature_service, get_store
from fraudops.features.offline import offline_features
from fraudops.model import registry
from fraudops.model.retraining import retrain_once
from tests.integration.lifecycle_seed import record_labels_for, seed_shadow_log

pytestmark = pytest.mark.integration
runner = CliRunner()


def aliases(settings: Settings) -> tuple[str | None, str | None]:
    client = registry.configure(settings)
    found = [
        registry.version_for(client, settings.model_name, a)
        for a in (registry.CHAMPION, registry.CHALLENGER)
    ]
    return tuple(None if v is None else str(v.version) for v in found)  # type: ignore[return-value]


def test_retraining_loop_and_batch_scoring(settings: Settings, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("FRAUDOPS_PROMOTE_MIN_LABELLED_FRAUDS", "30")
    monkeypatch.setenv("FRAUDOPS_TRAIN_DAYS", "7")
    monkeypatch.setenv("FRAUDOPS_TEST_DAYS", "5")
    monkeypatch.setenv("FRAUDOPS_DELAY_DAYS", "7")
    get_settings.cache_clear()
    settings = get_settings()
    tx = simulate(customers=300, terminals=600, days=35, seed=5)
    write_parquet_atomic(tx, settings.transactions_path)

    first = retrain_once(settings, auto_promote=True)
    assert first.trained_version == "1" and first.promotion["reason"].startswith("first model")
    assert aliases(settings) == ("1", "1")

    second = retrain_once(settings, auto_promote=True)  # the challenger is the champion
    assert second.trained_version == "2" and aliases(settings) == ("1", "2")

    waiting = retrain_once(settings, auto_promote=True)  # v2 was never scored in shadow
    assert waiting.trained_version is None and aliases(settings) == ("1", "2")

    frame = seed_shadow_log(settings, 800, champion="1", challenger="2", seed=7)
    record_labels_for(settings, frame.iloc[:50])
    few = retrain_once(settings, auto_promote=True)
    assert few.trained_version is None
    assert few.promotion["decision"] == "insufficient_evidence"
    assert aliases(settings) == ("1", "2")

    record_labels_for(settings, frame)
    promoted = retrain_once(settings, auto_promote=True)
    assert promoted.promotion["decision"] == "promoted"
    assert promoted.trained_version == "3" and aliases(settings) == ("2", "3")

    # batch scoring with the champion, on a day of the history, in a shuffled file
    day = pd.Timestamp("2026-04-25", tz="UTC")
    rows = tx[(tx[c.TIMESTAMP] >= day) & (tx[c.TIMESTAMP] < day + timedelta(days=1))]
    rows = rows.sample(frac=1.0, random_state=1)
    source = tmp_path / "day.csv"
    rows[list(c.TRANSACTION_COLUMNS)].to_csv(source, index=False)
    out = tmp_path / "scores.parquet"
    uri = f"models:/{settings.model_name}@champion"
    result = runner.invoke(app, ["score", str(source), "--model-uri", uri, "--out", str(out)])
    assert result.exit_code == 0, result.output
    scored = pd.read_parquet(out)
    assert scored[c.TRANSACTION_ID].tolist() == rows[c.TRANSACTION_ID].tolist()
    assert set(scored["model_version"]) == {"2"}
    champion = registry.load_alias(registry.configure(settings), settings.model_name, "champion")
    store = get_store()
    expected = offline_features(store, feature_service(store), rows)
    np.testing.assert_allclose(
        scored["fraud_probability"].to_numpy(),
        champion.model.predict_proba(expected[champion.model.feature_names].to_numpy()),
        rtol=0,
        atol=1e-9,
    )
    assert set(scored["decision"]) <= {"approve", "review", "block"}

    bad = tmp_path / "bad.csv"
    bad.write_text("transaction_id,timestamp,customer_id,terminal_id,amount\nx,yesterday,c,t,5\n")
    refused = runner.invoke(
        app,
        [
            "score",
            str(bad),
            "--model-uri",
            "models:/fraud-detector/1",
            "--out",
            str(tmp_path / "x.csv"),
        ],
    )
    assert refused.exit_code == 2 and "bad.csv, row 1, column 'timestamp'" in refused.output

    once = runner.invoke(app, ["retrain"])  # the command, once, without promotion
    assert once.exit_code == 0, once.output
    assert json.loads(once.stdout)["trained_version"] == "4" and aliases(settings) == ("2", "4")
