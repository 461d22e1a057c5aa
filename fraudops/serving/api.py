"""The scoring API's parts that do not depend on BentoML's service object: its response
models, its BentoML configuration, its Prometheus metrics and the status it reports.
``service/service.py`` puts them together with the scoring core
(:mod:`fraudops.serving.factory`)."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import threading
import time
from collections import Counter
from functools import partial
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import bentoml
from bentoml.exceptions import BentoMLException, ServiceUnavailable
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from fraudops.core.contract import Transaction
    from fraudops.core.settings import Settings
    from fraudops.serving.factory import Scorer
    from fraudops.serving.scoring import ScoringCore

log = logging.getLogger("fraudops.service")  # under "fraudops": see show_operational_logs


class Reason(BaseModel):
    feature: str
    value: float
    contribution: float = Field(description="Contribution to the model's log-odds.")


class Score(BaseModel):
    transaction_id: str
    fraud_probability: float = Field(ge=0, le=1, description="Calibrated probability of fraud.")
    decision: str = Field(description="approve | review | block")
    reasons: list[Reason] = Field(description="Top 3 contributions, for review and block.")
    model_version: str = Field(description="The registered model version that scored it.")
    degraded: bool = Field(
        description="True when scored without fresh features: the online store unreachable "
        "(defaults used), or batch features past their freshness budget (last known values "
        "used); FRAUDOPS_DEGRADED_POLICY=review turns such approvals into reviews."
    )
    degraded_reasons: list[str] = Field(
        default_factory=list,
        description="Why degraded: `online_store_unreachable`, `stale_features: <view>`.",
    )
    latency_ms: float
    idempotent_replayed: bool = Field(
        False,
        description="True when this transaction_id was scored before: the first result, "
        "unchanged (nothing was scored or logged again).",
    )


class BatchScores(BaseModel):
    results: list[Score]


class Reloaded(BaseModel):
    changed: bool
    model_version: str


# Collect the young generation every 10,000 allocations of containers, not 700: a request
# allocates hundreds (ASGI scopes, pydantic models, the log record), and at the default the
# collector ran about once per request. Measured at concurrency 16, alternated runs:
# 1,350-1,418 requests/s and 0.70-0.73 ms of CPU each at the default, 1,544-1,751 and
# 0.56-0.64 ms with this. The no-op floor of bench/ uses the same setting.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def show_operational_logs() -> None:
    """FraudOps's INFO messages (model swaps, degraded mode entered and left, the log's
    database lost and back) in the server's output. ``bentoml serve`` sends the root
    logger's records to its own handler but only from WARNING up, so without this the
    operator would see an outage begin and never end."""
    if not logging.getLogger().handlers:  # not under bentoml serve (an ASGI test client)
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("fraudops").setLevel(logging.INFO)


SCORING_ROUTES = ["/score", "/score_batch"]


def api_key() -> str | None:
    """The API key the scoring and admin routes require, if one is configured."""
    from fraudops.core.settings import get_settings

    key = get_settings().api_key
    return key.get_secret_value() if key else None


def service_config_from(settings: Settings) -> dict[str, Any]:
    return service_config(settings.trace_requests, settings.access_log, settings.workers)


def service_config(
    trace_requests: bool = False, access_log: bool = True, workers: int = 1
) -> dict[str, Any]:
    """BentoML's configuration of the scorer (``bench/noop_service.py`` copies it).

    BentoML records an OpenTelemetry span for every request even when no trace is sampled
    or exported: spans with locks, attribute lists and a context, which BentoML's timeout
    timer held for 30 s (before ``RequestTimeout`` replaced it), so many outlived the
    young generation and made the collector's generation-1 passes take 22-34 ms (measured
    in the worker with ``gc.callbacks``, then).
    Measured with the benchmark's load at concurrency 16, alternated runs: the no-op service
    did 1,994-2,154 requests/s at 0.46-0.50 ms of CPU each with the spans, 4,122-4,469 at
    0.22-0.24 ms without; the scorer 1,464-1,487 and 2,320-2,376. So the scoring routes
    are left out of tracing unless ``FRAUDOPS_TRACE_REQUESTS`` asks for them.

    BentoML's access log (a formatted line per request) stays on unless
    ``FRAUDOPS_ACCESS_LOG`` turns it off: measured the same way, off, the no-op did 5,071-
    5,234 requests/s instead of 4,082-4,527, the scorer 3,117-3,320 instead of 2,852-2,858.
    (Its ``skip_paths`` would also drop the routes' request metrics, so it is all or none.)"""
    config: dict[str, Any] = {"traffic": {"timeout": 30}, "workers": workers, "threads": 4}
    if not trace_requests:
        config["tracing"] = {"excluded_urls": SCORING_ROUTES}
    if not access_log:
        config["logging"] = {"access": {"enabled": False}}
    return config


def as_score(result: Any) -> Score:
    answer = result.as_dict()
    answer["idempotent_replayed"] = answer.pop("replayed")
    return Score.model_validate(answer)


class ScoringAPI:
    """What the routes do, on one worker's scorer: warm it up (ready means warm: the first
    request pays for nothing extra), follow the champion, coalesce concurrent /score
    requests (results kept for retries and the shadow scoring follow once the answers are
    on their way), report metrics, and map outcomes to HTTP statuses."""

    def __init__(self, scorer: Scorer):
        from fraudops.serving.scoring import Coalescer

        self.scorer, self.core = scorer, scorer.core
        self.core.warm_up()
        self.core.follow_champion()
        score = partial(self.core.score, defer_keep=True, defer_shadow=True)
        self.coalescer = Coalescer(score, after_batch=self.core.after_answers)
        self.metrics = Metrics()
        self.metrics.follow(self.core)
        log.info("scoring with version %s", self.core.current.version)

    async def score(self, transaction: Transaction) -> Score:
        from fraudops.serving.scoring import IdempotencyConflict, score_until_done

        try:
            result = await score_until_done(lambda: self.coalescer.score(transaction))
        except IdempotencyConflict as exc:
            raise BentoMLException(str(exc), error_code=HTTPStatus.CONFLICT) from exc
        if not result.replayed:
            self.metrics.scored([result])
        return as_score(result)

    async def score_batch(self, transactions: list[Transaction]) -> BatchScores:
        from fraudops.serving.scoring import IdempotencyConflict, score_batch_until_done

        score = partial(self.core.score, defer_shadow=True)
        try:
            results = await score_batch_until_done(score, transactions)
        except IdempotencyConflict as exc:
            raise BentoMLException(str(exc), error_code=HTTPStatus.CONFLICT) from exc
        finally:  # the shadow scoring once the answer is on its way
            asyncio.get_running_loop().call_soon(self.core.flush_shadow)
        self.metrics.scored([r for r in results if not r.replayed])
        return BatchScores(results=[as_score(r) for r in results])

    def reload(self) -> Reloaded:
        from fraudops.serving.scoring import NotReady

        serving = f"still scoring with version {self.core.current.version}"
        try:
            changed, version = self.core.reload()
        except NotReady as exc:
            raise BentoMLException(f"{exc}; {serving}", error_code=HTTPStatus.CONFLICT) from exc
        except Exception as exc:  # MLflow unreachable, artifacts missing
            log.warning("reload failed, %s: %s", serving, exc)
            message = f"the model registry could not be read ({exc}); {serving}"
            raise ServiceUnavailable(message) from exc
        self.metrics.status(status_with_freshness(self.core))
        return Reloaded(changed=changed, model_version=version)

    def status(self) -> dict:
        status = status_with_freshness(self.core)
        self.metrics.status(status)
        return status


def with_freshness(core: ScoringCore, status: dict) -> dict:
    """The scorer's status plus what the online store itself holds: each batch view's age
    and budget, and the stale views (fraudops.features.freshness), which make /readyz answer 503."""
    from fraudops.features.freshness import online_store_status

    return {**status, **online_store_status(core.settings, core.store)}


def status_with_freshness(core: ScoringCore) -> dict:
    return with_freshness(core, core.status())


METRICS_FLUSH_SECONDS = 1.0


@functools.cache
def _instruments() -> tuple[Any, Any, Any, Any, Any]:
    """The Prometheus instruments, registered once per process (a registry refuses a name
    twice; a test process may start several scorers)."""
    version = bentoml.metrics.Gauge(
        name="fraudops_model_info",
        documentation="Model version being served (value 1).",
        labelnames=["model_version"],
    )
    freshness = bentoml.metrics.Gauge(
        name="fraudops_feature_age_seconds",
        documentation="Age of the newest row the online store holds per batch view (by "
        "the clock); views without a budget: seconds since the last materialization.",
        labelnames=["view"],
    )
    budget = bentoml.metrics.Gauge(
        name="fraudops_feature_budget_seconds",
        documentation="Freshness budget per batch view (its TTL unless configured).",
        labelnames=["view"],
    )
    stale = bentoml.metrics.Gauge(
        name="fraudops_feature_stale",
        documentation="1 while a batch view is past its freshness budget (or the online "
        "store holds none of it), else 0.",
        labelnames=["view"],
    )
    decisions = bentoml.metrics.Counter(
        name="fraudops_decisions",
        documentation="Scored transactions by decision.",
        labelnames=["decision", "degraded"],
    )
    return version, freshness, budget, stale, decisions


class Metrics:
    """Prometheus metrics, served by BentoML's own /metrics."""

    def __init__(self) -> None:
        (self.version, self.freshness, self.budget, self.stale, self.decisions) = _instruments()
        self._current: str | None = None
        # Decisions are counted here and added to the Prometheus counter at most once a
        # second (and on every status check): in BentoML's multiprocess mode an increment
        # cost 12.6 µs per request, measured in the worker.
        self._pending: Counter[tuple[str, bool]] = Counter()
        self._lock = threading.Lock()
        self._flushed_at = time.monotonic()

    def follow(self, core: ScoringCore) -> None:
        """Report the core's status now (model version, freshness) and on every change."""
        self.status(status_with_freshness(core))
        core.listeners.append(lambda status: self.status(with_freshness(core, status)))

    def model(self, version: str) -> None:
        if self._current is not None and self._current != version:
            self.version.labels(model_version=self._current).set(0)
        self.version.labels(model_version=version).set(1)
        self._current = version

    def status(self, status: dict) -> None:
        self.model(status["model_version"])
        ages = {**status["feature_freshness_seconds"], **status.get("feature_age_seconds", {})}
        for view, age in ages.items():
            if age is not None:  # None: never materialized, no age to report
                self.freshness.labels(view=view).set(age)
        stale = status.get("stale_views", {})
        for view, budget in status.get("feature_budget_seconds", {}).items():
            self.budget.labels(view=view).set(budget)
            self.stale.labels(view=view).set(1 if view in stale else 0)
        self.flush()

    def scored(self, results: list) -> None:  # type: ignore[type-arg]
        with self._lock:
            for r in results:
                self._pending[(r.decision, r.degraded)] += 1
        if time.monotonic() - self._flushed_at >= METRICS_FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, Counter()
            self._flushed_at = time.monotonic()
        for (decision, degraded), n in pending.items():
            self.decisions.labels(decision=decision, degraded=str(degraded).lower()).inc(n)
