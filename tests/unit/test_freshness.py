"""Freshness budgets and verdicts (fraudops.features.freshness): per transaction on event time, per
store on the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest

from fraudops.core.settings import Settings
from fraudops.features.freshness import (
    NO_ROW,
    last_known_values,
    stale_views,
    staleness,
    store_freshness,
    view_budgets,
)
from fraudops.model.fraud_model import apply_stale_policy

H = 3600 * 1_000_000  # an hour in µs


def views() -> list[SimpleNamespace]:
    return [
        SimpleNamespace(name="terminal_daily", online=True, ttl=timedelta(days=2), tags={}),
        SimpleNamespace(name="customer_state", online=True, ttl=timedelta(0), tags={}),
        SimpleNamespace(
            name="customer_activity",
            online=False,
            ttl=timedelta(0),
            tags={"online_source": "customer_state"},
        ),
    ]


def test_budgets_are_the_ttl_unless_configured_and_skip_the_scorers_own_state() -> None:
    assert view_budgets(views()) == {"terminal_daily": timedelta(days=2)}
    assert view_budgets(views(), {"terminal_daily": timedelta(hours=36)}) == {
        "terminal_daily": timedelta(hours=36)
    }
    state_with_ttl = [
        *views()[:1],
        SimpleNamespace(name="customer_state", online=True, ttl=timedelta(days=30), tags={}),
        views()[2],
    ]
    assert "customer_state" not in view_budgets(state_with_ttl)


def test_budgets_from_the_environment(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("FRAUDOPS_FRESHNESS_BUDGETS", "terminal_daily=36h, other=2d")
    assert Settings().freshness_budgets == {
        "terminal_daily": timedelta(hours=36),
        "other": timedelta(days=2),
    }
    monkeypatch.setenv("FRAUDOPS_FRESHNESS_BUDGETS", "terminal_daily")
    with pytest.raises(ValidationError, match="view=duration"):
        Settings()


def test_a_row_is_stale_at_the_transactions_own_time() -> None:
    written = np.array([0, 0, NO_ROW, 10 * H], dtype=np.int64)
    tx_time = np.array([48 * H, 48 * H + 1, 100 * H, 20 * H], dtype=np.int64)
    found = staleness({"terminal_daily": timedelta(days=2)}, {"terminal_daily": written}, tx_time)
    # exactly the budget is fresh; past it stale; no row (unknown terminal) is not stale
    assert found.stale.tolist() == [False, True, False, False]
    assert found.reasons == [[], ["stale_features: terminal_daily"], [], []]
    assert found.any
    replay = staleness(
        {"terminal_daily": timedelta(days=2)}, {"terminal_daily": written[:1]}, np.array([47 * H])
    )
    assert not replay.any  # event time, not the clock: history replays as it was lived


def test_views_without_a_budget_are_never_stale() -> None:
    found = staleness({}, {"customer_state": np.array([0])}, np.array([1000 * H]))
    assert not found.any and found.reasons == [[]]


def test_the_degraded_policy_for_stale_rows() -> None:
    decisions = np.array(["approve", "approve", "block", "review"])
    stale = np.array([True, False, True, True])
    assert apply_stale_policy(decisions, stale, "score").tolist() == decisions.tolist()
    assert apply_stale_policy(decisions, stale, "review").tolist() == [
        "review",
        "approve",
        "block",
        "review",
    ]
    with pytest.raises(ValueError, match="unknown degraded policy"):
        apply_stale_policy(decisions, stale, "ignore")


def test_stale_rows_keep_their_last_known_values() -> None:
    values = np.array([[3.0, 0.5], [4.0, np.nan], [5.0, 0.2]])
    expired = np.array([True, False, True])
    stale = np.array([True, False, False])
    got = last_known_values(values, expired, stale, 0.0)
    assert got.tolist() == [[3.0, 0.5], [4.0, 0.0], [0.0, 0.0]]


def test_store_freshness_by_the_clock_and_an_empty_store_is_stale() -> None:
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    budgets = {"terminal_daily": timedelta(days=2)}
    fresh = store_freshness(budgets, {"terminal_daily": now - timedelta(hours=12)}, now)
    assert not fresh["terminal_daily"].stale and fresh["terminal_daily"].age_seconds == 43200
    old = store_freshness(budgets, {"terminal_daily": now - timedelta(days=3)}, now)
    reason = "terminal_daily: newest row 2026-12-03T12:00:00+00:00 is 72.0 h old, budget 48.0 h"
    assert stale_views(old) == {"terminal_daily": reason}
    empty = store_freshness(budgets, {"terminal_daily": None}, now)
    assert "holds no row" in stale_views(empty)["terminal_daily"]
