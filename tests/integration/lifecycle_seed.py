"""Seeding for the model lifecycle's tests: registered versions (metadata only, as
``compare`` and ``promote --evidence live`` read them) and a prediction log where the
@challenger was scored in shadow beside the @champion."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from fraudops.core import contract as c
from fraudops.core import db
from fraudops.core.settings import Settings

START = datetime(2026, 5, 10, tzinfo=UTC)


def seed_versions(settings: Settings, champion: str, challenger: str) -> None:
    """Versions 1.. up to the larger of the two, with the two aliases set."""
    from mlflow.exceptions import MlflowException

    from fraudops.model import registry

    client = registry.configure(settings)
    experiment = registry.experiment_id(settings)
    name = settings.model_name
    with contextlib.suppress(MlflowException):  # registered by an earlier call
        client.create_registered_model(name)
    existing = len(client.search_model_versions(f"name = '{name}'"))
    for _ in range(existing, max(int(champion), int(challenger))):
        run = client.create_run(experiment, run_name="lightgbm")
        client.set_terminated(run.info.run_id)
        client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    registry.set_alias(client, name, registry.CHAMPION, champion)
    registry.set_alias(client, name, registry.CHALLENGER, challenger)


def decide(p: np.ndarray) -> np.ndarray:
    return np.where(p >= 0.9, "block", np.where(p >= 0.3, "review", "approve"))


def seed_shadow_log(
    settings: Settings,
    count: int,
    champion: str,
    challenger: str,
    seed: int = 0,
    start: datetime = START,
    days: int = 2,
) -> pd.DataFrame:
    """``count`` transactions scored by the champion and, in shadow, by the challenger
    (a sharper model); returns them with their true label (not recorded yet)."""
    from fraudops.serving.prediction_log import insert_ignoring_duplicates, shadow_records

    rng = np.random.default_rng(seed)
    fraud = (rng.random(count) < 0.1).astype(int)
    champion_p = np.clip(0.15 + 0.35 * fraud + rng.normal(0, 0.2, count), 0.001, 0.999)
    challenger_p = np.clip(0.1 + 0.6 * fraud + rng.normal(0, 0.12, count), 0.001, 0.999)
    offsets = np.sort(rng.integers(0, days * 86400 * 1_000_000, count))
    times = start + pd.to_timedelta(offsets, unit="us")
    frame = pd.DataFrame(
        {
            "prediction_id": [f"{seed:04d}{i:028d}" for i in range(count)],
            "transaction_id": [f"live_{seed}_{i:06d}" for i in range(count)],
            "event_timestamp": times,
            "customer_id": [f"c_{i % 150:05d}" for i in range(count)],
            "champion_probability": champion_p,
            "challenger_probability": challenger_p,
            "is_fraud": fraud,
        }
    )
    scored_at = datetime.now(UTC)
    rows = [
        {
            "prediction_id": r.prediction_id,
            "transaction_id": r.transaction_id,
            "event_timestamp": r.event_timestamp.to_pydatetime(),
            "scored_at": scored_at,
            "customer_id": r.customer_id,
            "terminal_id": "t_00001",
            "amount": 20.0,
            "features": {"tx_amount": 20.0},
            "fraud_probability": float(r.champion_probability),
            "decision": str(decide(np.array([r.champion_probability]))[0]),
            "reasons": [],
            "model_version": champion,
            "latency_ms": 1.0,
            "degraded": False,
            "source": "http",
        }
        for r in frame.itertuples(index=False)
    ]
    url = settings.resolved_database_url
    db.upgrade(url)
    engine = db.create_db_engine(url)
    insert_ignoring_duplicates(engine, db.predictions, rows)
    shadow = shadow_records(
        frame["prediction_id"].tolist(),
        frame["transaction_id"].tolist(),
        challenger,
        challenger_p,
        decide(challenger_p),
        scored_at,
    )
    insert_ignoring_duplicates(engine, db.shadow_predictions, shadow)
    engine.dispose()
    return frame


def record_labels_for(settings: Settings, frame: pd.DataFrame) -> None:
    from fraudops.data.labels import record_labels

    engine = db.create_db_engine(settings.resolved_database_url)
    labels = pd.DataFrame(
        {
            c.TRANSACTION_ID: frame["transaction_id"],
            c.IS_FRAUD: frame["is_fraud"].astype("int8"),
            c.LABEL_TIMESTAMP: frame["event_timestamp"] + timedelta(days=7),
        }
    )
    with engine.begin() as conn:
        record_labels(conn, labels, "file:chargebacks.csv", "bank-feed")
    engine.dispose()
