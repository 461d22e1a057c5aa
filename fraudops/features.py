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

import math
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
    *(f"customer_{stat}_{w}" for w in CUSTOMER_LONG_WINDOWS
      for stat in ("tx_count", "amount_avg", "amount_std")),
    *(f"customer_{stat}_{w}" for w in CUSTOMER_SHORT_WINDOWS
      for stat in ("tx_count", "amount_sum", "amount_avg", "terminal_count")),
    "customer_amount_zscore",
    "customer_hour_deviation",
    "customer_seconds_since_last_tx",
    "customer_terminal_is_new",
)  # fmt: skip
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
    angle = 2 * np.pi * hour_of_day(time_us) / 24
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
def _segment_sums(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """sum(values[lo[j]:hi[j]]) for each j, added in order, so that the same transactions
    give bit-identical sums whatever history surrounds them (offline and online agree)."""
    if len(lo) == 0:
        return np.zeros(0)
    padded = np.append(values, 0.0)
    idx = np.empty(2 * len(lo), dtype=np.int64)
    idx[0::2], idx[1::2] = lo, hi
    sums = np.add.reduceat(padded, np.minimum(idx, len(values)))[0::2]
    return np.where(hi > lo, sums, 0.0)


def _previous_same(codes: np.ndarray) -> np.ndarray:
    """For each position, the index of the previous position with the same code, or -1."""
    order = np.argsort(codes, kind="stable")
    prev = np.full(len(codes), -1, dtype=np.int64)
    same = codes[order][1:] == codes[order][:-1]
    prev[order[1:][same]] = order[:-1][same]
    return prev


def _distinct_in_window(prev_same: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Number of distinct codes in each window [lo, hi): positions whose previous
    occurrence falls before the window."""
    count = np.zeros(len(lo), dtype=np.int64)
    longest = int((hi - lo).max()) if len(lo) else 0
    for offset in range(longest):  # windows here are short (minutes to an hour)
        pos = lo + offset
        inside = pos < hi
        count += inside & (prev_same[np.where(inside, pos, 0)] < lo)
    return count


def identity_codes(*columns: np.ndarray) -> np.ndarray:
    """Equal ids get equal integer codes, over the columns concatenated. Ids are strings, or
    fixed-width ASCII bytes (numpy ``S``, the stream's terminal ids as stored): those are
    coded by their 8-byte words, without a Python object per id."""
    arrays = [np.asarray(column) for column in columns]
    if len({a.dtype for a in arrays}) == 1 and arrays[0].dtype.kind == "S":
        joined = np.concatenate(arrays)
        width = joined.dtype.itemsize
        raw = np.frombuffer(joined.tobytes(), dtype=np.uint8).reshape(len(joined), width)
        padded = np.zeros((len(joined), -(-width // 8) * 8), dtype=np.uint8)
        padded[:, :width] = raw
        words = padded.view("<u8")
        codes = pd.factorize(words[:, 0])[0].astype(np.int64)
        for k in range(1, words.shape[1]):
            codes = pd.factorize(codes << 32 | pd.factorize(words[:, k])[0])[0].astype(np.int64)
        return codes
    objects = [a.astype(object) if a.dtype.kind == "S" else a.astype(object, copy=False)
               for a in arrays]  # fmt: skip
    if any(a.dtype.kind == "S" for a in arrays):
        objects = [np.array([v.decode() if isinstance(v, bytes) else v for v in a], dtype=object)
                   for a in objects]  # fmt: skip
    return pd.factorize(np.concatenate(objects))[0].astype(np.int64)


def customer_activity(
    history_time_us: np.ndarray,
    history_amount: np.ndarray,
    history_terminal: np.ndarray,
    time_us: np.ndarray,
    amount: np.ndarray,
    terminal: np.ndarray,
    prior: RunningStats,
    history_group: np.ndarray | None = None,
    group: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Features of each query transaction from its customer's earlier transactions.

    ``history_*`` is the customers' history sorted by (``history_group``, time); it may
    include the queries themselves: only entries strictly earlier than a query count.
    ``group`` says whose history each query reads (default: one customer for all).
    ``prior`` holds the running stats before each query. One call serves a single
    customer (the offline build, one customer's events) or a whole batch of customers.
    """
    h_t = np.asarray(history_time_us, dtype=np.int64)
    h_amount = np.asarray(history_amount, dtype=np.float64)
    q_t = np.asarray(time_us, dtype=np.int64)
    q_amount = np.asarray(amount, dtype=np.float64)
    h_g = (
        np.zeros(len(h_t), np.int64)
        if history_group is None
        else np.asarray(history_group, np.int64)
    )
    q_g = np.zeros(len(q_t), np.int64) if group is None else np.asarray(group, np.int64)
    # One sorted key for (customer, time): a window never reaches another customer because
    # each customer's key range starts a full history window below its earliest time.
    times = np.concatenate([h_t, q_t])
    base = int(times.min()) - HISTORY_US - 1 if len(times) else 0
    span = (int(times.max()) - base + 1) if len(times) else 1
    h_key = h_g * span + (h_t - base)
    q_key = q_g * span + (q_t - base)
    hi = np.searchsorted(h_key, q_key, side="left")
    first = np.searchsorted(h_key, q_g * span, side="left")  # the group's first entry
    out: dict[str, np.ndarray] = {}

    for name, width in CUSTOMER_LONG_WINDOWS.items():
        lo = np.searchsorted(h_key, q_key - width, side="left")
        n = (hi - lo).astype(np.float64)
        total = _segment_sums(h_amount, lo, hi)
        squares = _segment_sums(h_amount * h_amount, lo, hi)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, total / n, 0.0)
            var = np.where(n > 0, np.maximum(squares / n - mean * mean, 0.0), 0.0)
        out[f"customer_tx_count_{name}"] = n
        out[f"customer_amount_avg_{name}"] = mean
        out[f"customer_amount_std_{name}"] = np.sqrt(var)

    # terminals as (customer, terminal) codes: "the same terminal" means for this customer
    terminal_codes = identity_codes(history_terminal, terminal)
    pair = np.concatenate([h_g, q_g]) * (int(terminal_codes.max(initial=0)) + 2) + terminal_codes
    pair_codes = pd.factorize(pair)[0]
    h_codes, q_codes = pair_codes[: len(h_t)], pair_codes[len(h_t) :]
    prev_same = _previous_same(h_codes)
    for name, width in CUSTOMER_SHORT_WINDOWS.items():
        lo = np.searchsorted(h_key, q_key - width, side="left")
        n = (hi - lo).astype(np.float64)
        total = _segment_sums(h_amount, lo, hi)
        out[f"customer_tx_count_{name}"] = n
        out[f"customer_amount_sum_{name}"] = total
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"customer_amount_avg_{name}"] = np.where(n > 0, total / n, 0.0)
        out[f"customer_terminal_count_{name}"] = _distinct_in_window(prev_same, lo, hi).astype(
            np.float64
        )

    count = np.asarray(prior.count, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(np.where(count > 0, prior.amount_m2 / count, 0.0))
        z = (q_amount - prior.amount_mean) / np.maximum(std, AMOUNT_STD_FLOOR)
    out["customer_amount_zscore"] = np.where(count >= 2, z, 0.0)

    usual = np.arctan2(prior.hour_sin_sum, prior.hour_cos_sum)
    angle = 2 * np.pi * hour_of_day(q_t) / 24
    gap = np.abs(np.angle(np.exp(1j * (angle - usual))))  # circular distance, radians
    out["customer_hour_deviation"] = np.where(count > 0, gap * 24 / (2 * np.pi), 0.0)

    has_earlier = hi > first
    last = h_t[np.maximum(hi - 1, 0)] if len(h_t) else np.zeros(len(q_t), dtype=np.int64)
    since = np.where(has_earlier, (q_t - last) / MICROS, SINCE_LAST_CAP_S)
    out["customer_seconds_since_last_tx"] = np.minimum(since, SINCE_LAST_CAP_S)
    out["customer_terminal_is_new"] = _terminal_is_new(h_t, h_codes, q_t, q_codes)
    return {name: out[name] for name in CUSTOMER_ACTIVITY_FEATURES}


def customer_activity_one(
    history_time_us: np.ndarray,
    history_amount: np.ndarray,
    history_terminal: np.ndarray,
    time_us: int,
    amount: float,
    terminal: str,
    prior: tuple[float, float, float, float, float],
) -> list[float]:
    """:func:`customer_activity` for one transaction of one customer, in
    ``CUSTOMER_ACTIVITY_FEATURES`` order: the scorer's per-request path, where the
    vectorised version's ~100 array operations on length-1 arrays cost more than the maths.
    ``prior`` is (count, amount mean, amount M2, hour sin sum, hour cos sum) before it.
    Tests check it against :func:`customer_activity` on random histories."""
    h_t = history_time_us
    hi = int(np.searchsorted(h_t, time_us, side="left"))
    lo = np.searchsorted(h_t, time_us - _WINDOW_WIDTHS, side="left")
    his = np.full(len(lo), hi)
    sums = _segment_sums(history_amount, lo, his)
    squares = _segment_sums(history_amount * history_amount, lo[:3], his[:3])
    out: list[float] = []
    for w in range(3):  # the long windows
        n = float(hi - lo[w])
        mean = sums[w] / n if n > 0 else 0.0
        var = max(squares[w] / n - mean * mean, 0.0) if n > 0 else 0.0
        out += [n, mean, math.sqrt(var)]
    for w in (3, 4):  # the short windows
        n = float(hi - lo[w])
        distinct = len(set(history_terminal[lo[w] : hi].tolist()))
        out += [n, sums[w], sums[w] / n if n > 0 else 0.0, float(distinct)]

    count, mean0, m2, sin_sum, cos_sum = prior
    std = math.sqrt(m2 / count) if count > 0 else 0.0
    out.append((amount - mean0) / max(std, AMOUNT_STD_FLOOR) if count >= 2 else 0.0)
    if count > 0:
        gap = 2 * math.pi * ((time_us % DAY_US) / HOUR_US) / 24 - math.atan2(sin_sum, cos_sum)
        gap = abs(math.atan2(math.sin(gap), math.cos(gap)))  # circular distance, radians
        out.append(gap * 24 / (2 * math.pi))
    else:
        out.append(0.0)
    since = (time_us - int(h_t[hi - 1])) / MICROS if hi > 0 else SINCE_LAST_CAP_S
    out.append(min(since, SINCE_LAST_CAP_S))
    start = int(np.searchsorted(h_t, time_us - HISTORY_US, side="left"))
    out.append(0.0 if terminal in history_terminal[start:hi].tolist() else 1.0)
    return out


_WINDOW_WIDTHS = np.array([*CUSTOMER_LONG_WINDOWS.values(), *CUSTOMER_SHORT_WINDOWS.values()])


def _terminal_is_new(
    h_t: np.ndarray, h_codes: np.ndarray, q_t: np.ndarray, q_codes: np.ndarray
) -> np.ndarray:
    """1.0 where the customer did not use the query's terminal in the history window
    (codes are per customer and terminal)."""
    if len(h_t) == 0:
        return np.ones(len(q_t))
    # dense time ranks keep (code, time) keys small enough for int64 on any data size
    rank = np.unique(np.concatenate([h_t, q_t]), return_inverse=True)[1]
    h_rank, q_rank = rank[: len(h_t)], rank[len(h_t) :]
    span = int(rank.max()) + 1
    h_key = h_codes.astype(np.int64) * span + h_rank
    order = np.argsort(h_key, kind="stable")
    p = np.searchsorted(h_key[order], q_codes.astype(np.int64) * span + q_rank, side="left")
    prev = order[np.maximum(p - 1, 0)]
    seen = (p > 0) & (h_codes[prev] == q_codes) & (h_t[prev] >= q_t - HISTORY_US)
    return (~seen).astype(np.float64)


def customer_defaults(n: int) -> dict[str, np.ndarray]:
    """Features of a customer with no history: what unknown customers are scored with."""
    empty = np.zeros(0)
    return customer_activity(
        empty.astype(np.int64), empty, empty.astype(object),
        np.zeros(n, dtype=np.int64), np.zeros(n), np.full(n, "", dtype=object),
        RunningStats(*(np.zeros(n) for _ in range(5))),
    )  # fmt: skip


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
