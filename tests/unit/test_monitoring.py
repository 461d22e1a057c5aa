"""Monitoring without services: alert rules, thresholds from the environment, windows, the
Evidently wrapper on synthetic data, and labels validation."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from fraudops.core import contract as c
from fraudops.data.ingest import ValidationFailed
from fraudops.data.labels import validate_labels
from fraudops.monitoring.monitor import (
    FeatureDrift,
    MonitorSettings,
    Summary,
    Window,
    decide,
    decision_mix,
    evaluate_alerts,
    operational_stats,
    run_evidently,
)

TEST_METRICS = {"roc_auc": 0.90, "average_precision": 0.60}


@pytest.fixture
def thresholds(monkeypatch: pytest.MonkeyPatch) -> MonitorSettings:
    for name in [n for n in os.environ if n.startswith("FRAUDOPS_")]:
        monkeypatch.delenv(name)
    return MonitorSettings(_env_file=None)


def healthy(**changes: object) -> Summary:
    """A window with nothing wrong; ``changes`` make it wrong."""
    drift = [FeatureDrift(f"f{i}", "wasserstein", 0.02, 0.1, False, True) for i in range(10)]
    summary = Summary(
        window_start=datetime(2026, 5, 1, tzinfo=UTC),
        window_end=datetime(2026, 5, 2, tzinfo=UTC),
        model_name="fraud-detector",
        model_version="3",
        reference_run_id="r",
        window_predictions=10_000,
        predictions=10_000,
        labelled=4000,
        frauds=80,
        approve_share=0.9,
        review_share=0.08,
        block_share=0.02,
        latency_p50_ms=4,
        latency_p95_ms=9,
        latency_p99_ms=20,
        degraded_share=0.0,
        features_checked=10,
        drifted_features=0,
        drift_share=0.0,
        score_drift=0.01,
        decision_drift=0.01,
        roc_auc=0.91,
        average_precision=0.62,
        reference_decision_mix={"block": 0.02},
        feature_drift=drift,
    )
    for key, value in changes.items():
        setattr(summary, key, value)
    return summary


def test_a_healthy_window_raises_nothing(thresholds: MonitorSettings) -> None:
    assert evaluate_alerts(healthy(), thresholds, TEST_METRICS) == []


def test_feature_drift_alert_names_the_most_drifted_features(thresholds: MonitorSettings) -> None:
    drift = [FeatureDrift(f"f{i}", "wasserstein", 0.1 + i / 10, 0.1, True, True) for i in range(6)]
    drift += [FeatureDrift("tx_is_weekend", "wasserstein", 2.0, 0.1, True, False)]
    summary = healthy(feature_drift=drift, drifted_features=6, features_checked=10, drift_share=0.6)
    [alert] = evaluate_alerts(summary, thresholds, TEST_METRICS)
    assert (alert.kind, alert.severity, alert.value, alert.threshold) == (
        "feature_drift",
        "warning",
        0.6,
        0.5,
    )
    assert alert.message.startswith("6 of 10 features drifted (60%, alert at 50%)")
    assert "f5 (0.60), f4 (0.50)" in alert.message and "tx_is_weekend" not in alert.message


def test_score_drift_is_critical_and_compares_block_rates(thresholds: MonitorSettings) -> None:
    [alert] = evaluate_alerts(healthy(score_drift=0.3, block_share=0.08), thresholds, TEST_METRICS)
    assert (alert.kind, alert.severity) == ("score_drift", "critical")
    assert "block rate 8.0% against 2.0% on the training data" in alert.message


def test_small_windows_raise_no_drift_alert(thresholds: MonitorSettings) -> None:
    summary = healthy(predictions=100, window_predictions=100, drift_share=0.9, score_drift=0.5)
    assert evaluate_alerts(summary, thresholds, TEST_METRICS) == []


@pytest.mark.parametrize(("p99", "severity"), [(150.0, "warning"), (250.0, "critical")])
def test_latency(thresholds: MonitorSettings, p99: float, severity: str) -> None:
    [alert] = evaluate_alerts(healthy(latency_p99_ms=p99), thresholds, TEST_METRICS)
    assert (alert.kind, alert.severity) == ("latency", severity)
    assert alert.message == f"scoring latency p99 {p99:.0f} ms >= 100 ms over 10,000 predictions"


def test_degraded_scoring(thresholds: MonitorSettings) -> None:
    [alert] = evaluate_alerts(healthy(degraded_share=0.05), thresholds, TEST_METRICS)
    assert (alert.kind, alert.severity) == ("error_rate", "critical")
    assert alert.message.startswith("5.0% of 10,000 predictions were scored in degraded mode")


def test_quality_drop_needs_enough_labelled_fraud(thresholds: MonitorSettings) -> None:
    worse = healthy(roc_auc=0.80, average_precision=0.45)
    alerts = evaluate_alerts(worse, thresholds, TEST_METRICS)
    assert [(a.kind, round(a.value, 3)) for a in alerts] == [
        ("roc_auc_drop", 0.1),
        ("average_precision_drop", 0.15),
    ]
    assert alerts[0].message.startswith("ROC AUC of fraud-detector v3 is 0.800 on 4,000 labelled")
    worse.frauds = 5  # too few to tell
    assert evaluate_alerts(worse, thresholds, TEST_METRICS) == []
    assert (
        evaluate_alerts(healthy(roc_auc=None, average_precision=None), thresholds, TEST_METRICS)
        == []
    )


def test_thresholds_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDOPS_ALERT_DRIFT_SHARE", "0.3")
    monkeypatch.setenv("FRAUDOPS_DRIFT_IGNORE_FEATURES", "tx_hour, tx_is_weekend")
    monkeypatch.setenv("FRAUDOPS_ALERT_WEBHOOK_URL", "https://hooks.example/x")
    found = MonitorSettings(_env_file=None)
    assert found.alert_drift_share == 0.3
    assert found.drift_ignore_features == ["tx_hour", "tx_is_weekend"]
    assert found.alert_webhook_url == "https://hooks.example/x"
    monkeypatch.setenv("FRAUDOPS_ALERT_DRIFT_SHARE", "1.5")
    with pytest.raises(ValueError, match="alert_drift_share"):
        MonitorSettings(_env_file=None)


def test_windows_are_utc_and_ordered() -> None:
    window = Window(datetime(2026, 5, 1), datetime(2026, 5, 2))
    assert window.start.tzinfo is UTC and window.slug == "20260501T000000Z_20260502T000000Z"
    assert str(window) == "2026-05-01 00:00 to 2026-05-02 00:00 UTC"
    now = datetime(2026, 5, 2, 12, tzinfo=UTC)
    assert Window.last(timedelta(hours=6), now).start == datetime(2026, 5, 2, 6, tzinfo=UTC)
    with pytest.raises(ValueError, match="must end after it starts"):
        Window(datetime(2026, 5, 2), datetime(2026, 5, 1))


def test_decisions_and_operational_stats() -> None:
    decisions = decide(np.array([0.01, 0.2, 0.7, 0.05]), review=0.05, block=0.5)
    assert decisions.tolist() == ["approve", "review", "block", "review"]
    assert decision_mix(pd.Series(decisions)) == {"approve": 0.25, "review": 0.5, "block": 0.25}
    frame = pd.DataFrame(
        {"latency_ms": np.arange(1, 101, dtype=float), "degraded": [True] * 3 + [False] * 97}
    )
    stats = operational_stats(frame)
    assert stats["latency_p50_ms"] == pytest.approx(50.5) and stats["degraded_share"] == 0.03
    assert operational_stats(frame.iloc[0:0])["latency_p99_ms"] is None


def test_evidently_wrapper_finds_the_shifted_feature(thresholds: MonitorSettings) -> None:
    """The one place Evidently's API is used: drift per feature, score and decision drift,
    classification quality as scikit-learn computes it."""
    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    rng = np.random.default_rng(0)

    def frame(n: int, shift: float) -> pd.DataFrame:
        df = pd.DataFrame(
            {"amount": rng.gamma(2.0, 30.0, n) * (1 + shift), "hour": rng.uniform(0, 24, n)}
        )
        df["fraud_probability"] = np.clip(rng.beta(0.5, 8.0, n) + shift / 3, 0, 1)
        df["decision"] = decide(df["fraud_probability"].to_numpy(), 0.05, 0.5)
        df[c.IS_FRAUD] = (rng.random(n) < df["fraud_probability"]).astype(float)
        return df

    current = frame(3000, shift=0.5)
    current.loc[current.index[:1000], c.IS_FRAUD] = np.nan  # labels not arrived yet
    result = run_evidently(current, frame(3000, shift=0.0), ["amount", "hour"], thresholds, 0.5)
    drift = {d.feature: d for d in result.feature_drift}
    assert drift["amount"].drifted and drift["amount"].score > 0.3
    assert not drift["hour"].drifted and drift["hour"].score < 0.1
    assert drift["amount"].method == "wasserstein" and drift["amount"].threshold == 0.1
    assert result.score_drift > 0.1 and result.decision_drift > 0.0
    quality = result.quality_metrics
    labelled = current.dropna(subset=[c.IS_FRAUD])
    y, p = labelled[c.IS_FRAUD].astype(int), labelled["fraud_probability"]
    assert quality is not None and quality.labelled == 2000
    assert quality.roc_auc == pytest.approx(roc_auc_score(y, p))
    assert quality.precision_at_block == pytest.approx(precision_score(y, p >= 0.5))
    assert quality.recall_at_block == pytest.approx(recall_score(y, p >= 0.5))


def test_labels_validation_names_file_row_and_column() -> None:
    raw = pd.DataFrame(
        {
            "transaction_id": ["tx_1", "", "tx_3", "tx_1"],
            "is_fraud": ["1", "0", "2", "0"],
            "label_timestamp": ["2026-05-20T00:00:00Z", "2026-05-20", "", "2026-05-21T00:00:00Z"],
        }
    )
    with pytest.raises(ValidationFailed) as caught:
        validate_labels(raw, "cb.csv")
    problems = [str(p) for p in caught.value.problems]
    assert (
        "cb.csv, row 2, column 'transaction_id': expected a non-empty string identifier, "
        "got ''" in problems
    )
    assert "cb.csv, row 3, column 'is_fraud': expected 0 or 1, got '2'" in problems
    assert any(p.startswith("cb.csv, row 3, column 'label_timestamp'") for p in problems)
    assert any(
        p.startswith("cb.csv, row 4, column 'transaction_id': expected one label") for p in problems
    )
    good = validate_labels(raw.iloc[[0]], "cb.csv")
    assert good[c.IS_FRAUD].dtype == "int8"
    assert good[c.LABEL_TIMESTAMP].iloc[0] == pd.Timestamp("2026-05-20", tz="UTC")


def test_an_unreachable_webhook_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    from fraudops.monitoring.monitor import Alert, notify
    from tests.conftest import free_port

    window = Window(datetime(2026, 5, 1), datetime(2026, 5, 2))
    alert = Alert("latency", "warning", "scoring latency p99 140 ms >= 100 ms", 140.0, 100.0)
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    assert notify([alert], window, url, timeout=2) is False
    assert "could not POST 1 alert(s) to the webhook" in caplog.text


def test_stale_batch_features_raise_an_alert_naming_the_view() -> None:
    from datetime import UTC, datetime, timedelta

    from fraudops.features.freshness import store_freshness
    from fraudops.monitoring.monitor import freshness_alerts

    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    budgets = {"terminal_daily": timedelta(days=2)}
    fresh = store_freshness(budgets, {"terminal_daily": now - timedelta(hours=3)}, now)
    assert freshness_alerts(fresh) == []
    old = store_freshness(budgets, {"terminal_daily": now - timedelta(days=5)}, now)
    (alert,) = freshness_alerts(old)
    assert alert.kind == "stale_features" and alert.severity == "critical"
    assert "terminal_daily: newest row" in alert.message and "fraudops nightly" in alert.message
    assert (alert.value, alert.threshold) == (5 * 86400, 2 * 86400)
    (empty,) = freshness_alerts(store_freshness(budgets, {"terminal_daily": None}, now))
    assert "holds no row" in empty.message and empty.value == -1.0


def test_a_window_without_predictions_says_which_days_have_some(settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`fraudops monitor` on an empty window exits non-zero naming the days that have
    predictions, and records no run."""
    import sqlalchemy as sa
    from typer.testing import CliRunner

    from fraudops.cli.app import app
    from fraudops.core.db import create_db_engine, monitor_runs, predictions, upgrade
    from fraudops.monitoring import monitor as monitoring

    reference = monitoring.Reference(
        "fraud-detector", "1", "run", ["tx_amount"], 0.3, 0.9, {}, pd.DataFrame()
    )
    monkeypatch.setattr(monitoring, "load_reference", lambda *_: reference)
    url = settings.resolved_database_url
    upgrade(url)
    engine = create_db_engine(url)
    at = datetime(2026, 5, 11, 10, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            predictions.insert(),
            [
                {
                    "prediction_id": f"p{i}",
                    "transaction_id": f"t{i}",
                    "event_timestamp": at + timedelta(days=i),
                    "scored_at": at,
                    "customer_id": "c",
                    "terminal_id": "t",
                    "amount": 1.0,
                    "features": {"tx_amount": 1.0},
                    "fraud_probability": 0.1,
                    "decision": "approve",
                    "reasons": [],
                    "model_version": "1",
                    "latency_ms": 1.0,
                    "degraded": False,
                    "source": "api",
                }
                for i in range(2)
            ],
        )
    result = CliRunner().invoke(
        app, ["monitor", "--start", "2026-06-01", "--no-workspace"], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 2, result.output
    assert "error: no predictions in 2026-06-01 00:00 to 2026-06-02 00:00 UTC" in result.output
    assert "predictions on 2 day(s): 2026-05-11, 2026-05-12 (UTC)" in result.output
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(monitor_runs)).scalar() == 0
    engine.dispose()
