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
from dataclasses import dataclass
from typing import Any

import numpy as np

from fraudops import features as f


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


def score_and_advance_batch(
    states: dict[str, CustomerState],
    customers: np.ndarray,
    time_us: np.ndarray,
    amount: np.ndarray,
    terminal: np.ndarray,
) -> tuple[dict[str, np.ndarray], dict[str, CustomerState]]:
    """:func:`score_and_advance` for transactions of many customers in one vectorised call
    (the stream consumer's micro-batches, ``/score_batch``). Features come back in input
    order; states for every customer in the batch."""
    time_us = np.asarray(time_us, dtype=np.int64)
    amount = np.asarray(amount, dtype=np.float64)
    terminal = np.asarray(terminal, dtype=object)
    rows_of: dict[str, list[int]] = {}
    for i, customer in enumerate(customers):
        rows_of.setdefault(customer, []).append(i)
    h_t, h_a, h_term, h_g, q_rows, q_g = [], [], [], [], [], []
    starts = []
    for g, (customer, rows) in enumerate(rows_of.items()):
        state = states.get(customer) or CustomerState.empty()
        index = np.asarray(rows)[np.argsort(time_us[rows], kind="stable")]
        t = np.concatenate([state.history_time_us, time_us[index]])
        a = np.concatenate([state.history_amount, amount[index]])
        term = np.concatenate([state.history_terminal_id, terminal[index]])
        if len(state.history_time_us) and time_us[index[0]] < state.history_time_us[-1]:
            merge = np.argsort(t, kind="stable")  # a late event: keep the history sorted
            t, a, term = t[merge], a[merge], term[merge]
        h_t.append(t)
        h_a.append(a)
        h_term.append(term)
        h_g.append(np.full(len(t), g))
        q_rows.append(index)
        q_g.append(np.full(len(index), g))
        starts.append(state)
    query = np.concatenate(q_rows)
    group = np.concatenate(q_g)
    start = f.RunningStats(*(np.concatenate([getattr(st.stats, k) for st in starts])
                             for k in ("count", "amount_mean", "amount_m2",
                                       "hour_sin_sum", "hour_cos_sum")))  # fmt: skip
    before, after = f.advance_running_grouped(start, amount[query], time_us[query], group)
    history_t = np.concatenate(h_t)
    feats = f.customer_activity(
        history_t, np.concatenate(h_a), np.concatenate(h_term),
        time_us[query], amount[query], terminal[query], before,
        history_group=np.concatenate(h_g), group=group,
    )  # fmt: skip
    ordered = {name: np.empty(len(query)) for name in feats}
    for name, values in feats.items():
        ordered[name][query] = values
    new_states = {}
    columns = [np.asarray(v) for v in after.__dict__.values()]
    for g, customer in enumerate(rows_of):
        t, a, term, st = h_t[g], h_a[g], h_term[g], starts[g]
        last = max(int(t[-1]), st.last_time_us)
        kept = max(int(np.searchsorted(t, last - f.HISTORY_US)), len(t) - f.MAX_HISTORY)
        new_states[customer] = CustomerState(
            t[kept:], a[kept:], term[kept:], f.RunningStats(*(v[g : g + 1] for v in columns)),
            last,
        )  # fmt: skip
    return ordered, new_states
