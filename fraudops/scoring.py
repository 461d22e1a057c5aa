"""The scoring core, shared by the HTTP service (``service/``) and the stream consumer:
online features through the feature service, the ``@champion`` model, decisions, reasons,
real-time state updates and the prediction log.

A request takes the current model once (an immutable :class:`LoadedModel`), so a
promotion swaps models atomically between requests and every response names the version
that scored it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import numpy as np

from fraudops import contract as c
from fraudops import registry
from fraudops.contract import Transaction
from fraudops.feast_store import feature_service, get_store, service_feature_names
from fraudops.features import MISSING_FEATURE_VALUE
from fraudops.model import FraudModel
from fraudops.online import OnlineFeatures, ScoredFeatures, assemble
from fraudops.settings import Settings

log = logging.getLogger(__name__)
TOP_REASONS = 3


class NotReady(RuntimeError):
    """The scorer cannot serve: no champion, or the model and feature store disagree."""


class FailedAfterCommit(RuntimeError):
    """Scoring failed after the transactions' customer states were written: scoring them
    again would count each twice in its customer's real-time features, so callers must
    not retry them (:class:`Coalescer` does not)."""


@dataclass(frozen=True)
class LoadedModel:
    model: FraudModel
    version: str
    online: OnlineFeatures
    loaded_at: float = field(default_factory=time.time)


@dataclass
class ScoreResult:
    transaction_id: str
    fraud_probability: float
    decision: str
    reasons: list[dict[str, Any]]
    model_version: str
    degraded: bool
    latency_ms: float

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class ScoringCore:
    def __init__(
        self,
        settings: Settings,
        prediction_log: Any | None = None,
        wait_for_state_writes: bool = True,
    ):
        """``wait_for_state_writes=False`` (the HTTP service) answers once a customer's new
        state is sent to Redis, without waiting for Redis's reply, which the next read on
        that connection takes: one round trip per request instead of two. A write that
        then fails (Redis gone) is lost as in any outage, and the answer, already sent,
        was scored on features read normally. The stream consumer waits: it acknowledges
        events only once their effects are stored."""
        self.settings = settings
        self.wait_for_state_writes = wait_for_state_writes
        self.client = registry.configure(settings)
        self.store = get_store()
        self.prediction_log = prediction_log
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.current: LoadedModel = self._load_champion()
        self.degraded_since: float | None = None
        self._next_store_try = 0.0  # monotonic time of the next try while degraded
        self._locks = CustomerLocks(single=settings.online_store == "sqlite")
        self.listeners: list[Callable[[dict[str, Any]], None]] = []  # called with status()
        freshness = feature_freshness(self.store.list_feature_views(), datetime.now(UTC))
        never = sorted(view for view, age in freshness.items() if age is None)
        if never:
            log.warning(
                "feature views %s were never materialized into the online store: until "
                "`fraudops materialize` loads them, their features are missing online and "
                "transactions are scored with the defaults for unknown entities",
                ", ".join(never),
            )

    # --- model lifecycle ------------------------------------------------------------------
    def _load_champion(self) -> LoadedModel:
        found = registry.load_alias(self.client, self.settings.model_name, registry.CHAMPION)
        if found is None:
            raise NotReady(
                f"no version of {self.settings.model_name} has alias @{registry.CHAMPION} in "
                f"the registry at {self.settings.resolved_mlflow_tracking_uri}: point "
                "FRAUDOPS_DATA_DIR (or FRAUDOPS_MLFLOW_TRACKING_URI) at the registry that has "
                "one (after `make demo`: FRAUDOPS_DATA_DIR=data/demo), or train one "
                "(`fraudops train`) and promote it (`fraudops promote`, or the alias in the "
                "MLflow UI)"
            )
        return self._prepare(found.model, found.version)

    def _prepare(self, model: FraudModel, version: str) -> LoadedModel:
        service = feature_service(self.store, model.metadata.feature_service)
        served = service_feature_names(service)
        if served != model.feature_names:
            raise NotReady(
                f"model version {version} expects features {model.feature_names} but feature "
                f"service {service.name} provides {served}: retrain, or apply the matching "
                "feature repository"
            )
        model.prepare_explanations()  # here, not on the event loop at the first review
        return LoadedModel(model, version, OnlineFeatures(self.store, service))

    def champion_version(self) -> str | None:
        mv = registry.version_for(self.client, self.settings.model_name, registry.CHAMPION)
        return None if mv is None else str(mv.version)

    def reload(self) -> tuple[bool, str]:
        """Load the current @champion if it changed; the old model serves until then."""
        with self._lock:
            version = self.champion_version()
            if version is None:
                raise NotReady(f"no version of {self.settings.model_name} has alias @champion")
            if version == self.current.version:
                return False, version
            found = registry.load_version(self.client, self.settings.model_name, version)
            self.current = self._prepare(found.model, found.version)
            log.info("now scoring with %s version %s", self.settings.model_name, version)
            return True, version

    def follow_champion(self) -> threading.Thread:
        """Poll the alias in the background (whoever moves it: CLI, UI, API)."""

        def loop() -> None:
            while not self._stop.wait(self.settings.reload_interval_seconds):
                try:
                    self.reload()
                    status = self.status()
                    for listener in self.listeners:
                        listener(status)
                except Exception as exc:  # keep serving the current model on any failure
                    log.warning(
                        "champion check failed, still serving %s: %s", self.current.version, exc
                    )

        thread = threading.Thread(target=loop, name="champion-follower", daemon=True)
        thread.start()
        return thread

    def status(self) -> dict[str, Any]:
        """What readiness checks and dashboards want to know about the scorer."""
        loaded = self.current
        freshness = feature_freshness(self.store.list_feature_views(), datetime.now(UTC))
        return {
            "model_name": self.settings.model_name,
            "model_version": loaded.version,
            "model_loaded_at": datetime.fromtimestamp(loaded.loaded_at, UTC).isoformat(),
            "feature_service": loaded.model.metadata.feature_service,
            "feature_freshness_seconds": freshness,
            "degraded": self.degraded_since is not None,
            "prediction_log_backlog": self.prediction_log.backlog() if self.prediction_log else 0,
            "prediction_log_database_up": getattr(self.prediction_log, "database_up", None),
        }

    def close(self) -> None:
        self._stop.set()
        if self.prediction_log is not None:
            self.prediction_log.close()

    # --- scoring --------------------------------------------------------------------------
    def score(
        self,
        transactions: list[Transaction],
        source: str = "http",
        prediction_ids: list[str] | None = None,
        log_via: Callable[[list[dict[str, Any]]], object] | None = None,
    ) -> list[ScoreResult]:
        """Score transactions and log them. ``prediction_ids`` (default: random) make a
        retried batch idempotent in the log; ``log_via`` hands the records to the caller's
        function instead of the log's writer thread (the stream consumer makes them
        durable itself before it acknowledges)."""
        started = time.perf_counter()
        loaded = self.current
        tx = frame(transactions)
        degraded = False
        model = loaded.model
        # Reading a customer's state and writing it back must not interleave with another
        # request for the same customer (and Feast's SQLite store is one connection). The
        # write is sent within the request: measured here, handing it to a writer thread
        # cost more (thread wake-ups, GIL hand-offs) than the round trip; instead its reply
        # may be left for the next read (``wait_for_state_writes``).
        with self._locks.hold(tx[c.CUSTOMER_ID]):
            features = None
            if self._store_worth_trying():
                try:
                    features = loaded.online.compute(tx)
                except Exception as exc:  # online store unreachable: documented degraded mode
                    if not is_store_outage(exc):
                        raise
                    self._note_outage(exc)
            if features is None:
                degraded = True
                rows = len(transactions)
                features = assemble(loaded.online.names, tx, {}, defaults_for(loaded.online, rows))
            probability = model.predict_proba(features.matrix)
            if not degraded:
                try:
                    loaded.online.commit(features, wait=self.wait_for_state_writes)
                    self._note_recovery()
                except Exception as exc:
                    if not is_store_outage(exc):
                        raise
                    degraded = True
                    self._note_outage(exc)
        try:  # decisions, reasons, results and the log records
            decisions = model.decide(
                probability, self.settings.review_threshold, self.settings.block_threshold
            )
            if degraded and self.settings.degraded_policy == "review":
                decisions = np.where(decisions == "approve", "review", decisions)
            reasons = explain(model, features, decisions)
            latency_ms = (time.perf_counter() - started) * 1000
            version = loaded.version
            results = [
                ScoreResult(t.transaction_id, float(p), str(d), r, version, degraded, latency_ms)
                for t, p, d, r in zip(transactions, probability, decisions, reasons, strict=True)
            ]
            if log_via is None and self.prediction_log is not None:
                log_via = self.prediction_log.submit
            if log_via is not None:
                log_via(records(transactions, results, features, source, prediction_ids))
            return results
        except Exception as exc:
            if degraded:  # no state was written: scoring them again is safe
                raise
            raise FailedAfterCommit(f"scoring failed after the states were written: {exc}") from exc

    def _store_worth_trying(self) -> bool:
        """While the online store is down, one request per ``outage_retry_seconds`` tries
        it; the others are scored in degraded mode at once instead of each waiting for the
        connection to fail or time out."""
        if self.degraded_since is None:
            return True
        now = time.monotonic()
        if now < self._next_store_try:
            return False
        self._next_store_try = now + self.settings.outage_retry_seconds
        return True

    def _note_outage(self, exc: Exception) -> None:
        self._next_store_try = time.monotonic() + self.settings.outage_retry_seconds
        if self.degraded_since is None:
            self.degraded_since = time.time()
            log.warning("online store unreachable, scoring in degraded mode: %s", str(exc)[:200])

    def _note_recovery(self) -> None:
        if self.degraded_since is not None:
            log.info("online store reachable again after %.0f s", time.time() - self.degraded_since)
            self.degraded_since = None


def feature_freshness(views: list[Any], now: datetime) -> dict[str, float | None]:
    """Seconds since each online view's last materialization; None for a view never
    materialized, whose features the online store does not have."""
    freshness: dict[str, float | None] = {}
    for view in views:
        if view.online:
            ends = [end for _, end in view.materialization_intervals]
            freshness[view.name] = round((now - max(ends)).total_seconds(), 1) if ends else None
    return freshness


def freeze_startup_heap() -> None:
    """Move everything loaded so far (Feast, MLflow, the model: about 670,000 objects in
    the scorer) out of the garbage collector's reach, for a long-running server (the
    technique of ``gc.freeze``'s documentation). Each full collection scanned that whole
    start-up heap: 144-343 ms in the serving worker (``gc.callbacks``), every request in
    flight waiting; and the stream consumer allocates many short-lived objects per
    batch. Frozen objects are still freed when nothing refers to them (the start-up
    model's booster and tables after a promotion: checked); only frozen objects that end
    up in reference cycles stay, once, as they were loaded at start-up. ``gc.unfreeze()``
    gives them back (the scorer does at shutdown, for an in-process test's sake)."""
    import gc

    gc.collect()
    gc.freeze()


class Coalescer:
    """Concurrent single-transaction requests scored together (the HTTP ``/score``).

    Scoring runs on the event loop, so while it scores, the other requests wait in the
    loop's queue. Each request joins a batch, scored once a turn of the loop has passed
    in which no other request joined (``loop.call_soon``), after at most ``max_turns``
    turns, or as soon as ``max_batch`` requests wait. Requests in flight reach the scorer
    a few turns apart (each ``await`` of the HTTP stack is a turn), so waiting while they
    keep coming gathers them: under load, one Redis round trip each way and the
    vectorised path for the lot, instead of a round trip and a model call per request
    (measured at concurrency 16: batches of 4.5 when scored after one turn, 13-16 with
    this rule). Alone, a request costs one more turn of the loop (17 µs). A batch that
    fails is scored again one by one, so that a transaction that breaks scoring fails
    only its own request."""

    def __init__(
        self,
        score: Callable[[list[Transaction]], list[ScoreResult]],
        max_turns: int = 16,
        max_batch: int = 256,
    ):
        self._score = score
        self.max_turns = max_turns
        self.max_batch = max_batch
        self._waiting: list[tuple[Transaction, asyncio.Future[ScoreResult]]] = []
        self._seen = 0  # requests waiting at the last turn
        self._turns = 0  # turns the batch has waited

    async def score(self, transaction: Transaction) -> ScoreResult:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ScoreResult] = loop.create_future()
        if not self._waiting:  # a new batch: scored after the requests in flight join
            self._seen, self._turns = 1, 0
            loop.call_soon(self._flush)
        self._waiting.append((transaction, future))
        return await future

    def _flush(self) -> None:
        waiting = len(self._waiting)
        if self._seen < waiting < self.max_batch and self._turns < self.max_turns:
            self._seen, self._turns = waiting, self._turns + 1  # still coming: one more turn
            asyncio.get_running_loop().call_soon(self._flush)
            return
        batch, self._waiting = self._waiting, []
        try:
            results = self._score([transaction for transaction, _ in batch])
        except FailedAfterCommit as exc:  # their states are written: never scored twice
            for _, future in batch:
                _settle(future, error=exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], error=exc)
                return
            for transaction, future in batch:  # which one broke it: alone, it fails alone
                try:
                    _settle(future, self._score([transaction])[0])
                except Exception as error:
                    _settle(future, error=error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result)


def _settle(
    future: asyncio.Future[ScoreResult],
    result: ScoreResult | None = None,
    error: Exception | None = None,
) -> None:
    if future.done():  # a request cancelled meanwhile (client gone)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(cast(ScoreResult, result))


class CustomerLocks:
    """Striped per-customer locks for one process; one lock for everything when the store
    is SQLite (Feast shares one connection, and its rows per feature could be read half
    written). Locks are always taken in the same order, so batches cannot deadlock."""

    STRIPES = 64

    def __init__(self, single: bool):
        self.single = single
        self._locks = [threading.Lock() for _ in range(1 if single else self.STRIPES)]

    @contextmanager
    def hold(self, customers: Any) -> Iterator[None]:
        if self.single:
            stripes = [0]
        else:
            stripes = sorted({hash(customer) % self.STRIPES for customer in customers})
        for stripe in stripes:
            self._locks[stripe].acquire()
        try:
            yield
        finally:
            for stripe in reversed(stripes):
                self._locks[stripe].release()


def frame(transactions: list[Transaction]) -> dict[str, np.ndarray]:
    """Request transactions as columns (no DataFrame on the request path: it costs more than
    the model)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return {
        c.TRANSACTION_ID: np.array([t.transaction_id for t in transactions], dtype=object),
        "time_us": np.array(
            [(t.timestamp - epoch) // timedelta(microseconds=1) for t in transactions],
            dtype=np.int64,
        ),
        c.CUSTOMER_ID: np.array([t.customer_id for t in transactions], dtype=object),
        c.TERMINAL_ID: np.array([t.terminal_id for t in transactions], dtype=object),
        c.AMOUNT: np.array([t.amount for t in transactions], dtype=np.float64),
    }


def defaults_for(online: OnlineFeatures, rows: int) -> dict[str, np.ndarray]:
    return {
        name: np.full(rows, MISSING_FEATURE_VALUE) for _, names in online.lookups for name in names
    }


def is_store_outage(exc: Exception) -> bool:
    import sqlite3

    import redis

    return isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError
                      | sqlite3.OperationalError | ConnectionError | TimeoutError)  # fmt: skip


def explain(
    model: FraudModel, features: ScoredFeatures, decisions: np.ndarray
) -> list[list[dict[str, Any]]]:
    """The top contributions (:meth:`FraudModel.contributions`, path attributions) for
    review and block decisions: analysts read reasons for the transactions they look at,
    and approvals go faster without them."""
    reasons: list[list[dict[str, Any]]] = [[] for _ in decisions]
    flagged = np.flatnonzero(decisions != "approve")
    if len(flagged) == 0:
        return reasons
    matrix = features.matrix[flagged]
    contributions = model.contributions(matrix)[:, :-1]
    top = np.argsort(-contributions, axis=1, kind="stable")[:, :TOP_REASONS]
    rows = np.arange(len(flagged))[:, None]
    values = matrix[rows, top].tolist()
    amounts = np.round(contributions[rows, top], 6).tolist()
    names = features.names
    for k, i in enumerate(flagged.tolist()):
        reasons[i] = [
            {"feature": names[j], "value": v, "contribution": a}
            for j, v, a in zip(top[k].tolist(), values[k], amounts[k], strict=True)
            if a != 0  # a feature that moved nothing is no reason
        ]
    return reasons


def records(
    transactions: list[Transaction],
    results: list[ScoreResult],
    features: ScoredFeatures,
    source: str,
    prediction_ids: list[str] | None = None,
) -> list[dict[str, Any]]:
    scored_at = datetime.now(UTC)
    ids = prediction_ids or new_prediction_ids(len(transactions))
    rows = features.matrix.tolist()
    return [
        {
            "prediction_id": ids[i],
            "transaction_id": t.transaction_id,
            "event_timestamp": t.timestamp,
            "scored_at": scored_at,
            "customer_id": t.customer_id,
            "terminal_id": t.terminal_id,
            "amount": t.amount,
            "features": dict(zip(features.names, rows[i], strict=True)),
            "fraud_probability": r.fraud_probability,
            "decision": r.decision,
            "reasons": r.reasons,
            "model_version": r.model_version,
            "latency_ms": r.latency_ms,
            "degraded": r.degraded,
            "source": source,
            "extra": t.extra,  # fields the contract does not use, kept as received
        }
        for i, (t, r) in enumerate(zip(transactions, results, strict=True))
    ]


def new_prediction_ids(count: int) -> list[str]:
    """Random 128-bit ids as 32 hex digits (a UUID4's entropy), from one read of the OS
    random source per call rather than one per id."""
    return os.urandom(16 * count).hex(sep=" ", bytes_per_sep=16).split() if count else []
