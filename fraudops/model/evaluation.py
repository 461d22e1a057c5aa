"""How fraud teams evaluate a model: threshold-free ranking metrics, calibration, and the
Fraud Detection Handbook's card precision@k (what a team of investigators checking k cards
a day would find). Pure functions, plus the plots logged with each run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
)

from fraudops.core import contract as c


def precision_at_recall(labels: np.ndarray, scores: np.ndarray, recall: float = 0.70) -> float:
    """Best precision among thresholds that catch at least ``recall`` of the frauds."""
    precision, achieved, _ = precision_recall_curve(labels, scores)
    ok = achieved >= recall
    return float(precision[ok].max()) if ok.any() else 0.0


def card_precision_at_k(
    frame: pd.DataFrame, scores: np.ndarray, k: int = 100
) -> tuple[float, list[float]]:
    """Mean over days of the share of truly compromised cards among the k riskiest cards.

    As in the Handbook: a card's daily score is its highest transaction score; cards found
    compromised on earlier days of the period are no longer counted (already blocked).
    """
    df = pd.DataFrame(
        {
            "day": frame[c.TIMESTAMP].dt.floor("D").to_numpy(),
            c.CUSTOMER_ID: frame[c.CUSTOMER_ID].to_numpy(),
            "score": scores,
            c.IS_FRAUD: frame[c.IS_FRAUD].to_numpy(),
        }
    )
    known: set[str] = set()
    daily: list[float] = []
    for _, day in df.groupby("day", sort=True):
        cards = day.groupby(c.CUSTOMER_ID).agg(score=("score", "max"), fraud=(c.IS_FRAUD, "max"))
        cards = cards[~cards.index.isin(known)]
        top = cards.nlargest(k, "score")
        daily.append(float(top["fraud"].sum()) / k)
        known.update(top.index[top["fraud"] == 1])
    return (float(np.mean(daily)) if daily else 0.0), daily


def evaluate(frame: pd.DataFrame, probability: np.ndarray, k: int = 100) -> dict[str, float]:
    """The metrics logged and compared for every model, on one labelled window."""
    labels = frame[c.IS_FRAUD].to_numpy()
    cp, _ = card_precision_at_k(frame, probability, k)
    both_classes = 0 < labels.sum() < len(labels)
    return {
        "roc_auc": float(roc_auc_score(labels, probability)) if both_classes else float("nan"),
        "average_precision": float(average_precision_score(labels, probability))
        if both_classes
        else float("nan"),
        "precision_at_recall_70": precision_at_recall(labels, probability, 0.70),
        "brier": float(brier_score_loss(labels, np.clip(probability, 0, 1))),
        f"card_precision_at_{k}": cp,
        "fraud_rate": float(labels.mean()) if len(labels) else float("nan"),
        "transactions": float(len(labels)),
    }


def choose_thresholds(labels: np.ndarray, probability: np.ndarray) -> tuple[float, float]:
    """Decision thresholds from validation data.

    block: the lowest probability at which at least 90 % of blocked transactions are fraud
    (never below 0.5); review: the lowest at which at least 30 % are (never below 0.05).
    """
    precision, _, thresholds = precision_recall_curve(labels, probability)

    def lowest(target: float, floor: float) -> float:
        ok = precision[:-1] >= target
        return float(max(thresholds[ok].min(), floor)) if ok.any() else 1.0

    block = min(lowest(0.90, 0.5), 0.99)
    review = min(lowest(0.30, 0.05), block)
    return review, block


def plots(labels: np.ndarray, probability: np.ndarray, importance: pd.Series) -> dict[str, Any]:
    """Matplotlib figures: PR curve, calibration curve, feature importance, score histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    figures: dict[str, Any] = {}
    fig, ax = plt.subplots(figsize=(5, 4))
    precision, recall, _ = precision_recall_curve(labels, probability)
    ax.plot(recall, precision)
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
    figures["pr_curve.png"] = fig

    fig, ax = plt.subplots(figsize=(5, 4))
    observed, predicted = calibration_curve(labels, probability, n_bins=10, strategy="quantile")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.plot(predicted, observed, marker="o")
    ax.set(xlabel="predicted probability", ylabel="observed fraud rate", title="Calibration (test)")
    figures["calibration_curve.png"] = fig

    fig, ax = plt.subplots(figsize=(6, 7))
    importance.sort_values().plot.barh(ax=ax)
    ax.set(xlabel="gain", title="Feature importance")
    fig.tight_layout()
    figures["feature_importance.png"] = fig

    fig, ax = plt.subplots(figsize=(5, 4))
    bins = np.linspace(0, 1, 41).tolist()
    ax.hist(probability[labels == 0], bins=bins, alpha=0.6, label="legitimate", density=True)
    ax.hist(probability[labels == 1], bins=bins, alpha=0.6, label="fraud", density=True)
    ax.set(xlabel="fraud probability", ylabel="density", yscale="log", title="Scores by class")
    ax.legend()
    figures["score_histogram.png"] = fig
    return figures
