"""FraudOps scoring API (BentoML): `bentoml serve` in the repository root.

    bentoml serve                       # reads bentofile.yaml: service.service:FraudScorer
    curl -s localhost:3000/score -H 'content-type: application/json' -d '{"transaction":
      {"transaction_id": "t1", "timestamp": "2026-01-05T10:00:00Z", "customer_id": "c1",
       "terminal_id": "t9", "amount": 12.5}}'

The service is a thin wrapper of ``fraudops.serving.scoring.ScoringCore``, which the stream
consumer shares.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import gc
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import bentoml
from bentoml.exceptions import BentoMLException, ServiceUnavailable
from pydantic import BaseModel, Field

from fraudops.adapters.bentoml import GuardMiddleware, use_request_timeout
from fraudops.core.contract import Transaction
from fraudops.core.settings import get_settings
from fraudops.serving.readiness import ReadinessDetails

if TYPE_CHECKING:
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


def _settings_key() -> str | None:
    key = get_settings().api_key
    return key.get_secret_value() if key else None


SCORING_ROUTES = ["/score", "/score_batch"]


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


def _refusal_path(server_pid: int) -> Path:
    """Where a worker that refuses to start leaves its reason for ``bentoml serve``."""
    return Path(tempfile.gettempdir()) / f"fraudops-serve-{server_pid}.refused"


def refuse_to_start(reason: str) -> None:
    """Stop the whole server, with the reason and a non-zero exit: BentoML would restart a
    worker that fails forever, never ready, and a server stopped with SIGTERM exits 0, so
    a supervisor would see success. The worker leaves the reason for ``bentoml serve``
    (its parent), which :func:`exit_if_refused` turns into an exit status."""
    server = os.getppid()
    try:
        _refusal_path(server).write_text(reason)
    except OSError as exc:  # the server still stops, with status 0
        log.error("cannot record why the scorer refused to start (%s): %s", exc, reason)
    os.kill(server, signal.SIGTERM)


def exit_if_refused() -> None:
    """At the exit of ``bentoml serve``: if a worker refused to start, print its reason on
    stderr and exit with status 1 (``os._exit``: atexit handlers cannot set the status)."""
    marker = _refusal_path(os.getpid())
    if not marker.exists():
        return
    reason = marker.read_text(errors="replace")
    marker.unlink(missing_ok=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.write(f"error: the scorer refused to start: {reason}\n")
    sys.stderr.flush()
    os._exit(1)


# A marker left under this pid by an earlier process is not ours (pids are reused); the
# server imports this module before it starts its workers, so none has written one yet.
_refusal_path(os.getpid()).unlink(missing_ok=True)
atexit.register(exit_if_refused)  # acts only in the process a worker named as refused
_settings = get_settings()  # BentoML takes the configuration when this module is imported
use_request_timeout()  # and builds its app from what its modules hold then


@bentoml.service(
    name="fraud_scorer",
    **service_config(_settings.trace_requests, _settings.access_log, _settings.workers),
)
class FraudScorer:
    def __init__(self) -> None:
        from fraudops.serving.prediction_log import (
            SHADOW_SPOOL_STEM,
            PredictionLog,
            claim_spool,
            open_shadow_log,
        )
        from fraudops.serving.scoring import Coalescer, NotReady, ScoringCore, freeze_startup_heap

        show_operational_logs()
        tune_gc()
        settings = get_settings()
        # a spool file of this worker's own: workers and replicas may share the data directory
        self.spool = claim_spool(settings.data_dir / "spool", "predictions")
        prediction_log = PredictionLog(
            settings.resolved_database_url,
            self.spool.path,
            flush_interval=settings.log_flush_seconds,
        ).start()
        self.shadow_spool = shadow_log = None
        if settings.shadow:  # the challenger's results, beside the champion's
            self.shadow_spool = claim_spool(settings.data_dir / "spool", SHADOW_SPOOL_STEM)
            shadow_log = open_shadow_log(
                settings.resolved_database_url,
                self.shadow_spool.path,
                flush_interval=settings.log_flush_seconds,
            )
        try:
            self.core = ScoringCore(settings, prediction_log, shadow_log)
        except NotReady as exc:
            log.critical("cannot start the scorer: %s", exc)
            prediction_log.close()
            self.spool.release()
            if shadow_log is not None and self.shadow_spool is not None:
                shadow_log.close()
                self.shadow_spool.release()
            refuse_to_start(str(exc))
            raise
        self.core.warm_up()  # ready means warm: the first request pays for nothing extra
        self.core.follow_champion()
        _scorers.append(self.core)  # for /readyz's details
        # concurrent /score requests are scored together (see Coalescer)
        # results kept for retries ride on the next round trip, or follow 50 ms later, with
        # the shadow scoring (FRAUDOPS_SHADOW): after the answers are on their way
        self.coalescer = Coalescer(
            partial(self.core.score, defer_keep=True, defer_shadow=True),
            after_batch=self._after_batch,
        )
        self.metrics = _Metrics()
        self.metrics.status(status_with_freshness(self.core))  # model version, freshness now
        self.core.listeners.append(
            lambda status: self.metrics.status(with_freshness(self.core, status))
        )
        freeze_startup_heap()
        log.info("scoring with %s version %s", settings.model_name, self.core.current.version)

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        """Stop following the alias and drain the prediction log (to the DB or the spool)."""
        try:
            self.core.close()
            self.spool.release()
            if self.shadow_spool is not None:
                self.shadow_spool.release()
        finally:
            gc.unfreeze()  # see freeze_startup_heap

    def _after_batch(self) -> None:
        try:
            self.core.flush_kept()
        finally:
            self.core.flush_shadow()  # logs its own failures: never a request's

    def __is_ready__(self) -> bool:
        return self.core.current is not None

    # Scoring runs on the event loop (async, with blocking calls of at most
    # FRAUDOPS_REDIS_TIMEOUT_SECONDS): it is CPU-bound Python, which threads cannot run in
    # parallel, and handing each request to a thread cost more than it saved. Measured with
    # bench/bench_service.py at concurrency 16: 294 requests/s as sync APIs, 539 as async.
    # Requests that arrive together are scored together (fraudops.serving.scoring.Coalescer).
    @bentoml.api(route="/score")
    async def score(self, transaction: Transaction, ctx: bentoml.Context) -> Score:
        """Score one transaction. Idempotent by ``transaction_id``: a retry gets the first
        result with the header ``Idempotent-Replayed: true``; the same id with other values
        gets 409 naming the fields that differ."""
        from fraudops.serving.scoring import IdempotencyConflict, score_until_done

        try:
            result = await score_until_done(lambda: self.coalescer.score(transaction))
        except IdempotencyConflict as exc:
            raise BentoMLException(str(exc), error_code=HTTPStatus.CONFLICT) from exc
        if result.replayed:
            ctx.response.headers["Idempotent-Replayed"] = "true"
        else:
            self.metrics.scored([result])
        return _score(result)

    @bentoml.api(route="/score_batch")
    async def score_batch(
        self,
        transactions: Annotated[
            list[Transaction], Field(min_length=1, max_length=_settings.max_batch_size)
        ],
    ) -> BatchScores:
        """Score up to ``FRAUDOPS_MAX_BATCH_SIZE`` (1,000) transactions; results in order,
        ``idempotent_replayed`` on those scored before. 409 when an id was scored before
        with other values (the batch's other transactions are scored: send it again
        without that one to read their results)."""
        from fraudops.serving.scoring import score_batch_until_done

        score = partial(self.core.score, defer_shadow=True)
        try:
            results = await score_batch_until_done(score, transactions)
        except ValueError as exc:  # IdempotencyConflict
            raise BentoMLException(str(exc), error_code=HTTPStatus.CONFLICT) from exc
        finally:  # the shadow scoring once the answer is on its way
            asyncio.get_running_loop().call_soon(self.core.flush_shadow)
        self.metrics.scored([r for r in results if not r.replayed])
        return BatchScores(results=[_score(r) for r in results])

    @bentoml.api(route="/admin/reload")
    def reload(self) -> Reloaded:
        """Load the current @champion now (the service also polls for it). 409 when the
        registry has no usable champion, 503 when it cannot be read; either way the model
        being served goes on scoring."""
        from fraudops.serving.scoring import NotReady

        serving = f"still scoring with version {self.core.current.version}"
        try:
            changed, version = self.core.reload()
        except NotReady as exc:
            raise BentoMLException(f"{exc}; {serving}", error_code=HTTPStatus.CONFLICT) from exc
        except Exception as exc:  # MLflow unreachable, artifacts missing
            log.warning("reload failed, %s: %s", serving, exc)
            raise ServiceUnavailable(
                f"the model registry could not be read ({exc}); {serving}"
            ) from exc
        self.metrics.status(status_with_freshness(self.core))
        return Reloaded(changed=changed, model_version=version)

    @bentoml.api(route="/admin/status")
    def status(self) -> dict:
        """Model version, feature freshness (stale views named) and degraded state."""
        status = status_with_freshness(self.core)
        self.metrics.status(status)
        return status


def _score(result: Any) -> Score:
    answer = result.as_dict()
    answer["idempotent_replayed"] = answer.pop("replayed")
    return Score.model_validate(answer)


def with_freshness(core: ScoringCore, status: dict) -> dict:
    """The scorer's status plus what the online store itself holds: each batch view's age
    and budget, and the stale views (fraudops.features.freshness), which make /readyz answer 503."""
    from fraudops.features.freshness import online_store_status

    return {**status, **online_store_status(core.settings, core.store)}


def status_with_freshness(core: ScoringCore) -> dict:
    return with_freshness(core, core.status())


FraudScorer.add_asgi_middleware(
    GuardMiddleware, api_key=_settings_key, max_body_bytes=lambda: get_settings().max_body_bytes
)
_scorers: list[ScoringCore] = []  # this worker's scoring core, once started
FraudScorer.add_asgi_middleware(
    ReadinessDetails, details=lambda: status_with_freshness(_scorers[-1]) if _scorers else None
)


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


class _Metrics:
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
