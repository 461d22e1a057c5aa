"""Champion against challenger on the same live transactions: what the challenger, scored
in shadow, would have decided, and how well each ranks the transactions labelled since.

    fraudops compare --start 2026-09-01 --end 2026-09-08 [--json]

Reads the champion's and the challenger's results on the same transactions from the
prediction log (``predictions`` beside ``shadow_predictions``, see
:func:`read_shadow_pairs`) and the labels recorded since, and
summarises:

- score agreement (rank correlation, mean and largest absolute difference) and the share of
  transactions both models decide alike;
- decision flips (approve to block and so on) with counts and the largest examples;
- each model's decision mix;
- on the labelled transactions: ROC AUC, average precision, Brier score and the Handbook's
  card precision@100, each with a bootstrap 95 % confidence interval, and the same for the
  challenger-minus-champion difference (paired: both models on the same resample).

The summary is written to the challenger's registered version (tags ``live.*``) and logged
as an MLflow run, so the MLflow UI shows it where people promote. ``fraudops promote
--evidence live`` decides on the same figures.

The bootstrap resamples cards (customers), not transactions: a card's transactions are
not independent, and card precision@k counts cards. A resample draws the window's cards
with replacement; each card's transactions weigh as often as the card was drawn, and a card
drawn twice counts as two cards in the top k (as two copies of it would). Resampling
transactions instead keeps about 63 % of the distinct cards in each resample, so fewer
compromised cards reach the top k and the card precision interval fell below its own point.
Resamples are multinomial counts (``resamples`` rows of weights), so every metric is
computed for all resamples at once with weighted, vectorised formulas instead of a Python
loop per resample; with all weights 1 they equal scikit-learn's and
:func:`fraudops.model.evaluation.card_precision_at_k`, and with any weights they equal them
on the cards copied as the weights say (tested).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from fraudops.core import contract as c
from fraudops.core.db import labels, predictions, shadow_predictions
from fraudops.model import evaluation
from fraudops.model.fraud_model import DECISIONS

log = logging.getLogger(__name__)

RESAMPLES = 200
SEED = 0
CONFIDENCE = 0.95
CARD_K = 100
EXAMPLES_PER_FLIP = 3
_CHUNK_CELLS = 4_000_000  # bootstrap weights held at once (resamples x transactions)

METRICS = ("roc_auc", "average_precision", "brier", f"card_precision_at_{CARD_K}")
LABELS = {
    "roc_auc": "ROC AUC",
    "average_precision": "average precision",
    "brier": "Brier (lower is better)",
    f"card_precision_at_{CARD_K}": f"card precision@{CARD_K}",
}
HIGHER_IS_BETTER = {
    "roc_auc": True,
    "average_precision": True,
    "brier": False,
    f"card_precision_at_{CARD_K}": True,
}


# --- weighted metrics, one value per row of weights ------------------------------------------
def _groups(sorted_scores: np.ndarray) -> np.ndarray:
    """Start of each run of equal scores in a sorted array (ties share a threshold)."""
    return np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])


def weighted_roc_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of ``scores`` for each row of ``weights`` (resamples x transactions): the
    weighted share of (fraud, legitimate) pairs ranked right, ties counting half. NaN for
    a row without both classes."""
    order = np.argsort(scores, kind="stable")
    starts = _groups(scores[order])
    w = weights[:, order].astype(np.float64)
    y = labels[order].astype(bool)
    pos = np.add.reduceat(np.where(y, w, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(y, 0.0, w), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)
    return np.where((total_pos > 0) & (total_neg > 0), auc, np.nan)


def weighted_average_precision(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Average precision (scikit-learn's definition: precision at each distinct threshold,
    weighted by the recall it adds) for each row of ``weights``."""
    order = np.argsort(-scores, kind="stable")
    starts = _groups(scores[order])
    w = weights[:, order].astype(np.float64)
    y = labels[order].astype(bool)
    tp = np.cumsum(np.add.reduceat(np.where(y, w, 0.0), starts, axis=1), axis=1)
    fp = np.cumsum(np.add.reduceat(np.where(y, 0.0, w), starts, axis=1), axis=1)
    total_pos = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = tp / total_pos
    gained = np.diff(np.concatenate([np.zeros_like(recall[:, :1]), recall], axis=1), axis=1)
    ap = (gained * precision).sum(axis=1)
    has_both = (total_pos[:, 0] > 0) & (total_pos[:, 0] < w.sum(axis=1))
    return np.where(has_both, ap, np.nan)


def weighted_brier(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    w = weights.astype(np.float64)
    return (w @ (np.clip(scores, 0, 1) - labels) ** 2) / w.sum(axis=1)


def weighted_card_precision_at_k(
    days: np.ndarray,
    cards: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    card_weights: np.ndarray,
    k: int = CARD_K,
) -> np.ndarray:
    """The Handbook's card precision@k (see :func:`fraudops.model.evaluation.card_precision_at_k`)
    for each row of ``card_weights`` (resamples x cards: how many copies of each card the
    resample holds). A card's daily score is its highest score that day and each copy takes
    one of the k places; cards found compromised on earlier days drop out. ``days`` and
    ``cards`` are integer codes, one per transaction."""
    resamples = card_weights.shape[0]
    known = np.zeros_like(card_weights)  # copies of each card found compromised so far
    daily = []
    for day in np.unique(days):
        index = np.flatnonzero(days == day)
        index = index[np.argsort(cards[index], kind="stable")]
        starts = _groups(cards[index])
        codes = cards[index][starts]
        card_score = np.maximum.reduceat(scores[index], starts)
        card_fraud = np.maximum.reduceat(labels[index], starts) > 0
        order = np.argsort(-card_score, kind="stable")  # the riskiest first
        codes, card_fraud = codes[order], card_fraud[order]
        copies = card_weights[:, codes] - known[:, codes]
        before = np.cumsum(copies, axis=1) - copies
        found = np.clip(k - before, 0, copies) * card_fraud  # compromised copies in the top k
        daily.append(found.sum(axis=1) / k)
        known[:, codes] += found
    return np.mean(daily, axis=0) if daily else np.full(resamples, np.nan)


# --- the bootstrap -------------------------------------------------------------------------
def resample_weights(
    n: int, resamples: int, seed: int, row_cells: int | None = None
) -> Iterator[np.ndarray]:
    """Bootstrap resamples of ``n`` units (cards) as counts (how often each is drawn), in
    chunks of rows that keep memory bounded: a chunk holds at most ``_CHUNK_CELLS`` cells
    of rows ``row_cells`` wide (default ``n``; the transactions the counts expand to)."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, min(resamples, _CHUNK_CELLS // max(row_cells or n, 1)))
    done = 0
    while done < resamples:
        rows = min(per_chunk, resamples - done)
        drawn = rng.integers(0, n, size=(rows, n)) + (np.arange(rows) * n)[:, None]
        yield np.bincount(drawn.ravel(), minlength=rows * n).reshape(rows, n).astype(np.int32)
        done += rows


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def text(self, spec: str = ".3f", sep: str = " ") -> str:
        if np.isnan(self.value):
            return "n/a"
        return f"{self.value:{spec}}{sep}[{self.low:{spec}}, {self.high:{spec}}]"


def _interval(point: float, samples: np.ndarray, confidence: float) -> Estimate:
    finite = samples[np.isfinite(samples)]
    if np.isnan(point) or not len(finite):
        return Estimate(float(point), float("nan"), float("nan"))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Estimate(float(point), float(low), float(high))


def labelled_metrics(
    frame: pd.DataFrame,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
    k: int = CARD_K,
) -> dict[str, dict[str, Estimate]]:
    """Champion's, challenger's and the difference's (challenger minus champion) metrics
    with bootstrap intervals, on labelled pairs (:data:`PAIR_COLUMNS` with ``is_fraud``).
    The bootstrap draws cards (see the module's docstring)."""
    labels = frame[c.IS_FRAUD].to_numpy(dtype=np.float64)
    days = pd.factorize(frame["event_timestamp"].dt.floor("D"))[0]
    cards = pd.factorize(frame[c.CUSTOMER_ID])[0]
    scores = {
        role: frame[f"{role}_probability"].to_numpy(dtype=np.float64)
        for role in ("champion", "challenger")
    }
    cp_name = f"card_precision_at_{k}"
    # each takes the scores, the transactions' weights and the cards' (one row a resample)
    metric_fns: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
        "roc_auc": lambda s, w, _: weighted_roc_auc(labels, s, w),
        "average_precision": lambda s, w, _: weighted_average_precision(labels, s, w),
        "brier": lambda s, w, _: weighted_brier(labels, s, w),
        cp_name: lambda s, _, cw: weighted_card_precision_at_k(days, cards, labels, s, cw, k),
    }
    samples: dict[str, dict[str, list[np.ndarray]]] = {
        role: {name: [] for name in metric_fns} for role in scores
    }
    for card_weights in resample_weights(int(cards.max()) + 1, resamples, seed, len(frame)):
        weights = card_weights[:, cards]  # each transaction weighs as its card was drawn
        for role, s in scores.items():
            for name, fn in metric_fns.items():
                samples[role][name].append(fn(s, weights, card_weights))
    result: dict[str, dict[str, Estimate]] = {"champion": {}, "challenger": {}, "difference": {}}
    points = {}
    for role, s in scores.items():
        labelled = frame.assign(**{c.TIMESTAMP: frame["event_timestamp"]})
        full = evaluation.evaluate(labelled, s, k)
        points[role] = {
            "roc_auc": full["roc_auc"],
            "average_precision": full["average_precision"],
            "brier": full["brier"],
            cp_name: full[f"card_precision_at_{k}"],
        }
    for name in metric_fns:
        drawn = {role: np.concatenate(samples[role][name]) for role in scores}
        for role in scores:
            result[role][name] = _interval(points[role][name], drawn[role], confidence)
        result["difference"][name] = _interval(
            points["challenger"][name] - points["champion"][name],
            drawn["challenger"] - drawn["champion"],
            confidence,
        )
    return result


# --- the comparison ---------------------------------------------------------------------------
@dataclass
class Comparison:
    window_start: str
    window_end: str
    first_event: str  # the window's first and last transaction scored by both
    last_event: str
    champion_version: str
    challenger_version: str
    transactions: int
    labelled: int
    frauds: int
    decision_agreement: float
    score_rank_correlation: float
    score_mean_abs_difference: float
    score_max_abs_difference: float
    decision_mix: dict[str, dict[str, float]]
    flips: dict[str, int]  # "approve->block": count, decisions that differ only
    flip_examples: dict[str, list[dict[str, Any]]]
    metrics: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    resamples: int = RESAMPLES
    seed: int = SEED
    confidence: float = CONFIDENCE

    def point(self, role: str) -> dict[str, float]:
        """A model's point metrics, as :func:`fraudops.model.promotion.regressions` takes them."""
        return {name: e.value for name, e in self.metrics.get(role, {}).items()}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def compare_pairs(
    pairs: pd.DataFrame,
    start: datetime,
    end: datetime,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> Comparison:
    """The comparison of one champion and one challenger version on ``pairs`` (from
    :func:`read_shadow_pairs`). Pure: no I/O."""
    versions = pairs[["champion_version", "challenger_version"]].drop_duplicates()
    if len(versions) != 1:
        raise ValueError(
            "the pairs hold several champion/challenger versions "
            f"({versions.to_dict('records')}): compare one pair of versions at a time"
        )
    champion = pairs["champion_probability"].to_numpy(dtype=np.float64)
    challenger = pairs["challenger_probability"].to_numpy(dtype=np.float64)
    difference = np.abs(challenger - champion)
    same = pairs["champion_decision"].to_numpy() == pairs["challenger_decision"].to_numpy()
    flipped = pairs.assign(_d=difference)[~same]
    flips: dict[str, int] = {}
    examples: dict[str, list[dict[str, Any]]] = {}
    for (old, new), group in flipped.groupby(["champion_decision", "challenger_decision"]):
        key = f"{old}->{new}"
        flips[key] = len(group)
        largest = group.sort_values("_d", ascending=False, kind="stable").head(EXAMPLES_PER_FLIP)
        examples[key] = [
            {
                "transaction_id": row.transaction_id,
                "event_timestamp": row.event_timestamp.isoformat(),
                "amount": float(row.amount),
                "champion_probability": float(row.champion_probability),
                "challenger_probability": float(row.challenger_probability),
                "is_fraud": None if np.isnan(row.is_fraud) else int(row.is_fraud),
            }
            for row in largest.itertuples(index=False)
        ]
    mix: dict[str, dict[str, float]] = {
        role: {
            str(d): float((pairs[f"{role}_decision"] == d).mean()) if len(pairs) else float("nan")
            for d in DECISIONS
        }
        for role in ("champion", "challenger")
    }
    labelled = pairs[pairs[c.IS_FRAUD].notna()]
    frauds = int(labelled[c.IS_FRAUD].sum())
    metrics = (
        labelled_metrics(labelled, resamples, seed, confidence)
        if 0 < frauds < len(labelled)
        else {}
    )
    rank = (
        float(pd.Series(champion).corr(pd.Series(challenger), method="spearman"))
        if len(pairs) > 1
        else float("nan")
    )
    return Comparison(
        window_start=pd.Timestamp(start).isoformat(),
        window_end=pd.Timestamp(end).isoformat(),
        first_event=pairs["event_timestamp"].min().isoformat() if len(pairs) else "",
        last_event=pairs["event_timestamp"].max().isoformat() if len(pairs) else "",
        champion_version=str(versions.iloc[0, 0]) if len(versions) else "",
        challenger_version=str(versions.iloc[0, 1]) if len(versions) else "",
        transactions=len(pairs),
        labelled=len(labelled),
        frauds=frauds,
        decision_agreement=float(same.mean()) if len(pairs) else float("nan"),
        score_rank_correlation=rank,
        score_mean_abs_difference=float(difference.mean()) if len(pairs) else float("nan"),
        score_max_abs_difference=float(difference.max()) if len(pairs) else float("nan"),
        decision_mix=mix,
        flips=flips,
        flip_examples=examples,
        metrics=metrics,
        resamples=resamples,
        seed=seed,
        confidence=confidence,
    )


def load_pairs(
    settings: Any,
    start: datetime,
    end: datetime,
    challenger_version: str,
    champion_version: str | None,
) -> pd.DataFrame:
    """The pairs of the window, or a LookupError that says what the log does hold."""
    import sqlalchemy as sa

    from fraudops.core import db

    url = settings.resolved_database_url
    db.upgrade(url)
    engine = db.create_db_engine(url)
    try:
        pairs = read_shadow_pairs(engine, start, end, challenger_version, champion_version)
        if pairs.empty:
            with engine.connect() as conn:
                held = conn.execute(
                    sa.select(db.shadow_predictions.c.model_version).distinct()
                ).scalars()
                versions = sorted(map(str, held))
            scope = (
                f"v{challenger_version} against v{champion_version}"
                if champion_version
                else f"v{challenger_version}"
            )
            raise LookupError(
                f"no shadow results of {scope} from {start:%Y-%m-%d %H:%M} to "
                f"{end:%Y-%m-%d %H:%M} (the log holds shadow results of "
                f"{', '.join('v' + v for v in versions) or 'no version'}): score traffic with "
                "FRAUDOPS_SHADOW=true while the version is @challenger, or widen the window"
            )
        return pairs
    finally:
        engine.dispose()


def compare(
    settings: Any,
    start: datetime,
    end: datetime,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    record_to_mlflow: bool = True,
) -> Comparison:
    """Compare the current @champion and @challenger on the window's live transactions;
    record the summary on the challenger's version unless told not to."""
    from fraudops.model import registry

    client = registry.configure(settings)
    name = settings.model_name
    challenger = registry.version_for(client, name, registry.CHALLENGER)
    if challenger is None:
        raise LookupError(
            f"no version of {name} has alias @{registry.CHALLENGER}: run `fraudops "
            "train` (or `fraudops retrain`)"
        )
    champion = registry.version_for(client, name, registry.CHAMPION)
    if champion is not None and str(champion.version) == str(challenger.version):
        raise LookupError(
            f"v{challenger.version} is both @champion and @challenger: nothing to compare "
            "until a new version is trained"
        )
    pairs = load_pairs(
        settings,
        start,
        end,
        str(challenger.version),
        None if champion is None else str(champion.version),
    )
    result = compare_pairs(pairs, start, end, resamples, seed)
    if record_to_mlflow:
        record(settings, client, result)
    return result


# --- MLflow ------------------------------------------------------------------------------------
def summary_tags(result: Comparison) -> dict[str, str]:
    """The comparison as tags of the challenger's version (what the MLflow UI lists)."""
    tags = {
        "live.window": f"{result.first_event}/{result.last_event}",
        "live.compared_with": result.champion_version,
        "live.transactions": str(result.transactions),
        "live.labelled": str(result.labelled),
        "live.frauds": str(result.frauds),
        "live.decision_agreement": f"{result.decision_agreement:.4f}",
        "live.score_rank_correlation": f"{result.score_rank_correlation:.4f}",
        "live.flips": json.dumps(result.flips),
        "live.decision_mix": json.dumps(
            {
                role: {d: round(v, 4) for d, v in mix.items()}
                for role, mix in result.decision_mix.items()
            }
        ),
    }
    for role, metrics in result.metrics.items():
        for name, estimate in metrics.items():
            tags[f"live.{role}.{name}"] = estimate.text(".4f")
    return tags


def summary_metrics(result: Comparison) -> dict[str, float]:
    values: dict[str, float] = {
        "transactions": result.transactions,
        "labelled": result.labelled,
        "frauds": result.frauds,
        "decision_agreement": result.decision_agreement,
        "score_rank_correlation": result.score_rank_correlation,
        "score_mean_abs_difference": result.score_mean_abs_difference,
        **{f"flips_{k.replace('->', '_to_')}": v for k, v in result.flips.items()},
        **{
            f"{role}_{d}_share": v
            for role, mix in result.decision_mix.items()
            for d, v in mix.items()
        },
    }
    for role, metrics in result.metrics.items():
        for name, e in metrics.items():
            values.update(
                {
                    f"{role}_{name}": e.value,
                    f"{role}_{name}_low": e.low,
                    f"{role}_{name}_high": e.high,
                }
            )
    return {k: float(v) for k, v in values.items() if np.isfinite(v)}


def record(settings: Any, client: Any, result: Comparison) -> str:
    """Log the comparison as an MLflow run and tag the challenger's version with it; the
    run's id."""
    import mlflow

    from fraudops.model import registry

    experiment = registry.experiment_id(settings)
    run_name = f"live v{result.challenger_version} vs v{result.champion_version}"
    with mlflow.start_run(experiment_id=experiment, run_name=run_name) as run:
        mlflow.set_tags(
            {
                "fraudops.role": "live-comparison",
                "challenger_version": result.challenger_version,
                "champion_version": result.champion_version,
            }
        )
        mlflow.log_params(
            {
                "window_start": result.window_start,
                "window_end": result.window_end,
                "resamples": result.resamples,
                "seed": result.seed,
                "confidence": result.confidence,
            }
        )
        mlflow.log_metrics(summary_metrics(result))
        mlflow.log_dict(json.loads(result.json()), "live_comparison.json")
    registry.tag_version(
        client,
        settings.model_name,
        result.challenger_version,
        {**summary_tags(result), "live.run_id": run.info.run_id},
    )
    log.info("recorded the comparison on v%s (run %s)", result.challenger_version, run.info.run_id)
    return str(run.info.run_id)


# --- for people -------------------------------------------------------------------------------
def render(result: Comparison, console: Any) -> None:
    """The comparison as rich tables."""
    from rich.table import Table

    console.print(
        f"[bold]@challenger v{result.challenger_version} against @champion "
        f"v{result.champion_version}[/], live transactions {result.first_event} to "
        f"{result.last_event}: {result.transactions:,} scored by both, {result.labelled:,} "
        f"labelled ({result.frauds:,} frauds)"
    )
    agreement = Table(title="Agreement", show_header=False)
    agreement.add_row("same decision", f"{result.decision_agreement:.2%}")
    agreement.add_row("score rank correlation", f"{result.score_rank_correlation:.3f}")
    agreement.add_row("mean |score difference|", f"{result.score_mean_abs_difference:.4f}")
    agreement.add_row("largest |score difference|", f"{result.score_max_abs_difference:.4f}")
    console.print(agreement)

    mix = Table(title="Decision mix")
    mix.add_column("decision")
    mix.add_column("champion", justify="right")
    mix.add_column("challenger", justify="right")
    for d in DECISIONS:
        mix.add_row(
            d,
            f"{result.decision_mix['champion'][d]:.2%}",
            f"{result.decision_mix['challenger'][d]:.2%}",
        )
    console.print(mix)

    if result.flips:
        flips = Table(title="Decision flips (champion -> challenger), largest changes first")
        for column in ("flip", "count", "transaction", "champion", "challenger", "label"):
            flips.add_column(column)
        for key, count in sorted(result.flips.items(), key=lambda kv: -kv[1]):
            for i, ex in enumerate(result.flip_examples.get(key, [])):
                label = (
                    "unknown"
                    if ex["is_fraud"] is None
                    else ("fraud" if ex["is_fraud"] else "legitimate")
                )
                flips.add_row(
                    key if i == 0 else "",
                    f"{count:,}" if i == 0 else "",
                    ex["transaction_id"],
                    f"{ex['champion_probability']:.3f}",
                    f"{ex['challenger_probability']:.3f}",
                    label,
                )
        console.print(flips)
    else:
        console.print("No decision flips.")

    if not result.metrics:
        console.print(
            "No labelled transactions with both classes yet: quality figures come once "
            "labels arrive (`fraudops labels ingest`)."
        )
        return
    quality = Table(
        title=f"Labelled transactions ({result.confidence:.0%} bootstrap intervals, "
        f"{result.resamples} resamples)"
    )
    quality.add_column("metric")
    for column in ("champion", "challenger", "challenger - champion"):
        quality.add_column(column, justify="right")
    for name in METRICS:
        if name in result.metrics["champion"]:
            quality.add_row(
                LABELS[name],
                result.metrics["champion"][name].text(sep="\n"),
                result.metrics["challenger"][name].text(sep="\n"),
                result.metrics["difference"][name].text("+.3f", sep="\n"),
            )
    console.print(quality)


PAIR_COLUMNS = (
    "transaction_id",
    "prediction_id",
    "event_timestamp",
    "customer_id",
    "amount",
    "champion_version",
    "champion_probability",
    "champion_decision",
    "challenger_version",
    "challenger_probability",
    "challenger_decision",
    "is_fraud",
    "label_timestamp",
)


def read_shadow_pairs(
    engine: sa.Engine,
    start: datetime,
    end: datetime,
    challenger_version: str | None = None,
    champion_version: str | None = None,
) -> Any:
    """Champion and shadow results on the same transactions with event time in
    ``[start, end)``, one row per transaction (the latest if it was scored twice) and
    challenger version, with the label where one was recorded (``is_fraud`` NaN: none yet).
    Columns: :data:`PAIR_COLUMNS`."""
    p, s, lab = predictions.c, shadow_predictions.c, labels.c
    query = (
        sa.select(
            p.transaction_id,
            p.prediction_id,
            p.event_timestamp,
            p.customer_id,
            p.amount,
            p.model_version,
            p.fraud_probability,
            p.decision,
            s.model_version,
            s.fraud_probability,
            s.decision,
            lab.is_fraud,
            lab.label_timestamp,
            p.scored_at,
        )
        .select_from(
            predictions.join(shadow_predictions, s.prediction_id == p.prediction_id).outerjoin(
                labels, lab.transaction_id == p.transaction_id
            )
        )
        .where(p.event_timestamp >= start, p.event_timestamp < end)
    )
    if challenger_version is not None:
        query = query.where(s.model_version == challenger_version)
    if champion_version is not None:
        query = query.where(p.model_version == champion_version)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    frame = pd.DataFrame(rows, columns=[*PAIR_COLUMNS, "scored_at"])
    for column in ("event_timestamp", "label_timestamp", "scored_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    frame["is_fraud"] = pd.to_numeric(frame["is_fraud"]).astype(np.float64)
    frame = (
        frame.sort_values(["scored_at", "prediction_id"], kind="stable")
        .drop_duplicates(["transaction_id", "challenger_version"], keep="last")
        .drop(columns="scored_at")
        .sort_values(["event_timestamp", "transaction_id"], kind="stable")
        .reset_index(drop=True)
    )
    return frame.astype(
        {
            "champion_probability": np.float64,
            "challenger_probability": np.float64,
            "amount": np.float64,
            "champion_version": str,
            "challenger_version": str,
        }
    )
