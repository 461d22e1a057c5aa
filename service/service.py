"""FraudOps scoring API (BentoML): `bentoml serve` in the repository root (bentofile.yaml).

    curl -s localhost:3000/score -H 'content-type: application/json' -d '{"transaction":
      {"transaction_id": "t1", "timestamp": "2026-01-05T10:00:00Z", "customer_id": "c1",
       "terminal_id": "t9", "amount": 12.5}}'

Only the deployable: the scorer comes from ``fraudops.serving.factory`` (as the stream
consumer's does), what each route does from ``fraudops.serving.api``.
"""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING, Annotated

import bentoml
from pydantic import Field

from fraudops.adapters import bentoml as workarounds
from fraudops.core.contract import Transaction
from fraudops.core.settings import get_settings
from fraudops.serving import api
from fraudops.serving.api import BatchScores, Reloaded, Score
from fraudops.serving.http_guard import GuardMiddleware
from fraudops.serving.readiness import ReadinessDetails

if TYPE_CHECKING:
    from fraudops.serving.scoring import ScoringCore

log = logging.getLogger("fraudops.service")
_settings = get_settings()  # BentoML takes the configuration when this module is imported
workarounds.exit_non_zero_when_refused()
workarounds.use_request_timeout()  # before BentoML builds its app
_scorers: list[ScoringCore] = []  # this worker's scoring core, once started, for /readyz


@bentoml.service(name="fraud_scorer", **api.service_config_from(_settings))
class FraudScorer:
    def __init__(self) -> None:
        from fraudops.serving.factory import open_scorer
        from fraudops.serving.scoring import NotReady, freeze_startup_heap

        api.show_operational_logs()
        api.tune_gc()
        try:
            scorer = open_scorer(get_settings(), "predictions")
        except NotReady as exc:
            log.critical("cannot start the scorer: %s", exc)
            workarounds.refuse_to_start(str(exc))
            raise
        self.api = api.ScoringAPI(scorer)
        _scorers.append(scorer.core)
        freeze_startup_heap()

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        """Stop following the aliases, drain the logs (to the DB or the spools)."""
        try:
            self.api.scorer.close()
        finally:
            gc.unfreeze()  # see freeze_startup_heap

    def __is_ready__(self) -> bool:
        return self.api.core.current is not None

    # Async on the event loop: scoring is CPU-bound Python (measured at concurrency 16: 294
    # requests/s as sync APIs, 539 as async); requests that arrive together are coalesced.
    @bentoml.api(route="/score")
    async def score(self, transaction: Transaction, ctx: bentoml.Context) -> Score:
        """Score one transaction. Idempotent by ``transaction_id``: a retry gets the first
        result with the header ``Idempotent-Replayed: true``; the same id with other values
        gets 409 naming the fields that differ."""
        score = await self.api.score(transaction)
        if score.idempotent_replayed:
            ctx.response.headers["Idempotent-Replayed"] = "true"
        return score

    @bentoml.api(route="/score_batch")
    async def score_batch(
        self,
        transactions: Annotated[
            list[Transaction], Field(min_length=1, max_length=_settings.max_batch_size)
        ],
    ) -> BatchScores:
        """Score up to ``FRAUDOPS_MAX_BATCH_SIZE`` (1,000) transactions; results in order,
        ``idempotent_replayed`` on those scored before. 409 when an id was scored before
        with other values (the others are scored: send the batch again without it)."""
        return await self.api.score_batch(transactions)

    @bentoml.api(route="/admin/reload")
    def reload(self) -> Reloaded:
        """Load the current @champion now (the service also polls for it). 409 when the
        registry has no usable champion, 503 when it cannot be read; either way the model
        being served goes on scoring."""
        return self.api.reload()

    @bentoml.api(route="/admin/status")
    def status(self) -> dict:
        """Model version, feature freshness (stale views named) and degraded state."""
        return self.api.status()


FraudScorer.add_asgi_middleware(
    GuardMiddleware, api_key=api.api_key, max_body_bytes=lambda: get_settings().max_body_bytes
)
FraudScorer.add_asgi_middleware(
    ReadinessDetails, details=lambda: api.status_with_freshness(_scorers[-1]) if _scorers else None
)
