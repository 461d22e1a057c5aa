"""Scheduled retraining: the newest labels into the features, a model on the latest
labelled window, registered as @challenger; optionally promoted when the evidence says so.

    fraudops retrain                          # once
    fraudops retrain --every 1d               # APScheduler, one run at a time
    fraudops retrain --every 1d --auto-promote

A run:

1. with ``--auto-promote`` (live evidence, the default) and a @challenger that is not yet
   @champion: ``promote --evidence live`` first. While that challenger still waits for
   labelled frauds among the transactions it scored in shadow, the run stops there and
   keeps it, so the evidence can accumulate (a new challenger would start from none);
2. labels recorded in the database (analysts' included) go into the offline table
   (``labels sync``) and the feature tables are rebuilt (``features build``);
3. ``train`` on the latest window whose test labels are all known registers a new version
   as @challenger;
4. with no @champion yet, the first model is promoted; with ``--auto-promote --evidence
   offline``, it is promoted on the offline test window as ``fraudops promote`` does.

With ``FRAUDOPS_SHADOW=true`` in the scorer or the stream consumer, the loop runs
unattended: retrain, shadow, compare, promote (by hand in the MLflow UI, or here).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from fraudops.core.settings import Settings
from fraudops.model.promotion import Evidence, PromotionResult

log = logging.getLogger(__name__)
Stage = Callable[[str], None]


@dataclass
class RetrainReport:
    trained_version: str | None  # None: the run kept a challenger still waiting for labels
    promotion: dict[str, Any] | None  # the promotion decided in this run, if any
    labels_synced: int
    seconds: float

    def json(self) -> str:
        import json

        return json.dumps(asdict(self), indent=2, default=str)


def retrain_once(
    settings: Settings,
    auto_promote: bool = False,
    evidence: Evidence = "live",
    stage: Stage = lambda _: None,
    **train_options: Any,
) -> RetrainReport:
    """One retraining run (see the module's docstring)."""
    import time

    from fraudops.core.db import upgrade
    from fraudops.data.labels import sync_offline
    from fraudops.features.build import build_from_offline_store
    from fraudops.model import registry
    from fraudops.model.promotion import promote
    from fraudops.model.training import train

    started = time.monotonic()
    client = registry.configure(settings)
    name = settings.model_name
    promotion: PromotionResult | None = None
    if auto_promote and evidence == "live":
        challenger = registry.version_for(client, name, registry.CHALLENGER)
        champion = registry.version_for(client, name, registry.CHAMPION)
        if (
            challenger is not None
            and champion is not None
            and str(challenger.version) != str(champion.version)
        ):
            stage(f"promotion of v{challenger.version} on live evidence")
            try:
                promotion = promote(settings, evidence="live")
            except LookupError as exc:  # not scored in shadow yet
                log.warning("v%s: %s; keeping it as @challenger", challenger.version, exc)
                return RetrainReport(None, None, 0, time.monotonic() - started)
            if promotion.decision == "insufficient_evidence":
                log.info("keeping @challenger v%s: %s", challenger.version, promotion.reason)
                return RetrainReport(None, asdict(promotion), 0, time.monotonic() - started)

    stage("labels from the database into the offline table")
    synced = 0
    if settings.transactions_path.exists():
        upgrade(settings.resolved_database_url)  # a new installation has no labels table yet
        synced = sync_offline(settings)
    stage("feature tables")
    build_from_offline_store(settings)
    stage("training")
    report = train(settings, stage=stage, **train_options)
    log.info(
        "registered v%s as @challenger (test ROC AUC %.3f, AP %.3f)",
        report.model_version,
        report.metrics["roc_auc"],
        report.metrics["average_precision"],
    )
    if registry.version_for(client, name, registry.CHAMPION) is None:
        promotion = promote(settings)  # the first model becomes champion
    elif auto_promote and evidence == "offline":
        stage(f"promotion of v{report.model_version} on the offline test window")
        promotion = promote(settings)
    if promotion is not None:
        log.info("v%s: %s (%s)", promotion.challenger_version, promotion.decision, promotion.reason)
    return RetrainReport(
        report.model_version,
        None if promotion is None else asdict(promotion),
        synced,
        time.monotonic() - started,
    )


def build_scheduler(
    job: Callable[[], object], every_seconds: float, scheduler_class: Any = None
) -> Any:
    """An APScheduler running ``job`` every ``every_seconds``, first now, one run at a time
    (a run still going when the next is due is skipped and logged), as ``materialize
    --every`` does. Blocking unless given another scheduler class (tests use the
    background one)."""
    from fraudops.core.schedule import one_at_a_time

    return one_at_a_time("retraining", job, every_seconds, scheduler_class=scheduler_class)


def run_schedule(
    settings_factory: Callable[[], Settings],
    every_seconds: int,
    auto_promote: bool = False,
    evidence: Evidence = "live",
) -> None:
    """Retrain every ``every_seconds`` until interrupted."""

    def run() -> None:
        report = retrain_once(settings_factory(), auto_promote=auto_promote, evidence=evidence)
        log.info("retraining run done in %.0f s", report.seconds)

    scheduler = build_scheduler(run, every_seconds)
    log.info(
        "retraining every %d s%s; Ctrl-C to stop",
        every_seconds,
        f", promoting on {evidence} evidence" if auto_promote else "",
    )
    from fraudops.core.schedule import run_until_interrupted

    run_until_interrupted(scheduler)
