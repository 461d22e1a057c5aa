"""Exactly once, whatever scores: two `bentoml serve` replicas (one with two workers) and a
`fraudops stream` consumer share the online store, on a single Redis and on a Redis
Cluster. 50 concurrent transactions of one new customer with the same timestamp, 10
rounds: the counts they see are exactly 0..49 and the next one sees 50. Then idempotency
through the API and the stream: retries, conflicts, duplicates in flight, redelivery.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from tests.integration.conftest import (
    REPO,
    Server,
    bentoml_serve_all,
    environment,
    prepare_trained_environment,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow(60)]
API_KEY = "exactly-once-test-key-0123456789"
AT = "2026-05-11T10:00:00Z"


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, redis_server: str, postgres_server: str
) -> Iterator[dict[str, str]]:
    """A trained, promoted model and its feature tables, logging to a PostgreSQL database
    of its own."""
    name = f"fraudops_once_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    database = sa.engine.make_url(postgres_server).set(database=name)
    redis.Redis.from_url(f"{redis_server}/12").flushdb()
    values = {
        "FRAUDOPS_DATA_DIR": str(tmp_path_factory.mktemp("once") / "data"),
        "FRAUDOPS_ONLINE_STORE": "redis",
        "FRAUDOPS_REDIS_URL": f"{redis_server}/12",
        "FRAUDOPS_DATABASE_URL": database.render_as_string(hide_password=False),
        "FRAUDOPS_API_KEY": API_KEY,
        "FRAUDOPS_LOG_FLUSH_SECONDS": "0.05",
    }
    prepare_trained_environment(values)
    try:
        yield values
    finally:
        redis.Redis.from_url(f"{redis_server}/12").flushdb()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class Topology:
    values: dict[str, str]
    replicas: list[Server]
    stream_client: Any
    stream_key: str
    engine: sa.Engine

    def post(
        self, replica: int, path: str, body: dict, client: httpx.Client | None = None
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {API_KEY}"}
        send = client or httpx
        return send.post(self.replicas[replica].url + path, json=body, headers=headers, timeout=30)

    def logged(self, customer: str) -> list[dict[str, Any]]:
        query = sa.text(
            "select transaction_id, features, commit_seq, source from predictions "
            "where customer_id = :c"
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query, {"c": customer}).mappings().all()
        return [dict(row) for row in rows]

    def wait_logged(self, customer: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.logged(customer)
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)


@pytest.fixture(scope="module", params=["single", "cluster"])
def topology(
    request: pytest.FixtureRequest,
    trained: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Topology]:
    from fraudops.features.materialize import materialize_once
    from fraudops.serving.stream import StreamNames, stream_client

    values = dict(trained)
    if request.param == "cluster":
        from redis.cluster import RedisCluster

        url = request.getfixturevalue("redis_cluster").url
        RedisCluster.from_url(url).flushall(target_nodes="primaries")
        values.update(FRAUDOPS_REDIS_URL=url, FRAUDOPS_REDIS_MODE="cluster")
    with environment(values):
        from fraudops.core.settings import get_settings

        materialize_once()  # terminal features, and the customers' states seeded
        settings = get_settings()
        names = StreamNames.from_settings(settings)
        client = stream_client(settings, names)
    logs = tmp_path_factory.mktemp(f"once-{request.param}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDOPS_")}
    env.update(values)
    with logs.joinpath("stream.log").open("w") as out:
        consumer = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("fraudops")),
                "stream",
                "--consumer",
                "c1",
                "--max-wait-ms",
                "5",
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    engine = sa.create_engine(values["FRAUDOPS_DATABASE_URL"])
    try:
        replicas = [({**values, "FRAUDOPS_WORKERS": "2"}, logs / "a.log"), (values, logs / "b.log")]
        with bentoml_serve_all(replicas) as servers:
            yield Topology(values, servers, client, names.transactions, engine)
    finally:
        consumer.terminate()
        consumer.wait(timeout=30)
        engine.dispose()


def transaction(customer: str, n: int, at: str = AT, amount: float = 5.0) -> dict[str, Any]:
    return {
        "transaction_id": f"{customer}-{n}",
        "timestamp": at,
        "customer_id": customer,
        "terminal_id": f"t_{n % 7:05d}",
        "amount": amount,
    }


def test_fifty_concurrent_transactions_of_one_customer_count_each_once(topology: Topology) -> None:
    """Each of 10 rounds: 50 transactions of a new customer, same timestamp, sent at once
    to replica A (two workers), replica B and the stream, each on its own connection."""
    for round_ in range(10):
        customer = f"burst-{uuid.uuid4().hex[:8]}-{round_}"
        start = threading.Barrier(50)
        errors: list[str] = []

        def send(n: int, customer: str = customer, start: threading.Barrier = start) -> None:
            tx = transaction(customer, n)
            with httpx.Client() as client:
                start.wait()
                if n % 3 == 2:  # a third through the stream
                    topology.stream_client.xadd(
                        topology.stream_key, {"transaction": json.dumps(tx)}
                    )
                    return
                response = topology.post(n % 2, "/score", {"transaction": tx}, client)
                if response.status_code != 200:
                    errors.append(response.text)  # noqa: B023 (joined before the next round)

        threads = [threading.Thread(target=send, args=(n,)) for n in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors[:3]
        rows = topology.wait_logged(customer, 50)
        counts = sorted(int(r["features"]["customer_tx_count_1h"]) for r in rows)
        assert counts == list(range(50)), (round_, counts)
        assert sorted(r["commit_seq"] for r in rows) == list(range(50))
        assert {r["source"] for r in rows} == {"http", "stream"}
        later = transaction(customer, 99, at="2026-05-11T10:30:00Z")
        assert topology.post(1, "/score", {"transaction": later}).status_code == 200
        (row,) = [
            r
            for r in topology.wait_logged(customer, 51)
            if r["transaction_id"] == later["transaction_id"]
        ]
        assert row["features"]["customer_tx_count_1h"] == 50


def test_a_retry_gets_the_first_result_and_changes_nothing(topology: Topology) -> None:
    customer = f"retry-{uuid.uuid4().hex[:8]}"
    tx = transaction(customer, 1)
    first = topology.post(0, "/score", {"transaction": tx})
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    for replica in (0, 1, 0):  # retries reach any replica
        again = topology.post(replica, "/score", {"transaction": tx})
        assert again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        body = again.json()
        assert body.pop("idempotent_replayed") is True
        expected = first.json()
        expected.pop("idempotent_replayed")
        assert body == expected
    batch = topology.post(1, "/score_batch", {"transactions": [tx, transaction(customer, 2)]})
    assert batch.status_code == 200
    replayed, new = batch.json()["results"]
    assert replayed["idempotent_replayed"] is True and new["idempotent_replayed"] is False
    assert replayed["fraud_probability"] == first.json()["fraud_probability"]
    # the next transaction counts the two real ones, once each; two log rows
    topology.post(0, "/score", {"transaction": transaction(customer, 3, at="2026-05-11T10:05:00Z")})
    rows = topology.wait_logged(customer, 3)
    assert len(rows) == 3
    third = next(r for r in rows if r["transaction_id"].endswith("-3"))
    assert third["features"]["customer_tx_count_1h"] == 2


def test_the_same_id_with_other_values_is_a_409_naming_them(topology: Topology) -> None:
    customer = f"conflict-{uuid.uuid4().hex[:8]}"
    tx = transaction(customer, 1)
    assert topology.post(0, "/score", {"transaction": tx}).status_code == 200
    changed = {**tx, "amount": 99.0, "terminal_id": "t_elsewhere"}
    response = topology.post(1, "/score", {"transaction": changed})
    assert response.status_code == 409
    assert "amount" in response.text and "terminal_id" in response.text
    other_customer = {**tx, "customer_id": f"{customer}-b"}
    response = topology.post(0, "/score_batch", {"transactions": [other_customer]})
    assert response.status_code == 409 and "customer_id" in response.text
    time.sleep(0.3)
    assert len(topology.logged(customer)) == 1 and not topology.logged(f"{customer}-b")


def test_identical_requests_in_flight_are_scored_once(topology: Topology) -> None:
    customer = f"dup-{uuid.uuid4().hex[:8]}"
    tx = transaction(customer, 1)
    start = threading.Barrier(12)
    answers: list[httpx.Response] = []

    def send(n: int) -> None:
        with httpx.Client() as client:
            start.wait()
            answers.append(topology.post(n % 2, "/score", {"transaction": tx}, client))

    threads = [threading.Thread(target=send, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
    assert len({a.json()["fraud_probability"] for a in answers}) == 1
    time.sleep(0.5)
    assert len(topology.logged(customer)) == 1


def test_a_stream_redelivery_and_the_same_event_over_http_are_scored_once(
    topology: Topology,
) -> None:
    customer = f"stream-{uuid.uuid4().hex[:8]}"
    tx = transaction(customer, 1)
    for _ in range(2):  # the producer sent it twice
        topology.stream_client.xadd(topology.stream_key, {"transaction": json.dumps(tx)})
    rows = topology.wait_logged(customer, 1)
    answer = topology.post(0, "/score", {"transaction": tx})  # and over HTTP too
    assert answer.status_code == 200 and answer.headers["idempotent-replayed"] == "true"
    time.sleep(0.5)
    assert len(topology.logged(customer)) == 1 == len(rows)
