"""The live comparison against a hand computation on a small log, and its vectorised
bootstrap metrics against scikit-learn and the Handbook's card precision on the same
transactions repeated as the weights say."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from fraudops.model import evaluation
from fraudops.model.comparison import (
    compare_pairs,
    resample_weights,
    weighted_average_precision,
    weighted_brier,
    weighted_card_precision_at_k,
    weighted_roc_auc,
)

D1, D2 = pd.Timestamp("2026-05-01 10:00", tz="UTC"), pd.Timestamp("2026-05-02 10:00", tz="UTC")
NAN = float("nan")
# transaction, day, customer, champion (p, decision), challenger (p, decision), label
LOG = [
    ("t0", D1, "c1", 0.90, "block", 0.95, "block", 1),
    ("t1", D1, "c2", 0.40, "review", 0.50, "review", 0),
    ("t2", D1, "c3", 0.30, "approve", 0.60, "review", 1),
    ("t3", D2, "c4", 0.10, "approve", 0.10, "approve", 0),
    ("t4", D2, "c5", 0.05, "approve", 0.05, "approve", 0),
    ("t5", D2, "c1", 0.30, "approve", 0.20, "approve", 0),
    ("t6", D2, "c6", 0.20, "review", 0.70, "block", NAN),
    ("t7", D2, "c7", 0.95, "block", 0.02, "approve", NAN),
]


def pairs() -> pd.DataFrame:
    frame = pd.DataFrame(
        LOG,
        columns=[
            "transaction_id",
            "event_timestamp",
            "customer_id",
            "champion_probability",
            "champion_decision",
            "challenger_probability",
            "challenger_decision",
            "is_fraud",
        ],
    )
    return frame.assign(
        prediction_id=[f"p{i}" for i in range(len(frame))],
        amount=50.0,
        champion_version="1",
        challenger_version="2",
        is_fraud=frame["is_fraud"].astype(float),
        label_timestamp=pd.NaT,
    )


def test_the_comparison_equals_a_hand_computation() -> None:
    result = compare_pairs(pairs(), D1.floor("D"), D2.ceil("D"), resamples=200, seed=0)
    assert (result.champion_version, result.challenger_version) == ("1", "2")
    assert (result.transactions, result.labelled, result.frauds) == (8, 6, 2)
    assert result.decision_agreement == 5 / 8
    assert result.flips == {"approve->review": 1, "review->block": 1, "block->approve": 1}
    assert [e["transaction_id"] for e in result.flip_examples["block->approve"]] == ["t7"]
    assert result.flip_examples["block->approve"][0]["is_fraud"] is None
    assert result.decision_mix == {
        "champion": {"approve": 4 / 8, "review": 2 / 8, "block": 2 / 8},
        "challenger": {"approve": 4 / 8, "review": 2 / 8, "block": 2 / 8},
    }
    assert result.score_mean_abs_difference == pytest.approx(1.98 / 8)
    assert result.score_max_abs_difference == pytest.approx(0.93)

    champion, challenger = result.point("champion"), result.point("challenger")
    # positives 0.9, 0.3 against negatives 0.4, 0.1, 0.05, 0.3: 4 + (0 + 1 + 1 + 0.5) of 8
    assert champion["roc_auc"] == pytest.approx(6.5 / 8)
    assert challenger["roc_auc"] == 1.0
    # thresholds 0.9 (P 1, R .5), 0.4 (P .5, R .5), 0.3 (P .5, R 1): .5 * 1 + .5 * .5
    assert champion["average_precision"] == pytest.approx(0.75)
    assert challenger["average_precision"] == 1.0
    assert champion["brier"] == pytest.approx(0.7625 / 6)
    assert challenger["brier"] == pytest.approx(0.465 / 6)
    # fewer than 100 cards a day: day 1 finds c1 and c3 (2 / 100), day 2 none (c1 known)
    assert champion["card_precision_at_100"] == pytest.approx(0.01)
    difference = result.metrics["difference"]["roc_auc"]
    assert difference.value == pytest.approx(1 - 6.5 / 8)
    for role in ("champion", "challenger"):
        for estimate in result.metrics[role].values():
            assert estimate.low <= estimate.value + 1e-12 <= estimate.high + 2e-12

    again = compare_pairs(pairs(), D1.floor("D"), D2.ceil("D"), resamples=200, seed=0)
    assert again.metrics == result.metrics  # seeded


def test_card_precision_at_one_by_hand() -> None:
    labelled = pairs().iloc[:6]
    days = pd.factorize(labelled["event_timestamp"].dt.floor("D"))[0]
    cards = pd.factorize(labelled["customer_id"])[0]
    ones = np.ones((1, 6))
    # day 1: c1 (0.9) is the riskiest and a fraud: 1; day 2: c1 is known, c4 (0.1) is not: 0
    got = weighted_card_precision_at_k(
        days,
        cards,
        labelled["is_fraud"].to_numpy(),
        labelled["champion_probability"].to_numpy(),
        ones,
        k=1,
    )
    assert got.tolist() == [0.5]


def test_no_labels_gives_no_quality_figures() -> None:
    unlabelled = pairs().assign(is_fraud=NAN)
    result = compare_pairs(unlabelled, D1, D2, resamples=10)
    assert result.metrics == {} and result.labelled == 0
    assert result.json().count("NaN") == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_metrics_equal_the_libraries_on_repeated_rows(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    labels = (rng.random(n) < 0.1).astype(float)
    scores = np.round(rng.random(n) * 0.5 + 0.4 * labels, 2)  # ties on purpose
    days = rng.integers(0, 3, n)
    cards = rng.integers(0, 60, n)
    weights = next(resample_weights(n, 5, seed))
    assert (weights.sum(axis=1) == n).all()
    auc = weighted_roc_auc(labels, scores, weights)
    ap = weighted_average_precision(labels, scores, weights)
    brier = weighted_brier(labels, scores, weights)
    cp = weighted_card_precision_at_k(days, cards, labels, scores, weights, k=10)
    for row in range(len(weights)):
        take = np.repeat(np.arange(n), weights[row])
        assert auc[row] == pytest.approx(roc_auc_score(labels[take], scores[take]))
        assert ap[row] == pytest.approx(average_precision_score(labels[take], scores[take]))
        assert brier[row] == pytest.approx(brier_score_loss(labels[take], scores[take]))
        frame = pd.DataFrame(
            {
                "timestamp": pd.Timestamp("2026-05-01", tz="UTC")
                + pd.to_timedelta(days[take], "D"),
                "customer_id": cards[take].astype(str),
                "is_fraud": labels[take],
            }
        )
        # distinct card scores, so that ties at the k-th card cannot differ
        distinct = scores[take] + cards[take] * 1e-7
        mine = weighted_card_precision_at_k(
            days, cards, labels, scores + cards * 1e-7, weights[row : row + 1], k=10
        )
        assert mine[0] == pytest.approx(evaluation.card_precision_at_k(frame, distinct, 10)[0])
    assert np.isfinite(cp).all()


def test_several_version_pairs_are_refused() -> None:
    mixed = pairs()
    mixed.loc[0, "challenger_version"] = "3"
    with pytest.raises(ValueError, match="one pair of versions at a time"):
        compare_pairs(mixed, D1, D2)
