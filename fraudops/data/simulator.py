"""Synthetic card transactions with labelled fraud, for training, tests and demos.

A vectorised reimplementation, written from the published description, of the transaction
simulator of the Fraud Detection Handbook (Le Borgne et al., "Reproducible Machine Learning
for Credit Card Fraud Detection", chapter 3), plus two fraud patterns a real system sees
(card testing, account takeover) and an optional behaviour drift from a given date.

Run it::

    python -m fraudops.data.simulator --out data/raw/transactions.parquet
    python -m fraudops.data.simulator --customers 500 --terminals 1000 --days 60 \\
        --drift-date 2026-05-01 --out /tmp/small.parquet

or from Python: ``simulate(customers=5000, terminals=10000, days=183, seed=0)``.

The model, per the Handbook:

* Customers and terminals sit uniformly on a 100 x 100 grid. A customer uses the terminals
  within ``radius`` of it (its *available terminals*), or the nearest one if none is.
* Each customer has a mean amount U(5, 100), std = mean / 2 and a mean daily transaction
  count U(0, 4). Each day it makes Poisson(mean count) transactions at N(12:00, 20000 s)
  (times outside the day are dropped), for N(mean, std) (negative amounts are redrawn from
  U(0, 2 mean)), at a terminal drawn uniformly from its available terminals.

Fraud scenarios (``FraudScenario``), applied to the legitimate transactions in order 1, 2, 3:

1. HIGH_AMOUNT: every amount above 220 is fraud (after a drift, 220 times the drift's
   amount factor: see ``simulate``).
2. COMPROMISED_TERMINAL: each day 2 terminals are compromised; all their transactions on that
   day and the next 27 are fraud.
3. COMPROMISED_CUSTOMER: each day 3 customers are compromised; on that day and the next 13,
   each of their transactions is, with probability 1/3, fraud with its amount multiplied by 5.

A transaction keeps the *first* scenario that applied, and a later scenario only considers
transactions that are still legitimate (so a scenario-3 amount was multiplied by 5 exactly
when the row says scenario 3). The Handbook instead lets later scenarios overwrite the label
and picks exactly a third of a compromised customer's transactions; the fraud rate is the
same within noise. Scenarios 4 and 5 add their own rows, which are fraud by construction:

4. CARD_TESTING: a burst of tiny amounts on terminals the customer never uses, seconds apart,
   then one large amount a few minutes later.
5. ACCOUNT_TAKEOVER: a few high amounts (several times the customer's mean) at terminals far
   from the customer, between midnight and 05:00.

Randomness: every draw comes from ``numpy.random.default_rng`` seeded with a child of
``SeedSequence(seed)``: one stream for the profiles, one per day for the legitimate
transactions, one per day for the fraud events. So a day's transactions depend only on the
seed, the profiles and that day's parameters: a run with ``drift_date`` is identical to the
run without it up to that date, and a shorter run is a prefix of a longer one.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

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

logger = logging.getLogger(__name__)

OUTPUT_COLUMNS = (
    TRANSACTION_ID,
    TIMESTAMP,
    CUSTOMER_ID,
    TERMINAL_ID,
    AMOUNT,
    IS_FRAUD,
    LABEL_TIMESTAMP,
    FRAUD_SCENARIO,
)

GRID_SIZE = 100.0
SECONDS_PER_DAY = 86_400
NS_PER_SECOND = 1_000_000_000
TIME_OF_DAY_MEAN_S = SECONDS_PER_DAY / 2
TIME_OF_DAY_STD_S = 20_000.0

# Stream ids for SeedSequence spawn keys; fixed so results never depend on call order.
_PROFILE_STREAM = 0
_DAY_STREAM = 1
_FRAUD_STREAM = 2

# Bound on the pairwise-distance block when finding available terminals (~32 MB of float64).
_DISTANCE_BLOCK_CELLS = 4_000_000


# --- profiles ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Profiles:
    customer_xy: np.ndarray  # (customers, 2)
    mean_amount: np.ndarray
    std_amount: np.ndarray
    mean_daily_tx: np.ndarray
    terminal_xy: np.ndarray  # (terminals, 2)
    # Available terminals in CSR form: customer c uses avail_terminals[avail_start[c]:
    # avail_start[c + 1]], sorted ascending.
    avail_start: np.ndarray
    avail_terminals: np.ndarray
    avail_count: np.ndarray
    # Sorted keys for drawing terminals outside a customer's set (see _unused_terminals).
    complement_keys: np.ndarray


def _rng(seed: int, *spawn_key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=spawn_key))


def _available_terminals(
    customer_xy: np.ndarray, terminal_xy: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """CSR (start offsets, terminal indices) of the terminals within radius of each customer.

    Computed in blocks of customers: the full customers x terminals distance matrix of the
    Handbook size would need 400 MB.
    """
    n_customers, n_terminals = len(customer_xy), len(terminal_xy)
    block = max(1, _DISTANCE_BLOCK_CELLS // n_terminals)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for lo in range(0, n_customers, block):
        xy = customer_xy[lo : lo + block]
        d2 = (xy[:, 0, None] - terminal_xy[None, :, 0]) ** 2 + (
            xy[:, 1, None] - terminal_xy[None, :, 1]
        ) ** 2
        within = d2 <= radius * radius
        lonely = ~within.any(axis=1)
        # A customer with no terminal nearby still shops: at its nearest terminal.
        within[lonely, d2[lonely].argmin(axis=1)] = True
        r, c = np.nonzero(within)  # row-major, so sorted by customer then terminal
        rows.append(r + lo)
        cols.append(c)
    customer_of = np.concatenate(rows)
    avail_start = np.zeros(n_customers + 1, dtype=np.int64)
    np.cumsum(np.bincount(customer_of, minlength=n_customers), out=avail_start[1:])
    return avail_start, np.concatenate(cols).astype(np.int64)


def _make_profiles(customers: int, terminals: int, seed: int, radius: float) -> _Profiles:
    rng = _rng(seed, _PROFILE_STREAM)
    customer_xy = rng.uniform(0.0, GRID_SIZE, size=(customers, 2))
    mean_amount = rng.uniform(5.0, 100.0, size=customers)
    mean_daily_tx = rng.uniform(0.0, 4.0, size=customers)
    terminal_xy = rng.uniform(0.0, GRID_SIZE, size=(terminals, 2))
    avail_start, avail_terminals = _available_terminals(customer_xy, terminal_xy, radius)
    avail_count = np.diff(avail_start)
    owner = np.repeat(np.arange(customers), avail_count)
    rank = np.arange(len(avail_terminals)) - avail_start[owner]
    return _Profiles(
        customer_xy=customer_xy,
        mean_amount=mean_amount,
        std_amount=mean_amount / 2.0,
        mean_daily_tx=mean_daily_tx,
        terminal_xy=terminal_xy,
        avail_start=avail_start,
        avail_terminals=avail_terminals,
        avail_count=avail_count,
        complement_keys=owner * terminals + (avail_terminals - rank),
    )


def _entity_ids(prefix: str, n: int, min_width: int) -> np.ndarray:
    """Zero-padded string ids (``c_00042``) as an object array of Python str."""
    if n == 0:
        return np.empty(0, dtype=object)
    width = max(min_width, len(str(n - 1)))
    # np.char rather than np.strings: the project allows numpy 1.26.
    digits = np.char.zfill(np.arange(n).astype(np.str_), width)
    return np.char.add(prefix, digits).astype(object)


def customer_ids(n: int) -> np.ndarray:
    """The ids the simulator gives customers 0..n-1 (``c_00000``, ...)."""
    return _entity_ids("c_", n, 5)


def terminal_ids(n: int) -> np.ndarray:
    """The ids the simulator gives terminals 0..n-1 (``t_00000``, ...)."""
    return _entity_ids("t_", n, 5)


def simulate_profiles(
    customers: int = 5000, terminals: int = 10000, seed: int = 0, radius: float = 5.0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The customer and terminal profiles ``simulate`` uses for the same arguments.

    Returns ``(customer_profiles, terminal_profiles)``: customers with ``customer_id``, ``x``,
    ``y``, ``mean_amount``, ``std_amount``, ``mean_daily_tx`` and ``available_terminals``
    (count); terminals with ``terminal_id``, ``x``, ``y``.
    """
    _check_positive(customers=customers, terminals=terminals)
    p = _make_profiles(customers, terminals, seed, radius)
    customer_profiles = pd.DataFrame(
        {
            CUSTOMER_ID: customer_ids(customers),
            "x": p.customer_xy[:, 0],
            "y": p.customer_xy[:, 1],
            "mean_amount": p.mean_amount,
            "std_amount": p.std_amount,
            "mean_daily_tx": p.mean_daily_tx,
            "available_terminals": p.avail_count,
        }
    )
    terminal_profiles = pd.DataFrame(
        {TERMINAL_ID: terminal_ids(terminals), "x": p.terminal_xy[:, 0], "y": p.terminal_xy[:, 1]}
    )
    return customer_profiles, terminal_profiles


# --- transactions -----------------------------------------------------------------------


@dataclass
class _Rows:
    """Column arrays of generated transactions, before ids and timestamps are attached."""

    customer: np.ndarray  # int64 index
    terminal: np.ndarray  # int64 index
    day: np.ndarray  # int64 day index
    second: np.ndarray  # int64 second within the day
    amount: np.ndarray  # float64, rounded to cents
    scenario: np.ndarray  # int8
    lottery: np.ndarray  # float64 U(0,1) per row, decides scenario 3

    @staticmethod
    def concat(parts: Sequence[_Rows]) -> _Rows:
        return _Rows(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in _Rows.__dataclass_fields__)
        )


def _cents(amount: np.ndarray) -> np.ndarray:
    # Amounts are money: whole cents, and never zero or negative.
    return np.maximum(np.round(amount, 2), 0.01)


def _legitimate_day(
    p: _Profiles,
    rng: np.random.Generator,
    day: int,
    count_scale: float,
    amount_scale: float,
    time_shift_s: float,
) -> _Rows:
    counts = rng.poisson(p.mean_daily_tx * count_scale)
    customer = np.repeat(np.arange(len(counts)), counts)
    n = len(customer)
    # Every array is drawn for all n rows before filtering, so the draws consumed do not
    # depend on which rows survive.
    second = np.floor(rng.normal(TIME_OF_DAY_MEAN_S + time_shift_s, TIME_OF_DAY_STD_S, n))
    mean = p.mean_amount[customer]
    amount = rng.normal(mean, p.std_amount[customer])
    redraw = rng.uniform(0.0, 2.0 * mean)
    amount = np.where(amount < 0, redraw, amount)
    pick = rng.integers(0, p.avail_count[customer])
    lottery = rng.random(n)
    keep = (second >= 0) & (second < SECONDS_PER_DAY)
    customer = customer[keep]
    return _Rows(
        customer=customer,
        terminal=p.avail_terminals[p.avail_start[customer] + pick[keep]],
        day=np.full(len(customer), day, dtype=np.int64),
        second=second[keep].astype(np.int64),
        amount=_cents(amount[keep] * amount_scale),
        scenario=np.zeros(len(customer), dtype=np.int8),
        lottery=lottery[keep],
    )


def _unused_terminals(p: _Profiles, customer: np.ndarray, u: np.ndarray) -> np.ndarray:
    """For each row, a terminal drawn uniformly from those outside the customer's available set.

    The r-th terminal of the complement of a sorted set a_0 < a_1 < ... is r + j, where j
    counts the a_i with a_i - i <= r. Keys ``customer * terminals + a_i - i`` are sorted over
    all customers' sets, so one searchsorted answers every row.
    """
    n_terminals = len(p.terminal_xy)
    r = np.floor(u * (n_terminals - p.avail_count[customer])).astype(np.int64)
    j = (
        np.searchsorted(p.complement_keys, customer * n_terminals + r, side="right")
        - p.avail_start[customer]
    )
    return r + j


def _card_testing_day(
    p: _Profiles,
    rng: np.random.Generator,
    day: int,
    victims: np.ndarray,
    probes: tuple[int, int],
    probe_amount: tuple[float, float],
    cashout_amount: tuple[float, float],
) -> _Rows:
    k = len(victims)
    n_probes = rng.integers(probes[0], probes[1] + 1, size=k)
    size = n_probes + 1  # the probes, then the cash-out
    event = np.repeat(np.arange(k), size)
    first = np.cumsum(size) - size
    position = np.arange(len(event)) - first[event]
    is_cashout = position == n_probes[event]
    # Probes seconds apart, the cash-out 2-15 minutes after the last probe; the whole burst
    # (under 25 minutes) starts early enough to end the same day.
    gap = np.where(
        is_cashout, rng.integers(120, 901, size=len(event)), rng.integers(5, 61, size=len(event))
    )
    start = rng.integers(0, SECONDS_PER_DAY - 3600, size=k)
    elapsed = np.cumsum(gap) - np.repeat(np.cumsum(gap)[first] - gap[first], size)
    amount = np.where(
        is_cashout,
        rng.uniform(*cashout_amount, size=len(event)),
        rng.uniform(*probe_amount, size=len(event)),
    )
    customer = victims[event]
    terminal = _unused_terminals(p, customer, rng.random(len(event)))
    return _Rows(
        customer=customer,
        terminal=terminal,
        day=np.full(len(event), day, dtype=np.int64),
        second=start[event] + elapsed,
        amount=_cents(amount),
        scenario=np.full(len(event), FraudScenario.CARD_TESTING, dtype=np.int8),
        lottery=np.ones(len(event)),
    )


def _far_terminals(
    p: _Profiles, rng: np.random.Generator, customer: np.ndarray, min_distance: float
) -> np.ndarray:
    """A terminal at least ``min_distance`` from each row's customer, by rejection sampling.

    Most of the grid is that far from anyone, so few rounds are needed; rows still unserved
    after them (tiny grids) take the customer's farthest terminal.
    """
    n_terminals = len(p.terminal_xy)
    terminal = np.full(len(customer), -1, dtype=np.int64)
    todo = np.arange(len(customer))
    for _ in range(32):
        if len(todo) == 0:
            break
        candidate = rng.integers(0, n_terminals, size=len(todo))
        d = np.hypot(*(p.terminal_xy[candidate] - p.customer_xy[customer[todo]]).T)
        ok = d > min_distance
        terminal[todo[ok]] = candidate[ok]
        todo = todo[~ok]
    if len(todo):
        d = np.hypot(
            p.terminal_xy[None, :, 0] - p.customer_xy[customer[todo], 0, None],
            p.terminal_xy[None, :, 1] - p.customer_xy[customer[todo], 1, None],
        )
        terminal[todo] = d.argmax(axis=1)
    return terminal


def _account_takeover_day(
    p: _Profiles,
    rng: np.random.Generator,
    day: int,
    victims: np.ndarray,
    transactions: tuple[int, int],
    min_distance: float,
    night_hours: tuple[int, int],
    amount_multiplier: tuple[float, float],
) -> _Rows:
    size = rng.integers(transactions[0], transactions[1] + 1, size=len(victims))
    customer = np.repeat(victims, size)
    n = len(customer)
    second = rng.integers(night_hours[0] * 3600, night_hours[1] * 3600, size=n)
    amount = p.mean_amount[customer] * rng.uniform(*amount_multiplier, size=n)
    return _Rows(
        customer=customer,
        terminal=_far_terminals(p, rng, customer, min_distance),
        day=np.full(n, day, dtype=np.int64),
        second=second,
        amount=_cents(amount),
        scenario=np.full(n, FraudScenario.ACCOUNT_TAKEOVER, dtype=np.int8),
        lottery=np.ones(n),
    )


def _compromise_windows(events: Sequence[np.ndarray], n_entities: int, length: int) -> np.ndarray:
    """Boolean (entity, day) matrix: True while the entity is compromised.

    ``events[d]`` holds the entities compromised on day d; each stays compromised on days
    d .. d + length - 1.
    """
    days = len(events)
    window = np.zeros((n_entities, days), dtype=bool)
    for day, entities in enumerate(events):
        if len(entities) and length > 0:
            window[entities[:, None], np.arange(day, min(day + length, days))[None, :]] = True
    return window


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


def _pick(rng: np.random.Generator, population: np.ndarray, k: int) -> np.ndarray:
    return rng.choice(population, size=min(k, len(population)), replace=False)


def simulate(
    customers: int = 5000,
    terminals: int = 10000,
    days: int = 183,
    start_date: date = date(2026, 4, 1),
    seed: int = 0,
    drift_date: date | None = None,
    drift_strength: float = 1.0,
    *,
    label_delay: timedelta = DEFAULT_LABEL_DELAY,
    radius: float = 5.0,
    high_amount_threshold: float = 220.0,
    compromised_terminals_per_day: int = 2,
    compromised_terminal_days: int = 28,
    compromised_customers_per_day: int = 3,
    compromised_customer_days: int = 14,
    compromised_customer_fraud_share: float = 1 / 3,
    compromised_customer_amount_factor: float = 5.0,
    card_testing_rate: float = 2.5e-4,
    card_testing_probes: tuple[int, int] = (3, 8),
    card_testing_probe_amount: tuple[float, float] = (0.5, 3.0),
    card_testing_cashout_amount: tuple[float, float] = (200.0, 1000.0),
    account_takeover_rate: float = 2e-4,
    account_takeover_transactions: tuple[int, int] = (2, 5),
    account_takeover_min_distance: float = 30.0,
    account_takeover_hours: tuple[int, int] = (0, 5),
    account_takeover_amount_multiplier: tuple[float, float] = (3.0, 10.0),
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Simulate ``days`` days of transactions; one row per transaction, labelled.

    Columns, in order: transaction_id (str), timestamp (datetime64[ns, UTC]), customer_id
    (str), terminal_id (str), amount (float64, > 0, cents), is_fraud (int8), label_timestamp
    (timestamp + ``label_delay``), fraud_scenario (int8, a ``FraudScenario``). Rows are sorted
    by timestamp then transaction_id; ids are numbered in that order.

    ``drift_date``: from that day on, legitimate behaviour shifts by ``drift_strength`` (1.0:
    amounts x1.5, daily counts x1.25, time-of-day mean 3 h later, so more late-night
    activity). The scenario-1 threshold scales with the amounts (220 x 1.5), so customers
    who simply spend more stay legitimate: the fraud rate stays put while the data moves,
    and a model that learned "over 220 is fraud" starts raising false alarms, which is
    what a drift monitor is there to catch.

    ``card_testing_rate`` and ``account_takeover_rate`` are expected attacks per customer per
    day (defaults: about 0.09 % and 0.04 % of transactions). Ranges are inclusive for counts
    and hours are [start, end). ``progress(days_done)`` is called after each simulated day.
    """
    _check_positive(customers=customers, terminals=terminals, days=days)
    if drift_strength < 0:
        raise ValueError(f"drift_strength must be >= 0, got {drift_strength}")
    if label_delay < timedelta(0):
        raise ValueError(f"label_delay must not be negative, got {label_delay}")
    if not 0 <= compromised_customer_fraud_share <= 1:
        raise ValueError(
            "compromised_customer_fraud_share must be within [0, 1], "
            f"got {compromised_customer_fraud_share}"
        )
    started = time.perf_counter()
    p = _make_profiles(customers, terminals, seed, radius)
    drift_day = None if drift_date is None else (drift_date - start_date).days
    all_customers = np.arange(customers)
    # Card testing needs a terminal the customer never uses.
    can_be_card_tested = all_customers[p.avail_count < terminals]

    amount_scale = np.ones(days)
    legit: list[_Rows] = []
    injected: list[_Rows] = []
    compromised_terminals: list[np.ndarray] = []
    compromised_customers: list[np.ndarray] = []
    for day in range(days):
        drifted = drift_day is not None and day >= drift_day
        s = drift_strength if drifted else 0.0
        amount_scale[day] = 1.0 + 0.5 * s
        legit.append(
            _legitimate_day(
                p,
                _rng(seed, _DAY_STREAM, day),
                day,
                count_scale=1.0 + 0.25 * s,
                amount_scale=float(amount_scale[day]),
                time_shift_s=3 * 3600 * s,
            )
        )
        # Fraud events come from their own stream so drift never changes who is attacked.
        frng = _rng(seed, _FRAUD_STREAM, day)
        compromised_terminals.append(
            _pick(frng, np.arange(terminals), compromised_terminals_per_day)
        )
        compromised_customers.append(_pick(frng, all_customers, compromised_customers_per_day))
        card_victims = _pick(
            frng, can_be_card_tested, int(frng.poisson(card_testing_rate * customers))
        )
        takeover_victims = _pick(
            frng, all_customers, int(frng.poisson(account_takeover_rate * customers))
        )
        if len(card_victims):
            injected.append(
                _card_testing_day(
                    p,
                    frng,
                    day,
                    card_victims,
                    card_testing_probes,
                    card_testing_probe_amount,
                    card_testing_cashout_amount,
                )
            )
        if len(takeover_victims):
            injected.append(
                _account_takeover_day(
                    p,
                    frng,
                    day,
                    takeover_victims,
                    account_takeover_transactions,
                    account_takeover_min_distance,
                    account_takeover_hours,
                    account_takeover_amount_multiplier,
                )
            )
        if progress is not None:
            progress(day + 1)

    rows = _Rows.concat(legit)
    # Scenario 1, 2, 3 in order; each only touches rows no earlier scenario claimed.
    scenario = rows.scenario
    high = rows.amount > high_amount_threshold * amount_scale[rows.day]
    scenario[high] = FraudScenario.HIGH_AMOUNT
    terminal_window = _compromise_windows(
        compromised_terminals, terminals, compromised_terminal_days
    )
    hit = terminal_window[rows.terminal, rows.day] & (scenario == FraudScenario.LEGITIMATE)
    scenario[hit] = FraudScenario.COMPROMISED_TERMINAL
    customer_window = _compromise_windows(
        compromised_customers, customers, compromised_customer_days
    )
    hit = (
        customer_window[rows.customer, rows.day]
        & (scenario == FraudScenario.LEGITIMATE)
        & (rows.lottery < compromised_customer_fraud_share)
    )
    scenario[hit] = FraudScenario.COMPROMISED_CUSTOMER
    rows.amount[hit] = _cents(rows.amount[hit] * compromised_customer_amount_factor)

    rows = _Rows.concat([rows, *injected])
    df = _to_frame(rows, customers, terminals, start_date, label_delay)
    logger.info(
        "simulated %d transactions (%d customers, %d terminals, %d days), fraud rate %.4f, "
        "in %.1f s",
        len(df),
        customers,
        terminals,
        days,
        float(df[IS_FRAUD].mean()) if len(df) else 0.0,
        time.perf_counter() - started,
    )
    return df


def _to_frame(
    rows: _Rows, customers: int, terminals: int, start_date: date, label_delay: timedelta
) -> pd.DataFrame:
    start_ns = pd.Timestamp(start_date, tz="UTC").value
    ts_ns = start_ns + (rows.day * SECONDS_PER_DAY + rows.second) * NS_PER_SECOND
    # Stable sort: equal timestamps keep generation order, so the result is deterministic.
    order = np.argsort(ts_ns, kind="stable")
    ts_ns = ts_ns[order]
    timestamp = pd.to_datetime(ts_ns, unit="ns", utc=True)
    scenario = rows.scenario[order]
    return pd.DataFrame(
        {
            TRANSACTION_ID: _entity_ids("tx_", len(order), 9),
            TIMESTAMP: timestamp,
            CUSTOMER_ID: customer_ids(customers)[rows.customer[order]],
            TERMINAL_ID: terminal_ids(terminals)[rows.terminal[order]],
            AMOUNT: rows.amount[order].astype(np.float64),
            IS_FRAUD: (scenario != FraudScenario.LEGITIMATE).astype(np.int8),
            LABEL_TIMESTAMP: timestamp + pd.Timedelta(label_delay),
            FRAUD_SCENARIO: scenario.astype(np.int8),
        },
        columns=list(OUTPUT_COLUMNS),
    )


# --- output -----------------------------------------------------------------------------


def write_parquet(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``df`` to Parquet at ``path`` atomically; creates parent directories.

    Readers never see a half-written file: the data goes to a temporary file in the same
    directory (same filesystem) and is moved into place with ``os.replace``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would stick to the final file; a unique name is enough.
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


# --- command line -----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m fraudops.data.simulator``: simulate and write a Parquet file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--start-date", type=date.fromisoformat, default=date(2026, 4, 1))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drift-date", type=date.fromisoformat, default=None)
    parser.add_argument("--drift-strength", type=float, default=1.0)
    args = parser.parse_args(argv)

    from rich.logging import RichHandler
    from rich.progress import Progress

    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler()])
    with Progress() as bar:
        task = bar.add_task("simulating days", total=args.days)
        df = simulate(
            customers=args.customers,
            terminals=args.terminals,
            days=args.days,
            start_date=args.start_date,
            seed=args.seed,
            drift_date=args.drift_date,
            drift_strength=args.drift_strength,
            progress=lambda done: bar.update(task, completed=done),
        )
    logger.info("wrote %s", write_parquet(df, args.out))


if __name__ == "__main__":
    main()
