"""The floors for ``bench/bench_service.py``: BentoML services with the scorer's routes,
request and response models, worker/thread configuration and middleware (API keys,
/readyz details), answering a constant score.

- ``NoopScorer`` does nothing else. Whatever it costs per request is what BentoML,
  pydantic and the HTTP stack cost the real scorer too; the benchmark's goals are ratios to
  it.
- ``RoundTripFloor`` also reads the transaction's customer and terminal from Redis, as the
  scorer's single-request path does (the same ``HMGET`` commands, one pipelined round
  trip), on a plain socket, with the replies parsed by hiredis and then dropped: the least
  CPU a scorer that reads the online store per request can add to the no-op.
- ``PredictionFloor`` also runs the champion model's prediction on one row (no I/O).

The benchmark compares them in the same run::

    bentoml serve bench.noop_service:NoopScorer --port 3001    # from the repository root

The two references need the scorer's environment (``FRAUDOPS_*``: the online store, the
model registry). Their endpoints are async like ``FraudScorer``'s, so all run on the
event loop.
"""

from __future__ import annotations

import copy
import socket
from typing import Annotated, Any

import bentoml
from pydantic import Field

from fraudops.contract import Transaction
from fraudops.http_guard import GuardMiddleware
from fraudops.readiness import ReadinessDetails
from fraudops.redis_fast import _bulk  # the RESP bulk string the scorer's commands use
from fraudops.scoring import freeze_startup_heap
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


def _floor(name: str, service_class: type) -> Any:
    """``service_class`` as a BentoML service with the scorer's own config (workers,
    threads, traffic timeout, tracing, access log) and middleware, so they cannot drift
    apart."""
    service = bentoml.service(name=name, **copy.deepcopy(FraudScorer.config))(service_class)
    service.add_asgi_middleware(
        GuardMiddleware, api_key=_api_key, max_body_bytes=lambda: get_settings().max_body_bytes
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
    from fraudops.scoring import ScoringCore

    return ScoringCore(get_settings()).current


class RawRedis:
    """A plain socket to the online store's Redis (its URL's host, port, password and DB),
    with a hiredis reader: one round trip and the parse, nothing of a client library."""

    def __init__(self, url: str):
        import hiredis  # feast[redis] requires it
        from redis.connection import parse_url

        if not url.startswith("redis://"):
            raise ValueError(f"RawRedis speaks plain TCP only (redis://), not {url.split(':')[0]}")
        options = parse_url(url)
        self.sock = socket.create_connection(
            (options.get("host", "127.0.0.1"), options.get("port", 6379)), timeout=5
        )
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.reader = hiredis.Reader()
            if options.get("password"):
                user = [options["username"]] if options.get("username") else []
                self.round_trip(_command(b"AUTH", *user, options["password"]), 1)
            if options.get("db"):
                self.round_trip(_command(b"SELECT", str(options["db"])), 1)
        except BaseException:
            self.sock.close()
            raise

    def round_trip(self, commands: bytes, replies: int) -> list[Any]:
        """Send the commands, return their replies; an error reply raises."""
        self.sock.sendall(commands)
        out: list[Any] = []
        while len(out) < replies:
            reply = self.reader.gets()
            if reply is False:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("Redis closed the connection")
                self.reader.feed(data)
            elif isinstance(reply, Exception):
                raise RuntimeError(f"Redis refused a command: {reply}")
            else:
                out.append(reply)
        return out


def _command(*args: bytes | str) -> bytes:
    parts = [a if isinstance(a, bytes) else a.encode() for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(map(_bulk, parts))


class _RoundTrip:
    def __init__(self) -> None:
        tune_gc()
        self.reader = _champion().online.reader
        self.redis = RawRedis(get_settings().redis_url)
        freeze_startup_heap()

    @bentoml.api(route="/score")
    async def score(self, transaction: Transaction) -> Score:
        """Read the transaction's entities (customer, terminal) from Redis, then the same
        approval."""
        entity = {key: getattr(transaction, key) for key in self.reader.join_keys}
        self.redis.round_trip(*self.reader.commands_one(entity))
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
