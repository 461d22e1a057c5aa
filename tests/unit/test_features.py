"""Feature maths: windows look back (ties in commit order), and the real-time path
(transactions committed one at a time to a state store) gives the offline build's values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudops.core import contract as c
from fraudops.features import maths as f
from fraudops.features.build import build_customer_tables, build_terminal_daily
from fraudops.features.realtime import Before, SqliteStateStore
from fraudops.serving.online import activity_from, commits_of

T0 = int(pd.Timestamp("2026-01-05", tz="UTC").value // 1000)
MIN = 60 * f.MICROS


def activity(rows, at_min: float, amount: float = 10.0, terminal: str = "t1"):
    """Features of a transaction at ``at_min`` after ``rows`` (minute, amount, terminal),
    all committed before it."""
    t = np.array([T0 + int(m * MIN) for m, _, _ in rows] + [T0 + int(at_min * MIN)])
    a = np.array([x for _, x, _ in rows] + [amount])
    term = np.array([x for _, _, x in rows] + [terminal], dtype=object)
    before, _ = f.advance_running(f.RunningStats.empty(), a, t)
    n = len(t)
    return f.customer_activity(
        t, a, term, np.zeros(n), np.array([n - 1]), before.take(np.array([n - 1]))
    )


def test_windows_look_back_over_earlier_commits() -> None:
    rows = [(0, 10.0, "t1"), (3, 30.0, "t2"), (50, 20.0, "t2")]
    out = activity(rows, at_min=60)
    assert out["customer_tx_count_5min"][0] == 0
    assert out["customer_tx_count_1h"][0] == 3  # minutes 0, 3 and 50 are in [0, 60]
    assert out["customer_amount_sum_1h"][0] == 60.0
    assert out["customer_terminal_count_1h"][0] == 2
    assert out["customer_tx_count_1d"][0] == 3
    assert out["customer_amount_avg_1d"][0] == pytest.approx(20.0)
    assert out["customer_amount_std_1d"][0] == pytest.approx(np.std([10, 30, 20]))
    assert out["customer_seconds_since_last_tx"][0] == 600
    assert out["customer_terminal_is_new"][0] == 0.0
    assert activity(rows, at_min=61, terminal="t9")["customer_terminal_is_new"][0] == 1.0


def test_equal_timestamps_count_each_other_in_commit_order() -> None:
    """A burst of transactions in one second (card testing): each sees those committed
    before it, never itself or a later one."""
    n = 30
    t = np.full(n, T0, dtype=np.int64)
    a = np.arange(1.0, n + 1)
    term = np.array([f"t{i}" for i in range(n)], dtype=object)
    before, _ = f.advance_running(f.RunningStats.empty(), a, t)
    out = f.customer_activity(t, a, term, np.zeros(n), np.arange(n), before)
    assert out["customer_tx_count_1h"].tolist() == list(range(n))
    assert out["customer_amount_sum_5min"].tolist() == [k * (k + 1) / 2 for k in range(n)]
    assert out["customer_terminal_count_5min"].tolist() == list(range(n))
    assert out["customer_seconds_since_last_tx"][1:].tolist() == [0.0] * (n - 1)


def test_zscore_and_usual_hour_use_running_stats() -> None:
    rows = [(i * 24 * 60, 50.0 + (i % 3), "t1") for i in range(10)]  # daily at 00:00
    high = activity(rows, at_min=10 * 24 * 60 + 12 * 60, amount=500.0)
    assert high["customer_amount_zscore"][0] > 50
    assert high["customer_hour_deviation"][0] == pytest.approx(12.0)
    usual = activity(rows, at_min=11 * 24 * 60, amount=51.0)
    assert abs(usual["customer_amount_zscore"][0]) < 1
    assert usual["customer_hour_deviation"][0] == pytest.approx(0.0, abs=1e-9)


def test_unknown_customer_defaults() -> None:
    out = f.customer_defaults(1)
    assert out["customer_tx_count_30d"][0] == 0
    assert out["customer_terminal_is_new"][0] == 1
    assert out["customer_seconds_since_last_tx"][0] == f.SINCE_LAST_CAP_S


def test_welford_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.gamma(2, 40, 500)
    t = np.sort(rng.integers(T0, T0 + 30 * f.DAY_US, 500))
    _, whole = f.advance_running(f.RunningStats.empty(), x, t)
    state = f.RunningStats.empty()
    for chunk in np.array_split(np.arange(500), 7):  # as the scorer does, batch by batch
        _, state = f.advance_running(state, x[chunk], t[chunk])
    for stats in (whole, state):
        assert stats.count[0] == 500
        assert stats.amount_mean[0] == pytest.approx(x.mean(), rel=1e-12)
        assert stats.amount_m2[0] / 500 == pytest.approx(x.var(), rel=1e-9)


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    from fraudops.data.simulator import simulate

    return simulate(customers=60, terminals=200, days=40, seed=7)


def commit_one_by_one(store, tx: pd.DataFrame) -> pd.DataFrame:
    """Customer activity of ``tx`` (in its order) as the scorer computes it: each
    transaction committed to the store, its features from what came before it."""
    rows = []
    for k in range(len(tx)):
        commits = commits_of(tx.iloc[k : k + 1])
        (before,), _ = store.commit(commits)
        assert isinstance(before, Before)
        feats = activity_from([before], commits)
        rows.append(
            {
                c.TRANSACTION_ID: commits[0].transaction_id,
                **{name: v[0] for name, v in feats.items()},
            }
        )
    return pd.DataFrame(rows).set_index(c.TRANSACTION_ID)


def test_realtime_path_equals_offline_build(transactions: pd.DataFrame, tmp_path: Path) -> None:
    offline, _ = build_customer_tables(transactions)
    offline = offline.set_index(c.TRANSACTION_ID)
    store = SqliteStateStore(tmp_path / "state.db", ttl_seconds=3600)
    online = commit_one_by_one(store, transactions.sort_values([c.TIMESTAMP, c.TRANSACTION_ID]))
    online = online.loc[offline.index]  # (fixture: 60 customers, 40 days)
    for name in f.CUSTOMER_ACTIVITY_FEATURES:
        np.testing.assert_allclose(online[name], offline[name], rtol=1e-9, atol=1e-9, err_msg=name)
    assert online["customer_tx_count_1d"].nunique() > 3  # not vacuous


def test_ties_offline_follow_the_recorded_commit_order(tmp_path: Path) -> None:
    """Equal timestamps, committed in an order that is not the ids' order: offline, the
    recorded commit_seq orders them as the state store did."""
    n = 12
    stamp = pd.Timestamp("2026-01-05T10:00:00Z")
    tx = pd.DataFrame(
        {
            c.TRANSACTION_ID: [f"tx{(7 * i) % n:02d}" for i in range(n)],
            c.TIMESTAMP: [stamp] * n,
            c.CUSTOMER_ID: ["c1"] * n,
            c.TERMINAL_ID: [f"t{i % 3}" for i in range(n)],
            c.AMOUNT: np.linspace(1, 50, n),
        }
    )
    store = SqliteStateStore(tmp_path / "state.db", ttl_seconds=3600)
    online = commit_one_by_one(store, tx)
    assert sorted(online["customer_tx_count_1h"]) == list(range(n))
    offline, _ = build_customer_tables(tx.assign(**{c.COMMIT_SEQ: np.arange(n)}))
    offline = offline.set_index(c.TRANSACTION_ID).loc[online.index]
    for name in f.CUSTOMER_ACTIVITY_FEATURES:
        np.testing.assert_allclose(online[name], offline[name], rtol=1e-9, atol=1e-9, err_msg=name)
    # without the recorded order the ids decide, and the two disagree
    by_id, _ = build_customer_tables(tx)
    by_id = by_id.set_index(c.TRANSACTION_ID).loc[online.index]
    assert not np.array_equal(by_id["customer_tx_count_1h"], online["customer_tx_count_1h"])


def test_terminal_risk_uses_only_known_labels() -> None:
    day = pd.Timestamp("2026-01-01", tz="UTC")
    tx = pd.DataFrame(
        {
            c.TRANSACTION_ID: ["a", "b", "c"],
            c.TIMESTAMP: [day + pd.Timedelta(hours=10)] * 3,
            c.CUSTOMER_ID: ["c1", "c2", "c3"],
            c.TERMINAL_ID: ["t1", "t1", "t2"],
            c.AMOUNT: [10.0, 20.0, 30.0],
            c.IS_FRAUD: [1, 0, 1],
            # a's chargeback arrives after 2 days; b's after 7; c's only after 20
            c.LABEL_TIMESTAMP: [
                day + pd.Timedelta(days=2, hours=10),
                day + pd.Timedelta(days=7, hours=10),
                day + pd.Timedelta(days=20),
            ],
        }
    )
    daily = build_terminal_daily(tx, label_delay_days=7, through=day + pd.Timedelta(days=12))
    t1 = daily[daily[c.TERMINAL_ID] == "t1"].set_index("event_timestamp")
    t2 = daily[daily[c.TERMINAL_ID] == "t2"].set_index("event_timestamp")
    at = lambda n: day + pd.Timedelta(days=n)  # noqa: E731
    assert t1.loc[at(1), "terminal_tx_count_1d"] == 2
    assert t1.loc[at(1), "terminal_risk_7d"] == 0  # no label known yet
    assert t1.loc[at(3), "terminal_risk_7d"] == 1.0  # a known (fraud), b not yet
    assert t1.loc[at(8), "terminal_risk_7d"] == 0.5  # both known
    assert t1.loc[at(8), "terminal_tx_count_7d"] == 0  # volume window has moved on
    assert t2.loc[at(12), "terminal_risk_28d"] == 0  # c's label is still in the future


def test_a_batch_of_many_customers_equals_one_by_one(
    transactions: pd.DataFrame, tmp_path: Path
) -> None:
    """Committed 40 at a time (coalesced requests, /score_batch, the stream), across
    customers, with late events: the features of committing them one by one."""
    rng = np.random.default_rng(3)
    order = transactions.sort_values([c.TIMESTAMP, c.TRANSACTION_ID]).reset_index(drop=True)
    late = rng.choice(len(order), 60, replace=False)  # some arrive a few places late
    shuffled = order.index.to_numpy().copy()
    for i in late:
        j = min(i + int(rng.integers(1, 6)), len(order) - 1)
        shuffled[[i, j]] = shuffled[[j, i]]
    arriving = order.loc[shuffled].iloc[:1500]
    one = commit_one_by_one(SqliteStateStore(tmp_path / "one.db", 3600), arriving)
    store = SqliteStateStore(tmp_path / "batch.db", 3600)
    pieces = []
    for start in range(0, len(arriving), 40):
        chunk = arriving.iloc[start : start + 40]
        commits = commits_of(chunk)
        befores, _ = store.commit(commits)
        feats = activity_from(befores, commits)
        pieces.append(pd.DataFrame(feats, index=chunk[c.TRANSACTION_ID]))
    batched = pd.concat(pieces).loc[one.index]
    for name in f.CUSTOMER_ACTIVITY_FEATURES:
        np.testing.assert_allclose(batched[name], one[name], rtol=1e-12, atol=1e-12, err_msg=name)
