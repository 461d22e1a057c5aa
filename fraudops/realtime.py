"""Real-time customer state: what the online store keeps so that a transaction scored at
time t sees every earlier transaction of its customer.

The state is a row of the Feast view ``customer_state``: the customer's transactions of
the last 30 days (time, amount, terminal) and its running Welford statistics. Scoring a
transaction reads the state, computes features with :func:`fraudops.features.customer_activity`
(the function the offline build uses), then writes the advanced state back. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from fraudops import features as f
from fraudops import kernels


@dataclass(frozen=True)
class CustomerState:
    history_time_us: np.ndarray
    history_amount: np.ndarray
    history_terminal_id: np.ndarray
    stats: f.RunningStats
    last_time_us: int

    @classmethod
    def empty(cls) -> CustomerState:
        return cls(
            np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=object),
            f.RunningStats.empty(), 0,
        )  # fmt: skip

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | None) -> CustomerState:
        """From the feature values of ``customer_state`` (missing or None: a new customer)."""
        if not row or row.get("history_time_us") is None:
            return cls.empty()
        times = np.asarray(row["history_time_us"], dtype=np.int64)
        return cls(
            times,
            np.asarray(row["history_amount"], dtype=np.float64),
            np.asarray(row["history_terminal_id"], dtype=object),
            f.RunningStats(
                *(
                    np.array([float(row[name] or 0.0)])
                    for name in (
                        "tx_count",
                        "amount_mean",
                        "amount_m2",
                        "hour_sin_sum",
                        "hour_cos_sum",
                    )
                )
            ),  # fmt: skip
            int(times[-1]) if len(times) else 0,
        )

    def to_row(self) -> dict[str, Any]:
        return {
            "history_time_us": self.history_time_us.tolist(),
            "history_amount": self.history_amount.tolist(),
            "history_terminal_id": [str(t) for t in self.history_terminal_id],
            "tx_count": int(self.stats.count[0]),
            "amount_mean": float(self.stats.amount_mean[0]),
            "amount_m2": float(self.stats.amount_m2[0]),
            "hour_sin_sum": float(self.stats.hour_sin_sum[0]),
            "hour_cos_sum": float(self.stats.hour_cos_sum[0]),
        }


def score_and_advance(
    state: CustomerState, time_us: np.ndarray, amount: np.ndarray, terminal: np.ndarray
) -> tuple[dict[str, np.ndarray], CustomerState]:
    """Customer features for one customer's new transactions (in arrival order), and the
    state after them. Transactions of the same batch see the earlier ones, as offline."""
    time_us = np.asarray(time_us, dtype=np.int64)
    amount = np.asarray(amount, dtype=np.float64)
    terminal = np.asarray(terminal, dtype=object)
    order = np.argsort(time_us, kind="stable")
    q_t, q_a, q_term = time_us[order], amount[order], terminal[order]

    h_t = np.concatenate([state.history_time_us, q_t])
    h_a = np.concatenate([state.history_amount, q_a])
    h_term = np.concatenate([state.history_terminal_id, q_term])
    if len(state.history_time_us) and q_t[0] < state.history_time_us[-1]:
        merge = np.argsort(h_t, kind="stable")  # a late event: keep the history sorted
        h_t, h_a, h_term = h_t[merge], h_a[merge], h_term[merge]

    before, after = f.advance_running(state.stats, q_a, q_t)
    feats = f.customer_activity(h_t, h_a, h_term, q_t, q_a, q_term, before)
    unsort = np.empty_like(order)
    unsort[order] = np.arange(len(order))
    feats = {name: values[unsort] for name, values in feats.items()}

    last = max(int(h_t[-1]), state.last_time_us)
    keep = h_t >= last - f.HISTORY_US
    keep[: max(0, len(h_t) - f.MAX_HISTORY)] = False
    return feats, CustomerState(h_t[keep], h_a[keep], h_term[keep], after, last)


def score_and_advance_one(
    state: CustomerState, time_us: int, amount: float, terminal: str
) -> tuple[list[float], CustomerState]:
    """:func:`score_and_advance` for a single transaction, with scalar maths (the scorer's
    per-request path): its features in ``CUSTOMER_ACTIVITY_FEATURES`` order and the new
    state. Welford's update for one value is the k=1 case of ``advance_running_grouped``."""
    stats = state.stats
    prior = (float(stats.count[0]), float(stats.amount_mean[0]), float(stats.amount_m2[0]),
             float(stats.hour_sin_sum[0]), float(stats.hour_cos_sum[0]))  # fmt: skip
    features = f.customer_activity_one(
        state.history_time_us, state.history_amount, state.history_terminal_id,
        time_us, amount, terminal, prior,
    )  # fmt: skip
    count, mean, m2, sin_sum, cos_sum = prior
    n = count + 1
    delta = amount - mean
    angle = 2 * np.pi * ((time_us % f.DAY_US) / f.HOUR_US) / 24
    after = f.RunningStats(
        np.array([n]), np.array([mean + delta * 1.0 / n]),
        np.array([m2 + 0.0 + delta * delta * count * 1.0 / n]),
        np.array([sin_sum + math.sin(angle)]), np.array([cos_sum + math.cos(angle)]),
    )  # fmt: skip

    h_t, h_a, h_term = state.history_time_us, state.history_amount, state.history_terminal_id
    at = int(np.searchsorted(h_t, time_us, side="right"))  # after equal times, as a stable sort
    h_t = np.concatenate((h_t[:at], np.array([time_us], dtype=np.int64), h_t[at:]))
    h_a = np.concatenate((h_a[:at], np.array([amount]), h_a[at:]))
    h_term = np.concatenate((h_term[:at], np.array([terminal], dtype=object), h_term[at:]))
    last = max(int(h_t[-1]), state.last_time_us)
    start = int(np.searchsorted(h_t, last - f.HISTORY_US, side="left"))
    start = max(start, len(h_t) - f.MAX_HISTORY)
    return features, CustomerState(h_t[start:], h_a[start:], h_term[start:], after, last)


@dataclass(frozen=True)
class StateBatch:
    """Many customers' states as flat columns (the batch path: ``/score_batch``, the stream
    consumer), so that a batch advances with a few array operations instead of a few per
    customer. Customer ``g``'s history is rows ``bounds[g]:bounds[g + 1]`` of the
    ``history_*`` columns, sorted by time; ``stats`` and ``last_time_us`` hold one value
    per customer."""

    customers: list[str]
    bounds: np.ndarray
    history_time_us: np.ndarray
    history_amount: np.ndarray
    history_terminal_id: np.ndarray
    stats: f.RunningStats
    last_time_us: np.ndarray

    @classmethod
    def of(cls, customers: list[str], states: Mapping[str, CustomerState]) -> StateBatch:
        """The states of ``customers`` (a new customer's is empty)."""
        picked = [states.get(customer) or CustomerState.empty() for customer in customers]
        lengths = [len(state.history_time_us) for state in picked]
        return cls(
            list(customers),
            np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]),
            _concat([s.history_time_us for s in picked], np.int64),
            _concat([s.history_amount for s in picked], np.float64),
            _concat([s.history_terminal_id for s in picked], object),
            f.RunningStats(*(np.concatenate([np.asarray(getattr(s.stats, k), np.float64)[-1:]
                                             for s in picked]) if picked else np.zeros(0)
                             for k in _STATS)),
            np.array([s.last_time_us for s in picked], dtype=np.int64),
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.customers)

    def state(self, g: int) -> CustomerState:
        lo, hi = int(self.bounds[g]), int(self.bounds[g + 1])
        return CustomerState(
            self.history_time_us[lo:hi], self.history_amount[lo:hi],
            as_strings(self.history_terminal_id[lo:hi]), self.stats.take(np.array([g])),
            int(self.last_time_us[g]),
        )  # fmt: skip

    def as_dict(self) -> dict[str, CustomerState]:
        return {customer: self.state(g) for g, customer in enumerate(self.customers)}


_STATS = tuple(field.name for field in fields(f.RunningStats))


def fixed_width_ascii(ids: np.ndarray) -> np.ndarray | None:
    """String ids as a numpy ``S`` array when they are all ASCII of one width (terminal
    ids usually are), else None. The batch path keeps such ids without a Python object
    each; :func:`fraudops.features.identity_codes` and the state codec read them as is."""
    ids = np.asarray(ids)
    if ids.dtype.kind == "S":
        return ids
    if len(ids) == 0:
        return None
    values = ids.tolist()
    if not all(isinstance(v, str) for v in values):
        return None
    try:
        text = np.asarray(values, dtype=str)
        encoded = text.astype(f"S{text.dtype.itemsize // 4}")  # raises on non-ASCII
    except (UnicodeEncodeError, ValueError, TypeError):
        return None
    width = encoded.dtype.itemsize
    if width == 0 or np.char.str_len(encoded).min() != width:
        return None  # mixed widths, empty ids, or trailing NULs (which S would drop)
    return encoded


def as_strings(ids: np.ndarray) -> np.ndarray:
    """Ids as an object array of ``str`` (``S`` arrays decoded)."""
    ids = np.asarray(ids)
    if ids.dtype.kind == "S":
        return ids.astype(f"U{max(ids.dtype.itemsize, 1)}").astype(object)
    return ids.astype(object, copy=False)


def same_id_kind(history: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """History and query ids in one representation: fixed-width ``S`` when both can be,
    else ``str`` objects."""
    history, query = np.asarray(history), np.asarray(query)
    if history.dtype.kind == "S":
        fixed = fixed_width_ascii(query)
        if fixed is not None and fixed.dtype == history.dtype:
            return history, fixed
    elif len(history) == 0:
        fixed = fixed_width_ascii(query)
        if fixed is not None:
            return history.astype(fixed.dtype), fixed
    return as_strings(history), as_strings(query)


def _concat(arrays: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)


def advance_batch(
    states: StateBatch,
    group: np.ndarray,
    time_us: np.ndarray,
    amount: np.ndarray,
    terminal: np.ndarray,
) -> tuple[dict[str, np.ndarray], StateBatch]:
    """:func:`score_and_advance` for transactions of many customers in one vectorised pass:
    transaction ``i`` belongs to customer ``group[i]`` of ``states``. Features come back in
    input order, with the states after the batch.

    Each customer's history and new transactions are merged by one stable sort on
    (customer, time), history first at equal times: exactly what the per-customer function
    does, late events included."""
    group = np.asarray(group, dtype=np.int64)
    time_us = np.asarray(time_us, dtype=np.int64)
    amount = np.asarray(amount, dtype=np.float64)
    history_terminal, terminal = same_id_kind(states.history_terminal_id, terminal)
    if kernels.available():
        return _advance_compiled(states, group, time_us, amount, history_terminal, terminal)
    customers = len(states.customers)
    history_group = np.repeat(np.arange(customers), np.diff(states.bounds))
    merged = np.lexsort(
        (np.concatenate([states.history_time_us, time_us]),
         np.concatenate([history_group, group]))
    )  # fmt: skip
    h_g = np.concatenate([history_group, group])[merged]
    h_t = np.concatenate([states.history_time_us, time_us])[merged]
    h_a = np.concatenate([states.history_amount, amount])[merged]
    h_term = np.concatenate([history_terminal, terminal])[merged]

    query = np.lexsort((time_us, group))  # each customer's transactions in time order
    before, after = f.advance_running_grouped(
        states.stats, amount[query], time_us[query], group[query]
    )
    feats = f.customer_activity(
        h_t, h_a, h_term, time_us[query], amount[query], terminal[query], before,
        history_group=h_g, group=group[query],
    )  # fmt: skip
    ordered = {}
    for name, values in feats.items():
        ordered[name] = np.empty(len(query))
        ordered[name][query] = values

    sizes = np.bincount(h_g, minlength=customers)
    ends = np.cumsum(sizes)
    newest = np.where(sizes > 0, h_t[np.maximum(ends - 1, 0)] if len(h_t) else 0, 0)
    last = np.maximum(newest, states.last_time_us)
    rank = np.arange(len(h_t)) - (ends - sizes)[h_g]  # position within the customer
    keep = (h_t >= (last - f.HISTORY_US)[h_g]) & (rank >= (sizes - f.MAX_HISTORY)[h_g])
    kept = np.bincount(h_g[keep], minlength=customers)
    return ordered, StateBatch(
        states.customers, np.concatenate([[0], np.cumsum(kept)]),
        h_t[keep], h_a[keep], h_term[keep], after, last,
    )  # fmt: skip


def _advance_compiled(
    states: StateBatch,
    group: np.ndarray,
    time_us: np.ndarray,
    amount: np.ndarray,
    history_terminal: np.ndarray,
    terminal: np.ndarray,
) -> tuple[dict[str, np.ndarray], StateBatch]:
    """:func:`advance_batch` by the compiled kernel (:func:`fraudops.kernels.advance_groups`);
    terminals are compared by their words (:func:`fraudops.kernels.id_words`)."""
    features, bounds, source, h_t, h_a, after, last = kernels.advance(
        states.bounds, states.history_time_us, states.history_amount, states.stats,
        states.last_time_us, group, time_us, amount, kernels.id_words(history_terminal, terminal),
    )  # fmt: skip
    terminals = np.concatenate([history_terminal, terminal])[source]
    return (
        {name: features[:, j] for j, name in enumerate(f.CUSTOMER_ACTIVITY_FEATURES)},
        StateBatch(states.customers, bounds, h_t, h_a, terminals, f.RunningStats(*after), last),
    )


def batch_for(
    customers: np.ndarray, states: Mapping[str, CustomerState] | StateBatch
) -> tuple[np.ndarray, StateBatch]:
    """Each transaction's customer as a position in the batch (customers in order of first
    appearance), and their states as a :class:`StateBatch`, for :func:`advance_batch`.
    A ``StateBatch`` given must hold exactly those customers, in that order."""
    # a dict, not pandas.factorize: the scorer's batches are mostly a few dozen (measured:
    # 2.2 against 8.2 µs for 16 customers; for 1,000, 81 against 46 µs)
    positions: dict[Any, int] = {}
    group = np.fromiter(
        (positions.setdefault(customer, len(positions)) for customer in customers),
        np.int64, len(customers),
    )  # fmt: skip
    unique = list(positions)
    if not isinstance(states, StateBatch):
        return group, StateBatch.of(unique, states)
    if states.customers != unique:
        raise ValueError("the state batch does not hold the transactions' customers in order")
    return group, states


def score_and_advance_batch(
    states: dict[str, CustomerState],
    customers: np.ndarray,
    time_us: np.ndarray,
    amount: np.ndarray,
    terminal: np.ndarray,
) -> tuple[dict[str, np.ndarray], dict[str, CustomerState]]:
    """:func:`advance_batch` for states in a dict by customer id: features in input order,
    and the state of every customer in the batch."""
    group, batch = batch_for(customers, states)
    feats, after = advance_batch(batch, group, time_us, amount, terminal)
    return feats, after.as_dict()
