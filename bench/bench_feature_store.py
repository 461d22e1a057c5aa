"""Benchmark: the feature store's hot paths, each against a floor measured in the same run.

Run it (Redis at 127.0.0.1:6379; only DB 12 is used, and flushed at start and end)::

    python bench/bench_feature_store.py [--quick] [--out bench/results/feature_store.json]

1. Online read of one transaction's features, the rows the scorer reads through the
   feature service: ``customer_state`` (8 fields, 3 arrays of ~60 elements) of its customer
   and ``terminal_daily`` (6 features) of its terminal. p50/p99 of Feast's
   ``get_online_features`` and of ``FastRedisReader``; floor: a raw redis-py pipeline of
   the same 2 HMGETs without decoding. Goal: FastRedisReader within 4x of the floor.
2. Materialization of 200,000 entities x 6 float features into Redis: Feast's
   ``store.materialize`` (defaults) and ``fast_materialize``; floor: pipelined HSETs of
   the same rows with every byte precomputed (fast_materialize's time also includes
   reading the parquet source and picking each entity's latest row). Goal:
   fast_materialize >= 50,000 rows/s.
3. Offline feature build on Handbook-size data (5,000 customers, 10,000 terminals, 183
   days): ``build_feature_tables``; floor: reading and sorting the transactions by customer
   and time. Goal: < 120 s.

``--quick`` shrinks every size so the whole run takes well under a minute. Results are
printed and written as JSON (numbers, ratios to the floors, goals, pass/fail, machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger("bench_feature_store")

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "feature_store.json"
REDIS_URL = "redis://127.0.0.1:6379/12"  # this benchmark's own DB: flushed at start and end
READ_GOAL_RATIO = 4.0
MATERIALIZE_GOAL_ROWS_PER_S = 50_000
BUILD_GOAL_SECONDS = 120.0
DAY0 = pd.Timestamp("2026-04-01", tz="UTC")
FULL = {
    "read_calls": 2_000,
    "read_warmup": 200,
    "read_customers": 2_000,
    "read_terminals": 5_000,
    "entities": 200_000,
    "customers": 5_000,
    "terminals": 10_000,
    "days": 183,
}
QUICK = {
    "read_calls": 300,
    "read_warmup": 50,
    "read_customers": 300,
    "read_terminals": 500,
    "entities": 20_000,
    "customers": 500,
    "terminals": 1_000,
    "days": 30,
}


def configure_environment(data_dir: Path, redis_url: str) -> None:
    """Point FraudOps at a scratch data directory and DB 12, before settings are read."""
    os.environ["FRAUDOPS_DATA_DIR"] = str(data_dir)
    os.environ["FRAUDOPS_ONLINE_STORE"] = "redis"
    os.environ["FRAUDOPS_REDIS_URL"] = redis_url
    from fraudops.core.settings import get_settings

    get_settings.cache_clear()


def percentiles_ms(samples_ns: list[int]) -> dict[str, float]:
    values = np.asarray(samples_ns) / 1e6
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 4),
        "p99_ms": round(float(np.percentile(values, 99)), 4),
        "mean_ms": round(float(values.mean()), 4),
    }


# --- synthetic feature tables --------------------------------------------------------------
def terminal_daily_table(terminals: int, days: int, seed: int) -> pd.DataFrame:
    """``terminal_daily`` rows: every terminal on each of ``days`` day starts."""
    from fraudops.features.maths import TERMINAL_FEATURES

    rng = np.random.default_rng(seed)
    ids = np.char.add("t_", np.char.zfill(np.arange(terminals).astype(str), 7)).astype(object)
    rows = terminals * days
    frame = pd.DataFrame(
        {
            "terminal_id": np.tile(ids, days),
            "event_timestamp": np.repeat(pd.date_range(DAY0, periods=days, freq="D"), terminals),
        }
    )
    for name in TERMINAL_FEATURES:
        frame[name] = (
            rng.poisson(20, rows).astype(np.float64) if "count" in name else rng.random(rows) / 10
        )
    return frame


def customer_state_table(customers: int, terminals: int, seed: int) -> pd.DataFrame:
    """``customer_state`` rows: ~60 transactions of history per customer."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(customers):
        n = int(rng.integers(40, 81))
        times = np.sort(rng.integers(0, 30 * 86_400, n)) * 1_000_000 + DAY0.value // 1000
        rows.append(
            {
                "customer_id": f"c_{i:07d}",
                "event_timestamp": DAY0 + pd.Timedelta(days=30, microseconds=i),
                "history_time_us": times.tolist(),
                "history_amount": np.round(rng.gamma(2, 30, n), 2).tolist(),
                "history_terminal_id": [f"t_{t:07d}" for t in rng.integers(0, terminals, n)],
                "tx_count": n,
                "amount_mean": float(rng.gamma(2, 30)),
                "amount_m2": float(rng.gamma(2, 3000)),
                "hour_sin_sum": float(rng.normal()),
                "hour_cos_sum": float(rng.normal()),
            }
        )
    return pd.DataFrame(rows)


def customer_activity_table() -> pd.DataFrame:
    """A one-row ``customer_activity`` table: the view is offline only, but needs a source."""
    from fraudops.features.maths import CUSTOMER_ACTIVITY_FEATURES

    return pd.DataFrame(
        {
            "transaction_id": ["tx_0"],
            "customer_id": ["c_0000000"],
            "event_timestamp": [DAY0],
            **{name: [0.0] for name in CUSTOMER_ACTIVITY_FEATURES},
        }
    )


def prepare_store(features_dir: Path, terminal_daily: pd.DataFrame, customer_state: pd.DataFrame):  # type: ignore[no-untyped-def]
    from fraudops.features.build import FeatureTables, write_feature_tables
    from fraudops.features.feast_store import apply_definitions, get_store

    tables = FeatureTables(customer_activity_table(), customer_state, terminal_daily)
    write_feature_tables(tables, features_dir)
    store = get_store()
    apply_definitions(store)
    return store


# --- 2. materialization ----------------------------------------------------------------------
def send_resp(client: Any, payloads: list[tuple[bytes, int]]) -> None:
    """Floor: precomputed RESP payloads on one connection, replies read per batch."""
    connection = client.connection_pool.get_connection()
    try:
        for payload, count in payloads:
            connection.send_packed_command([payload])
            for _ in range(count):
                connection.read_response(disable_decoding=True)
    finally:
        client.connection_pool.release(connection)


def bench_materialize(sizes: dict[str, int], features_dir: Path, client: Any) -> dict[str, Any]:
    from feast.value_type import ValueType

    from fraudops.adapters.feast import (
        FeastRedisLayout,
        fast_materialize,
        serialize_timestamps,
        serialize_values,
    )
    from fraudops.features.maths import TERMINAL_FEATURES

    entities = sizes["entities"]
    daily = terminal_daily_table(entities, days=2, seed=1)  # materialize keeps the latest day
    store = prepare_store(features_dir, daily, customer_state_table(10, 10, seed=2))
    start, end = DAY0.to_pydatetime() - timedelta(days=1), DAY0.to_pydatetime() + timedelta(days=3)
    layout = FeastRedisLayout.from_store(store)
    sampled = [f"t_{i:07d}" for i in random.Random(0).sample(range(entities), 1000)]
    sample_keys = layout.entity_keys("terminal_id", sampled)

    def run(label: str, write: Callable[[], object]) -> dict[str, Any]:
        client.flushdb()
        started = time.perf_counter()
        write()
        seconds = time.perf_counter() - started
        keys = client.dbsize()
        logger.info("%s: %d keys in %.2f s (%.0f rows/s)", label, keys, seconds, entities / seconds)
        return {
            "seconds": round(seconds, 3),
            "rows_per_second": round(entities / seconds),
            "keys_written": keys,
            "hashes": [client.hgetall(key) for key in sample_keys],
        }

    results = {
        "feast_materialize": run(
            "Feast store.materialize",
            lambda: store.materialize(
                start_date=start, end_date=end, feature_views=["terminal_daily"]
            ),
        ),
        "fast_materialize": run(
            "fast_materialize (skip_older=True, as Feast)",
            lambda: fast_materialize(store, ["terminal_daily"], start=start, end=end),
        ),
        "fast_materialize_bulk": run(
            "fast_materialize (skip_older=False, bulk load)",
            lambda: fast_materialize(store, ["terminal_daily"], start, end, skip_older=False),
        ),
    }

    # Floors: the same rows with every byte computed before the clock starts.
    latest = daily.iloc[entities:]
    keys = layout.entity_keys("terminal_id", latest["terminal_id"].tolist())
    ts_field = layout.timestamp_field("terminal_daily")
    fields = [layout.feature_field("terminal_daily", name) for name in TERMINAL_FEATURES]
    values = [serialize_values(latest[n].to_numpy(), ValueType.DOUBLE) for n in TERMINAL_FEATURES]
    stamps = serialize_timestamps(latest["event_timestamp"].astype("int64").to_numpy())
    args = []  # per row: key, then field, value pairs
    for i, key in enumerate(keys):
        row = [key, ts_field, stamps[i]]
        for field, column in zip(fields, values, strict=True):
            row += [field, column[i]]
        args.append(row)

    def redis_py_pipeline() -> None:
        for begin in range(0, len(args), 5_000):
            pipe = client.pipeline(transaction=False)
            for row in args[begin : begin + 5_000]:
                pipe.execute_command("HSET", *row)
            pipe.execute()

    def bulk(data: bytes) -> bytes:
        return b"$%d\r\n%s\r\n" % (len(data), data)

    head = b"*%d\r\n$4\r\nHSET\r\n" % (1 + len(args[0]))  # HSET and its arguments
    packed = [head + b"".join(bulk(x) for x in row) for row in args]
    payloads = [
        (b"".join(packed[b : b + 5_000]), len(packed[b : b + 5_000]))
        for b in range(0, len(packed), 5_000)
    ]
    results["floor_redis_py_pipeline"] = run(
        "floor: redis-py pipeline, precomputed", redis_py_pipeline
    )
    results["floor_raw_resp"] = run(
        "floor: precomputed RESP on a socket", lambda: send_resp(client, payloads)
    )

    # Every route must leave all keys, and the sampled hashes byte for byte as Feast's.
    reference = results["feast_materialize"]["hashes"]
    identical = {
        name: result.pop("hashes") == reference and result["keys_written"] == entities
        for name, result in results.items()
    }
    fast = results["fast_materialize"]["rows_per_second"]
    return {
        "entities": entities,
        "features": len(TERMINAL_FEATURES),
        "source_rows": len(daily),
        "feast_offline_store": store.config.offline_store.type,
        **results,
        "same_hashes_as_feast": identical,
        "ratios_to_floor_redis_py_pipeline": {
            name: round(results[name]["seconds"] / results["floor_redis_py_pipeline"]["seconds"], 2)
            for name in ("feast_materialize", "fast_materialize", "fast_materialize_bulk")
        },
        "ratios_to_floor_raw_resp": {
            name: round(results[name]["seconds"] / results["floor_raw_resp"]["seconds"], 2)
            for name in ("feast_materialize", "fast_materialize", "fast_materialize_bulk")
        },
        "speedup_over_feast": round(fast / results["feast_materialize"]["rows_per_second"], 2),
        "goal_rows_per_second": MATERIALIZE_GOAL_ROWS_PER_S,
        "within_goal": fast >= MATERIALIZE_GOAL_ROWS_PER_S and all(identical.values()),
    }


# --- 1. online read ------------------------------------------------------------------------
def service_lookups(store: Any, service: Any) -> list[tuple[str, list[str]]]:
    """What the scorer reads from the online store for the service (see fraudops.serving.online):
    the state view named by a view tagged ``online_source``, and the stored views;
    on-demand views are computed from the request."""
    from fraudops.features.realtime import STATE_FIELDS
    from fraudops.serving.online import STATE_VIEW_TAG

    on_demand = {view.name for view in store.list_on_demand_feature_views()}
    lookups = []
    for projection in service.feature_view_projections:
        if projection.name in on_demand:
            continue
        view = store.get_feature_view(projection.name)
        if STATE_VIEW_TAG in view.tags:
            lookups.append((view.tags[STATE_VIEW_TAG], list(STATE_FIELDS)))
        else:
            lookups.append((view.name, [feature.name for feature in projection.features]))
    return lookups


def bench_read(sizes: dict[str, int], features_dir: Path, client: Any) -> dict[str, Any]:
    from fraudops.adapters.feast import FastRedisReader, FeastRedisLayout
    from fraudops.features.feast_store import feature_service

    client.flushdb()
    daily = terminal_daily_table(sizes["read_terminals"], days=1, seed=3)
    states = customer_state_table(sizes["read_customers"], sizes["read_terminals"], seed=4)
    store = prepare_store(features_dir, daily, states)
    end = DAY0.to_pydatetime() + timedelta(days=31)
    store.materialize(start_date=DAY0.to_pydatetime() - timedelta(days=1), end_date=end)
    service = feature_service(store)
    lookups = service_lookups(store, service)
    refs = [f"{view}:{name}" for view, names in lookups for name in names]
    reader = FastRedisReader(store, lookups)
    layout = FeastRedisLayout.from_store(store)
    join_keys = {view: store.get_feature_view(view).entity_columns[0].name for view, _ in lookups}
    fields = {
        view: [*(layout.feature_field(view, n) for n in names), layout.timestamp_field(view)]
        for view, names in lookups
    }

    rng = random.Random(5)
    rows = [
        {
            "customer_id": f"c_{rng.randrange(sizes['read_customers']):07d}",
            "terminal_id": f"t_{rng.randrange(sizes['read_terminals']):07d}",
        }
        for _ in range(sizes["read_warmup"] + sizes["read_calls"])
    ]
    keys = [
        {view: layout.entity_key(join_keys[view], row[join_keys[view]]) for view, _ in lookups}
        for row in rows
    ]

    def feast_sdk(i: int) -> object:
        return store.get_online_features(features=refs, entity_rows=[rows[i]]).to_dict()

    def fast_reader(i: int) -> object:
        return reader.read([rows[i]])

    def floor(i: int) -> object:
        pipe = client.pipeline(transaction=False)
        for view, _ in lookups:
            pipe.hmget(keys[i][view], fields[view])
        return pipe.execute()

    methods = {"feast_sdk": feast_sdk, "fast_reader": fast_reader, "floor_raw_pipeline": floor}
    samples: dict[str, list[int]] = {name: [] for name in methods}
    order = list(methods.items())
    for i in range(len(rows)):  # interleaved, so drift and noise hit every method alike
        rng.shuffle(order)
        for name, method in order:
            started = time.perf_counter_ns()
            method(i)
            if i >= sizes["read_warmup"]:
                samples[name].append(time.perf_counter_ns() - started)

    checked = rows[:200]
    equal = all(
        reader.read([row]).values
        == store.get_online_features(features=refs, entity_rows=[row]).to_dict()
        for row in checked
    )
    stats = {name: percentiles_ms(values) for name, values in samples.items()}
    floor_stats = stats["floor_raw_pipeline"]
    ratios = {
        name: {
            "p50": round(stats[name]["p50_ms"] / floor_stats["p50_ms"], 2),
            "p99": round(stats[name]["p99_ms"] / floor_stats["p99_ms"], 2),
        }
        for name in ("feast_sdk", "fast_reader")
    }
    array_lengths = states["history_amount"].map(len)
    return {
        "calls": sizes["read_calls"],
        "warmup_calls": sizes["read_warmup"],
        "lookups": {view: names for view, names in lookups},
        "feast_sdk_call": "one get_online_features call with both views' refs, then to_dict()",
        "customers": len(states),
        "terminals": len(daily),
        "history_length_mean": round(float(array_lengths.mean()), 1),
        **stats,
        "ratios_to_floor": ratios,
        "fast_reader_equals_feast_on_200_rows": equal,
        "goal_ratio": READ_GOAL_RATIO,
        "fast_reader_within_goal_p50": ratios["fast_reader"]["p50"] <= READ_GOAL_RATIO,
        "fast_reader_within_goal_p99": ratios["fast_reader"]["p99"] <= READ_GOAL_RATIO,
        "feast_sdk_within_goal_p50": ratios["feast_sdk"]["p50"] <= READ_GOAL_RATIO,
        "within_goal": ratios["fast_reader"]["p50"] <= READ_GOAL_RATIO and equal,
    }


# --- 3. offline build ------------------------------------------------------------------------
def bench_build(sizes: dict[str, int], scratch: Path) -> dict[str, Any]:
    from fraudops.core import contract as c
    from fraudops.data.simulator import simulate
    from fraudops.features.build import build_feature_tables

    started = time.perf_counter()
    tx = simulate(
        customers=sizes["customers"], terminals=sizes["terminals"], days=sizes["days"], seed=0
    )
    simulate_seconds = time.perf_counter() - started
    path = scratch / "transactions.parquet"
    tx.to_parquet(path, index=False)

    started = time.perf_counter()
    pd.read_parquet(path).sort_values([c.CUSTOMER_ID, c.TIMESTAMP], kind="stable")
    floor_seconds = time.perf_counter() - started

    started = time.perf_counter()
    tables = build_feature_tables(tx, 7)
    seconds = time.perf_counter() - started
    logger.info(
        "offline build: %.1f s for %d transactions (floor %.2f s)", seconds, len(tx), floor_seconds
    )
    return {
        "customers": sizes["customers"],
        "terminals": sizes["terminals"],
        "days": sizes["days"],
        "transactions": len(tx),
        "simulate_seconds": round(simulate_seconds, 2),
        "seconds": round(seconds, 2),
        "rows": {
            "customer_activity": len(tables.customer_activity),
            "customer_state": len(tables.customer_state),
            "terminal_daily": len(tables.terminal_daily),
        },
        "floor_read_and_sort_seconds": round(floor_seconds, 3),
        "seconds_over_floor": round(seconds / floor_seconds, 1),
        "goal_seconds": BUILD_GOAL_SECONDS,
        "within_goal": seconds < BUILD_GOAL_SECONDS,
    }


def machine(client: Any) -> dict[str, Any]:
    import feast
    import pyarrow
    import redis

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "feast": feast.__version__,
        "redis_py": redis.__version__,
        "redis_server": client.info("server")["redis_version"],
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "pyarrow": pyarrow.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Time the feature store's hot paths.")
    parser.add_argument("--quick", action="store_true", help="small sizes: well under a minute")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    parser.add_argument("--redis-url", default=REDIS_URL, help="a Redis DB this run may flush")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("feast").setLevel(logging.WARNING)  # registry cache chatter
    sizes = QUICK if args.quick else FULL

    with tempfile.TemporaryDirectory(prefix="bench_feature_store_") as scratch:
        configure_environment(Path(scratch) / "data", args.redis_url)
        import redis

        from fraudops.core.settings import get_settings

        client = redis.Redis.from_url(args.redis_url)
        client.flushdb()
        features_dir = get_settings().offline_dir / "features"
        started = time.perf_counter()
        try:
            info = machine(client)
            build = bench_build(sizes, Path(scratch))
            materialization = bench_materialize(sizes, features_dir, client)
            read = bench_read(sizes, features_dir, client)
        finally:
            client.flushdb()
    result = {
        "benchmark": "feature_store",
        "quick": args.quick,
        "run_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "total_seconds": round(time.perf_counter() - started, 1),
        "online_read": read,
        "materialization": materialization,
        "offline_build": build,
        "all_within_goal": read["within_goal"]
        and materialization["within_goal"]
        and build["within_goal"],
        "machine": info,
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")  # a reader never sees half a result
    tmp.write_text(text + "\n")
    os.replace(tmp, args.out)
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
