"""One contract, one copy: the Feast definitions, the customer state the stores keep, the
offline build's tables, the feature service and the model's metadata must agree. Each
test fails when one of them drifts from the others."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from feast.types import Array, Float64, Int64, String

from fraudops.core import contract as c
from fraudops.features import maths as f
from fraudops.features.build import EVENT_TIMESTAMP, build_customer_tables, build_terminal_daily
from fraudops.features.feast_store import service_feature_names
from fraudops.features.realtime import STATE, STATE_FIELDS, STATS, Before, Commit, SqliteStateStore
from fraudops.model.fraud_model import FraudModel, IsotonicCalibrator, ModelMetadata, decide

FEAST_TYPES = {
    "int64[]": Array(Int64),
    "float64[]": Array(Float64),
    "string[]": Array(String),
    "int64": Int64,
    "float64": Float64,
}


@pytest.fixture(scope="module")
def definitions():  # type: ignore[no-untyped-def]
    from feature_repo import definitions

    return definitions


def transactions(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    start = pd.Timestamp("2026-05-01", tz="UTC")
    return pd.DataFrame(
        {
            c.TRANSACTION_ID: [f"t{i}" for i in range(n)],
            c.TIMESTAMP: start + pd.to_timedelta(np.sort(rng.integers(0, 5 * 86_400, n)), "s"),
            c.CUSTOMER_ID: rng.choice(["c1", "c2", "c3"], n),
            c.TERMINAL_ID: rng.choice(["t1", "t2"], n),
            c.AMOUNT: rng.uniform(1, 100, n).round(2),
            c.IS_FRAUD: rng.integers(0, 2, n),
            c.LABEL_TIMESTAMP: start + pd.Timedelta(days=9),
        }
    )


def test_the_feast_views_declare_what_the_code_computes(definitions) -> None:  # type: ignore[no-untyped-def]
    views = {v.name: v for v in (definitions.customer_activity, definitions.terminal_daily)}
    assert [x.name for x in views["customer_activity"].features] == list(
        f.CUSTOMER_ACTIVITY_FEATURES
    )
    assert [x.name for x in views["terminal_daily"].features] == list(f.TERMINAL_FEATURES)
    request = definitions.transaction_features
    assert [x.name for x in request.features] == list(f.REQUEST_FEATURES)
    state = definitions.customer_state.features
    assert [(x.name, x.dtype) for x in state] == [(n, FEAST_TYPES[k]) for n, k, _ in STATE]
    keys = [definitions.customer.join_key, definitions.terminal.join_key]
    assert tuple(keys) == c.ENTITY_KEYS


def test_the_feature_service_is_the_model_input_list(definitions) -> None:  # type: ignore[no-untyped-def]
    """The service lists the request, customer and terminal features, in that order, and a
    model trained on it records the very same list (the scorer refuses any other)."""
    names = service_feature_names(definitions.fraud_model_v1)
    expected = [*f.REQUEST_FEATURES, *f.CUSTOMER_ACTIVITY_FEATURES, *f.TERMINAL_FEATURES]
    assert names == expected
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, len(names))), rng.integers(0, 2, 200)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 4},
        lgb.Dataset(pd.DataFrame(x, columns=names), y),
        num_boost_round=3,
    )
    model = FraudModel(
        booster,
        IsotonicCalibrator([0.0, 1.0], [0.0, 1.0]),
        ModelMetadata(definitions.fraud_model_v1.name, names, 0.3, 0.7),
    )
    assert model.feature_names == booster.feature_name() == names


def test_the_offline_build_writes_the_views_and_the_state(tmp_path: Path) -> None:
    tx = transactions()
    activity, state = build_customer_tables(tx)
    assert set(f.CUSTOMER_ACTIVITY_FEATURES) <= set(activity.columns)
    assert list(state.columns) == [c.CUSTOMER_ID, EVENT_TIMESTAMP, *STATE_FIELDS]
    terminal = build_terminal_daily(tx, label_delay_days=7)
    assert set(f.TERMINAL_FEATURES) <= set(terminal.columns)


def test_a_store_seeded_from_the_offline_state_continues_it(tmp_path: Path) -> None:
    """The state codec: the offline table's rows seed a store, and the store hands back the
    same history and statistics, field for field."""
    tx = transactions()
    _, state = build_customer_tables(tx)
    row = state[state[c.CUSTOMER_ID] == "c1"].iloc[0]
    store = SqliteStateStore(tmp_path / "state.db", ttl_seconds=3600)
    assert store.seed([{c.CUSTOMER_ID: "c1", **{k: row[k] for k in STATE_FIELDS}}]) == 1
    later = int(pd.Timestamp("2026-05-06T12:00", tz="UTC").value // 1000)
    (before,), _ = store.commit([Commit("new", "c1", "t1", 10.0, later)])
    assert isinstance(before, Before)
    stats = dict(zip(STATS, before.stats, strict=True))
    assert stats == pytest.approx({k: row[k] for k in STATS})
    assert list(before.time_us) == list(row["history_time_us"])
    assert list(before.amount) == pytest.approx(list(row["history_amount"]))


def test_one_decision_rule() -> None:
    """The scorer, batch scoring and monitoring decide with the same function and the same
    thresholds: the model's own unless settings set them."""
    metadata = ModelMetadata("fraud_model_v1", ["a"], review_threshold=0.3, block_threshold=0.7)
    p = np.array([0.1, 0.3, 0.69, 0.7])
    assert list(decide(p, *metadata.thresholds())) == ["approve", "review", "review", "block"]
    assert list(decide(p, *metadata.thresholds(block=0.5))) == [
        "approve",
        "review",
        "block",
        "block",
    ]
    assert list(decide(p[:1], *metadata.thresholds(review=0.05))) == ["review"]
