"""The model lifecycle on live evidence against real stores (SQLite, PostgreSQL, MLflow):
``fraudops compare`` reads the champion's and the shadow challenger's results, prints the
same figures as the comparison computed by hand from the log, and records them on the
challenger's version; ``fraudops promote --evidence live`` refuses with too few labelled
frauds (saying how many more) and promotes with enough."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from fraudops.cli.app import app
from fraudops.core import db
from fraudops.core.settings import Settings, get_settings
from fraudops.model import registry
from fraudops.model.comparison import compare_pairs, read_shadow_pairs
from tests.integration.lifecycle_seed import (
    START,
    record_labels_for,
    seed_shadow_log,
    seed_versions,
)

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture(params=["sqlite", "postgresql"])
def lifecycle_settings(request, settings: Settings, monkeypatch) -> Settings:
    if request.param == "postgresql":
        monkeypatch.setenv("FRAUDOPS_DATABASE_URL", request.getfixturevalue("postgres_url"))
    monkeypatch.setenv("FRAUDOPS_PROMOTE_MIN_LABELLED_FRAUDS", "30")
    get_settings.cache_clear()
    return get_settings()


def test_compare_prints_and_records_the_comparison(lifecycle_settings: Settings) -> None:
    settings = lifecycle_settings
    seed_versions(settings, champion="1", challenger="2")
    frame = seed_shadow_log(settings, 600, champion="1", challenger="2")
    record_labels_for(settings, frame.iloc[:400])
    end = START + timedelta(days=2)

    result = runner.invoke(
        app, ["compare", "--start", "2026-05-10", "--end", "2026-05-12", "--json"]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    engine = db.create_db_engine(settings.resolved_database_url)
    expected = compare_pairs(read_shadow_pairs(engine, START, end), START, end)
    engine.dispose()
    assert printed["transactions"] == 600 and printed["labelled"] == 400
    assert printed["frauds"] == int(frame["is_fraud"].iloc[:400].sum())
    assert printed["decision_agreement"] == pytest.approx(expected.decision_agreement)
    assert printed["flips"] == expected.flips
    auc = printed["metrics"]["challenger"]["roc_auc"]
    assert auc["value"] == pytest.approx(expected.metrics["challenger"]["roc_auc"].value)
    assert auc["low"] <= auc["value"] <= auc["high"]
    assert printed["metrics"]["difference"]["roc_auc"]["value"] > 0  # the sharper model

    client = registry.configure(settings)
    tags = client.get_model_version(settings.model_name, "2").tags
    assert tags["live.compared_with"] == "1" and tags["live.transactions"] == "600"
    assert tags["live.challenger.roc_auc"].startswith(f"{auc['value']:.4f} [")
    run = client.get_run(tags["live.run_id"])
    assert run.data.tags["fraudops.role"] == "live-comparison"
    assert run.data.metrics["challenger_roc_auc"] == pytest.approx(auc["value"])

    table = runner.invoke(app, ["compare", "--no-record"])
    assert table.exit_code == 0, table.output
    assert "Decision flips" in table.stdout and "card precision@100" in table.stdout

    seed_versions(settings, champion="1", challenger="3")
    missing = runner.invoke(app, ["compare"])
    assert missing.exit_code == 2
    assert "no shadow results of v3 against v1" in missing.output
    assert "FRAUDOPS_SHADOW=true" in missing.output


def test_promote_on_live_evidence_waits_for_labels_then_promotes(
    lifecycle_settings: Settings,
) -> None:
    settings = lifecycle_settings
    seed_versions(settings, champion="1", challenger="2")
    frame = seed_shadow_log(settings, 800, champion="1", challenger="2", seed=3)
    few = frame.iloc[:100]
    record_labels_for(settings, few)
    client = registry.configure(settings)

    waiting = runner.invoke(app, ["promote", "--evidence", "live"])
    assert waiting.exit_code == 3, waiting.output
    outcome = json.loads(waiting.stdout)
    frauds = int(few["is_fraud"].sum())
    assert outcome["decision"] == "insufficient_evidence"
    assert outcome["labelled_frauds"] == frauds
    assert outcome["more_labelled_frauds_needed"] == 30 - frauds
    assert f"{30 - frauds} more needed; nothing changed" in outcome["reason"]
    assert str(client.get_model_version_by_alias(settings.model_name, "champion").version) == "1"
    assert "promotion.decision" not in client.get_model_version(settings.model_name, "2").tags

    record_labels_for(settings, frame)  # the chargebacks of the rest arrive
    promoted = runner.invoke(app, ["promote", "--evidence", "live"])
    assert promoted.exit_code == 0, promoted.output
    outcome = json.loads(promoted.stdout)
    assert outcome["decision"] == "promoted", outcome
    assert outcome["labelled_frauds"] == int(frame["is_fraud"].sum()) >= 30
    assert str(client.get_model_version_by_alias(settings.model_name, "champion").version) == "2"
    tags = client.get_model_version(settings.model_name, "2").tags
    assert tags["promotion.decision"] == "promoted" and tags["promotion.evidence"] == "live"
    assert (
        json.loads(tags["promotion.challenger_metrics"])["roc_auc"]
        > json.loads(tags["promotion.champion_metrics"])["roc_auc"]
    )
    assert "live.challenger.roc_auc" in tags


def test_promote_on_live_evidence_rejects_a_worse_challenger(
    lifecycle_settings: Settings,
) -> None:
    """The same log read the other way round: the sharper model is the champion."""
    settings = lifecycle_settings
    seed_versions(settings, champion="2", challenger="1")
    frame = seed_shadow_log(settings, 800, champion="2", challenger="1", seed=4)
    # swap the roles' scores: the champion (v2) gets the sharper ones
    engine = db.create_db_engine(settings.resolved_database_url)
    with engine.begin() as conn:
        for r in frame.itertuples(index=False):
            conn.execute(
                db.predictions.update()
                .where(db.predictions.c.prediction_id == r.prediction_id)
                .values(fraud_probability=float(r.challenger_probability))
            )
            conn.execute(
                db.shadow_predictions.update()
                .where(db.shadow_predictions.c.prediction_id == r.prediction_id)
                .values(fraud_probability=float(r.champion_probability))
            )
    engine.dispose()
    record_labels_for(settings, frame)
    rejected = runner.invoke(app, ["promote", "--evidence", "live"])
    assert rejected.exit_code == 1, rejected.output
    outcome = json.loads(rejected.stdout)
    assert outcome["decision"] == "rejected" and "ROC AUC" in outcome["reason"]
    client = registry.configure(settings)
    assert str(client.get_model_version_by_alias(settings.model_name, "champion").version) == "2"


def test_models_page_shows_the_live_comparison(settings: Settings) -> None:
    """The dashboard's Models page, through Streamlit's AppTest, shows the same figures."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from tests.integration.conftest import REPO

    seed_versions(settings, champion="1", challenger="2")
    frame = seed_shadow_log(settings, 500, champion="1", challenger="2", seed=9)
    record_labels_for(settings, frame.iloc[:300])
    engine = db.create_db_engine(settings.resolved_database_url)
    end = START + timedelta(days=2)
    expected = compare_pairs(read_shadow_pairs(engine, START, end), START, end)
    engine.dispose()
    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=90)
        at.run()
        at.switch_page("views/models.py")
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        shown = {m.label: m.value for m in at.metric}
        assert shown["Scored by both"] == "500"
        assert shown["Same decision"] == f"{expected.decision_agreement:.1%}"
        assert shown["Labelled frauds"] == f"{expected.frauds:,} of 300"
        quality = at.dataframe[-1].value
        auc = quality.set_index("metric").loc["ROC AUC"]
        assert auc["challenger"] == expected.metrics["challenger"]["roc_auc"].text()
        assert auc["champion"] == expected.metrics["champion"]["roc_auc"].text()
        flips = at.dataframe[-2].value
        assert set(flips["flip"]) == set(expected.flips)
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()
