"""Monitoring: is the data drifting, is the model still right, is the scorer healthy?

    fraudops monitor --window 1d                       # the last day against the champion
    fraudops monitor --start 2026-05-13 --end 2026-05-14 --workspace data/evidently
    fraudops monitor --window 1d --every 1h            # on a schedule (APScheduler)
    evidently ui --workspace data/evidently            # browse the snapshots

One run reads a window of the prediction log and the champion's reference sample (the
training-time features and scores logged with the model in MLflow) and measures, with
Evidently: drift of every model feature, drift of the fraud probability and of the
decision mix, and, for the predictions whose labels have arrived, classification quality
(ROC AUC, precision and recall at the block threshold; average precision from
scikit-learn, which Evidently 0.7 does not compute). Latency and the degraded share come
from the log itself. The HTML reports and JSON snapshots go under
``<data_dir>/reports/monitoring/``; a summary row, the per-feature drift and any alerts go
to the database for the dashboard; alerts are logged and, if configured, POSTed to a
webhook.

Drift and quality are measured on the predictions of the monitored version (the
champion by default) only, since its reference describes that model; latency and the
degraded share cover every prediction in the window.

This is the one module that imports Evidently (lazily: the dashboard imports this
module for alert acknowledgement and should not pay for Evidently).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from fraudops.core import contract as c
from fraudops.core.db import (
    alerts,
    create_db_engine,
    feature_drift,
    labels,
    monitor_runs,
    predictions,
)
from fraudops.core.db import upgrade as upgrade_db
from fraudops.core.settings import MonitorSettings, Settings
from fraudops.model.fraud_model import DECISIONS, decide

log = logging.getLogger(__name__)
Stage = Callable[[str], None]

PROBABILITY = "fraud_probability"
DECISION = "decision"
REFERENCE_ARTIFACT = "reference/reference.parquet"
WORKSPACE_PROJECT = "fraudops"


# --- what a run looks at ----------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """``[start, end)`` in UTC, on the transactions' event time."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
            object.__setattr__(self, name, utc)
        if self.end <= self.start:
            raise ValueError(f"the window must end after it starts: {self.start} to {self.end}")

    @classmethod
    def last(cls, length: timedelta, now: datetime | None = None) -> Window:
        end = now or datetime.now(UTC)
        return cls(end - length, end)

    @property
    def slug(self) -> str:
        return f"{self.start:%Y%m%dT%H%M%SZ}_{self.end:%Y%m%dT%H%M%SZ}"

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"


@dataclass(frozen=True)
class Reference:
    """The monitored model version and what it was trained on."""

    model_name: str
    model_version: str
    run_id: str
    features: list[str]
    review_threshold: float
    block_threshold: float
    test_metrics: dict[str, float]
    frame: pd.DataFrame = field(repr=False)  # features, is_fraud, fraud_probability


def load_reference(settings: Settings, version: str | None = None) -> Reference:
    """The champion's (or ``version``'s) reference sample, feature list, thresholds and test
    metrics, from its MLflow run."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from fraudops.model import registry

    client = registry.configure(settings)
    name = settings.model_name
    if version is None:
        mv = registry.version_for(client, name, registry.CHAMPION)
        if mv is None:
            raise LookupError(
                f"no version of {name} has alias @{registry.CHAMPION}: train and promote a "
                "model first (fraudops train, fraudops promote)"
            )
    else:
        try:
            mv = client.get_model_version(name, version)
        except MlflowException:
            raise LookupError(f"{name} has no version {version}") from None
    run = client.get_run(mv.run_id)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=mv.run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=tmp
            )
            frame = pd.read_parquet(path)
        metadata = registry.metadata_of(client, name, str(mv.version))
    except (MlflowException, OSError) as exc:
        raise LookupError(
            f"{name} version {mv.version} (run {mv.run_id}) has no reference sample: it was "
            f"not trained by `fraudops train` ({str(exc).splitlines()[0][:200]})"
        ) from None
    review, block = metadata.thresholds(settings.review_threshold, settings.block_threshold)
    return Reference(
        model_name=name,
        model_version=str(mv.version),
        run_id=mv.run_id,
        features=list(metadata.feature_names),
        review_threshold=review,
        block_threshold=block,
        test_metrics={k: float(v) for k, v in run.data.metrics.items()},
        frame=frame,
    )


def read_window(engine: sa.Engine, window: Window, features: list[str]) -> pd.DataFrame:
    """The window's predictions (one per transaction: the latest if it was scored twice),
    their ``features`` as columns, and the label if one was recorded."""
    logged = (
        "transaction_id",
        "event_timestamp",
        "scored_at",
        "features",
        PROBABILITY,
        DECISION,
        "model_version",
        "latency_ms",
        "degraded",
    )
    query = (
        sa.select(
            *(predictions.c[name] for name in logged), labels.c.is_fraud, labels.c.label_timestamp
        )
        .select_from(
            predictions.outerjoin(labels, predictions.c.transaction_id == labels.c.transaction_id)
        )
        .where(
            predictions.c.event_timestamp >= window.start,
            predictions.c.event_timestamp < window.end,
        )
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    columns = [*logged, c.IS_FRAUD, c.LABEL_TIMESTAMP]
    frame = pd.DataFrame(rows, columns=columns)
    for column in ("event_timestamp", "scored_at", c.LABEL_TIMESTAMP):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    frame[c.IS_FRAUD] = pd.to_numeric(frame[c.IS_FRAUD]).astype(np.float64)  # NaN: no label
    frame = frame.sort_values("scored_at", kind="stable").drop_duplicates(
        "transaction_id", keep="last"
    )
    values = pd.DataFrame.from_records(frame.pop("features").tolist(), columns=features)
    frame = pd.concat([frame.reset_index(drop=True), values.astype(np.float64)], axis=1)
    return frame.astype({PROBABILITY: np.float64, "latency_ms": np.float64, "degraded": bool})


# --- the numbers ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    method: str
    score: float
    threshold: float
    drifted: bool
    counted: bool  # part of the drift share (not in drift_ignore_features)


@dataclass
class Quality:
    labelled: int
    frauds: int
    roc_auc: float
    average_precision: float
    precision_at_block: float
    recall_at_block: float


@dataclass
class Summary:
    """One monitor run's findings: a row of ``monitor_runs`` plus the per-feature drift."""

    window_start: datetime
    window_end: datetime
    model_name: str
    model_version: str
    reference_run_id: str
    window_predictions: int
    predictions: int
    labelled: int = 0
    frauds: int = 0
    approve_share: float | None = None
    review_share: float | None = None
    block_share: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    degraded_share: float | None = None
    features_checked: int = 0
    drifted_features: int | None = None
    drift_share: float | None = None
    score_drift: float | None = None
    decision_drift: float | None = None
    roc_auc: float | None = None
    average_precision: float | None = None
    precision_at_block: float | None = None
    recall_at_block: float | None = None
    reference_decision_mix: dict[str, float] = field(default_factory=dict)
    feature_drift: list[FeatureDrift] = field(default_factory=list)

    def top_drifted(self, n: int = 5) -> list[FeatureDrift]:
        drifted = [d for d in self.feature_drift if d.drifted and d.counted]
        return sorted(drifted, key=lambda d: -d.score)[:n]


def operational_stats(frame: pd.DataFrame) -> dict[str, float | None]:
    """Latency percentiles and degraded share over every prediction in the window."""
    if frame.empty:
        return dict.fromkeys(
            ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "degraded_share")
        )
    p50, p95, p99 = np.percentile(frame["latency_ms"].to_numpy(), [50, 95, 99])
    return {
        "latency_p50_ms": float(p50),
        "latency_p95_ms": float(p95),
        "latency_p99_ms": float(p99),
        "degraded_share": float(frame["degraded"].mean()),
    }


def decision_mix(decisions: pd.Series) -> dict[str, float]:
    shares = decisions.value_counts(normalize=True)
    return {d: float(shares.get(d, 0.0)) for d in DECISIONS}


# --- Evidently ------------------------------------------------------------------------------
@dataclass
class EvidentlyResult:
    drift: Any  # evidently Snapshot
    quality: Any | None  # evidently Snapshot, when labels with both classes arrived
    feature_drift: list[FeatureDrift]
    score_drift: float
    decision_drift: float
    quality_metrics: Quality | None


def run_evidently(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    features: list[str],
    thresholds: MonitorSettings,
    block_threshold: float,
    tags: dict[str, str] | None = None,
) -> EvidentlyResult:
    """Drift of ``features``, the fraud probability and the decision (current against
    reference, both with a ``decision`` column), and classification quality of the rows of
    ``current`` whose ``is_fraud`` is known."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import ClassificationPreset, DataDriftPreset
    from sklearn.metrics import average_precision_score

    columns = [*features, PROBABILITY, DECISION]
    definition = DataDefinition(
        numerical_columns=[*features, PROBABILITY], categorical_columns=[DECISION]
    )
    method = thresholds.drift_method
    drift_report = Report(
        [
            DataDriftPreset(
                columns=features,
                num_method=method,
                num_threshold=thresholds.drift_threshold,
                drift_share=thresholds.alert_drift_share,
            ),
            ValueDrift(column=PROBABILITY, method=method, threshold=thresholds.alert_score_drift),
            # wasserstein is for numbers only; the decision is a category
            ValueDrift(
                column=DECISION, method="jensenshannon", threshold=thresholds.drift_threshold
            ),
        ]
    )
    metadata = dict(tags or {})
    with warnings.catch_warnings():
        # A feature constant in a window (tx_is_weekend on a Tuesday) makes Evidently's
        # correlation widgets divide by zero; the drift numbers are unaffected.
        warnings.simplefilter("ignore", RuntimeWarning)
        drift = drift_report.run(
            current_data=Dataset.from_pandas(current[columns], data_definition=definition),
            reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
            metadata=metadata,
            tags=["drift"],
            name="drift",
        )
    values = _metric_values(drift.dict())
    ignored = set(thresholds.drift_ignore_features)
    per_feature = []
    for name in features:
        config, score = values[("ValueDrift", name)]
        threshold = float(config.get("threshold") or thresholds.drift_threshold)
        per_feature.append(
            FeatureDrift(
                name,
                str(config.get("method") or method),
                float(score),
                threshold,
                drifted=bool(score >= threshold),
                counted=name not in ignored,
            )
        )

    quality_snapshot, quality = None, None
    labelled = current[current[c.IS_FRAUD].notna()]
    if labelled[c.IS_FRAUD].nunique() == 2:
        frame = pd.DataFrame(
            {
                c.IS_FRAUD: labelled[c.IS_FRAUD].astype(int).to_numpy(),
                PROBABILITY: labelled[PROBABILITY].to_numpy(),
            }
        )
        task = BinaryClassification(target=c.IS_FRAUD, prediction_probas=PROBABILITY)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            quality_snapshot = Report([ClassificationPreset(probas_threshold=block_threshold)]).run(
                current_data=Dataset.from_pandas(
                    frame,
                    data_definition=DataDefinition(
                        numerical_columns=[PROBABILITY], classification=[task]
                    ),
                ),
                metadata=metadata,
                tags=["quality"],
                name="quality",
            )
        q = _metric_values(quality_snapshot.dict())
        quality = Quality(
            labelled=len(frame),
            frauds=int(frame[c.IS_FRAUD].sum()),
            roc_auc=float(q[("RocAuc", None)][1]),
            average_precision=float(average_precision_score(frame[c.IS_FRAUD], frame[PROBABILITY])),
            precision_at_block=float(q[("Precision", None)][1]),
            recall_at_block=float(q[("Recall", None)][1]),
        )
    return EvidentlyResult(
        drift=drift,
        quality=quality_snapshot,
        feature_drift=per_feature,
        score_drift=float(values[("ValueDrift", PROBABILITY)][1]),
        decision_drift=float(values[("ValueDrift", DECISION)][1]),
        quality_metrics=quality,
    )


def _metric_values(snapshot: dict[str, Any]) -> dict[tuple[str, str | None], tuple[dict, Any]]:
    """``{(metric type, column): (config, value)}`` from a snapshot's ``dict()``."""
    found: dict[tuple[str, str | None], tuple[dict, Any]] = {}
    for metric in snapshot["metrics"]:
        config = metric.get("config", {})
        kind = str(config.get("type", "")).rsplit(":", 1)[-1]
        found.setdefault((kind, config.get("column")), (config, metric.get("value")))
    return found


def save_reports(result: EvidentlyResult, directory: Path) -> dict[str, str]:
    """HTML reports and JSON snapshots; returns their paths by name."""
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    for name, snapshot in (("drift", result.drift), ("quality", result.quality)):
        if snapshot is None:
            continue
        html, snap = directory / f"{name}.html", directory / f"{name}.json"
        snapshot.save_html(str(html))
        snap.write_text(snapshot.json(), encoding="utf-8")
        paths[f"{name}_report_path"] = str(html)
    return paths


def add_to_workspace(result: EvidentlyResult, workspace: Path) -> None:
    """Add the snapshots to a local Evidently workspace (``evidently ui --workspace ...``)."""
    from evidently.ui.workspace import Workspace

    workspace.mkdir(parents=True, exist_ok=True)
    ws = Workspace(str(workspace))
    found = ws.search_project(WORKSPACE_PROJECT)
    project = (
        found[0]
        if found
        else ws.create_project(
            WORKSPACE_PROJECT, description="FraudOps: drift and quality of the fraud model"
        )
    )
    for snapshot in (result.drift, result.quality):
        if snapshot is not None:
            ws.add_run(project.id, snapshot)


# --- alerts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Alert:
    # feature_drift, score_drift, latency, error_rate, roc_auc_drop, average_precision_drop,
    # stale_features
    kind: str
    severity: str  # warning | critical
    message: str
    value: float
    threshold: float


def evaluate_alerts(
    summary: Summary, thresholds: MonitorSettings, test_metrics: dict[str, float]
) -> list[Alert]:
    """The alerts a run's findings call for, with readable messages."""
    found: list[Alert] = []
    who = f"{summary.model_name} v{summary.model_version}"
    enough = summary.predictions >= thresholds.min_window_predictions
    if (
        enough
        and summary.drift_share is not None
        and summary.drift_share >= thresholds.alert_drift_share
    ):
        top = ", ".join(f"{d.feature} ({d.score:.2f})" for d in summary.top_drifted())
        found.append(
            Alert(
                "feature_drift",
                "warning",
                f"{summary.drifted_features} of {summary.features_checked} features drifted "
                f"({summary.drift_share:.0%}, alert at {thresholds.alert_drift_share:.0%}) "
                f"for {who}; "
                f"most: {top}",
                summary.drift_share,
                thresholds.alert_drift_share,
            )
        )
    if (
        enough
        and summary.score_drift is not None
        and summary.score_drift >= thresholds.alert_score_drift
    ):
        now_block = summary.block_share or 0.0
        then_block = summary.reference_decision_mix.get("block", 0.0)
        found.append(
            Alert(
                "score_drift",
                "critical",
                f"the fraud probability of {who} drifted: {thresholds.drift_method} distance "
                f"{summary.score_drift:.3f} >= {thresholds.alert_score_drift}; block rate "
                f"{now_block:.1%} against {then_block:.1%} on the training data",
                summary.score_drift,
                thresholds.alert_score_drift,
            )
        )
    p99 = summary.latency_p99_ms
    if p99 is not None and p99 >= thresholds.alert_latency_p99_ms:
        found.append(
            Alert(
                "latency",
                _severity(p99, thresholds.alert_latency_p99_ms),
                f"scoring latency p99 {p99:.0f} ms >= "
                f"{thresholds.alert_latency_p99_ms:.0f} ms over "
                f"{summary.window_predictions:,} predictions",
                p99,
                thresholds.alert_latency_p99_ms,
            )
        )
    degraded = summary.degraded_share
    if degraded is not None and degraded >= thresholds.alert_error_rate:
        found.append(
            Alert(
                "error_rate",
                _severity(degraded, thresholds.alert_error_rate),
                f"{degraded:.1%} of {summary.window_predictions:,} predictions were scored in "
                f"degraded mode (online store unreachable, default features) >= "
                f"{thresholds.alert_error_rate:.1%}",
                degraded,
                thresholds.alert_error_rate,
            )
        )
    if summary.frauds >= thresholds.min_labelled_frauds and summary.roc_auc is not None:
        checks = (
            ("roc_auc", "ROC AUC", summary.roc_auc, thresholds.alert_auc_drop),
            (
                "average_precision",
                "average precision",
                summary.average_precision,
                thresholds.alert_ap_drop,
            ),
        )
        for key, label, value, allowed in checks:
            expected = test_metrics.get(key)
            if value is None or expected is None or not np.isfinite(expected):
                continue
            drop = expected - value
            if drop >= allowed:
                found.append(
                    Alert(
                        f"{key}_drop",
                        "critical",
                        f"{label} of {who} is {value:.3f} on {summary.labelled:,} labelled "
                        f"predictions ({summary.frauds} frauds): {drop:.3f} below its test "
                        f"{expected:.3f} (alert at a drop of {allowed})",
                        drop,
                        allowed,
                    )
                )
    return found


def freshness_alerts(verdicts: dict[str, Any]) -> list[Alert]:
    """A ``stale_features`` alert when a batch view's newest row in the online store is past
    its budget or absent (:func:`fraudops.features.freshness.check_online_store`): the scorer
    is then scoring on stale features, and its /readyz fails."""
    stale = [v for v in verdicts.values() if v.stale]
    if not stale:
        return []
    worst = max(stale, key=lambda v: float("inf") if v.age_seconds is None else v.age_seconds)
    return [
        Alert(
            "stale_features",
            "critical",
            "batch features are stale: "
            + "; ".join(v.reason for v in stale)
            + ". Is the nightly job running? (`fraudops nightly`, docs/nightly-job.md)",
            -1.0 if worst.age_seconds is None else worst.age_seconds,
            worst.budget_seconds,
        )
    ]


def check_feature_freshness(settings: Settings) -> list[Alert]:
    """:func:`freshness_alerts` for the online store the settings name; a store that cannot
    be read is logged (the scorer's own alerts cover an outage)."""
    from fraudops.features.feast_store import get_store
    from fraudops.features.freshness import check_online_store

    try:
        return freshness_alerts(check_online_store(settings, get_store()))
    except Exception as exc:  # the monitor's other findings still count
        log.warning("could not check the online store's freshness: %s", str(exc)[:200])
        return []


def _severity(value: float, threshold: float) -> str:
    return "critical" if value >= 2 * threshold else "warning"


def notify(alert_list: list[Alert], window: Window, url: str, timeout: float) -> bool:
    """POST the alerts to a webhook; a failure is logged, never raised (the alerts are in
    the database either way)."""
    import httpx

    lines = [f"[{a.severity}] {a.kind}: {a.message}" for a in alert_list]
    payload = {
        "text": f"FraudOps monitor, {window}:\n" + "\n".join(lines),
        "window_start": window.start.isoformat(),
        "window_end": window.end.isoformat(),
        "alerts": [asdict(a) for a in alert_list],
    }
    try:
        response = httpx.post(url, json=payload, timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("could not POST %d alert(s) to the webhook: %s", len(alert_list), exc)
        return False
    return True


def acknowledge_alerts(engine: sa.Engine, ids: list[int], by: str) -> int:
    """Mark alerts as seen by ``by``; returns how many were open."""
    if not by.strip():
        raise ValueError("a name is required to acknowledge alerts")
    statement = (
        alerts.update()
        .where(alerts.c.id.in_(ids), alerts.c.acknowledged.is_(False))
        .values(acknowledged=True, acknowledged_by=by.strip(), acknowledged_at=datetime.now(UTC))
    )
    with engine.begin() as conn:
        return conn.execute(statement).rowcount


# --- one run --------------------------------------------------------------------------------
@dataclass
class MonitorResult:
    run_id: str
    window: Window
    summary: Summary
    alerts: list[Alert]
    reports: dict[str, str]
    seconds: float

    def json(self) -> str:
        summary = {k: v for k, v in asdict(self.summary).items() if k != "feature_drift"}
        summary["drifted"] = [d.feature for d in self.summary.top_drifted(n=100)]
        return json.dumps(
            {
                "run_id": self.run_id,
                "seconds": round(self.seconds, 2),
                **summary,
                "reports": self.reports,
                "alerts": [asdict(a) for a in self.alerts],
            },
            indent=2,
            default=str,
        )


def monitor(
    settings: Settings,
    window: Window,
    *,
    version: str | None = None,
    workspace: Path | None = None,
    thresholds: MonitorSettings | None = None,
    stage: Stage = lambda _: None,
    check_freshness: bool = True,
) -> MonitorResult:
    """Monitor one window of the prediction log against a model's reference; record the
    summary, per-feature drift and alerts in the database."""
    started = time.monotonic()
    started_at = datetime.now(UTC)
    thresholds = thresholds or MonitorSettings()
    run_id = str(uuid.uuid4())
    stage("loading the reference sample from MLflow")
    reference = load_reference(settings, version)
    url = settings.resolved_database_url
    upgrade_db(url)
    engine = create_db_engine(url)
    try:
        stage(f"reading predictions, {window}")
        frame = read_window(engine, window, reference.features)
        if frame.empty:
            raise NoPredictions(f"no predictions in {window}; {logged_days(engine)}")
        frame.loc[frame[c.LABEL_TIMESTAMP] > started_at, c.IS_FRAUD] = np.nan  # not arrived
        current = frame[frame["model_version"] == reference.model_version].reset_index(drop=True)
        ref = reference.frame.assign(
            **{
                DECISION: decide(
                    reference.frame[PROBABILITY].to_numpy(),
                    reference.review_threshold,
                    reference.block_threshold,
                )
            }
        )
        summary = Summary(
            window_start=window.start,
            window_end=window.end,
            model_name=reference.model_name,
            model_version=reference.model_version,
            reference_run_id=reference.run_id,
            window_predictions=len(frame),
            predictions=len(current),
            reference_decision_mix=decision_mix(ref[DECISION]),
            **operational_stats(frame),  # type: ignore[arg-type]
        )
        reports: dict[str, str] = {}
        if current.empty:
            log.warning(
                "no predictions of %s version %s in %s: nothing to compare with its reference",
                reference.model_name,
                reference.model_version,
                window,
            )
        else:
            stage(f"Evidently: drift and quality of {len(current):,} predictions")
            tags = {
                "window_start": window.start.isoformat(),
                "window_end": window.end.isoformat(),
                "model_version": reference.model_version,
            }
            result = run_evidently(
                current, ref, reference.features, thresholds, reference.block_threshold, tags
            )
            _fill(summary, current, result)
            stage("saving reports")
            reports = save_reports(
                result, settings.reports_dir / "monitoring" / f"{window.slug}_{run_id[:8]}"
            )
            if workspace is not None:
                add_to_workspace(result, workspace)
        found = evaluate_alerts(summary, thresholds, reference.test_metrics)
        # the online store's freshness is a fact about now: checked by runs over recent
        # traffic (the trailing window, --every), not by a look back at an old window
        if check_freshness and window.end >= datetime.now(UTC) - timedelta(days=1):
            found += check_feature_freshness(settings)
        stage("recording the run")
        new = record(engine, run_id, started_at, summary, found, reports)
    finally:
        engine.dispose()
    for alert in found:
        still = "" if alert in new else " (still open, updated)"
        log.warning("ALERT [%s] %s%s: %s", alert.severity, alert.kind, still, alert.message)
    if new and thresholds.alert_webhook_url:
        notify(new, window, thresholds.alert_webhook_url, thresholds.alert_webhook_timeout_seconds)
    seconds = time.monotonic() - started
    log.info(
        "monitored %s predictions of %s v%s, %s: drift share %s, score drift %s, %d alert(s), "
        "in %.1f s",
        f"{summary.predictions:,}",
        summary.model_name,
        summary.model_version,
        window,
        _fmt(summary.drift_share),
        _fmt(summary.score_drift),
        len(found),
        seconds,
    )
    return MonitorResult(run_id, window, summary, found, reports, seconds)


class NoPredictions(LookupError):
    """The window holds no prediction at all: nothing to monitor, nothing recorded."""


def logged_days(engine: sa.Engine, most: int = 14) -> str:
    """Which days the prediction log has predictions on (event time), for a message."""
    day = sa.func.date(predictions.c.event_timestamp)
    with engine.connect() as conn:
        days = [str(d) for (d,) in conn.execute(sa.select(day).distinct().order_by(day)).all()]
    if not days:
        return (
            "the prediction log is empty: score transactions first (bentoml serve, "
            "fraudops stream or fraudops replay)"
        )
    shown = ", ".join(
        days if len(days) <= most else [*days[: most // 2], "...", *days[-most // 2 :]]
    )
    return (
        f"the prediction log has predictions on {len(days)} day(s): {shown} (UTC); pick "
        "a window there with --start/--end"
    )


def _fill(summary: Summary, current: pd.DataFrame, result: EvidentlyResult) -> None:
    mix = decision_mix(current[DECISION])
    summary.approve_share, summary.review_share, summary.block_share = (
        mix["approve"],
        mix["review"],
        mix["block"],
    )
    counted = [d for d in result.feature_drift if d.counted]
    summary.feature_drift = result.feature_drift
    summary.features_checked = len(counted)
    summary.drifted_features = sum(d.drifted for d in counted)
    summary.drift_share = summary.drifted_features / len(counted) if counted else None
    summary.score_drift = result.score_drift
    summary.decision_drift = result.decision_drift
    labelled = current[c.IS_FRAUD].notna()
    summary.labelled = int(labelled.sum())
    summary.frauds = int(current.loc[labelled, c.IS_FRAUD].sum())
    if result.quality_metrics is not None:
        q = result.quality_metrics
        summary.roc_auc, summary.average_precision = q.roc_auc, q.average_precision
        summary.precision_at_block, summary.recall_at_block = (
            q.precision_at_block,
            q.recall_at_block,
        )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def record(
    engine: sa.Engine,
    run_id: str,
    started_at: datetime,
    summary: Summary,
    found: list[Alert],
    reports: dict[str, str],
) -> list[Alert]:
    """The run's row, its per-feature drift and its alerts, in one transaction; returns the
    alerts that are new.

    An alert whose kind is already open (not acknowledged) for the same model version is
    the same problem seen again (an hourly run over the last day sees it 24 times): the
    open alert is brought up to date instead of adding another, and it is not notified
    again.
    """
    now = datetime.now(UTC)
    row = {
        k: v
        for k, v in asdict(summary).items()
        if k not in {"feature_drift", "reference_decision_mix"}
    }
    with engine.begin() as conn:
        conn.execute(
            monitor_runs.insert().values(
                run_id=run_id,
                started_at=started_at,
                finished_at=now,
                alerts=len(found),
                drift_report_path=reports.get("drift_report_path"),
                quality_report_path=reports.get("quality_report_path"),
                **row,
            )
        )
        if summary.feature_drift:
            conn.execute(
                feature_drift.insert(),
                [
                    {"run_id": run_id, "window_end": summary.window_end, **asdict(d)}
                    for d in summary.feature_drift
                ],
            )
        open_ids = dict(
            conn.execute(
                sa.select(alerts.c.kind, alerts.c.id).where(
                    alerts.c.acknowledged.is_(False),
                    alerts.c.model_version == summary.model_version,
                )
            ).all()
        )
        new = [a for a in found if a.kind not in open_ids]
        for alert in found:
            if alert.kind in open_ids:
                conn.execute(
                    alerts.update()
                    .where(alerts.c.id == open_ids[alert.kind])
                    .values(
                        **asdict(alert),
                        window_end=summary.window_end,
                        run_id=run_id,
                    )
                )
        if new:
            conn.execute(
                alerts.insert(),
                [
                    {
                        **asdict(a),
                        "created_at": now,
                        "window_start": summary.window_start,
                        "window_end": summary.window_end,
                        "model_version": summary.model_version,
                        "run_id": run_id,
                        "acknowledged": False,
                    }
                    for a in new
                ],
            )
    return new


# --- schedule -------------------------------------------------------------------------------
def run_schedule(
    settings_factory: Callable[[], Settings],
    length: timedelta,
    every_seconds: int,
    *,
    version: str | None = None,
    workspace: Path | None = None,
) -> None:
    """Monitor the trailing ``length`` every ``every_seconds`` until interrupted; a run still
    going when the next is due is skipped and logged (as for materialization)."""
    from fraudops.core.schedule import one_at_a_time, run_until_interrupted

    def run_once() -> None:
        try:
            monitor(settings_factory(), Window.last(length), version=version, workspace=workspace)
        except NoPredictions as exc:  # a quiet hour is not a failure of the schedule
            log.warning("%s", exc)

    scheduler = one_at_a_time("monitor run", run_once, every_seconds)
    log.info("monitoring the last %s every %d s; Ctrl-C to stop", length, every_seconds)
    run_until_interrupted(scheduler)
