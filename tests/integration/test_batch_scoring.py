"""``fraudops score``'s point-in-time features equal the offline training features (Feast's
``get_historical_features`` over the built tables) for the same transactions, whether they
are already in the offline store (backtests) or new (batch jobs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudops.core import contract as c
from fraudops.core.settings import Settings, get_settings
from fraudops.data.ingest import write_parquet_atomic
from fraudops.data.simulator import simulate
from fraudops.features.build import build_from_offline_store
from fraudops.features.feast_store import (
    apply_definitions,
    feature_service,
    get_store,
    service_feature_names,
)
from fraudops.features.offline import offline_features
from fraudops.model.batch_scoring import point_in_time_features

pytestmark = pytest.mark.integration
DAY = pd.Timestamp("2026-04-25", tz="UTC")


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return simulate(customers=300, terminals=600, days=30, seed=5)


def training_features(settings: Settings, tx: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    write_parquet_atomic(tx, settings.transactions_path)
    build_from_offline_store(settings)
    store = get_store()
    apply_definitions(store)
    service = feature_service(store)
    names = service_feature_names(service)
    return offline_features(store, service, rows)[names]


def test_features_equal_the_training_features(settings: Settings, history) -> None:
    day = history[(history[c.TIMESTAMP] >= DAY) & (history[c.TIMESTAMP] < DAY + pd.Timedelta("1D"))]
    file_rows = day.sample(frac=1.0, random_state=0).reset_index(drop=True)  # any row order
    expected = training_features(settings, history, file_rows)
    assert len(expected) > 100 and expected["terminal_risk_28d"].gt(0).any()

    backtest = point_in_time_features(settings, file_rows)[expected.columns]
    np.testing.assert_allclose(backtest.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-9)

    # the same day as a new file: only the history before it is in the offline store
    write_parquet_atomic(history[history[c.TIMESTAMP] < DAY], settings.transactions_path)
    get_settings.cache_clear()
    new = point_in_time_features(
        get_settings(), file_rows.drop(columns=[c.IS_FRAUD, c.LABEL_TIMESTAMP])
    )
    np.testing.assert_allclose(
        new[expected.columns].to_numpy(), expected.to_numpy(), rtol=0, atol=1e-9
    )
