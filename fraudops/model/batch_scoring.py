"""Batch scoring and backtests: a file of transactions scored offline by any registered
version, on the features the online path would have given each transaction.

    fraudops score tx.csv --model-uri models:/fraud-detector@challenger --out scores.parquet

Features are point in time, built with the functions that build the training tables
(:mod:`fraudops.features.build`): a transaction's customer activity comes from its
customer's transactions strictly before it in the offline store (plus the file's own
earlier ones), its terminal features from the terminal's daily row as of the start of its
day, counting only labels known then, and the request features from the same pure
function as the on-demand view. For a transaction already in the offline store they equal
the features training reads through Feast (tested); for a new one, those the scorer would
have computed with the store as it is, the file's transactions scored in time order.
Labels in the file are kept in the output but never used as features.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fraudops.core import contract as c
from fraudops.core.settings import Settings
from fraudops.features import maths as f

log = logging.getLogger(__name__)
Stage = Callable[[str], None]
OUTPUT_SUFFIXES = (".csv", ".parquet")


def point_in_time_features(
    settings: Settings, tx: pd.DataFrame, stage: Stage = lambda _: None
) -> pd.DataFrame:
    """Every feature of the feature views for ``tx`` (contract columns, any order), one row
    per transaction in ``tx``'s order, as of each transaction's time."""
    from fraudops.features.build import EVENT_TIMESTAMP, build_customer_tables, build_terminal_daily

    stage("reading the offline store's history")
    path = settings.transactions_path
    history = pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=list(tx.columns))
    new = tx[~tx[c.TRANSACTION_ID].isin(history[c.TRANSACTION_ID])]
    # the file's labels are not known to the online path: its new rows count as unlabelled
    new = new[list(c.TRANSACTION_COLUMNS)].assign(
        **{c.IS_FRAUD: np.nan, c.LABEL_TIMESTAMP: new[c.TIMESTAMP]}
    )
    if c.IS_FRAUD not in history:  # an unlabelled store
        history = history.assign(**{c.IS_FRAUD: np.nan, c.LABEL_TIMESTAMP: history[c.TIMESTAMP]})
    known = history[[*c.TRANSACTION_COLUMNS, *c.LABEL_COLUMNS]]
    combined = pd.concat([known, new], ignore_index=True) if len(new) else known
    combined = combined.astype({c.IS_FRAUD: np.float64})

    stage("customer activity (history before each transaction)")
    customers = combined[combined[c.CUSTOMER_ID].isin(tx[c.CUSTOMER_ID].unique())]
    activity, _ = build_customer_tables(customers)
    activity = activity.drop(columns=[c.CUSTOMER_ID, EVENT_TIMESTAMP]).set_index(c.TRANSACTION_ID)

    stage("terminal features (labels known at the start of each day)")
    # a terminal's rows depend only on its own transactions and labels, so the grid is
    # built for the file's terminals alone; it runs to the day of the file's last one
    terminals = combined[combined[c.TERMINAL_ID].isin(tx[c.TERMINAL_ID].unique())]
    daily = build_terminal_daily(
        terminals, settings.label_delay_days, through=tx[c.TIMESTAMP].max()
    )
    day = pd.DatetimeIndex(tx[c.TIMESTAMP]).floor("D")
    lookup = pd.DataFrame({c.TERMINAL_ID: tx[c.TERMINAL_ID].to_numpy(), EVENT_TIMESTAMP: day})
    lookup[EVENT_TIMESTAMP] = lookup[EVENT_TIMESTAMP].astype(daily[EVENT_TIMESTAMP].dtype)
    terminal = lookup.merge(daily, on=[c.TERMINAL_ID, EVENT_TIMESTAMP], how="left")

    time_us = f.to_micros(tx[c.TIMESTAMP])
    request = f.request_features(tx[c.AMOUNT].to_numpy(dtype=np.float64), time_us)
    out = pd.DataFrame(request)
    customer = activity.loc[tx[c.TRANSACTION_ID].to_numpy()].reset_index(drop=True)
    out = pd.concat(
        [out, customer, terminal[list(f.TERMINAL_FEATURES)].reset_index(drop=True)], axis=1
    )
    return out.astype(np.float64).fillna(f.MISSING_FEATURE_VALUE)


@dataclass(frozen=True)
class ScoredFile:
    path: Path
    rows: int
    model_version: str
    decisions: dict[str, int]


def score_file(
    settings: Settings,
    source: Path,
    model_uri: str,
    out: Path,
    with_features: bool = False,
    stage: Stage = lambda _: None,
) -> ScoredFile:
    """Validate ``source`` (the data contract), score it with ``model_uri`` on point-in-time
    features, write CSV or parquet (by ``out``'s suffix) in the file's row order."""
    from fraudops.data.ingest import read_table, validate_transactions, write_parquet_atomic
    from fraudops.model import registry

    if out.suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"--out must end in .csv or .parquet, got {out.name}")
    stage(f"validating {source.name}")
    tx = validate_transactions(
        read_table(source),
        name=source.name,
        label_delay=pd.Timedelta(days=settings.label_delay_days),
        in_file_order=True,
    )
    if tx.empty:
        raise ValueError(f"{source} holds no transactions")
    stage(f"loading {model_uri}")
    loaded = registry.load_uri(registry.configure(settings), model_uri)
    model = loaded.model
    features = point_in_time_features(settings, tx, stage)
    missing = [name for name in model.feature_names if name not in features.columns]
    if missing:
        raise ValueError(
            f"{model_uri} (v{loaded.version}) expects features the feature views do not "
            f"provide: {', '.join(missing)}; score it with the feature repository it was "
            "trained with"
        )
    stage(f"scoring {len(tx):,} transactions with v{loaded.version}")
    matrix = features[model.feature_names].to_numpy()
    probability = model.predict_proba(matrix)
    decision = model.decide(probability, settings.review_threshold, settings.block_threshold)
    result = tx[[col for col in (*c.TRANSACTION_COLUMNS, c.IS_FRAUD) if col in tx]].copy()
    result["fraud_probability"] = probability
    result["decision"] = decision
    result["model_version"] = loaded.version
    if with_features:
        result = pd.concat([result, features[model.feature_names]], axis=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        write_parquet_atomic(result, out)
    else:
        result.to_csv(out, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
    counts = pd.Series(decision).value_counts()
    mix = {d: int(counts.get(d, 0)) for d in ("approve", "review", "block")}
    return ScoredFile(out, len(result), loaded.version, mix)
