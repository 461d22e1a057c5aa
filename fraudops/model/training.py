"""Training: a point-in-time training set from Feast, LightGBM with early stopping,
isotonic calibration, Handbook-style evaluation, all tracked in MLflow.

    fraudops train [--train-start 2026-07-01 --train-days 7 --delay-days 7 --test-days 7]

Protocol (Fraud Detection Handbook, chapter 5): a training period, then a gap as long as
the label delay (labels of the last training days are not known before it ends), then a
test period. No random split. The last days of the training period are held out for early
stopping and calibration, so the calibrator is fitted on data the booster did not see.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from fraudops.core import contract as c
from fraudops.core.settings import Settings
from fraudops.model import evaluation
from fraudops.model.fraud_model import FraudModel, IsotonicCalibrator, ModelMetadata

log = logging.getLogger(__name__)
Stage = Callable[[str], None]

LGBM_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 20,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "metric": "average_precision",
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
    "verbose": -1,
}
MAX_ROUNDS = 2000
EARLY_STOPPING_ROUNDS = 100
REFERENCE_SAMPLE_ROWS = 5000


@dataclass(frozen=True)
class Windows:
    train_start: pd.Timestamp
    valid_start: pd.Timestamp
    train_end: pd.Timestamp  # exclusive
    test_start: pd.Timestamp
    test_end: pd.Timestamp  # exclusive

    def as_params(self) -> dict[str, str]:
        return {k: v.date().isoformat() for k, v in asdict(self).items()}


@dataclass(frozen=True)
class LabelledHistory:
    """What planning the windows needs to know of the labelled transactions, as of a
    time: their first and last times, the last whose label was known then and the first
    whose label was still to come (None when there is none)."""

    first: pd.Timestamp
    last: pd.Timestamp
    last_known: pd.Timestamp | None
    first_pending: pd.Timestamp | None

    @classmethod
    def of(cls, tx: pd.DataFrame, now: pd.Timestamp) -> LabelledHistory:
        times = tx[c.TIMESTAMP]
        known = tx[c.LABEL_TIMESTAMP] <= now
        return cls(
            times.min(),
            times.max(),
            times[known].max() if known.any() else None,
            times[~known].min() if not known.all() else None,
        )


def plan_windows(
    tx: pd.DataFrame | LabelledHistory,
    train_start: date | None,
    train_days: int,
    delay_days: int,
    test_days: int,
    now: pd.Timestamp | None = None,
) -> Windows:
    """The training, validation and test windows; by default the latest whose test labels
    are all known now: the test window ends with the last day before the first transaction
    whose label is still to come (later known labels would leave earlier frauds counted as
    legitimate). ``tx``: the labelled transactions, or their :class:`LabelledHistory` as
    of ``now`` (:func:`labelled_history`, without reading them)."""
    day = pd.Timedelta(days=1)
    now = now or pd.Timestamp.now(tz="UTC")
    history = tx if isinstance(tx, LabelledHistory) else LabelledHistory.of(tx, now)
    if train_start is None:
        if history.last_known is None:
            raise ValueError("no transaction has a known label yet: nothing to train on")
        test_end = (
            history.first_pending.floor("D")
            if history.first_pending is not None
            else history.last_known.floor("D") + day
        )
        start = test_end - (train_days + delay_days + test_days) * day
    else:
        start = pd.Timestamp(train_start, tz="UTC")
    valid_days = max(1, round(train_days * 0.25))
    if train_days - valid_days < 1:
        raise ValueError("--train-days must be at least 2 (one to fit, one to validate)")
    train_end = start + train_days * day
    test_start = train_end + delay_days * day
    windows = Windows(
        start, train_end - valid_days * day, train_end, test_start, test_start + test_days * day
    )
    first, last = history.first, history.last
    if windows.train_start < first.floor("D") or windows.test_end > last.floor("D") + day:
        raise ValueError(
            f"windows {windows.as_params()} fall outside the data ({first.date()} to "
            f"{last.date()}); choose --train-start and day counts inside it"
        )
    return windows


def split(
    frame: pd.DataFrame, w: Windows, now: pd.Timestamp | None = None
) -> dict[str, pd.DataFrame]:
    """Fit, validation and test rows. Training rows must have their label known when the
    test period starts; test rows, when given, ``now`` (a test window chosen by hand can
    reach days whose frauds are not reported yet)."""
    t = frame[c.TIMESTAMP]
    known = frame[c.LABEL_TIMESTAMP] <= w.test_start
    test = (t >= w.test_start) & (t < w.test_end)
    if now is not None:
        test &= frame[c.LABEL_TIMESTAMP] <= now
    return {
        "fit": frame[(t >= w.train_start) & (t < w.valid_start) & known],
        "valid": frame[(t >= w.valid_start) & (t < w.train_end) & known],
        "test": frame[test],
    }


def fit_model(
    fit: pd.DataFrame,
    valid: pd.DataFrame,
    names: list[str],
    feature_service: str,
    seed: int,
    on_round: Callable[[int], None] | None = None,
) -> tuple[FraudModel, dict[str, Any]]:
    params = {**LGBM_PARAMS, "seed": seed}
    train_set = lgb.Dataset(fit[names].to_numpy(), fit[c.IS_FRAUD].to_numpy(), feature_name=names)
    valid_set = lgb.Dataset(
        valid[names].to_numpy(), valid[c.IS_FRAUD].to_numpy(), reference=train_set
    )
    callbacks: list[Callable[..., Any]] = [lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)]
    if on_round:
        callbacks.append(lambda env: on_round(env.iteration + 1))
    booster = lgb.train(params, train_set, MAX_ROUNDS, valid_sets=[valid_set], callbacks=callbacks)
    booster = booster.model_from_string(
        booster.model_to_string(num_iteration=booster.best_iteration)
    )
    raw_valid = np.asarray(booster.predict(valid[names].to_numpy(), raw_score=True))
    calibrator = IsotonicCalibrator.fit(raw_valid, valid[c.IS_FRAUD].to_numpy())
    review, block = evaluation.choose_thresholds(
        valid[c.IS_FRAUD].to_numpy(), calibrator(raw_valid)
    )
    model = FraudModel(booster, calibrator, ModelMetadata(feature_service, names, review, block))
    return model, {**params, "best_iteration": booster.current_iteration()}


def isolation_forest_scores(
    fit: pd.DataFrame, test: pd.DataFrame, names: list[str], seed: int
) -> np.ndarray:
    """Unsupervised baseline on the same features; labels are only used to evaluate it."""
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(n_estimators=200, random_state=seed, n_jobs=2).fit(fit[names])
    anomaly = -forest.score_samples(test[names])
    return (anomaly - anomaly.min()) / max(anomaly.max() - anomaly.min(), 1e-12)


@dataclass
class TrainReport:
    run_id: str
    model_version: str
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    windows: dict[str, str]
    rows: dict[str, int]
    seconds: float


def train(
    settings: Settings,
    *,
    train_start: date | None = None,
    train_days: int | None = None,
    delay_days: int | None = None,
    test_days: int | None = None,
    seed: int | None = None,
    stage: Stage = lambda _: None,
    on_round: Callable[[int], None] | None = None,
    shuffle_labels: bool = False,
) -> TrainReport:
    """Train, evaluate and register a model. ``shuffle_labels`` trains on permuted labels:
    a deliberately useless model, for testing the promotion gate."""
    import matplotlib.pyplot as plt
    import mlflow

    from fraudops.features.feast_store import apply_definitions, feature_service, get_store
    from fraudops.features.offline import offline_features
    from fraudops.model import registry

    started = time.monotonic()
    seed = settings.seed if seed is None else seed
    now = pd.Timestamp.now(tz="UTC")
    windows = plan_windows(
        labelled_history(settings, now),
        train_start if train_start is not None else settings.train_start,
        train_days or settings.train_days,
        settings.delay_days if delay_days is None else delay_days,
        test_days or settings.test_days,
        now=now,
    )
    stage(f"point-in-time features for {windows.train_start.date()} to {windows.test_end.date()}")
    store = get_store()
    apply_definitions(store)
    service = feature_service(store)
    window_tx = read_labelled(settings, windows.train_start, windows.test_end)
    frame = offline_features(store, service, window_tx)
    names = [n for n in frame.columns if n not in window_tx.columns]
    parts = split(frame, windows, now)
    if shuffle_labels:
        rng = np.random.default_rng(seed)
        for part in ("fit", "valid"):
            parts[part] = parts[part].assign(
                **{c.IS_FRAUD: rng.permutation(parts[part][c.IS_FRAUD].to_numpy())}
            )
    for part, rows in parts.items():
        if rows[c.IS_FRAUD].sum() == 0:
            raise ValueError(
                f"the {part} window has no fraud: widen the windows ({windows.as_params()})"
            )

    stage("training LightGBM")
    model, params = fit_model(parts["fit"], parts["valid"], names, service.name, seed, on_round)
    stage("evaluating on the test period")
    probability = model.predict_proba(parts["test"][names].to_numpy())
    metrics = evaluation.evaluate(parts["test"], probability)
    baseline = evaluation.evaluate(
        parts["test"], isolation_forest_scores(parts["fit"], parts["test"], names, seed)
    )
    baseline.pop("brier")  # anomaly scores are not probabilities

    stage("logging to MLflow")
    client = registry.configure(settings)
    experiment = registry.experiment_id(settings)
    rows = {part: len(df) for part, df in parts.items()}
    common = {**windows.as_params(), "feature_service": service.name, "seed": seed}
    with mlflow.start_run(experiment_id=experiment, run_name="isolation-forest-baseline"):
        mlflow.log_params({**common, "model": "IsolationForest", "n_estimators": 200})
        mlflow.log_metrics(baseline)
        mlflow.set_tag("fraudops.role", "baseline")
    with mlflow.start_run(experiment_id=experiment, run_name="lightgbm") as run:
        mlflow.log_params({**common, **{k: v for k, v in params.items() if k != "metric"}})
        mlflow.log_params({f"rows_{k}": v for k, v in rows.items()})
        mlflow.log_metrics(metrics)
        mlflow.log_metrics({f"baseline_{k}": v for k, v in baseline.items()})
        # shown in the MLflow UI's runs table; the record that is read back is the model's
        # own metadata.json (registry.metadata_of)
        mlflow.log_metrics(
            {
                "review_threshold": model.metadata.review_threshold,
                "block_threshold": model.metadata.block_threshold,
            }
        )
        mlflow.set_tags({"fraudops.role": "model", "feature_service": service.name})
        importance = pd.Series(model.booster.feature_importance("gain"), index=names)
        for name, figure in evaluation.plots(
            parts["test"][c.IS_FRAUD].to_numpy(), probability, importance
        ).items():
            mlflow.log_figure(figure, f"plots/{name}")
            plt.close(figure)
        log_reference_sample(parts, names, model, seed)
        info = registry.log_model(model, parts["fit"][names].head(5), settings.model_name)
        version = str(info.registered_model_version)
        registry.set_alias(client, settings.model_name, registry.CHALLENGER, version)
        registry.tag_version(
            client,
            settings.model_name,
            version,
            {
                "feature_service": service.name,
                "train_start": windows.as_params()["train_start"],
                **{f"test_{k}": round(v, 6) for k, v in metrics.items()},
            },
        )
    return TrainReport(
        run.info.run_id,
        version,
        metrics,
        baseline,
        windows.as_params(),
        rows,
        time.monotonic() - started,
    )


def log_reference_sample(
    parts: dict[str, pd.DataFrame], names: list[str], model: FraudModel, seed: int
) -> None:
    """Training-time features and scores: the reference the drift monitor compares with."""
    import mlflow

    reference = pd.concat([parts["fit"], parts["valid"]])
    sample = reference.sample(min(REFERENCE_SAMPLE_ROWS, len(reference)), random_state=seed)
    out = sample[[c.TRANSACTION_ID, c.TIMESTAMP, c.IS_FRAUD, *names]].copy()
    out["fraud_probability"] = model.predict_proba(sample[names].to_numpy())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference.parquet"
        out.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), "reference")


def labelled_source(settings: Settings) -> Path:
    """The ingested transactions, checked: there, and with labels."""
    import pyarrow.parquet as pq

    path = settings.transactions_path
    if not path.exists():
        raise FileNotFoundError(f"no ingested transactions at {path}; run `fraudops ingest PATH`")
    if c.IS_FRAUD not in pq.read_schema(path).names:
        raise ValueError(f"{path} has no {c.IS_FRAUD} column: training needs labelled history")
    return path


def labelled_history(settings: Settings, now: pd.Timestamp) -> LabelledHistory:
    """The :class:`LabelledHistory` of the ingested transactions as of ``now``, from one
    aggregate query over the file (by Spark with ``FRAUDOPS_OFFLINE_STORE=spark``, over
    ``<offline_uri>/transactions.parquet``): no process holds the transactions."""
    if settings.offline_store == "spark":
        from fraudops.features.spark_build import labelled_extent

        first, last, last_known, first_pending = labelled_extent(settings, now)
        if first is None or last is None:
            raise ValueError(f"no labelled transaction in {settings.spark_transactions_uri}")
        return LabelledHistory(first, last, last_known, first_pending)
    import duckdb

    from fraudops.features.build import utc_timestamp

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    ts, label = c.TIMESTAMP, c.LABEL_TIMESTAMP
    row = con.execute(
        f"SELECT min({ts}), max({ts}), max({ts}) FILTER ({label} <= $now), "
        f"min({ts}) FILTER (NOT coalesce({label} <= $now, false)) "
        f"FROM read_parquet($path) WHERE {c.IS_FRAUD} IS NOT NULL",
        {"path": str(labelled_source(settings)), "now": now.to_pydatetime()},
    ).fetchone()
    con.close()
    first, last, last_known, first_pending = (
        None if value is None else utc_timestamp(value) for value in row or (None,) * 4
    )
    if first is None or last is None:
        raise ValueError(f"no labelled transaction in {settings.transactions_path}")
    return LabelledHistory(first, last, last_known, first_pending)


def read_labelled(settings: Settings, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The labelled transactions of ``[start, end)``, read from the file without the
    rest of it (row groups outside the window are skipped, the others filtered as read; by
    Spark with ``FRAUDOPS_OFFLINE_STORE=spark``)."""
    if settings.offline_store == "spark":
        from fraudops.features.spark_build import labelled_window

        return labelled_window(settings, start, end)
    tx = pd.read_parquet(
        labelled_source(settings),
        filters=[(c.TIMESTAMP, ">=", start), (c.TIMESTAMP, "<", end)],
    )
    return tx[tx[c.IS_FRAUD].notna()]


def report_json(report: TrainReport) -> str:
    return json.dumps(asdict(report), indent=2, default=str)
