"""The floors for ``bench/bench_service.py``: BentoML services with the scorer's routes,
request and response models, worker/thread configuration and middleware (API keys,
/readyz details), answering a constant score.

- ``NoopScorer`` does nothing else. Whatever it costs per request is what BentoML,
  pydantic and the HTTP stack cost the real scorer too; the benchmark's goals are ratios to
  it.
- ``RoundTripFloor`` also does the scorer's store work for the transaction: commits it to
  its customer's real-time state and reads its terminal's batch features, in the one
  pipelined round trip the scorer makes (``OnlineFeatures.commit_and_read``), and drops
  the answers: what a scorer that keeps exact per-customer state adds to the no-op before
  any maths or model.
- ``PredictionFloor`` also runs the champion model's prediction on one row (no I/O).

The benchmark compares them in the same run::

    bentoml serve bench.noop_service:NoopScorer --port 3001    # from the repository root

The two references need the scorer's environment (``FRAUDOPS_*``: the online store, the
model registry). Their endpoints are async like ``FraudScorer``'s, so all run on the
event loop.
"""

from __future__ import annotations

from typing import Annotated, Any

import bentoml
from pydantic import Field

from fraudops.adapters.bentoml import use_request_timeout
from fraudops.core.contract import Transaction
from fraudops.core.settings import get_settings
from fraudops.serving.api import BatchScores, Score, api_key, service_config_from, tune_gc
from fraudops.serving.http_guard import GuardMiddleware
from fraudops.serving.readiness import ReadinessDetails
from fraudops.serving.scoring import freeze_startup_heap

MODEL_VERSION = "noop"


def constant_score(transaction: Transaction) -> Score:
    return Score(
        transaction_id=transaction.transaction_id,
        fraud_probability=0.01,
        decision="approve",
        reasons=[],
        model_version=MODEL_VERSION,
        degraded=False,
        latency_ms=0.0,
    )


use_request_timeout()  # the scorer's timeout middleware too (see service/service.py)


def _floor(name: str, service_class: type) -> Any:
    """``service_class`` as a BentoML service with the scorer's own config (workers,
    threads, traffic timeout, tracing, access log) and middleware, so they cannot drift
    apart."""
    config = service_config_from(get_settings())
    service = bentoml.service(name=name, **config)(service_class)
    service.add_asgi_middleware(
        GuardMiddleware, api_key=api_key, max_body_bytes=lambda: get_settings().max_body_bytes
    )
    service.add_asgi_middleware(ReadinessDetails, details=lambda: None)  # the scorer's layers
    return service


class _Noop:
    def __init__(self) -> None:
        # the scorer's collector settings too: the floor is the framework's cost
        tune_gc()
        freeze_startup_heap()

    @bentoml.api(route="/score")
    async def score(self, transaction: Transaction) -> Score:
        """Score one transaction: always the same approval."""
        return constant_score(transaction)

    @bentoml.api(route="/score_batch")
    async def score_batch(
        self,
        transactions: Annotated[
            list[Transaction], Field(min_length=1, max_length=get_settings().max_batch_size)
        ],
    ) -> BatchScores:
        """Up to 1,000 transactions: the same approval for each, in order."""
        return BatchScores(results=[constant_score(t) for t in transactions])


NoopScorer = _floor("noop_scorer", _Noop)


def _champion() -> Any:
    """The @champion as the scorer loads it (``ScoringCore``: the model, its feature
    service's online reader, the same checks), without a prediction log."""
    from fraudops.serving.scoring import ScoringCore

    return ScoringCore(get_settings()).current


class _RoundTrip:
    def __init__(self) -> None:
        tune_gc()
        self.online = _champion().online
        freeze_startup_heap()

    @bentoml.api(route="/score")
    async def score(self, transaction: Transaction) -> Score:
        """The scorer's store work: commit the transaction to its customer's state and read
        its terminal's features (one round trip), then the same approval."""
        from fraudops.serving.online import commits_of
        from fraudops.serving.scoring import frame

        tx = frame([transaction])
        self.online.commit_and_read(tx, commits_of(tx), tx["time_us"])
        return constant_score(transaction)


RoundTripFloor = _floor("round_trip_floor", _RoundTrip)


class _Prediction:
    def __init__(self) -> None:
        import numpy as np

        tune_gc()
        self.model = _champion().model
        self.row = np.zeros((1, len(self.model.feature_names)))
        freeze_startup_heap()

    @bentoml.api(route="/score")
    async def score(self, transaction: Transaction) -> Score:
        """The champion's prediction on a row of zeros, then the same approval."""
        self.model.predict_proba(self.row)
        return constant_score(transaction)


PredictionFloor = _floor("prediction_floor", _Prediction)
