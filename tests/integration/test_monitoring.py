"""The monitor against a real trained champion, MLflow and a real prediction log: it raises
drift alerts on a drifted window and stays quiet on an undrifted one; delayed labels land
in the labels table and the offline store; alerts are recorded and acknowledged.

The prediction log is written as the scorer writes it, from point-in-time features of the
simulated transactions (Feast offline store, which a skew test proves equal to the online
path) scored by the @champion model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner

from fraudops.core import contract as c
from fraudops.core import db
from fraudops.core.settings import Settings, get_settings
from fraudops.data.ingest import ValidationFailed, write_parquet_atomic
from fraudops.data.labels import ingest_labels, record_analyst_labels, sync_offline
from fraudops.monitoring.monitor import Window, acknowledge_alerts, monitor
from fraudops.serving.prediction_log import PredictionLog
from tests.integration.conftest import environment, prepare_trained_environment

pytestmark = pytest.mark.integration

DRIFT_DATE = date(2026, 5, 11)  # prepare_trained_environment's 40 days end on 2026-05-10
UNDRIFTED = Window(datetime(2026, 5, 8), datetime(2026, 5, 11))
DRIFTED = Window(datetime(2026, 5, 13), datetime(2026, 5, 16))


def log_predictions(settings: Settings, tx: pd.DataFrame, seed: int = 0) -> int:
    """Score ``tx`` with the champion on point-in-time features and write the prediction log
    the way the scorer does (its record fields and reasons, through PredictionLog)."""
    from fraudops.features.feast_store import feature_service, get_store
    from fraudops.features.offline import offline_features
    from fraudops.model import registry
    from fraudops.serving.scoring import explain

    client = registry.configure(settings)
    champion = registry.load_alias(client, settings.model_name, registry.CHAMPION)
    assert champion is not None
    model = champion.model
    store = get_store()
    frame = offline_features(store, feature_service(store, model.metadata.feature_service), tx)
    matrix = frame[model.feature_names].to_numpy(dtype=np.float64)
    probability = model.predict_proba(matrix)
    decisions = model.decide(probability)
    reasons = explain(model, matrix, model.feature_names, decisions)
    latency = np.random.default_rng(seed).gamma(2.0, 3.0, len(frame))  # a few ms, as served
    scored_at = datetime.now(UTC)
    rows = [
        {
            "prediction_id": f"p-{tid}",
            "transaction_id": tid,
            "event_timestamp": ts.to_pydatetime(),
            "scored_at": scored_at,
            "customer_id": customer,
            "terminal_id": terminal,
            "amount": float(amount),
            "features": dict(zip(model.feature_names, map(float, matrix[i]), strict=True)),
            "fraud_probability": float(probability[i]),
            "decision": str(decisions[i]),
            "reasons": reasons[i],
            "model_version": champion.version,
            "latency_ms": float(latency[i]),
            "degraded": False,
            "source": "http",
        }
        for i, (tid, ts, customer, terminal, amount) in enumerate(
            frame[
                [c.TRANSACTION_ID, c.TIMESTAMP, c.CUSTOMER_ID, c.TERMINAL_ID, c.AMOUNT]
            ].itertuples(index=False)
        )
    ]
    log = PredictionLog(settings.resolved_database_url, settings.data_dir / "spool.jsonl")
    log.write_now(rows)
    log.engine.dispose()
    return len(rows)


def chargebacks(tx: pd.DataFrame, path: Path) -> Path:
    """The labels of ``tx`` as a bank would send them."""
    tx[[c.TRANSACTION_ID, c.IS_FRAUD, c.LABEL_TIMESTAMP]].to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A promoted champion trained before DRIFT_DATE; behaviour drifts from DRIFT_DATE on;
    the undrifted and drifted windows are scored into the prediction log."""
    from fraudops.data.simulator import simulate
    from fraudops.features.build import build_from_offline_store

    root = tmp_path_factory.mktemp("monitoring")
    values = {"FRAUDOPS_DATA_DIR": str(root / "data")}
    prepare_trained_environment(values)
    with environment(values):
        settings = get_settings()
        # identical to the training history up to DRIFT_DATE (the simulator's prefix property)
        tx = simulate(customers=300, terminals=600, days=46, seed=5, drift_date=DRIFT_DATE)
        write_parquet_atomic(tx, settings.transactions_path)
        build_from_offline_store(settings)
        for window in (UNDRIFTED, DRIFTED):
            inside = tx[(tx[c.TIMESTAMP] >= window.start) & (tx[c.TIMESTAMP] < window.end)]
            log_predictions(settings, inside)
        report = ingest_labels(
            settings,
            chargebacks(
                tx[(tx[c.TIMESTAMP] >= UNDRIFTED.start) & (tx[c.TIMESTAMP] < DRIFTED.end)],
                root / "chargebacks.csv",
            ),
        )
        assert report.offline_rows_updated == report.labels > 1000
        yield values


def test_a_drifted_window_raises_drift_alerts(monitored: dict[str, str], tmp_path: Path) -> None:
    with environment(monitored):
        settings = get_settings()
        result = monitor(settings, DRIFTED, workspace=tmp_path / "evidently")
        summary = result.summary
        kinds = {a.kind for a in result.alerts}
        assert {"feature_drift", "score_drift"} <= kinds, result.json()
        assert summary.drift_share is not None and summary.drift_share >= 0.5
        assert summary.score_drift is not None and summary.score_drift >= 0.1
        # the drift the simulator injects: bigger amounts, later hours
        drifted = {d.feature for d in summary.feature_drift if d.drifted}
        assert {"tx_amount", "tx_hour", "customer_amount_avg_1d"} <= drifted
        assert summary.block_share is not None
        assert summary.block_share > summary.reference_decision_mix["block"]
        # labels arrived for the whole window: quality is measured
        assert summary.labelled == summary.predictions > 1000
        assert summary.roc_auc is not None and 0.5 < summary.roc_auc <= 1
        assert summary.precision_at_block is not None and summary.recall_at_block is not None
        for path in result.reports.values():
            assert Path(path).stat().st_size > 100_000
        assert list((tmp_path / "evidently").glob("*/snapshots/*.json"))
        engine = db.create_db_engine(settings.resolved_database_url)
        with engine.connect() as conn:
            run = conn.execute(
                sa.select(db.monitor_runs).where(db.monitor_runs.c.run_id == result.run_id)
            ).one()
            assert run.alerts == len(result.alerts) and run.model_version == "1"
            assert run.drift_share == pytest.approx(summary.drift_share)
            per_feature = conn.execute(
                sa.select(sa.func.count()).where(db.feature_drift.c.run_id == result.run_id)
            ).scalar_one()
            assert per_feature == len(summary.feature_drift) == 32
            stored = conn.execute(
                sa.select(db.alerts).where(db.alerts.c.run_id == result.run_id)
            ).all()
        assert {a.kind for a in stored} == kinds
        assert all(not a.acknowledged and a.message for a in stored)
        assert acknowledge_alerts(engine, [a.id for a in stored], "alice") == len(stored)
        assert acknowledge_alerts(engine, [a.id for a in stored], "alice") == 0
        engine.dispose()


def test_an_undrifted_window_raises_no_alert(monitored: dict[str, str]) -> None:
    with environment(monitored):
        result = monitor(get_settings(), UNDRIFTED)
    summary = result.summary
    assert result.alerts == [], result.json()
    assert summary.drift_share is not None and summary.drift_share < 0.5
    assert summary.score_drift is not None and summary.score_drift < 0.1
    assert summary.roc_auc is not None and summary.roc_auc > 0.8
    assert summary.latency_p99_ms is not None and summary.latency_p99_ms < 100
    assert summary.degraded_share == 0


def test_monitor_command_posts_new_alerts_to_the_webhook_once(
    monitored: dict[str, str], webhook: tuple[str, list[dict]]
) -> None:
    """``fraudops monitor`` prints its findings as JSON; a problem still open at the next
    run updates its alert instead of raising (and posting) it again."""
    from fraudops.cli.monitor import monitor as monitor_command

    url, received = webhook
    app = typer.Typer()
    app.command()(monitor_command)
    app.command("noop")(lambda: None)  # two commands: the first is a subcommand, as in fraudops
    args = [
        "monitor",
        "--start",
        "2026-05-13",
        "--window",
        "3d",
        "--no-workspace",
        "--fail-on-alert",
    ]
    with environment({**monitored, "FRAUDOPS_ALERT_WEBHOOK_URL": url}):
        engine = db.create_db_engine(get_settings().resolved_database_url)
        with engine.begin() as conn:  # start from no open alert
            conn.execute(db.alerts.update().values(acknowledged=True, acknowledged_by="test"))
        first = CliRunner().invoke(app, args)
        second = CliRunner().invoke(app, args)
        with engine.connect() as conn:
            still_open = conn.execute(
                sa.select(db.alerts).where(db.alerts.c.acknowledged.is_(False))
            ).all()
        engine.dispose()
    assert first.exit_code == second.exit_code == 1, first.output
    printed = json.loads(first.stdout)
    assert printed["window_end"].startswith("2026-05-16")
    kinds = {a["kind"] for a in printed["alerts"]}
    assert kinds >= {"feature_drift", "score_drift"}
    [posted] = received  # the second run found the same problems: nothing new to post
    assert {a["kind"] for a in posted["alerts"]} == kinds
    assert posted["text"].startswith("FraudOps monitor, 2026-05-13 00:00 to 2026-05-16 00:00 UTC")
    assert sorted(a.kind for a in still_open) == sorted(kinds)
    assert {a.run_id for a in still_open} == {json.loads(second.stdout)["run_id"]}


def test_no_champion_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(LookupError, match="no version of fraud-detector has alias @champion"):
        monitor(settings, UNDRIFTED)


# --- labels ---------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def label_settings(request, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """An offline table of 6 transactions (2 labelled), 2 more only in the prediction log."""
    if request.param == "postgresql":
        monkeypatch.setenv("FRAUDOPS_DATABASE_URL", request.getfixturevalue("postgres_url"))
        get_settings.cache_clear()
        settings = get_settings()
    ts = pd.date_range("2026-05-01", periods=8, freq="h", tz="UTC")
    tx = pd.DataFrame(
        {
            c.TRANSACTION_ID: [f"tx_{i}" for i in range(8)],
            c.TIMESTAMP: ts,
            c.CUSTOMER_ID: "c_1",
            c.TERMINAL_ID: "t_1",
            c.AMOUNT: 10.0,
            c.IS_FRAUD: [0, 1, *[np.nan] * 6],
            c.LABEL_TIMESTAMP: [ts[0], ts[1], *[pd.NaT] * 6],
        }
    )
    write_parquet_atomic(tx.iloc[:6], settings.transactions_path)
    log = PredictionLog(settings.resolved_database_url, settings.data_dir / "spool.jsonl")
    log.write_now(
        [
            {
                "prediction_id": f"p{i}",
                "transaction_id": f"tx_{i}",
                "event_timestamp": ts[i].to_pydatetime(),
                "scored_at": ts[i].to_pydatetime(),
                "customer_id": "c_1",
                "terminal_id": "t_1",
                "amount": 10.0,
                "features": {},
                "fraud_probability": 0.2,
                "decision": "review",
                "reasons": [],
                "model_version": "1",
                "latency_ms": 3.0,
                "degraded": False,
                "source": "http",
            }
            for i in range(3, 8)
        ]
    )
    log.engine.dispose()
    return settings


def _labels_table(settings: Settings) -> pd.DataFrame:
    engine = db.create_db_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.labels).order_by(db.labels.c.transaction_id)).all()
    engine.dispose()
    return pd.DataFrame(rows, columns=[col.name for col in db.labels.columns])


def test_labels_land_in_the_table_and_the_offline_store(
    label_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = label_settings
    path = tmp_path / "chargebacks.csv"
    path.write_text(
        "transaction_id,is_fraud,label_timestamp\n"
        "tx_1,0,2026-05-20T00:00:00Z\n"  # overturns a label the offline table had
        "tx_2,1,2026-05-20T00:00:00Z\n"
        "tx_6,1,2026-05-21T00:00:00Z\n"  # only in the prediction log
    )
    with caplog.at_level(logging.WARNING, logger="fraudops.data.labels"):
        report = ingest_labels(settings, path, labelled_by="bank-feed")
    assert (report.labels, report.frauds, report.offline_rows_updated) == (3, 2, 2)
    assert report.only_in_prediction_log == ["tx_6"]
    assert "only in the prediction log" in caplog.text and "tx_6" in caplog.text

    tx = pd.read_parquet(settings.transactions_path).set_index(c.TRANSACTION_ID)
    assert tx[c.IS_FRAUD].tolist()[:3] == [0, 0, 1]
    assert tx[c.IS_FRAUD].iloc[3:].isna().all()
    assert tx.loc["tx_2", c.LABEL_TIMESTAMP] == pd.Timestamp("2026-05-20", tz="UTC")
    table = _labels_table(settings)
    assert table["transaction_id"].tolist() == ["tx_1", "tx_2", "tx_6"]
    assert set(table["source"]) == {"file:chargebacks.csv"}
    assert set(table["labelled_by"]) == {"bank-feed"}

    # an analyst's verdict from the review queue, then into the offline store
    engine = db.create_db_engine(settings.resolved_database_url)
    assert record_analyst_labels(engine, ["tx_3", "tx_6"], True, "alice") == 2
    engine.dispose()
    table = _labels_table(settings).set_index("transaction_id")
    assert table.loc["tx_3", "source"] == "analyst" and table.loc["tx_3", "labelled_by"] == "alice"
    assert sync_offline(settings) == 3  # tx_1, tx_2, tx_3 (tx_6 is not in the offline table)
    assert pd.read_parquet(settings.transactions_path)[c.IS_FRAUD].iloc[3] == 1


def test_bad_labels_are_named_and_nothing_is_written(
    label_settings: Settings, tmp_path: Path
) -> None:
    settings = label_settings
    before = pd.read_parquet(settings.transactions_path)
    path = tmp_path / "chargebacks.csv"
    path.write_text(
        "transaction_id,is_fraud,label_timestamp\n"
        "tx_1,1,2026-05-20T00:00:00Z\n"
        "tx_2,yes,2026-05-20T00:00:00Z\n"
        "tx_3,1,soon\n"
        "tx_404,1,2026-05-20T00:00:00Z\n"
        "tx_4,1,2026-04-01T00:00:00Z\n"
        "tx_1,0,2026-05-20T00:00:00Z\n"
    )
    with pytest.raises(ValidationFailed) as caught:
        ingest_labels(settings, path)
    message = str(caught.value)
    # CSV rows are named by their line (the header is line 1)
    assert "chargebacks.csv, line 3, column 'is_fraud': expected a number, got 'yes'" in message
    assert "line 4, column 'label_timestamp': expected an ISO 8601 timestamp" in message
    assert "line 7, column 'transaction_id': expected one label per transaction" in message
    # unknown ids and early labels are checked once the file itself is clean
    assert caught.value.total == 3

    path.write_text(
        "transaction_id,is_fraud,label_timestamp\n"
        "tx_1,1,2026-05-20T00:00:00Z\n"
        "tx_404,1,2026-05-20T00:00:00Z\n"
        "tx_4,1,2026-04-01T00:00:00Z\n"
    )
    with pytest.raises(ValidationFailed) as caught:
        ingest_labels(settings, path)
    message = str(caught.value)
    assert "line 3, column 'transaction_id': expected a transaction in the offline store" in message
    assert "line 4, column 'label_timestamp': expected a time at or after the transaction" in (
        message
    )
    pd.testing.assert_frame_equal(pd.read_parquet(settings.transactions_path), before)
    assert _labels_table(settings).empty

    path.write_text(
        "transaction_id,is_fraud,label_timestamp\n"
        "tx_1,1,2026-05-20T00:00:00Z\n"
        "tx_404,1,2026-05-20T00:00:00Z\n"
    )
    report = ingest_labels(settings, path, skip_unknown=True)
    assert report.labels == 1 and report.skipped_unknown == ["tx_404"]
    missing = tmp_path / "no-timestamps.csv"
    missing.write_text("transaction_id,is_fraud\ntx_1,1\n")
    with pytest.raises(ValidationFailed, match="expected a column named 'label_timestamp'"):
        ingest_labels(settings, missing)


def test_labels_of_only_unknown_transactions_are_named_not_a_crash(
    label_settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "chargebacks.csv"
    path.write_text(
        "transaction_id,is_fraud,label_timestamp\n"
        "nope_1,1,2026-05-20T00:00:00Z\n"
        "nope_2,0,2026-05-20T00:00:00Z\n"
    )
    with pytest.raises(ValidationFailed) as caught:
        ingest_labels(label_settings, path)
    assert "line 2, column 'transaction_id': expected a transaction in the offline" in str(
        caught.value
    )
    assert caught.value.total == 2
    report = ingest_labels(label_settings, path, skip_unknown=True)
    assert report.labels == 0 and report.skipped_unknown == ["nope_1", "nope_2"]
    assert _labels_table(label_settings).empty


# --- a webhook receiver ----------------------------------------------------------------------
@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A local HTTP endpoint that records JSON bodies POSTed to it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()
