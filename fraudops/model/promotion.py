"""Evaluation of registered models on any labelled window, and promotion with a quality gate.

    fraudops evaluate --model-uri models:/fraud-detector@champion --start 2026-08-01 --days 7
    fraudops promote [--force]
    fraudops promote --evidence live [--start 2026-09-01 --days 7]

``promote`` evaluates ``@challenger`` and ``@champion`` on the same recent labelled window
and moves ``@champion`` only if the challenger does not regress beyond the configured
tolerances. With ``evidence="live"`` the window is the live traffic both scored (the
challenger in shadow, see :mod:`fraudops.model.comparison`), on the transactions labelled since,
and nothing changes until at least ``FRAUDOPS_PROMOTE_MIN_LABELLED_FRAUDS`` of them are
frauds. The comparison and the decision are recorded as tags on the challenger's
version. Setting the alias by hand in the MLflow UI is equally valid: the scorer follows
the alias, whoever set it.
"""

from __future__ import annotations

import getpass
import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import pandas as pd

from fraudops.core import contract as c
from fraudops.core.settings import Settings
from fraudops.model import evaluation, registry
from fraudops.model.fraud_model import FraudModel

log = logging.getLogger(__name__)


def evaluate_window(
    settings: Settings, model: FraudModel, start: date, days: int
) -> dict[str, float]:
    """The model's metrics on the labelled transactions of ``[start, start + days)``, with
    features read through the model's own feature service."""
    from fraudops.features.feast_store import feature_service, get_store
    from fraudops.features.offline import offline_features
    from fraudops.model.training import labelled_history, read_labelled

    begin = pd.Timestamp(start, tz="UTC")
    now = pd.Timestamp.now(tz="UTC")
    window = read_labelled(settings, begin, begin + pd.Timedelta(days=days))
    window = window[window[c.LABEL_TIMESTAMP] <= now]
    if window.empty or window[c.IS_FRAUD].nunique() < 2:
        history = labelled_history(settings, now)
        span = (
            f"labelled transactions run from {history.first:%Y-%m-%d} to "
            f"{history.last_known:%Y-%m-%d}"
            if history.last_known is not None
            else "no transaction is labelled yet"
        )
        raise ValueError(
            f"no labelled window with both classes from {start} for {days} days "
            f"({len(window)} labelled transactions; {span}): pick a window in that range"
        )
    store = get_store()
    frame = offline_features(store, feature_service(store, model.metadata.feature_service), window)
    return evaluation.evaluate(frame, model.predict_proba(frame[model.feature_names].to_numpy()))


def recent_window(settings: Settings) -> tuple[date, int]:
    """The latest ``test_days`` days whose labels are all known now."""
    from fraudops.model.training import labelled_history, plan_windows

    now = pd.Timestamp.now(tz="UTC")
    windows = plan_windows(labelled_history(settings, now), None, 2, 0, settings.test_days, now)
    return windows.test_start.date(), settings.test_days


Evidence = Literal["offline", "live"]


@dataclass
class PromotionResult:
    decision: str  # promoted | rejected | unchanged | insufficient_evidence
    reason: str
    challenger_version: str | None
    champion_version: str | None
    challenger_metrics: dict[str, float] | None = None
    champion_metrics: dict[str, float] | None = None
    window: str | None = None
    evidence: str = "offline"
    labelled_frauds: int | None = None  # live evidence: frauds among the labelled pairs
    more_labelled_frauds_needed: int | None = None

    def json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def regressions(settings: Settings, new: dict[str, float], old: dict[str, float]) -> list[str]:
    found = []
    if new["roc_auc"] < old["roc_auc"] - settings.promote_max_auc_drop:
        found.append(
            f"ROC AUC {new['roc_auc']:.4f} < {old['roc_auc']:.4f} - {settings.promote_max_auc_drop}"
        )
    if new["average_precision"] < old["average_precision"] - settings.promote_max_ap_drop:
        found.append(
            f"average precision {new['average_precision']:.4f} < "
            f"{old['average_precision']:.4f} - {settings.promote_max_ap_drop}"
        )
    if new["brier"] > old["brier"] + settings.promote_max_brier_rise:
        found.append(
            f"Brier {new['brier']:.5f} > {old['brier']:.5f} + {settings.promote_max_brier_rise}"
        )
    return found


def promote(
    settings: Settings,
    force: bool = False,
    start: date | None = None,
    days: int | None = None,
    evidence: Evidence = "offline",
) -> PromotionResult:
    """Move @champion to @challenger if the evidence shows no regression. ``evidence``:
    ``offline`` evaluates both on a labelled window of the offline store (default: the
    latest); ``live`` compares them on the transactions both scored (default: all of
    them, else ``[start, start + days)``)."""
    client = registry.configure(settings)
    name = settings.model_name
    challenger = registry.version_for(client, name, registry.CHALLENGER)
    if challenger is None:
        raise LookupError(
            f"no version of {name} has alias @{registry.CHALLENGER}: run `fraudops train`"
        )
    champion = registry.version_for(client, name, registry.CHAMPION)
    who = getpass.getuser()
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if champion is None:
        registry.set_alias(client, name, registry.CHAMPION, str(challenger.version))
        result = PromotionResult(
            "promoted", "first model: no champion yet", str(challenger.version), None
        )
        record(client, name, result, who, now)
        return result
    if str(champion.version) == str(challenger.version):
        return PromotionResult(
            "unchanged",
            "the challenger is already the champion",
            str(challenger.version),
            str(champion.version),
        )

    if evidence == "live":
        return _promote_on_live_evidence(
            settings,
            client,
            str(challenger.version),
            str(champion.version),
            force,
            start,
            days,
            who,
            now,
        )
    if start is None:
        start, days = recent_window(settings)
    days = days or settings.test_days
    new = evaluate_window(
        settings, registry.load_version(client, name, str(challenger.version)).model, start, days
    )
    old = evaluate_window(
        settings, registry.load_version(client, name, str(champion.version)).model, start, days
    )
    problems = regressions(settings, new, old)
    if problems and not force:
        decision, reason = "rejected", "; ".join(problems)
    else:
        decision = "promoted"
        if force:
            reason = f"forced by {who}" + (": " + "; ".join(problems) if problems else "")
        else:
            reason = "no regression beyond tolerances"
        registry.set_alias(client, name, registry.CHAMPION, str(challenger.version))
    result = PromotionResult(
        decision,
        reason,
        str(challenger.version),
        str(champion.version),
        new,
        old,
        f"{start}+{days}d",
    )
    record(client, name, result, who, now)
    return result


def _promote_on_live_evidence(
    settings: Settings,
    client: Any,
    challenger: str,
    champion: str,
    force: bool,
    start: date | None,
    days: int | None,
    who: str,
    now: str,
) -> PromotionResult:
    from fraudops.model import comparison

    if start is None:
        begin, end = datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    else:
        begin = datetime(start.year, start.month, start.day, tzinfo=UTC)
        end = begin + timedelta(days=days or settings.test_days)
    pairs = comparison.load_pairs(settings, begin, end, challenger, champion)
    summary = comparison.compare_pairs(pairs, begin, end)
    window = f"live {summary.first_event}/{summary.last_event}"
    needed = settings.promote_min_labelled_frauds
    enough = summary.frauds >= needed and bool(summary.metrics)
    new, old = summary.point("challenger"), summary.point("champion")
    counts = {
        "transactions": float(summary.transactions),
        "labelled": float(summary.labelled),
        "frauds": float(summary.frauds),
    }
    if not enough:
        shortfall = (
            f"{summary.frauds} labelled frauds among the {summary.labelled:,} labelled of the "
            f"{summary.transactions:,} transactions both scored ({window}); promotion on live "
            f"evidence needs at least {needed} (FRAUDOPS_PROMOTE_MIN_LABELLED_FRAUDS)"
            + (
                ""
                if summary.metrics or not summary.labelled
                else " and labelled transactions of both classes"
            )
        )
        more = max(needed - summary.frauds, 0)
        if not force:
            result = PromotionResult(
                "insufficient_evidence",
                f"{shortfall}: {more} more needed; nothing changed",
                challenger,
                champion,
                new or None,
                old or None,
                window,
                "live",
                summary.frauds,
                more,
            )
            log.info("v%s: %s", challenger, result.reason)
            return result
        problems = [shortfall]
    else:
        more = 0
        problems = regressions(settings, new, old)
    if problems and not force:
        decision, reason = "rejected", "; ".join(problems)
    else:
        decision = "promoted"
        if force:
            reason = f"forced by {who}" + (": " + "; ".join(problems) if problems else "")
        else:
            reason = "no regression beyond tolerances on labelled live transactions"
        registry.set_alias(client, settings.model_name, registry.CHAMPION, challenger)
    result = PromotionResult(
        decision,
        reason,
        challenger,
        champion,
        {**new, **counts},
        {**old, **counts},
        window,
        "live",
        summary.frauds,
        more,
    )
    comparison.record(settings, client, summary)
    record(client, settings.model_name, result, who, now)
    return result


def record(client: Any, name: str, result: PromotionResult, who: str, when: str) -> None:
    registry.tag_version(
        client,
        name,
        result.challenger_version or "",
        {
            "promotion.decision": result.decision,
            "promotion.evidence": result.evidence,
            "promotion.reason": result.reason[:4000],
            "promotion.compared_with": result.champion_version or "none",
            "promotion.window": result.window or "",
            "promotion.challenger_metrics": json.dumps(result.challenger_metrics or {}),
            "promotion.champion_metrics": json.dumps(result.champion_metrics or {}),
            "promotion.by": who,
            "promotion.at": when,
        },
    )
    log.info("version %s: %s (%s)", result.challenger_version, result.decision, result.reason)
