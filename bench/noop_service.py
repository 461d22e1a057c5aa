"""The floor for ``bench/bench_service.py``: the scorer's routes, request and response
models, worker/thread configuration and middleware (API keys, /readyz details), with a
constant answer.

Whatever this service costs per request is what BentoML, pydantic and the HTTP stack
cost the real scorer too; the benchmark compares the two in the same run::

    bentoml serve bench.noop_service:NoopScorer --port 3001    # from the repository root

Its endpoints are async like ``FraudScorer``'s, so both run on the event loop.
"""

from __future__ import annotations

import copy
from typing import Annotated

import bentoml
from pydantic import Field

from fraudops.contract import Transaction
from fraudops.http_guard import GuardMiddleware
from fraudops.readiness import ReadinessDetails
from fraudops.settings import get_settings
from service.service import BatchScores, FraudScorer, Score, tune_gc

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


def _api_key() -> str | None:
    key = get_settings().api_key
    return key.get_secret_value() if key else None


# The scorer's own config (workers, threads, traffic timeout), so the two cannot drift apart.
@bentoml.service(name="noop_scorer", **copy.deepcopy(FraudScorer.config))
class NoopScorer:
    def __init__(self) -> None:
        tune_gc()  # the scorer's collector settings too: the floor is the framework's cost

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


NoopScorer.add_asgi_middleware(
    GuardMiddleware, api_key=_api_key, max_body_bytes=lambda: get_settings().max_body_bytes
)
NoopScorer.add_asgi_middleware(ReadinessDetails, details=lambda: None)  # the scorer's layers
