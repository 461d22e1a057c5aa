"""Feature maths, pure: arrays in, arrays out, no I/O.

The offline build (``fraudops features build``), the online scorer and the stream consumer
all call these functions, so a feature means the same thing in training and in serving:

- :func:`request_features`: from the transaction alone (amount, hour, night, weekend);
- :func:`customer_activity`: from the customer's earlier transactions (windows, velocity,
  distinct terminals, z-score against running Welford stats, usual hour, recency);
- :func:`advance_running`: the running (all-time) per-customer statistics;
- :func:`terminal_daily_features`: terminal volume and label-based risk per day.

Conventions: times are int64 microseconds since the epoch (UTC); windows look strictly
before the transaction (``[t - w, t)``), so a transaction never sees itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MICROS = 1_000_000
HOUR_US = 3_600 * MICROS
DAY_US = 86_400 * MICROS

CUSTOMER_LONG_WINDOWS = {"1d": 1 * DAY_US, "7d": 7 * DAY_US, "30d": 30 * DAY_US}
CUSTOMER_SHORT_WINDOWS = {"5min": 300 * MICROS, "1h": HOUR_US}
TERMINAL_WINDOW_DAYS = {"1d": 1, "7d": 7, "28d": 28}

# The online state keeps this much history per customer: the longest window.
HISTORY_US = max(CUSTOMER_LONG_WINDOWS.values())
MAX_HISTORY = 2_000  # transactions kept per customer; above ~66/day windows undercount
SINCE_LAST_CAP_S = HISTORY_US / MICROS  # "no earlier transaction in the history window"
AMOUNT_STD_FLOOR = 1.0
# A batch feature with no row (unknown terminal, or older than the view's TTL), online and
# offline alike.
MISSING_FEATURE_VALUE = 0.0  # currency units: z-scores of customers with near-constant amounts

REQUEST_FEATURES = ("tx_amount", "tx_amount_log", "tx_hour", "tx_is_night", "tx_is_weekend")
CUSTOMER_ACTIVITY_FEATURES = (
    *(
        f"customer_{stat}_{w}"
        for w in CUSTOMER_LONG_WINDOWS
        for stat in ("tx_count", "amount_avg", "amount_std")
    ),
    *(
        f"customer_{stat}_{w}"
        for w in CUSTOMER_SHORT_WINDOWS
        for stat in ("tx_count", "amount_sum", "amount_avg", "terminal_count")
    ),
    "customer_amount_zscore",
    "customer_hour_deviation",
    "customer_seconds_since_last_tx",
    "customer_terminal_is_new",
)
TERMINAL_FEATURES = (
    *(f"terminal_tx_count_{w}" for w in TERMINAL_WINDOW_DAYS),
    *(f"terminal_risk_{w}" for w in TERMINAL_WINDOW_DAYS),
)


def to_micros(values: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """UTC datetimes to int64 microseconds since the epoch."""
    index = pd.DatetimeIndex(values)
    if index.tz is None:
        index = index.tz_localize("UTC")
    return index.tz_convert("UTC").as_unit("us").asi8.copy()


def hour_of_day(time_us: np.ndarray) -> np.ndarray:
    """Fractional UTC hour of day, 0 <= h < 24."""
    return (np.asarray(time_us, dtype=np.int64) % DAY_US) / HOUR_US


def hour_angle(time_us: np.ndarray) -> np.ndarray:
    """The hour of day as an angle (radians): the running statistics sum its sine and
    cosine, whose direction is the customer's usual hour."""
    return 2 * np.pi * hour_of_day(time_us) / 24


# --- request features -------------------------------------------------------------------
def request_features(amount: np.ndarray, time_us: np.ndarray) -> dict[str, np.ndarray]:
    """What the transaction alone says: amount, log amount, hour, night and weekend flags."""
    amount = np.asarray(amount, dtype=np.float64)
    hour = hour_of_day(time_us)
    weekday = (np.asarray(time_us, dtype=np.int64) // DAY_US + 3) % 7  # 1970-01-01 was a Thursday
    return {
        "tx_amount": amount,
        "tx_amount_log": np.log1p(amount),
        "tx_hour": hour,
        "tx_is_night": (hour < 6).astype(np.float64),
        "tx_is_weekend": (weekday >= 5).astype(np.float64),
    }


# --- running statistics (Welford) ---------------------------------------------------------
@dataclass(frozen=True)
class RunningStats:
    """All-time per-customer statistics: Welford count/mean/M2 of the amount, and the sum of
    the hour-of-day as a unit vector (its angle is the customer's usual hour)."""

    count: np.ndarray
    amount_mean: np.ndarray
    amount_m2: np.ndarray
    hour_sin_sum: np.ndarray
    hour_cos_sum: np.ndarray

    @classmethod
    def empty(cls) -> RunningStats:
        zero = np.zeros(1)
        return cls(zero, zero, zero, zero, zero)

    def last(self) -> RunningStats:
        return RunningStats(*(np.asarray(v)[-1:] for v in self.__dict__.values()))

    def take(self, index: np.ndarray) -> RunningStats:
        return RunningStats(*(np.asarray(v)[index] for v in self.__dict__.values()))


def advance_running(
    start: RunningStats, amounts: np.ndarray, time_us: np.ndarray
) -> tuple[RunningStats, RunningStats]:
    """Fold one customer's transactions (in time order) into ``start`` (length-1 stats):
    the stats *before* each transaction, and after the last one."""
    x = np.asarray(amounts, dtype=np.float64)
    return advance_running_grouped(start, x, time_us, np.zeros(len(x), dtype=np.int64))


def advance_running_grouped(
    start: RunningStats, amounts: np.ndarray, time_us: np.ndarray, group: np.ndarray
) -> tuple[RunningStats, RunningStats]:
    """Welford's running statistics for many customers at once.

    ``group`` numbers the customers 0..G-1 and must be non-decreasing (each customer's
    transactions together, in time order); ``start`` holds G stats. Returns the stats
    before each transaction and the G stats after each customer's last one. Welford's
    recurrence, vectorised as Chan's merge of ``start`` with each prefix of the block.
    """
    x = np.asarray(amounts, dtype=np.float64)
    g = np.asarray(group, dtype=np.int64)
    groups = len(start.count)
    sizes = np.bincount(g, minlength=groups)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # start offset of each group
    k = np.arange(len(x)) - first[g]  # transactions of the group before this one
    # shifting by each group's first amount keeps the sums of squares well conditioned
    shift = np.where(sizes > 0, x[np.minimum(first, max(len(x) - 1, 0))] if len(x) else 0, 0.0)
    d = x - shift[g]

    def exclusive(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per element: the sum of the earlier values of its group; per group: the total."""
        total = np.concatenate([[0.0], np.cumsum(values)])
        before = total[np.arange(len(values))] - total[first[g]]
        return before, total[first + sizes] - total[first]

    s_before, s_total = exclusive(d)
    q_before, q_total = exclusive(d * d)
    angle = hour_angle(time_us)
    sin_before, sin_total = exclusive(np.sin(angle))
    cos_before, cos_total = exclusive(np.cos(angle))

    def merge(
        idx: np.ndarray, kk: np.ndarray, s_: np.ndarray, q_: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n0, mean0, m2_0 = start.count[idx], start.amount_mean[idx], start.amount_m2[idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            block_mean = np.where(kk > 0, shift[idx] + s_ / kk, 0.0)
            block_m2 = np.where(kk > 0, np.maximum(q_ - s_ * s_ / kk, 0.0), 0.0)
            n = n0 + kk
            delta = block_mean - mean0
            mean = np.where(n > 0, mean0 + delta * kk / n, 0.0)
            m2 = np.where(n > 0, m2_0 + block_m2 + delta * delta * n0 * kk / n, 0.0)
        return n, mean, m2

    kf = k.astype(np.float64)
    before = RunningStats(
        *merge(g, kf, s_before, q_before),
        start.hour_sin_sum[g] + sin_before,
        start.hour_cos_sum[g] + cos_before,
    )
    every = np.arange(groups)
    after = RunningStats(
        *merge(every, sizes.astype(np.float64), s_total, q_total),
        start.hour_sin_sum + sin_total,
        start.hour_cos_sum + cos_total,
    )
    return before, after


# --- customer activity --------------------------------------------------------------------
_LONGS = len(CUSTOMER_LONG_WINDOWS)
# the windows' widths as a column: the queries' keys (a row) minus it are the windows' starts
_WIDTHS = np.array([*CUSTOMER_LONG_WINDOWS.values(), *CUSTOMER_SHORT_WINDOWS.values()])[:, None]
_DISTINCT_CELLS = 1 << 16  # (window, position) pairs looked at per step of _distinct_in_window


def _segment_sums(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """sum(values[lo[j]:hi[j]]) for each j, added in order, so that the same transactions
    give bit-identical sums whatever history surrounds them (offline and online agree).
    ``lo`` and ``hi`` have one shape (the sums have it); indices lie in
    ``[0, len(values))``."""
    if lo.size == 0:
        return np.zeros(lo.shape)
    idx = np.empty((*lo.shape, 2), dtype=np.int64)
    idx[..., 0], idx[..., 1] = lo, hi
    sums = np.add.reduceat(values, idx.ravel())[0::2].reshape(lo.shape)
    return np.where(hi > lo, sums, 0.0)


def _previous_same(codes: np.ndarray) -> np.ndarray:
    """For each position, the index of the previous position with the same code, or -1."""
    order = np.argsort(codes, kind="stable")
    prev = np.full(len(codes), -1, dtype=np.int64)
    same = codes[order][1:] == codes[order][:-1]
    prev[order[1:][same]] = order[:-1][same]
    return prev


def _distinct_in_window(prev_same: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Number of distinct codes in each window [lo, hi) (``lo`` of any shape, ``hi``
    broadcast to it): positions whose previous occurrence falls before the window. Windows
    here are short (minutes to an hour): each step looks at the next positions of every
    window, as many as ``_DISTINCT_CELLS`` allows (for a few windows, all in one step)."""
    count = np.zeros(lo.shape, dtype=np.int64)
    longest = int((hi - lo).max()) if lo.size else 0
    step = max(1, _DISTINCT_CELLS // max(lo.size, 1))
    for start in range(0, longest, step):
        pos = lo[..., None] + np.arange(start, min(start + step, longest))
        inside = pos < hi[..., None]
        count += (inside & (prev_same[np.where(inside, pos, 0)] < lo[..., None])).sum(axis=-1)
    return count


def terminal_codes(terminal: np.ndarray) -> np.ndarray:
    """Terminal ids as integer codes (equal ids, equal codes), as
    :func:`customer_activity` takes them; integer codes are kept as they are."""
    terminal = np.asarray(terminal)
    if terminal.dtype.kind in "iu":
        return terminal.astype(np.int64, copy=False)
    return pd.factorize(terminal.astype(object, copy=False))[0]


def customer_activity(
    time_us: np.ndarray,
    amount: np.ndarray,
    terminal: np.ndarray,
    group: np.ndarray,
    at: np.ndarray,
    prior: RunningStats,
) -> dict[str, np.ndarray]:
    """Features of the transactions at positions ``at`` of a history, each from the
    entries of its own customer that come before it.

    The history holds one or many customers' transactions, sorted by (``group``, time,
    commit order): the order in which they were committed to the customer's real-time
    state. So a transaction sees every earlier one, and those of equal time committed
    before it, never itself or a later one. Windows are ``[t - w, t]`` in time. ``prior``
    holds, per query, the running statistics before it. ``terminal`` holds terminal ids,
    or integer codes of them (:func:`terminal_codes`; -1 and up).

    The offline build passes every customer's transactions, each its own query; the online
    path passes, per transaction, what the state store returned before it followed by the
    transaction itself (its query is the last position of its group).
    """
    h_t = np.asarray(time_us, dtype=np.int64)
    h_amount = np.asarray(amount, dtype=np.float64)
    h_g = np.asarray(group, dtype=np.int64)
    at = np.asarray(at, dtype=np.int64)
    q_t, q_amount = h_t[at], h_amount[at]
    # One sorted key for (customer, time): a window never reaches another customer because
    # each customer's key range starts a full history window below its earliest time.
    base = int(h_t.min()) - HISTORY_US - 1 if len(h_t) else 0
    span = (int(h_t.max()) - base + 1) if len(h_t) else 1
    h_key = h_g * span + (h_t - base)
    first = np.searchsorted(h_g, h_g[at], side="left")  # the group's first entry

    # Every window's start at once (a row per window: at most ``at``), then in one pass
    # the sums of the amounts over every window and of their squares over the long ones:
    # [amounts, squares] are summed, the squares' windows shifted past the amounts.
    los = np.searchsorted(h_key, h_key[at] - _WIDTHS, side="left")
    n_all = (at - los).astype(np.float64)
    size = len(h_amount)
    lo = np.concatenate([los, los[:_LONGS] + size])
    hi = np.empty_like(lo)
    hi[: len(los)], hi[len(los) :] = at, at + size
    sums = _segment_sums(np.concatenate([h_amount, h_amount * h_amount]), lo, hi)
    totals, squares = sums[: len(los)], sums[len(los) :]
    # 0 for an empty window (no division by zero)
    means = np.divide(totals, n_all, out=np.zeros_like(totals), where=n_all > 0)
    n_long = n_all[:_LONGS]
    var = np.divide(squares, n_long, out=np.zeros_like(squares), where=n_long > 0)
    var = np.maximum(var - means[:_LONGS] ** 2, 0.0)
    # terminals as (customer, terminal) codes: "the same terminal" means for this customer
    codes = terminal_codes(terminal)
    prev_same = _previous_same(h_g * (int(codes.max(initial=0)) + 2) + codes)
    distinct = _distinct_in_window(prev_same, los[_LONGS:], at).astype(np.float64)
    out: dict[str, np.ndarray] = {}
    for w, name in enumerate(CUSTOMER_LONG_WINDOWS):
        out[f"customer_tx_count_{name}"] = n_all[w]
        out[f"customer_amount_avg_{name}"] = means[w]
        out[f"customer_amount_std_{name}"] = np.sqrt(var[w])
    for s, name in enumerate(CUSTOMER_SHORT_WINDOWS):
        out[f"customer_tx_count_{name}"] = n_all[_LONGS + s]
        out[f"customer_amount_sum_{name}"] = totals[_LONGS + s]
        out[f"customer_amount_avg_{name}"] = means[_LONGS + s]
        out[f"customer_terminal_count_{name}"] = distinct[s]

    count = np.asarray(prior.count, dtype=np.float64)
    std = np.sqrt(np.divide(prior.amount_m2, count, out=np.zeros(len(count)), where=count > 0))
    z = (q_amount - prior.amount_mean) / np.maximum(std, AMOUNT_STD_FLOOR)
    out["customer_amount_zscore"] = np.where(count >= 2, z, 0.0)

    usual = np.arctan2(prior.hour_sin_sum, prior.hour_cos_sum)
    gap = np.abs(np.angle(np.exp(1j * (hour_angle(q_t) - usual))))  # circular distance
    out["customer_hour_deviation"] = np.where(count > 0, gap * 24 / (2 * np.pi), 0.0)

    has_earlier = at > first
    last = h_t[np.maximum(at - 1, 0)]
    since = np.where(has_earlier, (q_t - last) / MICROS, SINCE_LAST_CAP_S)
    out["customer_seconds_since_last_tx"] = np.minimum(since, SINCE_LAST_CAP_S)
    # new: no earlier entry of the same (customer, terminal) in the history window
    previous = prev_same[at]
    seen = (previous >= 0) & (h_t[np.maximum(previous, 0)] >= q_t - HISTORY_US)
    out["customer_terminal_is_new"] = (~seen).astype(np.float64)
    return {name: out[name] for name in CUSTOMER_ACTIVITY_FEATURES}


def customer_defaults(n: int) -> dict[str, np.ndarray]:
    """Features of a customer with no history: what unknown customers are scored with."""
    return customer_activity(
        np.zeros(n, dtype=np.int64),
        np.zeros(n),
        np.zeros(n, dtype=np.int64),  # one terminal code
        np.arange(n),
        np.arange(n),
        RunningStats(*(np.zeros(n) for _ in range(5))),
    )


# --- terminal features ---------------------------------------------------------------------
def terminal_daily_features(
    terminal_code: np.ndarray,
    time_us: np.ndarray,
    is_fraud: np.ndarray,
    label_time_us: np.ndarray,
    n_terminals: int,
    first_day_us: int,
    n_days: int,
    label_delay_days: int,
) -> dict[str, np.ndarray]:
    """Per terminal and day start D (arrays of shape [n_terminals, n_days]):

    - ``terminal_tx_count_Nd``: transactions in ``[D - N days, D)``;
    - ``terminal_risk_Nd``: share of fraud among transactions in
      ``[D - delay - N days, D)`` whose label was known at D (``label_time <= D``).
      Labels from the future never count; ``is_fraud`` NaN means unlabelled.
    """
    code = np.asarray(terminal_code, dtype=np.int64)
    t = np.asarray(time_us, dtype=np.int64) - first_day_us
    first_after = t // DAY_US + 1  # first day start strictly after the transaction
    labelled = ~np.isnan(np.asarray(is_fraud, dtype=np.float64))
    fraud = np.nan_to_num(np.asarray(is_fraud, dtype=np.float64)) > 0
    label_t = np.asarray(label_time_us, dtype=np.int64) - first_day_us
    label_day = -(-label_t // DAY_US)  # first day start at or after the label time

    def spread(mask: np.ndarray, start: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Count, per terminal and day, the transactions active on days [start, last]."""
        grid = np.zeros((n_terminals, n_days + 1))
        start, last = np.maximum(start, 0), np.minimum(last, n_days - 1)
        keep = mask & (start <= last)
        np.add.at(grid, (code[keep], start[keep]), 1)
        np.add.at(grid, (code[keep], last[keep] + 1), -1)
        return np.cumsum(grid, axis=1)[:, :n_days]

    out: dict[str, np.ndarray] = {}
    everyone = np.ones(len(t), dtype=bool)
    for name, days in TERMINAL_WINDOW_DAYS.items():
        out[f"terminal_tx_count_{name}"] = spread(
            everyone, first_after, (t + days * DAY_US) // DAY_US
        )
        reach = (t + (days + label_delay_days) * DAY_US) // DAY_US
        known_from = np.maximum(first_after, label_day)
        n_known = spread(labelled, known_from, reach)
        n_fraud = spread(labelled & fraud, known_from, reach)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"terminal_risk_{name}"] = np.where(n_known > 0, n_fraud / n_known, 0.0)
    return {name: out[name] for name in TERMINAL_FEATURES}
