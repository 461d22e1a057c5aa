"""Unit tests of the transaction simulator: shape, contract, fraud scenarios, drift, output.

Run: ``python -m pytest tests/unit/test_simulator.py``. Small and medium simulations only
(the whole file runs in a few seconds); the Handbook-size run is ``bench/bench_simulator.py``.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from fraudops.core.contract import (
    AMOUNT,
    CUSTOMER_ID,
    DEFAULT_LABEL_DELAY,
    FRAUD_SCENARIO,
    IS_FRAUD,
    LABEL_TIMESTAMP,
    TERMINAL_ID,
    TIMESTAMP,
    TRANSACTION_ID,
    FraudScenario,
)
from fraudops.data.simulator import simulate, simulate_profiles, write_parquet

START = date(2026, 4, 1)
SMALL = dict(customers=200, terminals=400, days=20, seed=7)
MEDIUM = dict(customers=500, terminals=1000, days=60, seed=11)
# The share of N(12:00, 20000 s) times that fall inside the day.
TIME_KEPT = 0.969


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return simulate(**SMALL)


@pytest.fixture(scope="module")
def medium() -> pd.DataFrame:
    return simulate(**MEDIUM)


@pytest.fixture(scope="module")
def medium_profiles() -> tuple[pd.DataFrame, pd.DataFrame]:
    return simulate_profiles(MEDIUM["customers"], MEDIUM["terminals"], seed=MEDIUM["seed"])


def _rows_with_distance(
    df: pd.DataFrame, profiles: tuple[pd.DataFrame, pd.DataFrame]
) -> pd.DataFrame:
    customers, terminals = profiles
    out = df.merge(customers, on=CUSTOMER_ID).merge(
        terminals, on=TERMINAL_ID, suffixes=("_customer", "_terminal")
    )
    out["distance"] = np.hypot(
        out["x_customer"] - out["x_terminal"], out["y_customer"] - out["y_terminal"]
    )
    return out


# --- shape and contract -------------------------------------------------------------------


def test_columns_and_dtypes_follow_the_contract(small: pd.DataFrame) -> None:
    assert list(small.columns) == [
        TRANSACTION_ID,
        TIMESTAMP,
        CUSTOMER_ID,
        TERMINAL_ID,
        AMOUNT,
        IS_FRAUD,
        LABEL_TIMESTAMP,
        FRAUD_SCENARIO,
    ]
    assert str(small[TIMESTAMP].dtype) == "datetime64[ns, UTC]"
    assert str(small[LABEL_TIMESTAMP].dtype) == "datetime64[ns, UTC]"
    assert small[AMOUNT].dtype == np.float64
    assert small[IS_FRAUD].dtype == np.int8
    assert small[FRAUD_SCENARIO].dtype == np.int8
    assert isinstance(small.index, pd.RangeIndex)


def test_row_count_is_about_two_per_customer_per_day(small: pd.DataFrame) -> None:
    customers, _ = simulate_profiles(SMALL["customers"], SMALL["terminals"], seed=SMALL["seed"])
    expected = customers["mean_daily_tx"].sum() * SMALL["days"] * TIME_KEPT
    assert len(small) == pytest.approx(expected, rel=0.05)
    rough = SMALL["customers"] * SMALL["days"] * 2
    assert len(small) == pytest.approx(rough, rel=0.15)


def test_ids_are_unique_padded_strings(small: pd.DataFrame) -> None:
    assert small[TRANSACTION_ID].is_unique
    for column, prefix in ((TRANSACTION_ID, "tx_"), (CUSTOMER_ID, "c_"), (TERMINAL_ID, "t_")):
        values = small[column]
        assert values.map(type).eq(str).all(), column
        assert values.str.startswith(prefix).all(), column
        assert values.str.len().nunique() == 1, f"{column} ids are not zero-padded"
    assert small[TRANSACTION_ID].iloc[0] == "tx_000000000"


def test_rows_sorted_by_timestamp_then_transaction_id(small: pd.DataFrame) -> None:
    resorted = small.sort_values([TIMESTAMP, TRANSACTION_ID], kind="stable")
    assert resorted.index.equals(small.index)
    assert small[TIMESTAMP].min() >= pd.Timestamp(START, tz="UTC")
    assert small[TIMESTAMP].max() < pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=SMALL["days"])


def test_amounts_are_positive_cents(small: pd.DataFrame) -> None:
    amount = small[AMOUNT]
    assert (amount >= 0.01).all()
    assert np.allclose(amount * 100, np.round(amount * 100), atol=1e-6)


def test_label_timestamp_is_timestamp_plus_delay(small: pd.DataFrame) -> None:
    assert (small[LABEL_TIMESTAMP] - small[TIMESTAMP]).eq(DEFAULT_LABEL_DELAY).all()
    delayed = simulate(customers=20, terminals=50, days=3, label_delay=timedelta(days=2, hours=3))
    assert (delayed[LABEL_TIMESTAMP] - delayed[TIMESTAMP]).eq(timedelta(days=2, hours=3)).all()


def test_is_fraud_matches_scenario(medium: pd.DataFrame) -> None:
    assert set(medium[FRAUD_SCENARIO].unique()) <= {int(s) for s in FraudScenario}
    assert (medium[IS_FRAUD] == (medium[FRAUD_SCENARIO] != 0).astype(np.int8)).all()
    assert set(medium[IS_FRAUD].unique()) == {0, 1}


def test_bad_arguments_name_the_argument() -> None:
    with pytest.raises(ValueError, match="customers"):
        simulate(customers=0)
    with pytest.raises(ValueError, match="drift_strength"):
        simulate(customers=5, terminals=5, days=1, drift_strength=-1.0)


def test_progress_reports_days_done() -> None:
    seen: list[int] = []
    simulate(customers=10, terminals=20, days=5, progress=seen.append)
    assert seen == [1, 2, 3, 4, 5]


# --- fraud scenarios ------------------------------------------------------------------


def test_every_scenario_present_at_plausible_rates(medium: pd.DataFrame) -> None:
    share = medium[FRAUD_SCENARIO].value_counts(normalize=True)
    assert set(share.index) == {int(s) for s in FraudScenario}
    # Card testing and account takeover are rare by design.
    assert 0.0003 < share[FraudScenario.CARD_TESTING] + share[FraudScenario.ACCOUNT_TAKEOVER] < 0.01
    # With 1,000 terminals, 2 compromised a day for 28 days dominate (as in the Handbook).
    assert share[FraudScenario.COMPROMISED_TERMINAL] > share[FraudScenario.HIGH_AMOUNT]


def test_high_amount_rule(medium: pd.DataFrame) -> None:
    scenario = medium[FRAUD_SCENARIO]
    assert (medium.loc[scenario == FraudScenario.HIGH_AMOUNT, AMOUNT] > 220).all()
    # Nothing above the threshold is legitimate.
    assert (medium.loc[scenario == FraudScenario.LEGITIMATE, AMOUNT] <= 220).all()


def test_compromised_terminal_stays_fraudulent_for_its_window() -> None:
    days = 30
    df = simulate(customers=300, terminals=600, days=days, seed=3, compromised_terminal_days=days)
    s2 = df[df[FRAUD_SCENARIO] == FraudScenario.COMPROMISED_TERMINAL]
    assert s2[TERMINAL_ID].nunique() <= 2 * days
    first = s2.groupby(TERMINAL_ID)[TIMESTAMP].min()
    later = df[df[TERMINAL_ID].isin(first.index)]
    later = later[later[TIMESTAMP] >= later[TERMINAL_ID].map(first)]
    # The window covers the rest of the run, so every later transaction there is fraud.
    assert (later[IS_FRAUD] == 1).all()


def test_compromised_customer_amounts_are_multiplied(medium: pd.DataFrame) -> None:
    legit_median = (
        medium[medium[FRAUD_SCENARIO] == FraudScenario.LEGITIMATE]
        .groupby(CUSTOMER_ID)[AMOUNT]
        .median()
    )
    s3 = medium[medium[FRAUD_SCENARIO] == FraudScenario.COMPROMISED_CUSTOMER]
    ratio = s3[AMOUNT] / s3[CUSTOMER_ID].map(legit_median)
    assert len(s3) > 50
    assert 3.5 < ratio.median() < 7.0


def test_card_testing_bursts_on_unused_terminals(
    medium: pd.DataFrame, medium_profiles: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    s4 = medium[medium[FRAUD_SCENARIO] == FraudScenario.CARD_TESTING]
    assert len(s4) > 0
    usual = medium[medium[FRAUD_SCENARIO] <= FraudScenario.COMPROMISED_CUSTOMER]
    usual_pairs = set(zip(usual[CUSTOMER_ID], usual[TERMINAL_ID], strict=True))
    assert not usual_pairs & set(zip(s4[CUSTOMER_ID], s4[TERMINAL_ID], strict=True))
    # Outside the customer's 5-unit radius of available terminals.
    assert (_rows_with_distance(s4, medium_profiles)["distance"] > 5.0).all()

    for _, burst in s4.groupby([CUSTOMER_ID, s4[TIMESTAMP].dt.date]):
        amounts = burst[AMOUNT].to_numpy()
        assert 4 <= len(amounts) <= 9
        assert (amounts[:-1] <= 3.0).all() and amounts[-1] >= 200.0
        assert burst[TIMESTAMP].max() - burst[TIMESTAMP].min() < pd.Timedelta(minutes=30)


def test_account_takeover_far_at_night_and_large(
    medium: pd.DataFrame, medium_profiles: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    s5 = _rows_with_distance(
        medium[medium[FRAUD_SCENARIO] == FraudScenario.ACCOUNT_TAKEOVER], medium_profiles
    )
    assert len(s5) > 0
    assert (s5[TIMESTAMP].dt.hour < 5).all()
    assert (s5["distance"] > 30.0).all()
    assert (s5[AMOUNT] >= 3.0 * s5["mean_amount"] - 0.01).all()


def test_optional_scenarios_can_be_switched_off() -> None:
    df = simulate(
        customers=100, terminals=200, days=10, card_testing_rate=0.0, account_takeover_rate=0.0
    )
    assert not df[FRAUD_SCENARIO].isin([4, 5]).any()


# --- determinism and drift -------------------------------------------------------------


def test_same_seed_same_frame_other_seed_differs(small: pd.DataFrame) -> None:
    again = simulate(**SMALL)
    pd.testing.assert_frame_equal(small, again, check_exact=True)
    assert pd.util.hash_pandas_object(small).equals(pd.util.hash_pandas_object(again))
    other = simulate(**{**SMALL, "seed": SMALL["seed"] + 1})
    assert not other[[CUSTOMER_ID, AMOUNT]].equals(small[[CUSTOMER_ID, AMOUNT]])


def test_shorter_run_is_a_prefix_of_a_longer_one(small: pd.DataFrame) -> None:
    short = simulate(**{**SMALL, "days": 10})
    cut = pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=10)
    pd.testing.assert_frame_equal(short, small[small[TIMESTAMP] < cut], check_exact=True)


def test_drift_changes_behaviour_only_after_its_date(medium: pd.DataFrame) -> None:
    from scipy import stats  # a dependency of scikit-learn: never skipped

    drift_date = date(2026, 5, 1)
    drifted = simulate(**MEDIUM, drift_date=drift_date)
    cut = pd.Timestamp(drift_date, tz="UTC")

    before, before_drifted = medium[medium[TIMESTAMP] < cut], drifted[drifted[TIMESTAMP] < cut]
    pd.testing.assert_frame_equal(before, before_drifted, check_exact=True)

    def legit_after(df: pd.DataFrame) -> pd.DataFrame:
        return df[(df[TIMESTAMP] >= cut) & (df[FRAUD_SCENARIO] == FraudScenario.LEGITIMATE)]

    plain, shifted = legit_after(medium), legit_after(drifted)
    assert shifted[AMOUNT].mean() / plain[AMOUNT].mean() > 1.3
    assert stats.ks_2samp(plain[AMOUNT], shifted[AMOUNT]).pvalue < 1e-6
    assert len(drifted[drifted[TIMESTAMP] >= cut]) > 1.1 * len(medium[medium[TIMESTAMP] >= cut])
    late = (shifted[TIMESTAMP].dt.hour >= 20).mean()
    assert late > 1.5 * (plain[TIMESTAMP].dt.hour >= 20).mean()

    # Customers who spend more stay legitimate: the high-amount threshold moves with the
    # amounts (x1.5 at strength 1), so the data drifts and the high-amount fraud does not.
    assert (shifted[AMOUNT] > 220).any()
    assert (shifted[AMOUNT] <= 220 * 1.5).all()
    after_cut = drifted[TIMESTAMP] >= cut
    high_amount = drifted[after_cut & (drifted[FRAUD_SCENARIO] == FraudScenario.HIGH_AMOUNT)]
    assert (high_amount[AMOUNT] > 220 * 1.5).all()
    after = drifted[after_cut]
    plain_after = medium[medium[TIMESTAMP] >= cut]
    assert after[IS_FRAUD].mean() == pytest.approx(plain_after[IS_FRAUD].mean(), rel=0.25)


# --- output ------------------------------------------------------------------------------


def test_write_parquet_round_trips_and_creates_dirs(small: pd.DataFrame, tmp_path) -> None:
    target = tmp_path / "nested" / "dir" / "transactions.parquet"
    assert write_parquet(small, target) == target
    pd.testing.assert_frame_equal(pd.read_parquet(target), small)
    assert [p.name for p in target.parent.iterdir()] == ["transactions.parquet"]


def test_write_parquet_failure_keeps_old_file(small: pd.DataFrame, tmp_path) -> None:
    target = tmp_path / "transactions.parquet"
    write_parquet(small, target)
    unwritable = pd.DataFrame({"mixed": [object(), 1]})
    with pytest.raises(Exception):  # noqa: B017 - whatever pyarrow raises, nothing is replaced
        write_parquet(unwritable, target)
    assert [p.name for p in tmp_path.iterdir()] == ["transactions.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(target), small)
