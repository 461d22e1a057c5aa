"""The scoring core, shared by the HTTP service (``service/``) and the stream consumer:
online features through the feature service, the ``@champion`` model, decisions, reasons,
real-time state updates and the prediction log.

A request takes the current model once (an immutable :class:`LoadedModel`, with the
``@challenger`` it is paired with), so a promotion swaps models atomically between requests
and every response names the version that scored it. With ``FRAUDOPS_SHADOW`` the
challenger also scores every transaction scored now, on the champion's features, into
``shadow_predictions``; with ``FRAUDOPS_CHALLENGER_SHARE`` it decides for that share of
customers (:mod:`fraudops.serving.routing`). See docs/model-lifecycle.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import numpy as np

from fraudops.core import contract as c
from fraudops.core.contract import Transaction
from fraudops.core.settings import Settings
from fraudops.features.feast_store import feature_service, get_store, service_feature_names
from fraudops.features.realtime import Before, Conflict, InFlight, Replayed
from fraudops.model import registry
from fraudops.model.fraud_model import FraudModel, apply_stale_policy
from fraudops.serving.online import OnlineFeatures
from fraudops.serving.prediction_log import shadow_records
from fraudops.serving.routing import challenger_mask

log = logging.getLogger(__name__)
TOP_REASONS = 3


class NotReady(RuntimeError):
    """The scorer cannot serve: no champion, or the model and feature store disagree."""


class IdempotencyConflict(ValueError):
    """A ``transaction_id`` scored before came again with other values."""

    def __init__(self, transaction_id: str, fields: list[str]):
        self.transaction_id = transaction_id
        self.fields = fields
        super().__init__(
            f"transaction_id {transaction_id!r} was scored before with another "
            f"{', '.join(fields)}: a retry must send the same transaction; a new transaction "
            "needs a new id"
        )


class StillScoring(RuntimeError):
    """The same transaction is being scored by another request right now: ask again
    shortly for its result (:func:`score_until_done`)."""


@dataclass(frozen=True)
class Challenger:
    """The ``@challenger`` beside a champion whose features it takes (same names)."""

    model: FraudModel
    version: str


@dataclass(frozen=True)
class LoadedModel:
    model: FraudModel
    version: str
    online: OnlineFeatures
    loaded_at: float = field(default_factory=time.time)
    challenger: Challenger | None = None  # only for shadow or A/B, and not the champion


@dataclass(frozen=True)
class ShadowWork:
    """The other model's results to log for rows the deciding model scored now: the
    challenger's, computed from ``matrix`` later (``probability`` None), or the champion's
    for rows the challenger decided (A/B), known already."""

    model: FraudModel
    version: str
    matrix: np.ndarray
    stale: np.ndarray
    prediction_ids: list[str]
    transaction_ids: list[str]
    probability: np.ndarray | None = None
    decisions: np.ndarray | None = None


@dataclass
class ScoreResult:
    transaction_id: str
    fraud_probability: float
    decision: str
    reasons: list[dict[str, Any]]
    model_version: str
    degraded: bool
    latency_ms: float
    degraded_reasons: list[str] = field(default_factory=list)
    replayed: bool = False  # the stored result of an earlier request with this id

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()

    def stored(self) -> dict[str, Any]:
        """What a retry of the transaction gets back (with its id)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("replayed", "transaction_id")}


Outcome = ScoreResult | IdempotencyConflict | StillScoring


class ScoringCore:
    def __init__(
        self,
        settings: Settings,
        prediction_log: Any | None = None,
        shadow_log: Any | None = None,
    ):
        self.settings = settings
        self.client = registry.configure(settings)
        self.store = get_store()
        self.prediction_log = prediction_log
        self.shadow_log = shadow_log  # settings.shadow: the challenger's results go here
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._challenger_loaded: tuple[str, FraudModel] | None = None
        self._warned_features: set[tuple[str, str]] = set()
        self._shadow_pending: list[ShadowWork] = []  # defer_shadow: for flush_shadow
        self.current: LoadedModel = self._with_challenger(self._load_champion())
        self.degraded_since: float | None = None
        self._next_store_try = 0.0  # monotonic time of the next try while degraded
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
        return LoadedModel(model, version, OnlineFeatures(self.store, service, self.settings))

    def champion_version(self) -> str | None:
        mv = registry.version_for(self.client, self.settings.model_name, registry.CHAMPION)
        return None if mv is None else str(mv.version)

    def reload(self) -> tuple[bool, str]:
        """Load the current @champion if it changed, and the @challenger paired with it
        (shadow or A/B); the old pair serves until then."""
        with self._lock:
            version = self.champion_version()
            if version is None:
                raise NotReady(f"no version of {self.settings.model_name} has alias @champion")
            if version == self.current.version:
                self.current = self._with_challenger(self.current)
                return False, version
            found = registry.load_version(self.client, self.settings.model_name, version)
            self.current = self._with_challenger(self._prepare(found.model, found.version))
            log.info("now scoring with %s version %s", self.settings.model_name, version)
            return True, version

    def _with_challenger(self, loaded: LoadedModel) -> LoadedModel:
        """``loaded`` paired with the current @challenger, when shadow scoring or A/B asks
        for one. None when there is none, it is the champion, or its features differ from
        the champion's (warned once per pair). A challenger that cannot be loaded leaves
        the pair as it was (logged; tried again at the next check)."""
        if not self.settings.shadow and self.settings.challenger_share <= 0:
            return loaded
        name = self.settings.model_name
        try:
            mv = registry.version_for(self.client, name, registry.CHALLENGER)
            version = None if mv is None else str(mv.version)
            if version is None or version == loaded.version:
                return replace(loaded, challenger=None) if loaded.challenger else loaded
            if loaded.challenger is not None and loaded.challenger.version == version:
                return loaded
            if self._challenger_loaded is None or self._challenger_loaded[0] != version:
                model = registry.load_version(self.client, name, version).model
                model.prepare_explanations()  # A/B: its reasons, not on the event loop
                self._challenger_loaded = (version, model)
        except Exception as exc:  # the champion goes on scoring, with the pair it had
            kept = loaded.challenger.version if loaded.challenger else "none"
            log.warning("challenger check failed, keeping %s: %s", kept, exc)
            return loaded
        model = self._challenger_loaded[1]
        if model.feature_names != loaded.model.feature_names:
            if (loaded.version, version) not in self._warned_features:
                self._warned_features.add((loaded.version, version))
                log.warning(
                    "challenger version %s expects features %s, champion version %s scores "
                    "with %s: no shadow scoring or A/B until they agree",
                    version,
                    model.feature_names,
                    loaded.version,
                    loaded.model.feature_names,
                )
            return replace(loaded, challenger=None) if loaded.challenger else loaded
        log.info("challenger: %s version %s beside champion %s", name, version, loaded.version)
        return replace(loaded, challenger=Challenger(model, version))

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

    def warm_up(self) -> None:
        """Run every step of a request once, changing nothing, before saying ready: the
        first request would otherwise pay for imports, caches and connections (measured:
        about 90 ms). The model predicts and explains a row, the feature maths runs on a
        made-up history, and the online store is read for an unknown terminal."""
        loaded = self.current
        online = loaded.online
        probe = {
            c.TRANSACTION_ID: np.array(["warm-up"], dtype=object),
            "time_us": np.array([0], dtype=np.int64),
            c.CUSTOMER_ID: np.array(["warm-up"], dtype=object),
            c.TERMINAL_ID: np.array(["warm-up"], dtype=object),
            c.AMOUNT: np.array([1.0]),
        }
        matrix = online.defaults(probe)
        loaded.model.predict_proba(matrix)
        explain(loaded.model, matrix, online.names, np.array(["review"]))
        try:
            online.read_batch_features(probe)
        except Exception as exc:
            if not is_store_outage(exc):
                raise
            log.warning("online store unreachable at start-up: %s", exc)

    def status(self) -> dict[str, Any]:
        """What readiness checks and dashboards want to know about the scorer."""
        loaded = self.current
        freshness = feature_freshness(self.store.list_feature_views(), datetime.now(UTC))
        return {
            "model_name": self.settings.model_name,
            "model_version": loaded.version,
            "challenger_version": loaded.challenger.version if loaded.challenger else None,
            "model_loaded_at": datetime.fromtimestamp(loaded.loaded_at, UTC).isoformat(),
            "feature_service": loaded.model.metadata.feature_service,
            "feature_freshness_seconds": freshness,
            "degraded": self.degraded_since is not None,
            "prediction_log_backlog": self.prediction_log.backlog() if self.prediction_log else 0,
            "prediction_log_database_up": getattr(self.prediction_log, "database_up", None),
            "shadow_log_backlog": self.shadow_log.backlog() if self.shadow_log else 0,
        }

    def close(self) -> None:
        self._stop.set()
        self.flush_shadow()
        if self.prediction_log is not None:
            self.prediction_log.close()
        if self.shadow_log is not None:
            self.shadow_log.close()

    # --- scoring --------------------------------------------------------------------------
    def score(
        self,
        transactions: list[Transaction],
        source: str = "http",
        prediction_ids: list[str] | None = None,
        log_via: Callable[[list[dict[str, Any]]], object] | None = None,
        defer_keep: bool = False,
        shadow_via: Callable[[list[dict[str, Any]]], object] | None = None,
        defer_shadow: bool = False,
    ) -> list[Outcome]:
        """Score transactions, exactly once each, and log those scored now.

        Each transaction is committed to its customer's real-time state, which returns
        what came before it (:mod:`fraudops.features.realtime`). A ``transaction_id`` committed
        before gets its first result back (``replayed``), an :class:`IdempotencyConflict`
        if its values differ, or :class:`StillScoring` while the first request is still
        being scored; none of these changes any state or writes a log record.
        ``prediction_ids`` (default: from the transaction ids) name the log records;
        ``log_via`` hands the records to the caller's function instead of the log's writer
        thread (the stream consumer makes them durable itself before it acknowledges).
        ``defer_keep``: the results are kept for retries with the next round trip to the
        store, or by :meth:`flush_kept` (the HTTP coalescer's choice), not before
        returning. Shadow results (``settings.shadow``) go to ``shadow_via`` (default: the
        shadow log's writer thread); ``defer_shadow`` leaves the challenger's scoring to
        :meth:`flush_shadow`, after the answers are on their way (the HTTP scorer)."""
        started = time.perf_counter()
        loaded = self.current
        model = loaded.model
        # the first of repeated ids in one call stands for the others
        first: dict[str, int] = {}
        unique = [
            i for i, t in enumerate(transactions) if first.setdefault(t.transaction_id, i) == i
        ]
        todo = [transactions[i] for i in unique]
        tx = frame(todo)
        scored = None
        if self._store_worth_trying():
            try:
                scored = loaded.online.compute(tx)
                self._note_recovery()
            except Exception as exc:  # online store unreachable: documented degraded mode
                if not is_store_outage(exc):
                    raise
                self._note_outage(exc)
        outcomes: list[Outcome | None] = [None] * len(todo)
        if scored is None:  # degraded: nothing committed, scored on default features
            rows = np.arange(len(todo))
            matrix = loaded.online.defaults(tx)
            seqs: list[int | None] = [None] * len(todo)
        else:
            rows, matrix = scored.rows, scored.matrix
            seqs = [o.seq if isinstance(o, Before) else None for o in scored.outcomes]
            for i, o in enumerate(scored.outcomes):
                if isinstance(o, Replayed):
                    outcomes[i] = ScoreResult(todo[i].transaction_id, **o.result, replayed=True)
                elif isinstance(o, Conflict):
                    outcomes[i] = IdempotencyConflict(todo[i].transaction_id, o.fields)
                elif isinstance(o, InFlight):
                    outcomes[i] = StillScoring(todo[i].transaction_id)
        degraded = scored is None
        # degraded per row: the store unreachable, or batch features past their budget
        stale = scored.stale if scored is not None else None
        row_degraded = np.full(len(rows), degraded) if stale is None else stale.stale
        why = (
            [["online_store_unreachable"]] * len(rows)
            if degraded
            else stale.reasons
            if stale is not None
            else [[]] * len(rows)
        )
        new: list[ScoreResult] = []
        if len(rows):
            probability = model.predict_proba(matrix)
            decisions = model.decide(
                probability, self.settings.review_threshold, self.settings.block_threshold
            )
            challenger = loaded.challenger
            share = self.settings.challenger_share
            ab = (
                challenger_mask(tx[c.CUSTOMER_ID][rows].tolist(), share)
                if challenger is not None and share > 0
                else None
            )
            if ab is not None and ab.any():  # the challenger decides for these customers
                assert challenger is not None
                policy = self.settings.degraded_policy
                champion_result = (
                    probability[ab],
                    apply_stale_policy(decisions[ab], row_degraded[ab], policy),
                )
                probability, decisions, reasons = self._challenger_decides(
                    model,
                    challenger,
                    ab,
                    matrix,
                    probability,
                    decisions,
                    row_degraded,
                    loaded.online.names,
                )
            else:
                ab = None
                decisions = apply_stale_policy(
                    decisions, row_degraded, self.settings.degraded_policy
                )
                reasons = explain(model, matrix, loaded.online.names, decisions)
            latency_ms = (time.perf_counter() - started) * 1000
            for k, i in enumerate(rows.tolist()):
                version = loaded.version if ab is None or not ab[k] else challenger.version  # type: ignore[union-attr]
                result = ScoreResult(
                    todo[i].transaction_id,
                    float(probability[k]),
                    str(decisions[k]),
                    reasons[k],
                    version,
                    bool(row_degraded[k]),
                    latency_ms,
                    degraded_reasons=list(why[k]),
                )
                outcomes[i] = result
                new.append(result)
            # logged first, then kept for retries: if either fails, the transaction is
            # finished by the next request with its id (same features, same log record id)
            if log_via is None and self.prediction_log is not None:
                log_via = self.prediction_log.submit
            ids: list[str] | None = None
            if log_via is not None:
                picked = [todo[i] for i in rows.tolist()]
                if prediction_ids:
                    ids = [prediction_ids[unique[i]] for i in rows.tolist()]
                elif not degraded:
                    ids = [committed_prediction_id(t.transaction_id) for t in picked]
                else:  # not committed: a retry, once the store is back, is a new record
                    ids = new_prediction_ids(len(picked))
                log_via(
                    records(
                        picked,
                        new,
                        matrix,
                        loaded.online.names,
                        source,
                        ids,
                        [seqs[i] for i in rows.tolist()],
                    )
                )
            if not degraded:
                kept = [(scored.commits[i], cast(ScoreResult, outcomes[i])) for i in rows.tolist()]  # type: ignore[union-attr]
                self._keep_results(kept, defer_keep)
            if (
                self.settings.shadow
                and challenger is not None
                and ids is not None
                and (shadow_via is not None or self.shadow_log is not None)
            ):
                # each row's other model: the challenger, or the champion where it decided
                tids = [r.transaction_id for r in new]
                if ab is None:
                    work = [
                        ShadowWork(
                            challenger.model, challenger.version, matrix, row_degraded, ids, tids
                        )
                    ]
                else:
                    work = [
                        ShadowWork(
                            challenger.model,
                            challenger.version,
                            matrix[~ab],
                            row_degraded[~ab],
                            _pick(ids, ~ab),
                            _pick(tids, ~ab),
                        ),
                        ShadowWork(
                            model,
                            loaded.version,
                            matrix[ab],
                            row_degraded[ab],
                            _pick(ids, ab),
                            _pick(tids, ab),
                            *champion_result,
                        ),
                    ]
                if defer_shadow:
                    self._shadow_pending.extend(work)
                else:
                    self._log_shadow(work, shadow_via)
        by_id = {todo[i].transaction_id: outcomes[i] for i in range(len(todo))}
        answers: list[Outcome] = []
        for n, t in enumerate(transactions):
            answer = by_id[t.transaction_id]
            if first[t.transaction_id] != n and isinstance(answer, ScoreResult):
                fields = _differing(transactions[first[t.transaction_id]], t)
                if fields:
                    answer = IdempotencyConflict(t.transaction_id, fields)
                else:
                    answer = ScoreResult(t.transaction_id, **answer.stored(), replayed=True)
            answers.append(answer)  # type: ignore[arg-type]
        return answers

    def _challenger_decides(
        self,
        champion: FraudModel,
        challenger: Challenger,
        ab: np.ndarray,
        matrix: np.ndarray,
        probability: np.ndarray,
        decisions: np.ndarray,
        stale: np.ndarray,
        names: list[str],
    ) -> tuple[np.ndarray, np.ndarray, list[list[dict[str, Any]]]]:
        """Probabilities, decisions and reasons with the challenger's for the rows in
        ``ab`` (its own thresholds, unless the settings fix them)."""
        review, block = self.settings.review_threshold, self.settings.block_threshold
        theirs = np.zeros_like(probability)
        theirs[ab] = challenger.model.predict_proba(matrix[ab])
        probability = np.where(ab, theirs, probability)
        decisions = np.where(ab, challenger.model.decide(probability, review, block), decisions)
        decisions = apply_stale_policy(decisions, stale, self.settings.degraded_policy)
        # each model explains its own rows (explain skips approvals)
        reasons = explain(champion, matrix, names, np.where(ab, "approve", decisions))
        picked = np.flatnonzero(ab)
        for k, why in zip(
            picked.tolist(),
            explain(challenger.model, matrix[ab], names, decisions[ab]),
            strict=True,
        ):
            reasons[k] = why
        return probability, decisions, reasons

    def flush_shadow(self) -> None:
        """Score and log the shadow work left by ``defer_shadow``. Never raises: a shadow
        failure is logged and fails no request."""
        pending, self._shadow_pending = self._shadow_pending, []
        if not pending:
            return
        try:
            self._log_shadow(pending, None)
        except Exception:
            log.exception(
                "shadow scoring of %d transactions failed",
                sum(len(w.transaction_ids) for w in pending),
            )

    def _log_shadow(
        self, work: list[ShadowWork], via: Callable[[list[dict[str, Any]]], object] | None
    ) -> None:
        if via is None:
            if self.shadow_log is None:
                return
            via = self.shadow_log.submit
        review, block = self.settings.review_threshold, self.settings.block_threshold
        rows: list[dict[str, Any]] = []
        for w in work:
            if not w.transaction_ids:
                continue
            probability, decisions = w.probability, w.decisions
            if probability is None:
                probability = w.model.predict_proba(w.matrix)
                decisions = apply_stale_policy(
                    w.model.decide(probability, review, block),
                    w.stale,
                    self.settings.degraded_policy,
                )
            rows += shadow_records(
                w.prediction_ids, w.transaction_ids, w.version, probability, decisions
            )
        if rows:
            via(rows)

    def _keep_results(self, items: list[tuple[Any, ScoreResult]], defer: bool) -> None:
        """Store the results for retries. If this fails, the transactions stay committed
        and a retry finishes them once their lease runs out."""
        state = self.current.online.state
        state.keep((commit, r.stored()) for commit, r in items)
        if not defer:
            self.flush_kept(state)

    def after_answers(self) -> None:
        """What waits until the answers are on their way: the results kept for retries,
        then the shadow scoring (which logs its own failures, never a request's)."""
        try:
            self.flush_kept()
        finally:
            self.flush_shadow()

    def flush_kept(self, state: Any = None) -> None:
        """Write the results kept for retries that wait for the next round trip."""
        try:
            (state or self.current.online.state).flush()
        except Exception as exc:
            if not is_store_outage(exc):
                raise
            log.warning("results not kept for retries (online store unreachable): %s", exc)

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
        score: Callable[[list[Transaction]], list[Outcome]],
        max_turns: int = 16,
        max_batch: int = 256,
        after_batch: Callable[[], None] | None = None,
    ):
        self._score = score
        self._after_batch = after_batch
        self._after_pending = False
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
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], error=exc)
                return
            # which one broke it: alone, it fails alone (the others, committed already,
            # are found committed and finished; see fraudops.features.realtime)
            for transaction, future in batch:
                try:
                    _settle(future, self._score([transaction])[0])
                except Exception as error:
                    _settle(future, error=error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result)
        if self._after_batch is not None and not self._after_pending:
            # once the answers are on their way (the next batch may do it sooner)
            self._after_pending = True
            asyncio.get_running_loop().call_later(AFTER_BATCH_S, self._run_after_batch)

    def _run_after_batch(self) -> None:
        self._after_pending = False
        if self._after_batch is not None:
            self._after_batch()


AFTER_BATCH_S = 0.05  # under load the next batch carries them sooner


async def score_batch_until_done(
    score: Callable[[list[Transaction]], list[Outcome]],
    transactions: list[Transaction],
    patience_s: float = 5.0,
) -> list[ScoreResult]:
    """:func:`score_until_done` for a batch: the transactions still being scored elsewhere
    are asked for again until their results are kept. Raises the first
    :class:`IdempotencyConflict` (naming every conflicting id)."""
    outcomes = score(transactions)
    conflicts = [o for o in outcomes if isinstance(o, IdempotencyConflict)]
    if conflicts:
        first = conflicts[0]
        if len(conflicts) > 1:
            others = ", ".join(repr(o.transaction_id) for o in conflicts[1:6])
            first.args = (f"{first}; also transaction_id {others}",)
        raise first
    deadline = time.monotonic() + patience_s
    wait = 0.002
    while True:
        waiting = [i for i, o in enumerate(outcomes) if isinstance(o, StillScoring)]
        if not waiting:
            return cast(list[ScoreResult], outcomes)
        if time.monotonic() > deadline:
            raise outcomes[waiting[0]]  # type: ignore[misc]
        await asyncio.sleep(wait)
        wait = min(wait * 2, 0.05)
        for i, outcome in zip(waiting, score([transactions[i] for i in waiting]), strict=True):
            if isinstance(outcome, IdempotencyConflict):
                raise outcome
            outcomes[i] = outcome


async def score_until_done(
    score: Callable[[], Awaitable[ScoreResult]], patience_s: float = 5.0
) -> ScoreResult:
    """``score()``, asked again while the same transaction is being scored elsewhere
    (:class:`StillScoring`), until its result is kept or its lease runs out."""
    deadline = time.monotonic() + patience_s
    wait = 0.002
    while True:
        try:
            return await score()
        except StillScoring:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(wait)
            wait = min(wait * 2, 0.05)


def _settle(
    future: asyncio.Future[ScoreResult],
    result: Outcome | None = None,
    error: Exception | None = None,
) -> None:
    if future.done():  # a request cancelled meanwhile (client gone)
        return
    if isinstance(result, Exception):
        error = result
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(cast(ScoreResult, result))


def commits_for(transactions: list[Transaction]) -> list[Any]:
    """The state-store commits of transactions (for tools and tests)."""
    from fraudops.serving.online import commits_of

    return commits_of(frame(transactions))


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


def is_store_outage(exc: Exception) -> bool:
    import sqlite3

    import redis

    return isinstance(
        exc,
        redis.exceptions.ConnectionError
        | redis.exceptions.TimeoutError
        | sqlite3.OperationalError
        | ConnectionError
        | TimeoutError,
    )


def explain(
    model: FraudModel, matrix: np.ndarray, names: list[str], decisions: np.ndarray
) -> list[list[dict[str, Any]]]:
    """The top contributions (:meth:`FraudModel.contributions`, path attributions) for
    review and block decisions: analysts read reasons for the transactions they look at,
    and approvals go faster without them."""
    reasons: list[list[dict[str, Any]]] = [[] for _ in decisions]
    flagged = np.flatnonzero(decisions != "approve")
    if len(flagged) == 0:
        return reasons
    picked = matrix[flagged]
    contributions = model.contributions(picked)[:, :-1]
    top = np.argsort(-contributions, axis=1, kind="stable")[:, :TOP_REASONS]
    rows = np.arange(len(flagged))[:, None]
    values = picked[rows, top].tolist()
    amounts = np.round(contributions[rows, top], 6).tolist()
    for k, i in enumerate(flagged.tolist()):
        reasons[i] = [
            {"feature": names[j], "value": v, "contribution": a}
            for j, v, a in zip(top[k].tolist(), values[k], amounts[k], strict=True)
            if a != 0  # a feature that moved nothing is no reason
        ]
    return reasons


def _pick(values: list[str], mask: np.ndarray) -> list[str]:
    return [v for v, keep in zip(values, mask.tolist(), strict=True) if keep]


def _differing(first: Transaction, again: Transaction) -> list[str]:
    """Request fields in which a repeated transaction id differs from its first use."""
    return [
        name
        for name in ("customer_id", "terminal_id", "amount", "timestamp")
        if getattr(first, name) != getattr(again, name)
    ]


def records(
    transactions: list[Transaction],
    results: list[ScoreResult],
    matrix: np.ndarray,
    names: list[str],
    source: str,
    prediction_ids: list[str] | None = None,
    commit_seqs: list[int | None] | None = None,
) -> list[dict[str, Any]]:
    scored_at = datetime.now(UTC)
    ids = prediction_ids or new_prediction_ids(len(transactions))
    seqs = commit_seqs or [None] * len(transactions)
    rows = matrix.tolist()
    return [
        {
            "prediction_id": ids[i],
            "transaction_id": t.transaction_id,
            "event_timestamp": t.timestamp,
            "scored_at": scored_at,
            "customer_id": t.customer_id,
            "terminal_id": t.terminal_id,
            "amount": t.amount,
            "features": dict(zip(names, rows[i], strict=True)),
            "fraud_probability": r.fraud_probability,
            "decision": r.decision,
            "reasons": r.reasons,
            "model_version": r.model_version,
            "latency_ms": r.latency_ms,
            "degraded": r.degraded,
            "source": source,
            "commit_seq": seqs[i],
            "extra": t.extra,  # fields the contract does not use, kept as received
        }
        for i, (t, r) in enumerate(zip(transactions, results, strict=True))
    ]


def committed_prediction_id(transaction_id: str) -> str:
    """The log record id of a transaction committed to the state: the same whoever
    finishes it, so a transaction finished twice (its first scorer died after logging)
    is logged once."""
    import hashlib

    return "tx:" + hashlib.blake2b(transaction_id.encode(), digest_size=16).hexdigest()


def new_prediction_ids(count: int) -> list[str]:
    """Random 128-bit ids as 32 hex digits (a UUID4's entropy), from one read of the OS
    random source per call rather than one per id."""
    return os.urandom(16 * count).hex(sep=" ", bytes_per_sep=16).split() if count else []
