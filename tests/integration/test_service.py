"""The scoring service as users run it: `bentoml serve` as a subprocess with real Redis
(online store) and PostgreSQL (prediction log), each reached through a proxy the test can
cut; plus the API contract through the ASGI app in-process."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from fraudops.core import contract as c
from fraudops.serving.readiness import serving_on_stale_features
from tests.integration.conftest import (
    Server,
    bentoml_serve,
    environment,
    prepare_trained_environment,
)
from tests.proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.slow(50)]
ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-key-not-a-secret"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SCORE_FIELDS = {
    "transaction_id",
    "fraud_probability",
    "decision",
    "reasons",
    "model_version",
    "degraded",
    "latency_ms",
    "idempotent_replayed",
    "degraded_reasons",
}


@dataclass
class Stack:
    values: dict[str, str]
    server: Server
    redis_proxy: TcpProxy
    db_proxy: TcpProxy
    db_url: str  # direct, not proxied: for counting rows
    tx: pd.DataFrame

    def post(self, path: str, body: dict, headers: dict | None = None, **kw) -> httpx.Response:
        headers = AUTH if headers is None else headers
        return httpx.post(self.server.url + path, json=body, headers=headers, timeout=30, **kw)

    def logged(self, id_prefix: str = "") -> int:
        engine = sa.create_engine(self.db_url)
        query = sa.text("select count(*) from predictions where transaction_id like :p")
        try:
            with engine.connect() as conn:
                return conn.execute(query, {"p": f"{id_prefix}%"}).scalar_one()
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_server: str, postgres_server: str) -> Iterator[Stack]:
    import redis

    redis_base = httpx.URL(redis_server.replace("redis://", "http://"))
    redis_proxy = TcpProxy(redis_base.host, redis_base.port or 6379)
    pg = sa.engine.make_url(postgres_server)
    db_name = f"fraudops_service_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{db_name}"'))
    db_proxy = TcpProxy(pg.host or "127.0.0.1", pg.port or 5432)
    direct = pg.set(database=db_name).render_as_string(hide_password=False)
    proxied = pg.set(database=db_name, port=db_proxy.port).render_as_string(hide_password=False)
    data_dir = tmp_path_factory.mktemp("service") / "data"
    redis.Redis.from_url(f"{redis_server}/14").flushdb()
    values = {
        "FRAUDOPS_DATA_DIR": str(data_dir),
        "FRAUDOPS_ONLINE_STORE": "redis",
        "FRAUDOPS_REDIS_URL": f"redis://127.0.0.1:{redis_proxy.port}/14",
        "FRAUDOPS_DATABASE_URL": proxied,
        "FRAUDOPS_API_KEY": API_KEY,
        "FRAUDOPS_RELOAD_INTERVAL_SECONDS": "1",
        "FRAUDOPS_REDIS_TIMEOUT_SECONDS": "0.3",
    }
    tx = prepare_trained_environment(values)
    try:
        with bentoml_serve(values, data_dir.parent / "serve.log") as server:
            yield Stack(values, server, redis_proxy, db_proxy, direct, tx)
    finally:
        redis_proxy.close()
        db_proxy.close()
        redis.Redis.from_url(f"{redis_server}/14").flushdb()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()


def transaction(
    i: int = 0,
    customer: str = "c_00001",
    terminal: str = "t_00002",
    amount: float = 25.0,
    at: str = "2026-05-11T10:00:00Z",
) -> dict:
    return {
        "transaction_id": f"live-{uuid.uuid4().hex[:10]}-{i}",
        "timestamp": at,
        "customer_id": customer,
        "terminal_id": terminal,
        "amount": amount,
    }


def wait_for(predicate, timeout: float = 30.0, every: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


# --- contract -------------------------------------------------------------------------------
def test_score_returns_the_contract(stack: Stack) -> None:
    response = stack.post("/score", {"transaction": transaction()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == SCORE_FIELDS
    assert 0 <= body["fraud_probability"] <= 1
    assert body["decision"] in {"approve", "review", "block"}
    assert body["model_version"] == "1" and body["degraded"] is False


def test_high_risk_transaction_is_blocked_with_reasons(stack: Stack) -> None:
    risky = transaction(amount=2500.0, terminal="t_00599", at="2026-05-11T03:00:00Z")
    body = stack.post("/score", {"transaction": risky}).json()
    assert body["decision"] in {"review", "block"}
    assert 1 <= len(body["reasons"]) <= 3
    assert {"feature", "value", "contribution"} == set(body["reasons"][0])


def test_batch_keeps_order_and_scores_unknown_entities(stack: Stack) -> None:
    batch = [transaction(i, customer=f"c_{i % 40:05d}") for i in range(40)]
    batch += [transaction(99, customer="never-seen-customer", terminal="never-seen-terminal")]
    response = stack.post("/score_batch", {"transactions": batch})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["transaction_id"] for r in results] == [t["transaction_id"] for t in batch]
    assert all(set(r) == SCORE_FIELDS and not r["degraded"] for r in results)


def test_the_next_transaction_sees_the_previous_one(stack: Stack) -> None:
    customer = f"fresh-{uuid.uuid4().hex[:6]}"
    for minute in (0, 1, 2):
        at = f"2026-05-11T12:0{minute}:00Z"
        assert (
            stack.post("/score", {"transaction": transaction(customer=customer, at=at)}).status_code
            == 200
        )
    engine = sa.create_engine(stack.db_url)
    try:
        rows = wait_for(
            lambda: (
                _features(engine, customer) is not None and len(_features(engine, customer)) == 3
            )
        )
        assert rows, "predictions not logged"
        counts = [f["customer_tx_count_5min"] for f in _features(engine, customer)]
        assert counts == [0.0, 1.0, 2.0]
    finally:
        engine.dispose()


def _features(engine: sa.Engine, customer: str) -> list[dict] | None:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select features from predictions where customer_id = :c order by event_timestamp"
            ),
            {"c": customer},
        ).all()
    return [r[0] for r in rows]


# --- bad input and security ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda t: t.pop("amount"), "amount"),
        (lambda t: t.update(amount=-5), "amount"),
        (lambda t: t.update(amount="NaN"), "amount"),
        (lambda t: t.update(amount="lots"), "amount"),
        (lambda t: t.update(timestamp="yesterday"), "timestamp"),
        (lambda t: t.update(timestamp="2026-05-11T10:00:00"), "timestamp"),
        (lambda t: t.update(timestamp=1778493600), "timestamp"),
        (lambda t: t.update(amount=True), "amount"),
        (lambda t: t.update(amount="12.50"), "amount"),  # text, even a number's: as ingest
        (lambda t: t.update(customer_id=17.0), "customer_id"),  # an integer is taken as text
        (lambda t: t.update(customer_id=""), "customer_id"),
    ],
)
def test_bad_fields_get_a_400_naming_them(stack: Stack, mutate, field: str) -> None:
    tx = transaction()
    mutate(tx)
    response = stack.post("/score", {"transaction": tx})
    assert response.status_code == 400, response.text
    assert field in [loc for d in response.json()["detail"] for loc in d["loc"]]


def test_malformed_oversized_and_huge_bodies(stack: Stack) -> None:
    broken = httpx.post(
        stack.server.url + "/score", content=b'{"transaction": ', headers=AUTH, timeout=10
    )
    assert broken.status_code == 400
    too_many = stack.post("/score_batch", {"transactions": [transaction(i) for i in range(1001)]})
    assert too_many.status_code == 400 and "transactions" in too_many.text
    huge = httpx.post(
        stack.server.url + "/score",
        content=b"x" * 3_000_000,
        headers={**AUTH, "content-type": "application/json"},
        timeout=30,
    )
    assert huge.status_code == 413


def test_api_key_is_required(stack: Stack) -> None:
    tx = {"transaction": transaction()}
    assert stack.post("/score", tx, headers={}).status_code == 401
    assert stack.post("/score", tx, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert stack.post("/admin/reload", {}, headers={}).status_code == 401
    ready = httpx.get(stack.server.url + "/readyz")  # probes stay open
    assert ready.status_code == 200 or serving_on_stale_features(ready.status_code, ready.content)
    assert API_KEY not in stack.server.log(tail=None)  # the whole log, start-up included


def test_metrics_and_status(stack: Stack) -> None:
    metrics = httpx.get(stack.server.url + "/metrics").text
    assert re.search(r'fraudops_model_info\{model_version="1"[^}]*\} 1\.0', metrics), metrics
    assert re.search(r'fraudops_feature_age_seconds\{[^}]*view="terminal_daily"', metrics)
    status = stack.post("/admin/status", {}).json()
    assert status["model_version"] == "1"
    ready = httpx.get(stack.server.url + "/readyz")  # no key: probes stay open
    # the stack's simulated history ended months ago: by the clock terminal_daily is stale
    assert ready.status_code == 503 and ready.json()["ready"] is False
    assert set(ready.json()["stale_views"]) == {"terminal_daily"}
    assert ready.json()["model_version"] == "1"
    assert re.search(r'fraudops_feature_stale\{[^}]*view="terminal_daily"[^}]*\} 1\.0', metrics)
    assert set(ready.json()["feature_freshness_seconds"]) == {"terminal_daily"}
    assert set(status["feature_freshness_seconds"]) == {"terminal_daily"}
    # decisions are counted (added to the counter at least once a second and on /admin/status)
    before = decisions_counted(httpx.get(stack.server.url + "/metrics").text)
    for i in range(3):
        assert stack.post("/score", {"transaction": transaction(i)}).status_code == 200
    stack.post("/admin/status", {})
    after = decisions_counted(httpx.get(stack.server.url + "/metrics").text)
    assert after - before == 3


def test_scoring_routes_are_left_out_of_tracing_by_default(stack: Stack) -> None:
    """BentoML's per-request spans cost half the framework's CPU (see service_config):
    the scoring routes have none, other routes keep theirs; FRAUDOPS_TRACE_REQUESTS keeps
    BentoML's configuration as it was."""
    from fraudops.serving.api import SCORING_ROUTES, service_config

    assert stack.post("/score", {"transaction": transaction()}).status_code == 200
    stack.post("/admin/status", {})
    lines = stack.server.log(tail=None).splitlines()
    scored = [line for line in lines if "path=/score," in line]
    status = [line for line in lines if "path=/admin/status," in line]
    assert scored and not any("trace=" in line for line in scored)
    assert status and all("trace=" in line for line in status)
    assert service_config(trace_requests=False)["tracing"]["excluded_urls"] == SCORING_ROUTES
    assert "tracing" not in service_config(trace_requests=True)


def decisions_counted(metrics: str) -> float:
    found = re.findall(r"^fraudops_decisions_total\{[^}]*\} ([0-9.e+]+)$", metrics, re.M)
    return sum(float(n) for n in found)


# --- faults -----------------------------------------------------------------------------------
def test_redis_down_then_back(stack: Stack) -> None:
    stack.redis_proxy.disable()
    try:
        down = stack.post("/score", {"transaction": transaction()})
        assert down.status_code == 200, down.text
        assert down.json()["degraded"] is True
    finally:
        stack.redis_proxy.enable()
    assert wait_for(
        lambda: stack.post("/score", {"transaction": transaction()}).json()["degraded"] is False
    )
    # the operator sees the outage begin and end in the server's output
    log = stack.server.log(tail=None)
    began = log.rindex("online store unreachable, scoring in degraded mode")
    assert log.index("online store reachable again", began) > began


def test_redis_black_hole_times_out_into_degraded_mode_and_recovers(stack: Stack) -> None:
    """A partition (nothing answers, nothing is refused): requests wait at most the Redis
    timeout, and while the store is down most do not wait at all."""
    stack.redis_proxy.stall()
    try:
        started = time.monotonic()
        answers = [stack.post("/score", {"transaction": transaction(i)}) for i in range(20)]
        elapsed = time.monotonic() - started
        assert all(a.status_code == 200 and a.json()["degraded"] for a in answers)
        # 0.3 s timeouts: one request per second tries Redis, the rest answer at once. Told
        # by the time each took in the scorer, not by the client's clock: with another
        # test's servers on the same cores, 20 requests took 3.4 s where alone they take 1.5
        latencies = [a.json()["latency_ms"] for a in answers]
        waited = [ms for ms in latencies if ms >= 250]
        assert max(latencies) < 300 + 200, latencies
        assert len(waited) <= int(elapsed) + 1 and len(waited) < len(answers) / 2, (
            latencies,
            elapsed,
        )
    finally:
        stack.redis_proxy.resume()
    assert wait_for(
        lambda: stack.post("/score", {"transaction": transaction()}).json()["degraded"] is False
    )


def test_database_down_then_back_loses_no_record(stack: Stack) -> None:
    ok = 0
    stack.db_proxy.disable()
    try:
        for i in range(150):
            tx = {**transaction(i, customer=f"c_{i % 50:05d}"), "transaction_id": f"outage-{i}"}
            ok += stack.post("/score", {"transaction": tx}).status_code == 200
    finally:
        stack.db_proxy.enable()
    assert ok == 150
    assert wait_for(lambda: stack.logged("outage-") == ok, timeout=45), stack.logged("outage-")
    log = stack.server.log(tail=None)
    began = log.rindex("prediction database write failed, spooling")
    assert log.index("prediction database is back: replayed", began) > began


def test_two_workers_lose_no_record_through_a_database_outage(stack: Stack, tmp_path: Path) -> None:
    """A second server, with two workers, on the same data directory (this module's server
    holds a spool there too): every answered request is logged once the database is back,
    whichever worker spooled it."""
    from concurrent.futures import ThreadPoolExecutor

    def post(i: int) -> int:
        tx = {**transaction(i, customer=f"c_{i % 40:05d}"), "transaction_id": f"two-{i}"}
        return httpx.post(
            two.url + "/score", json={"transaction": tx}, headers=AUTH, timeout=30
        ).status_code

    with bentoml_serve({**stack.values, "FRAUDOPS_WORKERS": "2"}, tmp_path / "two.log") as two:
        stack.db_proxy.disable()
        try:
            with ThreadPoolExecutor(8) as pool:  # a connection per request: both workers
                statuses = list(pool.map(post, range(200)))
        finally:
            stack.db_proxy.enable()
        ok = statuses.count(200)
        assert ok == 200
        assert wait_for(lambda: stack.logged("two-") == ok, timeout=60), stack.logged("two-")
        spooled_by = set(
            re.findall(r"fraud_scorer:(\d)\] prediction database write failed", two.log(tail=None))
        )
        assert spooled_by  # (the kernel decides which worker takes each connection)


def test_promotion_under_load_fails_no_request(stack: Stack) -> None:
    from fraudops.core.settings import get_settings
    from fraudops.model import registry
    from fraudops.model.promotion import promote
    from fraudops.model.training import train
    from tests.integration.conftest import TRAIN_START

    versions: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            r = stack.post("/score", {"transaction": transaction(i, customer=f"c_{i % 60:05d}")})
            if r.status_code != 200:
                failures.append(r.text)
            else:
                versions.append(r.json()["model_version"])

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        with environment(stack.values):
            settings = get_settings()
            report = train(
                settings, train_start=TRAIN_START, train_days=8, delay_days=7, test_days=6, seed=9
            )
            promote(settings, force=True)
            assert (
                str(
                    registry.configure(settings)
                    .get_model_version_by_alias(settings.model_name, "champion")
                    .version
                )
                == report.model_version
            )
        assert wait_for(lambda: versions and versions[-1] == report.model_version, timeout=30)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    assert not failures
    assert f"now scoring with fraud-detector version {report.model_version}" in stack.server.log(
        tail=None
    )
    seen = Counter(versions)
    assert seen[report.model_version] > 0 and seen["1"] > 0
    switch = versions.index(report.model_version)
    assert set(versions[switch:]) == {report.model_version}  # no flapping back


def test_reload_without_a_champion_is_a_409_and_scoring_goes_on(stack: Stack) -> None:
    """Someone removed the alias: /admin/reload says why, and the model being served
    keeps scoring (the alias is put back afterwards)."""
    from fraudops.core.settings import get_settings
    from fraudops.model import registry

    with environment(stack.values):
        settings = get_settings()
        client = registry.configure(settings)
        champion = client.get_model_version_by_alias(settings.model_name, "champion").version
        client.delete_registered_model_alias(settings.model_name, "champion")
        try:
            reload = stack.post("/admin/reload", {})
            assert reload.status_code == 409, reload.text
            assert "no version of fraud-detector has alias @champion" in reload.text
            assert f"still scoring with version {champion}" in reload.text
            scored = stack.post("/score", {"transaction": transaction()})
            assert scored.status_code == 200 and scored.json()["model_version"] == str(champion)
        finally:
            client.set_registered_model_alias(settings.model_name, "champion", champion)


def test_the_batch_limit_is_the_setting(tmp_path: Path) -> None:
    """FRAUDOPS_MAX_BATCH_SIZE is the /score_batch limit in the API (and its schema)."""
    import subprocess
    import sys

    check = (
        "from service.service import FraudScorer; "
        "schema = FraudScorer.apis['score_batch'].input_spec.model_json_schema(); "
        "print(schema['properties']['transactions']['maxItems'])"
    )
    env = {**os.environ, "FRAUDOPS_MAX_BATCH_SIZE": "5", "FRAUDOPS_DATA_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", check],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "5"


# --- in-process, through the ASGI app ------------------------------------------------------
def test_contract_through_the_asgi_app(stack: Stack) -> None:
    from starlette.testclient import TestClient

    with environment({**stack.values, "FRAUDOPS_LOG_FLUSH_SECONDS": "0.25"}):
        from fraudops.adapters.bentoml import RequestTimeout
        from service.service import _scorers
        from tests.integration.conftest import scorer_asgi_app

        app = scorer_asgi_app()
        timeouts = [m.cls for m in app.user_middleware if "Timeout" in m.cls.__name__]
        assert timeouts == [RequestTimeout]  # in place of BentoML's, whose timers stayed alive
        with TestClient(app) as client:
            assert _scorers[-1].prediction_log.flush_interval == 0.25  # the setting reaches it
            ok = client.post("/score", json={"transaction": transaction()}, headers=AUTH)
            assert ok.status_code == 200 and set(ok.json()) == SCORE_FIELDS
            assert client.post("/score", json={"transaction": transaction()}).status_code == 401
            bad = client.post(
                "/score", json={"transaction": {**transaction(), "amount": -1}}, headers=AUTH
            )
            assert bad.status_code == 400
            # a card verification (amount 0), integer ids and fields the contract does not
            # use: scored, and the extras kept with the logged prediction
            extra = {"merchant": "ACME", "mcc": 5411}
            verification = {**transaction(), "amount": 0, "customer_id": 596, **extra}
            scored = client.post("/score", json={"transaction": verification}, headers=AUTH)
            assert scored.status_code == 200, scored.text
            schema = client.get("/docs.json").json()
            assert "kept with the logged prediction" in json.dumps(schema)
        engine = sa.create_engine(stack.values["FRAUDOPS_DATABASE_URL"])
        try:
            with engine.connect() as conn:
                logged = conn.execute(
                    sa.text(
                        "select customer_id, amount, extra from predictions "
                        "where transaction_id = :t"
                    ),
                    {"t": verification["transaction_id"]},
                ).one()
        finally:
            engine.dispose()
        assert logged[0] == "596" and logged[1] == 0.0
        assert (json.loads(logged[2]) if isinstance(logged[2], str) else logged[2]) == extra


def test_refuses_to_start_without_a_champion(tmp_path: Path) -> None:
    from tests.integration.conftest import bentoml_serve as serve

    values = {"FRAUDOPS_DATA_DIR": str(tmp_path / "empty")}
    with pytest.raises(RuntimeError) as caught, serve(values, tmp_path / "serve.log", timeout=60):
        pass
    registry = f"sqlite:///{tmp_path / 'empty' / 'mlflow.db'}"  # which registry it looked in
    assert f"no version of fraud-detector has alias @champion in the registry at {registry}" in (
        str(caught.value)
    )


def test_stale_batch_features_are_never_silent(stack: Stack) -> None:
    """A transaction long after its terminal's newest batch row: scored on the last known
    values, and the response says so (degraded, with the view named)."""
    terminal = stack.tx[c.TERMINAL_ID].value_counts().index[0]
    late = (stack.tx[c.TIMESTAMP].max() + pd.Timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    fresh_at = stack.tx[c.TIMESTAMP].max().strftime("%Y-%m-%dT%H:%M:%SZ")
    stale = stack.post("/score", {"transaction": transaction(1, terminal=terminal, at=late)})
    fresh = stack.post("/score", {"transaction": transaction(2, terminal=terminal, at=fresh_at)})
    assert stale.status_code == 200 and fresh.status_code == 200
    assert stale.json()["degraded"] is True
    assert stale.json()["degraded_reasons"] == ["stale_features: terminal_daily"]
    assert fresh.json()["degraded"] is False and fresh.json()["degraded_reasons"] == []


def test_refusing_to_start_exits_non_zero_with_the_reason_on_stderr(tmp_path: Path) -> None:
    """A supervisor (systemd, Kubernetes, docker compose) must see the failure: `bentoml
    serve` exits with a non-zero status and says why on stderr, not only in a worker's log."""
    import subprocess
    import sys

    from tests.conftest import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDOPS_")}
    env["FRAUDOPS_DATA_DIR"] = str(tmp_path / "empty")
    env["BENTOML_HOME"] = str(tmp_path / "bentoml")  # see tests/integration/conftest.py
    bentoml = Path(sys.executable).with_name("bentoml")
    done = subprocess.run(
        [str(bentoml), "serve", "--port", str(free_port()), "--host", "127.0.0.1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert (
        "error: the scorer refused to start: no version of fraud-detector has alias @champion"
        in done.stderr
    )
