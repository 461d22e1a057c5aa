"""The real-time state store on a real Redis and a real Redis Cluster: exact counts under
concurrency, idempotency by transaction id, leases, seeding, scripts lost with a node.

Each test runs on a single Redis and on a 3-master cluster (tests/conftest.py starts it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis
from redis.cluster import RedisCluster

from fraudops.core import contract as c
from fraudops.features import maths as f
from fraudops.features.build import build_customer_tables
from fraudops.features.realtime import (
    LEASE_MS,
    Before,
    Commit,
    Conflict,
    InFlight,
    RedisStateStore,
    Replayed,
)
from fraudops.serving.online import activity_from

pytestmark = pytest.mark.integration
T0 = int(pd.Timestamp("2026-01-05T10:00:00Z").value // 1000)


@pytest.fixture(params=["single", "cluster"])
def client_factory(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A function that makes a new client (each thread or 'replica' its own), on a Redis
    flushed before and after the test."""
    if request.param == "single":
        url = request.getfixturevalue("redis_url")

        def make() -> Any:
            return redis.Redis.from_url(url)
    else:
        url = request.getfixturevalue("redis_cluster").url

        def make() -> Any:
            return RedisCluster.from_url(url)

    admin = make()
    flush = (
        (lambda: admin.flushall(target_nodes="primaries"))
        if (request.param == "cluster")
        else admin.flushdb
    )
    flush()
    yield make
    flush()
    admin.close()


def store_on(client: Any, ttl_seconds: float = 3600) -> RedisStateStore:
    return RedisStateStore(client, "fraudops-test", ttl_seconds)


def commit(customer: str, n: int, t: int = T0, amount: float = 10.0) -> Commit:
    return Commit(f"{customer}-tx{n}", customer, f"t{n % 4}", amount, t)


def count_1h(store: RedisStateStore, k: Commit) -> float:
    (before,), _ = store.commit([k])
    assert isinstance(before, Before), before
    return float(activity_from([before], [k])["customer_tx_count_1h"][0])


def test_concurrent_burst_of_one_customer_counts_each_once(client_factory: Any) -> None:
    """50 transactions of a new customer with the same timestamp, each from its own
    client at once, 10 rounds: the counts are exactly 0..49, and a later one sees 50."""
    stores = [store_on(client_factory()) for _ in range(50)]
    for round_ in range(10):
        customer = f"burst{round_}"
        counts: list[float] = []
        start = threading.Barrier(50)

        def one(i: int, customer: str = customer, start: threading.Barrier = start) -> None:
            start.wait()
            counts.append(count_1h(stores[i], commit(customer, i)))  # noqa: B023 (joined below)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(counts) == list(range(50))
        later = commit(customer, 99, t=T0 + 30 * 60 * f.MICROS)
        assert count_1h(stores[0], later) == 50


def test_retry_conflict_in_flight_and_lease(client_factory: Any) -> None:
    store = store_on(client_factory())
    first = commit("c1", 1)
    (before,), _ = store.commit([first])
    assert isinstance(before, Before) and before.seq == 0
    # in flight: a second request (another process) waits; no state changes
    (again,), _ = store.commit([first])
    assert isinstance(again, InFlight)
    store.save_results([(first, {"fraud_probability": 0.25, "decision": "approve"})])
    (replayed,), _ = store.commit([first])
    assert replayed == Replayed({"fraud_probability": 0.25, "decision": "approve"})
    # the same id with other values: the fields that differ, nothing committed
    other = Commit(first.transaction_id, "c1", "t9", 11.0, first.time_us)
    (conflict,), _ = store.commit([other])
    assert conflict == Conflict(["terminal_id", "amount"])
    elsewhere = Commit(first.transaction_id, "c2", first.terminal_id, first.amount, first.time_us)
    (conflict,), _ = store.commit([elsewhere])
    assert conflict == Conflict(["customer_id"])
    assert count_1h(store, commit("c2", 5)) == 0  # c2's state was not touched
    assert count_1h(store, commit("c1", 2)) == 1  # c1 counts its one transaction once


def test_a_killed_scorer_blocks_its_transaction_at_most_the_lease(client_factory: Any) -> None:
    """A process that committed and died before keeping its result: the next request
    with that id waits at most LEASE_MS, then finishes it from what the store kept."""
    store = store_on(client_factory())
    store.commit([commit("c1", 0, amount=5.0)])
    lost = commit("c1", 1, amount=7.0)
    (before,), _ = store.commit([lost])  # ... and the process is gone
    store.commit([commit("c1", 2, t=T0 + f.MICROS)])  # a later one goes through at once
    started = time.monotonic()
    blocked = 0.0  # when the last try that found the transaction in flight was made
    while True:
        store = store_on(client_factory())  # a new process (on a cluster: slots discovery)
        tried = time.monotonic() - started
        (outcome,), _ = store.commit([lost])
        if not isinstance(outcome, InFlight):
            break
        blocked = tried
        assert tried < 10 * LEASE_MS / 1000, "still in flight long after the lease"
        time.sleep(0.05)
    # no try made after the lease (and a margin) found it blocked, however long the
    # tries themselves took
    assert blocked <= LEASE_MS / 1000 + 0.3
    assert isinstance(outcome, Before)
    assert outcome.seq == before.seq and outcome.stats == before.stats
    assert outcome.time_us.tolist() == before.time_us.tolist()  # not the later one


def test_results_expire_after_the_ttl(client_factory: Any) -> None:
    store = store_on(client_factory(), ttl_seconds=0.3)
    k = commit("c1", 1)
    store.commit([k])
    store.save_results([(k, {"decision": "approve"})])
    assert isinstance(store.commit([k])[0][0], Replayed)
    time.sleep(0.5)
    (outcome,), _ = store.commit([k])  # forgotten: a new transaction as far as we know
    assert isinstance(outcome, Before) and outcome.seq == 1


def test_state_of_30_days_equals_the_offline_build_and_its_size(client_factory: Any) -> None:
    """One customer's 30 days committed one by one: the features equal the offline
    build's; and what the state takes in Redis (for the docs' sizing)."""
    from fraudops.data.simulator import simulate

    tx = simulate(customers=5, terminals=40, days=30, seed=5)
    tx = tx.sort_values([c.TIMESTAMP, c.TRANSACTION_ID]).reset_index(drop=True)
    store = store_on(client_factory())
    rows = []
    for k in (
        Commit(
            r.transaction_id,
            r.customer_id,
            r.terminal_id,
            float(r.amount),
            int(pd.Timestamp(r.timestamp).value // 1000),
        )
        for r in tx.itertuples()
    ):
        (before,), _ = store.commit([k])
        rows.append(activity_from([before], [k]))  # type: ignore[list-item]
    online = pd.DataFrame(
        {name: np.concatenate([r[name] for r in rows]) for name in f.CUSTOMER_ACTIVITY_FEATURES}
    )
    offline, _ = build_customer_tables(tx)
    offline = offline.set_index(c.TRANSACTION_ID).loc[tx[c.TRANSACTION_ID]]
    for name in f.CUSTOMER_ACTIVITY_FEATURES:
        np.testing.assert_allclose(
            online[name], offline[name].to_numpy(), rtol=1e-9, atol=1e-9, err_msg=name
        )
    busiest = tx[c.CUSTOMER_ID].value_counts()
    size = store.state_bytes(busiest.index[0])
    assert 0 < size < 200 * busiest.iloc[0]  # bytes per customer, for the docs


def test_seed_gives_only_unknown_customers_their_batch_state(client_factory: Any) -> None:
    store = store_on(client_factory())
    store.commit([commit("known", 1)])
    row = {
        "history_time_us": [T0 - 5 * f.MICROS, T0 - f.MICROS],
        "history_amount": [3.0, 4.0],
        "history_terminal_id": ["a", "b"],
        "tx_count": 9,
        "amount_mean": 12.0,
        "amount_m2": 2.0,
        "hour_sin_sum": 0.5,
        "hour_cos_sum": 0.25,
    }
    assert store.seed([{**row, "customer_id": "known"}, {**row, "customer_id": "new"}]) == 1
    (before,), _ = store.commit([commit("new", 7)])
    assert isinstance(before, Before)
    assert before.seq == 2 and before.stats == (9.0, 12.0, 2.0, 0.5, 0.25)
    assert before.amount.tolist() == [3.0, 4.0] and before.terminal_id == ["a", "b"]
    assert count_1h(store, commit("known", 2)) == 1  # untouched by the seed


def test_scripts_lost_by_the_server_are_loaded_again(client_factory: Any) -> None:
    client = client_factory()
    store = store_on(client)
    store.commit([commit("c1", 1)])
    if isinstance(client, RedisCluster):
        for node in client.get_primaries():
            client.get_redis_connection(node).script_flush()
    else:
        client.script_flush()
    assert count_1h(store, commit("c1", 2)) == 1


def test_a_cluster_node_killed_and_restarted_is_recovered_from_without_an_operator(
    request: pytest.FixtureRequest,
) -> None:
    """The node holding a customer's slot dies: its commits fail (the scorer's degraded
    mode), the others' go on; once it restarts (empty: no persistence here), the same
    client commits there again, scripts loaded anew, with no operator's action."""
    nodes = request.getfixturevalue("redis_cluster")
    client = RedisCluster.from_url(nodes.url, socket_timeout=1, socket_connect_timeout=1)
    client.flushall(target_nodes="primaries")
    store = store_on(client)
    node = client.get_node_from_key(store.customer_keys("victim")[0])
    others = [f"other{i}" for i in range(40)]
    elsewhere = next(
        o for o in others if client.get_node_from_key(store.customer_keys(o)[0]).port != node.port
    )
    assert count_1h(store, commit("victim", 1)) == 0
    nodes.kill(node.port)
    try:
        with pytest.raises(
            (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterDownError)
        ):
            store.commit([commit("victim", 2)])
        assert count_1h(store, commit(elsewhere, 1)) == 0  # the rest of the cluster serves
    finally:
        nodes.restart(node.port)
    deadline = time.monotonic() + 30
    while True:
        try:
            assert count_1h(store, commit("victim", 3)) == 0  # its keys went with the node
            break
        except (
            redis.ConnectionError,
            redis.TimeoutError,
            redis.exceptions.ClusterDownError,
            redis.exceptions.ClusterError,
        ):
            assert time.monotonic() < deadline, "the cluster did not recover in 30 s"
            time.sleep(0.2)
    assert count_1h(store, commit(elsewhere, 2, t=T0 + f.MICROS)) == 1
