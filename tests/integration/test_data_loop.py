"""Issue #20's proof through the API: simulated history, train, promote, serve; then a week
through /score_batch day by day with only the nightly job (fraudops.features.nightly) between days.
The API's ROC AUC and average precision over the week are within 0.01 of the same model's
offline evaluation (features built afterwards with every transaction and label), and no
transaction of the week met an expired terminal row. Before the first nightly run the
store is where a week without the job leaves it: /readyz fails naming terminal_daily and
the monitor's freshness check raises a stale_features alert.

Small population (300 customers, 600 terminals), SQLite everywhere, the ASGI app in
process: about a minute."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from fraudops.core import contract as c
from tests.integration.conftest import environment, scorer_asgi_app

pytestmark = pytest.mark.integration
WEEK = 7


def terminal_rows_written_us(store, terminals: list[str]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The event time (µs) of each terminal's terminal_daily row in the online store."""
    from fraudops.features.freshness import NO_ROW

    read = store.get_online_features(
        features=["terminal_daily:terminal_tx_count_1d"],
        entity_rows=[{c.TERMINAL_ID: t} for t in terminals],
    ).to_dict(include_event_timestamps=True)
    stamps = read["terminal_tx_count_1d__ts"]
    # Feast gives 0 (the epoch) for an entity without a row
    return np.array([NO_ROW if not s else int(s) * 1_000_000 for s in stamps], np.int64)


def test_a_week_through_the_api_with_only_the_nightly_job(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from fraudops.core.settings import get_settings
    from fraudops.data.ingest import write_parquet_atomic
    from fraudops.data.labels import ingest_labels
    from fraudops.data.simulator import simulate
    from fraudops.features.build import build_from_offline_store
    from fraudops.features.feast_store import apply_definitions, feature_service, get_store
    from fraudops.features.freshness import staleness, view_budgets
    from fraudops.features.materialize import materialize_once
    from fraudops.features.nightly import run_nightly
    from fraudops.features.offline import offline_features
    from fraudops.model.promotion import promote
    from fraudops.model.registry import CHAMPION, configure, load_alias
    from fraudops.model.training import train
    from fraudops.monitoring.monitor import check_feature_freshness

    today = pd.Timestamp(datetime.now(UTC).date(), tz="UTC")
    week_start = today - pd.Timedelta(days=WEEK)
    values = {"FRAUDOPS_DATA_DIR": str(tmp_path / "data"), "FRAUDOPS_LOG_FLUSH_SECONDS": "0.02"}
    with environment(values):
        settings = get_settings()
        tx = simulate(
            customers=300,
            terminals=600,
            days=40,
            seed=11,
            start_date=(today - pd.Timedelta(days=40)).date(),
        )
        history = tx[tx[c.TIMESTAMP] < week_start].reset_index(drop=True)
        week = tx[tx[c.TIMESTAMP] >= week_start].reset_index(drop=True)
        write_parquet_atomic(history, settings.transactions_path)
        build_from_offline_store(settings)
        store = get_store()
        apply_definitions(store)
        materialize_once()  # terminal features, and the customers' states seeded
        train_start = (history[c.TIMESTAMP].min() + pd.Timedelta(days=12)).date()
        train(settings, train_start=train_start, train_days=7, delay_days=7, test_days=7)
        promote(settings)
        budgets = view_budgets(store.list_feature_views(), settings.freshness_budgets)

        from service.service import _scorers

        scored: list[pd.DataFrame] = []
        with TestClient(scorer_asgi_app()) as client:
            # where a week without the nightly job leaves the store: stale, and said so
            ready = client.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert set(ready.json()["stale_views"]) == {"terminal_daily"}
            (alert,) = check_feature_freshness(settings)
            assert alert.kind == "stale_features" and "terminal_daily" in alert.message
            late = week[week[c.TIMESTAMP] >= week_start + pd.Timedelta(days=2)]
            rows = terminal_rows_written_us(store, late[c.TERMINAL_ID].tolist())
            late_us = late[c.TIMESTAMP].astype("int64") // 1000
            without_job = staleness(budgets, {"terminal_daily": rows}, late_us)
            assert without_job.stale.mean() > 0.9  # what quiet defaults would have hidden

            for day in range(WEEK):
                start = week_start + pd.Timedelta(days=day)
                today_tx = week[
                    (week[c.TIMESTAMP] >= start)
                    & (week[c.TIMESTAMP] < start + pd.Timedelta(days=1))
                ]
                written = terminal_rows_written_us(get_store(), today_tx[c.TERMINAL_ID].tolist())
                seen = staleness(
                    budgets,
                    {"terminal_daily": written},
                    today_tx[c.TIMESTAMP].astype("int64") // 1000,
                )
                bad = np.flatnonzero(seen.stale)
                assert not seen.any, (
                    f"day {day}: {len(bad)} stale rows: "
                    f"{today_tx.iloc[bad][[c.TERMINAL_ID, c.TIMESTAMP]].to_dict('records')}, "
                    f"written {written[bad].tolist()}"
                )
                for first in range(0, len(today_tx), 1000):
                    chunk = today_tx.iloc[first : first + 1000]
                    body = [
                        {
                            "transaction_id": t,
                            "timestamp": ts.isoformat(),
                            "customer_id": cu,
                            "terminal_id": te,
                            "amount": float(a),
                        }
                        for t, ts, cu, te, a in zip(
                            chunk[c.TRANSACTION_ID],
                            chunk[c.TIMESTAMP],
                            chunk[c.CUSTOMER_ID],
                            chunk[c.TERMINAL_ID],
                            chunk[c.AMOUNT],
                            strict=True,
                        )
                    ]
                    answer = client.post("/score_batch", json={"transactions": body})
                    assert answer.status_code == 200, answer.text
                    results = answer.json()["results"]
                    assert not any(r["degraded"] for r in results)
                    scored.append(pd.DataFrame(results))
                deadline = time.monotonic() + 30  # the log's writer flushes every 0.02 s
                while _scorers[-1].prediction_log.backlog() and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(0.2)
                # the day's newly known chargebacks, then the scheduled job: nothing else
                end = start + pd.Timedelta(days=1)
                known = tx[
                    (tx[c.IS_FRAUD] == 1)
                    & (tx[c.LABEL_TIMESTAMP] >= start)
                    & (tx[c.LABEL_TIMESTAMP] < end)
                    & (tx[c.TIMESTAMP] < end)
                ]
                if len(known):
                    path = tmp_path / f"chargebacks-{day}.csv"
                    known[[c.TRANSACTION_ID, c.IS_FRAUD, c.LABEL_TIMESTAMP]].to_csv(
                        path, index=False
                    )
                    ingest_labels(settings, path)
                report = run_nightly(settings)
                assert report.taken == len(today_tx)
            ready = client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["stale_views"] == {}
            assert check_feature_freshness(settings) == []

        api = pd.concat(scored, ignore_index=True).set_index("transaction_id")
        api = api.loc[week[c.TRANSACTION_ID], "fraud_probability"].to_numpy()
        # offline: every transaction and every label, features built afterwards
        write_parquet_atomic(tx, settings.transactions_path)
        build_from_offline_store(settings)
        store = get_store()
        model = load_alias(configure(settings), settings.model_name, CHAMPION).model
        frame = offline_features(
            store, feature_service(store, model.metadata.feature_service), week
        )
        offline = model.predict_proba(frame[model.feature_names].to_numpy())
        y = week[c.IS_FRAUD].to_numpy()
        assert y.sum() >= 10
        api_auc, offline_auc = roc_auc_score(y, api), roc_auc_score(y, offline)
        api_ap, offline_ap = average_precision_score(y, api), average_precision_score(y, offline)
        print(
            f"week: API ROC AUC {api_auc:.4f} AP {api_ap:.4f}; "
            f"offline {offline_auc:.4f} {offline_ap:.4f}"
        )
        assert abs(api_auc - offline_auc) <= 0.01 and abs(api_ap - offline_ap) <= 0.01
