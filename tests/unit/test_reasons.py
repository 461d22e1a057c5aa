"""Reasons name only features that moved the score: a zero contribution is no reason."""

from __future__ import annotations

import numpy as np

from fraudops.serving.scoring import explain


class _Model:
    """Stands in for FraudModel: fixed contributions per row (last column the bias)."""

    def __init__(self, contributions: np.ndarray):
        self._contributions = contributions

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        return self._contributions[: len(matrix)]


def test_zero_contributions_are_not_reasons() -> None:
    names = ["tx_amount", "tx_hour", "customer_tx_count_7d", "terminal_risk_28d"]
    matrix = np.array([[1800.0, 3.0, 0.0, 0.0], [5.0, 12.0, 2.0, 0.5]])
    contributions = np.array(
        [
            [2.1, 0.0, 0.0, 0.0, -3.0],  # only the amount moved the score
            [0.4, -0.2, 0.3, 0.0, -3.0],  # the top three by contribution, less the zero
        ]
    )
    reasons = explain(
        _Model(contributions),  # type: ignore[arg-type]
        matrix,
        names,
        np.array(["block", "review"]),
    )
    assert reasons[0] == [{"feature": "tx_amount", "value": 1800.0, "contribution": 2.1}]
    assert [r["feature"] for r in reasons[1]] == ["tx_amount", "customer_tx_count_7d"]


def test_approvals_have_no_reasons() -> None:
    reasons = explain(
        _Model(np.ones((1, 3))),  # type: ignore[arg-type]
        np.ones((1, 2)),
        ["a", "b"],
        np.array(["approve"]),
    )
    assert reasons == [[]]
