"""The Streamlit dashboard on a seeded database and MLflow registry: every page through
Streamlit's AppTest (no exception, the seeded numbers shown, labels and acknowledgements
recorded), then every page in a real headless Chromium against ``streamlit run``.

Chromium: Debian's ``/usr/bin/chromium`` (``apt-get install -y chromium``); without it the
browser test is skipped locally and fails in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fraudops.core import contract as c
from fraudops.core import db
from fraudops.core.settings import Settings, get_settings
from tests.conftest import IN_CI, free_port
from tests.integration.conftest import REPO, environment

pytestmark = [pytest.mark.integration, pytest.mark.slow(35)]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
SEED_END = datetime(2026, 5, 16, tzinfo=UTC)
PAGES = {  # url path (the default page is at /): file, title, plotly charts, dataframes
    "": ("views/overview.py", "Overview", 3, 1),
    "scores": ("views/scores.py", "Scores", 2, 1),
    "drift": ("views/drift.py", "Drift", 2, 1),
    "models": ("views/models.py", "Models", 1, 2),
    "review": ("views/review.py", "Review queue", 0, 1),
    "alerts": ("views/alerts.py", "Alerts", 0, 2),
}
FEATURES = [
    "tx_amount",
    "tx_hour",
    "customer_tx_count_1d",
    "customer_amount_avg_7d",
    "terminal_risk_28d",
]


@dataclass
class Seeded:
    values: dict[str, str]
    predictions: pd.DataFrame  # what was logged, with the label given (NaN: none)


# --- seeding (also used by bench/bench_monitoring.py) ----------------------------------------
def seed_predictions(
    settings: Settings, count: int, days: int, seed: int = 0, end: datetime = SEED_END
) -> pd.DataFrame:
    """``count`` predictions over ``days`` days up to ``end`` (version 1, then 2 for the
    last third), labels for the first two thirds of the time. Returns them."""
    from fraudops.data.labels import record_labels
    from fraudops.serving.prediction_log import insert_ignoring_duplicates

    rng = np.random.default_rng(seed)
    start = end - timedelta(days=days)
    offsets = np.sort(rng.uniform(0, days * 86400, count))
    timestamps = pd.to_datetime(start) + pd.to_timedelta(offsets, unit="s")
    probability = rng.beta(0.4, 6.0, count)
    decision = np.where(
        probability >= 0.5, "block", np.where(probability >= 0.05, "review", "approve")
    )
    version = np.where(offsets < days * 86400 * 2 / 3, "1", "2")
    values = rng.gamma(2.0, 20.0, (count, len(FEATURES)))
    frame = pd.DataFrame(
        {
            "transaction_id": [f"tx_{seed}_{i:08d}" for i in range(count)],
            "event_timestamp": timestamps,
            "fraud_probability": probability,
            "decision": decision,
            "model_version": version,
            "latency_ms": rng.gamma(2.0, 3.0, count),
            "degraded": rng.random(count) < 0.002,
            "amount": values[:, 0],
        }
    )
    scored_at = datetime.now(UTC)
    rows = [
        {
            "prediction_id": uuid.uuid4().hex,
            "transaction_id": r.transaction_id,
            "event_timestamp": r.event_timestamp.to_pydatetime(),
            "scored_at": scored_at,
            "customer_id": f"c_{i % 500:07d}",
            "terminal_id": f"t_{i % 900:07d}",
            "amount": float(r.amount),
            "features": dict(zip(FEATURES, map(float, values[i]), strict=True)),
            "fraud_probability": float(r.fraud_probability),
            "decision": r.decision,
            "reasons": []
            if r.decision == "approve"
            else [
                {"feature": "tx_amount", "value": float(r.amount), "contribution": 1.25},
                {"feature": "terminal_risk_28d", "value": 0.2, "contribution": 0.5},
            ],
            "model_version": r.model_version,
            "latency_ms": float(r.latency_ms),
            "degraded": bool(r.degraded),
            "source": "http",
        }
        for i, r in enumerate(frame.itertuples(index=False))
    ]
    url = settings.resolved_database_url
    db.upgrade(url)
    engine = db.create_db_engine(url)
    for chunk in range(0, len(rows), 5000):
        insert_ignoring_duplicates(engine, db.predictions, rows[chunk : chunk + 5000])
    labelled = frame["event_timestamp"] < start + timedelta(days=days * 2 / 3)
    frame["is_fraud"] = np.where(labelled, (rng.random(count) < probability).astype(float), np.nan)
    labels = pd.DataFrame(
        {
            c.TRANSACTION_ID: frame.loc[labelled, "transaction_id"],
            c.IS_FRAUD: frame.loc[labelled, "is_fraud"].astype("int8"),
            c.LABEL_TIMESTAMP: frame.loc[labelled, "event_timestamp"] + timedelta(days=7),
        }
    )
    with engine.begin() as conn:
        record_labels(conn, labels, "file:seed.csv", "bank-feed")
    engine.dispose()
    return frame


def seed_monitoring(
    settings: Settings, runs: int, end: datetime = SEED_END, with_report: bool = True
) -> None:
    """``runs`` daily monitor runs up to ``end`` (the last with drift alerts and, with
    ``with_report``, a real Evidently report), and one acknowledged latency alert."""
    from fraudops.monitoring.monitor import (
        Alert,
        FeatureDrift,
        MonitorSettings,
        Summary,
        record,
        run_evidently,
        save_reports,
    )

    rng = np.random.default_rng(1)
    engine = db.create_db_engine(settings.resolved_database_url)
    for day in range(runs):
        window_end = end - timedelta(days=runs - 1 - day)
        last = day == runs - 1
        drift = [
            FeatureDrift(name, "wasserstein", float(score), 0.1, bool(score >= 0.1), True)
            for name, score in zip(
                FEATURES, rng.uniform(0, 0.3 if last else 0.12, len(FEATURES)), strict=True
            )
        ]
        reports: dict[str, str] = {}
        if last and with_report:
            reference = pd.DataFrame(rng.gamma(2.0, 20.0, (2000, len(FEATURES))), columns=FEATURES)
            current = pd.DataFrame(rng.gamma(2.0, 26.0, (2000, len(FEATURES))), columns=FEATURES)
            for frame in (reference, current):
                frame["fraud_probability"] = rng.beta(0.4, 6.0, len(frame))
                frame["decision"] = np.where(frame["fraud_probability"] >= 0.5, "block", "approve")
                frame[c.IS_FRAUD] = (rng.random(len(frame)) < frame["fraud_probability"]) * 1.0
            result = run_evidently(current, reference, FEATURES, MonitorSettings(), 0.5)
            drift = result.feature_drift
            reports = save_reports(result, settings.reports_dir / "monitoring" / "seeded")
        drifted = sum(d.drifted for d in drift)
        summary = Summary(
            window_start=window_end - timedelta(days=1),
            window_end=window_end,
            model_name=settings.model_name,
            model_version="2" if last else "1",
            reference_run_id="seeded",
            window_predictions=1000,
            predictions=1000,
            labelled=600,
            frauds=40,
            approve_share=0.8,
            review_share=0.15,
            block_share=0.05,
            latency_p50_ms=5.0,
            latency_p95_ms=12.0,
            latency_p99_ms=20.0,
            degraded_share=0.0,
            features_checked=len(drift),
            drifted_features=drifted,
            drift_share=drifted / len(drift),
            score_drift=0.25 if last else 0.02,
            decision_drift=0.05,
            roc_auc=0.9,
            average_precision=0.6,
            precision_at_block=0.8,
            recall_at_block=0.5,
            feature_drift=drift,
        )
        found = (
            [
                Alert(
                    "feature_drift",
                    "warning",
                    f"{drifted} of {len(drift)} features drifted",
                    drifted / len(drift),
                    0.5,
                ),
                Alert("score_drift", "critical", "the fraud probability drifted", 0.25, 0.1),
            ]
            if last
            else []
        )
        if day == 0:
            found = [Alert("latency", "warning", "scoring latency p99 140 ms >= 100 ms", 140, 100)]
        record(engine, str(uuid.uuid4()), window_end, summary, found, reports)
    with engine.begin() as conn:
        conn.execute(
            db.alerts.update()
            .where(db.alerts.c.kind == "latency")
            .values(acknowledged=True, acknowledged_by="bob", acknowledged_at=end)
        )
    engine.dispose()


def seed_registry(settings: Settings) -> None:
    """Two registered versions with test metrics and promotion tags (v2 is @champion);
    metadata only, as the dashboard reads it."""
    import json

    from fraudops.model import registry

    client = registry.configure(settings)
    experiment = registry.experiment_id(settings)
    name = settings.model_name
    client.create_registered_model(name)
    for version, auc, ap, compared in (("1", 0.85, 0.55, "none"), ("2", 0.87, 0.6, "1")):
        run = client.create_run(experiment, run_name="lightgbm")
        client.set_terminated(run.info.run_id)
        tags = {
            "train_start": "2026-04-17",
            "test_roc_auc": auc,
            "test_average_precision": ap,
            "test_brier": 0.07,
            "promotion.decision": "promoted",
            "promotion.reason": "first model: no champion yet"
            if version == "1"
            else "no regression beyond tolerances",
            "promotion.compared_with": compared,
            "promotion.by": "carol",
            "promotion.at": f"2026-05-0{version}T10:00:00+00:00",
            "promotion.challenger_metrics": json.dumps(
                {"roc_auc": auc} if compared != "none" else {}
            ),
            "promotion.champion_metrics": json.dumps(
                {"roc_auc": 0.85} if compared != "none" else {}
            ),
        }
        client.create_model_version(
            name,
            f"runs:/{run.info.run_id}/model",
            run.info.run_id,
            tags={k: str(v) for k, v in tags.items()},
        )
    registry.set_alias(client, name, registry.CHAMPION, "2")


def seed_all(data_dir: Path, predictions: int, days: int, runs: int) -> Seeded:
    values = {"FRAUDOPS_DATA_DIR": str(data_dir)}
    with environment(values):
        settings = get_settings()
        frame = seed_predictions(settings, predictions, days)
        seed_monitoring(settings, runs)
        seed_registry(settings)
    return Seeded(values, frame)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed_all(tmp_path_factory.mktemp("dashboard") / "data", 3000, 3, 3)


# --- AppTest ---------------------------------------------------------------------------------
@pytest.fixture
def app(seeded: Seeded) -> Iterator:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    with environment(seeded.values):
        st.cache_data.clear()
        st.cache_resource.clear()
        yield lambda page: _open(
            AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=60), page
        )
        st.cache_data.clear()
        st.cache_resource.clear()


def _open(at, page: str):  # type: ignore[no-untyped-def]
    at.run()
    if page != "views/overview.py":
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {m.label: m.value for m in at.metric}


def test_overview(app, seeded: Seeded) -> None:
    at = app("views/overview.py")
    frame = seeded.predictions
    shown = metrics(at)
    assert shown["Predictions"] == f"{len(frame):,}"
    assert shown["Blocked"] == f"{(frame['decision'] == 'block').mean():.1%}"
    assert shown["Fraud rate (labelled)"] == f"{frame['is_fraud'].mean():.2%}"
    assert shown["Latency p99"] == f"{np.percentile(frame['latency_ms'], 99):.1f} ms"
    assert len(at.get("plotly_chart")) == 3


def test_model_filter(app, seeded: Seeded) -> None:
    at = app("views/overview.py")
    at.sidebar.multiselect(key="model_versions").set_value(["2"]).run()
    assert not at.exception
    expected = (seeded.predictions["model_version"] == "2").sum()
    assert metrics(at)["Predictions"] == f"{expected:,}"


def test_scores(app) -> None:
    at = app("views/scores.py")
    assert len(at.get("plotly_chart")) == 2
    summary = at.dataframe[0].value
    assert sorted(summary["model_version"]) == ["1", "2"]


def test_drift(app) -> None:
    at = app("views/drift.py")
    shown = metrics(at)
    assert shown["Score drift"] == "0.250" and shown["Alerts raised"] == "2"
    assert shown["Drifted features"].endswith(f"of {len(FEATURES)}")
    assert len(at.get("plotly_chart")) == 2  # trend and per-feature heatmap
    assert len(at.get("iframe")) == 1  # the drift report; the quality report on demand
    at.toggle(key="show_quality").set_value(True).run()
    assert not at.exception and len(at.get("iframe")) == 2


def test_models(app) -> None:
    at = app("views/models.py")
    shown = metrics(at)
    assert shown["Champion"] == "v2" and shown["ROC AUC (test)"] == "0.870"
    versions, history = at.dataframe[0].value, at.dataframe[1].value
    assert versions["version"].tolist() == ["1", "2"]
    assert history["version"].tolist() == ["v2", "v1"]
    assert any("MLflow UI" in m.value for m in at.markdown)


def test_review_queue_records_labels(app, seeded: Seeded) -> None:
    at = app("views/review.py")
    frame = seeded.predictions
    waiting = frame[(frame["decision"] == "review") & frame["is_fraud"].isna()]
    queue = at.dataframe[0].value
    assert len(queue) == len(waiting)
    riskiest = waiting.sort_values("fraud_probability").iloc[-1]["transaction_id"]
    assert queue["transaction_id"].iloc[0] == riskiest
    at.sidebar.text_input(key="analyst").set_value("alice")
    at.multiselect(key="to_label").set_value([riskiest])
    at.radio(key="verdict").set_value("Fraud")
    at.button(key="record_label").click().run()
    assert not at.exception
    assert "Recorded 1 label(s) as fraud by alice." in [s.value for s in at.success]
    assert len(at.dataframe[0].value) == len(waiting) - 1
    engine = db.create_db_engine(get_settings().resolved_database_url)
    with engine.connect() as conn:
        label = conn.execute(
            sa.select(db.labels).where(db.labels.c.transaction_id == riskiest)
        ).one()
    engine.dispose()
    assert (label.is_fraud, label.source, label.labelled_by) == (1, "analyst", "alice")


def test_alerts_acknowledge(app) -> None:
    at = app("views/alerts.py")
    assert [s.value for s in at.subheader][:2] == [
        "Open (2)",
        "Acknowledged in this time range (1)",
    ]
    at.sidebar.text_input(key="analyst").set_value("dave")
    open_ids = at.multiselect(key="to_acknowledge").options
    at.multiselect(key="to_acknowledge").set_value([int(open_ids[0].split()[0][1:])])
    at.button(key="acknowledge_button").click().run()
    assert not at.exception
    assert "Acknowledged 1 alert(s) as dave." in [s.value for s in at.success]
    assert [s.value for s in at.subheader][:2] == [
        "Open (1)",
        "Acknowledged in this time range (2)",
    ]


def test_empty_database_shows_empty_states(settings: Settings) -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()
    st.cache_resource.clear()
    for file, *_ in PAGES.values():
        at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=60)
        _open(at, file)
        assert at.info or at.success, file
    st.cache_data.clear()
    st.cache_resource.clear()


def test_every_page_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    """PostgreSQL's driver returns its own value types (aware datetimes, booleans, JSON)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    values = {"FRAUDOPS_DATA_DIR": str(tmp_path / "data"), "FRAUDOPS_DATABASE_URL": postgres_url}
    with environment(values):
        frame = seed_predictions(get_settings(), 400, 2)
        seed_monitoring(get_settings(), 2, with_report=False)
        st.cache_data.clear()
        st.cache_resource.clear()
        try:
            for file, *_ in PAGES.values():
                at = _open(
                    AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=60), file
                )
                if file == "views/overview.py":
                    assert metrics(at)["Predictions"] == f"{len(frame):,}"
                if file == "views/alerts.py":
                    assert at.subheader[0].value == "Open (2)"
                if file == "views/review.py":
                    waiting = frame[(frame["decision"] == "review") & frame["is_fraud"].isna()]
                    assert len(at.dataframe[0].value) == len(waiting)
                    assert "tx_amount = " in at.dataframe[0].value["reasons"].iloc[0]
        finally:
            st.cache_data.clear()
            st.cache_resource.clear()


# --- a real browser --------------------------------------------------------------------------
@pytest.fixture
def streamlit_server(seeded: Seeded, tmp_path: Path) -> Iterator[str]:
    """``streamlit run dashboard/app.py`` on a free port, polled until healthy."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDOPS_")}
    env.update(seeded.values)
    log_path = tmp_path / "streamlit.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "dashboard/app.py",
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
                "--server.fileWatcherType",
                "none",
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"streamlit exited ({process.returncode}):\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit not healthy after 60 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_every_page_in_chromium(streamlit_server: str) -> None:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: apt-get install -y chromium"
        if IN_CI:
            pytest.fail(f"Chromium is required in CI: {reason}", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            for path, (_, title, charts, tables) in PAGES.items():
                page.goto(f"{streamlit_server}/{path}")
                page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=30_000)
                # rendered: every chart drawn and every table shown
                page.wait_for_function(
                    """([charts, tables]) =>
                      document.querySelectorAll('.js-plotly-plot .main-svg').length >= charts
                      && document.querySelectorAll('[data-testid="stDataFrame"]').length >= tables
                      && document.querySelector('[data-test-script-state="notRunning"]')""",
                    arg=[charts, tables],
                    timeout=30_000,
                )
                name = path or "overview"
                page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)
                exceptions = page.locator('[data-testid="stException"]')
                assert exceptions.count() == 0, f"{name}: {exceptions.first.inner_text()}"
                assert page.get_by_text("Page not found").count() == 0, name
                if name == "drift":  # the embedded Evidently report rendered its widgets
                    report = page.frame_locator("iframe").first
                    report.get_by_text("Dataset Drift").first.wait_for(timeout=30_000)
            assert not errors, errors
        finally:
            browser.close()
