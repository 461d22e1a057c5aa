"""Feature maths: windows look strictly back, and the real-time path (state advanced one
transaction at a time) gives the offline build's values."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from fraudops import contract as c
from fraudops import features as f
from fraudops.feature_build import build_customer_tables, build_terminal_daily
from fraudops.realtime import CustomerState, score_and_advance

T0 = int(pd.Timestamp("2026-01-05", tz="UTC").value // 1000)
MIN = 60 * f.MICROS


def history(*rows: tuple[float, float, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.array([T0 + int(m * MIN) for m, _, _ in rows], dtype=np.int64)
    return t, np.array([a for _, a, _ in rows]), np.array([x for _, _, x in rows], dtype=object)


def activity(rows, at_min: float, amount: float = 10.0, terminal: str = "t1"):
    t, a, term = history(*rows)
    prior, _ = f.advance_running(f.RunningStats.empty(), a, t)
    stats = f.RunningStats(*(np.append(v, 0)[-1:] for v in prior.__dict__.values()))
    _, after = f.advance_running(f.RunningStats.empty(), a, t)
    return f.customer_activity(
        t, a, term, np.array([T0 + int(at_min * MIN)]), np.array([amount]),
        np.array([terminal], dtype=object), after if len(a) else stats,
    )  # fmt: skip


def test_windows_look_strictly_back() -> None:
    rows = [(0, 10.0, "t1"), (3, 30.0, "t2"), (50, 20.0, "t2"), (60, 99.0, "t3")]
    out = activity(rows, at_min=60)  # the transaction at minute 60 is not "earlier"
    assert out["customer_tx_count_5min"][0] == 0
    assert out["customer_tx_count_1h"][0] == 3  # minutes 0, 3 and 50 are in [0, 60)
    assert out["customer_amount_sum_1h"][0] == 60.0
    assert out["customer_terminal_count_1h"][0] == 2
    assert out["customer_tx_count_1d"][0] == 3
    assert out["customer_amount_avg_1d"][0] == pytest.approx(20.0)
    assert out["customer_amount_std_1d"][0] == pytest.approx(np.std([10, 30, 20]))
    assert out["customer_seconds_since_last_tx"][0] == 600
    assert out["customer_terminal_is_new"][0] == 0.0
    assert activity(rows, at_min=61, terminal="t9")["customer_terminal_is_new"][0] == 1.0


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
    from fraudops.simulator import simulate

    return simulate(customers=60, terminals=200, days=40, seed=7)


def test_realtime_path_equals_offline_build(transactions: pd.DataFrame) -> None:
    offline, state_table = build_customer_tables(transactions)
    offline = offline.set_index(c.TRANSACTION_ID)
    states: dict[str, CustomerState] = {}
    rows = []
    ordered = transactions.sort_values([c.TIMESTAMP, c.TRANSACTION_ID])
    time_us = f.to_micros(ordered[c.TIMESTAMP])
    for i, tx in enumerate(ordered.itertuples(index=False)):
        state = states.get(tx.customer_id, CustomerState.empty())
        feats, states[tx.customer_id] = score_and_advance(
            state,
            time_us[i : i + 1],
            np.array([tx.amount]),
            np.array([tx.terminal_id], dtype=object),
        )
        rows.append({"transaction_id": tx.transaction_id, **{k: v[0] for k, v in feats.items()}})
    online = pd.DataFrame(rows).set_index(c.TRANSACTION_ID).loc[offline.index]
    for name in f.CUSTOMER_ACTIVITY_FEATURES:
        np.testing.assert_allclose(online[name], offline[name], rtol=1e-6, atol=1e-6, err_msg=name)
    # the state the batch build leaves is the state the real-time path reaches
    final = state_table.set_index(c.CUSTOMER_ID)
    for customer, state in states.items():
        row = final.loc[customer]
        assert state.to_row()["history_time_us"] == list(row["history_time_us"])
        assert state.stats.amount_mean[0] == pytest.approx(row["amount_mean"], rel=1e-9)


def test_batch_of_transactions_sees_its_own_earlier_rows(transactions: pd.DataFrame) -> None:
    offline, _ = build_customer_tables(transactions)
    customer = transactions[c.CUSTOMER_ID].value_counts().index[0]
    mine = transactions[transactions[c.CUSTOMER_ID] == customer].sort_values(c.TIMESTAMP)
    feats, _ = score_and_advance(
        CustomerState.empty(), f.to_micros(mine[c.TIMESTAMP]), mine[c.AMOUNT].to_numpy(),
        mine[c.TERMINAL_ID].to_numpy(dtype=object),
    )  # fmt: skip
    expected = offline.set_index(c.TRANSACTION_ID).loc[mine[c.TRANSACTION_ID]]
    for name in f.CUSTOMER_ACTIVITY_FEATURES:
        np.testing.assert_allclose(feats[name], expected[name], rtol=1e-9, atol=1e-9, err_msg=name)


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
            c.LABEL_TIMESTAMP: [day + pd.Timedelta(days=2, hours=10),
                                day + pd.Timedelta(days=7, hours=10),
                                day + pd.Timedelta(days=20)],
        }
    )  # fmt: skip
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


def test_batches_of_many_customers_equal_the_offline_build(
    transactions: pd.DataFrame, compiled_path: str
) -> None:
    """The multi-customer path (stream micro-batches, /score_batch)."""
    from fraudops.realtime import score_and_advance_batch

    offline, _ = build_customer_tables(transactions)
    offline = offline.set_index(c.TRANSACTION_ID)
    ordered = transactions.sort_values([c.TIMESTAMP, c.TRANSACTION_ID]).reset_index(drop=True)
    time_us = f.to_micros(ordered[c.TIMESTAMP])
    states: dict[str, CustomerState] = {}
    pieces = []
    for start in range(0, len(ordered), 37):  # batches mixing customers, some repeated
        chunk = slice(start, start + 37)
        feats, new = score_and_advance_batch(
            states,
            ordered[c.CUSTOMER_ID].to_numpy(dtype=object)[chunk],
            time_us[chunk],
            ordered[c.AMOUNT].to_numpy()[chunk],
            ordered[c.TERMINAL_ID].to_numpy(dtype=object)[chunk],
        )
        states.update(new)
        pieces.append(pd.DataFrame(feats, index=ordered[c.TRANSACTION_ID].iloc[chunk]))
    online = pd.concat(pieces).loc[offline.index]
    for name in f.CUSTOMER_ACTIVITY_FEATURES:
        np.testing.assert_allclose(online[name], offline[name], rtol=1e-6, atol=1e-6, err_msg=name)


def test_single_transaction_path_equals_the_vectorised_one(transactions: pd.DataFrame) -> None:
    """The scorer's scalar path for one request (``score_and_advance_one``) against the
    array path, with arrival order jittered so that some events come late."""
    from fraudops.realtime import score_and_advance_one

    rng = np.random.default_rng(1)
    time_us = f.to_micros(transactions[c.TIMESTAMP])
    arrival = np.argsort(time_us + rng.integers(0, 3 * 3_600 * f.MICROS, len(time_us)))
    scalar: dict[str, CustomerState] = {}
    vector: dict[str, CustomerState] = {}
    late = 0
    for i in arrival:
        customer, terminal = transactions[c.CUSTOMER_ID].iat[i], transactions[c.TERMINAL_ID].iat[i]
        amount = float(transactions[c.AMOUNT].iat[i])
        before = vector.get(customer, CustomerState.empty())
        late += int(len(before.history_time_us) > 0 and time_us[i] < before.history_time_us[-1])
        expected, vector[customer] = score_and_advance(
            before, time_us[i : i + 1], np.array([amount]), np.array([terminal], dtype=object)
        )
        row, scalar[customer] = score_and_advance_one(
            scalar.get(customer, CustomerState.empty()), int(time_us[i]), amount, terminal
        )
        np.testing.assert_allclose(
            row, [expected[name][0] for name in f.CUSTOMER_ACTIVITY_FEATURES], rtol=1e-9, atol=1e-9
        )
    assert late > 100  # the jitter did produce late events
    for customer, state in vector.items():
        ours, theirs = scalar[customer].to_row(), state.to_row()
        assert ours["history_time_us"] == theirs["history_time_us"]
        assert ours["history_terminal_id"] == theirs["history_terminal_id"]
        for name in ("amount_mean", "amount_m2", "hour_sin_sum", "hour_cos_sum"):
            assert ours[name] == pytest.approx(theirs[name], rel=1e-12)


def test_batches_with_late_events_equal_one_customer_at_a_time(
    transactions: pd.DataFrame, compiled_path: str
) -> None:
    """Micro-batches whose events arrive out of time order (late events, several per
    customer) give the features and states of :func:`score_and_advance` on each
    customer's events of the batch (which see each other by event time, as offline);
    fixed-width ids (numpy bytes) and ``str`` ids alike."""
    from fraudops.realtime import StateBatch, advance_batch

    rng = np.random.default_rng(2)
    time_us = f.to_micros(transactions[c.TIMESTAMP])
    arrival = np.argsort(time_us + rng.integers(0, 6 * 3_600 * f.MICROS, len(time_us)))
    customers = transactions[c.CUSTOMER_ID].to_numpy(dtype=object)[arrival]
    terminals = transactions[c.TERMINAL_ID].to_numpy(dtype=object)[arrival]
    amounts = transactions[c.AMOUNT].to_numpy()[arrival]
    times = time_us[arrival]
    expected_states: dict[str, CustomerState] = {}
    batch_states: dict[str, CustomerState] = {}
    late = 0
    for start in range(0, len(arrival), 53):
        rows = np.arange(start, min(start + 53, len(arrival)))
        unique = list(dict.fromkeys(customers[rows]))
        batch = StateBatch.of(unique, batch_states)
        if start % 2:  # every other batch with ids as numpy bytes, as decoded from Redis
            batch = StateBatch(batch.customers, batch.bounds, batch.history_time_us,
                               batch.history_amount, batch.history_terminal_id.astype(bytes),
                               batch.stats, batch.last_time_us)  # fmt: skip
        feats, after = advance_batch(batch, np.array([unique.index(x) for x in customers[rows]]),
                                     times[rows], amounts[rows], terminals[rows])  # fmt: skip
        batch_states.update(after.as_dict())
        for customer in unique:  # the per-customer function, on its events of the batch
            mine = rows[customers[rows] == customer]
            before = expected_states.get(customer, CustomerState.empty())
            history = before.history_time_us
            late += int(len(history) > 0 and times[mine].min() < history[-1])
            one, expected_states[customer] = score_and_advance(
                before, times[mine], amounts[mine], terminals[mine]
            )
            for name in f.CUSTOMER_ACTIVITY_FEATURES:
                np.testing.assert_allclose(feats[name][mine - start], one[name], rtol=1e-9,
                                           atol=1e-9, err_msg=name)  # fmt: skip
    assert late > 100
    for customer, state in expected_states.items():
        ours, theirs = batch_states[customer].to_row(), state.to_row()
        assert ours["history_time_us"] == theirs["history_time_us"]
        assert ours["history_terminal_id"] == theirs["history_terminal_id"]
        for name in ("tx_count", "amount_mean", "amount_m2", "hour_sin_sum", "hour_cos_sum"):
            assert ours[name] == pytest.approx(theirs[name], rel=1e-9), name


def random_batch(
    rng: np.random.Generator, customers: int, history: int, queries: int, ids: str = "str"
):
    """A state batch of random histories (some empty, one at MAX_HISTORY) and queries of
    those customers, some late, some at equal times, terminals from a small set. ``ids``:
    the history's terminal ids as ``str`` objects, or as fixed-width bytes as the state
    decoder returns them, of 4 bytes (``S4``) or of 13 (``S13``: two words that differ
    only in the second)."""
    prefix = "terminal-0" if ids == "S13" else "t"
    from fraudops.realtime import StateBatch

    lengths = rng.integers(0, history, customers)
    lengths[0], lengths[-1] = 0, f.MAX_HISTORY
    times, amounts, terminals = [], [], []
    for n in lengths:
        start = T0 - int(rng.integers(0, 40 * 24 * 60)) * MIN
        days = 35 if n < f.MAX_HISTORY else 5  # the full one: dense, pruned by count
        times.append(np.sort(start + rng.integers(0, days * 24 * 60, n) * MIN))
        amounts.append(np.round(rng.gamma(2.0, 30.0, n), 2))
        terminals.append(rng.choice([f"{prefix}{k:03d}" for k in range(12)], n).astype(object))
    stats = f.RunningStats(*(rng.normal(0, 50, customers) for _ in range(5)))
    stats.count[:] = np.maximum(lengths, rng.integers(0, 3, customers)).astype(float)
    stats.amount_m2[:] = np.abs(stats.amount_m2) * stats.count
    batch = StateBatch(
        [f"c{g}" for g in range(customers)], np.concatenate([[0], np.cumsum(lengths)]),
        np.concatenate(times), np.concatenate(amounts), np.concatenate(terminals), stats,
        np.array([t[-1] if len(t) else 0 for t in times], dtype=np.int64),
    )  # fmt: skip
    group = rng.integers(0, customers, queries)
    newest = np.array([t[-1] if len(t) else T0 for t in times])[group]
    time_us = newest + rng.integers(-3 * 60, 20, queries) * MIN  # some before the newest
    time_us[1::7] = time_us[::7][: len(time_us[1::7])]  # equal times
    amount = np.round(rng.gamma(2.0, 30.0, queries), 2)
    terminal = rng.choice([f"{prefix}{k:03d}" for k in range(15)], queries).astype(object)
    if ids != "str":
        batch = dataclasses.replace(
            batch, history_terminal_id=batch.history_terminal_id.astype(str).astype(ids)
        )
    return batch, group, time_us, amount, terminal


@pytest.mark.parametrize(("seed", "ids"), [(0, "str"), (1, "S4"), (2, "S13")])
def test_compiled_kernel_equals_the_numpy_functions(
    seed: int, ids: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel (fraudops.kernels) against advance_batch's numpy path on random batches:
    the same features, the same kept histories and terminals, the same running stats; with
    terminal ids as strings and as the decoder's fixed-width bytes (compared by their words
    in the kernel, by their codes in numpy)."""
    from fraudops.realtime import advance_batch
    from fraudops.settings import get_settings

    batch, group, time_us, amount, terminal = random_batch(
        np.random.default_rng(seed), customers=40, history=300, queries=200, ids=ids
    )
    results = {}
    for compiled in ("true", "false"):
        monkeypatch.setenv("FRAUDOPS_COMPILED", compiled)
        get_settings.cache_clear()
        results[compiled] = advance_batch(batch, group, time_us, amount, terminal)
    get_settings.cache_clear()
    (kernel_feats, kernel_after), (numpy_feats, numpy_after) = results["true"], results["false"]
    for name in f.CUSTOMER_ACTIVITY_FEATURES:
        np.testing.assert_allclose(kernel_feats[name], numpy_feats[name], rtol=1e-12,
                                   atol=1e-9, err_msg=name)  # fmt: skip
    np.testing.assert_array_equal(kernel_after.bounds, numpy_after.bounds)
    np.testing.assert_array_equal(kernel_after.history_time_us, numpy_after.history_time_us)
    np.testing.assert_array_equal(kernel_after.history_amount, numpy_after.history_amount)
    np.testing.assert_array_equal(kernel_after.history_terminal_id, numpy_after.history_terminal_id)
    np.testing.assert_array_equal(kernel_after.last_time_us, numpy_after.last_time_us)
    for name, values in numpy_after.stats.__dict__.items():
        np.testing.assert_allclose(getattr(kernel_after.stats, name), values, rtol=1e-12,
                                   err_msg=name)  # fmt: skip
    assert kernel_after.bounds[-1] - kernel_after.bounds[-2] == f.MAX_HISTORY  # pruned to it
    assert 0 < kernel_feats["customer_terminal_is_new"].sum() < len(group)


def test_compiled_kernel_is_what_runs_when_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from fraudops import kernels, realtime
    from fraudops.settings import get_settings

    calls = []
    monkeypatch.setattr(kernels, "advance_groups", lambda *a: calls.append(a) or
                        kernels._advance_groups(*a))  # fmt: skip
    batch, group, time_us, amount, terminal = random_batch(np.random.default_rng(3), 5, 20, 9)
    for compiled in ("false", "true"):
        monkeypatch.setenv("FRAUDOPS_COMPILED", compiled)
        get_settings.cache_clear()
        realtime.advance_batch(batch, group, time_us, amount, terminal)
    get_settings.cache_clear()
    assert len(calls) == 1
