"""Shadow scoring and A/B through the scoring core and `bentoml serve` (real Redis,
PostgreSQL, MLflow): the champion's answers unchanged by shadow scoring, one shadow row per
champion row, the challenger deciding for a sticky share of customers, and a challenger
swapped under load failing no request."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from fraudops.core.contract import Transaction
from fraudops.model import registry
from fraudops.serving.routing import decides_with_challenger
from fraudops.serving.scoring import explain
from tests.integration.conftest import (
    Server,
    bentoml_serve,
    environment,
    prepare_trained_environment,
)

pytestmark = pytest.mark.integration
API_KEY = "test-key-not-a-secret"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SHARE = 0.5


@dataclass
class Stack:
    values: dict[str, str]
    server: Server
    db_url: str
    champion: str
    challenger: str

    def post(self, path: str, body: object) -> httpx.Response:
        return httpx.post(self.server.url + path, json=body, headers=AUTH, timeout=30)

    def rows(self, table: str, ids: list[str]) -> list[sa.Row]:
        return rows_of(self.db_url, table, ids)

    def status(self) -> dict:
        return self.post("/admin/status", {}).json()


def rows_of(db_url: str, table: str, ids: list[str]) -> list[sa.Row]:
    engine = sa.create_engine(db_url)
    query = sa.text(f"select * from {table} where transaction_id = any(:ids)")
    try:
        with engine.connect() as conn:
            return list(conn.execute(query, {"ids": ids}).all())
    finally:
        engine.dispose()


def register_copy(values: dict[str, str], version: str) -> str:
    """A new version holding another version's artifact (a cheap distinct challenger)."""
    from fraudops.core.settings import get_settings

    with environment(values):
        settings = get_settings()
        client = registry.configure(settings)
        source = client.get_model_version(settings.model_name, version)
        copy = client.create_model_version(settings.model_name, source.source, source.run_id)
        return str(copy.version)


def register_variant(values: dict[str, str], version: str) -> str:
    """A second model as @challenger, in seconds rather than a training's: ``version``'s
    first half of trees (other probabilities, the same features)."""
    import lightgbm as lgb
    import mlflow
    import pandas as pd

    from fraudops.core.settings import get_settings
    from fraudops.model.fraud_model import FraudModel

    with environment(values):
        settings = get_settings()
        client = registry.configure(settings)
        model = registry.load_version(client, settings.model_name, version).model
        half = max(1, model.booster.current_iteration() // 2)
        booster = lgb.Booster(model_str=model.booster.model_to_string(num_iteration=half))
        variant = FraudModel(booster, model.calibrator, model.metadata)
        example = pd.DataFrame(np.zeros((2, len(model.feature_names))), columns=model.feature_names)
        with mlflow.start_run(experiment_id=registry.experiment_id(settings)):
            info = registry.log_model(variant, example, settings.model_name)
        challenger = str(info.registered_model_version)
        registry.set_alias(client, settings.model_name, registry.CHALLENGER, challenger)
        return challenger


def set_alias(values: dict[str, str], alias: str, version: str) -> None:
    from fraudops.core.settings import get_settings

    with environment(values):
        settings = get_settings()
        registry.set_alias(registry.configure(settings), settings.model_name, alias, version)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, redis_server: str, postgres_server: str) -> Iterator[dict]:
    """One trained environment: v1 @champion, v2 (v1 with half its trees) @challenger."""
    import redis

    pg = sa.engine.make_url(postgres_server)
    db_name = f"fraudops_shadow_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{db_name}"'))
    url = pg.set(database=db_name).render_as_string(hide_password=False)
    data_dir = tmp_path_factory.mktemp("shadow") / "data"
    redis.Redis.from_url(f"{redis_server}/13").flushdb()
    values = {
        "FRAUDOPS_DATA_DIR": str(data_dir),
        "FRAUDOPS_ONLINE_STORE": "redis",
        "FRAUDOPS_REDIS_URL": f"{redis_server}/13",
        "FRAUDOPS_DATABASE_URL": url,
        "FRAUDOPS_API_KEY": API_KEY,
        "FRAUDOPS_RELOAD_INTERVAL_SECONDS": "1",
        "FRAUDOPS_LOG_FLUSH_SECONDS": "0.2",
    }
    prepare_trained_environment(values)
    try:
        yield {"values": values, "db_url": url, "challenger": register_variant(values, "1")}
    finally:
        redis.Redis.from_url(f"{redis_server}/13").flushdb()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def stack(trained: dict, tmp_path_factory) -> Iterator[Stack]:
    """`bentoml serve` with shadow scoring and the challenger deciding for half the
    customers."""
    values = {
        **trained["values"],
        "FRAUDOPS_SHADOW": "true",
        "FRAUDOPS_CHALLENGER_SHARE": str(SHARE),
    }
    log_path = tmp_path_factory.mktemp("shadow-serve") / "serve.log"
    with bentoml_serve(values, log_path) as server:
        yield Stack(values, server, trained["db_url"], "1", trained["challenger"])


def transaction(customer: str, n: int = 0, amount: float = 25.0, terminal: str = "t_00002") -> dict:
    return {
        "transaction_id": f"sh-{uuid.uuid4().hex[:12]}",
        "customer_id": customer,
        "terminal_id": terminal,
        "amount": amount,
        "timestamp": f"2026-05-28T{10 + n // 60:02d}:{n % 60:02d}:00Z",
    }


def varied(prefix: str, customers: int, each: int) -> list[dict]:
    """Each customer's transactions in time order, amounts from small to large (so that
    some are reviewed or blocked and have reasons)."""
    amounts = [12.0, 85.0, 640.0, 2400.0]
    return [
        transaction(f"{prefix}{k:03d}", n, amounts[(k + n) % 4], f"t_{(k * 7) % 600:05d}")
        for k in range(customers)
        for n in range(each)
    ]


def post_all(stack: Stack, bodies: list[dict], threads: int = 8) -> list[httpx.Response]:
    """/score for each transaction, concurrently, a customer's in order."""
    by_customer: dict[str, list[dict]] = defaultdict(list)
    for body in bodies:
        by_customer[body["customer_id"]].append(body)

    def one_customer(items: list[dict]) -> list[httpx.Response]:
        return [stack.post("/score", {"transaction": body}) for body in items]

    with ThreadPoolExecutor(threads) as pool:
        return [r for rs in pool.map(one_customer, by_customer.values()) for r in rs]


def wait_for_rows(stack: Stack, ids: list[str], shadow: int | None = None) -> tuple[list, list]:
    """The predictions and shadow rows of ``ids`` once all are written (shadow: how many
    shadow rows to wait for, default one per id)."""
    expected = len(ids) if shadow is None else shadow
    deadline = time.monotonic() + 20
    while True:
        predictions, shadows = stack.rows("predictions", ids), stack.rows("shadow_predictions", ids)
        if len(predictions) >= len(ids) and len(shadows) >= expected:
            return predictions, shadows
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(predictions)} predictions and {len(shadows)} shadow "
                f"rows of {len(ids)} transactions after 20 s"
            )
        time.sleep(0.2)


def load_models(values: dict[str, str], *versions: str) -> dict:
    from fraudops.core.settings import get_settings

    with environment(values):
        settings = get_settings()
        client = registry.configure(settings)
        return {v: registry.load_version(client, settings.model_name, v).model for v in versions}


# --- the scoring core in-process ------------------------------------------------------------
class _Collected:
    """A stand-in shadow log: what the core submits."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def submit(self, rows: list[dict]) -> None:
        self.rows.extend(rows)

    def close(self) -> None:
        pass


def test_answers_are_the_same_with_shadow_on_and_off(trained: dict) -> None:
    """The same transactions (for new customers, so both cores score them on the same
    history) through a core with shadow scoring and one without: the answers are equal
    but for their ids and latency; the shadow rows name the champion's records."""
    from fraudops.core.settings import get_settings
    from fraudops.serving.scoring import ScoringCore

    def batch(prefix: str) -> list[Transaction]:
        return [Transaction.model_validate(t) for t in varied(prefix, 10, 4)]

    collected = _Collected()
    with environment(trained["values"]):
        off = ScoringCore(get_settings())
        on = ScoringCore(get_settings().model_copy(update={"shadow": True}), shadow_log=collected)
        assert off.current.challenger is None
        assert on.current.challenger is not None
        assert on.current.challenger.version == trained["challenger"]
        answers: dict[str, list] = {}
        logged: dict[str, list[dict]] = {"off": [], "on": []}
        run = str(uuid.uuid4().hex[:6])
        for name, core in (("off", off), ("on", on)):
            txs = batch(f"same-{run}-{name}-")
            # a batch, then one transaction at a time deferred as the HTTP scorer does
            results = core.score(txs[:20], log_via=logged[name].extend)
            for t in txs[20:]:
                results += core.score([t], log_via=logged[name].extend, defer_shadow=True)
            answers[name] = results
        assert len(collected.rows) == 20  # the batch's; the deferred ones wait for the flush
        on.flush_shadow()
        off.close()
        on.close()

    def comparable(result) -> dict:  # type: ignore[no-untyped-def]
        d = result.as_dict()
        d.pop("transaction_id"), d.pop("latency_ms")
        return d

    assert [comparable(r) for r in answers["on"]] == [comparable(r) for r in answers["off"]]
    assert {r["decision"] for r in logged["on"]} != {"approve"}  # reasons were compared too
    records = logged["on"]
    assert len(collected.rows) == len(records) == 40
    assert [(s["prediction_id"], s["transaction_id"]) for s in collected.rows] == [
        (r["prediction_id"], r["transaction_id"]) for r in records
    ]
    assert {s["model_version"] for s in collected.rows} == {trained["challenger"]}
    models = load_models(trained["values"], trained["challenger"])
    challenger = models[trained["challenger"]]
    names = challenger.feature_names
    matrix = np.array([[r["features"][n] for n in names] for r in records])
    np.testing.assert_array_equal(
        [s["fraud_probability"] for s in collected.rows], challenger.predict_proba(matrix)
    )


# --- through `bentoml serve` ----------------------------------------------------------------
def test_shadow_rows_match_the_champion_rows(stack: Stack) -> None:
    """One shadow row per prediction row, linked by prediction and transaction id, holding
    the other model's result; idempotent retries add none; each answer is the deciding
    model's, on the logged features, exactly."""
    bodies = varied(f"rows-{uuid.uuid4().hex[:6]}-", 12, 3)
    answers = post_all(stack, bodies[:26])
    batch = stack.post("/score_batch", {"transactions": bodies[26:]})
    assert batch.status_code == 200, batch.text
    retries = post_all(stack, bodies[:5])
    assert all(r.status_code == 200 for r in answers + retries)
    assert all(r.headers.get("Idempotent-Replayed") == "true" for r in retries)
    by_id = {r.json()["transaction_id"]: r.json() for r in answers}
    by_id.update({s["transaction_id"]: s for s in batch.json()["results"]})
    ids = [b["transaction_id"] for b in bodies]
    predictions, shadows = wait_for_rows(stack, ids)
    time.sleep(0.5)  # anything more (the retries) would be written by now
    predictions, shadows = stack.rows("predictions", ids), stack.rows("shadow_predictions", ids)
    assert len(predictions) == len(shadows) == len(ids)
    shadow_of = {s.transaction_id: s for s in shadows}
    assert set(shadow_of) == set(ids)
    both = {stack.champion, stack.challenger}
    models = load_models(stack.values, *both)
    for p in predictions:
        s = shadow_of[p.transaction_id]
        answer = by_id[p.transaction_id]
        assert s.prediction_id == p.prediction_id
        assert {p.model_version, s.model_version} == both
        deciding = (
            stack.challenger if decides_with_challenger(p.customer_id, SHARE) else (stack.champion)
        )
        assert answer["model_version"] == p.model_version == deciding
        model, other = models[p.model_version], models[s.model_version]
        x = np.array([[p.features[n] for n in model.feature_names]])
        probability = model.predict_proba(x)
        decision = model.decide(probability)
        assert answer["fraud_probability"] == float(probability[0]) == p.fraud_probability
        assert answer["decision"] == str(decision[0]) == p.decision
        assert answer["reasons"] == explain(model, x, model.feature_names, decision)[0]
        assert s.fraud_probability == float(other.predict_proba(x)[0])
        assert s.decision == str(other.decide(other.predict_proba(x))[0])


def test_ab_routing_is_sticky_by_customer(stack: Stack) -> None:
    """At share 0.5 each customer's transactions are all decided by the same version, the
    one fraudops.serving.routing names; about half the customers get the challenger."""
    bodies = varied("ab-", 32, 2)  # fixed customers: a fixed split
    answers = post_all(stack, bodies)
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers][:3]
    versions: dict[str, set[str]] = defaultdict(set)
    customer_of = {b["transaction_id"]: b["customer_id"] for b in bodies}
    for r in answers:
        versions[customer_of[r.json()["transaction_id"]]].add(r.json()["model_version"])
    assert all(len(v) == 1 for v in versions.values()), versions
    routed = {c for c, v in versions.items() if v == {stack.challenger}}
    assert routed == {c for c in versions if decides_with_challenger(c, SHARE)}
    assert 0.25 <= len(routed) / len(versions) <= 0.75, len(routed)
    logged = {p.transaction_id: p.model_version for p in wait_for_rows(stack, list(customer_of))[0]}
    assert logged == {r.json()["transaction_id"]: r.json()["model_version"] for r in answers}


def wait_for_challenger(stack: Stack, version: str | None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while stack.status().get("challenger_version") != version:
        if time.monotonic() > deadline:
            raise AssertionError(f"challenger still {stack.status().get('challenger_version')}")
        time.sleep(0.2)


def test_challenger_swapped_under_load_fails_no_request(stack: Stack) -> None:
    """Requests keep coming while @challenger moves to a new version and back: every one
    is answered, and the shadow rows follow the alias."""
    replacement = register_copy(stack.values, stack.champion)  # a distinct version
    stop = threading.Event()
    answers: list[httpx.Response] = []
    sent: list[str] = []
    prefix = f"swap-{uuid.uuid4().hex[:6]}-"

    def keep_scoring(worker: int) -> None:
        n = 0
        with httpx.Client(headers=AUTH, timeout=30) as client:
            while not stop.is_set():
                body = transaction(f"{prefix}{worker:02d}-{n % 7}", n % 600, 30.0 + n)
                sent.append(body["transaction_id"])
                answers.append(client.post(stack.server.url + "/score", json={"transaction": body}))
                n += 1

    workers = [threading.Thread(target=keep_scoring, args=(w,)) for w in range(6)]
    for w in workers:
        w.start()
    try:
        set_alias(stack.values, registry.CHALLENGER, replacement)
        wait_for_challenger(stack, replacement)
        time.sleep(0.5)
        set_alias(stack.values, registry.CHALLENGER, stack.challenger)
        wait_for_challenger(stack, stack.challenger)
        time.sleep(0.3)
    finally:
        stop.set()
        for w in workers:
            w.join()
    failed = [r for r in answers if r.status_code != 200]
    assert not failed, [(r.status_code, r.text[:200]) for r in failed[:3]]
    assert len(answers) > 50
    seen = {r.json()["model_version"] for r in answers}
    assert seen <= {stack.champion, stack.challenger, replacement}
    predictions, shadows = wait_for_rows(stack, sent)
    assert len(shadows) == len(predictions) == len(sent)
    assert replacement in {s.model_version for s in shadows} | seen
    for p, s in _paired(predictions, shadows):
        assert p.model_version != s.model_version


def test_no_challenger_beside_the_champion_means_no_shadow_and_no_ab(stack: Stack) -> None:
    set_alias(stack.values, registry.CHALLENGER, stack.champion)
    try:
        wait_for_challenger(stack, None)
        bodies = varied(f"none-{uuid.uuid4().hex[:6]}-", 8, 2)
        answers = post_all(stack, bodies)
        assert {r.json()["model_version"] for r in answers} == {stack.champion}
        ids = [b["transaction_id"] for b in bodies]
        wait_for_rows(stack, ids, shadow=0)
        time.sleep(0.5)  # shadow rows would have been written with the predictions
        assert stack.rows("shadow_predictions", ids) == []
    finally:
        set_alias(stack.values, registry.CHALLENGER, stack.challenger)
        wait_for_challenger(stack, stack.challenger)


def _paired(predictions: list, shadows: list) -> list[tuple]:
    by_id = {s.prediction_id: s for s in shadows}
    assert set(by_id) == {p.prediction_id for p in predictions}
    return [(p, by_id[p.prediction_id]) for p in predictions]


def test_the_stream_writes_shadow_rows_before_acknowledging(trained: dict) -> None:
    """The consumer with shadow scoring: once a batch is acknowledged, its prediction rows
    and one shadow row each (the challenger's, same ids) are in the database."""
    import redis

    from fraudops.core.contract import event_fields
    from fraudops.core.settings import get_settings
    from fraudops.serving.prediction_log import PredictionLog, open_shadow_log
    from fraudops.serving.scoring import ScoringCore
    from fraudops.serving.stream import DEFAULT_GROUP, StreamConsumer, StreamNames

    with environment({**trained["values"], "FRAUDOPS_SHADOW": "true"}):
        settings = get_settings()
        spool = settings.data_dir / "spool"
        url = settings.resolved_database_url
        core = ScoringCore(
            settings,
            PredictionLog(url, spool / "t-stream.jsonl").start(),
            open_shadow_log(url, spool / "t-stream-shadow.jsonl"),
        )
        client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        names = StreamNames.under(f"shadow-{uuid.uuid4().hex[:8]}")
        try:
            consumer = StreamConsumer(
                core, client, names, consumer="c1", batch_size=10, max_wait_ms=5, block_ms=50
            )
            consumer.ensure_group()
            events = varied(f"stream-{uuid.uuid4().hex[:6]}-", 8, 4)
            pipe = client.pipeline(transaction=False)
            for e in events:
                pipe.xadd(names.transactions, event_fields(e))
            pipe.execute()
            deadline = time.monotonic() + 30
            while (
                client.xlen(names.scores) < len(events)
                or client.xpending(names.transactions, DEFAULT_GROUP)["pending"]
            ):
                assert time.monotonic() < deadline, consumer.stats
                consumer.step()
            ids = [e["transaction_id"] for e in events]
            # no waiting: acknowledged means written
            predictions = rows_of(trained["db_url"], "predictions", ids)
            shadows = rows_of(trained["db_url"], "shadow_predictions", ids)
        finally:
            core.close()
            client.close()
    assert len(predictions) == len(ids)
    for p, s in _paired(predictions, shadows):
        assert p.transaction_id == s.transaction_id
        assert (p.model_version, s.model_version) == ("1", trained["challenger"])
